// Lookup cost of ExtentMap at 1k / 100k / 1M extents.
//
// BM_Lookup:        SegmentAt(random offset, 4096), independent lookups
//                   (throughput: the CPU may overlap consecutive lookups).
// BM_LookupLatency: the same, but each offset index depends on the previous
//                   result, so lookups cannot overlap (latency).
// BM_FindFloor:     FindFloor(random block) alone.
//
// Counters: bytes_per_extent = MemoryBytes() / extent count.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "extent_map.h"

namespace ext4dio {
namespace {

constexpr uint32_t kBlockSize = 4096;
constexpr size_t kOffsets = size_t{1} << 20;  // power of two
constexpr uint64_t kSeed = 0x5eed;

struct Fixture {
  ExtentMap map;
  std::vector<uint64_t> offsets;  // bytes, inside the file
  std::vector<uint64_t> blocks;   // offsets[i] / kBlockSize
};

// Extents of 1..64 blocks separated by holes of 0..8 blocks; physically
// mostly scattered, sometimes contiguous with the previous extent; one in
// eight unwritten.
std::unique_ptr<Fixture> MakeFixture(size_t n) {
  std::mt19937_64 rng(kSeed);
  std::uniform_int_distribution<uint32_t> length(1, 64);
  std::uniform_int_distribution<uint64_t> hole(0, 8);
  std::uniform_int_distribution<uint64_t> physical_gap(0, 3);
  std::vector<Extent> extents;
  extents.reserve(n);
  uint64_t logical = 0;
  uint64_t physical = 1 << 15;
  for (size_t i = 0; i < n; ++i) {
    logical += hole(rng);
    physical += physical_gap(rng) * 1000;
    Extent e{logical, physical, length(rng), (rng() & 7) == 0};
    extents.push_back(e);
    logical += e.length;
    physical += e.length;
  }
  MapGeometry g;
  g.block_size = kBlockSize;
  g.file_size = logical * kBlockSize;
  absl::StatusOr<ExtentMap> map = ExtentMap::Build(g, extents);
  if (!map.ok()) {
    std::fprintf(stderr, "Build: %s\n", map.status().ToString().c_str());
    std::abort();
  }
  auto f = std::make_unique<Fixture>();
  f->map = *std::move(map);
  std::uniform_int_distribution<uint64_t> offset(0, g.file_size - 1);
  f->offsets.resize(kOffsets);
  f->blocks.resize(kOffsets);
  for (size_t i = 0; i < kOffsets; ++i) {
    f->offsets[i] = offset(rng);
    f->blocks[i] = f->offsets[i] / kBlockSize;
  }
  return f;
}

// Built once per size, shared by the benchmarks.
const Fixture& GetFixture(size_t n) {
  static std::map<size_t, std::unique_ptr<Fixture>>* fixtures =
      new std::map<size_t, std::unique_ptr<Fixture>>;
  std::unique_ptr<Fixture>& f = (*fixtures)[n];
  if (f == nullptr) f = MakeFixture(n);
  return *f;
}

void SetCounters(benchmark::State& state, const Fixture& f) {
  state.SetItemsProcessed(state.iterations());
  state.counters["bytes_per_extent"] =
      static_cast<double>(f.map.MemoryBytes()) /
      static_cast<double>(f.map.extent_count());
}

void BM_Lookup(benchmark::State& state) {
  const Fixture& f = GetFixture(static_cast<size_t>(state.range(0)));
  const uint64_t* offsets = f.offsets.data();
  size_t i = 0;
  for (auto _ : state) {
    Segment s = f.map.SegmentAt(offsets[i], 4096);
    benchmark::DoNotOptimize(s);
    i = (i + 1) & (kOffsets - 1);
  }
  SetCounters(state, f);
}
BENCHMARK(BM_Lookup)->Arg(1000)->Arg(100000)->Arg(1000000);

void BM_LookupLatency(benchmark::State& state) {
  const Fixture& f = GetFixture(static_cast<size_t>(state.range(0)));
  const uint64_t* offsets = f.offsets.data();
  size_t i = 0;
  for (auto _ : state) {
    Segment s = f.map.SegmentAt(offsets[i], 4096);
    benchmark::DoNotOptimize(s);
    // length <= 4096: the shift is always 0, but the next offset now
    // depends on this lookup's result.
    i = (i + 1 + (s.length >> 13)) & (kOffsets - 1);
  }
  SetCounters(state, f);
}
BENCHMARK(BM_LookupLatency)->Arg(1000)->Arg(100000)->Arg(1000000);

void BM_FindFloor(benchmark::State& state) {
  const Fixture& f = GetFixture(static_cast<size_t>(state.range(0)));
  const uint64_t* blocks = f.blocks.data();
  size_t i = 0;
  for (auto _ : state) {
    int64_t floor = f.map.FindFloor(blocks[i]);
    benchmark::DoNotOptimize(floor);
    i = (i + 1) & (kOffsets - 1);
  }
  SetCounters(state, f);
}
BENCHMARK(BM_FindFloor)->Arg(1000)->Arg(100000)->Arg(1000000);

}  // namespace
}  // namespace ext4dio

BENCHMARK_MAIN();
