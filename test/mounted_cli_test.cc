// The CLIs next to the kernel's own view on a live ext4 (loop device backed
// by tmpfs): ext4dio-map's rows, flags and "N extents found" against
// filefrag -v on files of known layout (mounted mode, and image mode on a
// copy of the image against debugfs), a block device given as TARGET, and
// --json's size after an extending write.
// Needs root and loop devices: exits 77 (skip) saying why when missing.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using ::testing::HasSubstr;
using testing::LoopMount;
using testing::Quote;
using testing::RunResult;
using testing::TempDir;
using Json = nlohmann::json;

constexpr uint64_t kBlock = 4096;

// One row of filefrag -v's table (ext4dio-map prints the same columns).
struct Row {
  uint64_t ext = 0, logical = 0, logical_end = 0, physical = 0, physical_end = 0, length = 0;
  uint64_t expected = 0;  // 0: blank
  std::string flags;
  bool operator==(const Row& o) const {
    return ext == o.ext && logical == o.logical && logical_end == o.logical_end &&
           physical == o.physical && physical_end == o.physical_end && length == o.length &&
           expected == o.expected && flags == o.flags;
  }
};
void PrintTo(const Row& r, std::ostream* os) {
  *os << r.ext << ": " << r.logical << ".." << r.logical_end << ": " << r.physical << ".."
      << r.physical_end << ": " << r.length << ": " << (r.expected ? std::to_string(r.expected) : "")
      << " [" << r.flags << "]";
}

// The rows and the "N extent(s) found" count of a filefrag -v style table.
struct Table {
  std::vector<Row> rows;
  std::vector<std::string> lines;  // the rows as printed
  int64_t found = -1;  // -1: no "found" line
};
Table ParseTable(const std::string& text) {
  static const std::regex row(
      R"(^\s*(\d+):\s*(\d+)\.\.\s*(\d+):\s*(\d+)\.\.\s*(\d+):\s*(\d+):\s*(?:(\d+):)?\s*(\S*)\s*$)");
  static const std::regex found(R"(^.*: (\d+) extents? found$)");
  Table t;
  std::istringstream in(text);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, row)) {
      Row r;
      r.ext = std::stoull(m[1]);
      r.logical = std::stoull(m[2]);
      r.logical_end = std::stoull(m[3]);
      r.physical = std::stoull(m[4]);
      r.physical_end = std::stoull(m[5]);
      r.length = std::stoull(m[6]);
      r.expected = m[7].matched ? std::stoull(m[7]) : 0;
      r.flags = m[8];
      t.rows.push_back(r);
      t.lines.push_back(line);
    } else if (std::regex_match(line, m, found)) {
      t.found = std::stoll(m[1]);
    }
  }
  return t;
}

size_t RowsFlagged(const Table& t, const std::string& flag) {
  size_t n = 0;
  for (const Row& r : t.rows) {
    if (("," + r.flags + ",").find("," + flag + ",") != std::string::npos) ++n;
  }
  return n;
}

RunResult Tool(const std::string& tool, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {testing::ToolPath(tool)};
  argv.insert(argv.end(), args.begin(), args.end());
  return testing::Run(argv);
}

// Writes `n` blocks of `byte` at block `block` of the open file.
void WriteBlocks(int fd, uint64_t block, uint64_t n, char byte) {
  const std::string data(n * kBlock, byte);
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), static_cast<off_t>(block * kBlock)),
            static_cast<ssize_t>(data.size()));
}

class MountedCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // No journal: after syncfs the image file holds every change in place,
    // so a copy of it is a consistent image for image mode and debugfs.
    mount_ = new LoopMount({"-b", "4096", "-O", "^has_journal"}, "64M");
    if (!mount_->ok()) return;
    // Writes into an unwritten extent split it instead of zeroing small
    // neighbours out (32 KiB by default), so alternating written and
    // unwritten blocks stay separate leaf extents. This filesystem only.
    const std::string dev = mount_->device().substr(mount_->device().rfind('/') + 1);
    zeroout_set_ = testing::Sh("echo 0 > /sys/fs/ext4/" + dev + "/extent_max_zeroout_kb")
                       .exit_code == 0;
  }
  static void TearDownTestSuite() {
    delete mount_;
    mount_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(mount_->ok()) << mount_->error();
    ASSERT_TRUE(zeroout_set_) << "cannot set extent_max_zeroout_kb for " << mount_->device();
  }

  static std::string Filefrag(const std::string& path) {
    RunResult r = testing::Run({"filefrag", "-v", path});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }

  // ext4dio-map's table for `path` agrees with filefrag -v's row for row
  // (offsets, lengths, "expected", flags) and in its count. Returns
  // filefrag's table.
  static Table ExpectMapMatchesFilefrag(const std::string& path) {
    const Table want = ParseTable(Filefrag(path));
    EXPECT_FALSE(want.rows.empty()) << path;
    EXPECT_GE(want.found, 0) << path;
    RunResult r = Tool("ext4dio-map", {path});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(r.err.empty()) << r.err;
    const Table got = ParseTable(r.out);
    EXPECT_EQ(got.rows, want.rows) << "ext4dio-map:\n" << r.out << "filefrag -v:\n"
                                   << Filefrag(path);
    EXPECT_EQ(got.found, want.found) << r.out;
    // Character for character (filefrag's column widths for filesystems of
    // up to 10^10 blocks and files of up to 10^8).
    EXPECT_EQ(got.lines, want.lines);
    EXPECT_THAT(r.out, HasSubstr(path + ": " + std::to_string(want.found) +
                                 (want.found == 1 ? " extent found\n" : " extents found\n")));
    return want;
  }

  static LoopMount* mount_;
  static bool zeroout_set_;
};
LoopMount* MountedCliTest::mount_ = nullptr;
bool MountedCliTest::zeroout_set_ = false;

// 13 blocks fallocated in one run, block 6 collapsed away (the rest shifts
// down a block: a physical gap of one block with no logical gap), then
// every odd block written: 12 one-block leaf extents, alternately unwritten
// and written, in two physically contiguous runs of 6.
void MakeTwelveLeavesInTwoFragments(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path;
  testing::Defer close_fd([fd] { close(fd); });
  ASSERT_EQ(fallocate(fd, 0, 0, 13 * kBlock), 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 6 * kBlock, kBlock), 0);
  for (uint64_t b = 1; b < 12; b += 2) WriteBlocks(fd, b, 1, static_cast<char>('a' + b));
  ASSERT_EQ(fsync(fd), 0);
}

// 2N blocks fallocated in one run, then every other block collapsed away
// and the size cut to N blocks: logical block i sits at physical p+2i, so
// no two blocks are contiguous; then every block written. N one-block
// written extents, N fragments.
void MakeFragmented(const std::string& path, uint64_t n) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  testing::Defer close_fd([fd] { close(fd); });
  ASSERT_EQ(fallocate(fd, 0, 0, static_cast<off_t>(2 * n * kBlock)), 0);
  for (uint64_t i = 1; i < n; ++i) {
    ASSERT_EQ(fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, static_cast<off_t>(i * kBlock), kBlock), 0);
  }
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(n * kBlock)), 0);
  for (uint64_t i = 0; i < n; ++i) WriteBlocks(fd, i, 1, static_cast<char>('A' + i));
  ASSERT_EQ(fsync(fd), 0);
}

// One block in three written, then the size set past the last block: no
// extent reaches i_size, so none is "eof".
void MakeSparse(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  testing::Defer close_fd([fd] { close(fd); });
  for (uint64_t b = 0; b < 30; b += 3) WriteBlocks(fd, b, 1, 's');
  ASSERT_EQ(ftruncate(fd, 40 * kBlock), 0);
  ASSERT_EQ(fsync(fd), 0);
}

// 1 MiB fallocated (i_size 1 MiB) with 8 KiB written inside it, and two
// separate unwritten ranges past i_size (FALLOC_FL_KEEP_SIZE).
void MakeFallocated(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  testing::Defer close_fd([fd] { close(fd); });
  ASSERT_EQ(fallocate(fd, 0, 0, 1 << 20), 0);
  WriteBlocks(fd, 16, 2, 'w');
  ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 256 << 10), 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE, (1 << 20) + (512 << 10), 256 << 10), 0);
  ASSERT_EQ(fsync(fd), 0);
}

// filefrag counts fragments, not leaf extents: 12 leaf extents in two
// contiguous runs are "2 extents found" (before, ext4dio-map said 12).
TEST_F(MountedCliTest, TwelveContiguousLeafExtentsAreTwoFragmentsAsFilefragSays) {
  const std::string path = *mount_ / "twelve";
  MakeTwelveLeavesInTwoFragments(path);
  // The layout is the one wanted: filefrag sees 12 rows, 2 fragments, the
  // second starting where the collapsed block left a gap.
  const Table t = ExpectMapMatchesFilefrag(path);
  ASSERT_EQ(t.rows.size(), 12u);
  EXPECT_EQ(t.found, 2);
  EXPECT_NE(t.rows[6].expected, 0u);
  EXPECT_EQ(t.rows[6].physical, t.rows[6].expected + 1);
  EXPECT_EQ(RowsFlagged(t, "unwritten"), 6u);

  RunResult r = Tool("ext4dio-map", {"--json", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);  // not const: a missing key is null, not an abort
  EXPECT_EQ(j["fragments"], 2);
  EXPECT_EQ(j["leaf_extents"], 12);
  ASSERT_EQ(j["extents"].size(), 12u);
  for (size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(j["extents"][i]["unwritten"], i % 2 == 0) << i;
    EXPECT_EQ(j["extents"][i]["last"], i == 11) << i;
    EXPECT_EQ(j["extents"][i]["eof"], i == 11) << i;
  }
}

// Rows, "expected" column and flags (last, unwritten, eof) as filefrag -v
// prints them, on sparse, fallocated and fragmented files.
TEST_F(MountedCliTest, RowsAndFlagsMatchFilefragOnAssortedFiles) {
  MakeSparse(*mount_ / "sparse");
  MakeFallocated(*mount_ / "falloc");
  MakeFragmented(*mount_ / "frag", 12);

  Table t = ExpectMapMatchesFilefrag(*mount_ / "sparse");
  EXPECT_EQ(t.rows.size(), 10u);
  EXPECT_EQ(RowsFlagged(t, "eof"), 0u) << "the size is past the last extent";
  EXPECT_EQ(RowsFlagged(t, "last"), 1u);

  t = ExpectMapMatchesFilefrag(*mount_ / "falloc");
  EXPECT_GE(RowsFlagged(t, "unwritten"), 3u);
  EXPECT_GE(RowsFlagged(t, "eof"), 2u) << "every extent reaching i_size is eof";
  EXPECT_EQ(RowsFlagged(t, "last"), 1u);

  t = ExpectMapMatchesFilefrag(*mount_ / "frag");
  EXPECT_EQ(t.rows.size(), 12u);
  EXPECT_EQ(t.found, 12) << "no two blocks are contiguous";
  EXPECT_EQ(RowsFlagged(t, "unwritten"), 0u);
}

// Image mode, on a copy of the image taken after syncfs: "N extents found"
// is filefrag's count on the mount, the JSON's leaf_extents is debugfs's
// count of leaf extents, and the rows are filefrag's.
TEST_F(MountedCliTest, ImageModeAgreesWithDebugfsAndFilefrag) {
  MakeTwelveLeavesInTwoFragments(*mount_ / "img-twelve");
  MakeSparse(*mount_ / "img-sparse");
  MakeFallocated(*mount_ / "img-falloc");
  MakeFragmented(*mount_ / "img-frag", 12);
  const std::vector<std::string> names = {"img-twelve", "img-sparse", "img-falloc",
                                          "img-frag"};
  std::map<std::string, Table> filefrag;
  for (const std::string& n : names) filefrag[n] = ParseTable(Filefrag(*mount_ / n));
  ASSERT_EQ(testing::Run({"sync", "-f", mount_->mount_point()}).exit_code, 0);
  TempDir tmp;
  const std::string copy = tmp / "copy.img";
  ASSERT_EQ(testing::Run({"cp", mount_->image(), copy}).exit_code, 0);

  for (const std::string& n : names) {
    const Table& want = filefrag[n];
    RunResult r = Tool("ext4dio-map", {"--image", copy, "/" + n});
    ASSERT_EQ(r.exit_code, 0) << n << ": " << r.err;
    const Table got = ParseTable(r.out);
    EXPECT_EQ(got.rows, want.rows) << n << ":\n" << r.out;
    EXPECT_EQ(got.found, want.found) << n << ":\n" << r.out;

    r = Tool("ext4dio-map", {"--image", copy, "--json", "/" + n});
    ASSERT_EQ(r.exit_code, 0) << n << ": " << r.err;
    Json j = Json::parse(r.out);  // not const: a missing key is null, not an abort
    EXPECT_EQ(j["leaf_extents"], testing::DebugfsExtents(copy, "/" + n).size()) << n;
    EXPECT_EQ(j["leaf_extents"], want.rows.size()) << n;
    EXPECT_EQ(j["fragments"], want.found) << n;
  }
  EXPECT_EQ(filefrag["img-twelve"].found, 2);
  EXPECT_EQ(filefrag["img-twelve"].rows.size(), 12u);
}

std::string Md5(const std::string& path) {
  RunResult r = testing::Run({"md5sum", path});
  return r.out.substr(0, r.out.find(' '));
}

// A block device as TARGET (no --image) is a usage error that says how to
// name it (exit 2), for all three tools; the device is untouched. The
// advice works: with --image it maps.
TEST_F(MountedCliTest, BlockDeviceAsTargetGetsTheImageHint) {
  TempDir tmp;
  ASSERT_EQ(testing::Sh("mkdir " + Quote(tmp / "src") + " && printf hello > " +
                        Quote(tmp / "src/f"))
                .exit_code,
            0);
  const std::string image = tmp / "disk.img";
  testing::MakeFs("ext4", {"-b", "4096"}, tmp / "src", image, "8M");
  const std::string payload = tmp / "payload";
  testing::WriteFile(payload, std::string(kBlock, 'x'));
  testing::LoopDevice loop(image);
  ASSERT_FALSE(loop.device().empty()) << loop.error();
  const std::string before = Md5(image);
  const std::string dev = loop.device();

  for (const std::vector<std::string>& argv :
       std::vector<std::vector<std::string>>{{"ext4dio-map", dev},
                                             {"ext4dio-read", "--output", tmp / "out", dev},
                                             {"ext4dio-write", "--input", payload, dev}}) {
    RunResult r = Tool(argv[0], {argv.begin() + 1, argv.end()});
    EXPECT_EQ(r.exit_code, 2) << argv[0] << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(argv[0] + ": " + dev +
                                 " is a block device: give it with --image and name a file "
                                 "inside it as TARGET"));
    EXPECT_THAT(r.err, HasSubstr("Try '" + argv[0] + " --help' for more information."));
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  EXPECT_EQ(Md5(image), before) << "nothing written to the device";
  EXPECT_NE(access((tmp / "out").c_str(), F_OK), 0) << "no output file made";
  RunResult r = Tool("ext4dio-map", {"--image", dev, "/f"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("/f: 1 extent found"));
}

// --json's size is the file's size after the run: an extending write in
// mounted mode (past EOF: the kernel path) reports what stat says after it,
// not the size at open.
TEST_F(MountedCliTest, JsonSizeIsTheSizeAfterAnExtendingWrite) {
  const std::string path = *mount_ / "grow";
  testing::WriteFile(path, std::string(1 << 20, 'o'));
  TempDir tmp;
  const std::string payload = tmp / "payload";
  testing::WriteFile(payload, std::string((256 << 10) + 100, 'n'));
  RunResult r = Tool("ext4dio-write", {"--json", "--offset", "1M", "--input", payload, path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);  // not const: a missing key is null, not an abort
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, (1 << 20) + (256 << 10) + 100);
  EXPECT_EQ(j["size"], st.st_size) << r.out;
  EXPECT_EQ(j["kernel_path_bytes"], (256 << 10) + 100) << r.out;
  // An overwrite inside the file leaves the size alone.
  r = Tool("ext4dio-write", {"--json", "--input", payload, path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["size"], st.st_size) << r.out;
  EXPECT_EQ(testing::ReadFile(path),
            std::string((256 << 10) + 100, 'n') + std::string((1 << 20) - (256 << 10) - 100, 'o') +
                std::string((256 << 10) + 100, 'n'));
}

}  // namespace
}  // namespace ext4dio
