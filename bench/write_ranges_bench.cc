// WriteRanges' cost per aligned direct write with no read-modify-write
// around: one BeginDirect/EndDirect pair of one 4 KiB range, from one thread
// and from several threads each in its own 1 MiB region (no sharing).
//   build/bench/write_ranges_bench --benchmark_repetitions=5
#include <cstdint>

#include "benchmark/benchmark.h"
#include "write_ranges.h"

namespace ext4dio {
namespace {

WriteRanges* Shared() {
  static WriteRanges* wr = new WriteRanges;
  return wr;
}

void BM_DirectPair(benchmark::State& state) {
  WriteRanges& wr = *Shared();
  const uint64_t owner = WriteRanges::ThreadOwner();
  // Thread i writes 4 KiB blocks of region 8 * i (its own stripe).
  const uint64_t base = uint64_t{8} * state.thread_index() << 20;
  uint64_t block = 0;
  for (auto _ : state) {
    const WriteRanges::Range r{base + block * 4096, base + block * 4096 + 4096};
    wr.BeginDirect({&r, 1}, owner);
    wr.EndDirect({&r, 1}, owner);
    block = (block + 1) % 256;
  }
}
BENCHMARK(BM_DirectPair)->Threads(1)->Threads(2)->UseRealTime();

// Depth 32 from one thread: 32 writes registered before the first ends.
void BM_DirectDepth32(benchmark::State& state) {
  WriteRanges& wr = *Shared();
  const uint64_t owner = WriteRanges::ThreadOwner();
  WriteRanges::Range r[32];
  for (uint64_t i = 0; i < 32; ++i) r[i] = {(i << 22) + 4096 * i, (i << 22) + 4096 * i + 4096};
  for (auto _ : state) {
    for (auto& x : r) wr.BeginDirect({&x, 1}, owner);
    for (auto& x : r) wr.EndDirect({&x, 1}, owner);
  }
  state.SetItemsProcessed(state.iterations() * 32);
}
BENCHMARK(BM_DirectDepth32);

}  // namespace
}  // namespace ext4dio

BENCHMARK_MAIN();
