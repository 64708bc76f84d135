// Seed "case 1": 4 KiB random overwrites at QD1 from T threads, for a fixed
// time, over [0, --size) of a fully written file on a mounted ext4, through
// one of three paths:
//
//   --mode ext4dio --file PATH     ext4dio_open (mounted mode) + ext4dio_pwrite
//   --mode kernel  --file PATH     open(PATH, O_RDWR|O_DIRECT) + pwrite
//   --mode raw     --file PATH --device DEV
//                                  the file's extents from FIEMAP, then
//                                  open(DEV, O_RDWR|O_DIRECT) + pwrite at the
//                                  physical offsets of the same blocks
//
// Thread i draws its offsets from splitmix64 seeded with (--seed + i), so every
// mode writes the same sequence of blocks. Prints one JSON line on stdout:
//   {"mode":..,"threads":..,"seconds":..,"ops":..,"iops":..,"mib_per_s":..}
// (ext4dio adds fast_path, fast_bytes, kernel_bytes, lease_breaks, remaps...).
// Any failure: one line on stderr and exit status 1; usage errors exit 2.
// bench/seed_case1.sh runs it on a loop device and tabulates the three modes.
#include <fcntl.h>
#include <getopt.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ext4dio/ext4dio.h"

namespace {

constexpr uint64_t kBlock = 4096;

struct Options {
  std::string mode, file, device;
  unsigned threads = 1;
  double seconds = 5;
  uint64_t size = 0;  // 0: the file's size
  uint64_t seed = 0;
};

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "seed_case1: %s\n", msg.c_str());
  std::exit(1);
}

[[noreturn]] void Usage(const std::string& msg) {
  if (!msg.empty()) std::fprintf(stderr, "seed_case1: %s\n", msg.c_str());
  std::fprintf(stderr,
               "usage: seed_case1 --mode ext4dio|kernel|raw --file PATH [--device DEV]\n"
               "                  [--threads N] [--seconds S] [--size BYTES] [--seed N]\n"
               "  4 KiB random overwrites at QD1 per thread over [0, size) of PATH\n"
               "  (size defaults to the file's size); raw mode writes the same blocks\n"
               "  on DEV (the device PATH's filesystem lives on) at FIEMAP's offsets.\n");
  std::exit(2);
}

bool ParseU64(const char* s, uint64_t* out) {
  if (s == nullptr || *s == '\0' || *s == '-') return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 0);
  if (errno != 0 || end == s) return false;
  uint64_t mult = 1;
  if (*end != '\0') {
    switch (*end) {
      case 'k': case 'K': mult = 1ull << 10; break;
      case 'm': case 'M': mult = 1ull << 20; break;
      case 'g': case 'G': mult = 1ull << 30; break;
      default: return false;
    }
    if (end[1] != '\0') return false;
  }
  if (v > UINT64_MAX / mult) return false;
  *out = v * mult;
  return true;
}

Options Parse(int argc, char** argv) {
  static const option kLong[] = {
      {"mode", required_argument, nullptr, 'm'},   {"file", required_argument, nullptr, 'f'},
      {"device", required_argument, nullptr, 'd'}, {"threads", required_argument, nullptr, 't'},
      {"seconds", required_argument, nullptr, 's'}, {"size", required_argument, nullptr, 'z'},
      {"seed", required_argument, nullptr, 'r'},   {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0}};
  Options o;
  int c;
  while ((c = getopt_long(argc, argv, "", kLong, nullptr)) != -1) {
    uint64_t v = 0;
    switch (c) {
      case 'm': o.mode = optarg; break;
      case 'f': o.file = optarg; break;
      case 'd': o.device = optarg; break;
      case 't':
        if (!ParseU64(optarg, &v) || v == 0 || v > 4096) Usage("--threads: 1..4096");
        o.threads = static_cast<unsigned>(v);
        break;
      case 's': {
        char* end = nullptr;
        o.seconds = std::strtod(optarg, &end);
        if (end == optarg || *end != '\0' || !(o.seconds > 0) || o.seconds > 86400)
          Usage("--seconds: a positive number");
        break;
      }
      case 'z':
        if (!ParseU64(optarg, &o.size) || o.size == 0) Usage("--size: a positive byte count");
        break;
      case 'r':
        if (!ParseU64(optarg, &o.seed)) Usage("--seed: a number");
        break;
      case 'h': Usage("");
      default: Usage("");
    }
  }
  if (optind != argc) Usage(std::string("unexpected argument ") + argv[optind]);
  if (o.mode != "ext4dio" && o.mode != "kernel" && o.mode != "raw")
    Usage("--mode must be ext4dio, kernel or raw");
  if (o.file.empty()) Usage("--file is required");
  if (o.mode == "raw" && o.device.empty()) Usage("--mode raw needs --device");
  if (o.mode != "raw" && !o.device.empty()) Usage("--device is only for --mode raw");
  return o;
}

// splitmix64 (Steele, Lea, Flood 2014): tiny, stateless to seed, and the same
// sequence for the same seed in every mode.
struct SplitMix64 {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

// One logical->physical run from FIEMAP, in bytes.
struct Run {
  uint64_t logical, physical, length;
};

// The file's extents covering [0, size), all written and block-aligned;
// anything else (hole, unwritten, delalloc, inline, encoded...) is an error.
std::vector<Run> Fiemap(const std::string& path, uint64_t size) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die(path + ": open: " + std::strerror(errno));
  constexpr unsigned kBatch = 256;
  std::vector<char> mem(sizeof(fiemap) + kBatch * sizeof(fiemap_extent));
  std::vector<Run> runs;
  uint64_t start = 0;
  bool last = false;
  bool first = true;
  while (!last && start < size) {
    std::fill(mem.begin(), mem.end(), 0);
    auto* fm = reinterpret_cast<fiemap*>(mem.data());
    fm->fm_start = start;
    fm->fm_length = size - start;
    fm->fm_flags = first ? FIEMAP_FLAG_SYNC : 0;
    fm->fm_extent_count = kBatch;
    first = false;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) != 0)
      Die(path + ": FS_IOC_FIEMAP: " + std::strerror(errno));
    if (fm->fm_mapped_extents == 0) break;
    for (unsigned i = 0; i < fm->fm_mapped_extents; ++i) {
      const fiemap_extent& e = fm->fm_extents[i];
      constexpr uint32_t kBad = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                                FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_ENCRYPTED |
                                FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE |
                                FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_UNWRITTEN;
      if (e.fe_flags & kBad) {
        char buf[160];
        std::snprintf(buf, sizeof buf,
                      "extent at file offset %" PRIu64 " has flags 0x%x (unwritten, "
                      "delalloc, inline or unknown): write the file fully first",
                      static_cast<uint64_t>(e.fe_logical), e.fe_flags);
        Die(path + ": " + buf);
      }
      if (e.fe_logical % kBlock || e.fe_physical % kBlock || e.fe_length % kBlock)
        Die(path + ": FIEMAP returned an extent not aligned to 4 KiB");
      runs.push_back({e.fe_logical, e.fe_physical, e.fe_length});
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    const fiemap_extent& l = fm->fm_extents[fm->fm_mapped_extents - 1];
    start = l.fe_logical + l.fe_length;
  }
  close(fd);
  // Must cover [0, size) with no gap.
  uint64_t pos = 0;
  for (const Run& r : runs) {
    if (r.logical > pos) break;
    pos = std::max(pos, r.logical + r.length);
  }
  if (pos < size) {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "FIEMAP: no written extent at file offset %" PRIu64
                  " (hole inside [0, %" PRIu64 ")): write the file fully first",
                  pos, size);
    Die(path + ": " + buf);
  }
  return runs;
}

uint64_t Physical(const std::vector<Run>& runs, uint64_t logical) {
  // Last run starting at or before `logical`.
  auto it = std::upper_bound(runs.begin(), runs.end(), logical,
                             [](uint64_t v, const Run& r) { return v < r.logical; });
  --it;  // Fiemap() proved coverage from 0, so runs[0].logical == 0.
  return it->physical + (logical - it->logical);
}

// The first failure of any thread, reported by main.
std::mutex g_err_mu;
std::string g_err;
std::atomic<bool> g_stop{false};

void Fail(const std::string& msg) {
  {
    std::lock_guard<std::mutex> l(g_err_mu);
    if (g_err.empty()) g_err = msg;
  }
  g_stop.store(true, std::memory_order_relaxed);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);

  struct stat st{};
  if (stat(o.file.c_str(), &st) != 0) Die(o.file + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) Die(o.file + ": not a regular file");
  const uint64_t size = o.size != 0 ? o.size : static_cast<uint64_t>(st.st_size);
  if (size > static_cast<uint64_t>(st.st_size))
    Die(o.file + ": --size " + std::to_string(size) + " is past the end of the file (" +
        std::to_string(st.st_size) + " bytes)");
  const uint64_t blocks = size / kBlock;
  if (blocks == 0) Die(o.file + ": region smaller than one 4 KiB block");

  int fd = -1;
  ext4dio_file* ef = nullptr;
  std::vector<Run> runs;

  if (o.mode == "kernel") {
    fd = open(o.file.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (fd < 0) Die(o.file + ": open O_RDWR|O_DIRECT: " + std::strerror(errno));
  } else if (o.mode == "raw") {
    // Map first, with the file closed again, then open the device.
    runs = Fiemap(o.file, blocks * kBlock);
    struct stat ds{};
    if (stat(o.device.c_str(), &ds) != 0) Die(o.device + ": " + std::strerror(errno));
    if (!S_ISBLK(ds.st_mode)) Die(o.device + ": not a block device");
    // Refuse to write any device but the one the file's filesystem lives on.
    if (ds.st_rdev != st.st_dev) {
      char buf[200];
      std::snprintf(buf, sizeof buf,
                    "%s is device %u:%u but %s lives on %u:%u: refusing to write it",
                    o.device.c_str(), major(ds.st_rdev), minor(ds.st_rdev), o.file.c_str(),
                    major(st.st_dev), minor(st.st_dev));
      Die(buf);
    }
    fd = open(o.device.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (fd < 0) Die(o.device + ": open O_RDWR|O_DIRECT: " + std::strerror(errno));
  } else {
    ext4dio_target t;
    ext4dio_target_init(&t);
    t.path = o.file.c_str();
    ext4dio_open_opts opts;
    ext4dio_open_opts_init(&opts);
    opts.flags = EXT4DIO_OPEN_WRITE;
    int rc = ext4dio_open(&t, &opts, &ef);
    if (rc < 0) {
      const char* m = ext4dio_last_error();
      Die(o.file + ": ext4dio_open: " + (m && *m ? m : ext4dio_strerror(rc)));
    }
  }

  std::vector<uint64_t> ops(o.threads, 0);
  std::atomic<unsigned> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  workers.reserve(o.threads);
  for (unsigned i = 0; i < o.threads; ++i) {
    workers.emplace_back([&, i] {
      void* mem = nullptr;
      if (posix_memalign(&mem, kBlock, kBlock) != 0) {
        Fail("posix_memalign failed");
        ready.fetch_add(1);
        return;
      }
      std::memset(mem, 0x40 + static_cast<int>(i % 64), kBlock);
      SplitMix64 rng{o.seed + i};
      uint64_t n = 0;
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      while (!g_stop.load(std::memory_order_relaxed)) {
        const uint64_t off = (rng.Next() % blocks) * kBlock;
        if (ef != nullptr) {
          const int64_t r = ext4dio_pwrite(ef, mem, kBlock, off);
          if (r != static_cast<int64_t>(kBlock)) {
            const char* m = ext4dio_last_error();
            Fail(o.file + ": ext4dio_pwrite at " + std::to_string(off) + ": " +
                 (r < 0 ? (m && *m ? m : ext4dio_strerror(static_cast<int>(r)))
                        : "short write of " + std::to_string(r) + " bytes"));
            break;
          }
        } else {
          const uint64_t where = runs.empty() ? off : Physical(runs, off);
          const ssize_t r = pwrite(fd, mem, kBlock, static_cast<off_t>(where));
          if (r != static_cast<ssize_t>(kBlock)) {
            const std::string what = runs.empty() ? o.file : o.device;
            Fail(what + ": pwrite at " + std::to_string(where) + ": " +
                 (r < 0 ? std::strerror(errno)
                        : "short write of " + std::to_string(r) + " bytes"));
            break;
          }
        }
        ++n;
      }
      ops[i] = n;
      free(mem);
    });
  }
  while (ready.load() < o.threads) std::this_thread::yield();
  const auto t0 = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  // Sleep in slices so a failing thread ends the run early.
  const auto deadline =
      t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
               std::chrono::duration<double>(o.seconds));
  while (!g_stop.load(std::memory_order_relaxed)) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        deadline - now, std::chrono::milliseconds(20)));
  }
  g_stop.store(true, std::memory_order_relaxed);
  for (auto& w : workers) w.join();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (!g_err.empty()) {
    ext4dio_close(ef);
    if (fd >= 0) close(fd);
    Die(g_err);
  }

  uint64_t total = 0;
  for (uint64_t n : ops) total += n;
  const double iops = static_cast<double>(total) / secs;
  char line[512];
  int len = std::snprintf(line, sizeof line,
                          "{\"mode\":\"%s\",\"threads\":%u,\"seconds\":%.3f,\"ops\":%" PRIu64
                          ",\"iops\":%.0f,\"mib_per_s\":%.1f,\"size\":%" PRIu64,
                          o.mode.c_str(), o.threads, secs, total, iops,
                          iops * kBlock / (1024.0 * 1024.0), blocks * kBlock);
  std::string out(line, static_cast<size_t>(len));
  if (ef != nullptr) {
    ext4dio_stats s;
    ext4dio_stats_init(&s);
    ext4dio_file_info info;
    ext4dio_file_info_init(&info);
    int rc = ext4dio_file_get_stats(ef, &s);
    if (rc < 0) Die(o.file + ": ext4dio_file_get_stats: " + ext4dio_strerror(rc));
    rc = ext4dio_file_get_info(ef, &info);
    if (rc < 0) Die(o.file + ": ext4dio_file_get_info: " + ext4dio_strerror(rc));
    len = std::snprintf(line, sizeof line,
                        ",\"fast_path\":%d,\"fast_bytes\":%" PRIu64 ",\"kernel_bytes\":%" PRIu64
                        ",\"rmw_bytes\":%" PRIu64 ",\"buffered_bytes\":%" PRIu64
                        ",\"lease_breaks\":%" PRIu64 ",\"remaps\":%" PRIu64
                        ",\"mounted\":%d,\"backend\":\"%s\"",
                        info.fast_path, s.fast_bytes, s.kernel_bytes, s.rmw_bytes,
                        s.buffered_bytes, s.lease_breaks, s.remaps, info.mounted,
                        info.backend == EXT4DIO_BACKEND_URING ? "io_uring" : "sync");
    out.append(line, static_cast<size_t>(len));
    if (info.warning != nullptr && *info.warning != '\0') {
      out += ",\"warning\":\"";
      for (const char* p = info.warning; *p; ++p) {
        if (*p == '"' || *p == '\\') out += '\\';
        if (static_cast<unsigned char>(*p) < 0x20) continue;
        out += *p;
      }
      out += '"';
    }
    ext4dio_close(ef);
  } else if (o.mode == "raw") {
    out += ",\"extents\":" + std::to_string(runs.size());
  }
  out += "}";
  std::puts(out.c_str());
  if (fd >= 0 && close(fd) != 0) Die("close: " + std::string(std::strerror(errno)));
  if (std::fflush(stdout) != 0) Die("stdout: " + std::string(std::strerror(errno)));
  return 0;
}
