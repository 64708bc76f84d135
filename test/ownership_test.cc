// Block ownership in image mode (lib/ownership.*): a file whose blocks
// another inode also claims (e2fsck pass 1B, "multiply-claimed blocks") is
// refused for writing, naming the block and the other inode, and nothing is
// written; EXT4DIO_OPEN_SKIP_OWNERSHIP_CHECK / --no-ownership-check let the
// write through with a warning. The bad-blocks inode's blocks are metadata.
//
// Images are made by mkfs -d, then corrupted with `debugfs -w -R "sif ..."`
// (which keeps checksums and the clean state right, so only the shared
// block is wrong): block maps through block[N], depth-0 extent trees
// through the raw i_block words (block[5] is the first extent's start),
// xattr blocks through file_acl.
#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "errors.h"
#include "ext4_reader.h"
#include "file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::RandomBytes;

using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunResult;
using testing::TempDir;

constexpr uint64_t kKiB = 1024;

class OwnershipTest : public ::testing::Test {
 protected:
  // An image holding /a and /b (`file_bytes` each, contiguous), /c (empty),
  // /s (islands: a depth-1 extent tree when extents are on).
  void Make(const std::string& type, const std::vector<std::string>& mkfs_args,
            uint64_t file_bytes = 64 * kKiB) {
    const std::string src = dir_ / "src";
    ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
    a_data_ = RandomBytes(file_bytes, 1);
    testing::WriteFile(src + "/a", a_data_);
    testing::WriteFile(src + "/b", RandomBytes(file_bytes, 2));
    testing::WriteFile(src + "/c", "");
    // 8 islands 64 KiB apart: more extents than the inode's root holds.
    testing::WriteIslands(src + "/s", 8, 4096, 64 * kKiB, 3);
    image_ = dir_ / "fs.img";
    testing::MakeFs(type, mkfs_args, src, image_, "16M");
  }

  FileLayout Layout(const std::string& path) {
    auto r = Ext4Reader::Open(image_, ReaderOptions{});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    auto ino = (*r)->LookupPath(path);
    EXPECT_TRUE(ino.ok()) << ino.status();
    if (!ino.ok()) return {};
    auto l = (*r)->ReadFile(*ino);
    EXPECT_TRUE(l.ok()) << l.status();
    if (!l.ok()) return {};
    return std::move(*l);
  }

  void Debugfs(const std::string& request) {
    RunResult r = testing::Run({"debugfs", "-w", "-R", request, image_});
    ASSERT_EQ(r.exit_code, 0) << request << ": " << r.err;
    // debugfs exits 0 even when a request fails; it then says why.
    for (absl::string_view bad : {"not found", "Invalid", "Couldn't", "invalid"})
      ASSERT_THAT(r.err, Not(HasSubstr(bad))) << request;
  }

  OpenOptions Options(const std::string& path, bool skip = false) const {
    OpenOptions o;
    o.target.image = image_;
    o.target.path = path;
    o.write = true;
    o.skip_ownership_check = skip;
    return o;
  }

  // Opening `path` for writing is refused with `code`, the message holds
  // every one of `needles`, and the image is byte-identical afterwards.
  void ExpectRefused(const std::string& path, int code,
                     const std::vector<std::string>& needles, bool skip = false) {
    const std::string before = testing::ReadFile(image_);
    auto f = File::Open(Options(path, skip));
    ASSERT_FALSE(f.ok()) << path << " opened for writing";
    EXPECT_EQ(CodeOf(f.status()), code) << f.status();
    for (const std::string& n : needles) EXPECT_THAT(std::string(f.status().message()), HasSubstr(n));
    EXPECT_TRUE(testing::ReadFile(image_) == before) << "the image changed";
  }

  // With the check skipped: the open works, warns, and a write lands.
  void ExpectAllowedWhenSkipped(const std::string& path) {
    auto f = File::Open(Options(path, /*skip=*/true));
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_THAT((*f)->warning(), HasSubstr("block ownership not checked"));
    const std::string payload = RandomBytes(4096, 9);
    auto w = (*f)->Pwrite(payload.data(), payload.size(), 0);
    ASSERT_TRUE(w.ok()) << w.status();
    std::string back(payload.size(), '\0');
    auto r = (*f)->Pread(back.data(), back.size(), 0);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(back == payload);
  }

  uint64_t Inode(const std::string& path) { return Layout(path).inode; }

  TempDir dir_;
  std::string image_;
  std::string a_data_;
};

TEST_F(OwnershipTest, CleanImageWritesWithoutWarning) {
  Make("ext4", {"-b", "4096"});
  for (const char* p : {"/a", "/b", "/s"}) {
    auto f = File::Open(Options(p));
    ASSERT_TRUE(f.ok()) << p << ": " << f.status();
    EXPECT_THAT((*f)->warning(), Not(HasSubstr("ownership")));
  }
}

TEST_F(OwnershipTest, BlockMapDataBlockSharedWithAnotherFile) {
  Make("ext2", {"-b", "1024"});
  const FileLayout a = Layout("/a");
  ASSERT_FALSE(a.extent_tree);
  const uint64_t shared = a.extents.at(0).physical + 3;
  const uint64_t b = Inode("/b");
  Debugfs(absl::StrCat("sif /b block[2] ", shared));
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("block ", shared, " "), absl::StrCat("inode ", b),
                 "logical block 2"});
  // And the other way round: /b's block 2 is /a's.
  ExpectRefused("/b", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("block ", shared, " "), absl::StrCat("inode ", a.inode)});
  ExpectAllowedWhenSkipped("/a");
}

TEST_F(OwnershipTest, WriteIntoAnotherFilesIndirectBlockRefused) {
  // f_dup2's worst case: the write landed in another inode's indirect block.
  Make("ext2", {"-b", "1024"});
  const FileLayout a = Layout("/a");  // 64 blocks of 1 KiB: one indirect block
  ASSERT_EQ(a.map_blocks.size(), 1u);
  const uint64_t ind = a.map_blocks[0];
  Debugfs(absl::StrCat("sif /b block[0] ", ind));
  ExpectRefused("/b", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("block ", ind, " "), absl::StrCat("inode ", a.inode),
                 "indirect block"});
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP, {absl::StrCat("block ", ind, " ")});
  ExpectAllowedWhenSkipped("/b");
}

TEST_F(OwnershipTest, ExtentSharedWithAnotherFile) {
  Make("ext4", {"-b", "4096"});
  const FileLayout a = Layout("/a");
  const FileLayout b0 = Layout("/b");
  ASSERT_TRUE(a.extent_tree);
  ASSERT_EQ(b0.depth, 0u);
  ASSERT_EQ(b0.extents.size(), 1u);
  // i_block words: 0-2 the header, 3 ee_block, 4 ee_len | ee_start_hi << 16,
  // 5 ee_start_lo. /b's extent now starts 5 blocks into /a's.
  const uint64_t shared = a.extents.at(0).physical + 5;
  Debugfs(absl::StrCat("sif /b block[5] ", shared));
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("block ", shared, " "), absl::StrCat("inode ", b0.inode),
                 "logical block 0"});
  ExpectAllowedWhenSkipped("/a");
}

TEST_F(OwnershipTest, XattrBlockOfAnotherInodeInsideTheFile) {
  Make("ext4", {"-b", "4096"});
  const FileLayout a = Layout("/a");
  const uint64_t shared = a.extents.at(0).physical + 7;
  const uint64_t c = Inode("/c");
  Debugfs(absl::StrCat("sif /c file_acl ", shared));
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("block ", shared, " "), absl::StrCat("inode ", c),
                 "extended-attribute block"});
  ExpectAllowedWhenSkipped("/a");
}

TEST_F(OwnershipTest, OwnXattrBlockInsideOwnData) {
  Make("ext4", {"-b", "4096"});
  const FileLayout a = Layout("/a");
  const uint64_t shared = a.extents.at(0).physical + 1;
  Debugfs(absl::StrCat("sif /a file_acl ", shared));
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("block ", shared, " "), "own extended-attribute block"});
}

TEST_F(OwnershipTest, ExtentTreeIndexBlockClaimedByAnotherFile) {
  Make("ext4", {"-b", "4096"});
  const FileLayout s = Layout("/s");
  ASSERT_GE(s.depth, 1u);
  ASSERT_FALSE(s.map_blocks.empty());
  const uint64_t leaf = s.map_blocks[0];
  const uint64_t b = Inode("/b");
  Debugfs(absl::StrCat("sif /b block[5] ", leaf));
  Debugfs("sif /b block[4] 1");  // one block long: just the leaf
  // Writing /b would overwrite /s's extent tree block.
  ExpectRefused("/b", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("block ", leaf, " "), absl::StrCat("inode ", s.inode),
                 "extent tree block"});
  // /s's own index block is data of /b.
  ExpectRefused("/s", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("block ", leaf, " "), absl::StrCat("inode ", b)});
  ExpectAllowedWhenSkipped("/b");
}

TEST_F(OwnershipTest, BigallocClusterSharedWithAnotherFile) {
  // Clusters of 16 blocks: /b's extent moved into a cluster of /a's without
  // sharing any block of it still shares the cluster (f_badcluster).
  Make("ext4", {"-b", "1024", "-O", "bigalloc", "-C", "16384"});
  const FileLayout a = Layout("/a");
  const uint64_t last = a.extents.back().physical + a.extents.back().length - 1;
  // A block after /a's end but inside its last cluster, if there is one;
  // else /a's last block.
  const uint64_t target = (last % 16 != 15) ? last + 1 : last;
  Debugfs(absl::StrCat("sif /b block[5] ", target));
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP, {absl::StrCat("inode ", Inode("/b"))});
}

TEST_F(OwnershipTest, BigallocBlockOffMisplacedInsideItsCluster) {
  // f_badcluster: within one file, logical block 0 at the second block of a
  // cluster (e2fsck: "violates cluster allocation rules", pass 1B).
  Make("ext4", {"-b", "1024", "-O", "bigalloc", "-C", "16384"});
  const FileLayout a = Layout("/a");
  ASSERT_EQ(a.extents.size(), 1u);
  const uint64_t p = a.extents[0].physical;
  ASSERT_EQ(p % 16, 0u);
  // 15 blocks from p + 1: still inside /a's first cluster (in use).
  Debugfs(absl::StrCat("sif /a block[5] ", p + 1));
  Debugfs("sif /a block[4] 15");
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("physical block ", p + 1), "cluster allocation rules"});
  ExpectAllowedWhenSkipped("/a");
}

TEST_F(OwnershipTest, BigallocLogicalClusterInTwoPhysicalClusters) {
  // Logical blocks 0-14 in /a's first cluster, logical block 15 (same
  // logical cluster) in its second cluster.
  Make("ext4", {"-b", "1024", "-O", "bigalloc", "-C", "16384"});
  const FileLayout a = Layout("/a");
  ASSERT_EQ(a.extents.size(), 1u);
  const uint64_t p = a.extents[0].physical;
  ASSERT_EQ(p % 16, 0u);
  // Root with two extents: (0, 15 blocks at p) and (15, 1 block at p + 31).
  Debugfs("sif /a block[0] 0x0002f30a");  // eh_magic, eh_entries 2
  Debugfs("sif /a block[4] 15");
  Debugfs("sif /a block[6] 15");
  Debugfs("sif /a block[7] 1");
  Debugfs(absl::StrCat("sif /a block[8] ", p + 31));
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP,
                {absl::StrCat("physical block ", p + 31), "cluster allocation rules"});
  ExpectAllowedWhenSkipped("/a");
}

TEST_F(OwnershipTest, BadBlocksInodeOverlapIsMetadata) {
  // f_bbfile: the bad-blocks inode lists blocks a file also uses. Those
  // blocks are unusable metadata: refused even for mapping, and the skip
  // option does not change that.
  Make("ext2", {"-b", "1024"});
  const FileLayout a = Layout("/a");
  const uint64_t bad = a.extents.at(0).physical + 4;
  Debugfs(absl::StrCat("sif <1> block[0] ", bad));
  Debugfs("sif <1> blocks 2");
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP, {"bad-blocks inode"});
  ExpectRefused("/a", -EXT4DIO_E_CORRUPT_MAP, {"bad-blocks inode"}, /*skip=*/true);
  OpenOptions ro = Options("/a");
  ro.write = false;
  auto f = File::Open(ro);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(CodeOf(f.status()), -EXT4DIO_E_CORRUPT_MAP) << f.status();
  // Other files stay writable.
  auto g = File::Open(Options("/b"));
  EXPECT_TRUE(g.ok()) << g.status();
}

TEST_F(OwnershipTest, CliRefusesAndSkipsWithWarning) {
  Make("ext2", {"-b", "1024"});
  const FileLayout a = Layout("/a");
  const uint64_t shared = a.extents.at(0).physical;
  Debugfs(absl::StrCat("sif /b block[0] ", shared));
  const std::string payload = dir_ / "payload";
  testing::WriteFile(payload, RandomBytes(512, 5));
  const std::string before = testing::ReadFile(image_);
  for (bool dry : {true, false}) {
    std::vector<std::string> argv = {testing::ToolPath("ext4dio-write"), "--image", image_,
                                     "--inode", std::to_string(a.inode), "--input", payload};
    if (dry) argv.push_back("--dry-run");
    RunResult r = testing::Run(argv);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(absl::StrCat("block ", shared, " ")));
    EXPECT_THAT(r.err, HasSubstr(absl::StrCat("inode ", Inode("/b"))));
  }
  EXPECT_TRUE(testing::ReadFile(image_) == before) << "the image changed";
  RunResult r = testing::Run({testing::ToolPath("ext4dio-write"), "--image", image_, "--inode",
                              std::to_string(a.inode), "--input", payload,
                              "--no-ownership-check"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("block ownership not checked"));
}

}  // namespace
}  // namespace ext4dio
