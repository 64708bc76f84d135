// A tool run in the background for tests that talk to it while it runs:
// its standard input is a pipe the test feeds (or a file), its standard
// output a pipe the test reads (or a file), its standard error a file.
// Used to interrupt the CLIs with signals mid-run.
#ifndef EXT4DIO_TEST_CHILD_PROCESS_H_
#define EXT4DIO_TEST_CHILD_PROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "testutil.h"

extern char** environ;

namespace ext4dio::testing {

class Child {
 public:
  // `stdin_file` empty: a pipe (in_fd()); `stdout_pipe`: a pipe (out_fd()),
  // else a file read by out() after Wait().
  Child(const std::vector<std::string>& argv, const std::string& stdin_file = "",
        bool stdout_pipe = false)
  {
    // Feeding a child that died must fail the write, not kill the test.
    signal(SIGPIPE, SIG_IGN);
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if (stdin_file.empty() && pipe2(in, O_CLOEXEC) != 0) return;
    if (stdout_pipe && pipe2(out, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (stdin_file.empty()) {
      posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    } else {
      posix_spawn_file_actions_addopen(&fa, 0, stdin_file.c_str(), O_RDONLY, 0);
    }
    if (stdout_pipe) {
      posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    } else {
      posix_spawn_file_actions_addopen(&fa, 1, (dir_ / "out").c_str(),
                                       O_WRONLY | O_CREAT | O_TRUNC, 0600);
    }
    posix_spawn_file_actions_addopen(&fa, 2, (dir_ / "err").c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // The child gets the default SIGPIPE, SIGINT and SIGTERM whatever ours are.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t def;
    sigemptyset(&def);
    for (int sig : {SIGPIPE, SIGINT, SIGTERM}) sigaddset(&def, sig);
    posix_spawnattr_setsigdefault(&attr, &def);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    const int rc = posix_spawnp(&pid_, args[0], &fa, &attr, args.data(), environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (in[0] >= 0) close(in[0]);
    if (out[1] >= 0) close(out[1]);
    in_ = in[1];
    out_ = out[0];
    if (rc != 0) pid_ = -1;
  }
  ~Child() {
    CloseInput();
    if (out_ >= 0) close(out_);
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool ok() const { return pid_ > 0; }
  int in_fd() const { return in_; }
  int out_fd() const { return out_; }
  // Writes all of `data` to the child's standard input.
  bool Feed(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t r = write(in_, data.data() + done, data.size() - done);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      done += static_cast<size_t>(r);
    }
    return true;
  }
  void CloseInput() {
    if (in_ >= 0) close(in_);
    in_ = -1;
  }
  // Bytes waiting in a pipe (FIONREAD works on either end).
  static int Queued(int fd) {
    int n = -1;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
  }
  // Polls until cond() or `limit` passes; a guard against hangs, not a
  // timing assertion. True when cond() held.
  template <typename F>
  static bool WaitFor(F cond, std::chrono::seconds limit = std::chrono::seconds(60)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
  bool Signal(int sig) { return pid_ > 0 && kill(pid_, sig) == 0; }
  // Reads the output pipe to its end.
  std::string ReadAllOutput() {
    std::string s;
    char buf[65536];
    for (;;) {
      const ssize_t r = read(out_, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      s.append(buf, static_cast<size_t>(r));
    }
    return s;
  }
  // Exit code (128+N when killed by signal N); -1 (and the child killed)
  // when it has not ended within `limit`.
  int Wait(std::chrono::seconds limit = std::chrono::seconds(120)) {
    if (pid_ <= 0) return -1;
    int status = 0;
    const bool ended = WaitFor(
        [&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, limit);
    if (!ended) {
      kill(pid_, SIGKILL);
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    }
    pid_ = -1;
    if (!ended) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  std::string out() const { return ReadFile(dir_ / "out"); }
  std::string err() const { return ReadFile(dir_ / "err"); }

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1;
};

}  // namespace ext4dio::testing

#endif  // EXT4DIO_TEST_CHILD_PROCESS_H_
