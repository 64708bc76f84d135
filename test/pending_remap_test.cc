// PendingRemap (lib/pending_remap.h): which kernel-path ranges are still
// off the map, and which of them a re-map batch may forget.
#include "pending_remap.h"

#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ext4dio {
namespace {

TEST(PendingRemapTest, InFlightAndEndedRangesOverlapUntilRemapped) {
  PendingRemap p;
  EXPECT_TRUE(p.empty());
  EXPECT_FALSE(p.Overlaps(0, 1 << 20));
  p.Begin(4096, 8192);
  EXPECT_FALSE(p.empty());
  EXPECT_EQ(p.ended(), 0u);
  EXPECT_TRUE(p.Overlaps(0, 4097));
  EXPECT_TRUE(p.Overlaps(8191, 9000));
  EXPECT_FALSE(p.Overlaps(0, 4096));      // touching is not overlapping
  EXPECT_FALSE(p.Overlaps(8192, 12288));
  EXPECT_TRUE(p.Ended().ranges.empty());  // in flight: not for a re-map yet
  p.End(4096, 8192, /*clean=*/true);
  EXPECT_EQ(p.ended(), 1u);
  EXPECT_TRUE(p.Overlaps(5000, 5001));
  const PendingRemap::Batch b = p.Ended();
  ASSERT_EQ(b.ranges, (RangeList{{4096, 8192}}));
  EXPECT_TRUE(b.suspect.empty());
  p.Remapped(b);
  EXPECT_TRUE(p.empty());
  EXPECT_FALSE(p.Overlaps(0, 1 << 20));
}

TEST(PendingRemapTest, AWriteEndingAfterTheBatchWasTakenStaysPending) {
  PendingRemap p;
  p.Begin(0, 4096);
  p.End(0, 4096, true);
  p.Begin(4096, 8192);
  const PendingRemap::Batch b = p.Ended();  // FIEMAP would run now
  p.End(4096, 8192, true);                  // ...and miss this one
  p.Remapped(b);
  EXPECT_FALSE(p.Overlaps(0, 4096));
  EXPECT_TRUE(p.Overlaps(4096, 8192)) << "forgotten before any FIEMAP saw it";
  EXPECT_EQ(p.Ended().ranges, (RangeList{{4096, 8192}}));
  // The same range written again after a batch: the later write stays.
  p.Begin(0, 4096);
  p.End(0, 4096, true);
  const PendingRemap::Batch b2 = p.Ended();
  p.Begin(0, 4096);
  p.End(0, 4096, false);
  p.Remapped(b2);
  EXPECT_TRUE(p.Overlaps(0, 1));
  EXPECT_EQ(p.Ended().suspect, (RangeList{{0, 4096}}));
}

TEST(PendingRemapTest, RangesMergeAndSuspectOnesAreListed) {
  PendingRemap p;
  for (auto [lo, hi, clean] : std::vector<std::tuple<uint64_t, uint64_t, bool>>{
           {8192, 12288, true}, {0, 4096, false}, {4096, 8192, true}, {20000, 20100, false},
           {16384, 20000, true}}) {
    p.Begin(lo, hi);
    p.End(lo, hi, clean);
  }
  const PendingRemap::Batch b = p.Ended();
  EXPECT_EQ(b.ranges, (RangeList{{0, 12288}, {16384, 20100}}));
  EXPECT_EQ(b.suspect, (RangeList{{0, 4096}, {20000, 20100}}));
  EXPECT_TRUE(p.Overlaps(12287, 12288));
  EXPECT_FALSE(p.Overlaps(12288, 16384));
  p.Clear();
  EXPECT_TRUE(p.empty());
}

// Randomized against a byte-level model: after any sequence of begins,
// ends, batches and re-maps, Overlaps is true exactly where some write is in
// flight or ended after the last batch it could have been part of.
TEST(PendingRemapTest, OverlapsMatchesAModel) {
  std::mt19937_64 rng(7);
  constexpr uint64_t kUnits = 256, kUnit = 512;
  for (int round = 0; round < 50; ++round) {
    PendingRemap p;
    std::vector<int> live(kUnits, 0);  // writes in flight or not re-mapped, per unit
    struct W {
      uint64_t lo, hi;
      bool ended;
      uint64_t ended_at;
    };
    std::vector<W> writes;
    uint64_t clock = 0;
    std::vector<std::pair<PendingRemap::Batch, uint64_t>> batches;
    for (int step = 0; step < 400; ++step) {
      const int op = static_cast<int>(rng() % 10);
      if (op < 4) {
        const uint64_t lo = rng() % (kUnits - 8), hi = lo + 1 + rng() % 8;
        p.Begin(lo * kUnit, hi * kUnit);
        writes.push_back({lo, hi, false, 0});
        for (uint64_t u = lo; u < hi; ++u) ++live[u];
      } else if (op < 8) {
        for (W& w : writes) {
          if (!w.ended) {
            p.End(w.lo * kUnit, w.hi * kUnit, rng() % 2);
            w.ended = true;
            w.ended_at = ++clock;
            break;
          }
        }
      } else if (op == 8) {
        batches.emplace_back(p.Ended(), clock);
      } else if (!batches.empty()) {
        auto [b, at] = batches.back();
        batches.clear();  // older ones are covered by this one
        p.Remapped(b);
        for (W& w : writes) {
          if (w.ended && w.ended_at != 0 && w.ended_at <= at) {
            for (uint64_t u = w.lo; u < w.hi; ++u) --live[u];
            w.ended_at = 0;  // forgotten
            w.lo = w.hi = 0;
          }
        }
      }
      for (uint64_t u = 0; u < kUnits; ++u) {
        ASSERT_EQ(p.Overlaps(u * kUnit, (u + 1) * kUnit), live[u] > 0)
            << "round " << round << " step " << step << " unit " << u;
      }
    }
  }
}

TEST(PendingRemapTest, ConcurrentBeginsAndEnds) {
  PendingRemap p;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&p, t] {
      for (int i = 0; i < 2000; ++i) {
        const uint64_t lo = (uint64_t(t) << 32) + i * 4096;
        p.Begin(lo, lo + 4096);
        EXPECT_TRUE(p.Overlaps(lo, lo + 1));
        p.End(lo, lo + 4096, true);
        EXPECT_TRUE(p.Overlaps(lo, lo + 1));
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(p.ended(), 8000u);
  p.Remapped(p.Ended());
  EXPECT_TRUE(p.empty());
}

}  // namespace
}  // namespace ext4dio
