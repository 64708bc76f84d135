// Random aligned overwrites of a file inside an image (or unmounted device)
// through ext4dio's async queue at a fixed queue depth, for a fixed time.
// Prints one JSON object: {"iops": N, "qd": N, "bs": N, "seconds": S, ...}.
// bench/io_bench.sh runs it beside fio's io_uring engine on the same bytes.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ext4dio/ext4dio.hpp"

int main(int argc, char** argv) {
  CLI::App app{"ext4dio random-overwrite benchmark"};
  std::string image, path, backend = "auto", rw = "randwrite";
  uint64_t offset = 0;
  uint32_t qd = 32, bs = 4096;
  double seconds = 5;
  bool fixed = false, sqpoll = false;
  app.add_option("--image", image)->required();
  app.add_option("--image-offset", offset);
  app.add_option("--path", path)->required();
  app.add_option("--qd", qd);
  app.add_option("--bs", bs);
  app.add_option("--seconds", seconds);
  app.add_option("--backend", backend)->check(CLI::IsMember({"auto", "uring", "sync"}));
  app.add_flag("--fixed-buffers", fixed, "Register the I/O buffers with the ring");
  app.add_flag("--sqpoll", sqpoll, "io_uring SQPOLL");
  app.add_option("--rw", rw)->check(CLI::IsMember({"randwrite", "randread"}));
  CLI11_PARSE(app, argc, argv);

  ext4dio::DirectFileOptions o;
  o.write = rw == "randwrite";
  o.queue_depth = qd;
  o.sqpoll = sqpoll;
  o.backend = backend == "uring" ? EXT4DIO_BACKEND_URING
              : backend == "sync" ? EXT4DIO_BACKEND_SYNC : EXT4DIO_BACKEND_AUTO;
  auto file = ext4dio::DirectFile::Open(ext4dio::Location::InImage(image, path, offset), o);
  if (!file.ok()) {
    std::fprintf(stderr, "qd_bench: %s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  auto queue = ext4dio::RequestQueue::Open(*file, qd);
  if (!queue.ok()) {
    std::fprintf(stderr, "qd_bench: %s\n", std::string(queue.status().message()).c_str());
    return 1;
  }
  const ext4dio_file_info info = file->Info();
  const uint64_t blocks = info.size / bs;
  if (blocks == 0) return 1;
  // One region for all buffers, so it can be registered as a fixed buffer.
  char* region = nullptr;
  if (posix_memalign(reinterpret_cast<void**>(&region), 4096, size_t{qd} * bs) != 0) return 1;
  std::memset(region, 0x5a, size_t{qd} * bs);
  std::vector<char*> bufs(qd);
  for (uint32_t i = 0; i < qd; ++i) bufs[i] = region + size_t{i} * bs;
  if (fixed) {
    if (auto s = queue->RegisterBuffers(region, size_t{qd} * bs); !s.ok()) {
      std::fprintf(stderr, "qd_bench: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  std::mt19937_64 rng(42);
  uint64_t done = 0;
  std::vector<ext4dio_completion> comps(qd);
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  auto submit = [&](uint64_t slot) {
    ext4dio_request r{o.write ? EXT4DIO_OP_WRITE : EXT4DIO_OP_READ, bufs[slot], bs,
                      (rng() % blocks) * bs, slot};
    return queue->Submit(r);
  };
  for (uint32_t i = 0; i < qd; ++i) {
    if (auto s = submit(i); !s.ok()) {
      std::fprintf(stderr, "qd_bench: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  size_t outstanding = qd;
  bool stop = false;
  while (outstanding > 0) {
    auto got = queue->Reap(comps.data(), comps.size(), 1);
    if (!got.ok()) return 1;
    if ((done & 255) == 0 && std::chrono::steady_clock::now() >= deadline) stop = true;
    for (size_t i = 0; i < *got; ++i) {
      if (comps[i].result != bs) {
        std::fprintf(stderr, "qd_bench: I/O failed: %ld\n", static_cast<long>(comps[i].result));
        return 1;
      }
      ++done;
      --outstanding;
      if (!stop) {
        if (!submit(comps[i].cookie).ok()) return 1;
        ++outstanding;
      }
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"iops\": %.0f, \"qd\": %u, \"bs\": %u, \"seconds\": %.3f, \"ios\": %lu, "
              "\"backend\": \"%s\"}\n",
              done / secs, qd, bs, secs, static_cast<unsigned long>(done),
              info.backend == EXT4DIO_BACKEND_URING ? "io_uring" : "psync");
  free(region);
  return 0;
}
