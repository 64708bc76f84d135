// How long building a validated map takes for a file with many extents:
// open the image, walk a depth-2 extent tree, validate against metadata and
// bitmaps, build the lookup structure. The image is made once by mkfs -d.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "map_loader.h"

namespace {

struct Fixture {
  std::string dir, image;
  Fixture() {
    char tmpl[] = "/dev/shm/ext4dio-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    dir = tmpl;
    image = dir + "/fs.img";
  }
  ~Fixture() {
    std::string cmd = "rm -rf '" + dir + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cleanup of %s failed\n", dir.c_str());
  }
  // A file of `extents` one-block islands with one-block holes between them.
  void Make(int64_t extents, int block_size) {
    std::string src = dir + "/src";
    std::string cmd = "mkdir -p '" + src + "'";
    if (std::system(cmd.c_str()) != 0) std::abort();
    int fd = open((src + "/f").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::string block(block_size, 'x');
    for (int64_t i = 0; i < extents; ++i) {
      if (pwrite(fd, block.data(), block.size(), off_t(i) * 2 * block_size) != block_size) std::abort();
    }
    close(fd);
    const int64_t mib = extents * block_size / (1 << 20) * 2 + 64;
    cmd = "truncate -s " + std::to_string(mib) + "M '" + image + "' && mkfs.ext4 -q -F -b " +
          std::to_string(block_size) + " -d '" + src + "' '" + image + "' && rm -rf '" + src + "'";
    if (std::system(cmd.c_str()) != 0) std::abort();
  }
};

void BM_BuildMapFromImage(benchmark::State& state) {
  Fixture fx;
  fx.Make(state.range(0), static_cast<int>(state.range(1)));
  size_t extents = 0, bytes = 0;
  for (auto _ : state) {
    auto m = ext4dio::LoadMap(ext4dio::Target{fx.image, 0, "/f", 0});
    if (!m.ok()) {
      state.SkipWithError(std::string(m.status().message()).c_str());
      return;
    }
    extents = m->map.extent_count();
    bytes = m->map.MemoryBytes();
    benchmark::DoNotOptimize(m);
  }
  state.counters["extents"] = static_cast<double>(extents);
  state.counters["bytes_per_extent"] = static_cast<double>(bytes) / static_cast<double>(extents);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(extents));
}
BENCHMARK(BM_BuildMapFromImage)
    ->Args({100000, 1024})
    ->Args({100000, 4096})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(5);

}  // namespace

BENCHMARK_MAIN();
