// Guard for issue 10's batching: how many io_uring_enter system calls the
// calling thread makes per C API call, counted by the kernel (a perf
// counter on the sys_enter_io_uring_enter tracepoint; test/syscall_counter.h).
//
//  * one ext4dio_queue_submit_batch of 16 fast-path 4 KiB writes: exactly 1
//    (one submission for the batch, none for planning);
//  * a synchronous ext4dio_pwrite / ext4dio_pread on the io_uring backend:
//    exactly 1 (submit and wait together);
//  * ext4dio_queue_reap(min = 0) of completions already in the CQ ring
//    (seen there through the ring's /proc fdinfo): 0, and it returns them.
//    On a DEFER_TASKRUN ring completions reach the CQ ring only inside an
//    io_uring_enter: there the test waits until the writes' data is in the
//    image, lets one reap of one completion enter, and checks the rest.
//
// Image mode (an ext4 image on tmpfs made with mkfs.ext4 -d), io_uring
// backend. Exits 77 (skip) saying why when the counter cannot be made
// (no tracefs or perf events, not root).
#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "ext4dio/ext4dio.h"
#include "gtest/gtest.h"
#include "syscall_counter.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::SyscallCounter;
using testing::TempDir;

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kFileBytes = 16ull << 20;  // all written: every block mapped
constexpr uint32_t kBatch = 16;

// Completions waiting in the CQ rings of this process's io_urings (the
// "CQEs:" line of each ring's fdinfo: tail minus head, what a reap finds
// without entering the kernel). -1 when no ring is visible.
long CqesInRings() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  long total = -1;
  while (dirent* e = readdir(d)) {
    const std::string fd_path = std::string("/proc/self/fd/") + e->d_name;
    char target[64] = {};
    if (readlink(fd_path.c_str(), target, sizeof target - 1) <= 0) continue;
    if (std::strcmp(target, "anon_inode:[io_uring]") != 0) continue;
    std::ifstream info(std::string("/proc/self/fdinfo/") + e->d_name);
    std::string line;
    while (std::getline(info, line)) {
      unsigned long n = 0;
      if (std::sscanf(line.c_str(), "CQEs: %lu", &n) == 1) {
        total = (total < 0 ? 0 : total) + static_cast<long>(n);
        break;
      }
    }
  }
  closedir(d);
  return total;
}

struct AlignedDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedPtr = std::unique_ptr<char, AlignedDeleter>;

AlignedPtr AlignedBuffer(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, kBlock, bytes) != 0) return nullptr;
  std::memset(p, 0x5a, bytes);
  return AlignedPtr(static_cast<char*>(p));
}

class UringEnterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string src = *dir_ / "src";
    ASSERT_EQ(testing::Sh("mkdir -p " + testing::Quote(src)).exit_code, 0);
    testing::WriteIslands(src + "/data", 1, kFileBytes, kFileBytes, 7);
    testing::MakeFs("ext4", {"-b", "4096"}, src, *dir_ / "fs.img", "64M");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    std::string why;
    counter_ = SyscallCounter::Create("io_uring_enter", &why);
    ASSERT_NE(counter_, nullptr) << why;  // main() skipped when it cannot work
    ext4dio_target t;
    ext4dio_target_init(&t);
    const std::string image = *dir_ / "fs.img";
    t.image = image.c_str();
    t.path = "/data";
    ext4dio_open_opts o;
    ext4dio_open_opts_init(&o);
    o.flags = EXT4DIO_OPEN_WRITE;
    o.backend = EXT4DIO_BACKEND_URING;
    ASSERT_EQ(ext4dio_open(&t, &o, &file_), 0) << ext4dio_last_error();
    ext4dio_file_info info;
    ext4dio_file_info_init(&info);
    ASSERT_EQ(ext4dio_file_get_info(file_, &info), 0);
    ASSERT_EQ(info.backend, EXT4DIO_BACKEND_URING);
    ASSERT_EQ(info.fast_path, 1) << (info.warning ? info.warning : "");
    buf_ = AlignedBuffer(kBatch * kBlock);
    ASSERT_NE(buf_, nullptr);
  }
  void TearDown() override {
    ext4dio_queue_close(queue_);
    ext4dio_close(file_);
  }

  // Opens the queue and runs one batch through it, reaped: whatever is set
  // up on first use is then in place.
  void OpenWarmQueue() {
    ASSERT_EQ(ext4dio_queue_open(file_, 32, &queue_), 0) << ext4dio_last_error();
    ext4dio_request reqs[kBatch];
    Batch(reqs, 0);
    ASSERT_EQ(ext4dio_queue_submit_batch(queue_, reqs, kBatch), static_cast<int>(kBatch))
        << ext4dio_last_error();
    ReapAll();
  }

  // kBatch writes of one block each, `first` blocks into the file, 4 blocks
  // apart (no two in one merged device request).
  void Batch(ext4dio_request* reqs, uint64_t first) {
    for (uint32_t i = 0; i < kBatch; ++i) {
      reqs[i] = {EXT4DIO_OP_WRITE, buf_.get() + i * kBlock, kBlock,
                 (first + 4 * i) * kBlock, i};
    }
  }

  // Reaps the rest of a batch of which `got` were reaped already.
  void ReapAll(size_t got = 0) {
    ext4dio_completion c[kBatch];
    while (got < kBatch) {
      const int n = ext4dio_queue_reap(queue_, c, kBatch, kBatch - got);
      ASSERT_GT(n, 0) << ext4dio_last_error();
      for (int i = 0; i < n; ++i) EXPECT_EQ(c[i].result, static_cast<int64_t>(kBlock));
      got += static_cast<size_t>(n);
    }
  }

  // Whether the blocks Batch(_, first) writes hold `fill` in the image
  // (read through the image file, at the device offsets the map gives).
  bool BatchInImage(uint64_t first, char fill) const {
    const std::string image = *dir_ / "fs.img";
    const int fd = open(image.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const ext4dio_map* map = ext4dio_file_map(file_);
    std::string block(kBlock, '\0');
    bool all = map != nullptr;
    for (uint32_t i = 0; all && i < kBatch; ++i) {
      ext4dio_segment seg;
      size_t n = 0;
      all = ext4dio_map_query(map, (first + 4 * i) * kBlock, kBlock, &seg, 1, &n) == 0 &&
            n == 1 && seg.kind == EXT4DIO_SEG_MAPPED &&
            pread(fd, block.data(), kBlock, static_cast<off_t>(seg.device_offset)) ==
                static_cast<ssize_t>(kBlock) &&
            block.find_first_not_of(fill) == std::string::npos;
    }
    close(fd);
    return all;
  }

  uint64_t FastRequests() const {
    ext4dio_stats st;
    ext4dio_stats_init(&st);
    EXPECT_EQ(ext4dio_file_get_stats(file_, &st), 0);
    return st.fast_requests;
  }

  static TempDir* dir_;
  std::unique_ptr<SyscallCounter> counter_;
  ext4dio_file* file_ = nullptr;
  ext4dio_queue* queue_ = nullptr;
  AlignedPtr buf_;
};

TempDir* UringEnterTest::dir_ = nullptr;

// The counter itself: a bare liburing ring's submit is one io_uring_enter
// of this thread, and another thread's are not counted here.
TEST_F(UringEnterTest, CounterSeesThisThreadsIoUringEnter) {
  io_uring ring;
  ASSERT_EQ(io_uring_queue_init(8, &ring, 0), 0);
  const uint64_t before = counter_->Read();
  io_uring_prep_nop(io_uring_get_sqe(&ring));
  ASSERT_EQ(io_uring_submit_and_wait(&ring, 1), 1);
  const uint64_t after_one = counter_->Read();
  std::thread other([&ring] {
    io_uring_cqe* cqe;
    for (int i = 0; i < 5; ++i) {
      io_uring_prep_nop(io_uring_get_sqe(&ring));
      io_uring_submit_and_wait(&ring, 1);
      while (io_uring_peek_cqe(&ring, &cqe) == 0) io_uring_cqe_seen(&ring, cqe);
    }
  });
  other.join();
  const uint64_t after_thread = counter_->Read();
  io_uring_queue_exit(&ring);
  EXPECT_EQ(after_one - before, 1u);
  EXPECT_EQ(after_thread - after_one, 0u) << "counted another thread's io_uring_enter";
}

TEST_F(UringEnterTest, SubmitBatchOf16FastWritesIsOneEnter) {
  OpenWarmQueue();
  ext4dio_request reqs[kBatch];
  Batch(reqs, 1000);
  const uint64_t fast_before = FastRequests();
  const uint64_t before = counter_->Read();
  const int started = ext4dio_queue_submit_batch(queue_, reqs, kBatch);
  const uint64_t enters = counter_->Read() - before;
  ASSERT_EQ(started, static_cast<int>(kBatch)) << ext4dio_last_error();
  ReapAll();
  EXPECT_EQ(FastRequests() - fast_before, kBatch) << "not all on the fast path";
  EXPECT_EQ(enters, 1u) << "ext4dio_queue_submit_batch of " << kBatch
                        << " fast-path 4 KiB writes made " << enters << " io_uring_enter";
}

TEST_F(UringEnterTest, SyncPwriteIsOneEnter) {
  // Warm-up: the calling thread's ring is set up on first use.
  ASSERT_EQ(ext4dio_pwrite(file_, buf_.get(), kBlock, 0), static_cast<int64_t>(kBlock))
      << ext4dio_last_error();
  constexpr int kCalls = 64;
  const uint64_t fast_before = FastRequests();
  const uint64_t before = counter_->Read();
  for (int i = 0; i < kCalls; ++i) {
    if (ext4dio_pwrite(file_, buf_.get(), kBlock, (100 + 4 * i) * kBlock) !=
        static_cast<int64_t>(kBlock)) {
      ADD_FAILURE() << "pwrite " << i << ": " << ext4dio_last_error();
      return;
    }
  }
  const uint64_t enters = counter_->Read() - before;
  EXPECT_EQ(FastRequests() - fast_before, static_cast<uint64_t>(kCalls));
  EXPECT_EQ(enters, static_cast<uint64_t>(kCalls))
      << kCalls << " synchronous 4 KiB ext4dio_pwrite made " << enters
      << " io_uring_enter (" << static_cast<double>(enters) / kCalls << " per call)";
}

TEST_F(UringEnterTest, SyncPreadIsOneEnter) {
  ASSERT_EQ(ext4dio_pread(file_, buf_.get(), kBlock, 0), static_cast<int64_t>(kBlock))
      << ext4dio_last_error();
  constexpr int kCalls = 64;
  const uint64_t before = counter_->Read();
  for (int i = 0; i < kCalls; ++i) {
    if (ext4dio_pread(file_, buf_.get(), kBlock, (200 + 4 * i) * kBlock) !=
        static_cast<int64_t>(kBlock)) {
      ADD_FAILURE() << "pread " << i << ": " << ext4dio_last_error();
      return;
    }
  }
  const uint64_t enters = counter_->Read() - before;
  EXPECT_EQ(enters, static_cast<uint64_t>(kCalls))
      << kCalls << " synchronous 4 KiB ext4dio_pread made " << enters
      << " io_uring_enter (" << static_cast<double>(enters) / kCalls << " per call)";
}

TEST_F(UringEnterTest, ReapOfCompletionsInTheRingMakesNoEnter) {
  OpenWarmQueue();
  ASSERT_EQ(CqesInRings(), 0) << "the warm-up left completions (or no ring is visible)";
  constexpr uint64_t kFirst = 2000;
  constexpr char kFill = static_cast<char>(0xc3);  // the file's bytes are random
  std::memset(buf_.get(), kFill, kBatch * kBlock);
  ext4dio_request reqs[kBatch];
  Batch(reqs, kFirst);
  ASSERT_EQ(ext4dio_queue_submit_batch(queue_, reqs, kBatch), static_cast<int>(kBatch))
      << ext4dio_last_error();
  // Wait, without touching the ring, until every completion is in its CQ
  // ring. Reading fdinfo enters the kernel, which also runs the task work
  // that posts completions on a plain or COOP_TASKRUN ring.
  // Once the writes' data is in the image their completions are posted
  // within microseconds; 200 ms after that, a ring still short of them is
  // one that defers them to io_uring_enter (DEFER_TASKRUN).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  auto grace_end = deadline;
  long in_ring = 0;
  while ((in_ring = CqesInRings()) < static_cast<long>(kBatch)) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline || now >= grace_end) break;
    if (grace_end == deadline && BatchInImage(kFirst, kFill))
      grace_end = now + std::chrono::milliseconds(200);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  size_t reaped = 0;
  ext4dio_completion c[kBatch];
  if (in_ring < static_cast<long>(kBatch)) {
    // A DEFER_TASKRUN ring posts completions only inside io_uring_enter:
    // once every write's data is in the image, one reap of one completion
    // (its enter runs the deferred work) leaves the rest in the ring.
    ASSERT_TRUE(BatchInImage(kFirst, kFill)) << "the batch's writes did not land within 10 s";
    const int n = ext4dio_queue_reap(queue_, c, 1, 1);
    ASSERT_EQ(n, 1) << ext4dio_last_error();
    reaped = 1;
    in_ring = CqesInRings();
    if (in_ring <= 0) {
      ReapAll(reaped);
      GTEST_SKIP() << "completions do not stay in the CQ ring here (" << in_ring
                   << " after reaping 1 of " << kBatch << ")";
    }
  }
  const uint64_t before = counter_->Read();
  const int n = ext4dio_queue_reap(queue_, c, kBatch, 0);
  const uint64_t enters = counter_->Read() - before;
  EXPECT_EQ(enters, 0u) << "ext4dio_queue_reap(min=0) of " << in_ring
                        << " completions already in the CQ ring made " << enters
                        << " io_uring_enter";
  ASSERT_GE(n, 0) << ext4dio_last_error();
  EXPECT_EQ(n, in_ring) << "ext4dio_queue_reap(min=0) returned " << n << " of the " << in_ring
                        << " completions waiting in the CQ ring";
  for (int i = 0; i < n; ++i) EXPECT_EQ(c[i].result, static_cast<int64_t>(kBlock));
  ReapAll(reaped + static_cast<size_t>(n));  // the queue closes empty
}

}  // namespace
}  // namespace ext4dio

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::string why;
  if (ext4dio::testing::SyscallCounter::Create("io_uring_enter", &why) == nullptr) {
    std::printf("SKIP uring_enter_test: %s\n", why.c_str());
    return 77;
  }
  return RUN_ALL_TESTS();
}
