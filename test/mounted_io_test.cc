// Mounted mode I/O on a live ext4 (loop device backed by tmpfs): every write
// path byte-exact and sent where it belongs (fast path vs kernel path, by the
// library's own counters), the lease honoured while writing and while idle,
// a truncating opener whose freed blocks are reused by another file (which
// must stay intact), a device the kernel refuses to open, and no_fallback.
// Needs root and loop devices: exits 77 (skip) saying why when missing.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"
#include "async_queue.h"
#include "errors.h"
#include "ext4dio/ext4dio.hpp"
#include "file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os.h"
#include <nlohmann/json.hpp>
#include "child_process.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::RandomBytes;

using ::testing::HasSubstr;
using testing::LoopMount;
using testing::Quote;
using testing::RunResult;
using testing::Sh;
using Clock = std::chrono::steady_clock;

// The file's bytes as the kernel reads them with O_DIRECT (no page cache).
std::string ReadFileDirect(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) return "<open failed>";
  struct stat st;
  fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size);
  const size_t cap = (size + 4095) / 4096 * 4096 + 4096;
  void* buf = nullptr;
  if (posix_memalign(&buf, 4096, cap) != 0) return "<alloc failed>";
  size_t done = 0;
  while (done < size) {
    ssize_t r = pread(fd, static_cast<char*>(buf) + done, cap - done, static_cast<off_t>(done));
    if (r <= 0) break;
    done += static_cast<size_t>(r);
  }
  close(fd);
  std::string out(static_cast<char*>(buf), std::min(done, size));
  free(buf);
  return out;
}

std::string ReadFileBuffered(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFileBuffered(const std::string& path, const std::string& data, uint64_t offset) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(data.size()));
  ASSERT_EQ(fsync(fd), 0);
  close(fd);
}

// Applies a write to the model of the file's content.
void Apply(std::string& model, uint64_t offset, const std::string& data) {
  if (model.size() < offset + data.size()) model.resize(offset + data.size(), '\0');
  model.replace(offset, data.size(), data);
}

Location At(const std::string& path) {
  Location l;
  l.path = path;
  return l;
}

class MountedIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = std::make_unique<LoopMount>(std::vector<std::string>{"-b", "4096"}, "256M");
    ASSERT_TRUE(mount_->ok()) << mount_->error();
  }
  void TearDown() override { mount_.reset(); }

  // Unmounts, checks the filesystem, mounts again.
  void FsckAndRemount() {
    ASSERT_EQ(testing::Run({"umount", mount_->mount_point()}).exit_code, 0);
    RunResult r = testing::Run({"e2fsck", "-fn", mount_->device()});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    r = testing::Run({"mount", "-t", "ext4", mount_->device(), mount_->mount_point()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  std::unique_ptr<LoopMount> mount_;
};

// Written extent, holes, unwritten extents inside and past EOF, appends,
// unaligned pieces and mixed requests: each lands byte-exact and goes the
// way it should, as the library's counters show.
// Waits (up to 20 s) until the monitor has re-mapped since `remaps` was
// read: kernel-path writes reach the map in batches, off the hot path.
bool WaitForRemap(DirectFile& file, uint64_t remaps) {
  for (int i = 0; i < 20000; ++i) {
    if (file.Stats().remaps > remaps) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

TEST_F(MountedIoTest, EveryPathIsByteExactAndTakesItsPath) {
  const std::string f = *mount_ / "f";
  const uint64_t M = 1 << 20;
  WriteFileBuffered(f, RandomBytes(M, 1), 0);           // [0, 1M) written
  ASSERT_EQ(truncate(f.c_str(), 3 * M), 0);             // [1M, 3M) hole
  {
    int fd = open(f.c_str(), O_RDWR);
    ASSERT_EQ(fallocate(fd, 0, 2 * M, M / 2), 0);                    // unwritten inside
    ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE, 3 * M, M), 0);      // unwritten past EOF
    close(fd);
  }
  std::string model = ReadFileBuffered(f);
  ASSERT_EQ(model.size(), 3 * M);

  DirectFileOptions o;
  o.write = true;
  auto file = DirectFile::Open(At(f), o);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->Info().fast_path, 1) << (file->Info().warning ? file->Info().warning : "");
  ASSERT_EQ(file->Info().mounted, 1);

  struct Case {
    const char* what;
    uint64_t offset, length;
    uint64_t fast, kernel;  // expected byte counts (fast includes RMW)
  };
  const Case cases[] = {
      {"aligned overwrite", 128 * 1024, 64 * 1024, 64 * 1024, 0},
      {"hole fill", M + 64 * 1024, 64 * 1024, 0, 64 * 1024},
      {"unwritten inside EOF", 2 * M + 4096, 32 * 1024, 0, 32 * 1024},
      {"append past EOF, unaligned", 3 * M, 10000, 0, 10000},
      {"unaligned head and tail in written data", 100, 5000, 5000, 0},
      // [1M-128K, 1M) written; [1M, 1M+64K) hole; [1M+64K, 1M+128K) written
      // by the hole fill above, so fast only if the re-map worked.
      {"mixed: written, hole, re-mapped", M - 128 * 1024, 256 * 1024, 192 * 1024, 64 * 1024},
      {"the filled hole again", M + 64 * 1024, 64 * 1024, 64 * 1024, 0},
      {"unaligned into a hole", 2 * M + 600 * 1024 + 7, 3000, 0, 3000},
  };
  uint32_t seed = 100;
  for (const Case& c : cases) {
    const ext4dio_stats before = file->Stats();
    const std::string data = RandomBytes(c.length, seed++);
    ASSERT_TRUE(file->Pwrite(data.data(), data.size(), c.offset).ok()) << c.what;
    Apply(model, c.offset, data);
    const ext4dio_stats after = file->Stats();
    if (c.kernel > 0) {
      // The kernel path's ranges are re-mapped by the monitor, off the hot
      // path: wait for it (a filled hole is fast from then on).
      ASSERT_TRUE(WaitForRemap(*file, before.remaps)) << c.what;
    }
    EXPECT_EQ((after.fast_bytes + after.rmw_bytes) - (before.fast_bytes + before.rmw_bytes),
              c.fast)
        << c.what;
    EXPECT_EQ(after.kernel_bytes - before.kernel_bytes, c.kernel) << c.what;
    EXPECT_EQ(after.buffered_bytes, 0u) << c.what << ": mounted mode never writes buffered";
  }
  EXPECT_GE(file->Stats().remaps, 4u);
  EXPECT_EQ(file->Info().size, model.size());

  std::string back(model.size() + 4096, 'x');
  auto n = file->Pread(back.data(), back.size(), 0);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, model.size());
  back.resize(*n);
  EXPECT_TRUE(back == model) << "read through the library differs";
  ASSERT_TRUE(file->Sync().ok());
  file->Close();

  EXPECT_TRUE(ReadFileDirect(f) == model) << "O_DIRECT read through the kernel differs";
  EXPECT_TRUE(ReadFileBuffered(f) == model) << "buffered read after close differs";
  FsckAndRemount();
  EXPECT_TRUE(ReadFileBuffered(f) == model) << "content after remount differs";
}

// The kernel path's ranges reach the map in batches, off the hot path, and
// most of the map is never re-read: unwritten blocks a clean O_DIRECT write
// covered become written in place, holes ask FIEMAP. Whatever the batching,
// the map the handle ends with must be the file's: block by block the same
// kind and physical block as the kernel's FIEMAP (read here, independently
// of the library), and the bytes those of the model. Reads right after a
// kernel-path write (its range still pending) return what it wrote.
TEST_F(MountedIoTest, BatchedRemapEqualsTheKernelsMapBlockByBlock) {
  const std::string f = *mount_ / "f";
  constexpr uint64_t kSize = 16 << 20, kBlock = 4096;
  {
    int fd = open(f.c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fallocate(fd, 0, 0, kSize / 2), 0);  // [0, 8M) unwritten; [8M, 16M) a hole
    ASSERT_EQ(ftruncate(fd, kSize), 0);
    ASSERT_EQ(fsync(fd), 0);
    close(fd);
  }
  auto file = File::Open(testing::MountedWriterOptions(f));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE((*file)->fast_path()) << (*file)->warning();

  std::string model(kSize, '\0');
  std::mutex model_mu;
  std::atomic<int> bad{0};
  std::string first_bad;
  auto note_bad = [&](const std::string& what) {
    std::lock_guard<std::mutex> lock(model_mu);
    if (bad++ == 0) first_bad = what;
  };
  // 4 threads on disjoint quarters (each half unwritten, half hole across
  // them): aligned writes of 1-4 blocks, each read back at once; thread 3
  // through an async queue, 8 in flight.
  auto worker = [&](int t) {
    std::mt19937_64 rng(1000 + t);
    const uint64_t base = t * (kSize / 4);
    const uint64_t blocks = kSize / 4 / kBlock;
    AlignedBuf buf = AllocAligned(4096, 4 * kBlock);
    AlignedBuf back = AllocAligned(4096, 4 * kBlock);
    std::unique_ptr<AsyncQueue> q;
    if (t == 3) {
      auto made = (*file)->NewAsyncQueue(8);
      if (!made.ok()) return note_bad(std::string(made.status().message()));
      q = std::move(*made);
    }
    for (int i = 0; i < 400; ++i) {
      const uint64_t n = (1 + rng() % 4) * kBlock;
      const uint64_t off = base + (rng() % (blocks - 4)) * kBlock;
      const std::string data = RandomBytes(n, rng);
      std::memcpy(buf.get(), data.data(), n);
      if (q) {
        AsyncRequest r{true, buf.get(), n, off, static_cast<uint64_t>(i)};
        if (absl::Status s = q->Submit(r); !s.ok()) return note_bad(std::string(s.message()));
        AsyncCompletion c;
        auto got = q->Reap(absl::MakeSpan(&c, 1), 1);
        if (!got.ok() || *got != 1 || c.result != static_cast<int64_t>(n))
          return note_bad("async write failed");
        AsyncRequest rd{false, back.get(), n, off, 0};
        if (absl::Status s = q->Submit(rd); !s.ok()) return note_bad(std::string(s.message()));
        got = q->Reap(absl::MakeSpan(&c, 1), 1);
        if (!got.ok() || *got != 1 || c.result != static_cast<int64_t>(n))
          return note_bad("async read failed");
      } else {
        auto w = (*file)->Pwrite(buf.get(), n, off);
        if (!w.ok() || *w != n) return note_bad("write failed");
        auto r = (*file)->Pread(back.get(), n, off);
        if (!r.ok() || *r != n) return note_bad("read failed");
      }
      if (std::memcmp(back.get(), data.data(), n) != 0)
        return note_bad(absl::StrFormat("thread %d: read right after writing %d bytes at %d "
                                        "differs",
                                        t, n, off));
      std::lock_guard<std::mutex> lock(model_mu);
      model.replace(off, n, data);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  ASSERT_EQ(bad.load(), 0) << first_bad;
  EXPECT_GT((*file)->stats().kernel_bytes, 0u);
  EXPECT_GT((*file)->stats().remaps, 0u);

  // The handle's map (a snapshot shows every completed write), then the
  // kernel's, after the handle is gone.
  std::shared_ptr<const MapState> snap = (*file)->snapshot();
  ASSERT_TRUE((*file)->fast_path()) << (*file)->warning();
  // The written set the batches merged is the one the map gives.
  EXPECT_TRUE(snap->written == WrittenSet(snap->loaded.map));
  {
    // A second pass over a re-mapped block is a fast-path write.
    const FileStats before = (*file)->stats();
    AlignedBuf buf = AllocAligned(4096, kBlock);
    uint64_t off = 0;
    for (; off < kSize; off += kBlock) {
      const Segment seg = snap->loaded.map.SegmentAt(off, kBlock);
      if (seg.kind == SegmentKind::kMapped) break;
    }
    ASSERT_LT(off, kSize);
    std::memcpy(buf.get(), model.data() + off, kBlock);
    ASSERT_TRUE((*file)->Pwrite(buf.get(), kBlock, off).ok());
    EXPECT_EQ((*file)->stats().fast_bytes - before.fast_bytes, kBlock);
  }
  file->reset();

  int fd = open(f.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<uint64_t> fm_storage((sizeof(fiemap) + 512 * sizeof(fiemap_extent)) / 8 + 1);
  std::vector<int> kernel(kSize / kBlock, 0);  // 0 hole, 1 written, 2 unwritten
  std::vector<uint64_t> phys(kSize / kBlock, 0);
  uint64_t start = 0;
  for (;;) {
    std::fill(fm_storage.begin(), fm_storage.end(), 0);
    auto* fm = reinterpret_cast<fiemap*>(fm_storage.data());
    fm->fm_start = start;
    fm->fm_length = kSize - start;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = 512;
    ASSERT_EQ(ioctl(fd, FS_IOC_FIEMAP, fm), 0) << strerror(errno);
    if (fm->fm_mapped_extents == 0) break;
    bool last = false;
    for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
      const fiemap_extent& e = fm->fm_extents[i];
      for (uint64_t b = e.fe_logical / kBlock;
           b < (e.fe_logical + e.fe_length) / kBlock && b < kernel.size(); ++b) {
        kernel[b] = (e.fe_flags & FIEMAP_EXTENT_UNWRITTEN) ? 2 : 1;
        phys[b] = e.fe_physical / kBlock + (b - e.fe_logical / kBlock);
      }
      start = e.fe_logical + e.fe_length;
      last |= (e.fe_flags & FIEMAP_EXTENT_LAST) != 0;
    }
    if (last || start >= kSize) break;
  }
  close(fd);
  int differ = 0;
  for (uint64_t b = 0; b < kernel.size(); ++b) {
    const Segment seg = snap->loaded.map.SegmentAt(b * kBlock, kBlock);
    const int ours = seg.kind == SegmentKind::kMapped      ? 1
                     : seg.kind == SegmentKind::kUnwritten ? 2
                                                           : 0;
    const uint64_t our_phys = ours ? seg.device_offset / kBlock : 0;
    if (ours != kernel[b] || our_phys != phys[b]) {
      if (differ++ < 5) {
        ADD_FAILURE() << "block " << b << ": ours kind " << ours << " at " << our_phys
                      << ", the kernel's kind " << kernel[b] << " at " << phys[b];
      }
    }
  }
  EXPECT_EQ(differ, 0) << "blocks whose kind or place differ";
  EXPECT_TRUE(ReadFileDirect(f) == model) << "O_DIRECT read through the kernel differs";
  FsckAndRemount();
  EXPECT_TRUE(ReadFileBuffered(f) == model) << "content after remount differs";
}

TEST_F(MountedIoTest, NoFallbackRefusesBeforeWritingAnything) {
  const std::string f = *mount_ / "f";
  WriteFileBuffered(f, RandomBytes(256 * 1024, 2), 0);
  ASSERT_EQ(truncate(f.c_str(), 512 * 1024), 0);
  const std::string model = ReadFileBuffered(f);
  DirectFileOptions o;
  o.write = true;
  o.no_fallback = true;
  auto file = DirectFile::Open(At(f), o);
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string data = RandomBytes(128 * 1024, 3);
  absl::Status s = file->Pwrite(data.data(), data.size(), 192 * 1024);  // written + hole
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(CodeOfStatus(s), -EXT4DIO_E_NEEDS_ALLOCATION) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("no_fallback"));
  s = file->Pwrite(data.data(), data.size(), 512 * 1024);  // past EOF
  EXPECT_EQ(CodeOfStatus(s), -EXT4DIO_E_NEEDS_ALLOCATION) << s;
  EXPECT_EQ(file->Stats().fast_bytes, 0u);
  EXPECT_EQ(file->Stats().kernel_bytes, 0u);
  // An overwrite still works.
  ASSERT_TRUE(file->Pwrite(data.data(), 64 * 1024, 0).ok());
  file->Close();
  std::string expect = model;
  Apply(expect, 0, data.substr(0, 64 * 1024));
  EXPECT_TRUE(ReadFileBuffered(f) == expect);
}

// The kernel refuses to open the device (bdev_allow_write_mounted=0, or no
// permission): everything runs on the kernel path, with a warning.
class RefuseDeviceOs : public Os {
 public:
  explicit RefuseDeviceOs(int err) : err_(err) {}
  int Open(const char* path, int flags, mode_t mode) override {
    if (std::strncmp(path, "/dev/", 5) == 0) return -err_;
    return Os::Open(path, flags, mode);
  }

 private:
  int err_;
};

TEST_F(MountedIoTest, RefusedDeviceMeansKernelPathOnlyWithAWarning) {
  for (int err : {EBUSY, EPERM}) {
    const std::string f = *mount_ / ("f" + std::to_string(err));
    WriteFileBuffered(f, RandomBytes(256 * 1024, 4), 0);
    std::string model = ReadFileBuffered(f);
    RefuseDeviceOs os(err);
    auto file = File::Open(testing::MountedWriterOptions(f, &os));
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_FALSE((*file)->fast_path());
    EXPECT_THAT((*file)->warning(), HasSubstr("cannot open"));
    if (err == EBUSY) EXPECT_THAT((*file)->warning(), HasSubstr("bdev_allow_write_mounted"));
    const std::string data = RandomBytes(100 * 1024, 5);
    auto w = (*file)->Pwrite(data.data(), data.size(), 4096);  // an overwrite
    ASSERT_TRUE(w.ok()) << w.status();
    Apply(model, 4096, data);
    w = (*file)->Pwrite(data.data(), data.size(), 300 * 1024);  // past EOF
    ASSERT_TRUE(w.ok()) << w.status();
    Apply(model, 300 * 1024, data);
    EXPECT_EQ((*file)->stats().fast_bytes, 0u);
    EXPECT_EQ((*file)->stats().kernel_bytes, 2 * data.size());
    std::string back(model.size(), '\0');
    auto r = (*file)->Pread(back.data(), back.size(), 0);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(back == model);
    EXPECT_TRUE((*file)->Sync().ok());
    file->reset();
    EXPECT_TRUE(ReadFileDirect(f) == model);
  }
}

// Writes 4 KiB random overwrites of `byte` into [0, span) until stopped,
// sleeping `idle` between writes; counts errors other than ENOSPC.
struct Writer {
  DirectFile* file;
  uint64_t span;
  char byte;
  std::chrono::milliseconds idle{0};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> errors{0};
  std::string first_error;
  std::thread thread;

  void Start() {
    thread = std::thread([this] {
      std::mt19937_64 rng(7);
      void* buf = nullptr;
      if (posix_memalign(&buf, 4096, 4096) != 0) return;
      std::memset(buf, byte, 4096);
      while (!stop) {
        const uint64_t off = rng() % (span / 4096) * 4096;
        absl::Status s = file->Pwrite(buf, 4096, off);
        if (!s.ok() && CodeOfStatus(s) != -ENOSPC) {
          if (errors++ == 0) first_error = std::string(s.message());
        }
        ++writes;
        if (idle.count() > 0) std::this_thread::sleep_for(idle);
      }
      free(buf);
    });
  }
  void Stop() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
  // A failed ASSERT returns early: never leave the thread running.
  ~Writer() { Stop(); }
};

// Another process opening the file (read-only, then read-write) breaks the
// lease: it gets in at once, our writes continue on the kernel path, and
// the fast path comes back once the file is free again.
TEST_F(MountedIoTest, OtherOpenersGetInPromptlyAndTheFastPathComesBack) {
  for (int idle_ms : {0, 50}) {
    SCOPED_TRACE(idle_ms ? "writer idle between writes" : "writer busy");
    const std::string f = *mount_ / ("lease" + std::to_string(idle_ms));
    WriteFileBuffered(f, std::string(4 << 20, 'z'), 0);
    DirectFileOptions o;
    o.write = true;
    auto file = DirectFile::Open(At(f), o);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ(file->Info().fast_path, 1);
    Writer w{&*file, 4 << 20, 'w'};
    w.idle = std::chrono::milliseconds(idle_ms);
    w.Start();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));

    // A reader holds the file open for 300 ms; its open must not wait out
    // lease-break-time (45 s).
    auto t0 = Clock::now();
    RunResult r = Sh("exec 3<" + Quote(f) + "; sleep 0.3");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const double open_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - t0).count() - 300.0;
    std::printf("read-only opener got in after %.1f ms\n", open_ms);
    EXPECT_LT(open_ms, 1000.0);
    const ext4dio_stats mid = file->Stats();
    EXPECT_GE(mid.lease_breaks, 1u);
    if (idle_ms == 0) EXPECT_GT(mid.kernel_bytes, 0u) << "writes went on during the break";

    // Once the fast path is back, a writer opens it and writes its own bytes.
    auto back_on = Clock::now() + std::chrono::seconds(5);
    while (file->Info().fast_path != 1 && Clock::now() < back_on)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(file->Info().fast_path, 1) << "the fast path did not come back";
    t0 = Clock::now();
    r = Sh("printf 'OTHER' | dd of=" + Quote(f) + " bs=1 seek=4194299 conv=notrunc status=none");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const double write_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::printf("read-write opener done after %.1f ms\n", write_ms);
    EXPECT_LT(write_ms, 1000.0);
    EXPECT_GE(file->Stats().lease_breaks, 2u);

    // Free again: the fast path returns with a fresh lease and map.
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (file->Info().fast_path != 1 && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(file->Info().fast_path, 1);
    const uint64_t fast_before = file->Stats().fast_bytes;
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    w.Stop();
    EXPECT_EQ(w.errors.load(), 0u) << w.first_error;
    if (idle_ms == 0) EXPECT_GT(file->Stats().fast_bytes, fast_before);

    // Every byte is the original, ours, or the other writer's.
    std::string back(5, '\0');
    ASSERT_TRUE(file->Pread(back.data(), 5, 4194299).ok());
    file->Close();
    const std::string now = ReadFileBuffered(f);
    EXPECT_EQ(now.size(), 4u << 20);
    EXPECT_EQ(now.find_first_not_of("zwOTHER"), std::string::npos);
  }
}

// A blocking truncating open while we write: it must not wait out the
// lease-break-time, and once another file reuses the freed blocks no
// fast-path write of ours may land there.
TEST_F(MountedIoTest, TruncatedBlocksReusedByAnotherFileStayUntouched) {
  for (int idle_ms : {0, 20}) {
    SCOPED_TRACE(idle_ms ? "writer idle between writes" : "writer busy");
    mount_.reset();
    mount_ = std::make_unique<LoopMount>(std::vector<std::string>{"-b", "4096"}, "96M");
    ASSERT_TRUE(mount_->ok()) << mount_->error();
    const std::string a = *mount_ / "a", b = *mount_ / "b";
    WriteFileBuffered(a, std::string(24 << 20, 'a'), 0);
    DirectFileOptions o;
    o.write = true;
    auto file = DirectFile::Open(At(a), o);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ(file->Info().fast_path, 1);
    // Overwrites within the first 4 MiB: after the truncate they allocate
    // again, at most 4 MiB, so b below has room.
    Writer w{&*file, 4 << 20, 'W'};
    w.idle = std::chrono::milliseconds(idle_ms);
    w.Start();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));

    // `: > a` opens O_TRUNC without O_NONBLOCK: it waits for our release.
    auto t0 = Clock::now();
    RunResult r = Sh(": > " + Quote(a) + " && sync");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::printf("truncating open + sync took %.1f ms\n", ms);
    EXPECT_LT(ms, 5000.0) << "the truncate waited for the lease-break-time";

    // b takes (nearly) all free space, so it reuses a's old blocks.
    struct statvfs vfs;
    ASSERT_EQ(statvfs(mount_->mount_point().c_str(), &vfs), 0);
    const uint64_t free_bytes = vfs.f_bavail * vfs.f_frsize;
    const uint64_t b_size = (free_bytes - (8 << 20)) / (1 << 20) * (1 << 20);
    r = Sh("dd if=/dev/zero bs=1M count=" + std::to_string(b_size >> 20) +
           " status=none | tr '\\000' B | dd of=" + Quote(b) +
           " bs=1M iflag=fullblock oflag=direct status=none && sync");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    w.Stop();
    EXPECT_EQ(w.errors.load(), 0u) << w.first_error;
    const ext4dio_stats st = file->Stats();
    EXPECT_GE(st.lease_breaks, 1u);
    EXPECT_GT(st.kernel_bytes, 0u) << "the writer went on through the kernel";
    file->Close();

    const std::string content = ReadFileDirect(b);
    EXPECT_EQ(content.size(), b_size);
    EXPECT_EQ(content.find_first_not_of('B'), std::string::npos)
        << "a write of ours landed in b at byte " << content.find_first_not_of('B');
    const std::string a_now = ReadFileDirect(a);
    EXPECT_EQ(a_now.find_first_not_of(std::string("W\0", 2)), std::string::npos)
        << "a holds only zeros (holes) and our writes after the truncate";
    FsckAndRemount();
  }
}

// An asynchronous queue's owner that submitted fast-path writes and then
// sleeps without reaping must not hold up another process's open: the gate
// sees the completions without the owner (its ring posts them itself).
TEST_F(MountedIoTest, IdleAsyncOwnerDoesNotHoldUpALeaseBreak) {
  const std::string f = *mount_ / "f";
  WriteFileBuffered(f, std::string(1 << 20, 'a'), 0);
  DirectFileOptions o;
  o.write = true;
  auto file = DirectFile::Open(At(f), o);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->Info().fast_path, 1);
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, 8 * 4096), 0);
  std::memset(buf, 'q', 8 * 4096);
  std::mutex mu;
  std::condition_variable cv;
  bool submitted = false, wake = false;
  int reaped = -1;
  std::thread owner([&] {
    ext4dio_queue* q = nullptr;
    if (ext4dio_queue_open(file->get(), 8, &q) != 0) return;
    for (int i = 0; i < 8; ++i) {
      ext4dio_request r = {EXT4DIO_OP_WRITE, static_cast<char*>(buf) + i * 4096, 4096,
                           static_cast<uint64_t>(i) * 8192, static_cast<uint64_t>(i)};
      if (ext4dio_queue_submit(q, &r) != 0) break;
    }
    std::unique_lock<std::mutex> lock(mu);
    submitted = true;
    cv.notify_all();
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return wake; });  // idle
    ext4dio_completion c[8];
    reaped = ext4dio_queue_reap(q, c, 8, 8);
    ext4dio_queue_close(q);
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return submitted; });
  }
  const auto t0 = Clock::now();
  RunResult r = Sh("cat " + Quote(f) + " > /dev/null");
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("reader got in after %.1f ms while the async owner slept\n", ms);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LT(ms, 1000.0);
  {
    std::lock_guard<std::mutex> lock(mu);
    wake = true;
  }
  cv.notify_all();
  owner.join();
  EXPECT_EQ(reaped, 8);
  free(buf);
  file->Close();
  const std::string now = ReadFileBuffered(f);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(now[static_cast<size_t>(i) * 8192], 'q') << i;
}

// The CLIs on a mounted file: --json counts show written extents went fast
// and allocation went to the kernel; --dry-run shows kernel pieces;
// --no-fallback refuses (exit 1, nothing written).
TEST_F(MountedIoTest, ClisReportWhichPathTheBytesTook) {
  using Json = nlohmann::json;
  const std::string f = *mount_ / "f";
  WriteFileBuffered(f, RandomBytes(1 << 20, 8), 0);  // [0, 1M) written, EOF 1M
  testing::TempDir tmp;
  const std::string payload = RandomBytes(1 << 20, 9), in = tmp / "in";
  {
    std::ofstream out(in, std::ios::binary);
    out << payload;
  }
  // 512K..1.5M: half overwrite, half append.
  RunResult r = testing::Run({testing::ToolPath("ext4dio-write"), "--dry-run", "--json",
                              "--offset", "512K", "--input", in, f});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json plan = Json::parse(r.out)["plan"];
  ASSERT_FALSE(plan.empty());
  EXPECT_EQ(plan.back()["kind"], "kernel") << r.out;
  EXPECT_EQ(plan.back()["file_offset"], 1 << 20);

  r = testing::Run({testing::ToolPath("ext4dio-write"), "--no-fallback", "--json", "--offset",
                    "512K", "--input", in, f});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--no-fallback"));
  EXPECT_EQ(ReadFileBuffered(f).size(), 1u << 20) << "nothing written";

  r = testing::Run({testing::ToolPath("ext4dio-write"), "--json", "--sync", "--verify",
                    "--offset", "512K", "--input", in, f});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["bytes"], 1 << 20);
  EXPECT_EQ(j["fast_path_bytes"], 512 * 1024) << r.out;
  EXPECT_EQ(j["kernel_path_bytes"], 512 * 1024) << r.out;
  EXPECT_EQ(j["fast_path"], true);
  EXPECT_EQ(j["verified"], true);

  r = testing::Run({testing::ToolPath("ext4dio-read"), "--json", "--output", tmp / "out",
                    "--offset", "512K", f});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = Json::parse(r.out);
  EXPECT_EQ(j["bytes"], 1 << 20);
  EXPECT_EQ(j["fast_path_bytes"], 1 << 20);
  EXPECT_EQ(j["kernel_path_bytes"], 0);
  std::ifstream back(tmp / "out", std::ios::binary);
  std::stringstream ss;
  ss << back.rdbuf();
  EXPECT_TRUE(ss.str() == payload);
}

// ext4dio-read's --output and ext4dio-write's --input must not be the file
// itself (by name, hard link, symlink, standard input/output), the block
// device under the mounted filesystem, or the image file behind that loop
// device; nor, in image mode, the image through a loop device over it.
// Each is refused (exit 1, "same file" or "loop device over"), the file and
// the filesystem unchanged. Before, --output F F emptied F and exit 0.
TEST_F(MountedIoTest, ClisRefuseTheTargetItsDeviceAndItsImageAsTheOtherFile) {
  const std::string f = *mount_ / "f", hard = *mount_ / "hard", sym = *mount_ / "sym";
  const std::string content = RandomBytes(256 << 10, 41);
  WriteFileBuffered(f, content, 0);
  ASSERT_EQ(link(f.c_str(), hard.c_str()), 0);
  ASSERT_EQ(symlink(f.c_str(), sym.c_str()), 0);
  Sh("sync");
  const std::string read = testing::ToolPath("ext4dio-read"),
                    write = testing::ToolPath("ext4dio-write");
  auto check = [&](const RunResult& r, const std::string& what) {
    EXPECT_EQ(r.exit_code, 1) << what << ": " << r.err;
    EXPECT_TRUE(r.err.find("are the same file") != std::string::npos ||
                r.err.find("is a loop device over") != std::string::npos)
        << what << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("nothing written")) << what;
    EXPECT_TRUE(ReadFileDirect(f) == content) << what << " changed the file";
  };
  for (const std::string& other : {f, hard, sym, mount_->device(), mount_->image()}) {
    check(testing::Run({read, "--output", other, f}), "ext4dio-read --output " + other);
    check(testing::Run({write, "--input", other, "--length", "4096", f}),
          "ext4dio-write --input " + other);
  }
  check(Sh(Quote(read) + " " + Quote(f) + " >> " + Quote(hard)), "ext4dio-read F >> F");
  check(Sh(Quote(write) + " --length 4096 " + Quote(f) + " < " + Quote(sym)),
        "ext4dio-write F < F");

  // Image mode through a loop device over an unmounted image, both ways.
  testing::TempDir tmp;
  ASSERT_EQ(Sh("mkdir -p " + Quote(tmp / "src")).exit_code, 0);
  testing::WriteFile(tmp / "src/g", content);
  const std::string img = tmp / "g.img";
  testing::MakeFs("ext4", {"-b", "4096"}, tmp / "src", img, "16M");
  RunResult r = testing::Run({"losetup", "--find", "--show", img});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string loop = r.out.substr(0, r.out.find('\n'));
  struct Detach {
    std::string dev;
    ~Detach() { testing::Run({"losetup", "-d", dev}); }
  } detach{loop};
  const std::string img_before = testing::ReadFile(img);
  for (const auto& [image, other] : std::vector<std::pair<std::string, std::string>>{
           {loop, img}, {img, loop}, {loop, loop}}) {
    const std::string what = "--image " + image + " with " + other;
    r = testing::Run({read, "--image", image, "--output", other, "/g"});
    EXPECT_EQ(r.exit_code, 1) << what << ": " << r.err;
    r = testing::Run({write, "--image", image, "--input", other, "--length", "4096", "/g"});
    EXPECT_EQ(r.exit_code, 1) << what << ": " << r.err;
    EXPECT_TRUE(testing::ReadFile(img) == img_before) << what << " changed the image";
  }
  FsckAndRemount();
  EXPECT_TRUE(ReadFileDirect(f) == content);
}

// ENOSPC on the kernel path with four threads and eight requests each in
// flight: exit 1, and the count reported (text and --json) is a prefix:
// the file holds exactly the input's first N bytes and nothing after them
// (its size is N). Before, chunks after the failed one were written (and
// counted), leaving a hole inside the "written" range.
TEST_F(MountedIoTest, EnospcReportsAPrefixAndWritesNothingAfterIt) {
  mount_ = std::make_unique<LoopMount>(std::vector<std::string>{"-b", "4096", "-m", "0"}, "16M");
  ASSERT_TRUE(mount_->ok()) << mount_->error();
  testing::TempDir tmp;
  const std::string in = tmp / "in";
  const std::string data = RandomBytes(6 << 20, 42);
  testing::WriteFile(in, data);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string t = *mount_ / ("t" + std::to_string(round));
    // Leave about 2 MiB free: filler takes the rest.
    const std::string filler = *mount_ / "filler";
    unlink(filler.c_str());
    Sh("sync");
    struct statvfs vfs;
    ASSERT_EQ(statvfs(mount_->mount_point().c_str(), &vfs), 0);
    const uint64_t free_bytes = vfs.f_bavail * vfs.f_frsize;
    ASSERT_GT(free_bytes, 3u << 20);
    const uint64_t fill = (free_bytes - (2 << 20) - round * 12288) / 4096;
    ASSERT_EQ(Sh("dd if=/dev/zero of=" + Quote(filler) + " bs=4096 count=" +
                 std::to_string(fill) + " status=none && : > " + Quote(t) + " && sync")
                  .exit_code,
              0);
    RunResult r = testing::Run({testing::ToolPath("ext4dio-write"), "--threads", "4", "--io-size",
                                "64K", "--queue-depth", "8", "--json", "--input", in, t});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr("bytes written"));
    nlohmann::json j = nlohmann::json::parse(r.out);
    const uint64_t n = j["bytes"].get<uint64_t>();
    EXPECT_THAT(r.err, HasSubstr(std::to_string(n) + " bytes written"));
    EXPECT_GT(n, 0u);
    EXPECT_LT(n, data.size());
    const std::string now = ReadFileDirect(t);
    EXPECT_EQ(now.size(), n) << "bytes after the reported prefix were written";
    EXPECT_TRUE(now.substr(0, std::min<size_t>(n, now.size())) ==
                data.substr(0, std::min<size_t>(n, now.size())))
        << "the reported prefix is not the input's first " << n << " bytes";
    unlink(t.c_str());
    unlink(filler.c_str());
  }
  FsckAndRemount();
}

// SIGINT/SIGTERM in the middle of a (fast-path) write on a mounted file:
// in-flight I/O finishes, the file is closed through the library (mtime
// and ctime move), the count is reported (text and --json), exit 130/143,
// and the file holds the input's first N bytes followed by its old bytes.
// Before, the signal killed the tool: no count, the old mtime.
TEST_F(MountedIoTest, InterruptedWriteFinishesReportsAndSetsMtime) {
  const std::string f = *mount_ / "f";
  const uint64_t size = 4 << 20;
  for (int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(sig == SIGINT ? "SIGINT" : "SIGTERM");
    WriteFileBuffered(f, std::string(size, 'o'), 0);
    const struct timespec old_times[2] = {{978307200, 0}, {978307200, 0}};  // 2001-01-01
    ASSERT_EQ(utimensat(AT_FDCWD, f.c_str(), old_times, 0), 0);
    const std::string data = RandomBytes(256 << 10, static_cast<uint32_t>(50 + sig));
    testing::Child child({testing::ToolPath("ext4dio-write"), "--json", "--io-size", "4K",
                          "--queue-depth", "1", f});
    ASSERT_TRUE(child.ok());
    ASSERT_TRUE(child.Feed(data));
    ASSERT_TRUE(testing::Child::WaitFor([&] { return testing::Child::Queued(child.in_fd()) == 0; }));
    ASSERT_TRUE(child.Signal(sig));
    ASSERT_EQ(child.Wait(), 128 + sig) << child.err();
    const std::string err = child.err();
    EXPECT_THAT(err, HasSubstr(sig == SIGINT ? "interrupted by SIGINT" : "interrupted by SIGTERM"));
    nlohmann::json j = nlohmann::json::parse(child.out());
    const uint64_t n = j["bytes"].get<uint64_t>();
    EXPECT_GT(n, 0u);
    EXPECT_LE(n, data.size());
    EXPECT_EQ(j["fast_path"], true) << child.out();
    EXPECT_THAT(err, HasSubstr(std::to_string(n) + " bytes written"));
    std::string expected(size, 'o');
    expected.replace(0, n, data.substr(0, n));
    EXPECT_TRUE(ReadFileDirect(f) == expected) << "not the input's first " << n << " bytes";
    EXPECT_TRUE(ReadFileBuffered(f) == expected) << "buffered read differs";
    struct stat st;
    ASSERT_EQ(stat(f.c_str(), &st), 0);
    EXPECT_GT(st.st_mtim.tv_sec, old_times[1].tv_sec) << "mtime did not move";
    EXPECT_GT(st.st_ctim.tv_sec, old_times[1].tv_sec);
  }
}

// A FIFO as TARGET on the mounted filesystem: every tool refuses it
// quickly ("not a regular file", exit 1) instead of blocking in open(2)
// for ever. Run under timeout(1) so a hang fails here (124/137) rather than
// blocking the suite. (--input/--output may be FIFOs: they are streams.)
TEST_F(MountedIoTest, FifoTargetIsRefusedWithoutHanging) {
  const std::string fifo = *mount_ / "fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  for (const std::string tool : {"ext4dio-write", "ext4dio-read", "ext4dio-map"}) {
    RunResult r = testing::Run({"timeout", "-k", "2", "10", testing::ToolPath(tool), fifo});
    EXPECT_EQ(r.exit_code, 1) << tool << " (124/137: hung): " << r.err;
    EXPECT_THAT(r.err, HasSubstr("not a regular file")) << tool;
  }
}

}  // namespace
}  // namespace ext4dio

// main(): test/mounted_main.cc (exit 77 without root and loop devices).
