// Guard for issue 10's "no allocation per I/O": the heap allocations the
// I/O thread makes in steady state, counted by an interposer in this
// executable, must be 0 over >= 100k 4 KiB I/Os (random aligned offsets
// inside written extents, 4 KiB-aligned buffers, writes and reads mixed)
// after a warm-up of twice the queue depth:
//   * submit:  ext4dio_queue_submit + ext4dio_queue_reap at depth 32,
//   * batch:   ext4dio_queue_submit_batch of 8..32 requests + reap,
//   * sync:    ext4dio_pwrite / ext4dio_pread,
// with both backends (io_uring, sync), in image mode (an ext4 image on tmpfs
// made with mkfs.ext4 -d) and in mounted mode (a loop-mounted ext4; root).
//
// The interposer: malloc, calloc, realloc, reallocarray, free,
// aligned_alloc, posix_memalign, memalign, valloc, pvalloc and every
// replaceable operator new/delete, forwarding to glibc's __libc_* functions
// and counting per thread (the library's lease monitor thread is not the
// I/O thread). Under ASan/TSan, whose runtimes own malloc, the same
// per-thread counts come from the sanitizer's allocation hooks instead.
// InterposerTest checks that the counting works.
//
// The binary runs the image-mode cases; with --mounted=CASE it runs only that
// mounted-mode case, and exits 77 (skip) saying why without root and loop
// devices.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ext4dio/ext4dio.h"
#include "gtest/gtest.h"
#include "testutil.h"

// ---------------------------------------------------------------------------
// The counting interposer.

namespace {
// Allocations and frees made by this thread (constinit: no TLS init wrapper,
// so reading them cannot allocate either).
constinit thread_local uint64_t t_allocs = 0;
constinit thread_local uint64_t t_frees = 0;
}  // namespace

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define EXT4DIO_SANITIZER_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define EXT4DIO_SANITIZER_MALLOC 1
#endif
#endif

#ifdef EXT4DIO_SANITIZER_MALLOC
#include <sanitizer/allocator_interface.h>

namespace {
void CountMalloc(const volatile void*, size_t) { ++t_allocs; }
void CountFree(const volatile void*) { ++t_frees; }
// Every allocation through the sanitizer's allocator (malloc and friends,
// operator new) runs the hooks.
[[maybe_unused]] const int hooks_installed =
    __sanitizer_install_malloc_and_free_hooks(CountMalloc, CountFree);
}  // namespace

#else  // glibc's allocator, interposed

extern "C" {
void* __libc_malloc(size_t n);
void* __libc_calloc(size_t n, size_t size);
void* __libc_realloc(void* p, size_t n);
void* __libc_memalign(size_t alignment, size_t n);
void* __libc_valloc(size_t n);
void* __libc_pvalloc(size_t n);
void __libc_free(void* p);

void* malloc(size_t n) noexcept {
  ++t_allocs;
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) noexcept {
  ++t_allocs;
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) noexcept {
  ++t_allocs;
  return __libc_realloc(p, n);
}
void* reallocarray(void* p, size_t n, size_t size) noexcept {
  size_t bytes;
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  ++t_allocs;
  return __libc_realloc(p, bytes);
}
void free(void* p) noexcept {
  if (p != nullptr) ++t_frees;
  __libc_free(p);
}
void* memalign(size_t alignment, size_t n) noexcept {
  ++t_allocs;
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(size_t alignment, size_t n) noexcept {
  ++t_allocs;
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, size_t alignment, size_t n) noexcept {
  if (alignment == 0 || alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0)
    return EINVAL;
  ++t_allocs;
  void* p = __libc_memalign(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
void* valloc(size_t n) noexcept {
  ++t_allocs;
  return __libc_valloc(n);
}
void* pvalloc(size_t n) noexcept {
  ++t_allocs;
  return __libc_pvalloc(n);
}
}  // extern "C"

namespace {
void* CountedNew(size_t n) {
  ++t_allocs;
  void* p = __libc_malloc(n != 0 ? n : 1);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* CountedNewAligned(size_t n, std::align_val_t al) {
  ++t_allocs;
  void* p = __libc_memalign(static_cast<size_t>(al), n != 0 ? n : 1);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void CountedDelete(void* p) noexcept {
  if (p != nullptr) ++t_frees;
  __libc_free(p);
}
}  // namespace

void* operator new(size_t n) { return CountedNew(n); }
void* operator new[](size_t n) { return CountedNew(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  ++t_allocs;
  return __libc_malloc(n != 0 ? n : 1);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  ++t_allocs;
  return __libc_malloc(n != 0 ? n : 1);
}
void* operator new(size_t n, std::align_val_t al) { return CountedNewAligned(n, al); }
void* operator new[](size_t n, std::align_val_t al) { return CountedNewAligned(n, al); }
void* operator new(size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  ++t_allocs;
  return __libc_memalign(static_cast<size_t>(al), n != 0 ? n : 1);
}
void* operator new[](size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  ++t_allocs;
  return __libc_memalign(static_cast<size_t>(al), n != 0 ? n : 1);
}
void operator delete(void* p) noexcept { CountedDelete(p); }
void operator delete[](void* p) noexcept { CountedDelete(p); }
void operator delete(void* p, size_t) noexcept { CountedDelete(p); }
void operator delete[](void* p, size_t) noexcept { CountedDelete(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { CountedDelete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { CountedDelete(p); }
void operator delete(void* p, std::align_val_t) noexcept { CountedDelete(p); }
void operator delete[](void* p, std::align_val_t) noexcept { CountedDelete(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { CountedDelete(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { CountedDelete(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  CountedDelete(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  CountedDelete(p);
}

#endif  // EXT4DIO_SANITIZER_MALLOC

// ---------------------------------------------------------------------------

namespace ext4dio {
namespace {

using testing::LoopMount;
using testing::Quote;
using testing::Sh;
using testing::TempDir;

constexpr uint64_t kBlock = 4096;
constexpr uint32_t kDepth = 32;
constexpr uint64_t kWarmUp = 2 * kDepth;
constexpr uint64_t kIos = 100'000;            // measured I/Os per case
constexpr uint64_t kFileBytes = 32ull << 20;  // all written: every block mapped

// Keeps the compiler from eliding an allocation whose result is unused.
void Escape(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

// ---- The interposer itself.

TEST(InterposerTest, SeesAVectorsAllocation) {
  const uint64_t allocs = t_allocs, frees = t_frees;
  {
    std::vector<int> v(1000);
    Escape(v.data());
  }
  EXPECT_EQ(t_allocs - allocs, 1u);
  EXPECT_EQ(t_frees - frees, 1u);
}

TEST(InterposerTest, SeesTheCAllocators) {
  // Through volatile pointers: the calls cannot be folded away.
  void* (*volatile m)(size_t) = std::malloc;
  void* (*volatile c)(size_t, size_t) = std::calloc;
  void* (*volatile r)(void*, size_t) = std::realloc;
  void* (*volatile a)(size_t, size_t) = std::aligned_alloc;
  int (*volatile pm)(void**, size_t, size_t) = posix_memalign;
  void (*volatile f)(void*) = std::free;
  const uint64_t allocs = t_allocs, frees = t_frees;
  void* p1 = m(100);
  void* p2 = c(10, 10);
  p1 = r(p1, 10000);
  void* p3 = a(4096, 4096);
  void* p4 = nullptr;
  ASSERT_EQ(pm(&p4, 4096, 4096), 0);
  f(p1);
  f(p2);
  f(p3);
  f(p4);
  EXPECT_EQ(t_allocs - allocs, 5u);
  // The sanitizers' realloc also reports freeing the old block.
  EXPECT_GE(t_frees - frees, 4u);
  EXPECT_LE(t_frees - frees, 5u);
}

TEST(InterposerTest, CountsPerThread) {
  uint64_t other_allocs = 0;
  const uint64_t allocs = t_allocs;
  std::thread other([&other_allocs] {
    const uint64_t before = t_allocs;
    for (int i = 0; i < 1000; ++i) {
      std::vector<char> v(64);
      Escape(v.data());
    }
    other_allocs = t_allocs - before;
  });
  other.join();
  EXPECT_EQ(other_allocs, 1000u);
  // Starting the thread allocates a little here (its state, its TLS); the
  // thousand vectors are not counted on this thread.
  EXPECT_LT(t_allocs - allocs, 100u);
}

// ---- The I/O cases.

enum class Mode { kSubmit, kBatch, kSync };

struct Case {
  uint32_t backend;  // EXT4DIO_BACKEND_URING or _SYNC
  Mode mode;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info);

void PrintTo(const Case& c, std::ostream* os) { *os << CaseName({c, 0}); }

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  const char* backend = info.param.backend == EXT4DIO_BACKEND_URING ? "uring" : "sync";
  const char* mode = info.param.mode == Mode::kSubmit  ? "submit"
                     : info.param.mode == Mode::kBatch ? "batch"
                                                       : "pwrite_pread";
  return std::string(backend) + "_" + mode;
}

const Case kCases[] = {
    {EXT4DIO_BACKEND_URING, Mode::kSubmit}, {EXT4DIO_BACKEND_URING, Mode::kBatch},
    {EXT4DIO_BACKEND_URING, Mode::kSync},   {EXT4DIO_BACKEND_SYNC, Mode::kSubmit},
    {EXT4DIO_BACKEND_SYNC, Mode::kBatch},   {EXT4DIO_BACKEND_SYNC, Mode::kSync},
};

// What one run of I/Os did. Filled without allocating (no gtest macros
// while counting): failures are counted and the first one kept.
struct Tally {
  uint64_t ios = 0;
  uint64_t failures = 0;
  int64_t first_failure = 0;  // the result or return code
};

struct AlignedFree {
  void operator()(char* p) const { std::free(p); }
};

class IoLoop {
 public:
  IoLoop(ext4dio_file* file, ext4dio_queue* queue, char* bufs, uint64_t blocks)
      : file_(file), queue_(queue), bufs_(bufs), blocks_(blocks) {}

  Tally Run(Mode mode, uint64_t n) {
    Tally t;
    switch (mode) {
      case Mode::kSubmit: RunQueue(n, /*batched=*/false, t); break;
      case Mode::kBatch: RunQueue(n, /*batched=*/true, t); break;
      case Mode::kSync: RunSync(n, t); break;
    }
    return t;
  }

 private:
  ext4dio_request Request(uint32_t slot) {
    const uint64_t r = rng_();
    return ext4dio_request{(r & 1) ? EXT4DIO_OP_WRITE : EXT4DIO_OP_READ,
                           bufs_ + slot * kBlock, kBlock, ((r >> 1) % blocks_) * kBlock, slot};
  }

  static void Fail(Tally& t, int64_t code) {
    if (t.failures++ == 0) t.first_failure = code;
  }

  // Keeps kDepth requests in flight: each completion's slot is reused.
  void RunQueue(uint64_t n, bool batched, Tally& t) {
    uint32_t free_slots[kDepth];
    uint32_t n_free = 0;
    for (uint32_t s = 0; s < kDepth; ++s) free_slots[n_free++] = s;
    ext4dio_request reqs[kDepth];
    ext4dio_completion done[kDepth];
    uint64_t submitted = 0;
    while (t.ios < n) {
      size_t need = 1;  // completions to wait for
      if (submitted < n) {
        const uint32_t want = static_cast<uint32_t>(
            std::min<uint64_t>(batched ? 8 + rng_() % 25 : n_free, n - submitted));
        if (want > 0 && n_free >= want) {
          for (uint32_t i = 0; i < want; ++i) reqs[i] = Request(free_slots[--n_free]);
          if (batched) {
            const int rc = ext4dio_queue_submit_batch(queue_, reqs, want);
            if (rc != static_cast<int>(want)) return Fail(t, rc);
          } else {
            for (uint32_t i = 0; i < want; ++i) {
              if (const int rc = ext4dio_queue_submit(queue_, &reqs[i]); rc != 0)
                return Fail(t, rc);
            }
          }
          submitted += want;
          continue;
        }
        if (want > 0) need = want - n_free;
      }
      const int got = ext4dio_queue_reap(queue_, done, kDepth, need);
      if (got <= 0) return Fail(t, got);
      for (int i = 0; i < got; ++i) {
        if (done[i].result != static_cast<int64_t>(kBlock)) Fail(t, done[i].result);
        free_slots[n_free++] = static_cast<uint32_t>(done[i].cookie);
        ++t.ios;
      }
    }
  }

  void RunSync(uint64_t n, Tally& t) {
    for (; t.ios < n; ++t.ios) {
      const ext4dio_request r = Request(0);
      const int64_t rc = r.op == EXT4DIO_OP_WRITE
                             ? ext4dio_pwrite(file_, r.buf, r.length, r.offset)
                             : ext4dio_pread(file_, r.buf, r.length, r.offset);
      if (rc != static_cast<int64_t>(kBlock)) Fail(t, rc);
    }
  }

  ext4dio_file* file_;
  ext4dio_queue* queue_;
  char* bufs_;
  uint64_t blocks_;
  std::mt19937_64 rng_{42};
};

// Opens `target` with `c.backend`, warms up and counts this thread's
// allocations over kIos I/Os; fails with the count per I/O.
void ExpectNoAllocationPerIo(const ext4dio_target& target, const Case& c,
                             const std::string& label) {
  ext4dio_open_opts o;
  ext4dio_open_opts_init(&o);
  o.flags = EXT4DIO_OPEN_WRITE;
  o.backend = c.backend;
  o.queue_depth = kDepth;
  ext4dio_file* file = nullptr;
  ASSERT_EQ(ext4dio_open(&target, &o, &file), 0) << ext4dio_last_error();
  std::unique_ptr<ext4dio_file, void (*)(ext4dio_file*)> file_closer(file, ext4dio_close);
  ext4dio_file_info info;
  ext4dio_file_info_init(&info);
  ASSERT_EQ(ext4dio_file_get_info(file, &info), 0);
  ASSERT_EQ(info.backend, c.backend);
  ASSERT_EQ(info.fast_path, 1) << (info.warning ? info.warning : "");
  ASSERT_EQ(info.size, kFileBytes);

  ext4dio_queue* queue = nullptr;
  if (c.mode != Mode::kSync) {
    ASSERT_EQ(ext4dio_queue_open(file, kDepth, &queue), 0) << ext4dio_last_error();
  }
  std::unique_ptr<ext4dio_queue, void (*)(ext4dio_queue*)> queue_closer(queue,
                                                                       ext4dio_queue_close);
  void* p = nullptr;
  ASSERT_EQ(posix_memalign(&p, kBlock, kDepth * kBlock), 0);
  std::unique_ptr<char, AlignedFree> bufs(static_cast<char*>(p));
  std::memset(bufs.get(), 0xa5, kDepth * kBlock);

  IoLoop loop(file, queue, bufs.get(), kFileBytes / kBlock);
  const Tally warm = loop.Run(c.mode, kWarmUp);
  ASSERT_EQ(warm.failures, 0u) << "warm-up: " << warm.failures << " failed, first "
                               << warm.first_failure << " (" << ext4dio_last_error() << ")";
  ext4dio_stats before;
  ext4dio_stats_init(&before);
  ASSERT_EQ(ext4dio_file_get_stats(file, &before), 0);

  const uint64_t allocs = t_allocs, frees = t_frees;
  const Tally t = loop.Run(c.mode, kIos);
  const uint64_t measured_allocs = t_allocs - allocs, measured_frees = t_frees - frees;

  ASSERT_EQ(t.failures, 0u) << t.failures << " I/Os failed, first " << t.first_failure << " ("
                            << ext4dio_last_error() << ")";
  ASSERT_EQ(t.ios, kIos);
  ext4dio_stats after;
  ext4dio_stats_init(&after);
  ASSERT_EQ(ext4dio_file_get_stats(file, &after), 0);
  // Everything measured went straight to the device.
  EXPECT_EQ(after.kernel_requests, before.kernel_requests);
  EXPECT_EQ(after.kernel_read_bytes, before.kernel_read_bytes);
  EXPECT_EQ(after.rmw_requests, before.rmw_requests);
  EXPECT_EQ(after.buffered_requests, before.buffered_requests);
  EXPECT_EQ((after.fast_bytes - before.fast_bytes) + (after.read_bytes - before.read_bytes),
            kIos * kBlock);

  char line[200];
  std::snprintf(line, sizeof line,
                "%s: %.1f allocations per I/O (%llu allocations, %llu frees over %llu I/Os)",
                label.c_str(), static_cast<double>(measured_allocs) / kIos,
                static_cast<unsigned long long>(measured_allocs),
                static_cast<unsigned long long>(measured_frees),
                static_cast<unsigned long long>(kIos));
  std::printf("%s\n", line);
  EXPECT_EQ(measured_allocs, 0u) << line;
}

// ---- Image mode.

class ImageAllocTest : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string src = *dir_ / "src";
    ASSERT_EQ(Sh("mkdir -p " + Quote(src)).exit_code, 0);
    testing::WriteIslands(src + "/data", 1, kFileBytes, kFileBytes, 5);
    testing::MakeFs("ext4", {"-b", "4096"}, src, *dir_ / "fs.img", "96M");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static TempDir* dir_;
};
TempDir* ImageAllocTest::dir_ = nullptr;

TEST_P(ImageAllocTest, NoAllocationPerIo) {
  const std::string image = *dir_ / "fs.img";
  ext4dio_target t;
  ext4dio_target_init(&t);
  t.image = image.c_str();
  t.path = "/data";
  ExpectNoAllocationPerIo(t, GetParam(), "image " + CaseName({GetParam(), 0}));
}

INSTANTIATE_TEST_SUITE_P(Image, ImageAllocTest, ::testing::ValuesIn(kCases), CaseName);

// ---- Mounted mode (root, loop devices: only with --mounted=CASE).

class MountedAllocTest : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    mount_ = new LoopMount({"-b", "4096"}, "96M");
    if (!mount_->ok()) return;
    const std::string path = *mount_ / "data";
    // Written and synced: every block is a written extent at open.
    const testing::RunResult r = Sh("head -c " + std::to_string(kFileBytes) +
                                    " /dev/urandom > " + Quote(path) + " && sync " + Quote(path));
    EXPECT_EQ(r.exit_code, 0) << "writing " << path << ": " << r.err;
  }
  static void TearDownTestSuite() {
    delete mount_;
    mount_ = nullptr;
  }
  static LoopMount* mount_;
};
LoopMount* MountedAllocTest::mount_ = nullptr;

TEST_P(MountedAllocTest, NoAllocationPerIo) {
  ASSERT_TRUE(mount_->ok()) << mount_->error();
  const std::string path = *mount_ / "data";
  ext4dio_target t;
  ext4dio_target_init(&t);
  t.path = path.c_str();
  ExpectNoAllocationPerIo(t, GetParam(), "mounted " + CaseName({GetParam(), 0}));
}

INSTANTIATE_TEST_SUITE_P(Mounted, MountedAllocTest, ::testing::ValuesIn(kCases), CaseName);

}  // namespace
}  // namespace ext4dio

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // --mounted=CASE (uring_submit, sync_pwrite_pread, ...): that one mounted
  // case (each takes seconds on a loop device; one meson test per case keeps
  // each short).
  const char* mounted = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--mounted=", 10) == 0) mounted = argv[i] + 10;
  }
  if (mounted != nullptr) {
    bool known = false;
    for (const auto& c : ext4dio::kCases) known |= ext4dio::CaseName({c, 0}) == mounted;
    if (!known) {
      std::fprintf(stderr, "--mounted=CASE: unknown case %s\n", mounted);
      return 2;
    }
  }
  if (mounted != nullptr) {
    std::string why;
    if (!ext4dio::testing::CanUseLoopDevices(&why)) {
      std::printf("SKIP alloc_guard_test --mounted=%s: %s\n", mounted, why.c_str());
      return 77;
    }
  }
  // The two halves run as two meson tests (the mounted one in the 'mounted'
  // suite); an explicit --gtest_filter wins.
  if (::testing::GTEST_FLAG(filter) == "*") {
    ::testing::GTEST_FLAG(filter) =
        mounted ? std::string("Mounted/*/") + mounted : std::string("-Mounted/*");
  }
  return RUN_ALL_TESTS();
}
