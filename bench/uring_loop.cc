// The reference for bench/qd_bench: a bare liburing loop writing (or
// reading) random aligned blocks of a byte range of a block device at a fixed
// queue depth, set up as fio's io_uring engine sets up its ring
// (COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN, falling back as fio does),
// with the device as a fixed file and one registered buffer region. Refills
// are submitted as one batch; completions are peeked, and waited for only
// when none is there. The i-th I/O goes to the same offset as qd_bench's i-th
// (std::mt19937_64 with the same seed over the same number of blocks), so
// with --offset at the device byte of qd_bench's --region-offset both write
// the same device bytes in the same order.
// Prints one JSON object: {"iops": N, "qd": N, "bs": N, "seconds": S,
// "ios": N, "bytes": N, "flags": "..."}. bench/hotpath_bench.sh runs it.
#include <fcntl.h>
#include <liburing.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace {

int Fail(const char* what, int err) {
  std::fprintf(stderr, "uring_loop: %s: %s\n", what, std::strerror(err));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bare liburing random-I/O loop (reference for qd_bench)"};
  std::string device, rw = "randwrite", ring_flags = "defer";
  uint64_t offset = 0, size = 0, ios = UINT64_MAX, seed = 42;
  uint32_t qd = 32, bs = 4096;
  double seconds = 5;
  bool no_fixed = false;
  app.add_option("--device", device, "Block device (or file), opened O_DIRECT")->required();
  app.add_option("--offset", offset, "First byte of the range (a multiple of --bs)");
  app.add_option("--size", size, "Bytes in the range (default: to the device's end)");
  app.add_option("--qd", qd)->check(CLI::Range(1u, 4096u));
  app.add_option("--bs", bs)->check(CLI::Range(512u, 1u << 20));
  app.add_option("--seconds", seconds, "Stop after this long (unless --ios ends it first)");
  app.add_option("--ios", ios, "Stop after exactly this many I/Os; 0: set up, then exit");
  app.add_option("--seed", seed, "Seed of the offsets (qd_bench's --seed)");
  app.add_option("--rw", rw)->check(CLI::IsMember({"randwrite", "randread"}));
  app.add_option("--ring-flags", ring_flags,
                 "defer: COOP_TASKRUN|SINGLE_ISSUER|DEFER_TASKRUN (fio); coop: COOP_TASKRUN; "
                 "none")
      ->check(CLI::IsMember({"defer", "coop", "none"}));
  app.add_flag("--no-fixed", no_fixed, "Neither a fixed file nor fixed buffers");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  const bool write = rw == "randwrite";

  const int fd = open(device.c_str(), (write ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return Fail(device.c_str(), errno);
  if (size == 0) {
    const off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0) return Fail("lseek", errno);
    if (static_cast<uint64_t>(end) <= offset) {
      std::fprintf(stderr, "uring_loop: --offset %lu is past the end (%ld)\n",
                   static_cast<unsigned long>(offset), static_cast<long>(end));
      return 2;
    }
    size = static_cast<uint64_t>(end) - offset;
  }
  if (offset % bs != 0) {
    std::fprintf(stderr, "uring_loop: --offset is not a multiple of --bs\n");
    return 2;
  }
  const uint64_t blocks = size / bs;
  if (blocks == 0) {
    std::fprintf(stderr, "uring_loop: the range holds no whole block\n");
    return 2;
  }

  // Set up as fio's engine does (engines/io_uring.c, fio_ioring_queue_init):
  // the strongest flags first, dropped one step on EINVAL (older kernels).
  io_uring ring;
  io_uring_params p{};
  if (ring_flags != "none") p.flags |= IORING_SETUP_COOP_TASKRUN;
  if (ring_flags == "defer") p.flags |= IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  int rc;
  for (;;) {
    rc = io_uring_queue_init_params(qd, &ring, &p);
    if (rc != -EINVAL) break;
    if (p.flags & IORING_SETUP_DEFER_TASKRUN) {
      p.flags &= ~(IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER);
    } else if (p.flags & IORING_SETUP_COOP_TASKRUN) {
      p.flags &= ~IORING_SETUP_COOP_TASKRUN;
    } else {
      break;
    }
  }
  if (rc < 0) return Fail("io_uring_queue_init_params", -rc);
  const char* got_flags = (p.flags & IORING_SETUP_DEFER_TASKRUN)  ? "defer"
                          : (p.flags & IORING_SETUP_COOP_TASKRUN) ? "coop"
                                                                  : "none";

  // One region for all buffers, registered as one fixed buffer (index 0),
  // as qd_bench registers its region with --fixed-buffers.
  char* region = nullptr;
  if (posix_memalign(reinterpret_cast<void**>(&region), 4096, size_t{qd} * bs) != 0) {
    return Fail("posix_memalign", ENOMEM);
  }
  std::memset(region, 0x5a, size_t{qd} * bs);
  if (!no_fixed) {
    iovec iov{region, size_t{qd} * bs};
    if ((rc = io_uring_register_buffers(&ring, &iov, 1)) < 0) {
      return Fail("io_uring_register_buffers", -rc);
    }
    if ((rc = io_uring_register_files(&ring, &fd, 1)) < 0) {
      return Fail("io_uring_register_files", -rc);
    }
  }

  std::mt19937_64 rng(seed);
  uint64_t issued = 0, done = 0, prepared = 0;
  auto prep = [&](uint32_t slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);  // never null: at most qd in flight
    char* buf = region + size_t{slot} * bs;
    const uint64_t off = offset + (rng() % blocks) * bs;
    if (no_fixed) {
      if (write) {
        io_uring_prep_write(sqe, fd, buf, bs, off);
      } else {
        io_uring_prep_read(sqe, fd, buf, bs, off);
      }
    } else {
      if (write) {
        io_uring_prep_write_fixed(sqe, 0, buf, bs, off, 0);
      } else {
        io_uring_prep_read_fixed(sqe, 0, buf, bs, off, 0);
      }
      sqe->flags |= IOSQE_FIXED_FILE;
    }
    io_uring_sqe_set_data64(sqe, slot);
    ++issued;
    ++prepared;
  };

  std::vector<io_uring_cqe*> cqes(qd);
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  for (uint32_t i = 0; i < qd && issued < ios; ++i) prep(i);
  uint64_t outstanding = issued;
  bool stop = false;
  uint64_t next_check = 0;
  while (outstanding > 0) {
    if (prepared > 0) {
      if ((rc = io_uring_submit(&ring)) < 0) return Fail("io_uring_submit", -rc);
      prepared = 0;
    }
    unsigned n = io_uring_peek_batch_cqe(&ring, cqes.data(), qd);
    if (n == 0) {
      io_uring_cqe* cqe;
      if ((rc = io_uring_wait_cqe(&ring, &cqe)) < 0) return Fail("io_uring_wait_cqe", -rc);
      n = io_uring_peek_batch_cqe(&ring, cqes.data(), qd);
    }
    // The clock every 256 I/Os (done moves by whole batches).
    if (done >= next_check) {
      next_check = done + 256;
      if (std::chrono::steady_clock::now() >= deadline) stop = true;
    }
    for (unsigned i = 0; i < n; ++i) {
      if (cqes[i]->res != static_cast<int>(bs)) {
        std::fprintf(stderr, "uring_loop: I/O failed: %d (%s)\n", cqes[i]->res,
                     cqes[i]->res < 0 ? std::strerror(-cqes[i]->res) : "short");
        return 1;
      }
      ++done;
      --outstanding;
      if (!stop && issued < ios) {
        prep(static_cast<uint32_t>(io_uring_cqe_get_data64(cqes[i])));
        ++outstanding;
      }
    }
    io_uring_cq_advance(&ring, n);
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"iops\": %.0f, \"qd\": %u, \"bs\": %u, \"seconds\": %.3f, \"ios\": %lu, "
              "\"bytes\": %lu, \"flags\": \"%s\", \"fixed\": %s}\n",
              secs > 0 ? done / secs : 0.0, qd, bs, secs, static_cast<unsigned long>(done),
              static_cast<unsigned long>(done * bs), got_flags, no_fixed ? "false" : "true");
  io_uring_queue_exit(&ring);
  close(fd);
  free(region);
  return 0;
}
