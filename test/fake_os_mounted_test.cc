// LoadMountedMap's cross-check of the on-disk extent tree against FIEMAP,
// with FIEMAP's answer changed by a FakeOs (test/fake_os.h): a disagreeing
// answer is refused with EXT4DIO_E_MAP_MISMATCH naming the first
// difference, after kCrossCheckAttempts tries; a disagreement that goes away
// (the file changing while we look) is retried. Root and loop devices
// (mounted_main exits 77 without them).
#include <fcntl.h>
#include <linux/fiemap.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

#include <sys/wait.h>

#include <atomic>
#include <thread>
#include <cstring>

#include "aligned.h"
#include "device.h"
#include "file.h"
#include "map_state.h"
#include "errors.h"
#include "ext4_reader.h"
#include "fake_os.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "map_loader.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using ::testing::HasSubstr;
using testing::FakeOs;
using testing::LoopMount;

constexpr uint64_t kB = 4096;

class CrossCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = std::make_unique<LoopMount>(std::vector<std::string>{"-b", "4096"}, "32M");
    ASSERT_TRUE(mount_->ok()) << mount_->error();
    path_ = *mount_ / "f";
    // Two extents with a hole between them.
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    const std::string data = testing::RandomBytes(16 * kB, 7);
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), 1 << 20),
              static_cast<ssize_t>(data.size()));
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
    auto mf = InspectMountedFile(path_);
    ASSERT_TRUE(mf.ok()) << mf.status();
    mf_ = std::move(*mf);
    ReaderOptions options;
    options.live = true;
    auto reader = Ext4Reader::Open(mf_.device, options);
    ASSERT_TRUE(reader.ok()) << reader.status();
    reader_ = std::move(*reader);
  }
  void TearDown() override {
    reader_.reset();
    mf_ = MountedFileInfo();  // closes its descriptor before the unmount
    mount_.reset();
  }

  absl::StatusOr<LoadedMap> Load(FakeOs& os) {
    return LoadMountedMap(os, *reader_, mf_.fd, mf_);
  }

  std::unique_ptr<LoopMount> mount_;
  std::string path_;
  MountedFileInfo mf_;
  std::unique_ptr<Ext4Reader> reader_;
};

// FIEMAP calls that began a ReadFiemap (the first asks for write-back).
int Attempts(const std::vector<uint32_t>& flags) {
  int n = 0;
  for (uint32_t f : flags) n += (f & FIEMAP_FLAG_SYNC) != 0;
  return n;
}

TEST_F(CrossCheckTest, AgreeingFiemapGivesTheOnDiskMap) {
  FakeOs os;
  auto loaded = Load(os);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->source, MapSource::kDevice);
  EXPECT_EQ(loaded->map.file_size(), (1u << 20) + 16 * kB);
  EXPECT_GE(os.calls("fiemap"), 1);
}

TEST_F(CrossCheckTest, DisagreeingFiemapIsRefusedNamingTheFirstDifference) {
  FakeOs os;
  std::vector<uint32_t> flags;
  os.fiemap_rewrite = [&](struct fiemap* fm, int) {
    flags.push_back(fm->fm_flags);
    // The first extent one block further on the device than the tree says.
    if (fm->fm_mapped_extents > 0) fm->fm_extents[0].fe_physical += kB;
  };
  auto loaded = Load(os);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(CodeOf(loaded.status()), -EXT4DIO_E_MAP_MISMATCH);
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("the on-disk extent tree in " + mf_.device + " and FIEMAP disagree at run 0"));
  EXPECT_EQ(Attempts(flags), kCrossCheckAttempts);
}

TEST_F(CrossCheckTest, AnExtentOnlyFiemapKnowsIsRefused) {
  FakeOs os;
  os.fiemap_rewrite = [&](struct fiemap* fm, int) {
    if (fm->fm_mapped_extents == 0 || fm->fm_mapped_extents >= fm->fm_extent_count) return;
    // One more block-sized extent after the last, claimed as the file's.
    fiemap_extent& last = fm->fm_extents[fm->fm_mapped_extents - 1];
    fiemap_extent& extra = fm->fm_extents[fm->fm_mapped_extents];
    extra = last;
    last.fe_flags &= ~FIEMAP_EXTENT_LAST;
    extra.fe_logical = last.fe_logical + last.fe_length + 64 * kB;
    extra.fe_physical = last.fe_physical + last.fe_length + 64 * kB;
    extra.fe_length = kB;
    ++fm->fm_mapped_extents;
  };
  auto loaded = Load(os);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(CodeOf(loaded.status()), -EXT4DIO_E_MAP_MISMATCH);
  EXPECT_THAT(loaded.status().message(), HasSubstr("on disk nothing, FIEMAP"));
}

TEST_F(CrossCheckTest, ADisagreementThatGoesAwayIsRetried) {
  FakeOs os;
  std::vector<uint32_t> flags;
  os.fiemap_rewrite = [&](struct fiemap* fm, int) {
    flags.push_back(fm->fm_flags);
    if (Attempts(flags) == 1 && fm->fm_mapped_extents > 0) fm->fm_extents[0].fe_length -= kB;
  };
  auto loaded = Load(os);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(Attempts(flags), 2);
}

TEST_F(CrossCheckTest, FiemapErrorsAndDelayedAllocationAreSpecific) {
  FakeOs os;
  os.fiemap_errno = EIO;
  auto loaded = Load(os);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(CodeOf(loaded.status()), -EIO);
  EXPECT_THAT(loaded.status().message(), HasSubstr("FIEMAP on " + path_));
  FakeOs delalloc;
  delalloc.fiemap_rewrite = [&](struct fiemap* fm, int) {
    if (fm->fm_mapped_extents > 0) fm->fm_extents[0].fe_flags |= FIEMAP_EXTENT_DELALLOC;
  };
  loaded = Load(delalloc);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(CodeOf(loaded.status()), -EXT4DIO_E_MAP_MISMATCH);
  EXPECT_THAT(loaded.status().message(), HasSubstr("delayed allocation"));
}

TEST_F(CrossCheckTest, FiemapOnlyMapTakesTheSizeFromFstat) {
  FakeOs os;
  auto loaded = LoadFiemapOnly(os, mf_.fd, mf_, "why");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->source, MapSource::kFiemap);
  EXPECT_EQ(loaded->warning, "why");
  EXPECT_EQ(os.calls("fstat"), 1);
  EXPECT_EQ(loaded->map.file_size(), (1u << 20) + 16 * kB);
}


// ---------------------------------------------------------------------------
// A File's deferred re-map with a FakeOs (issue 11): the failures it must
// survive without writing a byte where it should not.

class FileRemapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = std::make_unique<LoopMount>(std::vector<std::string>{"-b", "4096"}, "64M");
    ASSERT_TRUE(mount_->ok()) << mount_->error();
    path_ = *mount_ / "f";
    // [0, 1M) written, [1M, 2M) a hole.
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    model_ = testing::RandomBytes(1 << 20, 3);
    ASSERT_EQ(::pwrite(fd, model_.data(), model_.size(), 0), static_cast<ssize_t>(model_.size()));
    ASSERT_EQ(::ftruncate(fd, 2 << 20), 0);
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
    model_.resize(2 << 20, '\0');
  }
  std::shared_ptr<File> Open(FakeOs& os) {
    auto f = File::Open(testing::MountedWriterOptions(path_, &os));
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *f : nullptr;
  }
  // Writes one block of fresh bytes at `off` through the handle and the model.
  void Write(File& f, uint64_t off, uint32_t seed) {
    const std::string d = testing::RandomBytes(kB, seed);
    AlignedBuf buf = AllocAligned(4096, kB);
    std::memcpy(buf.get(), d.data(), kB);
    auto w = f.Pwrite(buf.get(), kB, off);
    ASSERT_TRUE(w.ok()) << w.status();
    model_.replace(off, kB, d);
  }
  void ExpectContent(File& f) {
    AlignedBuf buf = AllocAligned(4096, model_.size());
    auto r = f.Pread(buf.get(), model_.size(), 0);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(*r, model_.size());
    EXPECT_TRUE(std::memcmp(buf.get(), model_.data(), model_.size()) == 0)
        << "read through the handle differs";
  }
  void ExpectOnDisk() {
    std::string back(model_.size(), 'x');
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pread(fd, back.data(), back.size(), 0), static_cast<ssize_t>(back.size()));
    ::close(fd);
    EXPECT_TRUE(back == model_) << "the file's content differs";
    ASSERT_EQ(testing::Run({"umount", mount_->mount_point()}).exit_code, 0);
    testing::RunResult r = testing::Run({"e2fsck", "-fn", mount_->device()});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    ASSERT_EQ(testing::Run({"mount", mount_->device(), mount_->mount_point()}).exit_code, 0);
  }

  std::unique_ptr<LoopMount> mount_;
  std::string path_;
  std::string model_;
};

// FIEMAP places a filled hole on a block the bitmaps say is free: the
// re-map's validation refuses it, the fast path stops (nothing goes to that
// block), and I/O goes on through the kernel with nothing lost.
TEST_F(FileRemapTest, AFiemapAnswerThatFailsValidationStopsTheFastPath) {
  FakeOs os;
  os.fiemap_rewrite = [](struct ::fiemap* fm, int) {
    for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
      fiemap_extent& e = fm->fm_extents[i];
      // The filled hole (logical 1M + 8K) claimed 40 MiB into the fs: free.
      if (e.fe_logical >= (1u << 20)) e.fe_physical = 40ull << 20;
    }
  };
  std::shared_ptr<File> f = Open(os);
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(f->fast_path()) << f->warning();
  Write(*f, (1 << 20) + 2 * kB, 1);      // a hole: kernel path, pending
  (void)f->snapshot();  // re-maps now: FIEMAP lies (the view leaves the failure to the monitor)
  // The monitor's round fails the same way and stops the fast path.
  for (int i = 0; i < 10000 && f->fast_path(); ++i) ::usleep(1000);
  EXPECT_FALSE(f->fast_path());
  EXPECT_THAT(f->warning(), HasSubstr("re-mapping after kernel-path writes failed"));
  const FileStats before = f->stats();
  Write(*f, 4 * kB, 2);  // a written block: through the kernel now
  EXPECT_EQ(f->stats().fast_bytes, before.fast_bytes);
  EXPECT_EQ(f->stats().kernel_bytes - before.kernel_bytes, kB);
  ExpectContent(*f);
  f.reset();
  ExpectOnDisk();
}

// Another process opens the file while a re-map is running (inside its
// FIEMAP): the monitor gives the lease up meanwhile (the re-map holds no
// gate), the re-map finishes, I/O continues through the kernel, and when the
// other process is gone the fast path comes back with a map that is the
// file's.
TEST_F(FileRemapTest, ALeaseBreakDuringARemap) {
  FakeOs os;
  std::atomic<File*> file{nullptr};
  std::atomic<int> broke{0};
  const std::string path = path_;
  const std::thread::id self = std::this_thread::get_id();
  os.fiemap_rewrite = [&](struct ::fiemap*, int) {
    // Only in the re-map this thread runs (snapshot): the monitor, which
    // gives the lease up, must be free meanwhile.
    File* f = file.load();
    if (f == nullptr || std::this_thread::get_id() != self || broke.exchange(1) != 0) return;
    // Break the lease from a child (its open waits for our release).
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      _exit(fd >= 0 ? 0 : 1);
    }
    for (int i = 0; i < 10000 && f->fast_path(); ++i) ::usleep(1000);
    int status = 0;
    ::waitpid(pid, &status, 0);
    broke = WIFEXITED(status) && WEXITSTATUS(status) == 0 && !f->fast_path() ? 2 : 3;
  };
  std::shared_ptr<File> f = Open(os);
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(f->fast_path()) << f->warning();
  file = f.get();
  // A hole: pending; the re-map runs here unless the monitor's poll got to
  // it first (then try the next block).
  for (int i = 0; i < 50 && broke.load() == 0; ++i) {
    Write(*f, (1 << 20) + (5 + 2 * i) * kB, 3 + i);
    (void)f->snapshot();  // the re-map, during which the lease breaks
  }
  ASSERT_EQ(broke.load(), 2) << "the lease was not given up during the re-map";
  EXPECT_GE(f->stats().lease_breaks, 1u);
  file = nullptr;
  Write(*f, (1 << 20) + 6 * kB, 100);  // kernel path (fast path off)
  Write(*f, 8 * kB, 101);
  ExpectContent(*f);
  // The other process is gone: the monitor retakes the lease (every 200 ms).
  for (int i = 0; i < 10000 && !f->fast_path(); ++i) ::usleep(1000);
  ASSERT_TRUE(f->fast_path()) << f->warning();
  // The map it re-read shows the filled blocks written.
  std::shared_ptr<const MapState> snap = f->snapshot();
  for (uint64_t off : {(1ull << 20) + 5 * kB, (1ull << 20) + 6 * kB}) {
    EXPECT_EQ(snap->loaded.map.SegmentAt(off, kB).kind, SegmentKind::kMapped) << off;
  }
  const FileStats before = f->stats();
  Write(*f, (1 << 20) + 5 * kB, 102);  // now a fast-path overwrite
  EXPECT_EQ(f->stats().fast_bytes - before.fast_bytes, kB);
  ExpectContent(*f);
  f.reset();
  ExpectOnDisk();
}

// No lease to be had (F_SETLEASE: EAGAIN, as when the file is open
// elsewhere): the file opens with the fast path off, says why, and every
// write and read goes through the kernel, byte-exact.
TEST_F(FileRemapTest, NoLeaseMeansTheKernelPathForEverything) {
  FakeOs os;
  os.setlease_errno = EAGAIN;
  std::shared_ptr<File> f = Open(os);
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(f->fast_path());
  EXPECT_THAT(f->warning(), HasSubstr("no lease"));
  Write(*f, 4 * kB, 7);
  Write(*f, (1 << 20) + 4 * kB, 8);
  ExpectContent(*f);
  const FileStats s = f->stats();
  EXPECT_EQ(s.fast_bytes, 0u);
  EXPECT_EQ(s.kernel_bytes, 2 * kB);
  EXPECT_GE(os.calls("fcntl"), 1);
  f.reset();
  ExpectOnDisk();
}

}  // namespace
}  // namespace ext4dio
