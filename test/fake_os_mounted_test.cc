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

#include "device.h"
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
    mf_ = MountedFile();  // closes its descriptor before the unmount
    mount_.reset();
  }

  absl::StatusOr<LoadedMap> Load(FakeOs& os) {
    return LoadMountedMap(os, *reader_, mf_.fd, mf_);
  }

  std::unique_ptr<LoopMount> mount_;
  std::string path_;
  MountedFile mf_;
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

}  // namespace
}  // namespace ext4dio
