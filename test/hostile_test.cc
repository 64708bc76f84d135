// Hostile images: ext2/3/4 images built with mkfs -d, then corrupted with
// debugfs -w (which keeps checksums right: structurally hostile but correctly
// checksummed) or with raw writes (which break them). Every case must fail
// with the exact error class and a message that names the problem, never
// return a map, and the CLI must exit 1 with one line on stderr and no
// signal.
//
// Cases marked "REGRESSION" guard library bugs this corpus found (each
// comment says what the bug was).
//
// Block numbers are never hard-coded: they are read back from debugfs
// (stats, ex, imap, stat) on the image at hand. Base images are made once
// per run and copied for each test (on tmpfs).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "errors.h"
#include "ext4_reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "map_loader.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using ::testing::HasSubstr;
using testing::DebugfsExtents;
using testing::DebugfsInode;
using testing::Run;
using testing::RunResult;
using testing::TempDir;

constexpr uint32_t kBlock = 1024;           // every base image: 1 KiB blocks
constexpr uint32_t kBlocksPerGroup = 2048;  // 4 groups in 8 MiB

// ---------------------------------------------------------------------------
// debugfs and raw-byte helpers.

// The only thing a successful debugfs run prints on stderr.
bool OnlyBanner(const std::string& err) {
  std::istringstream in(err);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.rfind("debugfs ", 0) == 0) continue;
    return false;
  }
  return true;
}

// Runs one read-only request and returns its stdout.
std::string DebugfsRead(const std::string& image, const std::string& request) {
  RunResult r = Run({"debugfs", "-R", request, image});
  EXPECT_EQ(r.exit_code, 0) << "debugfs -R '" << request << "': " << r.err;
  return r.out;
}

// Runs write requests (debugfs -w -f). debugfs exits 0 even when a request
// fails, so anything on stderr but its banner is a failure.
void DebugfsScript(const std::string& image, const std::vector<std::string>& requests) {
  const std::string script = image + ".debugfs";
  std::string text;
  for (const std::string& r : requests) text += r + "\n";
  testing::WriteFile(script, text);
  RunResult r = Run({"debugfs", "-w", "-f", script, image});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(OnlyBanner(r.err)) << "debugfs -w failed:\n" << text << "stderr: " << r.err;
  // Commands of the extent editor print their errors on stdout.
  ASSERT_EQ(r.out.find("rror"), std::string::npos) << text << r.out;
  ASSERT_EQ(r.out.find("sage:"), std::string::npos) << text << r.out;
  unlink(script.c_str());
}
void DebugfsWrite(const std::string& image, const std::string& request) {
  DebugfsScript(image, {request});
}

void PWrite(const std::string& path, uint64_t offset, const std::string& bytes) {
  int fd = open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(bytes.size()));
  close(fd);
}

std::string PRead(const std::string& path, uint64_t offset, size_t n) {
  std::string out(n, '\0');
  int fd = open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << path;
  if (fd < 0) return out;
  EXPECT_EQ(pread(fd, out.data(), n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
  close(fd);
  return out;
}

std::string Le16(uint16_t v) { return std::string{char(v & 0xff), char(v >> 8)}; }
std::string Le32(uint32_t v) {
  return std::string{char(v & 0xff), char((v >> 8) & 0xff), char((v >> 16) & 0xff),
                     char(v >> 24)};
}
uint16_t GetLe16(const std::string& b, size_t at) {
  return uint16_t(uint8_t(b[at]) | uint8_t(b[at + 1]) << 8);
}
uint32_t GetLe32(const std::string& b, size_t at) {
  return uint32_t(GetLe16(b, at)) | uint32_t(GetLe16(b, at + 2)) << 16;
}

void Truncate(const std::string& path, uint64_t size) {
  ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(size)), 0) << path;
}

uint64_t Number(const std::string& text, const std::string& re) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(text, m, std::regex(re))) << re << " in:\n" << text;
  return m.size() > 1 ? std::stoull(m[1].str(), nullptr, 0) : 0;
}

struct Group {
  uint64_t block_bitmap = 0, inode_bitmap = 0, inode_table = 0;
};

std::vector<Group> Groups(const std::string& image) {
  std::string text = DebugfsRead(image, "stats");
  std::regex re(R"(Group\s+(\d+): block bitmap at (\d+), inode bitmap at (\d+), inode table at (\d+))");
  std::vector<Group> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re);
       it != std::sregex_iterator(); ++it) {
    out.push_back({std::stoull((*it)[2]), std::stoull((*it)[3]), std::stoull((*it)[4])});
  }
  EXPECT_FALSE(out.empty()) << text;
  return out;
}

// One line of debugfs `ex`: an index entry (level < max) or a leaf extent.
struct TreeEntry {
  int level = 0, max_level = 0;
  uint64_t logical_start = 0, logical_end = 0, physical = 0, length = 0;
  bool leaf() const { return level == max_level; }
};

std::vector<TreeEntry> Tree(const std::string& image, const std::string& path) {
  std::string text = DebugfsRead(image, "ex " + path);
  std::regex re(R"(^\s*(\d+)/\s*(\d+)\s+\d+/\s*\d+\s+(\d+)\s*-\s*(\d+)\s+(\d+)(?:\s*-\s*\d+)?\s+(\d+))");
  std::vector<TreeEntry> out;
  std::istringstream in(text);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (!std::regex_search(line, m, re)) continue;
    TreeEntry e;
    e.level = std::stoi(m[1]);
    e.max_level = std::stoi(m[2]);
    e.logical_start = std::stoull(m[3]);
    e.logical_end = std::stoull(m[4]);
    e.physical = std::stoull(m[5]);
    e.length = std::stoull(m[6]);
    out.push_back(e);
  }
  EXPECT_FALSE(out.empty()) << text;
  return out;
}

// The N of "PATH: N extent(s) found" (filefrag's last line, and
// ext4dio-map's); -1 without one.
int64_t FoundCount(const std::string& out) {
  static const std::regex found(R"(: (\d+) extents? found\n)");
  std::smatch m;
  return std::regex_search(out, m, found) ? std::stoll(m[1]) : -1;
}

// filefrag -v's output for `path` inside a read-only loop mount of a copy
// of `image` (torn down before returning; recorded for the run's cleanup).
std::string FilefragOnReadOnlyMount(const std::string& image, const std::string& path) {
  TempDir tmp;
  const std::string copy = tmp / "ro.img", mnt = tmp / "mnt";
  EXPECT_EQ(Run({"cp", image, copy}).exit_code, 0);
  EXPECT_EQ(mkdir(mnt.c_str(), 0755), 0);
  testing::LoopDevice loop(copy, /*read_only=*/true);
  EXPECT_FALSE(loop.device().empty()) << loop.error();
  if (loop.device().empty()) return "";
  const std::string& dev = loop.device();
  testing::RecordForCleanup({"mount", dev, mnt});
  RunResult r = Run({"mount", "-t", "ext4", "-o", "ro", dev, mnt});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return "";
  testing::Defer unmount([mnt] { Run({"umount", mnt}); });
  r = Run({"filefrag", "-v", mnt + path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

// Byte offset of an inode in the image (debugfs imap).
uint64_t InodeOffset(const std::string& image, const std::string& path) {
  std::string text = DebugfsRead(image, "imap " + path);
  return Number(text, R"(located at block (\d+))") * kBlock +
         Number(text, R"(offset (0x[0-9a-fA-F]+))");
}

// The blocks of a special inode (journal <8>, resize <7>) from `stat`.
uint64_t FirstBlockOf(const std::string& image, const std::string& spec) {
  std::string text = DebugfsRead(image, "stat " + spec);
  return Number(text, R"(\):(\d+))");
}

// ---------------------------------------------------------------------------
// Checksums, so that crafted extent-tree blocks can be made to pass
// metadata_csum: hostile in structure, not in checksum.

uint32_t Crc32c(uint32_t crc, const std::string& data) {
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
  }
  return crc;
}

// Rewrites extent-tree block `blk` of inode `ino` through `edit` and, on a
// metadata_csum filesystem, recomputes its tail checksum (crc32c of the
// filesystem seed, inode number, generation, and the block up to eh_max).
void RewriteTreeBlock(const std::string& image, uint64_t blk, uint32_t ino,
                      const std::function<void(std::string&)>& edit) {
  const std::string sb = PRead(image, 1024, 1024);
  const bool csum = GetLe32(sb, 0x64) & 0x400;  // RO_COMPAT_METADATA_CSUM
  std::string block = PRead(image, blk * kBlock, kBlock);
  edit(block);
  if (csum) {
    const uint32_t seed = (GetLe32(sb, 0x60) & 0x2000)  // INCOMPAT_CSUM_SEED
                              ? GetLe32(sb, 0x270)
                              : Crc32c(~0u, sb.substr(0x68, 16));
    std::string text = DebugfsRead(image, "stat <" + std::to_string(ino) + ">");
    const uint32_t gen = static_cast<uint32_t>(Number(text, R"(Generation:\s*(\d+))"));
    const size_t tail = 12 + 12 * size_t{GetLe16(block, 4)};
    ASSERT_LE(tail + 4, block.size());
    uint32_t c = Crc32c(seed, Le32(ino));
    c = Crc32c(c, Le32(gen));
    c = Crc32c(c, block.substr(0, tail));
    block.replace(tail, 4, Le32(c));
  }
  PWrite(image, blk * kBlock, block);
}

// ---------------------------------------------------------------------------
// The base images, made once.

struct BaseImages {
  TempDir dir;
  std::string csum, nocsum, ext3, inline_data;
};

void WriteTree(const std::string& src) {
  ASSERT_EQ(mkdir(src.c_str(), 0755), 0);
  // /f: 3 extents of 4 blocks; /deep: 3000 one-block extents, depth 2;
  // /one: 1 extent; /d/x; /ld -> d.
  testing::WriteIslands(src + "/f", 3, 4 * kBlock, 16 * kBlock, 1);
  testing::WriteIslands(src + "/deep", 3000, kBlock, 2 * kBlock, 2);
  testing::WriteIslands(src + "/one", 1, 8 * kBlock, 8 * kBlock, 3);
  ASSERT_EQ(mkdir((src + "/d").c_str(), 0755), 0);
  testing::WriteFile(src + "/d/x", std::string(5000, 'x'));
  ASSERT_EQ(symlink("d", (src + "/ld").c_str()), 0);
}

const BaseImages& Base() {
  // Destroyed at exit, which removes the directory.
  static std::unique_ptr<BaseImages> base = [] {
    auto b = std::make_unique<BaseImages>();
    const std::string src = b->dir / "src";
    WriteTree(src);
    const std::vector<std::string> common = {
        "-b", std::to_string(kBlock), "-g", std::to_string(kBlocksPerGroup),
        "-E", "root_owner=0:0"};
    auto with = [&](std::vector<std::string> extra) {
      std::vector<std::string> args = common;
      args.insert(args.end(), extra.begin(), extra.end());
      return args;
    };
    b->csum = b->dir / "csum.img";
    testing::MakeFs("ext4", with({"-O", "metadata_csum"}), src, b->csum, "8M");
    b->nocsum = b->dir / "nocsum.img";
    testing::MakeFs("ext4", with({"-O", "^metadata_csum"}), src, b->nocsum, "8M");

    const std::string src3 = b->dir / "src3";
    mkdir(src3.c_str(), 0755);
    // 300 blocks: direct, IND and DIND blocks.
    testing::WriteIslands(src3 + "/f", 1, 300 * kBlock, 300 * kBlock, 4);
    b->ext3 = b->dir / "ext3.img";
    testing::MakeFs("ext3", with({}), src3, b->ext3, "4M");

    const std::string srci = b->dir / "srci";
    mkdir(srci.c_str(), 0755);
    testing::WriteFile(srci + "/f", "tiny");
    b->inline_data = b->dir / "inline.img";
    testing::MakeFs("ext4", with({"-O", "inline_data,^has_journal"}), srci,
                    b->inline_data, "2M");
    return b;
  }();
  return *base;
}

// ---------------------------------------------------------------------------
// The fixture: a fresh copy of a base image per test, and the checks.

class HostileTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { Base(); }

  // A private copy of `base` to corrupt.
  std::string Copy(const std::string& base, const std::string& name = "t.img") {
    const std::string path = dir_ / name;
    RunResult r = testing::Run({"cp", base, path});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return path;
  }

  static Target ByPath(const std::string& image, const std::string& path) {
    Target t;
    t.image = image;
    t.path = path;
    return t;
  }
  static Target ByInode(const std::string& image, uint64_t inode) {
    Target t;
    t.image = image;
    t.inode = inode;
    return t;
  }

  // The CLI on the same target: exit 1 (never a signal), nothing on stdout,
  // exactly one line on stderr naming the problem like the library does.
  static void ExpectCliFails(const Target& t, const std::string& substr) {
    std::vector<std::string> argv = {testing::ToolPath("ext4dio-map"), "--image", t.image};
    if (t.inode != 0) {
      argv.push_back("--inode");
      argv.push_back(std::to_string(t.inode));
    } else {
      argv.push_back(t.path);
    }
    RunResult r = testing::Run(argv);
    EXPECT_LT(r.exit_code, 128) << "killed by signal " << r.exit_code - 128 << "\n" << r.err;
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("ext4dio-map: ", 0), 0u) << r.err;
    EXPECT_THAT(r.err, HasSubstr(substr));
  }

  // LoadMap fails with exactly `code` and a message holding `substr`; the
  // CLI fails the same way.
  static void ExpectFails(const Target& t, int code, const std::string& substr) {
    absl::StatusOr<LoadedMap> m = LoadMap(t);
    ASSERT_FALSE(m.ok()) << "a map was returned (" << m->map.extent_count()
                         << " extents) for a hostile image";
    EXPECT_EQ(CodeOf(m.status()), code) << m.status();
    EXPECT_THAT(std::string(m.status().message()), HasSubstr(substr));
    ExpectCliFails(t, substr);
  }

  static Extent FirstExtent(const std::string& image, const std::string& path) {
    std::vector<Extent> x = DebugfsExtents(image, path);
    EXPECT_FALSE(x.empty());
    return x.empty() ? Extent{} : x[0];
  }

  TempDir dir_;
};

constexpr int kNotExt4 = -EXT4DIO_E_NOT_EXT4;
constexpr int kCorruptFs = -EXT4DIO_E_CORRUPT_FS;
constexpr int kTruncated = -EXT4DIO_E_TRUNCATED;
constexpr int kCorruptMap = -EXT4DIO_E_CORRUPT_MAP;
constexpr int kUnsupportedFile = -EXT4DIO_E_UNSUPPORTED_FILE;
constexpr int kUnsupportedFs = -EXT4DIO_E_UNSUPPORTED_FS;
constexpr int kNotInUse = -EXT4DIO_E_NOT_IN_USE;

// The untouched base images map: every failure below is the corruption's.
TEST_F(HostileTest, BaseImagesMapCleanly) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    for (const char* path : {"/f", "/deep", "/one", "/d/x", "/ld/x"}) {
      absl::StatusOr<LoadedMap> m = LoadMap(ByPath(base, path));
      ASSERT_TRUE(m.ok()) << base << " " << path << ": " << m.status();
    }
    auto deep = LoadMap(ByPath(base, "/deep"));
    EXPECT_EQ(deep->depth, 2u);
    EXPECT_EQ(deep->map.extent_count(), 3000u);
  }
  EXPECT_TRUE(LoadMap(ByPath(Base().ext3, "/f")).ok());
  // The control for the CLI checks: a clean image maps (exit 0). "N
  // extents found" counts fragments as filefrag does (the 3000 one-block
  // leaf extents lie in a few physically contiguous runs, cut by the block
  // groups' metadata); the leaf count is the JSON's leaf_extents.
  RunResult r = testing::Run({testing::ToolPath("ext4dio-map"), "--image", Base().csum, "/deep"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const int64_t fragments = FoundCount(r.out);
  EXPECT_GT(fragments, 1) << r.out;
  EXPECT_LT(fragments, 3000) << r.out;
  RunResult j = testing::Run(
      {testing::ToolPath("ext4dio-map"), "--image", Base().csum, "--json", "/deep"});
  EXPECT_EQ(j.exit_code, 0) << j.err;
  EXPECT_THAT(j.out, HasSubstr("\"leaf_extents\":3000,"));
  EXPECT_THAT(j.out, HasSubstr("\"fragments\":" + std::to_string(fragments) + ","));
  // filefrag's count on the same file, where a loop mount is possible.
  std::string why;
  if (testing::CanUseLoopDevices(&why)) {
    EXPECT_EQ(fragments, FoundCount(FilefragOnReadOnlyMount(Base().csum, "/deep")));
  }
}

// ---------------------------------------------------------------------------
// Not a filesystem, or not all of one.

TEST_F(HostileTest, RandomNoiseIsNotExt4) {
  const std::string img = dir_ / "noise.img";
  std::mt19937_64 rng(7);
  std::string noise(4 << 20, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  testing::WriteFile(img, noise);
  ExpectFails(ByPath(img, "/f"), kNotExt4, "not an ext2/ext3/ext4 filesystem");
}

TEST_F(HostileTest, EmptyFileCannotHoldASuperblock) {
  const std::string img = dir_ / "empty.img";
  testing::WriteFile(img, "");
  ExpectFails(ByPath(img, "/f"), kTruncated, "cannot hold an ext2/3/4 superblock");
}

TEST_F(HostileTest, ImageCutInHalfIsTruncated) {
  const std::string img = Copy(Base().csum);
  Truncate(img, 4 << 20);
  ExpectFails(ByPath(img, "/f"), kTruncated, "truncated: the filesystem is 8192 blocks");
}

TEST_F(HostileTest, ImageCutInsideTheSuperblockAreaIsTruncated) {
  // 1500: the superblock (bytes 1024..2047) is cut; 2048: a whole
  // superblock, no group descriptors; 5000: descriptors too, nothing else.
  for (uint64_t size : {1500, 2048, 5000}) {
    SCOPED_TRACE(size);
    const std::string img = Copy(Base().csum);
    Truncate(img, size);
    ExpectFails(ByPath(img, "/f"), kTruncated,
                size < 2048 ? "cannot hold an ext2/3/4 superblock" : "truncated");
  }
}

// ---------------------------------------------------------------------------
// Superblock. debugfs ssv rewrites the superblock checksum, so these are
// checksummed lies, caught by libext2fs' sanity checks.

TEST_F(HostileTest, SuperblockAbsurdLogBlockSizeIsCorruptFs) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "ssv log_block_size 20");
  ExpectFails(ByPath(img, "/f"), kCorruptFs, "superblock is corrupt");
}

TEST_F(HostileTest, SuperblockZeroBlocksPerGroupIsCorruptFs) {
  const std::string img = Copy(Base().nocsum);
  DebugfsWrite(img, "ssv blocks_per_group 0");
  ExpectFails(ByPath(img, "/f"), kCorruptFs, "superblock is corrupt");
}

TEST_F(HostileTest, SuperblockWrongInodesCountIsCorruptFs) {
  for (const char* count : {"5", "4096"}) {
    SCOPED_TRACE(count);
    const std::string img = Copy(Base().csum);
    DebugfsWrite(img, std::string("ssv inodes_count ") + count);
    ExpectFails(ByPath(img, "/f"), kCorruptFs, "superblock is corrupt");
  }
}

TEST_F(HostileTest, SuperblockBadDescriptorSizeIsCorruptFs) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "ssv desc_size 3");
  ExpectFails(ByPath(img, "/f"), kCorruptFs, "descriptor size");
}

TEST_F(HostileTest, SuperblockBadChecksumIsCorruptFs) {
  const std::string img = Copy(Base().csum);
  PWrite(img, 1024 + 0x3FC, Le32(0x12345678));  // s_checksum, raw
  ExpectFails(ByPath(img, "/f"), kCorruptFs, "Superblock checksum does not match");
}

TEST_F(HostileTest, SuperblockUnknownIncompatFeatureIsUnsupportedFs) {
  const std::string img = Copy(Base().csum);
  const std::string sb = PRead(img, 1024, 1024);
  DebugfsWrite(img, "ssv feature_incompat " + std::to_string(GetLe32(sb, 0x60) | 0x80000000u));
  // Named: libext2fs alone says only "unsupported feature(s)".
  ExpectFails(ByPath(img, "/f"), kUnsupportedFs,
              "unsupported feature(s): FEATURE_I31 (incompat bits 0x80000000)");
}

// ---------------------------------------------------------------------------
// Group descriptors.

TEST_F(HostileTest, GroupBlockBitmapOutOfRangeIsCorruptFs) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    DebugfsWrite(img, "set_bg 1 block_bitmap 99999");
    ExpectFails(ByPath(img, "/f"), kCorruptFs, "bad block for block bitmap");
  }
}

TEST_F(HostileTest, GroupBlockBitmapOnAnInodeTableIsCorruptFs) {
  const std::string img = Copy(Base().csum);
  const uint64_t itable0 = Groups(img)[0].inode_table;
  DebugfsWrite(img, "set_bg 1 block_bitmap " + std::to_string(itable0 + 1));
  ExpectFails(ByPath(img, "/f"), kCorruptFs, "bad block for block bitmap");
}

TEST_F(HostileTest, GroupInodeTableOutOfRangeIsCorruptFs) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    DebugfsWrite(img, "set_bg 2 inode_table 8190");  // 128 blocks from 8190
    ExpectFails(ByPath(img, "/f"), kCorruptFs, "bad block for inode table");
  }
}

TEST_F(HostileTest, GroupInodeBitmapZeroIsCorruptFs) {
  const std::string img = Copy(Base().nocsum);
  DebugfsWrite(img, "set_bg 0 inode_bitmap 0");
  ExpectFails(ByPath(img, "/f"), kCorruptFs, "bad block for inode bitmap");
}

// REGRESSION: ext2fs_open2 does not verify group descriptor checksums and
// Ext4Reader::Open (lib/ext4_reader.cc:221, after ext2fs_check_desc) does not
// either, so a descriptor that fails its checksum is trusted: its bitmap and
// inode-table locations (anywhere that passes ext2fs_check_desc) are what
// the map is validated against. Second case: one raw write moves group 3's
// inode table up by one block, and /f, whose first extent was pointed
// (with debugfs, before) at the first block of the real inode table, maps
// onto it: writes through the map would overwrite inodes. Correct:
// CORRUPT_FS naming the group and its checksum (ext2fs_group_desc_csum_verify
// for every group when ext2fs_has_group_desc_csum; also in the live re-open
// in ReadFile).
TEST_F(HostileTest, GroupDescriptorBadChecksumIsCorruptFs) {
  // 1 KiB blocks: descriptors in block 2, 64 bytes each; bg_checksum at
  // 0x1E, bg_inode_table_lo at 0x08.
  const std::string sb = PRead(Base().csum, 1024, 1024);
  ASSERT_EQ(GetLe16(sb, 0xFE), 64);
  {
    const std::string img = Copy(Base().csum);
    const uint64_t at = 2 * kBlock + 1 * 64 + 0x1E;
    PWrite(img, at, Le16(GetLe16(PRead(img, at, 2), 0) ^ 0x5555));
    ExpectFails(ByPath(img, "/f"), kCorruptFs, "checksum");
  }
  {
    const std::string img = Copy(Base().csum, "moved.img");
    const uint64_t itable3 = Groups(img)[3].inode_table;
    DebugfsScript(img, {"sif /f block[4] 1", "sif /f block[5] " + std::to_string(itable3)});
    ASSERT_FALSE(LoadMap(ByPath(img, "/f")).ok());  // caught while the descriptor is right
    const uint64_t at = 2 * kBlock + 3 * 64 + 0x08;
    PWrite(img, at, Le32(static_cast<uint32_t>(itable3 + 1)));
    ExpectFails(ByPath(img, "/f"), kCorruptFs, "checksum");
  }
}

// ---------------------------------------------------------------------------
// The extent header in the inode (debugfs sif: checksummed).
//   i_block words 0-2: eh_magic | eh_entries << 16, eh_max | eh_depth << 16,
//   eh_generation; then 12-byte entries.

TEST_F(HostileTest, InodeExtentHeaderBadMagicIsCorruptMap) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    const std::string img = Copy(base);
    DebugfsWrite(img, "sif /f block[0] 0x0003F30B");
    ExpectFails(ByPath(img, "/f"), kCorruptMap, "Corrupt extent header");
  }
}

TEST_F(HostileTest, InodeExtentHeaderMoreEntriesThanMaxIsCorruptMap) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f block[0] 0x0005F30A");  // 5 entries, eh_max 4
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "Corrupt extent header");
}

TEST_F(HostileTest, InodeExtentHeaderDepthSixIsCorruptMap) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f block[1] 0x00060004");
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "extent tree depth 6 exceeds 5");
}

TEST_F(HostileTest, InodeExtentHeaderAbsurdDepthIsCorruptMap) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f block[1] 0xFFFF0004");
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "extent tree depth 65535 exceeds 5");
}

// A leaf root made to claim depth 1: its extents are read as index entries
// pointing at blocks that hold no extent header.
TEST_F(HostileTest, InodeLeafRootClaimingDepthOneIsCorruptMap) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /one block[1] 0x00010004");
  ExpectFails(ByPath(img, "/one"), kCorruptMap, "lies outside the filesystem");
}

// A raw write to the inode: its checksum fails. By inode number the reader
// says so (CORRUPT_MAP, a checksum failure that a live filesystem retries).
TEST_F(HostileTest, InodeRawWriteFailsInodeChecksum) {
  const std::string img = Copy(Base().csum);
  const uint64_t ino = DebugfsInode(img, "/f");
  const uint64_t at = InodeOffset(img, "/f") + 0x28 + 5 * 4;  // entry 0's start
  PWrite(img, at, Le32(GetLe32(PRead(img, at, 4), 0) + 1));
  ExpectFails(ByInode(img, ino), kCorruptMap, "inode " + std::to_string(ino) + " fails its checksum");
}

// REGRESSION: the same inode reached by path gives another error class:
// Ext4Reader::LookupPath (lib/ext4_reader.cc:256-264) resolves with
// ext2fs_namei_follow, which reads the final inode (to follow a symlink)
// and fails with EXT2_ET_INODE_CSUM_INVALID; the default case turns that
// into CORRUPT_FS ("/f in IMG: Inode checksum does not match inode").
// Correct: the same as by inode number, CORRUPT_MAP "inode N fails its
// checksum" (e.g. resolve with ext2fs_namei, which does not read the final
// inode, and follow a final symlink only after ReadFile has read it; or map
// EXT2_ET_INODE_CSUM_INVALID to ChecksumError there).
TEST_F(HostileTest, InodeRawWriteFailsInodeChecksumByPath) {
  const std::string img = Copy(Base().csum);
  const uint64_t at = InodeOffset(img, "/f") + 0x28 + 5 * 4;
  PWrite(img, at, Le32(GetLe32(PRead(img, at, 4), 0) + 1));
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "fails its checksum");
}

// ---------------------------------------------------------------------------
// Index and leaf blocks of a depth-2 tree (/deep), written raw: bad
// checksums with metadata_csum, "valid" ones without.

struct DeepTree {
  uint64_t index_block = 0;  // the level-1 index block (root -> here)
  uint64_t first_leaf = 0;   // its first leaf
  uint64_t second_leaf = 0;
  uint64_t second_leaf_start = 0;  // logical start of the second leaf
};

DeepTree Deep(const std::string& image) {
  DeepTree d;
  int level1 = 0;
  for (const TreeEntry& e : Tree(image, "/deep")) {
    EXPECT_EQ(e.max_level, 2);
    if (e.level == 0) d.index_block = e.physical;
    if (e.level == 1 && ++level1 == 1) d.first_leaf = e.physical;
    if (e.level == 1 && level1 == 2) {
      d.second_leaf = e.physical;
      d.second_leaf_start = e.logical_start;
    }
  }
  EXPECT_NE(d.index_block, 0u);
  EXPECT_NE(d.second_leaf, 0u);
  return d;
}

TEST_F(HostileTest, IndexBlockBadMagicIsCorruptMap) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    PWrite(img, Deep(img).index_block * kBlock, Le16(0xF30B));
    ExpectFails(ByPath(img, "/deep"), kCorruptMap, "has no extent header");
  }
}

TEST_F(HostileTest, IndexBlockMoreEntriesThanMaxIsCorruptMap) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    PWrite(img, Deep(img).index_block * kBlock + 2, Le16(0xFF));
    ExpectFails(ByPath(img, "/deep"), kCorruptMap, "Corrupt extent header");
  }
}

TEST_F(HostileTest, LeafBlockBadMagicIsCorruptMap) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    PWrite(img, Deep(img).first_leaf * kBlock, Le16(0x0000));
    ExpectFails(ByPath(img, "/deep"), kCorruptMap, "has no extent header");
  }
}

TEST_F(HostileTest, IndexBlockRawWriteFailsChecksum) {
  const std::string img = Copy(Base().csum);
  // The eh_generation field: harmless in itself, but not what was summed.
  PWrite(img, Deep(img).index_block * kBlock + 8, Le32(0xDEADBEEF));
  ExpectFails(ByPath(img, "/deep"), kCorruptMap, "fails its checksum");
}

TEST_F(HostileTest, LeafBlockRawWriteFailsChecksum) {
  const std::string img = Copy(Base().csum);
  const uint64_t at = Deep(img).second_leaf * kBlock + 12 + 8;  // entry 0's ee_start_lo
  PWrite(img, at, Le32(GetLe32(PRead(img, at, 4), 0) + 1));
  ExpectFails(ByPath(img, "/deep"), kCorruptMap, "fails its checksum");
}

// The same raw write without metadata_csum: nothing catches the checksum,
// so the validation must: the extent now overlaps the next one.
TEST_F(HostileTest, LeafBlockRawWriteWithoutChecksumsIsCaughtByValidation) {
  const std::string img = Copy(Base().nocsum);
  const uint64_t at = Deep(img).second_leaf * kBlock + 12 + 8;
  PWrite(img, at, Le32(GetLe32(PRead(img, at, 4), 0) + 1));
  ExpectFails(ByPath(img, "/deep"), kCorruptMap, "share physical block");
}

// REGRESSION: a tree block whose eh_depth disagrees with its place in the
// tree (the kernel's __ext4_ext_check rejects it: "unexpected eh_depth") is
// accepted: libext2fs walks by the root's depth and ignores the child's
// eh_depth, and Ext4Reader::ReadFileOnce (lib/ext4_reader.cc:421-451) does
// not look at it. The kernel refuses to use such a file, so the map describes
// a file the kernel considers corrupt. Correct: CORRUPT_MAP naming the block
// and its depth. Checked with a crafted, correctly checksummed block (and
// without metadata_csum).
TEST_F(HostileTest, TreeBlockWithWrongDepthIsCorruptMap) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    const uint32_t ino = static_cast<uint32_t>(DebugfsInode(img, "/deep"));
    RewriteTreeBlock(img, Deep(img).index_block, ino,
                     [](std::string& b) { b.replace(6, 2, Le16(0)); });
    ExpectFails(ByPath(img, "/deep"), kCorruptMap, "depth");
  }
}

// REGRESSION: an index entry whose logical start (ei_block) is below the
// first extent of the leaf it points to, so that the previous leaf's last
// extents lie past the next index entry's start. debugfs's extent editor
// keeps every checksum right. The kernel descends by ei_block: it looks for
// logical blocks [ei_block, first extent) in the second leaf, finds them
// missing (a hole, and on writes an allocation: the kernel and the map then
// disagree about where those blocks live) or, since kernel commit
// 9c6e071913792 "ext4: check for inconsistent extents between index and
// leaf block" (2021), refuses the leaf. e2fsck: "end of extent exceeds allowed value". The
// reader flattens the leaves in order and never compares leaf contents with
// the index entries above them (lib/ext4_reader.cc:421-451). Correct:
// CORRUPT_MAP naming the index entry.
TEST_F(HostileTest, IndexEntryDisagreeingWithItsLeafIsCorruptMap) {
  const std::string img = Copy(Base().csum);
  const DeepTree d = Deep(img);
  const uint64_t lower = d.second_leaf_start - 66;
  DebugfsScript(img, {"extent_open /deep", "root", "down", "next_sibling",
                     "replace_node " + std::to_string(lower) + " 1 " +
                         std::to_string(d.second_leaf),
                     "extent_close"});
  bool lowered = false;
  for (const TreeEntry& e : Tree(img, "/deep"))
    lowered |= e.level == 1 && e.physical == d.second_leaf && e.logical_start == lower;
  ASSERT_TRUE(lowered) << DebugfsRead(img, "ex /deep");
  // Nothing else changed: every leaf extent is where it was.
  ASSERT_EQ(DebugfsExtents(img, "/deep"), DebugfsExtents(Base().csum, "/deep"));
  ExpectFails(ByPath(img, "/deep"), kCorruptMap, "index");
}

// ---------------------------------------------------------------------------
// Index loops and index entries pointing at the wrong blocks.

TEST_F(HostileTest, IndexEntryPointingAtItsOwnBlockIsCorruptMap) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    const DeepTree d = Deep(img);
    DebugfsScript(img, {"extent_open /deep", "root", "down",
                       "replace_node 0 1 " + std::to_string(d.index_block),
                       "extent_close"});
    ExpectFails(ByPath(img, "/deep"), kCorruptMap, "reached twice");
  }
}

// A depth-3 tree crafted from the depth-2 one: root -> X -> L -> X, where L
// (a leaf turned into an index block) points back at its parent X.
TEST_F(HostileTest, IndexEntryPointingAtItsParentIsCorruptMap) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    const DeepTree d = Deep(img);
    const uint32_t ino = static_cast<uint32_t>(DebugfsInode(img, "/deep"));
    RewriteTreeBlock(img, d.index_block, ino,
                     [](std::string& b) { b.replace(6, 2, Le16(2)); });
    RewriteTreeBlock(img, d.first_leaf, ino, [&](std::string& b) {
      // eh_magic, eh_entries 1, eh_max unchanged, eh_depth 1; one index
      // entry: ei_block 0, ei_leaf -> X.
      b.replace(0, 4, Le16(0xF30A) + Le16(1));
      b.replace(6, 2, Le16(1));
      b.replace(12, 12, Le32(0) + Le32(static_cast<uint32_t>(d.index_block)) + Le32(0));
    });
    DebugfsWrite(img, "sif /deep block[1] 0x00030004");  // root: depth 3
    ExpectFails(ByPath(img, "/deep"), kCorruptMap, "reached twice");
  }
}

TEST_F(HostileTest, IndexEntryPointingPastTheEndIsCorruptMap) {
  const std::string img = Copy(Base().csum);
  DebugfsScript(img, {"extent_open /deep", "root", "down", "replace_node 0 1 9000",
                     "extent_close"});
  ExpectFails(ByPath(img, "/deep"), kCorruptMap, "lies outside the filesystem");
}

TEST_F(HostileTest, IndexEntryPointingAtTheInodeTableIsCorruptMap) {
  const std::string img = Copy(Base().csum);
  const uint64_t itable = Groups(img)[0].inode_table;
  DebugfsScript(img, {"extent_open /deep", "root", "down",
                     "replace_node 0 1 " + std::to_string(itable + 3), "extent_close"});
  ExpectFails(ByPath(img, "/deep"), kCorruptMap, "has no extent header");
}

// The root's index entry pointing at a leaf of the tree: the leaf is read as
// the level-1 index block, its extents as index entries (ee_len becomes the
// low word of a block number), which lead nowhere readable.
TEST_F(HostileTest, RootIndexPointingAtALeafIsCorruptMap) {
  const std::string img = Copy(Base().nocsum);
  const DeepTree d = Deep(img);
  DebugfsScript(img, {"extent_open /deep", "root",
                     "replace_node 0 1 " + std::to_string(d.first_leaf), "extent_close"});
  ExpectFails(ByPath(img, "/deep"), kCorruptMap, "sits where depth 1 belongs");
}

// REGRESSION: a tree that is a DAG rather than a tree. Five crafted,
// correctly checksummed blocks: the root (depth 5) has 4 entries all
// pointing at B1, whose 84 entries all point at B2, ... B4's at one leaf of
// 84 extents: 4 * 84^5 (1.7e10) leaf entries. libext2fs only rejects a child
// equal to one of its ancestors (a cycle), so the walk in
// Ext4Reader::ReadFileOnce (lib/ext4_reader.cc:421-451) goes on, appending
// to layout.extents, until `limit` = min(i_blocks, s_blocks_count) entries;
// i_blocks is the attacker's too. Here that is 8192 entries; on a 1 GiB
// sparse image with 1 KiB blocks it is 2^20 entries (0.2 s, 30 MB); on a
// TiB-sized filesystem 2^30 or more (tens of GB of Extent records: OOM, or
// minutes) from 5 blocks of metadata. Correct: stop at the first tree block
// reached a second time (CORRUPT_MAP naming it) -- or at the first index
// entry whose children do not start at its ei_block -- so the walk is
// bounded by the number of distinct tree blocks, not by i_blocks.
TEST_F(HostileTest, TreeBlockReachedTwiceStopsTheWalk) {
  const std::string img = Copy(Base().csum);
  const uint32_t ino = static_cast<uint32_t>(DebugfsInode(img, "/one"));
  const Extent one = FirstExtent(img, "/one");
  std::vector<uint64_t> b;
  std::istringstream found(DebugfsRead(img, "ffb 5 7000"));
  std::string word;
  while (found >> word) {
    if (std::isdigit(static_cast<unsigned char>(word[0]))) b.push_back(std::stoull(word));
  }
  ASSERT_EQ(b.size(), 5u);
  constexpr uint16_t kMax = (kBlock - 12) / 12;  // 84
  for (int k = 0; k < 5; ++k) {
    RewriteTreeBlock(img, b[k], ino, [&](std::string& blk) {
      blk.replace(0, 12, Le16(0xF30A) + Le16(kMax) + Le16(kMax) + Le16(4 - k) + Le32(0));
      for (int e = 0; e < kMax; ++e) {
        const std::string entry =
            k < 4 ? Le32(0) + Le32(static_cast<uint32_t>(b[k + 1])) + Le32(0)
                  : Le32(0) + Le16(1) + Le16(0) + Le32(static_cast<uint32_t>(one.physical));
        blk.replace(12 + 12 * e, 12, entry);
      }
    });
  }
  std::vector<std::string> root = {"sif /one block[0] 0x0004F30A", "sif /one block[1] 0x00050004"};
  const char* words[] = {"3", "4", "5", "6", "7", "8", "9", "10", "11", "IND", "DIND", "TIND"};
  for (int e = 0; e < 12; ++e) {
    root.push_back(std::string("sif /one block[") + words[e] + "] " +
                   (e % 3 == 1 ? std::to_string(b[0]) : "0"));
  }
  root.push_back("sif /one blocks 1000000");
  DebugfsScript(img, root);
  absl::StatusOr<LoadedMap> m = LoadMap(ByPath(img, "/one"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(CodeOf(m.status()), kCorruptMap) << m.status();
  EXPECT_THAT(std::string(m.status().message()),
              ::testing::Not(HasSubstr("entries, more than i_blocks")));
  ExpectCliFails(ByPath(img, "/one"), "inode");
}

// A hostile s_first_ino (3) makes the journal (8) and resize inode (7) look
// like user inodes; their blocks are still metadata.
TEST_F(HostileTest, HostileFirstInoDoesNotExposeTheJournal) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "ssv first_ino 3");
  ExpectFails(ByInode(img, 8), kCorruptMap, "overlaps the journal");
  ExpectFails(ByInode(img, 7), kCorruptMap, "overlaps the group descriptors / reserved GDT");
}

// ---------------------------------------------------------------------------
// Leaf extents pointing where they must not (debugfs sif on /f's root leaf:
// entry 0 is words 3-5 = ee_block, ee_len | ee_start_hi << 16, ee_start_lo).

class ExtentTargetTest : public HostileTest {
 protected:
  // /f's entry 0 moved to `start` (4 blocks), in a copy of `base`.
  std::string Moved(uint64_t start, const std::string& base = Base().csum) {
    const std::string img = Copy(base);
    DebugfsWrite(img, "sif /f block[5] " + std::to_string(start));
    return img;
  }
};

TEST_F(ExtentTargetTest, PastTheEndOfTheFilesystem) {
  ExpectFails(ByPath(Moved(9000), "/f"), kCorruptMap,
              "extent 0 (logical 0, 4 blocks at physical 9000) lies outside the filesystem");
}

TEST_F(ExtentTargetTest, StraddlingTheEndOfTheFilesystem) {
  ExpectFails(ByPath(Moved(8190), "/f"), kCorruptMap, "lies outside the filesystem (blocks 1..8191)");
}

TEST_F(ExtentTargetTest, HighBitsOfThePhysicalBlock) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f block[4] 0x00010004");  // ee_start_hi = 1
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "lies outside the filesystem");
}

TEST_F(ExtentTargetTest, BlockZero) {
  ExpectFails(ByPath(Moved(0), "/f"), kCorruptMap, "at physical 0) lies outside the filesystem");
}

TEST_F(ExtentTargetTest, PrimarySuperblock) {
  ExpectFails(ByPath(Moved(1), "/f"), kCorruptMap, "overlaps the primary superblock");
}

TEST_F(ExtentTargetTest, GroupDescriptors) {
  ExpectFails(ByPath(Moved(3), "/f"), kCorruptMap,
              "overlaps the group descriptors / reserved GDT blocks of group 0");
}

TEST_F(ExtentTargetTest, BackupSuperblockAndDescriptors) {
  // sparse_super: group 1 holds backups at its first blocks.
  ExpectFails(ByPath(Moved(kBlocksPerGroup + 1), "/f"), kCorruptMap,
              "overlaps the superblock backup of group 1");
  ExpectFails(ByPath(Moved(kBlocksPerGroup + 3), "/f"), kCorruptMap,
              "overlaps the group descriptors / reserved GDT blocks of group 1");
}

TEST_F(ExtentTargetTest, InodeTable) {
  const uint64_t itable = Groups(Base().csum)[2].inode_table;
  ExpectFails(ByPath(Moved(itable + 10), "/f"), kCorruptMap, "overlaps the inode table of group 2");
}

TEST_F(ExtentTargetTest, BlockBitmap) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    const uint64_t bitmap = Groups(base)[0].block_bitmap;
    ExpectFails(ByPath(Moved(bitmap, base), "/f"), kCorruptMap, "overlaps the block bitmap of group 0");
  }
}

TEST_F(ExtentTargetTest, InodeBitmap) {
  const uint64_t bitmap = Groups(Base().csum)[3].inode_bitmap;
  ExpectFails(ByPath(Moved(bitmap), "/f"), kCorruptMap, "overlaps the inode bitmap of group 3");
}

TEST_F(ExtentTargetTest, Journal) {
  const uint64_t journal = FirstBlockOf(Base().csum, "<8>");
  ExpectFails(ByPath(Moved(journal + 100), "/f"), kCorruptMap, "overlaps the journal");
}

TEST_F(ExtentTargetTest, ResizeInodeBlock) {
  // The resize inode's double-indirect block (its first listed block).
  const uint64_t dind = FirstBlockOf(Base().csum, "<7>");
  ExpectFails(ByPath(Moved(dind), "/f"), kCorruptMap, "overlaps the resize inode");
}

TEST_F(ExtentTargetTest, MmpBlock) {
  const std::string img = Copy(Base().nocsum);
  const Extent f = FirstExtent(img, "/f");
  DebugfsScript(img, {"feature mmp", "ssv mmp_block " + std::to_string(f.physical + 1)});
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "overlaps the MMP block");
}

TEST_F(ExtentTargetTest, TheFilesOwnIndexBlock) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    const DeepTree d = Deep(img);
    // The first leaf extent moved onto the level-1 index block, and onto
    // its own leaf block.
    DebugfsScript(img, {"extent_open /deep", "root", "down", "down",
                       "replace_node 0 1 " + std::to_string(d.index_block),
                       "extent_close"});
    ExpectFails(ByPath(img, "/deep"), kCorruptMap,
                "share physical block " + std::to_string(d.index_block));
    const std::string img2 = Copy(base, "t2.img");
    DebugfsScript(img2, {"extent_open /deep", "root", "down", "down",
                        "replace_node 0 1 " + std::to_string(d.first_leaf),
                        "extent_close"});
    ExpectFails(ByPath(img2, "/deep"), kCorruptMap, "index block " + std::to_string(d.first_leaf));
  }
}

TEST_F(ExtentTargetTest, AnotherExtentOfTheSameFile) {
  const std::vector<Extent> x = DebugfsExtents(Base().csum, "/f");
  ASSERT_EQ(x.size(), 3u);
  ExpectFails(ByPath(Moved(x[2].physical + 2), "/f"), kCorruptMap,
              "share physical block " + std::to_string(x[2].physical + 2));
}

TEST_F(ExtentTargetTest, BlockFreedInTheBitmap) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    const std::vector<Extent> x = DebugfsExtents(img, "/f");
    DebugfsWrite(img, "freeb " + std::to_string(x[2].physical + 1));
    ExpectFails(ByPath(img, "/f"), kCorruptMap,
                "block " + std::to_string(x[2].physical + 1) + " of extent 2");
    EXPECT_THAT(LoadMap(ByPath(img, "/f")).status().message(),
                HasSubstr("is free in the block bitmap"));
  }
}

TEST_F(ExtentTargetTest, FreeBlockElsewhere) {
  const std::string img = Copy(Base().csum);
  const uint64_t free_block =
      Number(DebugfsRead(img, "ffb 1 7000"), R"(Free blocks found:\s*(\d+))");
  DebugfsScript(img, {"sif /f block[4] 1", "sif /f block[5] " + std::to_string(free_block)});
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "is free in the block bitmap of group 3");
}

TEST_F(ExtentTargetTest, GroupMarkedBlockUninit) {
  const std::string img = Copy(Base().csum);
  const std::vector<Extent> x = DebugfsExtents(img, "/f");
  const uint64_t group = (x[2].physical - 1) / kBlocksPerGroup;
  DebugfsWrite(img, "set_bg " + std::to_string(group) + " flags 2");  // BLOCK_UNINIT
  // debugfs leaves the descriptor checksum stale (which is caught first, as
  // CORRUPT_FS): recompute it so the flag itself is what is tested.
  ASSERT_EQ(testing::Run({"debugfs", "-w", "-n", "-R", "set_bg " + std::to_string(group) + " checksum calc",
                          img}).exit_code, 0);
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "(BLOCK_UNINIT)");
}

TEST_F(ExtentTargetTest, BlockBitmapFailsItsChecksum) {
  const std::string img = Copy(Base().csum);
  const std::vector<Extent> x = DebugfsExtents(img, "/f");
  const uint64_t group = (x[2].physical - 1) / kBlocksPerGroup;
  const uint64_t bitmap = Groups(img)[group].block_bitmap;
  // Flip a bit far from the file's blocks, raw: the bitmap's checksum no
  // longer holds.
  const uint64_t at = bitmap * kBlock + kBlocksPerGroup / 8 - 1;
  PWrite(img, at, std::string(1, char(PRead(img, at, 1)[0] ^ 0x40)));
  ExpectFails(ByPath(img, "/f"), kCorruptMap,
              "the block bitmap of group " + std::to_string(group) + " fails its checksum");
}

// ---------------------------------------------------------------------------
// Logical ranges.

TEST_F(HostileTest, ExtentsOverlappingLogically) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f block[6] 2");  // entry 1 starts at logical 2
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "overlaps extent 0");
}

TEST_F(HostileTest, ExtentsNotSortedLogically) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f block[6] 40");  // entry 1 after entry 2
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "not sorted by logical block");
}

TEST_F(HostileTest, ExtentOfLengthZero) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f block[4] 0");
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "has length 0");
}

TEST_F(HostileTest, ExtentReachingPastLogicalBlock2To32) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f block[9] 0xFFFFFFFE");  // last entry: 4 blocks
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "reaches past logical block 2^32");
}

// ---------------------------------------------------------------------------
// i_blocks bounds the walk.

TEST_F(HostileTest, TinyIBlocksOnThousandsOfExtents) {
  for (const std::string& base : {Base().csum, Base().nocsum}) {
    SCOPED_TRACE(base);
    const std::string img = Copy(base);
    DebugfsWrite(img, "sif /deep blocks 8");
    ExpectFails(ByPath(img, "/deep"), kCorruptMap, "more than i_blocks (4 blocks) allows");
  }
}

TEST_F(HostileTest, TinyIBlocksOnAShallowTree) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f blocks 8");
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "i_blocks accounts for only 4");
}

TEST_F(HostileTest, ExtentOf32768BlocksBeyondIBlocks) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f block[4] 0x8000");  // initialized, 32768 blocks
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "i_blocks accounts for only");
}

// ---------------------------------------------------------------------------
// ext3 block maps (i_block[0..11] direct, then IND, DIND, TIND).

TEST_F(HostileTest, Ext3IndirectBlockOutOfRange) {
  const std::string img = Copy(Base().ext3);
  DebugfsWrite(img, "sif /f block[IND] 99999");
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "index block 99999 lies outside the filesystem");
}

TEST_F(HostileTest, Ext3DoubleIndirectBlockOutOfRange) {
  const std::string img = Copy(Base().ext3);
  DebugfsWrite(img, "sif /f block[DIND] 99999");
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "block map unreadable: Illegal doubly indirect block");
}

TEST_F(HostileTest, Ext3DataBlockOnTheInodeTable) {
  const std::string img = Copy(Base().ext3);
  const uint64_t itable = Groups(img)[0].inode_table;
  DebugfsWrite(img, "sif /f block[0] " + std::to_string(itable));
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "overlaps the inode table of group 0");
}

TEST_F(HostileTest, Ext3IndirectBlockOnTheInodeTable) {
  const std::string img = Copy(Base().ext3);
  const uint64_t itable = Groups(img)[0].inode_table;
  DebugfsWrite(img, "sif /f block[IND] " + std::to_string(itable));
  // The inode table's bytes read as block pointers: garbage blocks.
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "lies outside the filesystem");
}

TEST_F(HostileTest, Ext3DataBlockOnItsOwnIndirectBlock) {
  const std::string img = Copy(Base().ext3);
  const uint64_t ind = Number(DebugfsRead(img, "stat /f"), R"(\(IND\):(\d+))");
  DebugfsWrite(img, "sif /f block[3] " + std::to_string(ind));
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "and index block " + std::to_string(ind));
}

TEST_F(HostileTest, Ext3TinyIBlocks) {
  const std::string img = Copy(Base().ext3);
  DebugfsWrite(img, "sif /f blocks 2");
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "more than i_blocks allows");
}

// An extent file with EXT4_EXTENTS_FL cleared: its extent header read as
// block pointers.
TEST_F(HostileTest, ExtentsFlagClearedOnAnExtentFile) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f flags 0");
  ExpectFails(ByPath(img, "/f"), kCorruptMap, "lies outside the filesystem");
}

// ---------------------------------------------------------------------------
// Files that have no map to give.

TEST_F(HostileTest, InlineDataFileIsUnsupported) {
  const std::string img = Copy(Base().inline_data);
  ExpectFails(ByPath(img, "/f"), kUnsupportedFile, "inline");
}

TEST_F(HostileTest, DirectoryIsUnsupported) {
  ExpectFails(ByPath(Base().csum, "/d"), kUnsupportedFile, "is not a regular file: it is a directory");
}

TEST_F(HostileTest, SymlinkToDirectoryIsUnsupported) {
  ExpectFails(ByPath(Base().csum, "/ld"), kUnsupportedFile, "it is a directory");
}

TEST_F(HostileTest, DeviceNodeAndFifoAreUnsupported) {
  // debugfs makes them without root.
  const std::string img = Copy(Base().csum);
  DebugfsScript(img, {"mknod cdev c 1 3", "mknod bdev b 7 0", "mknod fifo p"});
  ExpectFails(ByPath(img, "/cdev"), kUnsupportedFile, "it is a character device");
  ExpectFails(ByPath(img, "/bdev"), kUnsupportedFile, "it is a block device");
  ExpectFails(ByPath(img, "/fifo"), kUnsupportedFile, "it is a FIFO");
}

TEST_F(HostileTest, DataJournalingFlagIsUnsupported) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f flags 0x84000");
  ExpectFails(ByPath(img, "/f"), kUnsupportedFile, "data journaling");
}

TEST_F(HostileTest, EncryptedFlagIsUnsupported) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f flags 0x80800");
  ExpectFails(ByPath(img, "/f"), kUnsupportedFile, "encrypted");
}

TEST_F(HostileTest, VerityFlagIsUnsupported) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f flags 0x180000");
  ExpectFails(ByPath(img, "/f"), kUnsupportedFile, "verity");
}

TEST_F(HostileTest, InlineDataFlagOnAnExtentFileIsUnsupported) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f flags 0x10080000");
  ExpectFails(ByPath(img, "/f"), kUnsupportedFile, "inline");
}

TEST_F(HostileTest, ExtendedAttributeInodeIsUnsupported) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "sif /f flags 0x280000");  // EXT4_EA_INODE_FL
  ExpectFails(ByPath(img, "/f"), kUnsupportedFile, "extended-attribute inode");
}

// ---------------------------------------------------------------------------
// Paths and inode numbers.

TEST_F(HostileTest, MissingPathIsEnoent) {
  ExpectFails(ByPath(Base().csum, "/no/such"), -ENOENT, "No such file or directory");
}

TEST_F(HostileTest, PathThroughARegularFileIsEnotdir) {
  ExpectFails(ByPath(Base().csum, "/f/x"), -ENOTDIR, "Not a directory");
}

TEST_F(HostileTest, SymlinkLoopIsEloop) {
  const std::string img = Copy(Base().csum);
  DebugfsScript(img, {"symlink a b", "symlink b a"});
  ExpectFails(ByPath(img, "/a"), -ELOOP, "symbolic links");
}

// Hostile directory entries: names for reserved and free inodes.
TEST_F(HostileTest, DirectoryEntryForTheJournalIsUnsupported) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "link <8> j");
  ExpectFails(ByPath(img, "/j"), kUnsupportedFile, "inode 8 is a reserved inode");
}

TEST_F(HostileTest, DirectoryEntryForAFreeInodeIsNotInUse) {
  const std::string img = Copy(Base().csum);
  DebugfsWrite(img, "link <100> free");
  ExpectFails(ByPath(img, "/free"), kNotInUse, "inode 100 is not in use");
}

// The root directory's block written raw: the lookup fails on its checksum.
TEST_F(HostileTest, DirectoryBlockFailingItsChecksumIsCorruptFs) {
  const std::string img = Copy(Base().csum);
  const uint64_t root = FirstBlockOf(img, "<2>");
  PWrite(img, root * kBlock + 40, "Z");  // inside the name "lost+found"
  ExpectFails(ByPath(img, "/f"), kCorruptFs, "Directory block checksum does not match");
  // By inode number the file itself is fine.
  EXPECT_TRUE(LoadMap(ByInode(img, DebugfsInode(Base().csum, "/f"))).ok());
}

TEST_F(HostileTest, InodeZero) {
  // LoadMap: an inode of 0 means "use the path", and there is none.
  absl::StatusOr<LoadedMap> m = LoadMap(ByInode(Base().csum, 0));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(CodeOf(m.status()), -EINVAL) << m.status();
  // The reader itself: inode 0 does not exist.
  auto reader = Ext4Reader::Open(Base().csum, ReaderOptions{});
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::StatusOr<FileLayout> layout = (*reader)->ReadFile(0);
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(CodeOf(layout.status()), kNotInUse);
  EXPECT_THAT(std::string(layout.status().message()), HasSubstr("inode 0 does not exist"));
  // The CLI takes --inode 0 for "no inode": a usage error, exit 2.
  RunResult r = testing::Run({testing::ToolPath("ext4dio-map"), "--image", Base().csum, "--inode", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  ExpectCliFails(ByInode(Base().csum, 1u << 30), "does not exist");
}

TEST_F(HostileTest, InodePastInodesCountIsNotInUse) {
  ExpectFails(ByInode(Base().csum, 2049), kNotInUse, "inode 2049 does not exist (the filesystem has inodes 1..2048)");
  ExpectFails(ByInode(Base().csum, uint64_t{1} << 40), kNotInUse, "does not exist");
}

TEST_F(HostileTest, FreeInodeIsNotInUse) {
  ExpectFails(ByInode(Base().csum, 100), kNotInUse, "inode 100 is not in use (free in the inode bitmap of group 0)");
}

TEST_F(HostileTest, InodeInAnUninitGroupIsNotInUse) {
  ExpectFails(ByInode(Base().csum, 1500), kNotInUse, "group 2 has no inodes in use");
}

TEST_F(HostileTest, ReservedInodesAreUnsupported) {
  ExpectFails(ByInode(Base().csum, 8), kUnsupportedFile, "inode 8 is a reserved inode");
  ExpectFails(ByInode(Base().csum, 7), kUnsupportedFile, "inode 7 is a reserved inode");
  ExpectFails(ByPath(Base().csum, "/"), kUnsupportedFile, "inode 2 is a reserved inode");
}

TEST_F(HostileTest, InodeMarkedInUseButZeroedIsNotInUse) {
  const std::string img = Copy(Base().csum);
  DebugfsScript(img, {"sif /f mode 0", "sif /f links_count 0"});
  ExpectFails(ByPath(img, "/f"), kNotInUse, "is not in use (mode 0)");
}

// ---------------------------------------------------------------------------
// Failures leave nothing open behind them.

int OpenFds() {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += fcntl(fd, F_GETFD) != -1;
  return n;
}

TEST_F(HostileTest, FailuresLeakNoDescriptors) {
  const std::string truncated = Copy(Base().csum, "cut.img");
  Truncate(truncated, 4 << 20);
  const std::string bad_extent = Copy(Base().csum, "ext.img");
  DebugfsWrite(bad_extent, "sif /f block[5] 9000");
  const std::string bad_gd = Copy(Base().nocsum, "gd.img");
  DebugfsWrite(bad_gd, "set_bg 1 block_bitmap 99999");
  const int before = OpenFds();
  for (int i = 0; i < 20; ++i) {
    EXPECT_FALSE(LoadMap(ByPath(truncated, "/f")).ok());
    EXPECT_FALSE(LoadMap(ByPath(bad_extent, "/f")).ok());
    EXPECT_FALSE(LoadMap(ByPath(bad_gd, "/f")).ok());
    EXPECT_FALSE(LoadMap(ByPath(Base().csum, "/nope")).ok());
    EXPECT_FALSE(LoadMap(ByInode(Base().csum, 100)).ok());
  }
  EXPECT_EQ(OpenFds(), before);
  ExpectCliFails(ByPath(truncated, "/f"), "truncated");
}

}  // namespace
}  // namespace ext4dio
