// Direct tests of the planner (lib/planner.h) on extent maps built in
// memory: which pieces a write or read becomes, what is refused and how it is
// named, and a randomized comparison of every plan against a byte-level
// model of the map (the single-extent fast path included).
#include "planner.h"

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "errors.h"
#include "extent_map.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ranges.h"

namespace ext4dio {

bool operator==(const Piece& a, const Piece& b) {
  return a.kind == b.kind && a.file_offset == b.file_offset && a.length == b.length &&
         a.device_offset == b.device_offset;
}
void PrintTo(const Piece& p, std::ostream* os) {
  *os << "{" << PieceKindName(p.kind) << " file " << p.file_offset << " +" << p.length
      << " dev " << p.device_offset << "}";
}

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kB = 4096;

Piece P(Piece::Kind kind, uint64_t file_offset, uint64_t length, uint64_t device_offset = 0) {
  return Piece{kind, file_offset, length, device_offset};
}

ExtentMap MustBuild(uint64_t file_size, const std::vector<Extent>& extents,
                    uint32_t block_size = kB, uint64_t device_offset = 0) {
  auto map = ExtentMap::Build(MapGeometry{block_size, device_offset, file_size}, extents);
  if (!map.ok()) {
    ADD_FAILURE() << "Build failed: " << map.status();
    return ExtentMap();
  }
  return *std::move(map);
}

std::vector<Piece> MustPlanWrite(const ExtentMap& map, uint64_t off, uint64_t len,
                                 const PlanOptions& o = {}) {
  auto plan = PlanWrite(map, WrittenSet(map), off, len, o);
  if (!plan.ok()) {
    ADD_FAILURE() << "PlanWrite(" << off << ", " << len << "): " << plan.status();
    return {};
  }
  return *std::move(plan);
}

std::vector<Piece> MustPlanRead(const ExtentMap& map, uint64_t off, uint64_t len,
                                const PlanOptions& o = {}) {
  auto plan = PlanRead(map, off, len, o);
  if (!plan.ok()) {
    ADD_FAILURE() << "PlanRead(" << off << ", " << len << "): " << plan.status();
    return {};
  }
  return *std::move(plan);
}

// A file of 16 blocks: 0-3 written at physical 100, 4-5 a hole, 6-7
// unwritten at physical 200, 8-11 written at physical 300, 12-15 written at
// physical 304 (contiguous with the previous one); size 15.5 blocks.
ExtentMap Mixed() {
  return MustBuild(15 * kB + kB / 2, {{0, 100, 4, false},
                                      {6, 200, 2, true},
                                      {8, 300, 4, false},
                                      {12, 304, 4, false}});
}

// ---------------------------------------------------------------------------
// WrittenSet and WritableUntil.

TEST(WrittenSetTest, ContainsOnlyWrittenExtentsMergedAcrossNeighbours) {
  const ExtentMap map = Mixed();
  const WrittenSet w(map);
  EXPECT_TRUE(w.Contains(100 * kB, 4 * kB));
  EXPECT_FALSE(w.Contains(100 * kB, 4 * kB + 1));
  EXPECT_FALSE(w.Contains(100 * kB - 1, 2));
  EXPECT_FALSE(w.Contains(200 * kB, 1));  // unwritten
  // 300..303 and 304..307 are one range.
  EXPECT_TRUE(w.Contains(303 * kB, 2 * kB));
  EXPECT_TRUE(w.Contains(300 * kB, 8 * kB));
  EXPECT_FALSE(w.Contains(300 * kB, 8 * kB + 1));
  EXPECT_TRUE(w.Contains(12345, 0));            // empty: trivially inside
  EXPECT_FALSE(w.Contains(UINT64_MAX - 1, 4));  // overflow
}

TEST(WrittenSetTest, CountsTheFilesystemOffsetOnTheDevice) {
  const ExtentMap map = MustBuild(4 * kB, {{0, 10, 4, false}}, kB, /*device_offset=*/1 << 20);
  const WrittenSet w(map);
  EXPECT_TRUE(w.Contains((1 << 20) + 10 * kB, 4 * kB));
  EXPECT_FALSE(w.Contains(10 * kB, 4 * kB));
}

TEST(WritableUntilTest, StopsAtTheFirstHoleUnwrittenOrEof) {
  const ExtentMap map = Mixed();
  EXPECT_EQ(WritableUntil(map, 0, 4 * kB), 4 * kB);
  EXPECT_EQ(WritableUntil(map, 100, 10 * kB), 4 * kB);   // the hole
  EXPECT_EQ(WritableUntil(map, 6 * kB, kB), 6 * kB);     // unwritten
  EXPECT_EQ(WritableUntil(map, 8 * kB, 20 * kB), 15 * kB + kB / 2);  // EOF
  EXPECT_EQ(WritableUntil(map, 8 * kB, 7 * kB), 15 * kB);
  EXPECT_EQ(WritableUntil(map, 100 * kB, 10), 100 * kB);  // past EOF
}

// ---------------------------------------------------------------------------
// Writes.

TEST(PlanWriteTest, AlignedOverwriteIsOneDirectPiece) {
  const ExtentMap map = Mixed();
  EXPECT_THAT(MustPlanWrite(map, kB, 2 * kB), ElementsAre(P(Piece::kDirect, kB, 2 * kB, 101 * kB)));
  // Across two physically contiguous extents: still one piece.
  EXPECT_THAT(MustPlanWrite(map, 10 * kB, 4 * kB),
              ElementsAre(P(Piece::kDirect, 10 * kB, 4 * kB, 302 * kB)));
}

TEST(PlanWriteTest, ZeroLengthIsNoPieces) {
  const ExtentMap map = Mixed();
  EXPECT_THAT(MustPlanWrite(map, 5 * kB, 0), IsEmpty());   // even in the hole
  EXPECT_THAT(MustPlanWrite(map, 99 * kB, 0), IsEmpty());  // even past EOF
}

TEST(PlanWriteTest, OverflowIsEinval) {
  const ExtentMap map = Mixed();
  auto plan = PlanWrite(map, WrittenSet(map), UINT64_MAX - 10, 20, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(CodeOf(plan.status()), -EINVAL);
}

TEST(PlanWriteTest, UnalignedBytesInsideTheFileAreReadModifyWrite) {
  const ExtentMap map = Mixed();
  // 100 bytes into block 0 up to 100 bytes into block 3: head, body, tail.
  EXPECT_THAT(MustPlanWrite(map, 100, 3 * kB),
              ElementsAre(P(Piece::kRmw, 100, kB - 100, 100 * kB + 100),
                          P(Piece::kDirect, kB, 2 * kB, 101 * kB),
                          P(Piece::kRmw, 3 * kB, 100, 103 * kB)));
  // Inside one unit.
  EXPECT_THAT(MustPlanWrite(map, 10, 20), ElementsAre(P(Piece::kRmw, 10, 20, 100 * kB + 10)));
  // The partial last block: the unit is a whole written block, so RMW.
  EXPECT_THAT(MustPlanWrite(map, 15 * kB, kB / 2),
              ElementsAre(P(Piece::kRmw, 15 * kB, kB / 2, 307 * kB)));
}

TEST(PlanWriteTest, UnalignedBytesWhoseUnitLeavesTheFileAreBuffered) {
  // 1 KiB blocks on a device of 4 KiB units: blocks 5..7 (device 5120..8191)
  // and 8..11 (8192..12287) are written, 4..4 is not the file's.
  const ExtentMap map = MustBuild(7 * 1024, {{0, 5, 7, false}}, 1024);
  EXPECT_THAT(MustPlanWrite(map, 0, 7 * 1024),
              ElementsAre(P(Piece::kBuffered, 0, 3 * 1024, 5 * 1024),
                          P(Piece::kDirect, 3 * 1024, 4 * 1024, 8 * 1024)));
  // Mounted mode: the same bytes through the kernel.
  PlanOptions o;
  o.kernel_path = true;
  EXPECT_THAT(MustPlanWrite(map, 0, 7 * 1024, o),
              ElementsAre(P(Piece::kKernel, 0, 3 * 1024),
                          P(Piece::kDirect, 3 * 1024, 4 * 1024, 8 * 1024)));
}

TEST(PlanWriteTest, SplitsDirectPiecesAtMaxIo) {
  const ExtentMap map = MustBuild(64 * kB, {{0, 1000, 64, false}});
  PlanOptions o;
  o.max_io = 16 * kB + 100;  // rounded down to the alignment
  const std::vector<Piece> plan = MustPlanWrite(map, 0, 40 * kB, o);
  EXPECT_THAT(plan, ElementsAre(P(Piece::kDirect, 0, 16 * kB, 1000 * kB),
                                P(Piece::kDirect, 16 * kB, 16 * kB, 1016 * kB),
                                P(Piece::kDirect, 32 * kB, 8 * kB, 1032 * kB)));
  o.max_io = 100;  // less than one unit: one unit each
  EXPECT_EQ(MustPlanWrite(map, 0, 3 * kB, o).size(), 3u);
}

TEST(PlanWriteTest, HoleIsRefusedNamingTheFirstRange) {
  const ExtentMap map = Mixed();
  auto plan = PlanWrite(map, WrittenSet(map), 2 * kB, 10 * kB, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(CodeOf(plan.status()), -EXT4DIO_E_NEEDS_ALLOCATION);
  EXPECT_THAT(plan.status().message(),
              HasSubstr(absl::StrFormat("bytes %d..%d are a hole", 4 * kB, 6 * kB - 1)));
  EXPECT_THAT(plan.status().message(), HasSubstr("image mode cannot do"));
}

TEST(PlanWriteTest, UnwrittenIsRefusedWithTheCallersReason) {
  const ExtentMap map = Mixed();
  PlanOptions o;
  o.refusal = "nobody can do here";
  auto plan = PlanWrite(map, WrittenSet(map), 6 * kB + 1, kB, o);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(CodeOf(plan.status()), -EXT4DIO_E_NEEDS_ALLOCATION);
  EXPECT_THAT(plan.status().message(),
              HasSubstr(absl::StrFormat("bytes %d..%d are an unwritten (preallocated) extent",
                                        6 * kB + 1, 7 * kB)));
  EXPECT_THAT(plan.status().message(), HasSubstr("nobody can do here"));
}

TEST(PlanWriteTest, PastEofIsRefusedNamingTheSize) {
  const ExtentMap map = Mixed();
  auto plan = PlanWrite(map, WrittenSet(map), 15 * kB, kB, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(CodeOf(plan.status()), -EXT4DIO_E_NEEDS_ALLOCATION);
  EXPECT_THAT(plan.status().message(),
              HasSubstr(absl::StrFormat("bytes %d..%d are past end of file (size %d)",
                                        15 * kB + kB / 2, 16 * kB - 1, 15 * kB + kB / 2)));
}

TEST(PlanWriteTest, ShowRefusedListsEveryRangeInsteadOfFailing) {
  const ExtentMap map = Mixed();
  PlanOptions o;
  o.show_refused = true;
  EXPECT_THAT(MustPlanWrite(map, 3 * kB, 14 * kB, o),
              ElementsAre(P(Piece::kDirect, 3 * kB, kB, 103 * kB),
                          P(Piece::kRefused, 4 * kB, 2 * kB),
                          P(Piece::kRefused, 6 * kB, 2 * kB),
                          P(Piece::kDirect, 8 * kB, 7 * kB, 300 * kB),
                          P(Piece::kRmw, 15 * kB, kB / 2, 307 * kB),
                          P(Piece::kRefused, 15 * kB + kB / 2, 17 * kB - (15 * kB + kB / 2))));
}

TEST(PlanWriteTest, KernelPathMergesAdjacentKernelPieces) {
  const ExtentMap map = Mixed();
  PlanOptions o;
  o.kernel_path = true;
  // The hole and the unwritten extent are one kernel piece; past EOF joins
  // nothing (a written stretch comes between).
  EXPECT_THAT(MustPlanWrite(map, 3 * kB, 14 * kB, o),
              ElementsAre(P(Piece::kDirect, 3 * kB, kB, 103 * kB),
                          P(Piece::kKernel, 4 * kB, 4 * kB),
                          P(Piece::kDirect, 8 * kB, 7 * kB, 300 * kB),
                          P(Piece::kRmw, 15 * kB, kB / 2, 307 * kB),
                          P(Piece::kKernel, 15 * kB + kB / 2, 17 * kB - (15 * kB + kB / 2))));
  // Wholly past EOF: one kernel piece.
  EXPECT_THAT(MustPlanWrite(map, 20 * kB, 5, o), ElementsAre(P(Piece::kKernel, 20 * kB, 5)));
}

TEST(PlanWriteTest, KernelPathMergesBufferedBytesWithTheHoleNextToThem) {
  // 1 KiB blocks: block 0 written at physical 5 (its unit 4096..8191 is not
  // all the file's), block 1 a hole. Unaligned bytes of block 0 and the hole
  // form one kernel piece.
  const ExtentMap map = MustBuild(2 * 1024, {{0, 5, 1, false}}, 1024);
  PlanOptions o;
  o.kernel_path = true;
  EXPECT_THAT(MustPlanWrite(map, 0, 2 * 1024, o), ElementsAre(P(Piece::kKernel, 0, 2 * 1024)));
}

TEST(PlanWriteTest, KernelOnlyRangesGoThroughTheKernelEvenWhereMapped) {
  const ExtentMap map = Mixed();
  const RangeList pinned = {{kB, 2 * kB}, {9 * kB, 11 * kB}};
  PlanOptions o;
  o.kernel_path = true;
  o.kernel_only = &pinned;
  EXPECT_THAT(MustPlanWrite(map, 0, 4 * kB, o),
              ElementsAre(P(Piece::kDirect, 0, kB, 100 * kB), P(Piece::kKernel, kB, kB),
                          P(Piece::kDirect, 2 * kB, 2 * kB, 102 * kB)));
  // A pinned range inside an extent splits it.
  EXPECT_THAT(MustPlanWrite(map, 8 * kB, 4 * kB, o),
              ElementsAre(P(Piece::kDirect, 8 * kB, kB, 300 * kB),
                          P(Piece::kKernel, 9 * kB, 2 * kB),
                          P(Piece::kDirect, 11 * kB, kB, 303 * kB)));
  // Small and aligned inside a pinned range: not the fast path's one piece.
  EXPECT_THAT(MustPlanWrite(map, kB, kB, o), ElementsAre(P(Piece::kKernel, kB, kB)));
}

TEST(PlanWriteTest, KernelOnlyRangesWithoutKernelPathAreRefused) {
  const ExtentMap map = Mixed();
  const RangeList pinned = {{kB, 2 * kB}};
  PlanOptions o;
  o.kernel_only = &pinned;
  auto plan = PlanWrite(map, WrittenSet(map), 0, 4 * kB, o);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(CodeOf(plan.status()), -EXT4DIO_E_NEEDS_ALLOCATION);
  EXPECT_THAT(plan.status().message(),
              HasSubstr(absl::StrFormat("bytes %d..%d are held in the page cache", kB,
                                        2 * kB - 1)));
  o.show_refused = true;
  EXPECT_THAT(MustPlanWrite(map, 0, 4 * kB, o),
              ElementsAre(P(Piece::kDirect, 0, kB, 100 * kB), P(Piece::kRefused, kB, kB),
                          P(Piece::kDirect, 2 * kB, 2 * kB, 102 * kB)));
}

TEST(PlanWriteTest, IntoReusesTheVectorAndClearsIt) {
  const ExtentMap map = Mixed();
  const WrittenSet w(map);
  std::vector<Piece> out;
  out.reserve(64);
  out.push_back(P(Piece::kEof, 1, 2));
  const Piece* const data = out.data();
  ASSERT_TRUE(PlanWriteInto(map, w, 100, 3 * kB, {}, &out).ok());
  EXPECT_EQ(out.size(), 3u);
  EXPECT_EQ(out.data(), data);  // no reallocation
  ASSERT_TRUE(PlanWriteInto(map, w, 0, kB, {}, &out).ok());
  EXPECT_THAT(out, ElementsAre(P(Piece::kDirect, 0, kB, 100 * kB)));
  EXPECT_EQ(out.data(), data);
  ASSERT_TRUE(PlanWriteInto(map, w, 0, 0, {}, &out).ok());
  EXPECT_THAT(out, IsEmpty());
  // A refusal leaves nothing of the previous plan behind.
  out.push_back(P(Piece::kEof, 1, 2));
  EXPECT_FALSE(PlanWriteInto(map, w, 0, 5 * kB, {}, &out).ok());
  for (const Piece& p : out) EXPECT_NE(p.kind, Piece::kEof);
}

// ---------------------------------------------------------------------------
// Reads.

TEST(PlanReadTest, DirectZeroAndEof) {
  const ExtentMap map = Mixed();
  EXPECT_THAT(MustPlanRead(map, 3 * kB + 7, 20 * kB),
              ElementsAre(P(Piece::kDirect, 3 * kB + 7, kB - 7, 103 * kB + 7),
                          P(Piece::kZero, 4 * kB, 2 * kB), P(Piece::kZero, 6 * kB, 2 * kB),
                          P(Piece::kDirect, 8 * kB, 7 * kB + kB / 2, 300 * kB),
                          P(Piece::kEof, 15 * kB + kB / 2, 3 * kB + 7 + 20 * kB -
                                                               (15 * kB + kB / 2))));
}

TEST(PlanReadTest, ShortAtEofAndNothingButEofPastIt) {
  const ExtentMap map = Mixed();
  EXPECT_THAT(MustPlanRead(map, 15 * kB, kB),
              ElementsAre(P(Piece::kDirect, 15 * kB, kB / 2, 307 * kB),
                          P(Piece::kEof, 15 * kB + kB / 2, kB / 2)));
  EXPECT_THAT(MustPlanRead(map, 50 * kB, 10), ElementsAre(P(Piece::kEof, 50 * kB, 10)));
  EXPECT_THAT(MustPlanRead(map, 50 * kB, 0), IsEmpty());
  auto over = PlanRead(map, UINT64_MAX, 2, {});
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(CodeOf(over.status()), -EINVAL);
}

TEST(PlanReadTest, SplitsAtMaxIoAndReusesTheVector) {
  const ExtentMap map = MustBuild(64 * kB, {{0, 1000, 64, false}});
  PlanOptions o;
  o.max_io = 10000;
  std::vector<Piece> out;
  out.reserve(16);
  const Piece* const data = out.data();
  ASSERT_TRUE(PlanReadInto(map, 1, 25000, o, &out).ok());
  EXPECT_THAT(out, ElementsAre(P(Piece::kDirect, 1, 10000, 1000 * kB + 1),
                               P(Piece::kDirect, 10001, 10000, 1000 * kB + 10001),
                               P(Piece::kDirect, 20001, 5000, 1000 * kB + 20001)));
  EXPECT_EQ(out.data(), data);
  ASSERT_TRUE(PlanReadInto(map, 0, 0, o, &out).ok());
  EXPECT_THAT(out, IsEmpty());
}

// ---------------------------------------------------------------------------
// Randomized: every plan against a byte-level model of the map.

struct Model {
  // Per file byte: its kind, and its device byte (kMapped, kUnwritten).
  std::vector<SegmentKind> kind;
  std::vector<uint64_t> dev;
  // Device bytes of written extents (sorted, merged).
  RangeList written;
  uint64_t size = 0;

  bool Written(uint64_t lo, uint64_t hi) const {
    for (const auto& r : written)
      if (r.first <= lo && hi <= r.second) return true;
    return false;
  }
  SegmentKind KindAt(uint64_t f) const { return f < size ? kind[f] : SegmentKind::kPastEof; }
};

Model MakeModel(const MapGeometry& g, const std::vector<Extent>& extents) {
  Model m;
  m.size = g.file_size;
  m.kind.assign(g.file_size, SegmentKind::kHole);
  m.dev.assign(g.file_size, 0);
  for (const Extent& e : extents) {
    const uint64_t dev0 = g.device_offset + e.physical * g.block_size;
    for (uint64_t i = 0; i < uint64_t{e.length} * g.block_size; ++i) {
      const uint64_t f = e.logical * g.block_size + i;
      if (f >= g.file_size) break;
      m.kind[f] = e.unwritten ? SegmentKind::kUnwritten : SegmentKind::kMapped;
      m.dev[f] = dev0 + i;
    }
    if (!e.unwritten)
      m.written.emplace_back(dev0, dev0 + uint64_t{e.length} * g.block_size);
  }
  SortAndMerge(m.written);
  return m;
}

// Checks that `plan` is a correct write plan of [off, off + len) for the
// model under `o`, or that `status` is the right refusal.
void CheckWrite(const Model& m, uint64_t off, uint64_t len, const PlanOptions& o,
                const absl::Status& status, const std::vector<Piece>& plan) {
  const uint64_t a = o.alignment.offset;
  const uint64_t max_io = std::max<uint64_t>(a, o.max_io / a * a);
  uint64_t first_bad = off + len;
  for (uint64_t f = off; f < off + len; ++f) {
    if (m.KindAt(f) != SegmentKind::kMapped) {
      first_bad = f;
      break;
    }
  }
  if (!o.kernel_path && !o.show_refused && first_bad < off + len) {
    ASSERT_FALSE(status.ok()) << "bytes " << first_bad << " not mapped";
    EXPECT_EQ(CodeOf(status), -EXT4DIO_E_NEEDS_ALLOCATION);
    EXPECT_THAT(status.message(), HasSubstr(absl::StrFormat("bytes %d..", first_bad)));
    return;
  }
  ASSERT_TRUE(status.ok()) << status;
  uint64_t pos = off;
  for (size_t i = 0; i < plan.size(); ++i) {
    const Piece& p = plan[i];
    SCOPED_TRACE(::testing::PrintToString(p));
    ASSERT_EQ(p.file_offset, pos);
    ASSERT_GT(p.length, 0u);
    pos += p.length;
    switch (p.kind) {
      case Piece::kDirect:
        EXPECT_EQ(p.device_offset % a, 0u);
        EXPECT_EQ(p.length % a, 0u);
        EXPECT_LE(p.length, max_io);
        break;
      case Piece::kRmw:
      case Piece::kBuffered: {
        const uint64_t unit = p.device_offset / a * a;
        EXPECT_LE(p.device_offset + p.length, unit + a) << "leaves its unit";
        // Unaligned: not a whole unit.
        EXPECT_FALSE(p.device_offset % a == 0 && p.length == a);
        EXPECT_EQ(p.kind == Piece::kRmw, m.Written(unit, unit + a));
        EXPECT_FALSE(o.kernel_path && p.kind == Piece::kBuffered);
        break;
      }
      case Piece::kKernel:
        EXPECT_TRUE(o.kernel_path);
        if (i > 0) EXPECT_NE(plan[i - 1].kind, Piece::kKernel) << "not merged";
        break;
      case Piece::kRefused:
        EXPECT_TRUE(o.show_refused && !o.kernel_path);
        break;
      default:
        ADD_FAILURE() << "a write plan with " << PieceKindName(p.kind);
    }
    for (uint64_t b = 0; b < p.length; ++b) {
      const uint64_t f = p.file_offset + b;
      const SegmentKind k = m.KindAt(f);
      if (p.kind == Piece::kRefused) {
        ASSERT_NE(k, SegmentKind::kMapped) << "byte " << f;
      } else if (p.kind == Piece::kKernel) {
        if (k == SegmentKind::kMapped) {
          // Only unaligned bytes whose unit is not all the file's.
          const uint64_t unit = m.dev[f] / a * a;
          ASSERT_FALSE(m.Written(unit, unit + a)) << "byte " << f << " could go direct";
        }
      } else {
        ASSERT_EQ(k, SegmentKind::kMapped) << "byte " << f;
        ASSERT_EQ(m.dev[f], p.device_offset + b) << "byte " << f;
      }
    }
  }
  EXPECT_EQ(pos, off + len) << "the plan does not cover the request";
}

void CheckRead(const Model& m, uint64_t off, uint64_t len, const PlanOptions& o,
               const std::vector<Piece>& plan) {
  const uint64_t max_io = std::max<uint64_t>(o.alignment.offset, o.max_io);
  uint64_t pos = off;
  for (size_t i = 0; i < plan.size(); ++i) {
    const Piece& p = plan[i];
    SCOPED_TRACE(::testing::PrintToString(p));
    ASSERT_EQ(p.file_offset, pos);
    ASSERT_GT(p.length, 0u);
    pos += p.length;
    if (p.kind == Piece::kEof) {
      EXPECT_EQ(i + 1, plan.size()) << "kEof is the last piece";
      EXPECT_EQ(p.file_offset, std::max(off, m.size));
      EXPECT_EQ(pos, off + len);
      return;
    }
    if (p.kind == Piece::kDirect) EXPECT_LE(p.length, max_io);
    for (uint64_t b = 0; b < p.length; ++b) {
      const uint64_t f = p.file_offset + b;
      const SegmentKind k = m.KindAt(f);
      if (p.kind == Piece::kZero) {
        ASSERT_TRUE(k == SegmentKind::kHole || k == SegmentKind::kUnwritten) << "byte " << f;
      } else {
        ASSERT_EQ(p.kind, Piece::kDirect);
        ASSERT_EQ(k, SegmentKind::kMapped) << "byte " << f;
        ASSERT_EQ(m.dev[f], p.device_offset + b) << "byte " << f;
      }
    }
  }
  EXPECT_EQ(pos, off + len);
  EXPECT_LE(off + len, m.size) << "ends past EOF without kEof";
}

TEST(PlannerRandomTest, EveryPlanAgreesWithTheByteModel) {
  std::mt19937_64 rng(20261201);
  auto uniform = [&](uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  };
  int fast_checked = 0;
  for (int round = 0; round < 100; ++round) {
    // 1 KiB blocks with a 4 KiB unit make unaligned extents; a filesystem
    // offset of 512 makes every block unaligned.
    MapGeometry g;
    g.block_size = uniform(0, 2) == 0 ? 1024 : 4096;
    g.device_offset = uniform(0, 4) == 0 ? 512 : 0;
    const uint64_t blocks = uniform(1, 32);
    g.file_size = uniform(0, 3) == 0 ? blocks * g.block_size
                                     : uniform((blocks - 1) * g.block_size + 1,
                                               blocks * g.block_size);
    std::vector<Extent> extents;
    uint64_t phys = uniform(0, 8);
    for (uint64_t l = 0; l < blocks + 2;) {
      const uint32_t n = static_cast<uint32_t>(uniform(1, 6));
      const uint64_t what = uniform(0, 9);
      if (what < 7) {
        // Sometimes physically contiguous with the last one.
        if (uniform(0, 2) != 0) phys += uniform(1, 20);
        extents.push_back(Extent{l, phys, n, what == 6});
        phys += n;
      }
      l += n;
    }
    const ExtentMap map = MustBuild(g.file_size, extents, g.block_size, g.device_offset);
    const WrittenSet written(map);
    const Model m = MakeModel(g, extents);
    std::vector<Piece> out, general;
    for (int q = 0; q < 40; ++q) {
      const uint64_t span = (blocks + 2) * g.block_size;
      uint64_t off = uniform(0, span);
      uint64_t len = uniform(0, 4) == 0 ? uniform(0, span) : uniform(1, 3 * g.block_size);
      if (uniform(0, 1) == 0) {  // aligned requests: the fast path's case
        off = off / 4096 * 4096;
        len = std::max<uint64_t>(len / 4096 * 4096, 4096);
      }
      PlanOptions o;
      o.max_io = uniform(0, 1) == 0 ? 1 << 20 : uniform(1, 5) * 4096 + uniform(0, 1) * 100;
      o.kernel_path = uniform(0, 2) == 0;
      o.show_refused = uniform(0, 2) == 0;
      SCOPED_TRACE(absl::StrFormat(
          "round %d: bs %d devoff %d size %d; write %d+%d max_io %d kernel %d refused %d", round,
          g.block_size, g.device_offset, g.file_size, off, len, o.max_io, o.kernel_path,
          o.show_refused));
      const absl::Status s = PlanWriteInto(map, written, off, len, o, &out);
      CheckWrite(m, off, len, o, s, out);
      // The same request with an empty-but-present kernel_only list far
      // away takes the general path: both must plan the same pieces.
      const RangeList far = {{uint64_t{1} << 50, (uint64_t{1} << 50) + 4096}};
      PlanOptions og = o;
      og.kernel_only = &far;
      const absl::Status sg = PlanWriteInto(map, written, off, len, og, &general);
      EXPECT_EQ(s.ok(), sg.ok());
      if (s.ok() && sg.ok()) {
        EXPECT_EQ(out, general);
        if (out.size() == 1 && out[0].kind == Piece::kDirect && len <= o.max_io) ++fast_checked;
      }
      if (!o.show_refused && !o.kernel_path) {
        const uint64_t until = WritableUntil(map, off, len);
        EXPECT_EQ(s.ok(), until == off + len);
        uint64_t want = off + len;
        for (uint64_t f = off; f < off + len; ++f) {
          if (m.KindAt(f) != SegmentKind::kMapped) {
            want = f;
            break;
          }
        }
        EXPECT_EQ(until, want);
      }
      ASSERT_TRUE(PlanReadInto(map, off, len, o, &out).ok());
      CheckRead(m, off, len, o, out);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
  // The fast path was really compared, many times.
  EXPECT_GT(fast_checked, 200) << fast_checked;
  std::printf("fast path compared %d times\n", fast_checked);
}

}  // namespace
}  // namespace ext4dio
