// SyscallCounter: how many times the calling thread entered one system call,
// counted by the kernel (a perf counter on the syscall's sys_enter
// tracepoint), independent of how the call was made. liburing 2.3 issues
// io_uring_enter with inline `syscall` instructions (liburing.so imports
// nothing from libc), so interposing syscall(2) would see none of them.
//
// The tracepoint's id lives in tracefs. When tracefs is not mounted, a root
// process reads it from a tracefs mounted in a private mount namespace of a
// child (`unshare -m`): nothing is mounted where anyone else could see it,
// and the mount goes away with the child.
#ifndef EXT4DIO_TEST_SYSCALL_COUNTER_H_
#define EXT4DIO_TEST_SYSCALL_COUNTER_H_

#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "testutil.h"

namespace ext4dio::testing {

class SyscallCounter {
 public:
  // A counter of `syscall_name` (e.g. "io_uring_enter") entered by the
  // calling thread from now on, or nullptr with *why saying what is missing
  // (tracefs, perf events, permission).
  static std::unique_ptr<SyscallCounter> Create(const std::string& syscall_name,
                                                std::string* why) {
    const uint64_t id = TracepointId(syscall_name);
    if (id == 0) {
      *why = "tracefs with syscall tracepoints (sys_enter_" + syscall_name +
             ") is not available" +
             (geteuid() == 0 ? std::string() : " (not root: cannot mount it privately)");
      return nullptr;
    }
    perf_event_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_TRACEPOINT;
    attr.size = sizeof attr;
    attr.config = id;
    attr.disabled = 0;
    attr.exclude_hv = 1;
    // pid 0, cpu -1: this thread only, on any CPU; not inherited by threads
    // it creates (the library's own threads are not counted).
    const int fd = static_cast<int>(syscall(SYS_perf_event_open, &attr, 0, -1, -1,
                                            PERF_FLAG_FD_CLOEXEC));
    if (fd < 0) {
      *why = std::string("perf_event_open of the sys_enter_") + syscall_name +
             " tracepoint: " + std::strerror(errno);
      return nullptr;
    }
    return std::unique_ptr<SyscallCounter>(new SyscallCounter(fd));
  }

  ~SyscallCounter() { close(fd_); }
  SyscallCounter(const SyscallCounter&) = delete;
  SyscallCounter& operator=(const SyscallCounter&) = delete;

  // Entries so far (since Create); UINT64_MAX when the read fails.
  uint64_t Read() const {
    uint64_t v = 0;
    if (read(fd_, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) return UINT64_MAX;
    return v;
  }

 private:
  explicit SyscallCounter(int fd) : fd_(fd) {}

  // The sys_enter tracepoint's id, 0 when tracefs cannot tell. Looked up
  // once per name (the private mount costs a child process).
  static uint64_t TracepointId(const std::string& syscall_name) {
    static std::string cached_name;
    static uint64_t cached_id = 0;
    if (!cached_name.empty() && cached_name == syscall_name) return cached_id;
    const std::string rel = "events/syscalls/sys_enter_" + syscall_name + "/id";
    uint64_t id = 0;
    for (const char* root : {"/sys/kernel/tracing/", "/sys/kernel/debug/tracing/"}) {
      std::ifstream in(root + rel);
      if (in >> id) break;
      id = 0;
    }
    if (id == 0 && geteuid() == 0) {
      RunResult r = Run({"unshare", "-m", "--propagation", "private", "sh", "-c",
                         "mount -t tracefs nodev /sys/kernel/tracing && cat "
                         "/sys/kernel/tracing/" + rel});
      if (r.exit_code == 0) id = std::strtoull(r.out.c_str(), nullptr, 10);
    }
    cached_name = syscall_name;
    cached_id = id;
    return id;
  }

  int fd_;
};

}  // namespace ext4dio::testing

#endif  // EXT4DIO_TEST_SYSCALL_COUNTER_H_
