#include "lease.h"

#include <fcntl.h>
#include <signal.h>

#include <cerrno>

#include "errors.h"

namespace ext4dio {
namespace {

// A signal the kernel may send in the instant between F_SETLEASE and
// F_SETOWN 0: one whose default action is to ignore it, and which the
// application does not handle.
int QuietSignal() {
  for (int sig : {SIGURG, SIGWINCH}) {
    struct sigaction sa;
    if (::sigaction(sig, nullptr, &sa) == 0 && sa.sa_handler == SIG_DFL &&
        !(sa.sa_flags & SA_SIGINFO))
      return sig;
  }
  return SIGURG;  // both handled: the window is a few instructions wide
}

}  // namespace

absl::Status Lease::Take(int fd, int type) {
  Release();
  if (int rc = os_.Fcntl(fd, F_SETSIG, QuietSignal()); rc < 0)
    return ErrnoError(-rc, "F_SETSIG");
  if (int rc = os_.Fcntl(fd, F_SETLEASE, type); rc < 0) {
    (void)os_.Fcntl(fd, F_SETSIG, 0);
    return ErrnoError(-rc, type == F_WRLCK ? "taking a write lease" : "taking a read lease");
  }
  // F_SETLEASE made us the owner: clear it so a break sends no signal.
  if (int rc = os_.Fcntl(fd, F_SETOWN, 0); rc < 0) {
    (void)os_.Fcntl(fd, F_SETLEASE, F_UNLCK);
    return ErrnoError(-rc, "F_SETOWN 0 after taking the lease");
  }
  fd_ = fd;
  type_ = type;
  return absl::OkStatus();
}

bool Lease::Held() const {
  if (fd_ < 0) return false;
  return os_.Fcntl(fd_, F_GETLEASE, 0) == type_;
}

void Lease::Release() {
  if (fd_ < 0) return;
  (void)os_.Fcntl(fd_, F_SETLEASE, F_UNLCK);
  fd_ = -1;
  type_ = 0;
}

}  // namespace ext4dio
