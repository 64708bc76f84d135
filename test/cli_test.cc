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
  EXPECT_THAT(r.out, HasSubstr("/frag: 20 extents found"));
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
