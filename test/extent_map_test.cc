#include "extent_map.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ext4dio {

// Readable failure messages.
void PrintTo(SegmentKind kind, std::ostream* os) {
  switch (kind) {
    case SegmentKind::kMapped:
      *os << "kMapped";
      return;
    case SegmentKind::kUnwritten:
      *os << "kUnwritten";
      return;
    case SegmentKind::kHole:
      *os << "kHole";
      return;
    case SegmentKind::kPastEof:
      *os << "kPastEof";
      return;
  }
  *os << "SegmentKind(" << static_cast<int>(kind) << ")";
}
void PrintTo(const Segment& s, std::ostream* os) {
  *os << "{";
  PrintTo(s.kind, os);
  *os << " [" << s.offset << ", +" << s.length << ") dev " << s.device_offset
      << "}";
}
void PrintTo(const Extent& e, std::ostream* os) {
  *os << "{logical " << e.logical << " physical " << e.physical << " length "
      << e.length << (e.unwritten ? " unwritten}" : "}");
}

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kMax64 = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kB = 4096;  // default block size in these tests

Segment Mapped(uint64_t offset, uint64_t length, uint64_t device_offset) {
  return Segment{offset, length, device_offset, SegmentKind::kMapped};
}
Segment Unwritten(uint64_t offset, uint64_t length, uint64_t device_offset) {
  return Segment{offset, length, device_offset, SegmentKind::kUnwritten};
}
Segment Hole(uint64_t offset, uint64_t length) {
  return Segment{offset, length, 0, SegmentKind::kHole};
}
Segment PastEof(uint64_t offset, uint64_t length) {
  return Segment{offset, length, 0, SegmentKind::kPastEof};
}

MapGeometry Geometry(uint64_t file_size, uint32_t block_size = kB,
                     uint64_t device_offset = 0) {
  MapGeometry g;
  g.block_size = block_size;
  g.device_offset = device_offset;
  g.file_size = file_size;
  return g;
}

ExtentMap MustBuild(const MapGeometry& g, const std::vector<Extent>& extents) {
  absl::StatusOr<ExtentMap> map = ExtentMap::Build(g, extents);
  if (!map.ok()) {
    ADD_FAILURE() << "Build failed: " << map.status();
    return ExtentMap();
  }
  return *std::move(map);
}

std::vector<Segment> MustQuery(const ExtentMap& map, uint64_t offset,
                               uint64_t length) {
  absl::StatusOr<std::vector<Segment>> segments = map.Query(offset, length);
  if (!segments.ok()) {
    ADD_FAILURE() << "Query(" << offset << ", " << length
                  << ") failed: " << segments.status();
    return {};
  }
  return *std::move(segments);
}

absl::Status BuildStatus(const MapGeometry& g,
                         const std::vector<Extent>& extents) {
  return ExtentMap::Build(g, extents).status();
}

// ---------------------------------------------------------------------------
// Empty maps and empty files.

TEST(ExtentMapTest, DefaultConstructedMapIsAnEmptyFileWith4KBlocks) {
  ExtentMap map;
  EXPECT_EQ(map.extent_count(), 0u);
  EXPECT_EQ(map.file_size(), 0u);
  EXPECT_EQ(map.block_size(), 4096u);
  EXPECT_EQ(map.FindFloor(0), -1);
  EXPECT_EQ(map.FindFloor(kMax64), -1);
  EXPECT_EQ(map.MemoryBytes(), 0u);
  EXPECT_EQ(map.SegmentAt(5, 10), PastEof(5, 10));
  EXPECT_THAT(MustQuery(map, 0, 100), ElementsAre(PastEof(0, 100)));
}

TEST(ExtentMapTest, EmptyFileQueriesArePastEof) {
  ExtentMap map = MustBuild(Geometry(0), {});
  EXPECT_EQ(map.extent_count(), 0u);
  EXPECT_THAT(MustQuery(map, 0, kB), ElementsAre(PastEof(0, kB)));
  EXPECT_EQ(map.SegmentAt(0, 1), PastEof(0, 1));
}

TEST(ExtentMapTest, FileWithoutExtentsIsOneHoleUpToFileSize) {
  ExtentMap map = MustBuild(Geometry(10000), {});
  EXPECT_EQ(map.FindFloor(0), -1);
  EXPECT_THAT(MustQuery(map, 0, 20000),
              ElementsAre(Hole(0, 10000), PastEof(10000, 10000)));
  EXPECT_EQ(map.SegmentAt(123, kMax64 - 123), Hole(123, 10000 - 123));
}

TEST(ExtentMapTest, ZeroLengthQueryIsEmpty) {
  ExtentMap map = MustBuild(Geometry(4 * kB), {{0, 100, 4, false}});
  EXPECT_THAT(MustQuery(map, 0, 0), IsEmpty());
  EXPECT_THAT(MustQuery(map, 2 * kB + 1, 0), IsEmpty());
  EXPECT_THAT(MustQuery(map, 100 * kB, 0), IsEmpty());
  // No overflow check applies to an empty range.
  EXPECT_THAT(MustQuery(map, kMax64, 0), IsEmpty());
}

// ---------------------------------------------------------------------------
// Segment boundaries.

TEST(ExtentMapTest, SplitsHoleThenMapped) {
  ExtentMap map = MustBuild(Geometry(5 * kB), {{2, 100, 3, false}});
  EXPECT_THAT(MustQuery(map, 0, 5 * kB),
              ElementsAre(Hole(0, 2 * kB), Mapped(2 * kB, 3 * kB, 100 * kB)));
  EXPECT_EQ(map.SegmentAt(0, 5 * kB), Hole(0, 2 * kB));
  EXPECT_EQ(map.SegmentAt(2 * kB - 1, 5 * kB), Hole(2 * kB - 1, 1));
  EXPECT_EQ(map.SegmentAt(2 * kB, 5 * kB), Mapped(2 * kB, 3 * kB, 100 * kB));
}

TEST(ExtentMapTest, SplitsMappedThenUnwrittenEvenWhenPhysicallyContiguous) {
  ExtentMap map =
      MustBuild(Geometry(4 * kB), {{0, 100, 2, false}, {2, 102, 2, true}});
  EXPECT_THAT(MustQuery(map, 0, 4 * kB),
              ElementsAre(Mapped(0, 2 * kB, 100 * kB),
                          Unwritten(2 * kB, 2 * kB, 102 * kB)));
  EXPECT_EQ(map.SegmentAt(kB, 4 * kB), Mapped(kB, kB, 101 * kB));
}

TEST(ExtentMapTest, SplitsUnwrittenThenMappedEvenWhenPhysicallyContiguous) {
  ExtentMap map =
      MustBuild(Geometry(4 * kB), {{0, 100, 2, true}, {2, 102, 2, false}});
  EXPECT_THAT(MustQuery(map, 0, 4 * kB),
              ElementsAre(Unwritten(0, 2 * kB, 100 * kB),
                          Mapped(2 * kB, 2 * kB, 102 * kB)));
}

TEST(ExtentMapTest, SplitsMappedThenHole) {
  ExtentMap map = MustBuild(Geometry(4 * kB), {{0, 100, 2, false}});
  EXPECT_THAT(MustQuery(map, 0, 4 * kB),
              ElementsAre(Mapped(0, 2 * kB, 100 * kB), Hole(2 * kB, 2 * kB)));
  EXPECT_EQ(map.SegmentAt(2 * kB, kB), Hole(2 * kB, kB));
}

TEST(ExtentMapTest, SplitsHoleBetweenTwoExtents) {
  ExtentMap map =
      MustBuild(Geometry(6 * kB), {{0, 100, 2, false}, {4, 200, 2, false}});
  EXPECT_THAT(MustQuery(map, 0, 6 * kB),
              ElementsAre(Mapped(0, 2 * kB, 100 * kB), Hole(2 * kB, 2 * kB),
                          Mapped(4 * kB, 2 * kB, 200 * kB)));
  EXPECT_EQ(map.SegmentAt(3 * kB + 7, kMax64 - 4 * kB),
            Hole(3 * kB + 7, kB - 7));
}

TEST(ExtentMapTest, SplitsUnwrittenThenPastEof) {
  ExtentMap map = MustBuild(Geometry(4 * kB), {{0, 50, 4, true}});
  EXPECT_THAT(MustQuery(map, 0, 5 * kB),
              ElementsAre(Unwritten(0, 4 * kB, 50 * kB), PastEof(4 * kB, kB)));
}

TEST(ExtentMapTest, SplitsMappedThenPastEofInsidePartialLastBlock) {
  const uint64_t size = 2 * kB + 100;
  ExtentMap map = MustBuild(Geometry(size), {{0, 10, 3, false}});
  EXPECT_THAT(
      MustQuery(map, 0, 3 * kB),
      ElementsAre(Mapped(0, size, 10 * kB), PastEof(size, 3 * kB - size)));
  EXPECT_EQ(map.SegmentAt(2 * kB, kB), Mapped(2 * kB, 100, 12 * kB));
  EXPECT_EQ(map.SegmentAt(size - 1, kB),
            Mapped(size - 1, 1, 10 * kB + size - 1));
  EXPECT_EQ(map.SegmentAt(size, kB), PastEof(size, kB));
}

TEST(ExtentMapTest, PartialLastBlockInsideAHoleIsHoleThenPastEof) {
  // The last block is not allocated: a hole until i_size.
  const uint64_t size = 2 * kB + 100;
  ExtentMap map = MustBuild(Geometry(size), {{0, 10, 1, false}});
  EXPECT_THAT(MustQuery(map, 0, 3 * kB),
              ElementsAre(Mapped(0, kB, 10 * kB), Hole(kB, size - kB),
                          PastEof(size, 3 * kB - size)));
}

TEST(ExtentMapTest, UnwrittenExtentPastFileSizeIsClippedAtFileSize) {
  // fallocate --keep-size: unwritten blocks beyond i_size.
  ExtentMap map =
      MustBuild(Geometry(3 * kB), {{0, 10, 2, false}, {2, 12, 8, true}});
  EXPECT_THAT(
      MustQuery(map, 0, 16 * kB),
      ElementsAre(Mapped(0, 2 * kB, 10 * kB), Unwritten(2 * kB, kB, 12 * kB),
                  PastEof(3 * kB, 13 * kB)));
  EXPECT_EQ(map.SegmentAt(2 * kB, 16 * kB), Unwritten(2 * kB, kB, 12 * kB));
  EXPECT_EQ(map.SegmentAt(5 * kB, 16 * kB), PastEof(5 * kB, 16 * kB));
}

TEST(ExtentMapTest, ExtentEntirelyPastFileSizeDoesNotEndTheHoleBeforeEof) {
  ExtentMap map =
      MustBuild(Geometry(kB + 10), {{0, 10, 1, false}, {5, 20, 3, true}});
  EXPECT_THAT(MustQuery(map, 0, 10 * kB),
              ElementsAre(Mapped(0, kB, 10 * kB), Hole(kB, 10),
                          PastEof(kB + 10, 9 * kB - 10)));
  EXPECT_EQ(map.SegmentAt(kB, kMax64 - kB), Hole(kB, 10));
}

TEST(ExtentMapTest, QueryStartingInsideAnExtentOffsetsTheDeviceAddress) {
  ExtentMap map = MustBuild(Geometry(20 * kB), {{10, 100, 5, false}});
  EXPECT_THAT(MustQuery(map, 10 * kB + 123, 1000),
              ElementsAre(Mapped(10 * kB + 123, 1000, 100 * kB + 123)));
  EXPECT_THAT(MustQuery(map, 12 * kB + 5, 10 * kB),
              ElementsAre(Mapped(12 * kB + 5, 3 * kB - 5, 102 * kB + 5),
                          Hole(15 * kB, 5 * kB), PastEof(20 * kB, 2 * kB + 5)));
}

TEST(ExtentMapTest, SegmentAtStopsAtMaxLength) {
  ExtentMap map = MustBuild(Geometry(8 * kB), {{0, 100, 4, false}});
  EXPECT_EQ(map.SegmentAt(0, 100), Mapped(0, 100, 100 * kB));
  EXPECT_EQ(map.SegmentAt(kB, 1), Mapped(kB, 1, 101 * kB));
  EXPECT_EQ(map.SegmentAt(5 * kB, 100), Hole(5 * kB, 100));
  EXPECT_EQ(map.SegmentAt(100 * kB, 100), PastEof(100 * kB, 100));
}

// ---------------------------------------------------------------------------
// Merging.

TEST(ExtentMapTest, MergesPhysicallyContiguousMappedExtents) {
  const std::vector<Extent> extents = {
      {0, 100, 2, false}, {2, 102, 3, false}, {5, 105, 1, false}};
  ExtentMap map = MustBuild(Geometry(6 * kB), extents);
  EXPECT_EQ(map.extent_count(), 3u);  // stored as given
  for (size_t i = 0; i < extents.size(); ++i)
    EXPECT_EQ(map.ExtentAt(i), extents[i]);
  EXPECT_THAT(MustQuery(map, 0, 6 * kB),
              ElementsAre(Mapped(0, 6 * kB, 100 * kB)));
  EXPECT_EQ(map.SegmentAt(kB, kMax64 - kB), Mapped(kB, 5 * kB, 101 * kB));
  // Merging stops at max_length, including inside a later extent.
  EXPECT_EQ(map.SegmentAt(kB, 3 * kB), Mapped(kB, 3 * kB, 101 * kB));
}

TEST(ExtentMapTest, MergesPhysicallyContiguousUnwrittenExtents) {
  ExtentMap map =
      MustBuild(Geometry(4 * kB), {{0, 100, 2, true}, {2, 102, 2, true}});
  EXPECT_THAT(MustQuery(map, 0, 4 * kB),
              ElementsAre(Unwritten(0, 4 * kB, 100 * kB)));
}

TEST(ExtentMapTest, MergedSegmentStopsAtFileSize) {
  ExtentMap map =
      MustBuild(Geometry(3 * kB + 1), {{0, 100, 2, false}, {2, 102, 2, false}});
  EXPECT_THAT(MustQuery(map, 0, 4 * kB),
              ElementsAre(Mapped(0, 3 * kB + 1, 100 * kB),
                          PastEof(3 * kB + 1, kB - 1)));
}

TEST(ExtentMapTest, DoesNotMergePhysicallyDiscontiguousExtents) {
  ExtentMap gap =
      MustBuild(Geometry(4 * kB), {{0, 100, 2, false}, {2, 103, 2, false}});
  EXPECT_THAT(MustQuery(gap, 0, 4 * kB),
              ElementsAre(Mapped(0, 2 * kB, 100 * kB),
                          Mapped(2 * kB, 2 * kB, 103 * kB)));
  EXPECT_EQ(gap.SegmentAt(0, 4 * kB), Mapped(0, 2 * kB, 100 * kB));

  ExtentMap backwards =
      MustBuild(Geometry(4 * kB), {{0, 102, 2, false}, {2, 100, 2, false}});
  EXPECT_THAT(MustQuery(backwards, 0, 4 * kB),
              ElementsAre(Mapped(0, 2 * kB, 102 * kB),
                          Mapped(2 * kB, 2 * kB, 100 * kB)));
}

TEST(ExtentMapTest, DoesNotMergeAcrossAHoleEvenWhenPhysicallyContiguous) {
  ExtentMap map =
      MustBuild(Geometry(5 * kB), {{0, 100, 2, false}, {3, 102, 2, false}});
  EXPECT_THAT(MustQuery(map, 0, 5 * kB),
              ElementsAre(Mapped(0, 2 * kB, 100 * kB), Hole(2 * kB, kB),
                          Mapped(3 * kB, 2 * kB, 102 * kB)));
}

// ---------------------------------------------------------------------------
// Past EOF and range arithmetic.

TEST(ExtentMapTest, QueryEntirelyPastEofIsOneSegment) {
  ExtentMap map = MustBuild(Geometry(10000), {{0, 1, 3, false}});
  EXPECT_THAT(MustQuery(map, 20000, 5000), ElementsAre(PastEof(20000, 5000)));
  EXPECT_THAT(MustQuery(map, 10000, 1), ElementsAre(PastEof(10000, 1)));
  EXPECT_THAT(MustQuery(map, 9999, 2),
              ElementsAre(Mapped(9999, 1, kB + 9999), PastEof(10000, 1)));
}

TEST(ExtentMapTest, QueryOverflowIsInvalidArgument) {
  ExtentMap map = MustBuild(Geometry(10000), {{0, 1, 3, false}});
  EXPECT_EQ(map.Query(kMax64, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(map.Query(kMax64 - 10, 12).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(map.Query(1, kMax64).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(map.Query(kMax64, kMax64).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ExtentMapTest, HugeOffsetWithoutOverflowIsOnePastEofSegment) {
  ExtentMap map = MustBuild(Geometry(10000), {{0, 1, 3, false}});
  EXPECT_THAT(MustQuery(map, kMax64 - 10, 10),
              ElementsAre(PastEof(kMax64 - 10, 10)));
  EXPECT_THAT(MustQuery(map, kMax64 - 1, 1),
              ElementsAre(PastEof(kMax64 - 1, 1)));
  EXPECT_EQ(map.SegmentAt(kMax64 - 5, 5), PastEof(kMax64 - 5, 5));
  // The whole address space: the file, then everything after it.
  EXPECT_THAT(
      MustQuery(map, 0, kMax64),
      ElementsAre(Mapped(0, 10000, kB), PastEof(10000, kMax64 - 10000)));
}

TEST(ExtentMapTest, HugeFileSizeWithHugeOffsetsIsAHoleNotAnOverflow) {
  // i_size may be huge with a sparse tail: blocks past 2^32 are a hole.
  ExtentMap map = MustBuild(Geometry(kMax64 - 1), {{0, 1, 1, false}});
  EXPECT_EQ(map.FindFloor(kMax64 / kB), 0);
  EXPECT_EQ(map.SegmentAt(uint64_t{1} << 60, 10), Hole(uint64_t{1} << 60, 10));
  EXPECT_THAT(MustQuery(map, kB - 1, kMax64 - kB + 1),
              ElementsAre(Mapped(kB - 1, 1, 2 * kB - 1),
                          Hole(kB, kMax64 - 1 - kB), PastEof(kMax64 - 1, 1)));
}

// ---------------------------------------------------------------------------
// The top of the logical block space.

TEST(ExtentMapTest, ExtentAtLastLogicalBlock) {
  const uint64_t last = ExtentMap::kLogicalLimit - 1;  // 2^32 - 1
  ExtentMap map = MustBuild(Geometry(ExtentMap::kLogicalLimit * kB),
                            {{0, 10, 1, false}, {last, 500, 1, false}});
  EXPECT_EQ(map.ExtentAt(1), (Extent{last, 500, 1, false}));
  EXPECT_EQ(map.FindFloor(0), 0);
  EXPECT_EQ(map.FindFloor(last - 1), 0);
  EXPECT_EQ(map.FindFloor(last), 1);
  EXPECT_EQ(map.FindFloor(last + 1), 1);
  EXPECT_EQ(map.FindFloor(kMax64), 1);
  EXPECT_THAT(
      MustQuery(map, (last - 1) * kB, 3 * kB),
      ElementsAre(Hole((last - 1) * kB, kB), Mapped(last * kB, kB, 500 * kB),
                  PastEof((last + 1) * kB, kB)));
  EXPECT_EQ(map.SegmentAt(last * kB + 5, kMax64 - last * kB - 5),
            Mapped(last * kB + 5, kB - 5, 500 * kB + 5));
}

// With a key equal to UINT32_MAX the padding keys compare equal to it; the
// index must still land on the last real extent, on every tree depth.
TEST(ExtentMapTest, ExtentAtLastLogicalBlockOnEveryTreeDepth) {
  const uint64_t last = ExtentMap::kLogicalLimit - 1;
  for (size_t n : {1u, 2u, 15u, 16u, 17u, 31u, 255u, 256u, 257u, 4095u, 4096u,
                   4097u, 65537u}) {
    SCOPED_TRACE(n);
    std::vector<Extent> extents;
    for (size_t i = 0; i + 1 < n; ++i)
      extents.push_back({3 * i, 1000 + i, 2, false});
    extents.push_back({last, 7, 1, true});
    ExtentMap map = MustBuild(Geometry(kMax64, kB), extents);
    ASSERT_EQ(map.extent_count(), n);
    const int64_t n64 = static_cast<int64_t>(n);
    EXPECT_EQ(map.FindFloor(last), n64 - 1);
    EXPECT_EQ(map.FindFloor(last + 1), n64 - 1);
    EXPECT_EQ(map.FindFloor(kMax64), n64 - 1);
    EXPECT_EQ(map.FindFloor(last - 1), n64 - 2);
    for (size_t i = 0; i + 1 < n; ++i) {
      ASSERT_EQ(map.FindFloor(3 * i), static_cast<int64_t>(i));
      ASSERT_EQ(map.FindFloor(3 * i + 2), static_cast<int64_t>(i));
    }
    EXPECT_EQ(map.SegmentAt(last * kB, 2 * kB),
              Unwritten(last * kB, kB, 7 * kB));
    EXPECT_EQ(map.SegmentAt((last + 1) * kB, 2 * kB),
              Hole((last + 1) * kB, 2 * kB));
  }
}

TEST(ExtentMapTest, FindFloorBeforeTheFirstExtentIsMinusOne) {
  ExtentMap map =
      MustBuild(Geometry(100 * kB), {{5, 1, 1, false}, {9, 2, 1, false}});
  EXPECT_EQ(map.FindFloor(0), -1);
  EXPECT_EQ(map.FindFloor(4), -1);
  EXPECT_EQ(map.FindFloor(5), 0);
  EXPECT_EQ(map.FindFloor(8), 0);  // not covered, still the floor
  EXPECT_EQ(map.FindFloor(9), 1);
  EXPECT_EQ(map.FindFloor(1000), 1);
  EXPECT_THAT(MustQuery(map, 0, 6 * kB),
              ElementsAre(Hole(0, 5 * kB), Mapped(5 * kB, kB, kB)));
}

// ---------------------------------------------------------------------------
// Geometry.

TEST(ExtentMapTest, DeviceOffsetIsAddedToMappedAndUnwrittenSegments) {
  const uint64_t dev = (uint64_t{1} << 20) + 512;
  ExtentMap map =
      MustBuild(Geometry(4 * kB, kB, dev),
                {{0, 7, 1, false}, {1, 9, 1, true}, {3, 1, 1, false}});
  EXPECT_EQ(map.geometry().device_offset, dev);
  EXPECT_THAT(
      MustQuery(map, 0, 4 * kB),
      ElementsAre(Mapped(0, kB, dev + 7 * kB), Unwritten(kB, kB, dev + 9 * kB),
                  Hole(2 * kB, kB), Mapped(3 * kB, kB, dev + kB)));
  EXPECT_EQ(map.SegmentAt(kB + 3, 1), Unwritten(kB + 3, 1, dev + 9 * kB + 3));
}

TEST(ExtentMapTest, BlockSize1K) {
  const uint64_t b = 1024;
  ExtentMap map = MustBuild(Geometry(3 * b + 1, 1024), {{1, 5, 2, false}});
  EXPECT_EQ(map.block_size(), 1024u);
  EXPECT_EQ(map.FindFloor(0), -1);
  EXPECT_EQ(map.FindFloor(2), 0);
  EXPECT_THAT(MustQuery(map, 0, 4 * b),
              ElementsAre(Hole(0, b), Mapped(b, 2 * b, 5 * b), Hole(3 * b, 1),
                          PastEof(3 * b + 1, b - 1)));
  EXPECT_EQ(map.SegmentAt(2 * b + 10, 4096),
            Mapped(2 * b + 10, b - 10, 6 * b + 10));
}

TEST(ExtentMapTest, BlockSize64K) {
  const uint64_t b = 65536;
  ExtentMap map =
      MustBuild(Geometry(3 * b, 65536),
                {{0, 3, 1, true}, {1, 4, 1, false}, {2, 5, 1, false}});
  EXPECT_THAT(MustQuery(map, 0, 3 * b),
              ElementsAre(Unwritten(0, b, 3 * b), Mapped(b, 2 * b, 4 * b)));
  EXPECT_EQ(map.SegmentAt(b + 4096, 4096),
            Mapped(b + 4096, 4096, 4 * b + 4096));
  // Extents reach 2^32 blocks of 64 KiB: byte offsets up to 2^48.
  const uint64_t last = ExtentMap::kLogicalLimit - 1;
  ExtentMap top = MustBuild(Geometry(kMax64, 65536), {{last, 1, 1, false}});
  EXPECT_EQ(top.SegmentAt(last * b + 1, kMax64 - last * b - 1),
            Mapped(last * b + 1, b - 1, b + 1));
  EXPECT_EQ(top.SegmentAt((last + 1) * b, 1), Hole((last + 1) * b, 1));
}

// ---------------------------------------------------------------------------
// Build validation.

TEST(ExtentMapBuildTest, AcceptsAdjacentAndMaximalExtents) {
  EXPECT_TRUE(
      BuildStatus(Geometry(0), {{0, 0, 1, false}, {1, 0, 1, false}}).ok());
  EXPECT_TRUE(BuildStatus(Geometry(0), {{0, 0, 0xFFFFFFFFu, false}}).ok());
  EXPECT_TRUE(BuildStatus(Geometry(0), {{0xFFFFFFFFu, 0, 1, false}}).ok());
  // The highest physical block whose end, in bytes, still fits in 64 bits.
  const uint64_t max_physical_end = kMax64 / kB;
  EXPECT_TRUE(
      BuildStatus(Geometry(0), {{0, max_physical_end - 1, 1, false}}).ok());
}

TEST(ExtentMapBuildTest, RejectsBlockSizes) {
  for (uint32_t bs : {0u, 1u, 512u, 1000u, 3072u, 4097u, 131072u, 1u << 31}) {
    SCOPED_TRACE(bs);
    absl::Status s = BuildStatus(Geometry(0, bs), {});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("block size"));
  }
  for (uint32_t bs : {1024u, 2048u, 4096u, 8192u, 16384u, 32768u, 65536u}) {
    EXPECT_TRUE(BuildStatus(Geometry(0, bs), {}).ok()) << bs;
  }
}

TEST(ExtentMapBuildTest, RejectsZeroLength) {
  absl::Status s =
      BuildStatus(Geometry(0), {{0, 1, 1, false}, {5, 9, 0, false}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("extent 1 (logical 5, length 0)"));
}

TEST(ExtentMapBuildTest, RejectsUnsorted) {
  absl::Status s = BuildStatus(
      Geometry(0), {{0, 1, 1, false}, {10, 2, 1, false}, {4, 3, 1, false}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("extent 2 (logical 4, length 1)"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("sorted"));
}

TEST(ExtentMapBuildTest, RejectsDuplicateStart) {
  absl::Status s =
      BuildStatus(Geometry(0), {{7, 1, 1, false}, {7, 3, 1, false}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("extent 1 (logical 7, length 1)"));
}

TEST(ExtentMapBuildTest, RejectsOverlap) {
  absl::Status s =
      BuildStatus(Geometry(0), {{0, 1, 3, false}, {2, 10, 5, false}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("extent 1 (logical 2, length 5)"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("overlaps"));
}

TEST(ExtentMapBuildTest, RejectsExtentsPastTheLogicalLimit) {
  const uint64_t limit = ExtentMap::kLogicalLimit;
  struct Case {
    uint64_t logical;
    uint32_t length;
  };
  for (Case c : {Case{limit - 1, 2}, Case{limit, 1}, Case{2, 0xFFFFFFFFu},
                 Case{kMax64, 1}, Case{kMax64 - 1, 0xFFFFFFFFu}}) {
    SCOPED_TRACE(c.logical);
    absl::Status s =
        BuildStatus(Geometry(0), {{c.logical, 0, c.length, false}});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("extent 0 (logical"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("2^32"));
  }
}

TEST(ExtentMapBuildTest, RejectsPhysicalOverflow) {
  const uint64_t fit = kMax64 / kB;  // physical end (in blocks) that still fits
  struct Case {
    uint64_t physical;
    uint32_t length;
    uint64_t device_offset;
  };
  for (Case c : {Case{fit + 1, 1, 0},  // physical * block_size overflows
                 Case{fit, 1, 0},      // (physical + length) * bs overflows
                 Case{fit - 1, 2, 0},  // ditto
                 Case{kMax64, 1, 0},   // physical + length overflows
                 Case{kMax64 - 1, 0xFFFFFFFFu, 0},
                 Case{fit - 1, 1, kB}}) {  // + device_offset overflows
    SCOPED_TRACE(c.physical);
    absl::Status s =
        BuildStatus(Geometry(0, kB, c.device_offset),
                    {{0, 0, 1, false}, {1, c.physical, c.length, false}});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("extent 1 (logical 1, length"));
  }
  EXPECT_TRUE(
      BuildStatus(Geometry(0, kB, kB - 1), {{0, fit - 1, 1, false}}).ok());
}

TEST(ExtentMapBuildTest, NamesTheFirstOffendingExtent) {
  absl::Status s = BuildStatus(Geometry(0), {{0, 1, 1, false},
                                             {3, 1, 1, false},
                                             {2, 1, 1, false},    // unsorted
                                             {9, 1, 0, false}});  // length 0
  EXPECT_THAT(std::string(s.message()), HasSubstr("extent 2 (logical 2"));
}

// ---------------------------------------------------------------------------
// Moves and memory.

TEST(ExtentMapTest, MovedMapAnswersTheSame) {
  ExtentMap a =
      MustBuild(Geometry(40 * kB), {{1, 100, 2, false}, {20, 300, 3, true}});
  ExtentMap b(std::move(a));
  EXPECT_THAT(MustQuery(b, 0, 3 * kB),
              ElementsAre(Hole(0, kB), Mapped(kB, 2 * kB, 100 * kB)));
  ExtentMap c;
  c = std::move(b);
  EXPECT_EQ(c.extent_count(), 2u);
  EXPECT_EQ(c.SegmentAt(21 * kB, 10 * kB),
            Unwritten(21 * kB, 2 * kB, 301 * kB));
}

TEST(ExtentMapTest, MemoryBytesWithinBudgetAtOneMillionExtents) {
  constexpr size_t kN = 1 << 20;
  std::vector<Extent> extents;
  extents.reserve(kN);
  for (size_t i = 0; i < kN; ++i)
    extents.push_back({3 * i, 5 * i, 2, (i & 7) == 0});
  ExtentMap map = MustBuild(Geometry(3 * kN * kB), extents);
  ASSERT_EQ(map.extent_count(), kN);
  EXPECT_GE(map.MemoryBytes(), 12 * kN);  // 8-byte records + keys, at least
  EXPECT_LE(map.MemoryBytes(), 32 * kN + 4096);
  // Odd sizes too (padding in every level).
  extents.resize(kN - 17);
  ExtentMap odd = MustBuild(Geometry(3 * kN * kB), extents);
  EXPECT_LE(odd.MemoryBytes(), 32 * (kN - 17) + 4096);
  for (size_t i : {size_t{0}, size_t{1}, kN / 2 + 3, kN - 18}) {
    EXPECT_EQ(odd.FindFloor(3 * i + 1), static_cast<int64_t>(i));
    EXPECT_EQ(odd.ExtentAt(i), extents[i]);
  }
}

// Extents that do not fit an 8-byte record (physical >= 2^48 - 1, length >
// 32768) are kept aside; they answer like any other and merge with their
// neighbours.
TEST(ExtentMapTest, ExtentsBeyondTheRecordFormatAnswerLikeOthers) {
  const uint64_t p48 = uint64_t{1} << 48;
  const std::vector<Extent> extents = {
      {0, p48 - 2, 1, false},            // the largest physical in a record
      {1, p48 - 1, 32769, false},        // both too large; continues extent 0
      {32770, p48 + 32768, 32768, true}, // physical too large
      {65538, 5, 32768, false},          // the largest length in a record
      {98306, 32773, 1, false},          // continues extent 3
  };
  ExtentMap map = MustBuild(Geometry(98307 * kB), extents);
  for (size_t i = 0; i < extents.size(); ++i) {
    EXPECT_EQ(map.ExtentAt(i), extents[i]) << i;
  }
  EXPECT_THAT(
      MustQuery(map, 0, 98307 * kB),
      ElementsAre(Mapped(0, 32770 * kB, (p48 - 2) * kB),
                  Unwritten(32770 * kB, 32768 * kB, (p48 + 32768) * kB),
                  Mapped(65538 * kB, 32769 * kB, 5 * kB)));
  EXPECT_EQ(map.SegmentAt(5 * kB + 7, kMax64 - 5 * kB - 7),
            Mapped(5 * kB + 7, 32765 * kB - 7, (p48 + 3) * kB + 7));
  EXPECT_EQ(map.SegmentAt(40000 * kB, kB),
            Unwritten(40000 * kB, kB, (p48 + 32768 + 40000 - 32770) * kB));
  EXPECT_EQ(map.FindFloor(32769), 1);
  EXPECT_EQ(map.FindFloor(32770), 2);
}

TEST(ExtentMapTest, MemoryBytesWithinBudgetWhenNoExtentFitsARecord) {
  constexpr size_t kN = 1 << 20;
  const uint64_t base = uint64_t{1} << 50;
  std::vector<Extent> extents;
  extents.reserve(kN);
  for (size_t i = 0; i < kN; ++i)
    extents.push_back({3 * i, base + 5 * i, 2, (i & 7) == 0});
  ExtentMap map = MustBuild(Geometry(3 * kN * kB), extents);
  EXPECT_LE(map.MemoryBytes(), 32 * kN + 4096);
  for (size_t i : {size_t{0}, size_t{1}, kN / 2 + 3, kN - 1}) {
    EXPECT_EQ(map.ExtentAt(i), extents[i]);
    EXPECT_EQ(map.SegmentAt(3 * i * kB + 1, kB),
              (i & 7) == 0
                  ? Unwritten(3 * i * kB + 1, kB, (base + 5 * i) * kB + 1)
                  : Mapped(3 * i * kB + 1, kB, (base + 5 * i) * kB + 1));
  }
}

// ---------------------------------------------------------------------------
// Randomized comparison against a naive reference.

struct RefMap {
  MapGeometry geometry;
  std::vector<Extent> extents;
};

int64_t RefFindFloor(const RefMap& m, uint64_t block) {
  int64_t floor = -1;
  for (size_t i = 0; i < m.extents.size(); ++i) {
    if (m.extents[i].logical <= block) floor = static_cast<int64_t>(i);
  }
  return floor;
}

// Cuts the range at every extent edge and at file_size, classifies each
// piece on its own, then merges neighbours of the same kind whose device
// ranges (for kMapped/kUnwritten) continue each other.
std::vector<Segment> RefQuery(const RefMap& m, uint64_t offset,
                              uint64_t length) {
  std::vector<Segment> out;
  if (length == 0) return out;
  const uint64_t end = offset + length;
  const uint64_t bs = m.geometry.block_size;
  const uint64_t fs = m.geometry.file_size;
  std::vector<uint64_t> cuts = {offset, end};
  auto cut = [&](uint64_t at) {
    if (at > offset && at < end) cuts.push_back(at);
  };
  cut(fs);
  for (const Extent& e : m.extents) {
    cut(e.logical * bs);
    cut((e.logical + e.length) * bs);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  size_t k = 0;  // sweeps the extents in step with the cuts
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    const uint64_t a = cuts[c];
    const uint64_t b = cuts[c + 1];
    Segment piece{a, b - a, 0, SegmentKind::kHole};
    if (a >= fs) {
      piece.kind = SegmentKind::kPastEof;
    } else {
      while (k < m.extents.size() &&
             (m.extents[k].logical + m.extents[k].length) * bs <= a) {
        ++k;
      }
      if (k < m.extents.size() && m.extents[k].logical * bs <= a) {
        const Extent& e = m.extents[k];
        piece.kind =
            e.unwritten ? SegmentKind::kUnwritten : SegmentKind::kMapped;
        piece.device_offset =
            m.geometry.device_offset + e.physical * bs + (a - e.logical * bs);
      }
    }
    if (!out.empty()) {
      Segment& last = out.back();
      const bool has_device = piece.kind == SegmentKind::kMapped ||
                              piece.kind == SegmentKind::kUnwritten;
      if (last.kind == piece.kind &&
          (!has_device ||
           last.device_offset + last.length == piece.device_offset)) {
        last.length += piece.length;
        continue;
      }
    }
    out.push_back(piece);
  }
  return out;
}

class RandomMaps {
 public:
  explicit RandomMaps(uint64_t seed) : rng_(seed) {}

  uint64_t Uniform(uint64_t lo, uint64_t hi) {  // inclusive
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }
  bool OneIn(uint64_t n) { return Uniform(0, n - 1) == 0; }
  template <typename T>
  T Pick(std::initializer_list<T> values) {
    return *(values.begin() + Uniform(0, values.size() - 1));
  }

  RefMap Map() {
    RefMap m;
    m.geometry.block_size = Pick({1024u, 4096u, 4096u, 65536u});
    m.geometry.device_offset =
        Pick<uint64_t>({0, 0, 1 << 20, Uniform(0, uint64_t{1} << 40)});
    size_t n =
        OneIn(10) ? Pick<size_t>({16, 17, 255, 256, 257, 300, 4096, 4097, 5000})
                  : Uniform(0, 40);
    const bool spread = OneIn(4);  // spread over the whole 2^32 block space
    const bool long_extents = OneIn(5);
    const bool big_physical = OneIn(5);
    // Physical starts up to this leave room for any extent made here (and
    // its contiguous successor) below the largest Build accepts.
    const uint64_t max_physical =
        ((kMax64 - m.geometry.device_offset) >> std::countr_zero(
             m.geometry.block_size)) - 100000;
    const uint64_t limit = ExtentMap::kLogicalLimit;
    uint64_t logical = OneIn(2) ? 0 : Uniform(0, 20);
    for (size_t i = 0; i < n; ++i) {
      uint32_t length =
          static_cast<uint32_t>(OneIn(10) ? Uniform(1, 5000) : Uniform(1, 16));
      // Around the largest length an 8-byte record holds (32768).
      if (long_extents && OneIn(3)) {
        length = static_cast<uint32_t>(Uniform(32766, 32770));
      }
      if (logical >= limit || limit - logical < length) break;
      Extent e;
      e.logical = logical;
      e.length = length;
      const uint64_t continued =
          m.extents.empty()
              ? 0
              : m.extents.back().physical + m.extents.back().length;
      if (!m.extents.empty() && OneIn(2) && continued <= max_physical) {
        e.physical = continued;
      } else {
        e.physical = Uniform(0, uint64_t{1} << 36);
        // Around the largest physical block a record holds (2^48 - 2), and
        // up to the largest Build accepts at this block size (64 KiB blocks
        // reach only to 2^48).
        if (big_physical && OneIn(2)) {
          e.physical = OneIn(2) ? std::min(max_physical,
                                           (uint64_t{1} << 48) - 3 + Uniform(0, 5))
                                : Uniform(0, max_physical);
        }
      }
      e.unwritten = OneIn(4);
      m.extents.push_back(e);
      uint64_t gap = OneIn(2) ? 0 : Uniform(1, 8);
      if (spread) gap = Uniform(0, limit / (n + 1));
      logical += length + gap;
    }
    if (OneIn(6)) {  // an extent ending at the very last logical block
      const uint32_t length = static_cast<uint32_t>(Uniform(1, 3));
      const uint64_t start = limit - length;
      if (m.extents.empty() ||
          m.extents.back().logical + m.extents.back().length <= start) {
        m.extents.push_back({start, Uniform(0, 1000), length, OneIn(2)});
      }
    }
    const uint64_t bs = m.geometry.block_size;
    uint64_t data_end = 0;
    if (!m.extents.empty()) {
      data_end = (m.extents.back().logical + m.extents.back().length) * bs;
    }
    switch (Uniform(0, 5)) {
      case 0:
        m.geometry.file_size = data_end;
        break;
      case 1:
        m.geometry.file_size =
            data_end - std::min(data_end, Uniform(1, 3 * bs));
        break;
      case 2:
        m.geometry.file_size = data_end + Uniform(1, 5 * bs);
        break;
      case 3:
        m.geometry.file_size = Uniform(0, data_end);
        break;
      case 4:
        m.geometry.file_size = 0;
        break;
      default:
        m.geometry.file_size = Pick<uint64_t>({kMax64, kMax64 / 2});
        break;
    }
    return m;
  }

  // Offsets with a bias towards the interesting places.
  uint64_t Offset(const RefMap& m) {
    const uint64_t bs = m.geometry.block_size;
    const uint64_t fs = m.geometry.file_size;
    const uint64_t delta = Pick<uint64_t>({0, 0, 1, 1, bs / 2, bs - 1});
    uint64_t base;
    switch (Uniform(0, 4)) {
      case 0:
        if (!m.extents.empty()) {
          const Extent& e = m.extents[Uniform(0, m.extents.size() - 1)];
          base = (OneIn(2) ? e.logical : e.logical + e.length) * bs;
          return OneIn(2) ? base + delta : base - std::min(base, delta);
        }
        [[fallthrough]];
      case 1:
        return fs - std::min(fs, delta) + (OneIn(2) ? delta : 0);
      case 2:
        return Uniform(0, kMax64);
      default: {
        const uint64_t hi = fs < kMax64 - 2 * bs ? fs + 2 * bs : kMax64;
        return Uniform(0, hi);
      }
    }
  }

  uint64_t Length(const RefMap& m, uint64_t offset) {
    const uint64_t room = kMax64 - offset;  // longest length without overflow
    if (room == 0) return 0;
    const uint64_t bs = m.geometry.block_size;
    switch (Uniform(0, 5)) {
      case 0:
        return Uniform(1, std::min(room, bs));
      case 1:
        return Uniform(1, std::min(room, 64 * bs));
      case 2:
        return room;
      case 3:
        return Uniform(1, room);
      default:
        return std::min(room, Uniform(1, uint64_t{1} << 24));
    }
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
};

TEST(ExtentMapRandomTest, MatchesNaiveReference) {
  RandomMaps r(/*seed=*/0x6578743464696fULL);
  constexpr int kMaps = 3000;
  constexpr int kQueriesPerMap = 40;
  size_t total_queries = 0, total_segments = 0, beyond_record_format = 0;
  for (int map_index = 0; map_index < kMaps; ++map_index) {
    const RefMap ref = r.Map();
    absl::StatusOr<ExtentMap> built =
        ExtentMap::Build(ref.geometry, ref.extents);
    ASSERT_TRUE(built.ok()) << "map " << map_index << ": " << built.status();
    const ExtentMap& map = *built;
    ASSERT_EQ(map.extent_count(), ref.extents.size());
    for (const Extent& e : ref.extents) {
      if (e.physical >= (uint64_t{1} << 48) - 1 || e.length > 32768) {
        ++beyond_record_format;
      }
    }
    const bool big = ref.extents.size() > 1000;
    for (size_t i = 0; i < ref.extents.size(); i += big ? 97 : 1) {
      ASSERT_EQ(map.ExtentAt(i), ref.extents[i]) << "map " << map_index;
    }

    // FindFloor around every (or, for big maps, a sample of) extent start.
    for (size_t i = 0; i < ref.extents.size(); i += big ? 13 : 1) {
      const uint64_t start = ref.extents[i].logical;
      for (uint64_t block :
           {start - std::min<uint64_t>(start, 1), start, start + 1}) {
        ASSERT_EQ(map.FindFloor(block), RefFindFloor(ref, block))
            << "map " << map_index << " block " << block;
      }
    }
    for (uint64_t block : {uint64_t{0}, uint64_t{0xFFFFFFFE},
                           uint64_t{0xFFFFFFFF}, ExtentMap::kLogicalLimit,
                           kMax64, r.Uniform(0, ExtentMap::kLogicalLimit)}) {
      ASSERT_EQ(map.FindFloor(block), RefFindFloor(ref, block))
          << "map " << map_index << " block " << block;
    }

    for (int q = 0; q < kQueriesPerMap; ++q) {
      const uint64_t offset = r.Offset(ref);
      const uint64_t length = r.Length(ref, offset);
      const std::vector<Segment> want = RefQuery(ref, offset, length);
      absl::StatusOr<std::vector<Segment>> got = map.Query(offset, length);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(*got, want) << "map " << map_index << " query " << q
                            << ": Query(" << offset << ", " << length << ")";
      if (length > 0) {
        ASSERT_EQ(map.SegmentAt(offset, length), want.front())
            << "map " << map_index << " SegmentAt(" << offset << ", " << length
            << ")";
      }
      ++total_queries;
      total_segments += want.size();
    }
  }
  // The generator does reach the extents kept beside the records.
  EXPECT_GT(beyond_record_format, 1000u);
  RecordProperty("queries", static_cast<int>(total_queries));
  RecordProperty("segments", static_cast<int>(total_segments));
}

// FindFloor alone on large, dense and sparse maps against std::upper_bound
// (the naive linear reference is too slow at this size).
TEST(ExtentMapRandomTest, FindFloorMatchesBinarySearchOnLargeMaps) {
  std::mt19937_64 rng(12345);
  for (size_t n :
       {size_t{65535}, size_t{65536}, size_t{65537}, size_t{300000}}) {
    SCOPED_TRACE(n);
    std::vector<Extent> extents;
    std::vector<uint64_t> starts;
    const uint64_t max_gap = ExtentMap::kLogicalLimit / n - 2;
    uint64_t logical = rng() % 4;
    for (size_t i = 0; i < n; ++i) {
      extents.push_back({logical, i, 1, false});
      starts.push_back(logical);
      logical += 1 + rng() % max_gap;
    }
    ExtentMap map = MustBuild(Geometry(0), extents);
    auto want = [&](uint64_t block) {
      return static_cast<int64_t>(
                 std::upper_bound(starts.begin(), starts.end(), block) -
                 starts.begin()) -
             1;
    };
    for (int q = 0; q < 200000; ++q) {
      uint64_t block;
      switch (q % 3) {
        case 0:
          block = rng() % ExtentMap::kLogicalLimit;
          break;
        case 1:
          block = starts[rng() % n];
          break;
        default:
          block = starts[rng() % n] - 1;
          break;
      }
      ASSERT_EQ(map.FindFloor(block), want(block)) << block;
    }
  }
}

}  // namespace
}  // namespace ext4dio

namespace ext4dio {
namespace {

TEST(ExtentMapMoveTest, MovedFromMapIsEmptyAndUsable) {
  MapGeometry g{4096, 0, 8 * 4096};
  auto built = ExtentMap::Build(g, {Extent{0, 100, 8, false}});
  ASSERT_TRUE(built.ok());
  ExtentMap a = std::move(*built);
  ExtentMap b = std::move(a);
  EXPECT_EQ(b.extent_count(), 1u);
  EXPECT_EQ(a.extent_count(), 0u);  // NOLINT(bugprone-use-after-move): documented
  EXPECT_EQ(a.FindFloor(3), -1);
  EXPECT_EQ(a.SegmentAt(0, 4096).kind, SegmentKind::kHole);
  EXPECT_EQ(b.SegmentAt(0, 4096).kind, SegmentKind::kMapped);
}

}  // namespace
}  // namespace ext4dio
