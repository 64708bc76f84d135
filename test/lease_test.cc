// Lease (lib/lease.h) against the real kernel, on a file in tmpfs: taking a
// write lease, EAGAIN while the file is open elsewhere, a break by another
// process's open (writer and read-only) seen by Held(), the opener getting in
// only after Release(), Release's idempotence, and no signal reaching us.
// Exits 77 (skip) saying why when leases cannot be taken here at all
// (fs.leases-enable = 0).
#include "lease.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::TempDir;

// Polls until cond(); false after `limit` (a hang guard, well inside the
// kernel's 45 s lease-break-time, not a timing assertion).
bool WaitUntil(const std::function<bool()>& cond,
               std::chrono::seconds limit = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

class LeaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_ / "f";
    testing::WriteFile(path_, "some data");
    fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override {
    if (fd_ >= 0) ::close(fd_);
  }

  // A child process that opens the file with `flags` (blocking while our
  // lease is held), then writes one byte to a pipe, holds the file open
  // until its stdin-like pipe closes, and exits 0 (1 if the open failed).
  struct Opener {
    pid_t pid = -1;
    int opened_fd = -1;  // readable when the child's open returned
    int hold_fd = -1;    // closing it lets the child exit
    ~Opener() {  // a test that failed half-way: the child goes too
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        int status;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
      }
      if (opened_fd >= 0) ::close(opened_fd);
      if (hold_fd >= 0) ::close(hold_fd);
    }
  };
  void StartOpener(int flags, Opener& o) {
    int opened[2], hold[2];
    if (::pipe2(opened, O_CLOEXEC) != 0 || ::pipe2(hold, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe: " << std::strerror(errno);
      return;
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
      // Only async-signal-safe calls from here. Our copy of the hold
      // pipe's write end would keep it open: close it.
      ::close(hold[1]);
      ::close(opened[0]);
      const int fd = ::open(path_.c_str(), flags | O_CLOEXEC);
      const char c = fd >= 0 ? 'y' : 'n';
      (void)!::write(opened[1], &c, 1);
      char b;
      (void)!::read(hold[0], &b, 1);
      ::_exit(fd >= 0 ? 0 : 1);
    }
    ::close(opened[1]);
    ::close(hold[0]);
    o.pid = pid;
    o.opened_fd = opened[0];
    o.hold_fd = hold[1];
  }
  static bool Opened(const Opener& o) {
    pollfd p{o.opened_fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  }
  // Lets the child end; its exit code.
  static int Finish(Opener& o) {
    if (o.pid <= 0) return -1;
    ::close(std::exchange(o.hold_fd, -1));
    int status = 0;
    while (::waitpid(o.pid, &status, 0) < 0 && errno == EINTR) {
    }
    ::close(std::exchange(o.opened_fd, -1));  // after its write: no SIGPIPE
    o.pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  TempDir dir_;
  std::string path_;
  int fd_ = -1;
};

TEST_F(LeaseTest, TakesAWriteLeaseOnTheOnlyDescriptor) {
  Lease lease;
  ASSERT_TRUE(lease.Take(fd_, F_WRLCK).ok());
  EXPECT_TRUE(lease.taken());
  EXPECT_TRUE(lease.Held());
  EXPECT_EQ(::fcntl(fd_, F_GETLEASE), F_WRLCK);
  lease.Release();
  EXPECT_FALSE(lease.taken());
  EXPECT_FALSE(lease.Held());
  EXPECT_EQ(::fcntl(fd_, F_GETLEASE), F_UNLCK);
}

TEST_F(LeaseTest, EagainWhileOpenElsewhere) {
  Lease lease;
  {
    // Another descriptor in this process.
    const int other = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(other, 0);
    const absl::Status s = lease.Take(fd_, F_WRLCK);
    ::close(other);
    EXPECT_EQ(CodeOf(s), -EAGAIN) << s;
    EXPECT_FALSE(lease.taken());
  }
  // Another process holding it open: EAGAIN until it closes it.
  Opener o;
  StartOpener(O_RDONLY, o);
  ASSERT_TRUE(WaitUntil([&] { return Opened(o); }));
  const absl::Status s = lease.Take(fd_, F_WRLCK);
  EXPECT_EQ(CodeOf(s), -EAGAIN) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("taking a write lease"));
  EXPECT_EQ(Finish(o), 0);
  EXPECT_TRUE(lease.Take(fd_, F_WRLCK).ok());
}

TEST_F(LeaseTest, AWriterOpeningBreaksItAndGetsInOnlyAfterRelease) {
  Lease lease;
  ASSERT_TRUE(lease.Take(fd_, F_WRLCK).ok());
  ASSERT_TRUE(lease.Held());
  Opener o;
  StartOpener(O_RDWR, o);
  ASSERT_TRUE(WaitUntil([&] { return !lease.Held(); })) << "no break seen";
  EXPECT_TRUE(lease.taken());
  EXPECT_EQ(::fcntl(fd_, F_GETLEASE), F_UNLCK);  // the breaker wants it all
  // The opener waits for us.
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_FALSE(Opened(o)) << "the opener got in while the lease was held";
  lease.Release();
  EXPECT_TRUE(WaitUntil([&] { return Opened(o); })) << "the opener did not proceed";
  EXPECT_EQ(Finish(o), 0);
}

TEST_F(LeaseTest, AReadOnlyOpenerBreaksItToo) {
  Lease lease;
  ASSERT_TRUE(lease.Take(fd_, F_WRLCK).ok());
  Opener o;
  StartOpener(O_RDONLY, o);
  ASSERT_TRUE(WaitUntil([&] { return !lease.Held(); })) << "no break seen";
  // A reader only asks for a downgrade: the lease shows the target type.
  EXPECT_EQ(::fcntl(fd_, F_GETLEASE), F_RDLCK);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_FALSE(Opened(o));
  lease.Release();
  EXPECT_TRUE(WaitUntil([&] { return Opened(o); }));
  EXPECT_EQ(Finish(o), 0);
}

TEST_F(LeaseTest, ReleaseIsIdempotentAndTheLeaseCanBeTakenAgain) {
  Lease lease;
  lease.Release();  // never taken
  ASSERT_TRUE(lease.Take(fd_, F_WRLCK).ok());
  lease.Release();
  lease.Release();
  EXPECT_FALSE(lease.taken());
  EXPECT_EQ(::fcntl(fd_, F_GETLEASE), F_UNLCK);
  ASSERT_TRUE(lease.Take(fd_, F_WRLCK).ok());
  // Taking again while taken gives the old one up first (no error).
  ASSERT_TRUE(lease.Take(fd_, F_WRLCK).ok());
  EXPECT_TRUE(lease.Held());
}

// Blocks `signals` for the test's duration; what became pending meanwhile
// is collected (and so discarded) when the scope ends.
class BlockedSignals {
 public:
  explicit BlockedSignals(std::initializer_list<int> signals) {
    sigemptyset(&set_);
    for (int s : signals) sigaddset(&set_, s);
    ::sigprocmask(SIG_BLOCK, &set_, &old_);
  }
  ~BlockedSignals() {
    const timespec zero{0, 0};
    while (::sigtimedwait(&set_, nullptr, &zero) > 0) {
    }
    ::sigprocmask(SIG_SETMASK, &old_, nullptr);
  }
  // The blocked signals now pending ("" if none).
  std::string Pending() const {
    sigset_t p;
    ::sigpending(&p);
    std::string out;
    for (int s = 1; s < NSIG; ++s) {
      if (sigismember(&set_, s) && sigismember(&p, s)) out += std::string(strsignal(s)) + " ";
    }
    return out;
  }

 private:
  sigset_t set_, old_;
};

std::atomic<int> g_urg_handled{0};
void OnUrg(int) { g_urg_handled.fetch_add(1); }

TEST_F(LeaseTest, NoSignalReachesTheProcessAtABreak) {
  // Blocked, not ignored: the lease's choice of signal sees default
  // handlers, and whatever the kernel sends stays pending where we see it.
  BlockedSignals blocked({SIGIO, SIGURG, SIGWINCH});
  Lease lease;
  ASSERT_TRUE(lease.Take(fd_, F_WRLCK).ok());
  Opener o;
  StartOpener(O_RDWR, o);
  ASSERT_TRUE(WaitUntil([&] { return !lease.Held(); }));
  lease.Release();
  EXPECT_EQ(Finish(o), 0);
  EXPECT_EQ(blocked.Pending(), "");
}

TEST_F(LeaseTest, NoSignalReachesAnApplicationHandlingSigurg) {
  struct sigaction sa = {}, old = {};
  sa.sa_handler = OnUrg;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGURG, &sa, &old), 0);
  testing::Defer restore([&] { ::sigaction(SIGURG, &old, nullptr); });
  g_urg_handled = 0;
  BlockedSignals blocked({SIGIO, SIGWINCH});
  Lease lease;
  ASSERT_TRUE(lease.Take(fd_, F_WRLCK).ok());
  Opener o;
  StartOpener(O_RDONLY, o);
  ASSERT_TRUE(WaitUntil([&] { return !lease.Held(); }));
  lease.Release();
  EXPECT_EQ(Finish(o), 0);
  EXPECT_EQ(blocked.Pending(), "");
  EXPECT_EQ(g_urg_handled.load(), 0);
}

}  // namespace
}  // namespace ext4dio

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Can a lease be taken here at all? (fs.leases-enable, seccomp.)
  ext4dio::testing::TempDir dir;
  ext4dio::testing::WriteFile(dir / "probe", "x");
  const int fd = ::open((dir / "probe").c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0 || ::fcntl(fd, F_SETLEASE, F_WRLCK) != 0) {
    std::printf("SKIP lease_test: cannot take a lease on a tmpfs file (%s)\n",
                std::strerror(errno));
    return 77;
  }
  ::fcntl(fd, F_SETLEASE, F_UNLCK);
  ::close(fd);
  return RUN_ALL_TESTS();
}
