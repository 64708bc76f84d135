// Mounted mode against a model (issue 9, "Tests"): the file's expected bytes
// kept in a std::string, and every way of reading the file must agree with
// it after every step.
//
// Model test: each seed runs a reproducible sequence of steps chosen by a
// std::mt19937_64 seeded with it (the random choices, never timing):
//  * ext4dio writer sessions (open, operations, close): unaligned pwrites of
//    1 B .. 256 KiB (over data, into holes, into unwritten extents, past
//    EOF), by 1-4 threads on disjoint ranges, async queue writes, truncate,
//    punch, zero range and keep-size fallocate through the handle, library
//    reads checked against the model; and in between, operations of another
//    process (a forked child, so its open breaks the library's lease);
//  * between sessions, and during them from a child: buffered and O_DIRECT
//    reads, writes, truncates, punches, keep-size fallocate, mmap reads,
//    splices of a file range into a pipe kept open for several steps
//    (pinning page-cache pages), buffered reads of the device;
//  * after each step the file read buffered, with O_DIRECT (and sometimes
//    mmap, or buffered after POSIX_FADV_DONTNEED) equals the model; at the
//    end of a seed: umount, e2fsck -fn clean, mount, compare again.
// On 1 KiB-block and 4 KiB-block ext4. A mismatch fails the seed with the
// last steps, the read path, the first differing offset and the bytes.
//   EXT4DIO_MODEL_SEED=N     run seed N only (default: 1, 2, 3, ... until
//                            the time budget is spent)
//   EXT4DIO_MODEL_STEPS=N    steps per seed (default 40)
//   EXT4DIO_MODEL_SECONDS=S  budget per filesystem (default 20)
//   EXT4DIO_MODEL_REFERENCE=1  the same steps with a plain kernel descriptor
//                            in place of the library (checks the model and
//                            the test: every seed must pass so)
//
// ConcurrentKernelPath (issue 11): the same loop, but every writer session
// is rounds of 4 threads at once on one handle, each in its own region
// (sync pwrite/pread into aligned and misaligned buffers, and a queue of its
// own): hole fills and unwritten conversions (after KEEP_SIZE and plain
// fallocate through the handle), overwrites, a read right after each write
// (never zeros), punches, truncates by the thread owning the tail; between
// rounds and sessions another process reads and writes. Each seed runs in a
// child, so a hang is reported with the threads' stacks. Budget 8 s per
// block size (EXT4DIO_MODEL_SECONDS), 16 steps per seed
// (EXT4DIO_MODEL_STEPS), EXT4DIO_MODEL_BLOCK_SIZE=4096|1024 for one.
//
// Then issue 9's reproductions, each as a short deterministic test:
// items 1 (the page at the old EOF), 2 (a device page shared with journaled
// metadata on 1 KiB blocks), 3 (pages pinned by a pipe) and the
// multi-threaded extending ext4dio-write of item 1.
// Needs root and loop devices: exits 77 (skip) saying why when missing.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "ext4dio/ext4dio.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::RandomBytes;

using testing::LoopMount;
using testing::RunResult;

// A check that returns "" or what differed: prints only the text.
#define EXPECT_OK_TEXT(expr)                \
  do {                                      \
    const std::string text_ = (expr);       \
    EXPECT_TRUE(text_.empty()) << text_;    \
  } while (0)

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * 1024;

std::string Hex(const std::string& s, size_t from, size_t n) {
  std::string out;
  char b[4];
  for (size_t i = from; i < std::min(s.size(), from + n); ++i) {
    std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(s[i]));
    out += b;
  }
  return out.empty() ? "(none)" : out;
}

// "" when equal; else the first differing offset, the extent of that run of
// differences, how many bytes differ, and both sides' bytes there.
std::string Describe(const std::string& want, const std::string& got, const std::string& how) {
  if (want == got) return "";
  std::string d = how + ": ";
  if (want.size() != got.size())
    d += "size " + std::to_string(got.size()) + ", model " + std::to_string(want.size()) + "; ";
  const size_t common = std::min(want.size(), got.size());
  size_t first = common;
  for (size_t i = 0; i < common; ++i) {
    if (want[i] != got[i]) { first = i; break; }
  }
  if (first == common) return d + "(the common prefix is equal)";
  size_t run_end = first, differing = 0;
  while (run_end < common && want[run_end] != got[run_end]) ++run_end;
  for (size_t i = first; i < common; ++i) differing += want[i] != got[i];
  const size_t from = first >= 8 ? first - 8 : 0;
  return d + "first difference at " + std::to_string(first) + " (run of " +
         std::to_string(run_end - first) + " bytes, " + std::to_string(differing) +
         " bytes differ in all)\n    model  @" + std::to_string(from) + ": " + Hex(want, from, 32) +
         "\n    actual @" + std::to_string(from) + ": " + Hex(got, from, 32);
}

// The file's expected content.
struct Model {
  std::string bytes;
  void Write(uint64_t off, const std::string& data) {
    if (off + data.size() > bytes.size()) bytes.resize(off + data.size(), '\0');
    bytes.replace(off, data.size(), data);
  }
  void Truncate(uint64_t size) { bytes.resize(size, '\0'); }
  void Zero(uint64_t off, uint64_t len) {  // punch (keeps the size)
    if (off >= bytes.size()) return;
    const uint64_t end = std::min<uint64_t>(bytes.size(), off + len);
    std::fill(bytes.begin() + off, bytes.begin() + end, '\0');
  }
  void Extend(uint64_t end) {  // fallocate / zero range without KEEP_SIZE
    if (end > bytes.size()) bytes.resize(end, '\0');
  }
};

// ---- Reads and writes by the kernel (this process or a child) -----------

struct AlignedFree {
  void operator()(char* p) const { std::free(p); }
};
std::unique_ptr<char, AlignedFree> Aligned(size_t n) {
  void* p = nullptr;
  if (posix_memalign(&p, 4096, std::max<size_t>(n, 4096)) != 0) return nullptr;
  return std::unique_ptr<char, AlignedFree>(static_cast<char*>(p));
}
// A 4 KiB-aligned copy of data (for O_DIRECT and the fast path's pieces).
std::unique_ptr<char, AlignedFree> AlignedCopy(const std::string& data) {
  auto buf = Aligned(data.size());
  std::memcpy(buf.get(), data.data(), data.size());
  return buf;
}

std::string Errno(const std::string& what) { return "<" + what + ": " + strerror(errno) + ">"; }

// The whole file, buffered (fadvise: drop its clean pages first).
std::string ReadBuffered(const std::string& path, bool fadvise = false) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return Errno("open");
  if (fadvise) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  struct stat st;
  fstat(fd, &st);
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t r = pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (r < 0) { close(fd); return Errno("read"); }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  close(fd);
  out.resize(done);
  return out;
}

// The whole file with O_DIRECT: what is on the device (the kernel writes
// back dirty pages of the range first).
std::string ReadDirect(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) return Errno("open O_DIRECT");
  struct stat st;
  fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size);
  const size_t rounded = (size + 4095) / 4096 * 4096;
  auto buf = Aligned(rounded);
  size_t done = 0;
  while (done < rounded) {
    ssize_t r = pread(fd, buf.get() + done, rounded - done, static_cast<off_t>(done));
    if (r < 0) { close(fd); return Errno("O_DIRECT read"); }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  close(fd);
  return std::string(buf.get(), std::min(done, size));
}

std::string ReadMmap(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return Errno("open");
  struct stat st;
  fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) { close(fd); return ""; }
  void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return Errno("mmap");
  std::string out(static_cast<const char*>(p), size);
  munmap(p, size);
  return out;
}

// "" or what failed.
std::string WriteBuffered(const std::string& path, uint64_t off, const std::string& data,
                          bool fsync_after) {
  int fd = open(path.c_str(), O_WRONLY);
  if (fd < 0) return Errno("open");
  ssize_t w = pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
  std::string err = w == static_cast<ssize_t>(data.size()) ? "" : Errno("pwrite");
  if (err.empty() && fsync_after && fsync(fd) != 0) err = Errno("fsync");
  close(fd);
  return err;
}

// off and data.size() multiples of 512.
std::string WriteDirect(const std::string& path, uint64_t off, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_DIRECT);
  if (fd < 0) return Errno("open O_DIRECT");
  auto buf = AlignedCopy(data);
  ssize_t w = pwrite(fd, buf.get(), data.size(), static_cast<off_t>(off));
  close(fd);
  return w == static_cast<ssize_t>(data.size()) ? "" : Errno("O_DIRECT pwrite");
}

std::string TruncateFile(const std::string& path, uint64_t size) {
  return truncate(path.c_str(), static_cast<off_t>(size)) == 0 ? "" : Errno("truncate");
}

std::string FallocateFile(const std::string& path, int mode, uint64_t off, uint64_t len) {
  int fd = open(path.c_str(), O_WRONLY);
  if (fd < 0) return Errno("open");
  int rc = fallocate(fd, mode, static_cast<off_t>(off), static_cast<off_t>(len));
  std::string err = rc == 0 ? "" : Errno("fallocate");
  close(fd);
  return err;
}

// Closes every descriptor of a forked child except `keep` (the library's
// file and device descriptors must not outlive their owner in a child).
void CloseAllBut(std::initializer_list<int> keep) {
  std::set<int> k(keep);
  for (int fd = 3; fd < 1024; ++fd)
    if (!k.count(fd)) close(fd);
}

// Forks a child that runs fn, writes its result into a pipe and exits 0:
// "" with the child's pid and the pipe's read end, or what failed.
// `close_others`: the child first closes every other descriptor.
std::string Spawn(const std::function<std::string()>& fn, bool close_others, pid_t* pid,
                  int* from) {
  int p[2];
  if (pipe(p) != 0) return Errno("pipe");
  *pid = fork();
  if (*pid < 0) {
    const std::string err = Errno("fork");
    close(p[0]);
    close(p[1]);
    return err;
  }
  if (*pid == 0) {
    if (close_others) CloseAllBut({p[1]}); else close(p[0]);
    const std::string out = fn();
    size_t done = 0;
    while (done < out.size()) {
      ssize_t w = write(p[1], out.data() + done, out.size() - done);
      if (w <= 0) break;
      done += static_cast<size_t>(w);
    }
    _exit(0);
  }
  close(p[1]);
  *from = p[0];
  return "";
}

// Waits for a Spawn()ed child: "" when it exited 0, else how it ended.
std::string WaitChild(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "<child died: status " + std::to_string(status) + ">";
  return "";
}

// Runs fn in a forked child (another process: its opens break the
// library's lease, as another program's would) and returns its result
// string. The child uses only system calls and malloc (fork-safe in glibc).
std::string InChild(const std::function<std::string()>& fn) {
  pid_t pid;
  int from;
  if (std::string e = Spawn(fn, /*close_others=*/true, &pid, &from); !e.empty()) return e;
  std::string out;
  char buf[65536];
  ssize_t r;
  while ((r = read(from, buf, sizeof buf)) > 0 || (r < 0 && errno == EINTR))
    if (r > 0) out.append(buf, static_cast<size_t>(r));
  close(from);
  const std::string died = WaitChild(pid);
  return died.empty() ? out : died;
}

// InChild with a limit: a child that has not answered within `limit` is
// taken to hang (a deadlock: the library's threads wait for each other);
// its threads' stacks (gdb, when installed) are returned in the report and
// it is killed, so that the caller can still tear its mount down. The limit
// is a hang detector, not a timing check: what runs there takes a second or
// two.
std::string InChildWithin(const std::function<std::string()>& fn, std::chrono::seconds limit) {
  pid_t pid;
  int from;
  if (std::string e = Spawn(fn, /*close_others=*/false, &pid, &from); !e.empty()) return e;
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool hung = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) { hung = true; break; }
    pollfd pfd{from, POLLIN, 0};
    const int n = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[65536];
    const ssize_t r = read(from, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  close(from);
  std::string stacks;
  if (hung) {
    RunResult r = testing::Run({"gdb", "-p", std::to_string(pid), "-batch", "-ex", "thread apply all bt 16"});
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("Thread ", 0) == 0 || line.find("ext4dio::") != std::string::npos ||
          line.find("ext4dio_") != std::string::npos)
        stacks += "    " + line.substr(0, 240) + "\n";
    }
    kill(pid, SIGKILL);
  }
  const std::string died = WaitChild(pid);
  if (hung) {
    return "<no answer within " + std::to_string(limit.count()) +
           " s: the writer hangs (deadlock?); its threads:\n" +
           (stacks.empty() ? std::string("    (no stacks: gdb missing)\n") : stacks) + ">";
  }
  return died.empty() ? out : died;
}

// A process that spliced [off, off+len) of the file into a pipe and keeps
// the pipe unread, pinning those page-cache pages, until Release().
class SplicePin {
 public:
  SplicePin(const std::string& path, uint64_t off, uint64_t len) {
    int ready[2], ctl[2];
    if (pipe(ready) != 0 || pipe(ctl) != 0) { error_ = Errno("pipe"); return; }
    pid_ = fork();
    if (pid_ < 0) { error_ = Errno("fork"); return; }
    if (pid_ == 0) {
      CloseAllBut({ready[1], ctl[0]});
      int pp[2];
      int fd = open(path.c_str(), O_RDONLY);
      char status = 'E';
      if (fd >= 0 && pipe(pp) == 0) {
        fcntl(pp[1], F_SETPIPE_SZ, static_cast<int>(std::max<uint64_t>(len, 65536)));
        loff_t o = static_cast<loff_t>(off);
        ssize_t n = splice(fd, &o, pp[1], nullptr, len, SPLICE_F_NONBLOCK);
        status = n > 0 ? 'K' : 'S';
        close(fd);  // the pages stay pinned by the pipe, the file is free
      }
      (void)!write(ready[1], &status, 1);
      char c;
      (void)!read(ctl[0], &c, 1);  // until Release() closes the other end
      _exit(0);
    }
    close(ready[1]);
    close(ctl[0]);
    ctl_ = ctl[1];
    char status = 0;
    if (read(ready[0], &status, 1) != 1 || status != 'K')
      error_ = std::string("splice child failed (") + status + ")";
    close(ready[0]);
  }
  ~SplicePin() { Release(); }
  SplicePin(const SplicePin&) = delete;
  SplicePin& operator=(const SplicePin&) = delete;
  const std::string& error() const { return error_; }
  void Release() {
    if (ctl_ >= 0) close(ctl_);
    ctl_ = -1;
    if (pid_ > 0) {
      int status;
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    }
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int ctl_ = -1;
  std::string error_;
};

// ---- The library --------------------------------------------------------

struct FileCloser {
  void operator()(ext4dio_file* f) const { ext4dio_close(f); }
};
using Handle = std::unique_ptr<ext4dio_file, FileCloser>;

Handle OpenLib(const std::string& path, std::string* error) {
  ext4dio_target t;
  ext4dio_target_init(&t);
  t.path = path.c_str();
  ext4dio_open_opts o;
  ext4dio_open_opts_init(&o);
  o.flags = EXT4DIO_OPEN_WRITE;
  ext4dio_file* f = nullptr;
  int rc = ext4dio_open(&t, &o, &f);
  if (rc < 0) *error = "ext4dio_open: " + std::string(ext4dio_last_error());
  return Handle(f);
}

std::string LibError(const char* what, int64_t rc) {
  return std::string(what) + " returned " + std::to_string(rc) + ": " + ext4dio_last_error();
}

std::string LibWrite(ext4dio_file* f, uint64_t off, const std::string& data) {
  int64_t w = ext4dio_pwrite(f, data.data(), data.size(), off);
  return w == static_cast<int64_t>(data.size()) ? "" : LibError("ext4dio_pwrite", w);
}

std::string LibReadAll(ext4dio_file* f, size_t expect) {
  std::string out(expect + 8192, '\0');
  size_t done = 0;
  while (done < out.size()) {
    int64_t r = ext4dio_pread(f, out.data() + done, out.size() - done, done);
    if (r < 0) return "<" + LibError("ext4dio_pread", r) + ">";
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  out.resize(done);
  return out;
}

// Reaps n completions of requests of reqs (a request's cookie is its index):
// "" or the first failure, a reap's error or a result other than the
// request's length.
std::string ReapAll(ext4dio_queue* q, const std::vector<ext4dio_request>& reqs, size_t n,
                    const char* what) {
  std::string e;
  for (size_t got = 0; got < n;) {
    ext4dio_completion c[8];
    const int rc = ext4dio_queue_reap(q, c, 8, 1);
    if (rc < 0) return e.empty() ? LibError("ext4dio_queue_reap", rc) : e;
    for (int i = 0; i < rc; ++i) {
      const ext4dio_request& r = reqs[c[i].cookie];
      if (c[i].result != static_cast<int64_t>(r.length) && e.empty())
        e = std::string("queue ") + what + " " + std::to_string(c[i].cookie) + " at " +
            std::to_string(r.offset) + "+" + std::to_string(r.length) + ": result " +
            std::to_string(c[i].result);
    }
    got += static_cast<size_t>(rc);
  }
  return e;
}

// Submits reqs in order until one is refused, then reaps those submitted
// (*submitted: how many): "" or the first failure.
std::string SubmitAndReap(ext4dio_queue* q, const std::vector<ext4dio_request>& reqs,
                          const char* what, size_t* submitted) {
  std::string e;
  *submitted = 0;
  for (size_t i = 0; i < reqs.size() && e.empty(); ++i) {
    ext4dio_request r = reqs[i];
    if (int rc = ext4dio_queue_submit(q, &r); rc < 0) e = LibError("ext4dio_queue_submit", rc);
    else ++*submitted;
  }
  const std::string reaped = ReapAll(q, reqs, *submitted, what);
  return e.empty() ? reaped : e;
}

bool Remount(const LoopMount& m, std::string* why) {
  RunResult r = testing::Run({"umount", m.mount_point()});
  if (r.exit_code != 0) { *why = "umount: " + r.err; return false; }
  r = testing::Run({"e2fsck", "-fn", m.device()});
  const std::string fsck = r.out + r.err;
  const int fsck_rc = r.exit_code;
  r = testing::Run({"mount", "-t", "ext4", m.device(), m.mount_point()});
  if (r.exit_code != 0) { *why = "mount again: " + r.err; return false; }
  if (fsck_rc != 0) { *why = "e2fsck -fn: exit " + std::to_string(fsck_rc) + "\n" + fsck; return false; }
  return true;
}

// ---- The model test -----------------------------------------------------

uint64_t EnvU64(const char* name, uint64_t dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : dflt;
}

// How to run one seed of the model test again.
std::string Rerun(uint64_t seed, uint32_t block_size, bool concurrent) {
  if (concurrent) {
    return "rerun: EXT4DIO_MODEL_SEED=" + std::to_string(seed) +
           " EXT4DIO_MODEL_BLOCK_SIZE=" + std::to_string(block_size) +
           " mounted_model_test --gtest_filter='MountedModelTest.ConcurrentKernelPath'";
  }
  return "rerun: EXT4DIO_MODEL_SEED=" + std::to_string(seed) +
         " mounted_model_test --gtest_filter='*Model" + (block_size == 1024 ? "1" : "4") +
         "KiBBlocks'";
}

class ModelRun {
 public:
  // `concurrent`: the writer's sessions are ConcurrentSession()s (issue 11).
  ModelRun(const LoopMount& m, uint64_t seed, uint32_t block_size, bool concurrent = false)
      : concurrent_(concurrent), m_(m), seed_(seed), bs_(block_size),
        rng_(seed * 0x9E3779B97F4A7C15ull + block_size + (concurrent ? 0x11 : 0)),
        path_(m / ("model-" + std::to_string(seed))) {}

  // "" when every check passed, else the failure report.
  std::string Go(uint64_t steps, std::chrono::steady_clock::time_point hard_deadline) {
    int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return Errno("create");
    close(fd);
    std::string err;
    for (step_ = 0; step_ < steps && err.empty(); ++step_) {
      if (std::chrono::steady_clock::now() > hard_deadline) {
        Log("(time budget spent: stopping early)");
        break;
      }
      err = Step();
      if (err.empty()) err = CheckAll(/*session=*/false);
      if (pin_ && --pin_steps_ <= 0) {
        Log("release the splice pin");
        pin_.reset();
      }
    }
    pin_.reset();
    if (err.empty()) {
      Log("umount, e2fsck -fn, mount");
      std::string why;
      if (!Remount(m_, &why)) err = why;
      if (err.empty()) err = CheckAll(false);
    }
    unlink(path_.c_str());
    if (err.empty()) return "";
    std::string report = "seed " + std::to_string(seed_) + " (" + std::to_string(bs_) +
                         "-byte blocks) failed at step " + std::to_string(step_) + ":\n  " + err +
                         "\n  last steps:\n";
    for (const std::string& s : log_) report += "    " + s + "\n";
    return report + "  " + Rerun(seed_, bs_, concurrent_);
  }

 private:
  void Log(const std::string& s) {
    log_.push_back("#" + std::to_string(step_) + " " + s);
    if (log_.size() > 24) log_.pop_front();
  }
  uint64_t Uniform(uint64_t lo, uint64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  // A length of 1 B .. 256 KiB, skewed to small and to aligned sizes.
  uint64_t Length(uint64_t max = 256 * kKiB) {
    uint64_t n;
    switch (Uniform(0, 3)) {
      case 0: n = Uniform(1, 600); break;
      case 1: n = Uniform(1, 8 * kKiB); break;
      case 2: n = Uniform(1, 64) * 512; break;
      default: n = Uniform(1, max); break;
    }
    return std::max<uint64_t>(1, std::min(n, max));
  }
  // An offset: inside the file, near EOF, or past it (a hole before).
  uint64_t Offset(uint64_t len) {
    const uint64_t size = model_.bytes.size();
    uint64_t off;
    switch (Uniform(0, 4)) {
      case 0: off = size; break;                              // append
      case 1: off = size + Uniform(1, 80 * kKiB); break;       // past EOF
      case 2: off = size > 0 ? Uniform(0, size - 1) / 512 * 512 : 0; break;
      default: off = size > 0 ? Uniform(0, size - 1) : 0; break;
    }
    if (off + len > kMaxSize) off = kMaxSize > len ? Uniform(0, kMaxSize - len) : 0;
    return off;
  }

  // The writer's operations: the library, or in reference mode the same
  // through an ordinary descriptor of the kernel.
  std::string DoWrite(ext4dio_file* f, uint64_t off, const std::string& data) {
    if (!reference_) return LibWrite(f, off, data);
    ssize_t w = pwrite(ref_fd_, data.data(), data.size(), static_cast<off_t>(off));
    return w == static_cast<ssize_t>(data.size()) ? "" : Errno("reference pwrite");
  }
  std::string DoRead(ext4dio_file* f, size_t expect) {
    if (!reference_) return LibReadAll(f, expect);
    std::string out(expect + 8192, '\0');
    ssize_t r = pread(ref_fd_, out.data(), out.size(), 0);
    if (r < 0) return Errno("reference pread");
    out.resize(static_cast<size_t>(r));
    return out;
  }
  std::string DoTruncate(ext4dio_file* f, uint64_t size) {
    if (reference_) return ftruncate(ref_fd_, static_cast<off_t>(size)) == 0 ? "" : Errno("ftruncate");
    int rc = ext4dio_truncate(f, size);
    return rc < 0 ? LibError("ext4dio_truncate", rc) : "";
  }
  std::string DoFallocate(ext4dio_file* f, uint32_t mode, uint64_t off, uint64_t len) {
    if (reference_) {
      int m = ((mode & EXT4DIO_FALLOC_KEEP_SIZE) ? FALLOC_FL_KEEP_SIZE : 0) |
              ((mode & EXT4DIO_FALLOC_PUNCH_HOLE) ? FALLOC_FL_PUNCH_HOLE : 0) |
              ((mode & EXT4DIO_FALLOC_ZERO_RANGE) ? FALLOC_FL_ZERO_RANGE : 0);
      return fallocate(ref_fd_, m, static_cast<off_t>(off), static_cast<off_t>(len)) == 0
                 ? "" : Errno("reference fallocate");
    }
    int rc = ext4dio_fallocate(f, mode, off, len);
    return rc < 0 ? LibError("ext4dio_fallocate", rc) : "";
  }

  std::string CheckAll(bool session) {
    const std::string& want = model_.bytes;
    std::string e;
    auto check = [&](const char* how, std::function<std::string()> read) {
      if (!e.empty()) return;
      // In a session the file is read by another process, as other programs
      // would; between sessions by this one.
      if (session) {
        const std::string model = want;
        e = InChild([&] { return Describe(model, read(), how); });
      } else {
        e = Describe(want, read(), how);
      }
    };
    check("buffered read", [&] { return ReadBuffered(path_); });
    check("O_DIRECT read", [&] { return ReadDirect(path_); });
    if (Chance(0.3)) check("mmap read", [&] { return ReadMmap(path_); });
    if (!session && Chance(0.3))
      check("buffered read after POSIX_FADV_DONTNEED", [&] { return ReadBuffered(path_, true); });
    return e;
  }

  // One operation by the kernel path of "another program"; `in_child` runs
  // it in a forked process (during a session).
  std::string External(bool in_child) {
    std::function<std::string()> op;
    std::string what;
    const uint64_t size = model_.bytes.size();
    switch (Uniform(0, 9)) {
      case 0: case 1: {
        const uint64_t len = Length(64 * kKiB);
        const uint64_t off = Offset(len);
        const std::string data = RandomBytes(len, rng_);
        const bool sync = Chance(0.5);
        what = "other: buffered pwrite off=" + std::to_string(off) + " len=" + std::to_string(len) +
               (sync ? " + fsync" : "");
        op = [this, off, data, sync] { return WriteBuffered(path_, off, data, sync); };
        model_.Write(off, data);
        break;
      }
      case 2: case 3: {
        const uint64_t len = Uniform(1, 64) * 512;
        const uint64_t off = std::min(Offset(len) / 512 * 512, kMaxSize - len);
        const std::string data = RandomBytes(len, rng_);
        what = "other: O_DIRECT pwrite off=" + std::to_string(off) + " len=" + std::to_string(len);
        op = [this, off, data] { return WriteDirect(path_, off, data); };
        model_.Write(off, data);
        break;
      }
      case 4: {
        const uint64_t to = Chance(0.5) ? Uniform(0, size) : std::min(kMaxSize, size + Uniform(0, 128 * kKiB));
        what = "other: truncate to " + std::to_string(to);
        op = [this, to] { return TruncateFile(path_, to); };
        model_.Truncate(to);
        break;
      }
      case 5: {
        const uint64_t len = Length(128 * kKiB);
        const uint64_t off = size > 0 ? Uniform(0, size - 1) : 0;
        what = "other: punch off=" + std::to_string(off) + " len=" + std::to_string(len);
        op = [this, off, len] {
          return FallocateFile(path_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        };
        model_.Zero(off, len);
        break;
      }
      case 6: {
        const uint64_t len = Length(256 * kKiB);
        const uint64_t off = std::min(Offset(len), kMaxSize - len);
        what = "other: fallocate KEEP_SIZE off=" + std::to_string(off) + " len=" + std::to_string(len);
        op = [this, off, len] { return FallocateFile(path_, FALLOC_FL_KEEP_SIZE, off, len); };
        break;
      }
      case 7: {
        if (size == 0 || pin_) return External(in_child);
        const uint64_t off = Uniform(0, size - 1);
        const uint64_t len = std::min<uint64_t>(64 * kKiB, size - off);
        pin_steps_ = static_cast<int>(Uniform(1, 6));
        Log("other: splice off=" + std::to_string(off) + " len=" + std::to_string(len) +
            " into a pipe kept open for " + std::to_string(pin_steps_) + " steps");
        pin_ = std::make_unique<SplicePin>(path_, off, len);
        return pin_->error();
      }
      case 8: {
        what = "other: buffered read of the device (dd, no iflag=direct)";
        const std::string dev = m_.device();
        op = [dev] {
          RunResult r = testing::Run({"dd", "if=" + dev, "of=/dev/null", "bs=1M", "status=none"});
          return r.exit_code == 0 ? std::string() : "<dd of the device: " + r.err + ">";
        };
        in_child = false;  // does not open the file
        break;
      }
      default: {
        what = "other: debugfs -R \"stat\" on the device (buffered metadata reads)";
        const std::string dev = m_.device(), name = path_.substr(m_.mount_point().size());
        op = [dev, name] {
          RunResult r = testing::Run({"debugfs", "-R", "stat " + name, dev});
          return r.exit_code == 0 ? std::string() : "<debugfs: " + r.err + ">";
        };
        in_child = false;
        break;
      }
    }
    Log(what);
    const std::string e = in_child ? InChild(op) : op();
    return e.empty() ? "" : what + ": " + e;
  }

  // A few writes by 1-4 threads, each thread inside its own byte range.
  std::string Threads(ext4dio_file* f) {
    const int threads = static_cast<int>(Uniform(1, 4));
    const uint64_t span = Uniform(4 * kKiB, 1 * kMiB);
    const uint64_t base = std::min(Offset(span), kMaxSize - span);
    const uint64_t slice = span / threads;
    struct W { uint64_t off; std::string data; };
    std::vector<std::vector<W>> plan(threads);
    std::string what = "lib: " + std::to_string(threads) + " threads over [" +
                       std::to_string(base) + ", " + std::to_string(base + span) + "):";
    for (int t = 0; t < threads; ++t) {
      const uint64_t lo = base + t * slice;
      const int n = static_cast<int>(Uniform(1, 5));
      for (int i = 0; i < n; ++i) {
        const uint64_t len = std::min(Length(slice), slice);
        const uint64_t off = lo + Uniform(0, slice - len);
        plan[t].push_back({off, RandomBytes(len, rng_)});
        what += " t" + std::to_string(t) + ":" + std::to_string(off) + "+" + std::to_string(len);
      }
    }
    Log(what);
    std::vector<std::string> errs(threads);
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        for (const W& w : plan[t])
          if (errs[t].empty()) errs[t] = DoWrite(f, w.off, w.data);
      });
    }
    for (auto& t : ts) t.join();
    for (int t = 0; t < threads; ++t)
      for (const W& w : plan[t]) model_.Write(w.off, w.data);
    for (const std::string& e : errs)
      if (!e.empty()) return e;
    return "";
  }

  // Writes to disjoint ranges through an async queue.
  std::string Queue(ext4dio_file* f) {
    const int n = static_cast<int>(Uniform(1, 8));
    const uint64_t slice = Uniform(1, 64) * 4 * kKiB;
    const uint64_t base = std::min(Offset(slice * n), kMaxSize - slice * n);
    std::vector<std::string> bufs;
    std::vector<uint64_t> offs;
    std::string what = "lib: queue writes:";
    for (int i = 0; i < n; ++i) {
      const uint64_t len = Chance(0.5) ? slice : Length(slice);
      offs.push_back(base + i * slice + Uniform(0, slice - len));
      bufs.push_back(RandomBytes(len, rng_));
      what += " " + std::to_string(offs.back()) + "+" + std::to_string(len);
    }
    Log(what);
    if (reference_) {
      std::string e;
      for (int i = 0; i < n && e.empty(); ++i) {
        e = DoWrite(f, offs[i], bufs[i]);
        model_.Write(offs[i], bufs[i]);
      }
      return e;
    }
    ext4dio_queue* q = nullptr;
    int rc = ext4dio_queue_open(f, 8, &q);
    if (rc < 0) return LibError("ext4dio_queue_open", rc);
    std::vector<ext4dio_request> reqs;
    for (int i = 0; i < n; ++i)
      reqs.push_back({EXT4DIO_OP_WRITE, bufs[i].data(), bufs[i].size(), offs[i], static_cast<uint64_t>(i)});
    size_t submitted;
    const std::string e = SubmitAndReap(q, reqs, "write", &submitted);
    ext4dio_queue_close(q);
    for (size_t i = 0; i < submitted; ++i) model_.Write(offs[i], bufs[i]);
    return e;
  }

  // A writer session's start: the library's handle in *f, or in reference
  // mode ref_fd_; "" or what failed.
  std::string OpenWriter(Handle* f) {
    Log(reference_ ? "reference: open (a kernel descriptor, not the library)" : "lib: open");
    if (reference_) {
      ref_fd_ = open(path_.c_str(), O_RDWR);
      return ref_fd_ < 0 ? Errno("reference open") : "";
    }
    std::string e;
    *f = OpenLib(path_, &e);
    if (!*f && e.empty()) e = "ext4dio_open: no handle";
    return e;
  }
  // Its end, after the session's first failure e ("" when none): sometimes
  // a sync (only when all went well), then the close; e or the sync's error.
  std::string CloseWriter(Handle* f, std::string e) {
    if (e.empty() && Chance(0.5)) {
      Log("lib: sync");
      if (reference_) {
        if (fsync(ref_fd_) != 0) e = Errno("reference fsync");
      } else if (int rc = ext4dio_sync(f->get()); rc < 0) {
        e = LibError("ext4dio_sync", rc);
      }
    }
    Log("lib: close");
    f->reset();
    if (ref_fd_ >= 0) close(ref_fd_);
    ref_fd_ = -1;
    return e;
  }

  std::string Session() {
    Handle f;
    std::string e = OpenWriter(&f);
    if (!e.empty()) return e;
    const int ops = static_cast<int>(Uniform(1, 10));
    for (int i = 0; i < ops && e.empty(); ++i) {
      const uint64_t size = model_.bytes.size();
      switch (Uniform(0, 11)) {
        case 0: case 1: case 2: case 3: {
          const uint64_t len = Length();
          const uint64_t off = Offset(len);
          Log("lib: pwrite off=" + std::to_string(off) + " len=" + std::to_string(len));
          const std::string data = RandomBytes(len, rng_);
          e = DoWrite(f.get(), off, data);
          model_.Write(off, data);
          break;
        }
        case 4: e = Threads(f.get()); break;
        case 5: e = Queue(f.get()); break;
        case 6: {
          const uint64_t to = Chance(0.6) ? Uniform(0, size) : std::min(kMaxSize, size + Uniform(1, 128 * kKiB));
          Log("lib: truncate to " + std::to_string(to));
          e = DoTruncate(f.get(), to);
          model_.Truncate(to);
          break;
        }
        case 7: {
          const uint64_t len = Length(128 * kKiB);
          const uint64_t off = size > 0 ? Uniform(0, size - 1) : 0;
          Log("lib: punch off=" + std::to_string(off) + " len=" + std::to_string(len));
          e = DoFallocate(f.get(), EXT4DIO_FALLOC_PUNCH_HOLE | EXT4DIO_FALLOC_KEEP_SIZE, off, len);
          model_.Zero(off, len);
          break;
        }
        case 8: {
          const uint64_t len = Length(128 * kKiB);
          const uint64_t off = std::min(Offset(len), kMaxSize - len);
          const bool keep = Chance(0.5);
          Log("lib: zero range off=" + std::to_string(off) + " len=" + std::to_string(len) +
              (keep ? " KEEP_SIZE" : ""));
          e = DoFallocate(f.get(), EXT4DIO_FALLOC_ZERO_RANGE | (keep ? EXT4DIO_FALLOC_KEEP_SIZE : 0), off, len);
          model_.Zero(off, len);
          if (!keep) model_.Extend(off + len);
          break;
        }
        case 9: {
          const uint64_t len = Length(256 * kKiB);
          const uint64_t off = std::min(Offset(len), kMaxSize - len);
          Log("lib: fallocate KEEP_SIZE off=" + std::to_string(off) + " len=" + std::to_string(len));
          e = DoFallocate(f.get(), EXT4DIO_FALLOC_KEEP_SIZE, off, len);
          break;
        }
        case 10: e = External(/*in_child=*/true); break;  // during the session
        default: {
          Log("(checks by another process during the session)");
          e = CheckAll(/*session=*/true);
          break;
        }
      }
      if (e.empty()) e = Describe(model_.bytes, DoRead(f.get(), model_.bytes.size()), reference_ ? "reference pread" : "ext4dio_pread");
    }
    return CloseWriter(&f, e);
  }

  std::string Step() {
    if (concurrent_) return Chance(0.6) ? ConcurrentSession() : External(/*in_child=*/false);
    if (Chance(0.55)) return Session();
    return External(/*in_child=*/false);
  }

  // ---- Issue 11: the kernel path concurrently, 4 threads on one handle ----
  //
  // A round: 4 threads at once, thread t owning the bytes [lo_t, lo_t + R)
  // of 4 consecutive regions (4 KiB-aligned, or with a shift so that
  // neighbours share a block: byte-disjoint, so the model stays exact).
  // Before the threads start, the file reaches at least the tail region
  // (truncate, plain fallocate or a write past EOF through the handle) and
  // parts of the span are fallocated (KEEP_SIZE, past EOF too, or plain), so
  // the threads meet holes, unwritten extents and written blocks. Only the
  // tail thread changes the size (truncates inside its region, writes and
  // plain fallocates past EOF), so the other regions stay inside EOF. Each
  // thread keeps its own copy of the model and checks every read against
  // it: a read right after its own write must return that write, never
  // zeros; at the end the copies are merged region by region.
  struct Op {
    enum Kind { kWrite, kRead, kQueue, kPunch, kAllocKeepSize, kAlloc, kTruncate } kind = kWrite;
    uint64_t off = 0, len = 0;  // kTruncate: off is the new size
    std::string data;           // kWrite
    bool aligned = false;       // 4 KiB-aligned range and buffer (O_DIRECT kernel pieces)
    bool read_back = false;     // kWrite: read the range right after
    std::vector<std::pair<uint64_t, std::string>> batch;  // kQueue: writes, then reads
    std::string What() const {
      static const char* const kNames[] = {"pwrite", "pread", "queue", "punch",
                                           "fallocate KEEP_SIZE", "fallocate", "truncate"};
      std::string w = kNames[kind];
      if (kind == kTruncate) return w + " to " + std::to_string(off);
      if (kind == kQueue) {
        for (const auto& [o, d] : batch) w += " " + std::to_string(o) + "+" + std::to_string(d.size());
        return w;
      }
      w += " " + std::to_string(off) + "+" + std::to_string(len);
      if (aligned) w += " aligned";
      if (read_back) w += " +readback";
      return w;
    }
  };

  // A range inside [lo, hi): half the time whole 4 KiB blocks (aligned
  // buffers: the kernel path's O_DIRECT pieces), else any bytes.
  std::pair<uint64_t, uint64_t> Pick(uint64_t lo, uint64_t hi, bool* aligned) {
    const uint64_t a_lo = (lo + 4095) / 4096 * 4096, a_hi = hi / 4096 * 4096;
    if (a_hi > a_lo && Chance(0.5)) {
      const uint64_t blocks = (a_hi - a_lo) / 4096;
      const uint64_t n = Chance(0.6) ? 1 : Uniform(1, std::min<uint64_t>(blocks, 16));
      *aligned = true;
      return {a_lo + Uniform(0, blocks - n) * 4096, n * 4096};
    }
    *aligned = false;
    const uint64_t room = hi - lo;
    const uint64_t len = std::min(Length(std::min<uint64_t>(room, 64 * kKiB)), room);
    return {lo + Uniform(0, room - len), len};
  }

  std::vector<Op> PlanThread(uint64_t lo, uint64_t hi, bool tail) {
    std::vector<Op> ops;
    std::vector<std::pair<uint64_t, uint64_t>> written;
    const int n = static_cast<int>(Uniform(3, 10));
    for (int i = 0; i < n; ++i) {
      Op op;
      switch (Uniform(0, 11)) {
        case 0: case 1: case 2: case 3: case 4: {
          op.kind = Op::kWrite;
          if (!written.empty() && Chance(0.3)) {  // overwrite what this thread wrote
            std::tie(op.off, op.len) = written[Uniform(0, written.size() - 1)];
            op.aligned = op.off % 4096 == 0 && op.len % 4096 == 0;
          } else {
            std::tie(op.off, op.len) = Pick(lo, hi, &op.aligned);
          }
          op.data = RandomBytes(op.len, rng_);
          op.read_back = Chance(0.7);
          written.emplace_back(op.off, op.len);
          break;
        }
        case 5: case 6: {
          op.kind = Op::kQueue;
          const int k = static_cast<int>(Uniform(1, 6));
          const uint64_t slot = (hi - lo) / k;
          for (int j = 0; j < k; ++j) {
            bool aligned;
            auto [o, l] = Pick(lo + j * slot, lo + (j + 1) * slot, &aligned);
            op.batch.emplace_back(o, RandomBytes(l, rng_));
            written.emplace_back(o, l);
          }
          break;
        }
        case 7: case 8: {
          op.kind = Op::kRead;
          if (Chance(0.3)) {
            op.off = lo;
            op.len = hi - lo;
          } else {
            std::tie(op.off, op.len) = Pick(lo, hi, &op.aligned);
          }
          break;
        }
        case 9: {
          op.kind = Op::kPunch;
          bool aligned;
          std::tie(op.off, op.len) = Pick(lo, hi, &aligned);
          if (Chance(0.3)) op.len = hi - op.off;
          break;
        }
        case 10: {
          // Plain fallocate: inside EOF for all but the tail thread.
          op.kind = Chance(0.5) ? Op::kAllocKeepSize : Op::kAlloc;
          bool aligned;
          std::tie(op.off, op.len) = Pick(lo, hi, &aligned);
          if (Chance(0.4)) op.len = hi - op.off;
          break;
        }
        default: {
          if (!tail) {
            --i;
            continue;
          }
          op.kind = Op::kTruncate;
          op.off = Uniform(lo, hi);
          break;
        }
      }
      ops.push_back(std::move(op));
    }
    return ops;
  }

  // Up to len bytes at off through the handle (short at EOF).
  std::string ReadRange(ext4dio_file* f, uint64_t off, uint64_t len, bool aligned) {
    auto buf = Aligned(len + 1);
    char* p = aligned ? buf.get() : buf.get() + 1;  // a misaligned buffer is bounced
    uint64_t done = 0;
    while (done < len) {
      const int64_t r = reference_ ? pread(ref_fd_, p + done, len - done, static_cast<off_t>(off + done))
                                   : ext4dio_pread(f, p + done, len - done, off + done);
      if (r < 0) return "<" + (reference_ ? Errno("reference pread") : LibError("ext4dio_pread", r)) + ">";
      if (r == 0) break;
      done += static_cast<uint64_t>(r);
    }
    return std::string(p, done);
  }

  static std::string Slice(const Model& m, uint64_t off, uint64_t len) {
    if (off >= m.bytes.size()) return "";
    return m.bytes.substr(off, std::min<uint64_t>(len, m.bytes.size() - off));
  }

  // The queue op: its writes submitted together, reaped, then the same
  // ranges read back through the queue (each must return its write).
  std::string QueueOps(ext4dio_file* f, ext4dio_queue** q, const Op& op, Model& local) {
    if (reference_) {
      for (const auto& [o, d] : op.batch) {
        if (std::string e = DoWrite(f, o, d); !e.empty()) return e;
        local.Write(o, d);
      }
      for (const auto& [o, d] : op.batch) {
        if (std::string e = Describe(d, ReadRange(f, o, d.size(), false), "reference read back at " + std::to_string(o));
            !e.empty()) return e;
      }
      return "";
    }
    if (*q == nullptr) {
      if (int rc = ext4dio_queue_open(f, 8, q); rc < 0) return LibError("ext4dio_queue_open", rc);
    }
    const size_t n = op.batch.size();
    std::vector<std::unique_ptr<char, AlignedFree>> bufs;
    for (const auto& [o, d] : op.batch) bufs.push_back(AlignedCopy(d));
    auto run = [&](uint32_t opcode, const char* what) -> std::string {
      std::vector<ext4dio_request> reqs;
      for (size_t i = 0; i < n; ++i)
        reqs.push_back({opcode, bufs[i].get(), op.batch[i].second.size(), op.batch[i].first, i});
      size_t submitted;
      return SubmitAndReap(*q, reqs, what, &submitted);
    };
    std::string e = run(EXT4DIO_OP_WRITE, "write");
    for (const auto& [o, d] : op.batch) local.Write(o, d);  // some may have landed
    if (!e.empty()) return e;
    for (size_t i = 0; i < n; ++i) std::memset(bufs[i].get(), 0x5a, op.batch[i].second.size());
    e = run(EXT4DIO_OP_READ, "read");
    for (size_t i = 0; i < n && e.empty(); ++i) {
      const auto& [o, d] = op.batch[i];
      e = Describe(d, std::string(bufs[i].get(), d.size()),
                   "queue read right after the queue write at " + std::to_string(o));
    }
    return e;
  }

  // One thread's ops; "" or the first failure.
  std::string RunOps(ext4dio_file* f, int t, const std::vector<Op>& ops, Model& local) {
    ext4dio_queue* q = nullptr;
    std::string e;
    for (size_t i = 0; i < ops.size() && e.empty(); ++i) {
      const Op& op = ops[i];
      const std::string at = std::to_string(op.off);
      switch (op.kind) {
        case Op::kWrite: {
          if (op.aligned && !reference_) {
            auto buf = AlignedCopy(op.data);
            const int64_t w = ext4dio_pwrite(f, buf.get(), op.len, op.off);
            if (w != static_cast<int64_t>(op.len)) e = LibError("ext4dio_pwrite", w);
          } else {
            e = DoWrite(f, op.off, op.data);
          }
          local.Write(op.off, op.data);
          if (e.empty() && op.read_back)
            e = Describe(op.data, ReadRange(f, op.off, op.len, op.aligned),
                         "read right after this thread's write at " + at);
          break;
        }
        case Op::kRead:
          e = Describe(Slice(local, op.off, op.len), ReadRange(f, op.off, op.len, op.aligned),
                       "read at " + at);
          break;
        case Op::kQueue: e = QueueOps(f, &q, op, local); break;
        case Op::kPunch:
          e = DoFallocate(f, EXT4DIO_FALLOC_PUNCH_HOLE | EXT4DIO_FALLOC_KEEP_SIZE, op.off, op.len);
          local.Zero(op.off, op.len);
          break;
        case Op::kAllocKeepSize:
          e = DoFallocate(f, EXT4DIO_FALLOC_KEEP_SIZE, op.off, op.len);
          break;
        case Op::kAlloc:
          e = DoFallocate(f, 0, op.off, op.len);
          local.Extend(op.off + op.len);
          break;
        case Op::kTruncate:
          e = DoTruncate(f, op.off);
          local.Truncate(op.off);
          break;
      }
      if (!e.empty()) e = "t" + std::to_string(t) + " op " + std::to_string(i) + " (" + op.What() + "): " + e;
    }
    if (q != nullptr) ext4dio_queue_close(q);
    return e;
  }

  std::string ConcurrentRound(ext4dio_file* f) {
    constexpr int kThreads = 4;
    const uint64_t region = Uniform(2, 128) * 4 * kKiB;
    const uint64_t shift = Chance(0.25) ? Uniform(1, 4095) : 0;
    const uint64_t top = (kMaxSize - kThreads * region - 4096) / 4096;
    const uint64_t size = model_.bytes.size();
    const uint64_t near = size > 3 * region ? (size - 3 * region) / 4096 : 0;
    // Anywhere, or with the tail region across EOF.
    const uint64_t base =
        (Chance(0.5) ? Uniform(0, top) : std::min(top, near + Uniform(0, 2 * region / 4096))) * 4096 + shift;
    uint64_t lo[kThreads];
    for (int t = 0; t < kThreads; ++t) lo[t] = base + t * region;
    const uint64_t tail = lo[kThreads - 1];
    std::string e;
    if (model_.bytes.size() < tail) {  // the non-tail regions inside EOF
      const uint64_t to = tail + Uniform(0, region);
      switch (Uniform(0, 2)) {
        case 0:
          Log("lib: truncate to " + std::to_string(to));
          e = DoTruncate(f, to);
          model_.Truncate(to);
          break;
        case 1: {
          const uint64_t from = model_.bytes.size();
          Log("lib: fallocate " + std::to_string(from) + "+" + std::to_string(to - from));
          e = DoFallocate(f, 0, from, to - from);
          model_.Extend(to);
          break;
        }
        default: {
          const std::string data = RandomBytes(Uniform(1, 4096), rng_);
          Log("lib: pwrite past EOF " + std::to_string(to) + "+" + std::to_string(data.size()));
          e = DoWrite(f, to, data);
          model_.Write(to, data);
          break;
        }
      }
      if (!e.empty()) return e;
    }
    for (int k = static_cast<int>(Uniform(0, 3)); k > 0; --k) {
      bool aligned;
      const auto [off, len] = Pick(base, base + (kThreads + 1) * region, &aligned);
      const bool keep = Chance(0.6);
      Log("lib: fallocate" + std::string(keep ? " KEEP_SIZE " : " ") + std::to_string(off) + "+" +
          std::to_string(len));
      e = DoFallocate(f, keep ? EXT4DIO_FALLOC_KEEP_SIZE : 0, off, len);
      if (!keep) model_.Extend(off + len);
      if (!e.empty()) return e;
    }
    std::vector<std::vector<Op>> plans;
    for (int t = 0; t < kThreads; ++t) {
      plans.push_back(PlanThread(lo[t], lo[t] + region, t == kThreads - 1));
      std::string what = "lib: t" + std::to_string(t) + " [" + std::to_string(lo[t]) + ", " +
                         std::to_string(lo[t] + region) + "):";
      for (const Op& op : plans.back()) what += " " + op.What() + ";";
      Log(what);
    }
    std::vector<Model> local(kThreads, model_);
    std::vector<std::string> errs(kThreads);
    {
      std::vector<std::thread> ts;
      for (int t = 0; t < kThreads; ++t)
        ts.emplace_back([&, t] {
          errs[t] = RunOps(f, t, plans[t], local[t]);
          // The thread's whole region, while the others may still run.
          if (errs[t].empty())
            errs[t] = Describe(Slice(local[t], lo[t], region), ReadRange(f, lo[t], region, false),
                               "t" + std::to_string(t) + " read of its region at " + std::to_string(lo[t]));
        });
      for (auto& t : ts) t.join();
    }
    model_ = local[kThreads - 1];  // the size and the tail region
    for (int t = 0; t < kThreads - 1; ++t)
      model_.bytes.replace(lo[t], region, local[t].bytes, lo[t], region);
    for (const std::string& err : errs)
      if (!err.empty()) return err;
    return "";
  }

  // A writer session of concurrent rounds; between rounds, sometimes
  // another process reads the file or acts on it (breaking the lease).
  std::string ConcurrentSession() {
    Handle f;
    std::string e = OpenWriter(&f);
    if (!e.empty()) return e;
    const int rounds = static_cast<int>(Uniform(1, 3));
    for (int r = 0; r < rounds && e.empty(); ++r) {
      if (r > 0) {
        switch (Uniform(0, 2)) {
          case 0:
            Log("(checks by another process during the session)");
            e = CheckAll(/*session=*/true);
            break;
          case 1: e = External(/*in_child=*/true); break;
          default: break;
        }
        if (!e.empty()) break;
      }
      e = ConcurrentRound(f.get());
      if (e.empty())
        e = Describe(model_.bytes, DoRead(f.get(), model_.bytes.size()),
                     reference_ ? "reference pread" : "ext4dio_pread of the whole file after the threads");
    }
    return CloseWriter(&f, e);
  }

  static constexpr uint64_t kMaxSize = 6 * kMiB;
  const bool concurrent_;
  const bool reference_ = EnvU64("EXT4DIO_MODEL_REFERENCE", 0) != 0;
  int ref_fd_ = -1;
  const LoopMount& m_;
  const uint64_t seed_;
  const uint32_t bs_;
  std::mt19937_64 rng_;
  const std::string path_;
  Model model_;
  std::unique_ptr<SplicePin> pin_;
  int pin_steps_ = 0;
  uint64_t step_ = 0;
  std::deque<std::string> log_;
};

void RunModel(uint32_t block_size, const std::string& fs_size, bool concurrent = false) {
  LoopMount m({"-b", std::to_string(block_size)}, fs_size);
  ASSERT_TRUE(m.ok()) << m.error();
  const uint64_t steps = EnvU64("EXT4DIO_MODEL_STEPS", concurrent ? 16 : 40);
  const uint64_t seconds = EnvU64("EXT4DIO_MODEL_SECONDS", concurrent ? 8 : 20);
  const uint64_t only = EnvU64("EXT4DIO_MODEL_SEED", 0);
  const auto start = std::chrono::steady_clock::now();
  const auto budget = start + std::chrono::seconds(seconds);
  const auto hard = start + std::chrono::seconds(concurrent ? seconds + 15 : 2 * seconds + 30);
  std::vector<uint64_t> failed;
  uint64_t ran = 0;
  for (uint64_t seed = only ? only : 1;; ++seed) {
    std::printf("[ model ] %u-byte blocks: seed %" PRIu64 ", %" PRIu64 " steps\n", block_size, seed, steps);
    std::fflush(stdout);
    ModelRun run(m, seed, block_size, concurrent);
    // Concurrent seeds run in a child, so that a hang is reported (with the
    // seed and the stacks) and the mount still torn down.
    const std::string report =
        concurrent ? InChildWithin([&] { return run.Go(steps, hard); }, std::chrono::seconds(60))
                   : run.Go(steps, hard);
    ++ran;
    if (!report.empty()) {
      failed.push_back(seed);
      ADD_FAILURE() << (concurrent && report[0] == '<'
                            ? "seed " + std::to_string(seed) + " (" + std::to_string(block_size) +
                                  "-byte blocks): " + report + "\n  " +
                                  Rerun(seed, block_size, /*concurrent=*/true)
                            : report);
      if (concurrent && report[0] == '<') break;  // a hung child: the file may be in any state
    }
    if (only || std::chrono::steady_clock::now() > budget) break;
  }
  std::string list;
  for (uint64_t s : failed) list += " " + std::to_string(s);
  std::printf("[ model ] %u-byte blocks: %" PRIu64 " seeds run, %zu failed:%s\n", block_size, ran,
              failed.size(), list.c_str());
}

// For the short tests below: a file of `size` bytes from rng written
// through the kernel and synced; its model.
Model SyncedFile(const std::string& path, uint64_t size, std::mt19937_64& rng) {
  Model model;
  model.Write(0, RandomBytes(size, rng));
  testing::WriteFile(path, model.bytes);
  testing::Run({"sync"});
  return model;
}

// The file read with O_DIRECT and buffered against the model: "" or what
// differed in each (`when` ends the reads' names: " after close").
std::string ReadsAfter(const Model& model, const std::string& path, const std::string& when) {
  const std::string direct = Describe(model.bytes, ReadDirect(path), "O_DIRECT read" + when);
  const std::string buffered = Describe(model.bytes, ReadBuffered(path), "buffered read" + when);
  return direct + (direct.empty() || buffered.empty() ? "" : "\n") + buffered;
}

TEST(MountedModelTest, Model4KiBBlocks) { RunModel(4096, "128M"); }
TEST(MountedModelTest, Model1KiBBlocks) { RunModel(1024, "96M"); }

// Issue 11: the writer's sessions run 4 threads at once on one handle
// (sync pwrite/pread and a queue each; hole fills, unwritten conversions,
// overwrites, reads right after writes, punches, truncates), another process
// acting between sessions and between rounds; 4 KiB then 1 KiB blocks
// (EXT4DIO_MODEL_BLOCK_SIZE=N: only that one).
TEST(MountedModelTest, ConcurrentKernelPath) {
  const uint64_t only = EnvU64("EXT4DIO_MODEL_BLOCK_SIZE", 0);
  if (only == 0 || only == 4096) RunModel(4096, "128M", /*concurrent=*/true);
  if (only == 0 || only == 1024) RunModel(1024, "96M", /*concurrent=*/true);
}

// Found by ConcurrentKernelPath: a read-modify-write waits, inside the
// gate, for the counted direct writes of other threads in its stripe to
// end, and those end only when their owner reaps them. If a third thread's
// kernel-path write closes the gate meanwhile (it waits for everyone
// inside: the RMW), the owner's next submit waits at the closed gate and
// never reaps: a deadlock. Thread A: a queue write of a written block, not
// reaped; C: 100 bytes into another written block of the same MiB (an RMW,
// waits for A's write); B: a write into a hole (closes the gate, waits for
// C); then A submits another write and reaps both.
TEST(MountedModelTest, RmwBesideAnUnreapedQueueWriteAndAKernelPathWrite) {
  LoopMount m({"-b", "4096"}, "64M");
  ASSERT_TRUE(m.ok()) << m.error();
  const std::string path = m / "f";
  std::mt19937_64 rng(111);
  Model model = SyncedFile(path, kMiB, rng);
  ASSERT_EQ(TruncateFile(path, 2 * kMiB), "");
  model.Truncate(2 * kMiB);
  const std::string a = RandomBytes(4096, rng), a2 = RandomBytes(4096, rng),
                    c = RandomBytes(100, rng), h = RandomBytes(4096, rng);
  const std::string e = InChildWithin([&]() -> std::string {
    std::string err;
    Handle f = OpenLib(path, &err);
    if (!f) return err;
    ext4dio_queue* q = nullptr;
    if (int rc = ext4dio_queue_open(f.get(), 8, &q); rc < 0) return LibError("ext4dio_queue_open", rc);
    auto abuf = AlignedCopy(a), a2buf = AlignedCopy(a2);
    std::vector<ext4dio_request> reqs{{EXT4DIO_OP_WRITE, abuf.get(), 4096, 0, 0},
                                      {EXT4DIO_OP_WRITE, a2buf.get(), 4096, 64 * 4096, 1}};
    if (int rc = ext4dio_queue_submit(q, &reqs[0]); rc < 0) return LibError("ext4dio_queue_submit", rc);
    // Starts fn on a thread and returns once it sleeps in `wchan` (or is done).
    struct Waiter {
      std::atomic<pid_t> tid{0};
      std::atomic<bool> done{false};
      std::string err;
      std::thread t;
    };
    auto start = [](Waiter& w, const char* wchan, std::function<std::string()> fn) {
      w.t = std::thread([&w, fn] {
        w.tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
        w.err = fn();
        w.done.store(true);
      });
      while (!w.done.load()) {
        const pid_t id = w.tid.load();
        if (id != 0 && testing::ReadFile("/proc/self/task/" + std::to_string(id) + "/wchan") == wchan)
          break;
        std::this_thread::yield();
      }
    };
    Waiter wc, wb;
    start(wc, "hrtimer_nanosleep", [&] { return LibWrite(f.get(), 8192 + 10, c); });  // the RMW's backoff
    start(wb, "futex_do_wait", [&] { return LibWrite(f.get(), kMiB + 4096, h); });    // the gate's drain
    std::string out;
    if (int rc = ext4dio_queue_submit(q, &reqs[1]); rc < 0) out = LibError("ext4dio_queue_submit", rc);
    const std::string reaped = ReapAll(q, reqs, out.empty() ? 2 : 1, "write");
    if (out.empty()) out = reaped;
    wc.t.join();
    wb.t.join();
    ext4dio_queue_close(q);
    if (out.empty()) out = wc.err;
    if (out.empty()) out = wb.err;
    return out;
  }, std::chrono::seconds(20));
  ASSERT_TRUE(e.empty()) << e;
  model.Write(0, a);
  model.Write(64 * 4096, a2);
  model.Write(8192 + 10, c);
  model.Write(kMiB + 4096, h);
  EXPECT_OK_TEXT(ReadsAfter(model, path, " after close"));
}

// ---- Issue 9's reproductions --------------------------------------------

// Item 1: the page holding the old EOF. A write past EOF goes through the
// kernel, which caches (and zeroes beyond EOF) the page holding the old
// EOF; a fast-path RMW into that page afterwards must not leave it stale,
// nor be reverted by another program's buffered write into the page.
TEST(MountedModelTest, Issue9Item1FastPathAfterKernelExtendInOldEofPage) {
  LoopMount m({"-b", "4096"}, "64M");
  ASSERT_TRUE(m.ok()) << m.error();
  const std::string path = m / "f";
  std::mt19937_64 rng(91);
  Model model = SyncedFile(path, 5000, rng);
  std::string err;
  Handle f = OpenLib(path, &err);
  ASSERT_TRUE(f) << err;
  const std::string far = RandomBytes(100, rng), mid = RandomBytes(100, rng);
  ASSERT_EQ(LibWrite(f.get(), 9000, far), "");  // past EOF: kernel path
  model.Write(9000, far);
  ASSERT_EQ(LibWrite(f.get(), 5010, mid), "");  // written block: fast path, RMW
  model.Write(5010, mid);
  // Another process reads buffered (this breaks the lease).
  EXPECT_OK_TEXT(InChild([&] { return Describe(model.bytes, ReadBuffered(path), "buffered read"); }));
  // Another program writes 1 byte at 5200 and fsyncs.
  const std::string one = "Z";
  EXPECT_OK_TEXT(InChild([&] { return WriteBuffered(path, 5200, one, true); }));
  model.Write(5200, one);
  EXPECT_OK_TEXT(InChild([&] { return Describe(model.bytes, ReadDirect(path), "O_DIRECT read"); }));
  f.reset();
  EXPECT_OK_TEXT(ReadsAfter(model, path, " after close"));
  std::string why;
  ASSERT_TRUE(Remount(m, &why)) << why;
  EXPECT_OK_TEXT(Describe(model.bytes, ReadBuffered(path), "buffered read after remount"));
}

// debugfs `ex`: the leaf (index-level) blocks of a file's extent tree, and
// its data blocks as (logical, physical).
struct TreeBlocks {
  std::vector<uint64_t> index_children;  // blocks holding tree nodes
  std::vector<std::pair<uint64_t, uint64_t>> data;
};
TreeBlocks DebugfsTree(const std::string& device, const std::string& name) {
  TreeBlocks t;
  RunResult r = testing::Run({"debugfs", "-R", "ex " + name, device});
  std::istringstream in(r.out);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    // " 0/ 1   1/  1     0 -    22  8451             23"   (index)
    // " 1/ 1   1/ 12     0 -     0  8705 -  8705      1 "  (leaf entry)
    unsigned level, depth, e, n;
    unsigned long long l0, l1, p0, p1, len;
    if (std::sscanf(line.c_str(), " %u/ %u %u/ %u %llu - %llu %llu - %llu %llu", &level, &depth, &e,
                    &n, &l0, &l1, &p0, &p1, &len) == 9 && level == depth) {
      for (unsigned long long b = p0; b <= p1; ++b) t.data.emplace_back(l0 + (b - p0), b);
    } else if (std::sscanf(line.c_str(), " %u/ %u %u/ %u %llu - %llu %llu", &level, &depth, &e, &n,
                           &l0, &l1, &p0) == 7 && level < depth) {
      t.index_children.push_back(p0);
    }
  }
  return t;
}

// Item 2: 1 KiB blocks, a data block in the same 4 KiB device page as an
// extent-tree node that ext4 holds in its journal. A buffered read of the
// device caches the page; another process writes the data block with
// O_DIRECT through the file; a 100-byte ext4dio write at the block's start
// must not revert bytes 100..1023 to the stale page's copy.
TEST(MountedModelTest, Issue9Item2DevicePageSharedWithJournaledMetadata) {
  LoopMount m({"-b", "1024"}, "64M");
  ASSERT_TRUE(m.ok()) << m.error();
  // Fill the first group's data space so that file data and extent-tree
  // nodes are then allocated side by side in the next group.
  ASSERT_EQ(testing::Run({"dd", "if=/dev/zero", "of=" + (m / "filler"), "bs=1k", "count=3700",
                 "conv=fsync", "status=none"}).exit_code, 0);
  std::mt19937_64 rng(92);
  const std::string one_k = RandomBytes(kKiB, rng);
  std::string name;
  uint64_t logical = 0, physical = 0, node = 0;
  for (int batch = 0; batch < 6 && name.empty(); ++batch) {
    // Fragmented files (an island every other block, fsync after each) get
    // depth-1 trees whose leaves sit between data blocks.
    for (int i = 0; i < 12; ++i) {
      for (int k = 0; k < 8; ++k) {
        const std::string p = m / ("frag" + std::to_string(batch) + "_" + std::to_string(k));
        int fd = open(p.c_str(), O_WRONLY | O_CREAT, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(pwrite(fd, one_k.data(), kKiB, static_cast<off_t>(2 * i * kKiB)), 1024);
        fsync(fd);
        close(fd);
      }
    }
    std::set<uint64_t> node_pages;
    std::vector<std::pair<std::string, TreeBlocks>> trees;
    for (int k = 0; k < 8; ++k) {
      const std::string n = "/frag" + std::to_string(batch) + "_" + std::to_string(k);
      trees.emplace_back(n, DebugfsTree(m.device(), n));
      for (uint64_t b : trees.back().second.index_children) node_pages.insert(b / 4);
    }
    for (const auto& [n, t] : trees) {
      for (const auto& [l, p] : t.data) {
        if (node_pages.count(p / 4) && name.empty()) {
          name = n; logical = l; physical = p;
        }
      }
    }
    if (!name.empty()) {
      for (const auto& [n, t] : trees)
        for (uint64_t b : t.index_children) if (b / 4 == physical / 4) node = b;
    }
  }
  ASSERT_FALSE(name.empty()) << "no data block shares a 4 KiB device page with an extent-tree node";
  SCOPED_TRACE("file " + name + " block " + std::to_string(logical) + " at " +
               std::to_string(physical) + ", tree node at " + std::to_string(node));
  const std::string path = m.mount_point() + name;
  Model model;
  model.bytes = ReadBuffered(path);
  ASSERT_GT(model.bytes.size(), (logical + 1) * kKiB);
  // Something reads the device buffered: the shared page is cached.
  ASSERT_EQ(testing::Run({"dd", "if=" + m.device(), "of=/dev/null", "bs=4096", "skip=" + std::to_string(physical / 4),
                 "count=1", "status=none"}).exit_code, 0);
  const std::string block = RandomBytes(kKiB, rng), head = RandomBytes(100, rng);
  EXPECT_OK_TEXT(InChild([&] { return WriteDirect(path, logical * kKiB, block); }));
  model.Write(logical * kKiB, block);
  std::string err;
  Handle f = OpenLib(path, &err);
  ASSERT_TRUE(f) << err;
  ASSERT_EQ(LibWrite(f.get(), logical * kKiB, head), "");
  model.Write(logical * kKiB, head);
  f.reset();
  testing::Run({"sync"});
  EXPECT_OK_TEXT(ReadsAfter(model, path, ""));
  std::string why;
  ASSERT_TRUE(Remount(m, &why)) << why;
  EXPECT_OK_TEXT(Describe(model.bytes, ReadDirect(path), "O_DIRECT read after remount"));
}

// Item 3: a process splices 64 KiB of the file into a pipe and keeps it
// open (the pages stay pinned); an ext4dio fast-path write into the range
// must show in buffered reads, and another program's 10-byte buffered write
// into the same page (+ fsync) must not revert the library's bytes.
TEST(MountedModelTest, Issue9Item3PagesPinnedByASplice) {
  LoopMount m({"-b", "4096"}, "64M");
  ASSERT_TRUE(m.ok()) << m.error();
  const std::string path = m / "f";
  std::mt19937_64 rng(93);
  Model model = SyncedFile(path, 256 * kKiB, rng);
  SplicePin pin(path, 64 * kKiB, 64 * kKiB);
  ASSERT_EQ(pin.error(), "");
  std::string err;
  Handle f = OpenLib(path, &err);
  ASSERT_TRUE(f) << err;
  const uint64_t at = 64 * kKiB + 4096;
  const std::string mine = RandomBytes(32 * kKiB + 3000, rng);  // aligned part + partial page
  ASSERT_EQ(LibWrite(f.get(), at, mine), "");
  model.Write(at, mine);
  EXPECT_OK_TEXT(InChild([&] { return Describe(model.bytes, ReadBuffered(path), "buffered read (cat)"); }));
  const std::string ten = RandomBytes(10, rng);
  const uint64_t ten_at = at + 32 * kKiB + 3500;  // the page the library wrote partly
  EXPECT_OK_TEXT(InChild([&] { return WriteBuffered(path, ten_at, ten, true); }));
  model.Write(ten_at, ten);
  EXPECT_OK_TEXT(InChild([&] { return Describe(model.bytes, ReadDirect(path), "O_DIRECT read"); }));
  f.reset();
  EXPECT_OK_TEXT(ReadsAfter(model, path, " after close"));
  pin.Release();
  std::string why;
  ASSERT_TRUE(Remount(m, &why)) << why;
  EXPECT_OK_TEXT(Describe(model.bytes, ReadBuffered(path), "buffered read after remount"));
}

// Item 1, end to end: ext4dio-write with 4 threads and unaligned I/O sizes
// extending an empty file.
TEST(MountedModelTest, Issue9Item1ThreadedExtendingCliWrite) {
  LoopMount m({"-b", "4096"}, "64M");
  ASSERT_TRUE(m.ok()) << m.error();
  std::mt19937_64 rng(94);
  const std::string input = m.image() + ".input";  // beside the image, not on the mount
  testing::WriteFile(input, RandomBytes(2 * kMiB, rng));
  const std::string want = testing::ReadFile(input);
  std::string failures;
  int round = 0;
  for (const auto& [io_size, rounds] : std::vector<std::pair<int, int>>{{777, 5}, {4000, 2}, {65535, 2}}) {
    for (int i = 0; i < rounds; ++i, ++round) {
      const std::string path = m / ("empty" + std::to_string(round));
      testing::WriteFile(path, "");
      RunResult r = testing::Run({testing::ToolPath("ext4dio-write"), "--threads", "4", "--io-size",
                         std::to_string(io_size), "--input", input, path});
      const std::string tag = "io-size " + std::to_string(io_size) + " round " + std::to_string(i);
      if (r.exit_code != 0) { failures += tag + ": exit " + std::to_string(r.exit_code) + " " + r.err + "\n"; continue; }
      std::string d = Describe(want, ReadBuffered(path), "buffered read");
      if (!d.empty()) failures += tag + ": " + d + "\n";
      d = Describe(want, ReadDirect(path), "O_DIRECT read");
      if (!d.empty()) failures += tag + ": " + d + "\n";
      d = Describe(want, ReadBuffered(path, true), "buffered read after POSIX_FADV_DONTNEED");
      if (!d.empty()) failures += tag + ": " + d + "\n";
    }
  }
  unlink(input.c_str());
  EXPECT_TRUE(failures.empty()) << failures;
}

}  // namespace
}  // namespace ext4dio
