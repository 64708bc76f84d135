// ext4dio-map as a user meets it: exit codes, messages, option parsing.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testutil.h"
#include "../tools/cli_util.h"

namespace ext4dio {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Run;
using testing::RunResult;
using testing::TempDir;

// The table has rows 0..n-1.
MATCHER_P(HasSpansOfRows, n, "") {
  return arg.find("\n" + std::string(n - 1 < 10 ? 3 : 2, ' ') + std::to_string(n - 1) + ": ") !=
             std::string::npos &&
         arg.find("\n" + std::string(n < 10 ? 3 : 2, ' ') + std::to_string(n) + ": ") ==
             std::string::npos;
}

class MapCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(testing::Sh("mkdir -p " + testing::Quote(dir_ / "src")).exit_code, 0);
    testing::WriteIslands(dir_ / "src/frag", 20, 4096, 8192, 7);
    image_ = dir_ / "fs.img";
    testing::MakeFs("ext4", {"-b", "4096"}, dir_ / "src", image_, "16M");
  }
  RunResult Map(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {testing::ToolPath("ext4dio-map")};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::Run(argv);
  }
  TempDir dir_;
  std::string image_;
};

TEST_F(MapCliTest, PrintsFilefragStyleTable) {
  RunResult r = Map({"--image", image_, "/frag"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("File size of /frag is 159744 (39 blocks of 4096 bytes)"));
  EXPECT_THAT(r.out, HasSubstr(" ext:     logical_offset:        physical_offset: length:   expected: flags:"));
  // 20 leaf extents, laid out one after the other around the holes: one
  // fragment as filefrag counts them (sparse-contiguous).
  EXPECT_THAT(r.out, HasSubstr("/frag: 1 extent found"));
  EXPECT_THAT(r.out, HasSpansOfRows(20));
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST_F(MapCliTest, JsonHasTheStableFields) {
  RunResult r = Map({"--image", image_, "--json", "/frag"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* field : {"\"block_size\":4096", "\"size\":159744", "\"extents\":[",
                            "\"logical_block\":0", "\"physical_block\":", "\"blocks\":1",
                            "\"unwritten\":false"})
    EXPECT_THAT(r.out, HasSubstr(field));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "one JSON object, one line";
}

TEST_F(MapCliTest, InodeReplacesTarget) {
  RunResult by_path = Map({"--image", image_, "--json", "/frag"});
  RunResult by_inode = Map({"--image", image_, "--json", "--inode", "12"});
  ASSERT_EQ(by_inode.exit_code, 0) << by_inode.err;
  EXPECT_THAT(by_inode.out, HasSubstr("\"inode\":12"));
  EXPECT_THAT(by_path.out, HasSubstr("\"inode\":12"));
}

TEST_F(MapCliTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Map({}).exit_code, 2);
  EXPECT_EQ(Map({"--bogus"}).exit_code, 2);
  EXPECT_EQ(Map({"--image", image_}).exit_code, 2);
  EXPECT_EQ(Map({"--image", image_, "--inode", "12", "/frag"}).exit_code, 2);
  EXPECT_EQ(Map({"--inode", "12"}).exit_code, 2);
  EXPECT_EQ(Map({"--image-offset", "1M", "/x"}).exit_code, 2);
  EXPECT_EQ(Map({"--image", image_, "--image-offset", "12Q", "/frag"}).exit_code, 2);
  EXPECT_EQ(Map({"--image", image_, "--inode", "abc"}).exit_code, 2);
  RunResult help = Map({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("--image-offset"));
}

TEST_F(MapCliTest, FailuresExitOneWithOneLineNamingFileAndCause) {
  RunResult r = Map({"--image", image_, "/missing"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("/missing"));
  EXPECT_THAT(r.err, HasSubstr("No such file"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(r.out.empty());

  r = Map({"--image", dir_ / "nonexistent.img", "/frag"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("nonexistent.img"));

  r = Map({"--image", image_, "/"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("reserved inode"));
}

TEST_F(MapCliTest, ImageOffsetAcceptsSizeSuffixes) {
  std::string disk = dir_ / "disk.img";
  ASSERT_EQ(testing::Sh("dd if=/dev/zero of=" + disk + " bs=1M count=1 status=none && cat " +
                        image_ + " >> " + disk).exit_code, 0);
  for (const char* off : {"1048576", "1M", "1m", "1MiB", "1024K", "1024kib"}) {
    RunResult r = Map({"--image", disk, "--image-offset", off, "--json", "/frag"});
    EXPECT_EQ(r.exit_code, 0) << off << ": " << r.err;
    EXPECT_THAT(r.out, HasSubstr("\"device_offset\":1048576")) << off;
  }
  RunResult wrong = Map({"--image", disk, "/frag"});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_THAT(wrong.err, HasSubstr("not an ext2/ext3/ext4 filesystem"));
}

// Like filefrag: every TARGET in turn, a failure reported and the rest
// still printed, exit 1 when any failed. JSON: one object per line.
TEST_F(MapCliTest, ManyTargetsLikeFilefrag) {
  RunResult r = Map({"--image", image_, "/frag", "/missing", "/frag"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("ext4dio-map: /missing: "));
  size_t first = r.out.find("File size of /frag is");
  ASSERT_NE(first, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("File size of /frag is", first + 1), std::string::npos) << r.out;
  r = Map({"--image", image_, "--json", "/frag", "/frag"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("\"fragments\":1"));
  EXPECT_THAT(r.out, HasSubstr("\"leaf_extents\":20"));
}

// filefrag's "eof": the extent reaches i_size (here the last one; the file
// is 159744 bytes, 39 blocks).
TEST_F(MapCliTest, EofFlagIsFilefrags) {
  RunResult r = Map({"--image", image_, "/frag"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(":             last,eof\n"));
  EXPECT_EQ(r.out.find("eof"), r.out.rfind("eof")) << "only the extent reaching i_size: " << r.out;
}

TEST_F(MapCliTest, HelpReadsLikeAGnuTool) {
  for (const char* tool : {"ext4dio-map", "ext4dio-read", "ext4dio-write"}) {
    RunResult help = testing::Run({testing::ToolPath(tool), "--help"});
    ASSERT_EQ(help.exit_code, 0) << tool;
    EXPECT_THAT(help.out, HasSubstr(std::string("Usage: ") + tool + " [OPTION]..."));
    EXPECT_THAT(help.out, HasSubstr("--image-offset=BYTES"));
    EXPECT_THAT(help.out, HasSubstr("--partition=N"));
    for (const char* artefact : {"TEXT", "UINT", "SIZE", "Excludes", "REQUIRED", "[OPTIONS]"})
      EXPECT_THAT(help.out, Not(HasSubstr(artefact))) << tool;
  }
  EXPECT_THAT(Map({"--help"}).out, HasSubstr("TARGET..."));
}

TEST_F(MapCliTest, UsageErrorsNameTheProgramAndPointToHelp) {
  for (const char* tool : {"ext4dio-map", "ext4dio-read", "ext4dio-write"}) {
    RunResult r = testing::Run({testing::ToolPath(tool), "--bogus", "/x"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.err.rfind(std::string(tool) + ": ", 0), 0u) << r.err;
    EXPECT_THAT(r.err, HasSubstr(std::string("Try '") + tool + " --help' for more information."));
    r = testing::Run({testing::ToolPath(tool), "--image", image_, "--inode", "0"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_THAT(r.err, HasSubstr("--inode 0 is invalid: ext4 inodes start at 1"));
    EXPECT_THAT(r.err, Not(HasSubstr("no TARGET")));
  }
}

// Partitioned disk images: the filesystem in partition 2 (MBR and GPT).
class PartitionCliTest : public MapCliTest, public ::testing::WithParamInterface<const char*> {
 protected:
  // A 24 MiB disk, partition 1 at 1 MiB (2 MiB), partition 2 at 4 MiB of
  // `p2_sectors` holding the 16 MiB filesystem.
  std::string Disk(const std::string& label, uint64_t p2_sectors) {
    const std::string disk = dir_ / ("disk-" + label + ".img");
    const std::string type = label == "gpt" ? "0FC63DAF-8483-4772-8E79-3D69D8477DE4" : "83";
    const std::string script = "label: " + label + "\nstart=2048, size=4096, type=" + type +
                               "\nstart=8192, size=" + std::to_string(p2_sectors) +
                               ", type=" + type + "\n";
    EXPECT_EQ(testing::Sh("truncate -s 24M " + disk + " && printf '" + script +
                          "' | sfdisk -q " + disk + " && dd if=" + image_ + " of=" + disk +
                          " bs=1M seek=4 conv=notrunc status=none")
                  .exit_code,
              0);
    return disk;
  }
};

TEST_P(PartitionCliTest, NamesThePartitionsAndTakesPartitionN) {
  const std::string label = GetParam();
  const std::string disk = Disk(label, 32768);
  RunResult r = Map({"--image", disk, "/frag"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(std::string("holds a partition table (") +
                               (label == "dos" ? "MBR" : "gpt") + ")"));
  EXPECT_THAT(r.err, HasSubstr("partition 2: type "));
  EXPECT_THAT(r.err, HasSubstr("ext4, at byte offset 4194304, 16777216 bytes"));
  EXPECT_THAT(r.err, HasSubstr("at byte offset 1048576"));
  EXPECT_THAT(r.err, HasSubstr("--partition N"));

  r = Map({"--image", disk, "--partition", "2", "--json", "/frag"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"device_offset\":4194304"));
  RunResult rd = testing::Run({testing::ToolPath("ext4dio-read"), "--image", disk, "--partition",
                               "2", "/frag"});
  ASSERT_EQ(rd.exit_code, 0) << rd.err;
  EXPECT_EQ(rd.out, testing::ReadFile(dir_ / "src/frag"));

  r = Map({"--image", disk, "--partition", "3", "/frag"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no partition 3 (it has 1, 2)"));
  EXPECT_EQ(Map({"--image", disk, "--partition", "2", "--image-offset", "4M", "/frag"}).exit_code, 2);
  EXPECT_EQ(Map({"--partition", "2", "/frag"}).exit_code, 2);
  r = Map({"--image", image_, "--partition", "1", "/frag"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no partition table found"));
}

// A partition smaller than the filesystem in it: writes could land in the
// next partition; refused, nothing written.
TEST_P(PartitionCliTest, RefusesAFilesystemLargerThanItsPartition) {
  const std::string disk = Disk(GetParam(), 16384);  // 8 MiB for a 16 MiB filesystem
  const std::string before = testing::ReadFile(disk);
  const std::string payload = dir_ / "payload";
  testing::WriteFile(payload, std::string(4096, 'x'));
  RunResult w = testing::Run({testing::ToolPath("ext4dio-write"), "--image", disk, "--partition",
                              "2", "--input", payload, "/frag"});
  EXPECT_EQ(w.exit_code, 1);
  EXPECT_THAT(w.err, HasSubstr("larger than what partition 2 holds from there (8388608 bytes)"));
  EXPECT_EQ(testing::ReadFile(disk), before);
  // The same partition by its offset (what the partition hint offers) is
  // refused the same way: the check is not only --partition's.
  w = testing::Run({testing::ToolPath("ext4dio-write"), "--image", disk, "--image-offset",
                    "4194304", "--input", payload, "/frag"});
  EXPECT_EQ(w.exit_code, 1);
  EXPECT_THAT(w.err, HasSubstr("larger than what partition 2 holds from there (8388608 bytes)"));
  EXPECT_EQ(testing::ReadFile(disk), before);
}

// ext4dio-write --partition N writes the file inside partition N and
// nowhere else: every byte outside it (the table, partition 1, the gap, the
// GPT backup at the end) is unchanged, the bytes that changed are the
// file's block there, and debugfs reads the new data from the partition.
TEST_P(PartitionCliTest, WriteWithPartitionNWritesOnlyInsideIt) {
  const std::string disk = Disk(GetParam(), 32768);
  constexpr uint64_t kStart = 4 << 20, kEnd = kStart + (16 << 20);
  const std::string before = testing::ReadFile(disk);
  ASSERT_EQ(before.size(), 24u << 20);
  std::string data(4096, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('A' + i % 23);
  const std::string payload = dir_ / "payload";
  testing::WriteFile(payload, data);
  // The second island of /frag: file bytes 8192..12287.
  RunResult w = testing::Run({testing::ToolPath("ext4dio-write"), "--image", disk, "--partition",
                              "2", "--offset", "8192", "--input", payload, "/frag"});
  ASSERT_EQ(w.exit_code, 0) << w.err;

  const std::string after = testing::ReadFile(disk);
  ASSERT_EQ(after.size(), before.size());
  EXPECT_TRUE(after.compare(0, kStart, before, 0, kStart) == 0) << "changed before partition 2";
  EXPECT_TRUE(after.compare(kEnd, std::string::npos, before, kEnd, std::string::npos) == 0)
      << "changed after partition 2";
  // Exactly the file's block (debugfs's extent for logical block 2) changed.
  const std::string at = disk + "?offset=" + std::to_string(kStart);
  uint64_t block = 0;
  for (const Extent& e : testing::DebugfsExtents(at, "/frag")) {
    if (e.logical <= 2 && 2 < e.logical + e.length) block = e.physical + (2 - e.logical);
  }
  ASSERT_NE(block, 0u);
  const uint64_t where = kStart + block * 4096;
  EXPECT_EQ(after.substr(where, 4096), data);
  EXPECT_TRUE(after.compare(0, where, before, 0, where) == 0);
  EXPECT_TRUE(after.compare(where + 4096, std::string::npos, before, where + 4096,
                            std::string::npos) == 0)
      << "bytes other than the file's block changed";

  const std::string dumped = dir_ / "dumped";
  RunResult d = testing::Run({"debugfs", "-R", "dump /frag " + dumped, at});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  std::string expect = testing::ReadFile(dir_ / "src/frag");
  expect.replace(8192, 4096, data);
  EXPECT_TRUE(testing::ReadFile(dumped) == expect);
}

INSTANTIATE_TEST_SUITE_P(Labels, PartitionCliTest, ::testing::Values("dos", "gpt"));

TEST(ParseSizeTest, AcceptsSuffixesAndRejectsGarbage) {
  using cli::ParseSize;
  EXPECT_EQ(ParseSize("0"), 0u);
  EXPECT_EQ(ParseSize("4096"), 4096u);
  EXPECT_EQ(ParseSize("4k"), 4096u);
  EXPECT_EQ(ParseSize("4KiB"), 4096u);
  EXPECT_EQ(ParseSize("1M"), 1u << 20);
  EXPECT_EQ(ParseSize("2g"), 2ull << 30);
  EXPECT_EQ(ParseSize("3TiB"), 3ull << 40);
  EXPECT_EQ(ParseSize("16777215T"), 16777215ull << 40);
  EXPECT_EQ(ParseSize("16777216T"), std::nullopt);  // overflows 64 bits
  EXPECT_EQ(ParseSize("18446744073709551616"), std::nullopt);
  for (const char* bad : {"", "k", "-1", "1.5M", "1X", "1kk", "1 M", "0x10"})
    EXPECT_EQ(ParseSize(bad), std::nullopt) << bad;
}

}  // namespace
}  // namespace ext4dio
