// Os: every operating-system call of the data path (open, submit, reap,
// flush) behind one small interface, so tests can wrap it and inject EIO,
// short transfers and failed flushes.
//
// Thread-safety: Os methods may be called from any thread. An IoQueue is
// used by one thread at a time (it is one io_uring, or one synchronous
// submitter); make one per thread or per async queue.
#ifndef EXT4DIO_LIB_OS_H_
#define EXT4DIO_LIB_OS_H_

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

struct fiemap;  // <linux/fiemap.h>

namespace ext4dio {

// One request to the device: `length` bytes at device byte `offset`.
struct IoOp {
  enum Kind : uint8_t { kRead, kWrite };
  Kind kind = kRead;
  int rw_flags = 0;    // RWF_DSYNC for FUA writes
  // 0: the queue's device; 1: its second descriptor (QueueOptions::file_fd,
  // the mounted file itself: offset is then a file offset).
  uint8_t file = 0;
  uint32_t length = 0;
  uint64_t offset = 0;
  void* buf = nullptr;
  uint64_t tag = 0;    // returned in its IoResult
};

struct IoResult {
  uint64_t tag = 0;
  int64_t result = 0;  // bytes transferred, or -errno
};

enum class BackendKind { kAuto, kUring, kSync };

struct QueueOptions {
  uint32_t depth = 32;
  // Mounted mode: the file's own descriptor, for kernel-path I/O through the
  // same queue (IoOp::file = 1); -1: none.
  int file_fd = -1;
  BackendKind backend = BackendKind::kAuto;  // kAuto is resolved by the caller
  bool sqpoll = false;
  // Without SQPOLL every io_uring is IORING_SETUP_COOP_TASKRUN |
  // IORING_SETUP_TASKRUN_FLAG: completions are posted without an IPI, as
  // task work the owner runs on its next return to user space, which a
  // sleeping owner is woken for (any interruptible sleep) and a spinning
  // one reaches at the next timer tick. So the mounted mode's IoGate, which
  // reads a ring without its owner, sees an idle owner's completions within
  // a tick (bench/ring_flags idle; docs/design.md "Rings"). Never
  // DEFER_TASKRUN there: its completions wait until the owner reaps.
};

// A submission/completion queue bound to one descriptor.
class IoQueue {
 public:
  virtual ~IoQueue() = default;
  virtual uint32_t depth() const = 0;
  virtual uint32_t in_flight() const = 0;
  virtual const char* name() const = 0;
  // Queues and submits `ops`. REQUIRES: in_flight() + ops.size() <= depth().
  // On error none of `ops` is in flight.
  virtual absl::Status Submit(absl::Span<const IoOp> ops) = 0;
  // Submit, and wait for at least wait_nr completions (REQUIRES: <=
  // in_flight() afterwards) in the same system call where the backend can;
  // the next Reap then finds them without waiting.
  virtual absl::Status SubmitAndWait(absl::Span<const IoOp> ops, size_t wait_nr) {
    (void)wait_nr;
    return Submit(ops);
  }
  // Waits until at least `min_complete` results are ready (REQUIRES:
  // min_complete <= in_flight()), stores up to out.size() of them and
  // returns how many.
  virtual absl::StatusOr<size_t> Reap(absl::Span<IoResult> out,
                                      size_t min_complete) = 0;
  // Completions ready to be reaped. Unlike the rest, callable from any
  // thread while the owner works (to learn whether I/O is still running);
  // may lag behind, never runs ahead.
  virtual uint64_t ReadyApprox() const { return 0; }
  // Registers [base, base+bytes) as a fixed buffer: later ops whose buffers
  // lie inside it skip per-I/O page pinning (io_uring's READ/WRITE_FIXED).
  // REQUIRES: nothing in flight. A no-op for backends without the notion.
  virtual absl::Status RegisterBuffers(void* base, size_t bytes) {
    (void)base;
    (void)bytes;
    return absl::OkStatus();
  }
  // Makes results ready to reap signal eventfd `fd` (-1: stop): io_uring
  // posts to it per completion (io_uring_register_eventfd); a backend that
  // completes inside Submit adds to it there. The caller keeps `fd` open
  // until it sets -1.
  virtual absl::Status SetEventFd(int fd) {
    event_fd_ = fd;
    return absl::OkStatus();
  }

 protected:
  // Adds 1 to the eventfd set by SetEventFd, if any.
  void SignalEventFd() const;
  int event_fd_ = -1;
};

class Os {
 public:
  virtual ~Os() = default;
  // Return a descriptor or -errno.
  virtual int Open(const char* path, int flags, mode_t mode);
  virtual int Close(int fd);
  // Makes completed writes durable (fdatasync: a device cache flush).
  // 0 or -errno.
  virtual int Flush(int fd);
  // Plain positional I/O (buffered, unaligned paths). Bytes or -errno.
  virtual ssize_t Pread(int fd, void* buf, size_t n, uint64_t offset);
  virtual ssize_t Pwrite(int fd, const void* buf, size_t n, uint64_t offset);
  // Writes back and drops the page cache of [offset, offset+n) (after a
  // buffered write, so direct I/O and the page cache agree). 0 or -errno.
  virtual int WritebackAndDrop(int fd, uint64_t offset, uint64_t n);
  // Bytes of [offset, offset+n) (n == 0: to the end) that the page cache
  // holds for `fd`'s file: cachestat(2), or mincore(2) over a mapping where
  // cachestat is missing (Linux < 6.5). Never assume a drop worked: ask
  // this. -errno when neither can tell.
  virtual int64_t CachedBytes(int fd, uint64_t offset, uint64_t n);
  // What the mounted mode does to the file itself, one virtual each so a
  // test can script a failure or a different answer per call (FakeOs).
  // Each is the real call; the result (>= 0) or -errno. EINTR is retried
  // where the call can be interrupted.
  //
  // fcntl(2) with an integer argument: F_SETSIG, F_SETLEASE, F_GETLEASE
  // (returns the lease type), F_SETOWN, F_GETFL (returns the flags), F_SETFL.
  virtual int Fcntl(int fd, int cmd, long arg);
  // ioctl(FS_IOC_FIEMAP) on `fm` (its header filled in; extents written back).
  virtual int Fiemap(int fd, struct ::fiemap* fm);
  virtual int Ftruncate(int fd, uint64_t size);
  virtual int Fallocate(int fd, int mode, uint64_t offset, uint64_t length);
  // fsync(2): data and metadata (Flush is fdatasync).
  virtual int Fsync(int fd);
  virtual int Fstat(int fd, struct stat* st);
  // statx(fd, "", AT_EMPTY_PATH, mask, sx).
  virtual int Statx(int fd, unsigned mask, struct statx* sx);
  virtual int Futimens(int fd, const struct timespec times[2]);
  virtual int Fchmod(int fd, mode_t mode);
  // Bytes of the attribute's value (size 0: its size), or -errno.
  virtual ssize_t Fgetxattr(int fd, const char* name, void* value, size_t size);
  virtual int Fremovexattr(int fd, const char* name);
  virtual int SyncFileRange(int fd, uint64_t offset, uint64_t n, unsigned flags);

  // A queue of kind kUring or kSync on `fd`.
  virtual absl::StatusOr<std::unique_ptr<IoQueue>> NewQueue(
      int fd, const QueueOptions& options);
};

// The real operating system.
Os* RealOs();

// Whether io_uring can be set up here at all (not disabled by sysctl or
// seccomp). Cached after the first call.
bool UringAvailable();

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_OS_H_
