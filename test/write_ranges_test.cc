// WriteRanges: a read-modify-write never overlaps in time a direct write to
// the same bytes, nobody deadlocks or starves, a thread's RMW over its own
// unreaped write fails with EDEADLK, and the common case (no RMW anywhere
// near) allocates nothing.
#include "write_ranges.h"

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "errors.h"
#include "gtest/gtest.h"

// Counts heap allocations while `g_count_allocations` is set (the
// allocation guard below): a replaced operator new, or under a sanitizer
// (which brings its own) the sanitizer's malloc hook.
namespace {
std::atomic<bool> g_count_allocations{false};
std::atomic<uint64_t> g_allocations{0};
void CountAllocation() {
  if (g_count_allocations.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
}
}  // namespace

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define EXT4DIO_SANITIZER_ALLOCATOR 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define EXT4DIO_SANITIZER_ALLOCATOR 1
#endif

#ifdef EXT4DIO_SANITIZER_ALLOCATOR
#include <sanitizer/allocator_interface.h>
namespace {
void MallocHook(const volatile void*, size_t) { CountAllocation(); }
void FreeHook(const volatile void*) {}
const bool g_hooked = __sanitizer_install_malloc_and_free_hooks(MallocHook, FreeHook) != 0;
}  // namespace
#else
void* operator new(size_t n) {
  CountAllocation();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  CountAllocation();
  return std::malloc(n ? n : 1);
}
void* operator new[](size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // they are malloc's
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
#endif

namespace ext4dio {
namespace {

using Range = WriteRanges::Range;
constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kUnit = 4096;

int ErrnoOf(const absl::Status& s) { return -CodeOf(s); }

// Runs `f` on a new thread and waits for it (for calls that must come from
// another thread than the test's).
template <class F>
void OnOtherThread(F f) {
  std::thread t(f);
  t.join();
}

TEST(WriteRangesTest, AllocationCounterCounts) {
  g_allocations = 0;
  g_count_allocations = true;
  auto* v = new std::vector<int>(1000);
  g_count_allocations = false;
  delete v;
  EXPECT_GE(g_allocations.load(), 2u);
}

TEST(WriteRangesTest, NoAllocationOnTheFastPath) {
  WriteRanges wr;
  const uint64_t owner = WriteRanges::ThreadOwner();
  std::mt19937_64 rng(1);
  std::vector<std::vector<Range>> requests;
  for (int i = 0; i < 64; ++i) {
    const uint64_t off = (rng() % (4096 * kMiB)) & ~uint64_t{4095};
    const uint64_t len = kUnit * (1 + rng() % 64);
    requests.push_back({Range{off, off + len}});
    if (i % 4 == 0) requests.back().push_back(Range{off + 3 * kMiB, off + 3 * kMiB + kUnit});
  }
  // Warm-up: whatever the first use of a thread or a stripe sets up once.
  for (const auto& r : requests) {
    wr.BeginDirect(r, owner);
    wr.EndDirect(r, owner);
  }
  g_allocations = 0;
  g_count_allocations = true;
  for (int i = 0; i < 100000; ++i) {
    const auto& r = requests[i % requests.size()];
    wr.BeginDirect(r, owner);
    wr.EndDirect(r, owner);
  }
  g_count_allocations = false;
  EXPECT_EQ(g_allocations.load(), 0u) << "heap allocations over 100000 direct writes";
}

TEST(WriteRangesTest, NoAllocationWithManyInFlight) {
  // An async queue at depth: many direct writes of one thread in flight at
  // once in the same regions, ended in another order than begun.
  WriteRanges wr;
  const uint64_t owner = WriteRanges::ThreadOwner();
  std::vector<Range> in_flight;
  for (int i = 0; i < 128; ++i) in_flight.push_back(Range{i * 8 * kUnit, i * 8 * kUnit + kUnit});
  for (int round = 0; round < 2; ++round) {
    if (round == 1) {
      g_allocations = 0;
      g_count_allocations = true;
    }
    for (int k = 0; k < 1000; ++k) {
      for (const Range& r : in_flight) wr.BeginDirect({&r, 1}, owner);
      for (size_t j = in_flight.size(); j-- > 0;) wr.EndDirect({&in_flight[j], 1}, owner);
    }
    g_count_allocations = false;
  }
  EXPECT_EQ(g_allocations.load(), 0u);
}

// Invariant 1: per 512-byte sector, how many direct writers and RMWs are
// inside; never both on the same sector.
class Occupancy {
 public:
  // Two windows: [0, 2 MiB) and [256 MiB, 258 MiB) (the same stripes).
  static constexpr uint64_t kWindow = 2 * kMiB;
  static constexpr uint64_t kAlias = 256 * kMiB;
  Occupancy() : direct_(2 * kWindow / 512), rmw_(2 * kWindow / 512) {}

  // Enters [lo, hi) as a direct writer (rmw false) or an RMW; returns false
  // when the other kind is inside any of its sectors.
  bool Enter(uint64_t lo, uint64_t hi, bool rmw) {
    bool ok = true;
    for (uint64_t s = lo; s < hi; s += 512) {
      const size_t i = Index(s);
      // seq_cst both sides: of two overlapping entrants at least one sees
      // the other.
      (rmw ? rmw_ : direct_)[i].fetch_add(1, std::memory_order_seq_cst);
      if ((rmw ? direct_ : rmw_)[i].load(std::memory_order_seq_cst) != 0) ok = false;
    }
    return ok;
  }
  void Leave(uint64_t lo, uint64_t hi, bool rmw) {
    for (uint64_t s = lo; s < hi; s += 512) (rmw ? rmw_ : direct_)[Index(s)].fetch_sub(1);
  }

 private:
  static size_t Index(uint64_t off) {
    return off >= kAlias ? (kWindow + off - kAlias) / 512 : off / 512;
  }
  std::vector<std::atomic<int>> direct_, rmw_;
};

// A random direct write of sectors in the middle `span` bytes of one window
// (around the 1 MiB region boundary), sometimes crossing the boundary.
Range RandomDirect(std::mt19937_64& rng, uint64_t span = Occupancy::kWindow) {
  const uint64_t base = ((rng() % 2) ? Occupancy::kAlias : 0) + (Occupancy::kWindow - span) / 2;
  const uint64_t len = 512 * (1 + rng() % 24);
  const uint64_t off = 512 * (rng() % ((span - len) / 512));
  return Range{base + off, base + off + len};
}

// A random 4 KiB unit there. REQUIRES: span a multiple of 8 KiB.
uint64_t RandomUnit(std::mt19937_64& rng, uint64_t span = Occupancy::kWindow) {
  const uint64_t base = ((rng() % 2) ? Occupancy::kAlias : 0) + (Occupancy::kWindow - span) / 2;
  return base + kUnit * (rng() % (span / kUnit));
}

TEST(WriteRangesTest, RmwNeverOverlapsADirectWrite) {
  WriteRanges wr;
  Occupancy occ;
  std::atomic<int> violations{0};
  std::atomic<int> directs_left{4};
  constexpr int kDirects = 4, kRmws = 2;
  std::vector<std::thread> threads;
  for (int t = 0; t < kDirects; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      const uint64_t owner = WriteRanges::ThreadOwner();
      for (int i = 0; i < 20000; ++i) {
        std::vector<Range> ranges = {RandomDirect(rng)};
        if (i % 3 == 0) ranges.push_back(RandomDirect(rng));
        wr.BeginDirect(ranges, owner);
        for (const Range& r : ranges) {
          if (!occ.Enter(r.first, r.second, false)) violations++;
        }
        if (i % 8 == 0) std::this_thread::yield();
        for (const Range& r : ranges) occ.Leave(r.first, r.second, false);
        wr.EndDirect(ranges, owner);
      }
      directs_left--;
    });
  }
  for (int t = 0; t < kRmws; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(200 + t);
      const uint64_t owner = WriteRanges::ThreadOwner();
      while (directs_left.load() > 0) {
        const uint64_t unit = RandomUnit(rng);
        ASSERT_TRUE(wr.BeginRmw(unit, kUnit, owner).ok());
        if (!occ.Enter(unit, unit + kUnit, true)) violations++;
        std::this_thread::yield();
        occ.Leave(unit, unit + kUnit, true);
        wr.EndRmw(unit, kUnit, owner);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(violations.load(), 0);
}

TEST(WriteRangesTest, RmwNeverOverlapsADirectWriteReapedElsewhere) {
  // Invariant 1 with async-style writes: each submitter's writes are ended
  // by its reaper thread, and the submitters do RMWs of their own while
  // some of their writes are still in flight (EDEADLK over those is fine).
  WriteRanges wr;
  Occupancy occ;
  std::atomic<int> violations{0}, rmws{0};
  constexpr int kSubmitters = 3;
  constexpr uint64_t kSpan = 256 * 1024;  // crowded: overlaps are frequent
  struct Queue {
    std::mutex mu;
    std::deque<Range> ranges;
    std::atomic<bool> done{false};
    uint64_t owner = 0;
  };
  std::vector<Queue> queues(kSubmitters);
  std::vector<std::thread> threads;
  for (int t = 0; t < kSubmitters; ++t) {
    threads.emplace_back([&, t] {
      Queue& q = queues[t];
      std::mt19937_64 rng(400 + t);
      const uint64_t owner = WriteRanges::ThreadOwner();
      for (int i = 0; i < 30000; ++i) {
        if (rng() % 4 == 0) {
          const uint64_t unit = RandomUnit(rng, kSpan);
          absl::Status s = wr.BeginRmw(unit, kUnit, owner);
          if (!s.ok()) {
            ASSERT_EQ(ErrnoOf(s), EDEADLK) << s;
            continue;
          }
          rmws++;
          if (!occ.Enter(unit, unit + kUnit, true)) violations++;
          std::this_thread::yield();
          occ.Leave(unit, unit + kUnit, true);
          wr.EndRmw(unit, kUnit, owner);
          continue;
        }
        auto full = [&] {  // at most 8 in flight
          std::lock_guard<std::mutex> lock(q.mu);
          return q.ranges.size() >= 8;
        };
        while (full()) std::this_thread::yield();
        const Range r = RandomDirect(rng, kSpan);
        wr.BeginDirect({&r, 1}, owner);
        if (!occ.Enter(r.first, r.second, false)) violations++;
        std::lock_guard<std::mutex> lock(q.mu);
        q.owner = owner;
        q.ranges.push_back(r);
      }
      q.done = true;
    });
    threads.emplace_back([&, t] {
      Queue& q = queues[t];
      for (;;) {
        const bool done = q.done.load();
        Range r;
        uint64_t owner;
        {
          std::lock_guard<std::mutex> lock(q.mu);
          if (!q.ranges.empty()) {
            r = q.ranges.front();
            q.ranges.pop_front();
            owner = q.owner;
          } else if (done) {
            return;
          } else {
            owner = 0;
          }
        }
        if (owner == 0) {
          std::this_thread::yield();
          continue;
        }
        std::this_thread::yield();  // the write's "I/O"
        occ.Leave(r.first, r.second, false);
        wr.EndDirect({&r, 1}, owner);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_GT(rmws.load(), 5000);
}

TEST(WriteRangesTest, RmwWaitsForAnotherThreadsDirectAndNoLonger) {
  WriteRanges wr;
  const Range r{kMiB + 8192, kMiB + 8192 + 3 * kUnit};
  const uint64_t me = WriteRanges::ThreadOwner();
  wr.BeginDirect({&r, 1}, me);
  std::atomic<bool> rmw_in{false};
  std::thread t([&] {
    const uint64_t owner = WriteRanges::ThreadOwner();
    ASSERT_TRUE(wr.BeginRmw(kMiB + 8192 + kUnit, kUnit, owner).ok());
    rmw_in = true;
    wr.EndRmw(kMiB + 8192 + kUnit, kUnit, owner);
  });
  // The RMW must not get in while the write is registered (a correctness
  // check, not a timing one: it may never become true before EndDirect).
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(rmw_in.load());
    std::this_thread::yield();
  }
  wr.EndDirect({&r, 1}, me);
  t.join();
  EXPECT_TRUE(rmw_in.load());
}

TEST(WriteRangesTest, DirectWaitsForAnRmwAndHoldsNothingMeanwhile) {
  // Invariant 2: RMW A holds a unit in region 0; a request with ranges in
  // region 1 and in A's unit must wait for A without keeping its region-1
  // range registered, so RMW B over that range gets in meanwhile.
  WriteRanges wr;
  const uint64_t a_unit = 16 * kUnit, b_unit = kMiB + 16 * kUnit;
  const uint64_t me = WriteRanges::ThreadOwner();
  ASSERT_TRUE(wr.BeginRmw(a_unit, kUnit, me).ok());
  std::atomic<bool> direct_in{false};
  std::thread d([&] {
    const uint64_t owner = WriteRanges::ThreadOwner();
    const std::vector<Range> ranges = {Range{b_unit, b_unit + 2 * kUnit},
                                       Range{a_unit - kUnit, a_unit + kUnit}};
    wr.BeginDirect(ranges, owner);
    direct_in = true;
    wr.EndDirect(ranges, owner);
  });
  for (int i = 0; i < 200; ++i) std::this_thread::yield();  // let it start waiting
  OnOtherThread([&] {
    const uint64_t owner = WriteRanges::ThreadOwner();
    ASSERT_TRUE(wr.BeginRmw(b_unit, kUnit, owner).ok());
    EXPECT_FALSE(direct_in.load()) << "direct write got in while RMW A holds its unit";
    wr.EndRmw(b_unit, kUnit, owner);
  });
  EXPECT_FALSE(direct_in.load());
  wr.EndRmw(a_unit, kUnit, me);
  d.join();
  EXPECT_TRUE(direct_in.load());
}

TEST(WriteRangesTest, TwoRmwsAndRequestsSpanningBothStripesNeverDeadlock) {
  WriteRanges wr;
  const uint64_t a_unit = kMiB - kUnit, b_unit = kMiB;  // both sides of a region boundary
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (uint64_t unit : {a_unit, b_unit}) {
    threads.emplace_back([&, unit] {
      const uint64_t owner = WriteRanges::ThreadOwner();
      for (int i = 0; i < 3000; ++i) {
        ASSERT_TRUE(wr.BeginRmw(unit, kUnit, owner).ok());
        wr.EndRmw(unit, kUnit, owner);
      }
    });
  }
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      const uint64_t owner = WriteRanges::ThreadOwner();
      for (int i = 0; !stop.load(); ++i) {
        std::vector<Range> ranges;
        switch ((i + t) % 3) {
          case 0:  // one range across both units
            ranges = {Range{a_unit, b_unit + kUnit}};
            break;
          case 1:  // B's unit first, then A's
            ranges = {Range{b_unit, b_unit + 512}, Range{a_unit + 512, a_unit + 1024}};
            break;
          default:  // A's unit first, then B's, then elsewhere
            ranges = {Range{a_unit, a_unit + 512}, Range{b_unit + 1024, b_unit + 2048},
                      Range{5 * kMiB, 5 * kMiB + kUnit}};
        }
        wr.BeginDirect(ranges, owner);
        wr.EndDirect(ranges, owner);
      }
    });
  }
  threads[0].join();
  threads[1].join();
  stop = true;
  for (size_t i = 2; i < threads.size(); ++i) threads[i].join();
}

TEST(WriteRangesTest, RmwOverOwnUnreapedWriteFailsAtOnce) {
  WriteRanges wr;
  const uint64_t me = WriteRanges::ThreadOwner();
  const Range r{3 * kMiB + 2 * kUnit, 3 * kMiB + 4 * kUnit};
  wr.BeginDirect({&r, 1}, me);
  absl::Status s = wr.BeginRmw(3 * kMiB + 3 * kUnit, kUnit, me);
  EXPECT_EQ(ErrnoOf(s), EDEADLK) << s;
  // A unit of the same region that the write does not touch is fine.
  ASSERT_TRUE(wr.BeginRmw(3 * kMiB + 8 * kUnit, kUnit, me).ok());
  wr.EndRmw(3 * kMiB + 8 * kUnit, kUnit, me);
  wr.EndDirect({&r, 1}, me);
  // Once reaped, the same RMW goes through.
  ASSERT_TRUE(wr.BeginRmw(3 * kMiB + 3 * kUnit, kUnit, me).ok());
  wr.EndRmw(3 * kMiB + 3 * kUnit, kUnit, me);
}

TEST(WriteRangesTest, RmwBetweenOwnUnreapedWritesGoesThrough) {
  // An async queue's writes on both sides of a unit, then a sync unaligned
  // write into it (a read-modify-write) from the same thread.
  WriteRanges wr;
  const uint64_t me = WriteRanges::ThreadOwner();
  const uint64_t base = 11 * kMiB;
  const std::vector<Range> around = {Range{base + 2 * kUnit, base + 3 * kUnit},
                                     Range{base + 4 * kUnit, base + 5 * kUnit},
                                     Range{base + 9 * kUnit, base + 10 * kUnit}};
  for (const Range& r : around) wr.BeginDirect({&r, 1}, me);
  ASSERT_TRUE(wr.BeginRmw(base + 3 * kUnit, kUnit, me).ok());
  wr.EndRmw(base + 3 * kUnit, kUnit, me);
  EXPECT_EQ(ErrnoOf(wr.BeginRmw(base + 4 * kUnit, kUnit, me)), EDEADLK);
  EXPECT_EQ(ErrnoOf(wr.BeginRmw(base + 9 * kUnit, kUnit, me)), EDEADLK);
  // Reaped by this thread in another order: each stops counting at once.
  wr.EndDirect({&around[1], 1}, me);
  ASSERT_TRUE(wr.BeginRmw(base + 4 * kUnit, kUnit, me).ok());
  wr.EndRmw(base + 4 * kUnit, kUnit, me);
  EXPECT_EQ(ErrnoOf(wr.BeginRmw(base + 2 * kUnit, kUnit, me)), EDEADLK);
  wr.EndDirect({&around[0], 1}, me);
  wr.EndDirect({&around[2], 1}, me);
  ASSERT_TRUE(wr.BeginRmw(base + 2 * kUnit, kUnit, me).ok());
  wr.EndRmw(base + 2 * kUnit, kUnit, me);
}

TEST(WriteRangesTest, ManyOwnUnreapedWritesInARegion) {
  // More of them in flight in one region than are listed exactly: still
  // EDEADLK over each, and fine beyond their span.
  WriteRanges wr;
  const uint64_t me = WriteRanges::ThreadOwner();
  const uint64_t base = 13 * kMiB;
  std::vector<Range> writes;
  for (int i = 0; i < 32; ++i) writes.push_back(Range{base + 2 * i * kUnit, base + (2 * i + 1) * kUnit});
  for (const Range& r : writes) wr.BeginDirect({&r, 1}, me);
  for (const Range& r : writes) EXPECT_EQ(ErrnoOf(wr.BeginRmw(r.first, kUnit, me)), EDEADLK);
  ASSERT_TRUE(wr.BeginRmw(base + 64 * kUnit, kUnit, me).ok());
  wr.EndRmw(base + 64 * kUnit, kUnit, me);
  for (const Range& r : writes) wr.EndDirect({&r, 1}, me);
  ASSERT_TRUE(wr.BeginRmw(base + kUnit, kUnit, me).ok());
  wr.EndRmw(base + kUnit, kUnit, me);
}

TEST(WriteRangesTest, RmwOverOwnWriteReapedByAnotherThreadGoesThrough) {
  // An async queue reaped by another thread: EndDirect carries the
  // submitter's owner, not the caller's.
  WriteRanges wr;
  const uint64_t me = WriteRanges::ThreadOwner();
  const Range r{7 * kMiB, 7 * kMiB + 2 * kUnit};
  for (int i = 0; i < 3; ++i) {
    wr.BeginDirect({&r, 1}, me);
    EXPECT_EQ(ErrnoOf(wr.BeginRmw(7 * kMiB + kUnit, kUnit, me)), EDEADLK);
    OnOtherThread([&] { wr.EndDirect({&r, 1}, me); });
    ASSERT_TRUE(wr.BeginRmw(7 * kMiB + kUnit, kUnit, me).ok());
    wr.EndRmw(7 * kMiB + kUnit, kUnit, me);
  }
}

TEST(WriteRangesTest, RmwOverOwnWriteRegisteredWhileAnRmwWasPendingFails) {
  // The write registered while another thread's RMW held a unit of its
  // region (the exact, slow path) still counts as this thread's own.
  WriteRanges wr;
  const uint64_t me = WriteRanges::ThreadOwner();
  const Range r{9 * kMiB + 4 * kUnit, 9 * kMiB + 5 * kUnit};
  std::atomic<int> step{0};
  std::thread t([&] {
    const uint64_t owner = WriteRanges::ThreadOwner();
    ASSERT_TRUE(wr.BeginRmw(9 * kMiB, kUnit, owner).ok());
    step = 1;
    while (step.load() != 2) std::this_thread::yield();
    wr.EndRmw(9 * kMiB, kUnit, owner);
  });
  while (step.load() != 1) std::this_thread::yield();
  wr.BeginDirect({&r, 1}, me);
  step = 2;
  t.join();
  EXPECT_EQ(ErrnoOf(wr.BeginRmw(9 * kMiB + 4 * kUnit, kUnit, me)), EDEADLK);
  OnOtherThread([&] { wr.EndDirect({&r, 1}, me); });
  ASSERT_TRUE(wr.BeginRmw(9 * kMiB + 4 * kUnit, kUnit, me).ok());
  wr.EndRmw(9 * kMiB + 4 * kUnit, kUnit, me);
}

TEST(WriteRangesTest, OwnWritesElsewhereDoNotBlockAnRmw) {
  // The thread's unreaped writes in other regions sharing the unit's
  // stripe (256 MiB apart) and in other instances neither fail nor block
  // its RMW.
  WriteRanges wr, other;
  const uint64_t me = WriteRanges::ThreadOwner();
  const std::vector<Range> mine = {Range{256 * kMiB, 256 * kMiB + kUnit},
                                   Range{512 * kMiB + kUnit, 512 * kMiB + 2 * kUnit}};
  wr.BeginDirect(mine, me);
  other.BeginDirect(mine, me);
  ASSERT_TRUE(wr.BeginRmw(0, kUnit, me).ok());
  wr.EndRmw(0, kUnit, me);
  ASSERT_TRUE(other.BeginRmw(768 * kMiB, kUnit, me).ok());
  other.EndRmw(768 * kMiB, kUnit, me);
  wr.EndDirect(mine, me);
  other.EndDirect(mine, me);
}

TEST(WriteRangesTest, RmwIsNotStarvedByDirectsToItsStripe) {
  // Invariant 4: threads keep writing all over the RMW's region (its unit
  // included) while it runs 300 read-modify-writes.
  WriteRanges wr;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(300 + t);
      const uint64_t owner = WriteRanges::ThreadOwner();
      while (!stop.load()) {
        const uint64_t off = kUnit * (rng() % 256);
        const Range r{off, off + kUnit * (1 + rng() % 4)};
        wr.BeginDirect({&r, 1}, owner);
        wr.EndDirect({&r, 1}, owner);
      }
    });
  }
  const uint64_t me = WriteRanges::ThreadOwner();
  for (int i = 0; i < 300; ++i) {
    const uint64_t unit = kUnit * (i % 256);
    ASSERT_TRUE(wr.BeginRmw(unit, kUnit, me).ok());
    wr.EndRmw(unit, kUnit, me);
  }
  stop = true;
  for (auto& t : threads) t.join();
}

TEST(WriteRangesTest, HugeRangesWork) {
  // Invariant 5: ranges over >= 256 regions (every stripe, some twice).
  WriteRanges wr;
  const uint64_t me = WriteRanges::ThreadOwner();
  const std::vector<Range> huge = {Range{kUnit, 300 * kMiB}, Range{1000 * kMiB, 1600 * kMiB}};
  wr.BeginDirect(huge, me);
  EXPECT_EQ(ErrnoOf(wr.BeginRmw(299 * kMiB, kUnit, me)), EDEADLK);
  std::atomic<bool> rmw_in{false};
  std::thread t([&] {
    const uint64_t owner = WriteRanges::ThreadOwner();
    // Not in the huge ranges, but in a stripe they cover: allowed.
    ASSERT_TRUE(wr.BeginRmw(400 * kMiB, kUnit, owner).ok());
    wr.EndRmw(400 * kMiB, kUnit, owner);
    ASSERT_TRUE(wr.BeginRmw(1500 * kMiB, kUnit, owner).ok());  // inside: waits
    rmw_in = true;
    wr.EndRmw(1500 * kMiB, kUnit, owner);
  });
  for (int i = 0; i < 1000; ++i) {
    ASSERT_FALSE(rmw_in.load());
    std::this_thread::yield();
  }
  wr.EndDirect(huge, me);
  t.join();
  EXPECT_TRUE(rmw_in.load());
  // And the stripes are all free again: a direct and an RMW in each.
  for (uint64_t region = 0; region < 256; ++region) {
    const Range r{region * kMiB, region * kMiB + kUnit};
    wr.BeginDirect({&r, 1}, me);
    wr.EndDirect({&r, 1}, me);
    ASSERT_TRUE(wr.BeginRmw(region * kMiB, kUnit, me).ok());
    wr.EndRmw(region * kMiB, kUnit, me);
  }
}

TEST(WriteRangesTest, ManyThreadsComeAndGo) {
  // Threads that exit with writes in flight, ended by another thread after
  // the submitter is gone (its per-thread bookkeeping must stay valid).
  WriteRanges wr;
  for (int round = 0; round < 200; ++round) {
    uint64_t owner = 0;
    const Range r{(round % 16) * kMiB, (round % 16) * kMiB + kUnit};
    OnOtherThread([&] {
      owner = WriteRanges::ThreadOwner();
      wr.BeginDirect({&r, 1}, owner);
    });
    // Its owner id is still its own: RMWs of others wait, then go through.
    std::thread t([&] {
      const uint64_t o = WriteRanges::ThreadOwner();
      EXPECT_NE(o, owner);
      ASSERT_TRUE(wr.BeginRmw(r.first, kUnit, o).ok());
      wr.EndRmw(r.first, kUnit, o);
    });
    for (int i = 0; i < 10; ++i) std::this_thread::yield();
    wr.EndDirect({&r, 1}, owner);
    t.join();
  }
}

TEST(WriteRangesTest, DirectRegisteredByAnotherThreadForUsIsOurs) {
  // Another thread registers a write on our behalf (owner != its own
  // ThreadOwner(): the exact path). Our RMW over it is a wait for our own
  // unreaped write: EDEADLK; beside it, fine; once it ends, fine.
  WriteRanges wr;
  const uint64_t me = WriteRanges::ThreadOwner();
  const Range r{3 * kMiB + 4 * kUnit, 3 * kMiB + 6 * kUnit};
  OnOtherThread([&] { wr.BeginDirect({&r, 1}, me); });
  EXPECT_EQ(ErrnoOf(wr.BeginRmw(3 * kMiB + 5 * kUnit, kUnit, me)), EDEADLK);
  ASSERT_TRUE(wr.BeginRmw(3 * kMiB + 6 * kUnit, kUnit, me).ok());
  wr.EndRmw(3 * kMiB + 6 * kUnit, kUnit, me);
  OnOtherThread([&] { wr.EndDirect({&r, 1}, me); });
  ASSERT_TRUE(wr.BeginRmw(3 * kMiB + 5 * kUnit, kUnit, me).ok());
  wr.EndRmw(3 * kMiB + 5 * kUnit, kUnit, me);
}

TEST(WriteRangesTest, OwnWriteAcrossTwoRegionsEndedElsewhere) {
  // One write over the boundary of two 1 MiB regions (two stripes): EDEADLK
  // in both until another thread ends it, then RMWs in both go through.
  WriteRanges wr;
  const uint64_t me = WriteRanges::ThreadOwner();
  const Range r{5 * kMiB - 2 * kUnit, 5 * kMiB + 2 * kUnit};
  wr.BeginDirect({&r, 1}, me);
  EXPECT_EQ(ErrnoOf(wr.BeginRmw(5 * kMiB - kUnit, kUnit, me)), EDEADLK);
  EXPECT_EQ(ErrnoOf(wr.BeginRmw(5 * kMiB, kUnit, me)), EDEADLK);
  OnOtherThread([&] { wr.EndDirect({&r, 1}, me); });
  for (uint64_t unit : {5 * kMiB - kUnit, 5 * kMiB}) {
    ASSERT_TRUE(wr.BeginRmw(unit, kUnit, me).ok());
    wr.EndRmw(unit, kUnit, me);
  }
}

}  // namespace
}  // namespace ext4dio
