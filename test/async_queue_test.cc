// AsyncQueue behaviour that needs a precise interleaving with another
// thread: regression tests for bugs found in review.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <future>
#include <thread>

#include "async_queue.h"
#include "file.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace ext4dio {
namespace {

// A request with more device ops than free ring slots kept some waiting
// while it held its 1 MiB regions shared. A read-modify-write from another
// thread in the same region then waited for them, and the next Submit on
// the queue spun waiting for the region without ever sending the waiting
// ops: both threads hung.
TEST(AsyncQueueTest, WaitingOpsAreSentWhileAnotherThreadWaitsForTheRegion) {
  testing::TempDir dir;
  ASSERT_EQ(testing::Sh("mkdir -p " + dir / "src" + " && head -c 20M /dev/urandom > " +
                        dir / "src/big").exit_code, 0);
  // Small groups: /big's extents are ~1 MiB, with a boundary at block 246.
  testing::MakeFs("ext4", {"-b", "4096", "-O", "^flex_bg,^resize_inode", "-g", "256", "-N", "64"},
                  dir / "src", dir / "fs.img", "64M");
  OpenOptions o;
  o.target = Target{dir / "fs.img", 0, "/big", 0};
  o.write = true;
  auto file = File::Open(o);
  ASSERT_TRUE(file.ok()) << file.status();
  auto q = (*file)->NewAsyncQueue(2);
  ASSERT_TRUE(q.ok()) << q.status();
  auto segments = (*file)->map().Query(244 * 4096, 16384);
  ASSERT_TRUE(segments.ok());
  ASSERT_EQ(segments->size(), 2u) << "the fixture needs an extent boundary inside r2";

  void* raw = nullptr;
  ASSERT_EQ(posix_memalign(&raw, 4096, 1 << 20), 0);
  std::unique_ptr<char, decltype(&free)> buf(static_cast<char*>(raw), &free);
  std::memset(buf.get(), 'x', 1 << 20);
  ASSERT_TRUE((*q)->Submit({true, buf.get(), 8192, 0, 1}).ok());
  ASSERT_TRUE((*q)->Submit({true, buf.get(), 16384, 244 * 4096, 2}).ok());
  AsyncCompletion c[4];
  ASSERT_TRUE((*q)->Reap(absl::MakeSpan(c), 1).ok());

  auto other = std::async(std::launch::async, [&] {
    return (*file)->Pwrite("unaligned", 9, 100);  // read-modify-write, region 0
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto third = std::async(std::launch::async, [&] {
    absl::Status s = (*q)->Submit({true, buf.get(), 8192, 2 * 4096, 3});
    if (!s.ok()) return s;
    size_t got = 0;
    while ((*q)->outstanding() > 0) {
      auto n = (*q)->Reap(absl::MakeSpan(c), 1);
      if (!n.ok()) return n.status();
      for (size_t i = 0; i < *n; ++i)
        if (c[i].result < 0) return absl::InternalError("request failed");
      got += *n;
    }
    return absl::OkStatus();
  });
  ASSERT_EQ(third.wait_for(std::chrono::seconds(20)), std::future_status::ready)
      << "Submit hung: waiting ops never sent";
  EXPECT_TRUE(third.get().ok());
  ASSERT_EQ(other.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  auto written = other.get();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, 9u);

  char back[9];
  auto n = (*file)->Pread(back, 9, 100);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(back, 9), "unaligned");
}

}  // namespace
}  // namespace ext4dio
