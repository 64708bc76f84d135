// Remap (lib/remap.h): the deferred re-map's new map from the old one, a
// batch of ended kernel-path writes and FIEMAP (scripted here), checked
// against a block-level model of the file. No root, no filesystem.
#include "remap.h"

#include <random>
#include <vector>

#include "errors.h"
#include "gtest/gtest.h"

namespace ext4dio {
namespace {

constexpr uint32_t kBs = 4096;

// A block of the file: hole, unwritten at phys, or written at phys.
struct Block {
  int kind = 0;  // 0 hole, 1 unwritten, 2 written
  uint64_t phys = 0;
  friend bool operator==(const Block&, const Block&) = default;
};

std::vector<Extent> ExtentsOf(const std::vector<Block>& blocks) {
  std::vector<Extent> out;
  for (uint64_t b = 0; b < blocks.size(); ++b) {
    if (blocks[b].kind == 0) continue;
    const bool unw = blocks[b].kind == 1;
    if (!out.empty() && out.back().logical + out.back().length == b &&
        out.back().physical + out.back().length == blocks[b].phys && out.back().unwritten == unw) {
      ++out.back().length;
    } else {
      out.push_back(Extent{b, blocks[b].phys, 1, unw});
    }
  }
  return out;
}

MapState StateOf(const std::vector<Block>& blocks) {
  MapState s;
  auto map = ExtentMap::Build(MapGeometry{kBs, 0, blocks.size() * kBs}, ExtentsOf(blocks));
  EXPECT_TRUE(map.ok()) << map.status();
  s.loaded.map = std::move(*map);
  s.written = WrittenSet(s.loaded.map);
  return s;
}

std::vector<Block> BlocksOf(const ExtentMap& m, uint64_t n) {
  std::vector<Block> out(n);
  for (uint64_t b = 0; b < n; ++b) {
    const Segment seg = m.SegmentAt(b * kBs, kBs);
    if (seg.kind == SegmentKind::kMapped) out[b] = {2, seg.device_offset / kBs};
    if (seg.kind == SegmentKind::kUnwritten) out[b] = {1, seg.device_offset / kBs};
  }
  return out;
}

// FIEMAP answering from `truth`, clipped to the range, counting calls.
struct FakeFiemap {
  const std::vector<Block>* truth;
  int calls = 0;
  absl::StatusOr<std::vector<Extent>> operator()(uint64_t offset, uint64_t length) {
    ++calls;
    EXPECT_EQ(offset % kBs, 0u);
    EXPECT_EQ(length % kBs, 0u);
    std::vector<Block> part(truth->size());
    for (uint64_t b = offset / kBs; b < (offset + length) / kBs && b < truth->size(); ++b)
      part[b] = (*truth)[b];
    return ExtentsOf(part);
  }
};

PendingRemap::Batch BatchOf(PendingRemap& p) { return p.Ended(); }

TEST(RemapTest, CleanWritesConvertUnwrittenInPlaceWithoutFiemap) {
  std::vector<Block> blocks(100);
  for (uint64_t b = 0; b < 100; ++b) blocks[b] = {1, 1000 + b};
  const MapState old = StateOf(blocks);
  PendingRemap p;
  p.Begin(10 * kBs, 12 * kBs);
  p.End(10 * kBs, 12 * kBs, /*clean=*/true);
  const PendingRemap::Batch batch = BatchOf(p);
  std::vector<Block> truth = blocks;
  truth[10].kind = truth[11].kind = 2;
  FakeFiemap fm{&truth};
  RemapInput in{&old, &batch, std::ref(fm), [](const std::vector<Extent>&) {
                  ADD_FAILURE() << "nothing to validate";
                  return absl::OkStatus();
                }, 100 * kBs};
  auto out = Remap(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(fm.calls, 0);
  EXPECT_EQ(out->converted_blocks, 2u);
  EXPECT_EQ(BlocksOf(out->loaded.map, 100), truth);
  EXPECT_TRUE(out->written == WrittenSet(out->loaded.map));
  EXPECT_TRUE(out->written.Contains(1010 * kBs, 2 * kBs));
  EXPECT_FALSE(out->written.Contains(1012 * kBs, kBs));
  EXPECT_EQ(out->loaded.map.extent_count(), 3u);
}

TEST(RemapTest, HoleFillsAndSuspectWritesAskFiemapAndAreValidated) {
  std::vector<Block> blocks(64);
  for (uint64_t b = 0; b < 10; ++b) blocks[b] = {2, 500 + b};     // written
  for (uint64_t b = 40; b < 64; ++b) blocks[b] = {1, 2000 + b};  // unwritten
  const MapState old = StateOf(blocks);
  PendingRemap p;
  p.Begin(12 * kBs, 14 * kBs);
  p.End(12 * kBs, 14 * kBs, true);  // a hole: FIEMAP
  p.Begin(50 * kBs, 50 * kBs + 100);
  p.End(50 * kBs, 50 * kBs + 100, false);  // buffered, partial block: FIEMAP
  const PendingRemap::Batch batch = BatchOf(p);
  std::vector<Block> truth = blocks;
  truth[12] = {2, 7000};
  truth[13] = {2, 7001};
  truth[50].kind = 2;
  FakeFiemap fm{&truth};
  int validated = 0;
  RemapInput in{&old, &batch, std::ref(fm), [&](const std::vector<Extent>& e) {
                  validated += static_cast<int>(e.size());
                  return absl::OkStatus();
                }, 64 * kBs};
  auto out = Remap(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(fm.calls, 2);
  EXPECT_EQ(validated, 2);
  EXPECT_EQ(out->converted_blocks, 0u);
  EXPECT_EQ(BlocksOf(out->loaded.map, 64), truth);
  EXPECT_TRUE(out->written == WrittenSet(out->loaded.map));

  // The validation's refusal and FIEMAP's failure come back as they are.
  RemapInput bad = in;
  bad.validate = [](const std::vector<Extent>&) {
    return LibError(EXT4DIO_E_CORRUPT_MAP, "block free in the bitmap");
  };
  EXPECT_EQ(CodeOf(Remap(bad).status()), -EXT4DIO_E_CORRUPT_MAP);
  bad = in;
  bad.fiemap = [](uint64_t, uint64_t) -> absl::StatusOr<std::vector<Extent>> {
    return ErrnoError(EIO, "FIEMAP");
  };
  EXPECT_EQ(CodeOf(Remap(bad).status()), -EIO);
}

TEST(RemapTest, WrittenDataThatFiemapNoLongerShowsIsAMismatch) {
  std::vector<Block> blocks(16);
  for (uint64_t b = 0; b < 16; ++b) blocks[b] = {2, 300 + b};
  const MapState old = StateOf(blocks);
  PendingRemap p;
  p.Begin(4 * kBs, 6 * kBs);
  p.End(4 * kBs, 6 * kBs, false);
  const PendingRemap::Batch batch = BatchOf(p);
  for (const Block moved : {Block{2, 900}, Block{0, 0}, Block{1, 304}}) {
    std::vector<Block> truth = blocks;
    truth[4] = moved;  // moved, freed, or unwritten again: never without an Exclusive
    FakeFiemap fm{&truth};
    RemapInput in{&old, &batch, std::ref(fm),
                  [](const std::vector<Extent>&) { return absl::OkStatus(); }, 16 * kBs};
    auto out = Remap(in);
    EXPECT_EQ(CodeOf(out.status()), -EXT4DIO_E_MAP_MISMATCH)
        << "block 4 became kind " << moved.kind << " at " << moved.phys;
  }
}

// Random batches of clean and suspect writes over a file of holes,
// unwritten and written runs; FIEMAP from the truth. The new map is the
// truth block by block, and its written set the one it implies.
TEST(RemapTest, RandomBatchesMatchAModel) {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 200; ++round) {
    const uint64_t n = 64 + rng() % 200;
    std::vector<Block> blocks(n);
    uint64_t next_phys = 100000;
    for (uint64_t b = 0; b < n;) {
      const uint64_t run = 1 + rng() % 12;
      const int kind = static_cast<int>(rng() % 3);
      for (uint64_t k = 0; k < run && b < n; ++k, ++b)
        blocks[b] = kind == 0 ? Block{} : Block{kind, next_phys++};
      next_phys += rng() % 3;  // sometimes physically contiguous across runs
    }
    const MapState old = StateOf(blocks);
    std::vector<Block> truth = blocks;
    PendingRemap p;
    const int writes = 1 + static_cast<int>(rng() % 12);
    for (int w = 0; w < writes; ++w) {
      const uint64_t lo = rng() % (n - 4), len = 1 + rng() % 4;
      const bool clean = rng() % 4 != 0;
      const bool partial = !clean && rng() % 2;
      const uint64_t hi_bytes = (lo + len) * kBs - (partial ? 100 : 0);
      p.Begin(lo * kBs, hi_bytes);
      p.End(lo * kBs, hi_bytes, clean);
      for (uint64_t b = lo; b < lo + len; ++b) {
        if (truth[b].kind == 0) truth[b] = {2, next_phys++};  // allocated
        else truth[b].kind = 2;                               // converted in place
      }
    }
    const PendingRemap::Batch batch = p.Ended();
    FakeFiemap fm{&truth};
    RemapInput in{&old, &batch, std::ref(fm),
                  [](const std::vector<Extent>&) { return absl::OkStatus(); }, n * kBs};
    auto out = Remap(in);
    ASSERT_TRUE(out.ok()) << "round " << round << ": " << out.status();
    ASSERT_EQ(BlocksOf(out->loaded.map, n), truth) << "round " << round;
    ASSERT_TRUE(out->written == WrittenSet(out->loaded.map)) << "round " << round;
  }
}

}  // namespace
}  // namespace ext4dio
