// Maps of files in real images made by mkfs -d, compared with two
// independent oracles: debugfs's view of the extent tree / block map, and
// the source files' bytes read back from the image at the mapped offsets.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ext4_reader.h"
#include "map_loader.h"
#include "errors.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using ::testing::HasSubstr;
using testing::DebugfsBlockMap;
using testing::DebugfsExtents;
using testing::DebugfsInode;
using testing::DebugfsSize;
using testing::Quote;
using testing::Run;
using testing::RunResult;
using testing::Sh;
using testing::TempDir;

struct Config {
  std::string name;
  std::string mkfs_type;             // "ext4", "ext3", "ext2"
  std::vector<std::string> mkfs_args;
  std::string size;                  // mkfs size argument
  uint32_t block_size;
  uint64_t islands;                  // extents in the fragmented file
  bool extents;                      // extent tree (else block map)
  bool partitioned = false;          // filesystem at 1 MiB inside a disk image
  std::string tune;                  // tune2fs -O FEATURES after the files are in
};

std::ostream& operator<<(std::ostream& os, const Config& c) { return os << c.name; }

constexpr uint64_t kPartitionOffset = 1 << 20;

// Files every configuration gets, written relative to its block size.
struct SourceFile {
  std::string path;  // inside the filesystem
};

class ImageMapTest : public ::testing::TestWithParam<Config> {
 protected:
  void SetUp() override {
    const Config& c = GetParam();
    src_ = dir_ / "src";
    ASSERT_EQ(Sh("mkdir -p " + Quote(src_ + "/dir/sub")).exit_code, 0);
    const uint64_t b = c.block_size;
    testing::WriteIslands(src_ + "/frag", c.islands, b, 2 * b, 1);
    testing::WriteIslands(src_ + "/varied", 150, 7 * b, 10 * b + b, 2);
    testing::WriteIslands(src_ + "/contig", 1, 512 * 1024, 512 * 1024, 3);
    // A hole at the start, then data, then a hole at the end.
    int fd = open((src_ + "/holes").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    std::string data(3 * b + 100, 'h');
    ASSERT_EQ(pwrite(fd, data.data(), data.size(), 40 * b), ssize_t(data.size()));
    ASSERT_EQ(ftruncate(fd, 90 * b + 17), 0);
    close(fd);
    testing::WriteFile(src_ + "/empty", "");
    testing::WriteFile(src_ + "/tiny", std::string(100, 't'));
    testing::WriteIslands(src_ + "/dir/sub/nested", 5, b, 3 * b, 4);
    ASSERT_EQ(symlink("../frag", (src_ + "/dir/link").c_str()), 0);

    image_ = dir_ / "fs.img";
    if (c.partitioned) {
      // A real MBR partition table, the filesystem in partition 1 at 1 MiB.
      ASSERT_EQ(Sh("truncate -s 200M " + Quote(image_) + " && echo 'start=2048, type=83' | "
                   "sfdisk -q " + Quote(image_)).exit_code, 0);
      std::vector<std::string> args = c.mkfs_args;
      args.push_back("-E");
      args.push_back("offset=" + std::to_string(kPartitionOffset));
      testing::MakeFs(c.mkfs_type, args, src_, image_, c.size);
      offset_ = kPartitionOffset;
    } else {
      testing::MakeFs(c.mkfs_type, c.mkfs_args, src_, image_, c.size);
    }
    spec_ = offset_ ? image_ + "?offset=" + std::to_string(offset_) : image_;
    // Unwritten extents, also past i_size, through debugfs's fallocate.
    RunResult r = testing::Run({"debugfs", "-w", "-R", "write /dev/null prealloc", spec_});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    if (c.extents) {
      r = testing::Run({"debugfs", "-w", "-R", "fallocate /prealloc 0 39", spec_});
      ASSERT_EQ(r.exit_code, 0) << r.err;
      r = testing::Run({"debugfs", "-w", "-R", "fallocate /holes 100 109", spec_});
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    if (!c.tune.empty()) {
      // mke2fs -d and debugfs do not account quota; tune2fs computes it.
      r = testing::Run({"tune2fs", "-O", c.tune, spec_});
      ASSERT_EQ(r.exit_code, 0) << r.err;
    }
    r = testing::Run({"e2fsck", "-fn", spec_});
    ASSERT_EQ(r.exit_code, 0) << "fixture image not clean: " << r.out << r.err;
  }

  std::vector<Extent> Oracle(const std::string& path) {
    return GetParam().extents ? DebugfsExtents(image_, path, offset_)
                              : DebugfsBlockMap(image_, path, offset_);
  }

  // The source file's bytes must be in the image at the mapped offsets, and
  // holes/unwritten/past-EOF must be where the source has zeros or ends.
  void CheckBytes(const LoadedMap& m, const std::string& src_path) {
    const std::string want = testing::ReadFile(src_path);
    ASSERT_EQ(m.map.file_size(), want.size());
    auto segments = m.map.Query(0, want.size() + 3 * GetParam().block_size);
    ASSERT_TRUE(segments.ok()) << segments.status();
    int fd = open(image_.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    uint64_t pos = 0;
    for (const Segment& s : *segments) {
      ASSERT_EQ(s.offset, pos) << "segments are not consecutive";
      pos += s.length;
      if (s.kind == SegmentKind::kPastEof) {
        EXPECT_GE(s.offset, want.size());
        continue;
      }
      ASSERT_LE(s.offset + s.length, want.size()) << "segment runs past EOF";
      std::string got(s.length, '\0');
      if (s.kind == SegmentKind::kMapped) {
        ASSERT_EQ(pread(fd, got.data(), s.length, static_cast<off_t>(s.device_offset)),
                  static_cast<ssize_t>(s.length));
      }
      ASSERT_EQ(got, want.substr(s.offset, s.length))
          << "bytes differ in segment at file offset " << s.offset << " kind "
          << int(s.kind);
    }
    close(fd);
  }

  TempDir dir_;
  std::string src_, image_, spec_;
  uint64_t offset_ = 0;
};

TEST_P(ImageMapTest, MapsAgreeWithDebugfsAndSourceBytes) {
  const Config& c = GetParam();
  for (const std::string path :
       {"/frag", "/varied", "/contig", "/holes", "/empty", "/tiny", "/dir/sub/nested",
        "/prealloc"}) {
    SCOPED_TRACE(path);
    auto loaded = LoadMap(Target{image_, offset_, path, 0});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(loaded->warning.empty()) << loaded->warning;
    EXPECT_EQ(loaded->extent_tree, c.extents);
    EXPECT_EQ(loaded->map.block_size(), c.block_size);
    EXPECT_EQ(loaded->map.file_size(), DebugfsSize(image_, path, offset_));
    EXPECT_EQ(loaded->inode, DebugfsInode(image_, path, offset_));

    std::vector<Extent> got;
    for (size_t i = 0; i < loaded->map.extent_count(); ++i)
      got.push_back(loaded->map.ExtentAt(i));
    std::vector<Extent> want = Oracle(path);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i], want[i]) << "extent " << i << ": got logical "
                                 << got[i].logical << " physical " << got[i].physical
                                 << " length " << got[i].length << ", debugfs "
                                 << want[i].logical << "/" << want[i].physical << "/"
                                 << want[i].length;
    }
    if (path != "/prealloc") CheckBytes(*loaded, src_ + path);

    // The same file by inode number gives the same map.
    auto by_inode = LoadMap(Target{image_, offset_, "", loaded->inode});
    ASSERT_TRUE(by_inode.ok()) << by_inode.status();
    ASSERT_EQ(by_inode->map.extent_count(), loaded->map.extent_count());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(by_inode->map.ExtentAt(i), got[i]);
  }
}

TEST_P(ImageMapTest, FragmentedFileHasTheExpectedShape) {
  const Config& c = GetParam();
  auto loaded = LoadMap(Target{image_, offset_, "/frag", 0});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  if (c.extents && c.block_size <= 4096 && c.islands >= 2000) {
    EXPECT_EQ(loaded->depth, 2u) << "thousands of extents should need a depth-2 tree";
  }
  // One extent per island: holes survived mkfs -d.
  const bool bigalloc = c.mkfs_args.end() !=
                        std::find(c.mkfs_args.begin(), c.mkfs_args.end(), "bigalloc");
  if (c.extents && !bigalloc) {
    EXPECT_EQ(loaded->map.extent_count(), c.islands);
  }
}

TEST_P(ImageMapTest, SymlinksAreFollowed) {
  auto via_link = LoadMap(Target{image_, offset_, "/dir/link", 0});
  auto direct = LoadMap(Target{image_, offset_, "/frag", 0});
  ASSERT_TRUE(via_link.ok()) << via_link.status();
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(via_link->inode, direct->inode);
}

TEST_P(ImageMapTest, UnwrittenExtentsPastEofAreKept) {
  if (!GetParam().extents) GTEST_SKIP() << "block maps have no unwritten extents";
  auto loaded = LoadMap(Target{image_, offset_, "/prealloc", 0});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->map.file_size(), 0u);
  ASSERT_GE(loaded->map.extent_count(), 1u);
  uint64_t blocks = 0;
  for (size_t i = 0; i < loaded->map.extent_count(); ++i) {
    EXPECT_TRUE(loaded->map.ExtentAt(i).unwritten);
    blocks += loaded->map.ExtentAt(i).length;
  }
  EXPECT_EQ(blocks, 40u);
  auto segments = loaded->map.Query(0, 4096);
  ASSERT_TRUE(segments.ok());
  ASSERT_EQ(segments->size(), 1u);
  EXPECT_EQ((*segments)[0].kind, SegmentKind::kPastEof);
}

TEST_P(ImageMapTest, CliJsonMatchesLibrary) {
  RunResult r = testing::Run({testing::ToolPath("ext4dio-map"), "--image", image_, "--image-offset",
                     std::to_string(offset_), "--json", "/varied"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto loaded = LoadMap(Target{image_, offset_, "/varied", 0});
  ASSERT_TRUE(loaded.ok());
  EXPECT_THAT(r.out, HasSubstr("\"block_size\":" + std::to_string(GetParam().block_size)));
  EXPECT_THAT(r.out, HasSubstr("\"size\":" + std::to_string(loaded->map.file_size())));
  const Extent first = loaded->map.ExtentAt(0);
  // eof and last: filefrag's flags (ext4dio-map(1)).
  const bool eof = (first.logical + first.length) * loaded->map.block_size() >=
                   loaded->map.file_size();
  const bool last = loaded->map.extent_count() == 1;
  EXPECT_THAT(r.out, HasSubstr("{\"blocks\":" + std::to_string(first.length) +
                               ",\"eof\":" + (eof ? "true" : "false") +
                               ",\"last\":" + (last ? "true" : "false") +
                               ",\"logical_block\":" + std::to_string(first.logical) +
                               ",\"physical_block\":" + std::to_string(first.physical) +
                               ",\"unwritten\":false}"));
}

// Every block of the special inodes (journal, resize inode, quota files,
// orphan file) and every inode table block, per debugfs, is inside a
// metadata range the validator refuses extents on.
TEST_P(ImageMapTest, MetadataCoversSpecialFilesAndInodeTables) {
  ReaderOptions options;
  options.offset = offset_;
  auto reader = Ext4Reader::Open(image_, options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto metadata = (*reader)->Metadata();
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  auto covered = [&](uint64_t b) {
    for (const MetadataRange& r : *metadata)
      if (r.start <= b && b < r.end) return true;
    return false;
  };
  const std::string stats = testing::Run({"dumpe2fs", "-h", spec_}).out;
  std::vector<std::string> inodes = {"<7>", "<8>"};
  for (const char* key : {"User quota inode:", "Group quota inode:", "Orphan file inode:",
                          "Journal inode:"}) {
    size_t p = stats.find(key);
    if (p != std::string::npos)
      inodes.push_back("<" + std::to_string(std::stoull(stats.substr(p + strlen(key)))) + ">");
  }
  size_t checked = 0;
  for (const std::string& ino : inodes) {
    RunResult r = testing::Run({"debugfs", "-R", "blocks " + ino, spec_});
    std::istringstream in(r.out);
    uint64_t b;
    while (in >> b) {
      EXPECT_TRUE(covered(b)) << "block " << b << " of " << ino << " not in metadata";
      ++checked;
    }
  }
  // Inode tables and bitmaps from dumpe2fs.
  const std::string groups = testing::Run({"dumpe2fs", spec_}).out;
  std::regex table(R"(Inode table at (\d+)-(\d+))"), bitmap(R"((?:Block|Inode) bitmap at (\d+))");
  for (auto it = std::sregex_iterator(groups.begin(), groups.end(), table);
       it != std::sregex_iterator(); ++it) {
    EXPECT_TRUE(covered(std::stoull((*it)[1]))) << (*it)[0];
    EXPECT_TRUE(covered(std::stoull((*it)[2]))) << (*it)[0];
    ++checked;
  }
  for (auto it = std::sregex_iterator(groups.begin(), groups.end(), bitmap);
       it != std::sregex_iterator(); ++it) {
    EXPECT_TRUE(covered(std::stoull((*it)[1]))) << (*it)[0];
    ++checked;
  }
  EXPECT_GT(checked, 3u);
}

const Config kConfigs[] = {
    {"ext4_1k", "ext4", {"-b", "1024"}, "64M", 1024, 3000, true},
    {"ext4_4k", "ext4", {"-b", "4096"}, "128M", 4096, 3000, true},
    {"ext4_64k", "ext4", {"-b", "65536"}, "512M", 65536, 1500, true},
    {"ext4_bigalloc", "ext4", {"-b", "4096", "-O", "bigalloc", "-C", "65536"}, "256M", 4096, 1000, true},
    {"ext4_no_csum_no_64bit", "ext4", {"-b", "4096", "-O", "^metadata_csum,^64bit"}, "128M", 4096, 3000, true},
    {"ext4_1k_no_csum", "ext4", {"-b", "1024", "-O", "^metadata_csum,^64bit,^flex_bg"}, "64M", 1024, 2000, true},
    {"ext4_meta_bg", "ext4", {"-b", "1024", "-O", "meta_bg,^resize_inode"}, "96M", 1024, 2000, true},
    {"ext4_sparse_super2_nojournal", "ext4", {"-b", "4096", "-O", "sparse_super2,^has_journal"}, "256M", 4096, 1000, true},
    {"ext4_quota_orphan_file", "ext4", {"-b", "4096", "-O", "orphan_file"}, "128M", 4096, 1000, true, false, "quota"},
    {"ext3_1k", "ext3", {"-b", "1024"}, "64M", 1024, 2000, false},
    {"ext3_4k", "ext3", {"-b", "4096"}, "128M", 4096, 2000, false},
    {"ext2_4k", "ext2", {"-b", "4096"}, "64M", 4096, 1000, false},
    {"partitioned_ext4", "ext4", {"-b", "4096"}, "32768", 4096, 1000, true, true},
};

INSTANTIATE_TEST_SUITE_P(Configs, ImageMapTest, ::testing::ValuesIn(kConfigs),
                         [](const ::testing::TestParamInfo<Config>& param) {
                           return param.param.name;
                         });

}  // namespace
}  // namespace ext4dio
