// Mounted mode on a live ext4 (loop device backed by tmpfs): maps of files
// written a moment before, unwritten extents from fallocate, the FIEMAP
// cross-check, and FIEMAP-only mapping without access to the device.
// Needs root and loop devices: exits 77 (skip) saying why when missing.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "errors.h"
#include "ext4_reader.h"
#include "fiemap.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "map_loader.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::RandomBytes;

using ::testing::HasSubstr;
using testing::LoopMount;
using testing::Run;
using testing::RunResult;

// Reads [offset, offset+length) of `device` with O_DIRECT: what is really on
// the device, not in any page cache.
std::string ReadDirect(const std::string& device, uint64_t offset, uint64_t length) {
  const uint64_t a = 4096;
  const uint64_t start = offset / a * a;
  const uint64_t end = (offset + length + a - 1) / a * a;
  void* buf = nullptr;
  if (posix_memalign(&buf, a, end - start) != 0) return {};
  int fd = open(device.c_str(), O_RDONLY | O_DIRECT);
  std::string out;
  if (fd >= 0 && pread(fd, buf, end - start, static_cast<off_t>(start)) ==
                     static_cast<ssize_t>(end - start)) {
    out.assign(static_cast<char*>(buf) + (offset - start), length);
  }
  if (fd >= 0) close(fd);
  free(buf);
  return out;
}

class MountedTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    mount_ = new LoopMount({"-b", "4096"}, "256M");
  }
  static void TearDownTestSuite() {
    delete mount_;
    mount_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(mount_->ok()) << mount_->error(); }

  // The file's bytes must be on the device at the mapped offsets.
  void ExpectBytesOnDevice(const LoadedMap& m, const std::string& content) {
    auto segments = m.map.Query(0, content.size());
    ASSERT_TRUE(segments.ok()) << segments.status();
    for (const Segment& s : *segments) {
      if (s.kind == SegmentKind::kMapped) {
        EXPECT_EQ(ReadDirect(mount_->device(), s.device_offset, s.length),
                  content.substr(s.offset, s.length))
            << "at file offset " << s.offset;
      } else {
        EXPECT_EQ(std::string(s.length, '\0'), content.substr(s.offset, s.length));
      }
    }
  }

  static LoopMount* mount_;
};
LoopMount* MountedTest::mount_ = nullptr;

TEST_F(MountedTest, MapsFileWrittenWithODirectJustBefore) {
  const std::string path = *mount_ / "direct";
  const std::string data = RandomBytes(1 << 20, 1);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
  ASSERT_GE(fd, 0);
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, data.size()), 0);
  memcpy(buf, data.data(), data.size());
  ASSERT_EQ(pwrite(fd, buf, data.size(), 0), static_cast<ssize_t>(data.size()));
  free(buf);
  close(fd);

  auto m = LoadMap(Target{"", 0, path, 0});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->source, MapSource::kDevice);
  EXPECT_EQ(m->device, mount_->device());
  EXPECT_EQ(m->map.file_size(), data.size());
  ExpectBytesOnDevice(*m, data);
}

TEST_F(MountedTest, MapsBufferedWritesStillInPageCache) {
  // Delayed allocation: FIEMAP(SYNC) makes the kernel allocate and write
  // back, and the on-disk tree read through the device's page cache shows it.
  const std::string path = *mount_ / "buffered";
  std::string data = RandomBytes(300 * 1024 + 77, 2);
  data.replace(100 * 1024, 64 * 1024, std::string(64 * 1024, '\0'));
  int fd = open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, data.data(), 100 * 1024, 0), 100 * 1024);
  const size_t tail = 164 * 1024;
  ASSERT_EQ(pwrite(fd, data.data() + tail, data.size() - tail, tail),
            static_cast<ssize_t>(data.size() - tail));
  close(fd);
  auto m = LoadMap(Target{"", 0, path, 0});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GE(m->map.extent_count(), 2u) << "the hole should split the file";
  ExpectBytesOnDevice(*m, data);
}

TEST_F(MountedTest, UnwrittenExtentsFromFallocateIncludingPastEof) {
  const std::string path = *mount_ / "falloc";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fallocate(fd, 0, 0, 1 << 20), 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20), 0);
  const std::string data = RandomBytes(8192, 3);
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), 64 * 1024), 8192);
  ASSERT_EQ(fsync(fd), 0);
  close(fd);

  auto m = LoadMap(Target{"", 0, path, 0});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->map.file_size(), 1u << 20);
  uint64_t unwritten = 0, written = 0, past_eof = 0;
  for (size_t i = 0; i < m->map.extent_count(); ++i) {
    Extent e = m->map.ExtentAt(i);
    (e.unwritten ? unwritten : written) += e.length;
    const uint64_t eof_block = 256, end = e.logical + e.length;
    if (end > eof_block) past_eof += end - std::max<uint64_t>(e.logical, eof_block);
  }
  EXPECT_EQ(written, 2u);
  EXPECT_EQ(unwritten, 512u - 2);
  EXPECT_EQ(past_eof, 256u) << "unwritten extents past i_size are part of the map";

  auto segs = m->map.Query(0, 2 << 20);
  ASSERT_TRUE(segs.ok());
  ASSERT_EQ(segs->size(), 4u);
  EXPECT_EQ((*segs)[0].kind, SegmentKind::kUnwritten);
  EXPECT_EQ((*segs)[1].kind, SegmentKind::kMapped);
  EXPECT_EQ((*segs)[1].offset, 64u * 1024);
  EXPECT_EQ((*segs)[1].length, 8192u);
  EXPECT_EQ((*segs)[2].kind, SegmentKind::kUnwritten);
  EXPECT_EQ((*segs)[3].kind, SegmentKind::kPastEof);
  EXPECT_EQ(ReadDirect(mount_->device(), (*segs)[1].device_offset, 8192), data);

  // debugfs on the live device agrees, extent for extent.
  std::vector<Extent> oracle =
      testing::DebugfsExtents(mount_->device(), "<" + std::to_string(m->inode) + ">");
  ASSERT_EQ(oracle.size(), m->map.extent_count());
  for (size_t i = 0; i < oracle.size(); ++i) EXPECT_EQ(oracle[i], m->map.ExtentAt(i));
}

TEST_F(MountedTest, FragmentedFileAgreesWithFiemapAndDebugfs) {
  const std::string path = *mount_ / "frag";
  testing::WriteIslands(path, 600, 4096, 3 * 4096, 9);
  RunResult r = testing::Run({testing::ToolPath("ext4dio-map"), "--json", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"source\":\"device\""));
  EXPECT_THAT(r.out, HasSubstr("\"device\":\"" + mount_->device() + "\""));
  auto m = LoadMap(Target{"", 0, path, 0});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->map.extent_count(), 600u);
  std::vector<Extent> oracle =
      testing::DebugfsExtents(mount_->device(), "<" + std::to_string(m->inode) + ">");
  ASSERT_EQ(oracle.size(), 600u);
  for (size_t i = 0; i < oracle.size(); ++i) EXPECT_EQ(oracle[i], m->map.ExtentAt(i));

  // 600 leaf extents; "N extents found" counts fragments, as filefrag on
  // the same file does.
  EXPECT_THAT(r.out, HasSubstr("\"leaf_extents\":600,"));
  RunResult ff = testing::Run({"filefrag", path});
  ASSERT_EQ(ff.exit_code, 0) << ff.err;
  const size_t colon = ff.out.rfind(": ");
  ASSERT_NE(colon, std::string::npos) << ff.out;
  const std::string found = ff.out.substr(colon + 2);  // "N extent(s) found\n"
  EXPECT_THAT(r.out, HasSubstr("\"fragments\":" + found.substr(0, found.find(' ')) + ","));
  r = testing::Run({testing::ToolPath("ext4dio-map"), path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("frag: " + found));
}

TEST_F(MountedTest, WithoutDeviceAccessMapsFromFiemapAndSaysSo) {
  const std::string path = *mount_ / "forall";
  testing::WriteIslands(path, 10, 4096, 8192, 11);
  chmod(path.c_str(), 0644);
  RunResult r = testing::Run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     testing::ToolPath("ext4dio-map"), "--json", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"source\":\"fiemap\""));
  EXPECT_THAT(r.out, HasSubstr("map from FIEMAP alone"));
  EXPECT_THAT(r.err, HasSubstr("warning"));
  EXPECT_THAT(r.err, HasSubstr("Permission denied"));
  // Same extents as the validated on-disk map.
  auto m = LoadMap(Target{"", 0, path, 0});
  ASSERT_TRUE(m.ok()) << m.status();
  const Extent e = m->map.ExtentAt(3);
  EXPECT_THAT(r.out, HasSubstr("{\"blocks\":1,\"eof\":false,\"last\":false,\"logical_block\":" +
                               std::to_string(e.logical) + ",\"physical_block\":" +
                               std::to_string(e.physical) + ",\"unwritten\":false}"));
}

TEST_F(MountedTest, RefusesFilesOutsideExt4AndNonRegular) {
  auto m = LoadMap(Target{"", 0, "/proc/self/status", 0});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(CodeOf(m.status()), -EXT4DIO_E_NOT_EXT4);
  m = LoadMap(Target{"", 0, mount_->mount_point(), 0});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(CodeOf(m.status()), -EXT4DIO_E_UNSUPPORTED_FILE);
  m = LoadMap(Target{"", 0, *mount_ / "does-not-exist", 0});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(CodeOf(m.status()), -ENOENT);
}

TEST_F(MountedTest, InlineDataFileIsRefusedWithReason) {
  LoopMount inl({"-b", "4096", "-O", "inline_data"}, "64M");
  ASSERT_TRUE(inl.ok()) << inl.error();
  testing::WriteFile(inl / "small", "tiny");
  auto m = LoadMap(Target{"", 0, inl / "small", 0});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(CodeOf(m.status()), -EXT4DIO_E_UNSUPPORTED_FILE);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("inline"));
}

TEST(FirstDifferenceTest, NamesTheFirstDisagreement) {
  std::vector<Extent> disk = {{0, 100, 10, false}, {10, 110, 5, false}, {20, 500, 4, true}};
  // FIEMAP may merge what is contiguous: no difference.
  std::vector<Extent> merged = {{0, 100, 15, false}, {20, 500, 4, true}};
  EXPECT_EQ(FirstDifference(disk, merged), "");
  std::vector<Extent> moved = {{0, 100, 15, false}, {20, 501, 4, true}};
  EXPECT_THAT(FirstDifference(disk, moved), HasSubstr("run 1: on disk logical 20..23"));
  std::vector<Extent> written = {{0, 100, 15, false}, {20, 500, 4, false}};
  EXPECT_THAT(FirstDifference(disk, written), HasSubstr("(unwritten)"));
  EXPECT_THAT(FirstDifference(disk, {{0, 100, 15, false}}), HasSubstr("FIEMAP has nothing"));
}

}  // namespace
}  // namespace ext4dio

// main(): test/mounted_main.cc (exit 77 without root and loop devices).
