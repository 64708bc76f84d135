// Lease: the write (or read) lease that makes the fast path exclusive in
// mounted mode. While we hold F_WRLCK no other open or truncate of the file
// can complete; a breaker waits until we release. We never let the lease's
// signal reach the application and install no signal handler:
//   1. F_SETSIG to a signal whose default action is "ignore" (SIGURG, or
//      SIGWINCH when the application handles SIGURG) before F_SETLEASE, so
//      a break in the window before step 2 is harmless;
//   2. F_SETOWN 0 right after, so no signal is sent at all.
// A break is then only visible by polling F_GETLEASE: anything but the type
// we took means broken (a read-only opener downgrades the target to F_RDLCK).
//
// Thread-safety: not thread-safe; the owning File serialises calls.
#ifndef EXT4DIO_LIB_LEASE_H_
#define EXT4DIO_LIB_LEASE_H_

#include "absl/status/status.h"
#include "os.h"

namespace ext4dio {

class Lease {
 public:
  Lease() : os_(*RealOs()) {}
  // Every fcntl through `os` (which must outlive the lease).
  explicit Lease(Os& os) : os_(os) {}
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease() { Release(); }

  // Takes a lease of `type` (F_WRLCK or F_RDLCK) on `fd`. EAGAIN when the
  // file is open elsewhere (or, for F_RDLCK, open for writing).
  absl::Status Take(int fd, int type);
  // Whether we hold it and nobody asked us to give it up.
  bool Held() const;
  // Whether Take succeeded and Release has not run since.
  bool taken() const { return fd_ >= 0; }
  // Gives it up (lets a waiting breaker proceed). Idempotent.
  void Release();

 private:
  Os& os_;
  int fd_ = -1;
  int type_ = 0;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_LEASE_H_
