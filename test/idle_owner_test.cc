// A lease break while an asynchronous queue's owner is idle (issue 10, item
// 4; docs/safety.md item 10): the owner submits 4 KiB writes through an
// ext4dio_queue, leaves them unreaped and goes idle (nanosleep, a futex
// wait, a user-space spin). Another process's open(O_RDWR) must get in
// within 1 s -- the failure mode is the kernel's 45 s lease-break-time --
// and read the written data back through the file with O_DIRECT (a shell
// and dd: the break drained the device writes first). For the default options and for
// EXT4DIO_OPEN_REAP_PROMPTLY. Root and loop devices (exits 77 without).
//
// Why it can fail: the IoGate sees an idle owner's completions only once
// the kernel has posted them to the ring. Rings whose completions wait for
// their owner to ask (IORING_SETUP_DEFER_TASKRUN) hold the break for the
// whole lease-break-time; bench/ring_flags measures every flag set.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ext4dio/ext4dio.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::LoopMount;

constexpr unsigned kWrites = 32;
constexpr size_t kBlock = 4096;

enum class Idle { kSleep, kFutex, kSpin };

struct Case {
  bool reap_promptly;
  Idle idle;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  const char* idle = info.param.idle == Idle::kSleep   ? "Nanosleep"
                     : info.param.idle == Idle::kFutex ? "FutexWait"
                                                       : "Spin";
  return std::string(info.param.reap_promptly ? "ReapPromptly" : "Default") + idle;
}

void WakeHandler(int) {}

double MsSince(const timespec& t0) {
  timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
}

// The owner: its own thread makes the queue, submits, goes idle until
// released, then reaps.
class Owner {
 public:
  Owner(ext4dio_file* file, Idle idle, const char* expect) : file_(file), idle_(idle) {
    if (posix_memalign(&buf_, kBlock, kBlock * kWrites) != 0) std::abort();
    std::memcpy(buf_, expect, kBlock * kWrites);
    thread_ = std::thread([this] { Run(); });
  }
  ~Owner() {
    Release();
    if (thread_.joinable()) thread_.join();
    std::free(buf_);
  }
  // Waits until the writes are submitted (or the owner failed).
  bool WaitSubmitted() {
    std::unique_lock<std::mutex> l(report_mu_);
    report_cv_.wait(l, [&] { return state_ != 0; });
    return state_ == 1;
  }
  void Release() {
    if (released_.exchange(true)) return;
    {
      std::lock_guard<std::mutex> l(idle_mu_);
      idle_wake_ = true;
    }
    idle_cv_.notify_all();
    if (idle_ == Idle::kSleep) {
      // nanosleep returns EINTR for a handled signal; until the thread
      // notices, keep nudging it (it may not have gone to sleep yet).
      while (!done_.load()) {
        pthread_kill(thread_.native_handle(), SIGUSR1);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    if (thread_.joinable()) thread_.join();
  }
  const std::string& error() const { return error_; }
  unsigned good() const { return good_; }

 private:
  void Run() {
    ext4dio_queue* q = nullptr;
    if (ext4dio_queue_open(file_, kWrites, &q) < 0) return Fail("queue_open");
    std::vector<ext4dio_request> reqs(kWrites);
    for (unsigned i = 0; i < kWrites; ++i)
      reqs[i] = {EXT4DIO_OP_WRITE, static_cast<char*>(buf_) + i * kBlock, kBlock, i * kBlock, i};
    if (ext4dio_queue_submit_batch(q, reqs.data(), kWrites) != int(kWrites)) {
      ext4dio_queue_close(q);
      return Fail("submit");
    }
    {
      std::lock_guard<std::mutex> l(report_mu_);
      state_ = 1;
    }
    report_cv_.notify_all();
    // Idle: no system call in between that would post the completions.
    switch (idle_) {
      case Idle::kSleep:
        while (!released_.load()) {
          timespec ts = {60, 0};
          nanosleep(&ts, nullptr);
        }
        break;
      case Idle::kFutex: {
        std::unique_lock<std::mutex> l(idle_mu_);
        idle_cv_.wait(l, [&] { return idle_wake_; });
        break;
      }
      case Idle::kSpin:
        while (!released_.load(std::memory_order_relaxed)) {
        }
        break;
    }
    done_.store(true);
    ext4dio_completion c[kWrites];
    unsigned got = 0;
    while (got < kWrites) {
      const int n = ext4dio_queue_reap(q, c + got, kWrites - got, kWrites - got);
      if (n < 0) break;
      got += unsigned(n);
    }
    for (unsigned i = 0; i < got; ++i)
      if (c[i].result == int64_t(kBlock)) ++good_;
    ext4dio_queue_close(q);
  }
  void Fail(const char* what) {
    error_ = std::string(what) + ": " + ext4dio_last_error();
    done_.store(true);
    {
      std::lock_guard<std::mutex> l(report_mu_);
      state_ = 2;
    }
    report_cv_.notify_all();
  }

  ext4dio_file* file_;
  const Idle idle_;
  void* buf_ = nullptr;
  std::thread thread_;
  std::mutex report_mu_;
  std::condition_variable report_cv_;
  int state_ = 0;  // 1 submitted, 2 failed
  std::mutex idle_mu_;
  std::condition_variable idle_cv_;
  bool idle_wake_ = false;
  std::atomic<bool> released_{false}, done_{false};
  std::string error_;
  unsigned good_ = 0;
};

// Another process (a shell, exec'ed, so it shares none of our descriptors)
// opens `path` read-write -- the lease break -- and, holding it open, reads
// the first kWrites blocks back with O_DIRECT into `out`. Returns the
// milliseconds the whole took, or -1 when it failed.
double OpenFromAnotherProcess(const std::string& path, const std::string& out) {
  timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  const testing::RunResult r =
      testing::Sh("exec 3<>" + testing::Quote(path) + " && dd if=" + testing::Quote(path) +
                  " iflag=direct bs=" + std::to_string(kBlock) + " count=" +
                  std::to_string(kWrites) + " status=none >" + testing::Quote(out));
  const double ms = MsSince(t0);
  if (r.exit_code != 0) {
    std::fprintf(stderr, "opener failed (%d): %s\n", r.exit_code, r.err.c_str());
    return -1;
  }
  return ms;
}

class IdleOwnerTest : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    struct sigaction sa = {};
    sa.sa_handler = WakeHandler;  // no SA_RESTART: nanosleep returns
    sigaction(SIGUSR1, &sa, nullptr);
    mount_ = new LoopMount({"-b", "4096"}, "64M");
  }
  static void TearDownTestSuite() {
    delete mount_;
    mount_ = nullptr;
  }
  static LoopMount* mount_;
};
LoopMount* IdleOwnerTest::mount_ = nullptr;

TEST_P(IdleOwnerTest, LeaseBreakGetsInPromptlyAndFindsTheData) {
  ASSERT_TRUE(mount_->ok()) << mount_->error();
  const Case c = GetParam();
  const std::string path = *mount_ / CaseName({c, 0});
  // Written extents (the fast path's case), then different bytes to write.
  std::string old(kBlock * kWrites, 'o');
  {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, old.data(), old.size(), 0), ssize_t(old.size()));
    ASSERT_EQ(fsync(fd), 0);
    close(fd);
  }
  std::string expect(kBlock * kWrites, '\0');
  for (unsigned i = 0; i < kWrites; ++i)
    std::memset(expect.data() + i * kBlock, 'A' + int(i % 26), kBlock);

  ext4dio_target t;
  ext4dio_target_init(&t);
  t.path = path.c_str();
  ext4dio_open_opts o;
  ext4dio_open_opts_init(&o);
  o.flags = EXT4DIO_OPEN_WRITE | (c.reap_promptly ? EXT4DIO_OPEN_REAP_PROMPTLY : 0u);
  ext4dio_file* f = nullptr;
  ASSERT_EQ(ext4dio_open(&t, &o, &f), 0) << ext4dio_last_error();
  std::unique_ptr<ext4dio_file, void (*)(ext4dio_file*)> closer(f, ext4dio_close);
  ext4dio_file_info info;
  ext4dio_file_info_init(&info);
  ASSERT_EQ(ext4dio_file_get_info(f, &info), 0);
  ASSERT_EQ(info.fast_path, 1) << (info.warning ? info.warning : "");

  testing::TempDir scratch;
  const std::string back = scratch / "back";
  double open_ms;
  {
    Owner owner(f, c.idle, expect.data());
    ASSERT_TRUE(owner.WaitSubmitted()) << owner.error();
    // Let the owner settle into its idle state before the break comes.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    open_ms = OpenFromAnotherProcess(path, back);
    owner.Release();
    EXPECT_EQ(owner.good(), kWrites) << "writes that did not complete in full";
  }
  std::printf("another process's open(O_RDWR) and read-back took %.1f ms\n", open_ms);
  ASSERT_GE(open_ms, 0) << "the opener failed";
  EXPECT_LT(open_ms, 1000.0) << "the lease break waited for the idle owner";
  EXPECT_TRUE(testing::ReadFile(back) == expect)
      << "the opener read other bytes than the queue wrote";
  ext4dio_stats s;
  ext4dio_stats_init(&s);
  ASSERT_EQ(ext4dio_file_get_stats(f, &s), 0);
  EXPECT_GE(s.lease_breaks, 1u);
  EXPECT_GE(s.fast_bytes, kBlock * kWrites) << "the writes did not take the fast path";
}

INSTANTIATE_TEST_SUITE_P(
    AllIdleStates, IdleOwnerTest,
    ::testing::Values(Case{false, Idle::kSleep}, Case{false, Idle::kFutex},
                      Case{false, Idle::kSpin}, Case{true, Idle::kSleep},
                      Case{true, Idle::kFutex}, Case{true, Idle::kSpin}),
    CaseName);

}  // namespace
}  // namespace ext4dio
