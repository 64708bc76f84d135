// Random aligned overwrites (or reads) of a file through ext4dio's C API
// queue (ext4dio_queue) at a fixed queue depth, for a fixed time or a fixed
// number of I/Os: a file inside an image or unmounted device (--image), or
// a file on a mounted ext4 (--file). Refills are submitted as one batch
// (ext4dio_queue_submit_batch) per reap, as bench/uring_loop does with its
// ring. The i-th I/O goes to region offset + (mt19937_64(seed)'s i-th draw
// mod blocks) * bs, the same draw uring_loop makes.
// Prints one JSON object: {"iops": N, "qd": N, "bs": N, "seconds": S,
// "ios": N, "bytes": N, "backend": "..."}. bench/io_bench.sh and
// bench/hotpath_bench.sh run it beside references on the same bytes.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ext4dio/ext4dio.h"

namespace {

int Fail(const char* what, int rc) {
  const char* msg = ext4dio_last_error();
  std::fprintf(stderr, "qd_bench: %s: %s (%d)\n", what, msg && *msg ? msg : "failed", rc);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ext4dio random-I/O benchmark (C API queue)"};
  std::string image, path, file_path, backend = "auto", rw = "randwrite";
  uint64_t image_offset = 0, region_offset = 0, region_size = 0, ios = UINT64_MAX, seed = 42;
  uint32_t qd = 32, bs = 4096;
  double seconds = 5;
  bool fixed = false, sqpoll = false, reap_promptly = false, no_batch = false;
  auto* img_opt = app.add_option("--image", image, "Image or unmounted device (image mode)");
  app.add_option("--image-offset", image_offset);
  app.add_option("--path", path, "The file's path inside --image")->needs(img_opt);
  app.add_option("--file", file_path, "A file on a mounted ext4 (mounted mode)")
      ->excludes(img_opt);
  app.add_option("--qd", qd)->check(CLI::Range(1u, 4096u));
  app.add_option("--bs", bs)->check(CLI::Range(512u, 1u << 20));
  app.add_option("--seconds", seconds, "Stop after this long (unless --ios ends it first)");
  app.add_option("--ios", ios, "Stop after exactly this many I/Os; 0: open and set up, then exit");
  app.add_option("--seed", seed, "Seed of the offsets (uring_loop's --seed)");
  app.add_option("--region-offset", region_offset, "First file byte of the range (default 0)");
  app.add_option("--region-size", region_size, "Bytes in the range (default: to the file's end)");
  app.add_option("--backend", backend)->check(CLI::IsMember({"auto", "uring", "sync"}));
  app.add_flag("--fixed-buffers", fixed, "Register the I/O buffers with the ring");
  app.add_flag("--sqpoll", sqpoll, "io_uring SQPOLL");
  app.add_flag("--reap-promptly", reap_promptly,
               "Mounted mode: EXT4DIO_OPEN_REAP_PROMPTLY (as the fio engine by default)");
  app.add_flag("--no-batch", no_batch, "One ext4dio_queue_submit per request");
  app.add_option("--rw", rw)->check(CLI::IsMember({"randwrite", "randread"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (image.empty() == file_path.empty() || (!image.empty() && path.empty())) {
    std::fprintf(stderr, "qd_bench: give --image IMG --path P, or --file FILE\n");
    return 2;
  }
  const bool write = rw == "randwrite";

  ext4dio_target t;
  ext4dio_target_init(&t);
  if (image.empty()) {
    t.path = file_path.c_str();
  } else {
    t.image = image.c_str();
    t.image_offset = image_offset;
    t.path = path.c_str();
  }
  ext4dio_open_opts o;
  ext4dio_open_opts_init(&o);
  o.flags = (write ? EXT4DIO_OPEN_WRITE : 0u) | (sqpoll ? EXT4DIO_OPEN_SQPOLL : 0u) |
            (reap_promptly ? EXT4DIO_OPEN_REAP_PROMPTLY : 0u);
  o.queue_depth = qd;
  o.backend = backend == "uring"  ? EXT4DIO_BACKEND_URING
              : backend == "sync" ? EXT4DIO_BACKEND_SYNC
                                  : EXT4DIO_BACKEND_AUTO;
  ext4dio_file* file = nullptr;
  if (int rc = ext4dio_open(&t, &o, &file); rc < 0) return Fail("open", rc);
  ext4dio_file_info info;
  ext4dio_file_info_init(&info);
  if (int rc = ext4dio_file_get_info(file, &info); rc < 0) return Fail("info", rc);
  ext4dio_queue* queue = nullptr;
  if (int rc = ext4dio_queue_open(file, qd, &queue); rc < 0) return Fail("queue", rc);

  if (region_size == 0) {
    if (region_offset >= info.size) {
      std::fprintf(stderr, "qd_bench: --region-offset is past the file's end\n");
      return 2;
    }
    region_size = info.size - region_offset;
  }
  if (region_offset % bs != 0 || region_offset + region_size > info.size) {
    std::fprintf(stderr, "qd_bench: the region is unaligned or past the file's end\n");
    return 2;
  }
  const uint64_t blocks = region_size / bs;
  if (blocks == 0) {
    std::fprintf(stderr, "qd_bench: the region holds no whole block\n");
    return 2;
  }
  // One region for all buffers, so it can be registered as a fixed buffer.
  char* region = nullptr;
  if (posix_memalign(reinterpret_cast<void**>(&region), 4096, size_t{qd} * bs) != 0) return 1;
  std::memset(region, 0x5a, size_t{qd} * bs);
  if (fixed) {
    if (int rc = ext4dio_queue_register_buffers(queue, region, size_t{qd} * bs); rc < 0) {
      return Fail("register buffers", rc);
    }
  }

  std::mt19937_64 rng(seed);
  uint64_t issued = 0, done = 0;
  std::vector<ext4dio_completion> comps(qd);
  std::vector<ext4dio_request> batch(qd);
  size_t pending = 0;
  auto prep = [&](uint64_t slot) {
    batch[pending++] = ext4dio_request{write ? EXT4DIO_OP_WRITE : EXT4DIO_OP_READ,
                                       region + slot * bs, bs,
                                       region_offset + (rng() % blocks) * bs, slot};
    ++issued;
  };
  auto flush = [&]() -> int {
    if (no_batch) {
      for (size_t i = 0; i < pending; ++i) {
        if (int rc = ext4dio_queue_submit(queue, &batch[i]); rc < 0) return rc;
      }
    } else {
      size_t at = 0;
      while (at < pending) {
        int rc = ext4dio_queue_submit_batch(queue, batch.data() + at, pending - at);
        if (rc < 0) return rc;
        if (rc == 0) return -1;  // started nothing and said nothing: never loop forever
        at += static_cast<size_t>(rc);
      }
    }
    pending = 0;
    return 0;
  };
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  for (uint32_t i = 0; i < qd && issued < ios; ++i) prep(i);
  uint64_t outstanding = issued;
  if (int rc = flush(); rc < 0) return Fail("submit", rc);
  bool stop = false;
  uint64_t next_check = 0;
  while (outstanding > 0) {
    const int got = ext4dio_queue_reap(queue, comps.data(), comps.size(), 1);
    if (got < 0) return Fail("reap", got);
    // The clock every 256 I/Os (done moves by whole batches).
    if (done >= next_check) {
      next_check = done + 256;
      if (std::chrono::steady_clock::now() >= deadline) stop = true;
    }
    for (int i = 0; i < got; ++i) {
      if (comps[i].result != bs) {
        std::fprintf(stderr, "qd_bench: I/O failed: %ld\n", static_cast<long>(comps[i].result));
        return 1;
      }
      ++done;
      --outstanding;
      if (!stop && issued < ios) {
        prep(comps[i].cookie);
        ++outstanding;
      }
    }
    if (int rc = flush(); rc < 0) return Fail("submit", rc);
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"iops\": %.0f, \"qd\": %u, \"bs\": %u, \"seconds\": %.3f, \"ios\": %lu, "
              "\"bytes\": %lu, \"backend\": \"%s\", \"mode\": \"%s\"}\n",
              secs > 0 ? done / secs : 0.0, qd, bs, secs, static_cast<unsigned long>(done),
              static_cast<unsigned long>(done * bs),
              info.backend == EXT4DIO_BACKEND_URING ? "io_uring" : "psync",
              image.empty() ? "mounted" : "image");
  ext4dio_queue_close(queue);
  ext4dio_close(file);
  free(region);
  return 0;
}
