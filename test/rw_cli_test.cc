// ext4dio-write and ext4dio-read as a user meets them, on images made with
// mkfs.ext4 -d (no root): data checked against debugfs's own "dump", the
// image checked with e2fsck after every test, refusals checked to leave the
// image byte-identical, and the CLI contract (exit codes, one-line errors,
// --json, --dry-run, progress) checked as documented.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "child_process.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Quote;
using testing::RunResult;
using testing::TempDir;
using Json = nlohmann::json;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() | 1);  // never zero: holes stand out
  return s;
}

std::string Splice(std::string base, uint64_t offset, const std::string& data) {
  base.replace(offset, data.size(), data);
  return base;
}

// "a b c" with every word shell-quoted.
std::string Cmd(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) s += (s.empty() ? "" : " ") + Quote(a);
  return s;
}

size_t Lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

// The device byte offset of file byte `off`, from debugfs's extents.
std::optional<uint64_t> DeviceOffsetOf(const std::vector<Extent>& extents, uint64_t bs,
                                       uint64_t off) {
  const uint64_t block = off / bs;
  for (const Extent& e : extents) {
    if (block >= e.logical && block < e.logical + e.length && !e.unwritten)
      return (e.physical + (block - e.logical)) * bs + off % bs;
  }
  return std::nullopt;
}

class RwCliTest : public ::testing::TestWithParam<int> {
 protected:
  static constexpr uint64_t kFSize = 300000 + 123;  // not a block multiple
  static constexpr uint64_t kIsland = 8192, kStride = 16384, kIslands = 8;

  void SetUp() override {
    bs_ = static_cast<uint64_t>(GetParam());
    ASSERT_EQ(testing::Sh("mkdir -p " + Quote(dir_ / "src")).exit_code, 0);
    f_ = RandomBytes(kFSize, 11);
    testing::WriteFile(dir_ / "src/f", f_);
    testing::WriteIslands(dir_ / "src/sparse", kIslands, kIsland, kStride, 5);
    sparse_ = testing::ReadFile(dir_ / "src/sparse");
    ASSERT_EQ(sparse_.size(), (kIslands - 1) * kStride + kIsland);
    image_ = dir_ / "fs.img";
    testing::MakeFs("ext4", {"-b", std::to_string(bs_)}, dir_ / "src", image_, "16M");
  }

  void TearDown() override {
    // Whatever a test did, the filesystem must still be clean.
    RunResult r = testing::Run({"e2fsck", "-fn", image_});
    EXPECT_EQ(r.exit_code, 0) << "e2fsck -fn " << image_ << ":\n" << r.out << r.err;
  }

  RunResult Tool(const std::string& tool, const std::vector<std::string>& args,
                 const std::string& input = "") {
    std::vector<std::string> argv = {testing::ToolPath(tool)};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::Run(argv, input);
  }
  RunResult Write(const std::vector<std::string>& args, const std::string& input = "") {
    return Tool("ext4dio-write", args, input);
  }
  RunResult Read(const std::vector<std::string>& args) { return Tool("ext4dio-read", args); }
  // `data` | ext4dio-write ARGS: standard input is a pipe (unknown length).
  RunResult PipeWrite(const std::string& data, const std::vector<std::string>& args) {
    const std::string in = dir_ / "pipe-input";
    testing::WriteFile(in, data);
    std::vector<std::string> argv = {testing::ToolPath("ext4dio-write")};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::Sh("cat " + Quote(in) + " | " + Cmd(argv));
  }
  std::string Payload(const std::string& data, const std::string& name = "payload") {
    const std::string p = dir_ / name;
    testing::WriteFile(p, data);
    return p;
  }
  // The oracle: debugfs's dump of a file in the image.
  std::string Dump(const std::string& path) {
    const std::string out = dir_ / "dump.out";
    RunResult r = testing::Run({"debugfs", "-R", "dump " + path + " " + out, image_});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::string data = testing::ReadFile(out);
    std::remove(out.c_str());
    return data;
  }
  std::string Image() { return testing::ReadFile(image_); }

  TempDir dir_;
  uint64_t bs_ = 0;
  std::string image_, f_, sparse_;
};

INSTANTIATE_TEST_SUITE_P(BlockSizes, RwCliTest, ::testing::Values(1024, 4096),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return std::to_string(p.param / 1024) + "KiB";
                         });

TEST_P(RwCliTest, WritesAFileAtAssortedOffsets) {
  std::string expected = f_;
  const std::vector<std::pair<uint64_t, uint64_t>> cases = {
      {0, 4096},           {4096, 65536}, {1000, 5000}, {123457, 70001},
      {kFSize - 777, 777}, {bs_ - 1, 2},  {200000, 1},  {0, kFSize}};
  uint32_t seed = 100;
  for (const auto& [offset, length] : cases) {
    SCOPED_TRACE("offset " + std::to_string(offset) + " length " + std::to_string(length));
    const std::string data = RandomBytes(length, seed++);
    RunResult r = Write(
        {"--image", image_, "--input", Payload(data), "--offset", std::to_string(offset), "/f"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(r.out, "");
    expected = Splice(expected, offset, data);
    ASSERT_EQ(Dump("/f"), expected);
    RunResult back = Read({"--image", image_, "/f"});
    ASSERT_EQ(back.exit_code, 0) << back.err;
    ASSERT_EQ(back.out, expected);
  }
}

TEST_P(RwCliTest, WritesStandardInputFromAFileAndFromAPipe) {
  std::string expected = f_;
  // Standard input redirected from a regular file: a known length.
  const std::string a = RandomBytes(10000, 1);
  RunResult r = Write({"--image", image_, "--offset", "777", "/f"}, a);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expected = Splice(expected, 777, a);
  EXPECT_EQ(Dump("/f"), expected);
  // "--input -" is standard input too.
  const std::string b = RandomBytes(3000, 2);
  r = Write({"--image", image_, "--input", "-", "--offset", "4096", "/f"}, b);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expected = Splice(expected, 4096, b);
  EXPECT_EQ(Dump("/f"), expected);
  // A pipe: unknown length, written in order to its end.
  for (const auto& [offset, len] : std::vector<std::pair<uint64_t, uint64_t>>{
           {50001, kFSize - 50001}, {0, 5}, {8192, 131072}}) {
    const std::string c = RandomBytes(len, static_cast<uint32_t>(offset + 3));
    r = PipeWrite(
        c, {"--image", image_, "--offset", std::to_string(offset), "--io-size", "16K", "/f"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "");
    expected = Splice(expected, offset, c);
    ASSERT_EQ(Dump("/f"), expected) << "offset " << offset;
  }
  RunResult back = Read({"--image", image_, "/f"});
  EXPECT_EQ(back.out, expected);
}

TEST_P(RwCliTest, LengthShorterThanTheInputWritesExactlyLength) {
  const std::string data = RandomBytes(10000, 3);
  RunResult r = Write({"--image", image_, "--input", Payload(data), "--offset", "100", "--length",
                       "3000", "--json", "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["bytes"], 3000);
  std::string expected = Splice(f_, 100, data.substr(0, 3000));
  EXPECT_EQ(Dump("/f"), expected);

  const std::string more = RandomBytes(70000, 4);
  r = PipeWrite(more, {"--image", image_, "--offset", "20000", "--length", "1K", "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expected = Splice(expected, 20000, more.substr(0, 1024));
  EXPECT_EQ(Dump("/f"), expected);
}

TEST_P(RwCliTest, LengthLongerThanTheInputFailsWithTheCountWritten) {
  // A regular file is known to be short before anything is written.
  const std::string before = Image();
  const std::string data = RandomBytes(5000, 5);
  RunResult r = Write({"--image", image_, "--input", Payload(data), "--length", "8000", "/f"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("ext4dio-write: /f: "));
  EXPECT_THAT(r.err, HasSubstr("has 5000 bytes, --length asks for 8000; 0 bytes written"));
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  EXPECT_TRUE(Image() == before) << "a refused write changed the image";

  // A pipe is found short only at its end: what came is written, and said.
  r = PipeWrite(data, {"--image", image_, "--offset", "10", "--length", "8000", "/f"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("ended after 5000 of 8000 bytes"));
  EXPECT_THAT(r.err, HasSubstr("5000 bytes written"));
  EXPECT_THAT(r.err, HasSubstr("/f"));
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  EXPECT_EQ(Dump("/f"), Splice(f_, 10, data));
}

TEST_P(RwCliTest, StreamIntoAHoleStopsThereAndWritesExactlyThePrefix) {
  const std::vector<Extent> extents = testing::DebugfsExtents(image_, "/sparse");
  const std::string before = Image();
  const uint64_t offset = 3000;
  const std::string data = RandomBytes(20000, 6);
  RunResult r = PipeWrite(
      data, {"--image", image_, "--offset", std::to_string(offset), "--io-size", "4K", "/sparse"});
  EXPECT_EQ(r.exit_code, 1);
  const uint64_t prefix = kIsland - offset;  // up to the first hole
  EXPECT_THAT(r.err, HasSubstr("stopped at file offset " + std::to_string(kIsland)));
  EXPECT_THAT(r.err, HasSubstr("a hole"));
  EXPECT_THAT(r.err, HasSubstr(std::to_string(prefix) + " bytes written"));
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  EXPECT_EQ(Dump("/sparse"), Splice(sparse_, offset, data.substr(0, prefix)));
  // Nothing else in the image changed: every differing byte is a byte of
  // the written prefix at its device offset.
  const std::string after = Image();
  ASSERT_EQ(after.size(), before.size());
  std::vector<bool> allowed(after.size(), false);
  for (uint64_t f = offset; f < kIsland; ++f) {
    auto d = DeviceOffsetOf(extents, bs_, f);
    ASSERT_TRUE(d.has_value()) << f;
    allowed[*d] = true;
  }
  size_t changed = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    if (after[i] != before[i]) {
      ++changed;
      ASSERT_TRUE(allowed[i]) << "image byte " << i << " changed outside the written prefix";
    }
  }
  EXPECT_GT(changed, prefix / 2);
}

TEST_P(RwCliTest, KnownLengthWriteIntoAHoleIsRefusedAndChangesNothing) {
  const std::string before = Image();
  const std::string data = RandomBytes(20000, 7);
  // From a file, from standard input redirected from a file, and a pipe
  // with --length: all planned in full first.
  std::vector<RunResult> results = {
      Write({"--image", image_, "--input", Payload(data), "--offset", "3000", "/sparse"}),
      Write({"--image", image_, "--offset", "3000", "/sparse"}, data),
      PipeWrite(data, {"--image", image_, "--offset", "3000", "--length", "20000", "/sparse"}),
  };
  for (const RunResult& r : results) {
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr("ext4dio-write: /sparse: cannot write bytes 8192..16383: "
                                 "needs allocation: a hole"));
    EXPECT_THAT(r.err, HasSubstr("nothing written"));
    EXPECT_EQ(Lines(r.err), 1u) << r.err;
    EXPECT_EQ(r.out, "");
  }
  EXPECT_TRUE(Image() == before) << "a refused write changed the image";
}

TEST_P(RwCliTest, WritesPastEndOfFileAreRefused) {
  const std::string before = Image();
  const std::string data = RandomBytes(20, 8);
  RunResult r = Write(
      {"--image", image_, "--input", Payload(data), "--offset", std::to_string(kFSize - 10), "/f"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot write bytes " + std::to_string(kFSize) + ".." +
                               std::to_string(kFSize + 9)));
  EXPECT_THAT(r.err, HasSubstr("past end of file"));
  r = Write({"--image", image_, "--input", Payload(data), "--offset", "1G", "/f"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("past end of file"));
  // A stream running past EOF writes up to EOF, then stops.
  r = PipeWrite(data, {"--image", image_, "--offset", std::to_string(kFSize - 10), "/f"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("stopped at file offset " + std::to_string(kFSize)));
  EXPECT_THAT(r.err, HasSubstr("10 bytes written"));
  EXPECT_EQ(Dump("/f"), Splice(f_, kFSize - 10, data.substr(0, 10)));
  // Writing exactly up to EOF is fine.
  r = Write({"--image", image_, "--input", Payload(data.substr(0, 10)), "--offset",
             std::to_string(kFSize - 10), "/f"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

struct PlanLine {
  uint64_t offset, length;
  std::string kind, device;
};

std::vector<PlanLine> ParsePlan(const std::string& text) {
  std::vector<PlanLine> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    PlanLine p;
    l >> p.offset >> p.length >> p.kind >> p.device;
    EXPECT_FALSE(l.fail()) << "bad plan line: " << line;
    std::string extra;
    EXPECT_FALSE(l >> extra) << "extra words in: " << line;
    out.push_back(p);
  }
  return out;
}

TEST_P(RwCliTest, DryRunPrintsThePlanAndWritesNothing) {
  const std::vector<Extent> extents = testing::DebugfsExtents(image_, "/sparse");
  const std::string before = Image();
  // 4095 .. 20480: an unaligned byte, the rest of island 0, the hole, the
  // start of island 1, one unaligned byte.
  const uint64_t offset = 4095, length = 20481 - 4095;
  RunResult r = Write({"--image", image_, "--dry-run", "--offset", std::to_string(offset),
                       "--length", std::to_string(length), "/sparse"});
  EXPECT_EQ(r.exit_code, 1) << "a plan with a refused piece fails";
  EXPECT_THAT(r.err, HasSubstr("cannot write bytes 8192..16383"));
  const std::vector<PlanLine> plan = ParsePlan(r.out);
  ASSERT_FALSE(plan.empty());
  // Invariants for any block size and device alignment: the pieces tile
  // the range in order, the hole is refused exactly, every other piece
  // starts at the device offset debugfs gives for its file offset.
  uint64_t pos = offset;
  for (const PlanLine& p : plan) {
    EXPECT_EQ(p.offset, pos);
    pos += p.length;
    if (p.offset >= kIsland && p.offset < kStride) {
      EXPECT_EQ(p.kind, "refused");
      EXPECT_EQ(p.device, "-");
    } else {
      EXPECT_THAT(p.kind, ::testing::AnyOf("fast", "rmw", "buffered")) << p.offset;
      EXPECT_EQ(p.device, std::to_string(*DeviceOffsetOf(extents, bs_, p.offset)));
    }
  }
  EXPECT_EQ(pos, offset + length);
  EXPECT_NE(plan.front().kind, "fast") << "file offset 4095 cannot be a direct write";
  const auto refused =
      std::find_if(plan.begin(), plan.end(), [](const PlanLine& p) { return p.kind == "refused"; });
  ASSERT_NE(refused, plan.end());
  EXPECT_EQ(refused->offset, kIsland);
  EXPECT_EQ(refused->length, kStride - kIsland);
  if (bs_ == 4096) {
    // 4 KiB blocks: every block is a whole alignment unit of the file.
    ASSERT_EQ(plan.size(), 5u) << r.out;
    EXPECT_EQ(plan[0].offset, 4095u);
    EXPECT_EQ(plan[0].kind, "rmw");
    EXPECT_EQ(plan[1].offset, 4096u);
    EXPECT_EQ(plan[1].kind, "fast");
    EXPECT_EQ(plan[2].kind, "refused");
    EXPECT_EQ(plan[3].offset, 16384u);
    EXPECT_EQ(plan[3].length, 4096u);
    EXPECT_EQ(plan[3].kind, "fast");
    EXPECT_EQ(plan[4].offset, 20480u);
    EXPECT_EQ(plan[4].length, 1u);
    EXPECT_EQ(plan[4].kind, "rmw");
  }

  // The same plan as JSON.
  RunResult j = Write({"--image", image_, "--dry-run", "--json", "--offset", std::to_string(offset),
                       "--length", std::to_string(length), "/sparse"});
  EXPECT_EQ(j.exit_code, 1);
  const Json doc = Json::parse(j.out);
  ASSERT_TRUE(doc["plan"].is_array());
  ASSERT_EQ(doc["plan"].size(), plan.size());
  for (size_t i = 0; i < plan.size(); ++i) {
    const Json& p = doc["plan"][i];
    EXPECT_EQ(p["file_offset"], plan[i].offset);
    EXPECT_EQ(p["length"], plan[i].length);
    EXPECT_EQ(p["kind"], plan[i].kind);
    if (plan[i].kind == "refused") {
      EXPECT_TRUE(p["device_offset"].is_null());
    } else {
      EXPECT_EQ(p["device_offset"].dump(), plan[i].device);
    }
  }
  EXPECT_TRUE(doc["error"].is_string());
  EXPECT_EQ(doc["bytes"], 0);

  // A plan that fits exits 0; the input is a file, so no --length needed.
  RunResult ok = Write(
      {"--image", image_, "--dry-run", "--input", Payload(RandomBytes(kIsland, 9)), "/sparse"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  for (const PlanLine& p : ParsePlan(ok.out)) EXPECT_NE(p.kind, "refused");
  EXPECT_TRUE(Image() == before) << "--dry-run changed the image";
  // Unknown length: a usage error.
  RunResult pipe = PipeWrite("abc", {"--image", image_, "--dry-run", "/sparse"});
  EXPECT_EQ(pipe.exit_code, 2);
}

TEST_P(RwCliTest, JsonHasTheDocumentedFieldsAndTypes) {
  const std::string data = RandomBytes(100000, 10);
  RunResult r =
      Write({"--image", image_, "--input", Payload(data), "--offset", "1000", "--json", "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(Lines(r.out), 1u) << "one JSON object, one line";
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j["bytes"], 100000);
  EXPECT_TRUE(j["bytes"].is_number_unsigned());
  EXPECT_TRUE(j["fast_path_bytes"].is_number_unsigned());
  EXPECT_EQ(j["fast_path_bytes"], 100000);
  EXPECT_EQ(j["kernel_path_bytes"], 0);
  EXPECT_TRUE(j["rmw_bytes"].is_number_unsigned());
  EXPECT_TRUE(j["buffered_bytes"].is_number_unsigned());
  EXPECT_GT(j["rmw_bytes"].get<uint64_t>() + j["buffered_bytes"].get<uint64_t>(), 0u)
      << "offset 1000 is unaligned";
  EXPECT_TRUE(j["seconds"].is_number());
  EXPECT_GE(j["seconds"].get<double>(), 0.0);
  EXPECT_TRUE(j["mib_per_s"].is_number());
  EXPECT_EQ(j["fast_path"], true);
  EXPECT_TRUE(j["warning"].is_null());
  EXPECT_THAT(j["backend"].get<std::string>(), ::testing::AnyOf("io_uring", "psync"));
  EXPECT_EQ(j["file"], "/f");
  EXPECT_EQ(j["offset"], 1000);
  EXPECT_FALSE(j.contains("error"));

  // Failures print the object too, with "error", and still exit 1.
  RunResult bad =
      Write({"--image", image_, "--input", Payload(data), "--offset", "3000", "--json", "/sparse"});
  EXPECT_EQ(bad.exit_code, 1);
  const Json e = Json::parse(bad.out);
  EXPECT_TRUE(e["error"].is_string());
  EXPECT_THAT(e["error"].get<std::string>(), HasSubstr("a hole"));
  EXPECT_EQ(e["bytes"], 0);
  RunResult missing =
      Write({"--image", dir_ / "missing.img", "--input", Payload(data), "--json", "/f"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(Json::parse(missing.out)["error"].is_string());

  // ext4dio-read: JSON on stderr when the data goes to stdout...
  RunResult rd =
      Read({"--image", image_, "--json", "--offset", "1000", "--length", "100000", "/f"});
  ASSERT_EQ(rd.exit_code, 0) << rd.err;
  EXPECT_EQ(rd.out, data);
  const Json rj = Json::parse(rd.err);
  EXPECT_EQ(rj["bytes"], 100000);
  EXPECT_EQ(rj["fast_path"], true);
  EXPECT_TRUE(rj["seconds"].is_number());
  EXPECT_TRUE(rj["mib_per_s"].is_number());
  EXPECT_TRUE(rj["warning"].is_null());
  EXPECT_EQ(rj["kernel_path_bytes"], 0);
  // ...and on stdout with --output FILE.
  const std::string out = dir_ / "read.out";
  rd = Read({"--image", image_, "--json", "--output", out, "--offset", "1000", "--length", "100000",
             "/f"});
  ASSERT_EQ(rd.exit_code, 0) << rd.err;
  EXPECT_EQ(rd.err, "");
  EXPECT_EQ(Json::parse(rd.out)["bytes"], 100000);
  EXPECT_EQ(testing::ReadFile(out), data);
}

TEST_P(RwCliTest, VerifyAndSync) {
  const std::string data = RandomBytes(200000, 12);
  RunResult r = Write({"--image", image_, "--input", Payload(data), "--offset", "333", "--verify",
                       "--sync", "--json", "--io-size", "64K", "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["verified"], true);
  EXPECT_EQ(j["sync"], true);
  std::string expected = Splice(f_, 333, data);
  EXPECT_EQ(Dump("/f"), expected);
  // A pipe is verified from per-chunk checksums.
  const std::string more = RandomBytes(50000, 13);
  r = PipeWrite(more, {"--image", image_, "--offset", "4096", "--verify", "--dsync", "--sync",
                       "--json", "--io-size", "8K", "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = Json::parse(r.out);
  EXPECT_EQ(j["verified"], true);
  EXPECT_EQ(j["bytes"], 50000);
  expected = Splice(expected, 4096, more);
  EXPECT_EQ(Dump("/f"), expected);
  // --no-fallback is accepted (image mode never falls back).
  r = Write({"--image", image_, "--input", Payload(more), "--no-fallback", "/f"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_P(RwCliTest, ReadsHolesAsZerosAndIsShortAtEndOfFile) {
  RunResult r = Read({"--image", image_, "/sparse"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, sparse_);
  EXPECT_EQ(r.out, Dump("/sparse"));
  // A range inside a hole.
  r = Read(
      {"--image", image_, "--offset", std::to_string(kIsland + 10), "--length", "100", "/sparse"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, std::string(100, '\0'));
  // Past EOF: short.
  r = Read({"--image", image_, "--offset", std::to_string(kFSize - 100), "--length", "1000",
            "--json", "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, f_.substr(kFSize - 100));
  EXPECT_EQ(Json::parse(r.err)["bytes"], 100);
  r = Read({"--image", image_, "--offset", std::to_string(kFSize + 5), "--json", "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(Json::parse(r.err)["bytes"], 0);
  // By inode, and "--output -".
  const uint64_t ino = testing::DebugfsInode(image_, "/f");
  r = Read({"--image", image_, "--inode", std::to_string(ino), "--output", "-"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, f_);
}

TEST_P(RwCliTest, InodeAndImageOffset) {
  const uint64_t ino = testing::DebugfsInode(image_, "/f");
  const std::string data = RandomBytes(4096, 14);
  RunResult r = Write({"--image", image_, "--inode", std::to_string(ino), "--input", Payload(data),
                       "--offset", "8192"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Dump("/f"), Splice(f_, 8192, data));

  // The filesystem at 1 MiB inside a bigger "disk".
  const std::string disk = dir_ / "disk.img";
  ASSERT_EQ(testing::Sh("dd if=/dev/zero of=" + Quote(disk) + " bs=1M count=1 status=none && cat " +
                        Quote(image_) + " >> " + Quote(disk))
                .exit_code,
            0);
  const std::string data2 = RandomBytes(5000, 15);
  r = Write({"--image", disk, "--image-offset", "1M", "--input", Payload(data2), "--offset", "100",
             "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string out = dir_ / "disk.dump";
  ASSERT_EQ(testing::Run({"debugfs", "-R", "dump /f " + out, disk + "?offset=1048576"}).exit_code,
            0);
  EXPECT_EQ(testing::ReadFile(out), Splice(Splice(f_, 8192, data), 100, data2));
  r = Read(
      {"--image", disk, "--image-offset", "1024K", "--offset", "100", "--length", "5000", "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, data2);
  EXPECT_EQ(testing::Run({"e2fsck", "-fn", disk + "?offset=1048576"}).exit_code, 0);
}

TEST_P(RwCliTest, UsageErrorsExitTwo) {
  const std::string p = Payload("hello");
  for (const std::string tool : {"ext4dio-write", "ext4dio-read"}) {
    SCOPED_TRACE(tool);
    const std::vector<std::vector<std::string>> bad = {
        {},
        {"--bogus", "/f"},
        {"--image", image_},
        {"--image", image_, "--inode", "12", "/f"},
        {"--inode", "12"},
        {"--image-offset", "1M", "/f"},
        {"--image", image_, "--offset", "12Q", "/f"},
        {"--image", image_, "--length", "1.5M", "/f"},
        {"--image", image_, "--inode", "abc"},
        {"--image", image_, "--progress", "--no-progress", "/f"},
        {"--image", image_, "/f", "/g"},
    };
    for (const auto& args : bad) {
      std::vector<std::string> a = args;
      if (tool == "ext4dio-write") {
        a.push_back("--input");
        a.push_back(p);
      }
      RunResult r = Tool(tool, a);
      EXPECT_EQ(r.exit_code, 2) << ::testing::PrintToString(a) << ": " << r.err;
      EXPECT_FALSE(r.err.empty());
    }
    RunResult help = Tool(tool, {"--help"});
    EXPECT_EQ(help.exit_code, 0);
    EXPECT_THAT(help.out, HasSubstr("--image-offset"));
    EXPECT_THAT(help.out, HasSubstr("--json"));
    RunResult version = Tool(tool, {"--version"});
    EXPECT_EQ(version.exit_code, 0);
    EXPECT_THAT(version.out, HasSubstr(tool + " 0.1.0"));
  }
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--io-size", "1X"},
                                             {"--io-size", "0"},
                                             {"--io-size", "2G"},
                                             {"--queue-depth", "0"},
                                             {"--queue-depth", "-1"},
                                             {"--queue-depth", "5000"},
                                             {"--threads", "0"},
                                             {"--threads", "two"}}) {
    std::vector<std::string> a = {"--image", image_, "--input", p, "/f"};
    a.insert(a.end(), args.begin(), args.end());
    RunResult r = Write(a);
    EXPECT_EQ(r.exit_code, 2) << ::testing::PrintToString(args) << ": " << r.err;
  }
  EXPECT_EQ(Tool("ext4dio-write", {"--help"}).out.find("--queue-depth") != std::string::npos, true);
}

TEST_P(RwCliTest, FailuresExitOneWithOneLineNamingFileAndCause) {
  const std::string p = Payload("hello");
  RunResult r = Write({"--image", image_, "--input", p, "/missing"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("ext4dio-write: /missing: "));
  EXPECT_THAT(r.err, HasSubstr("No such file"));
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  r = Read({"--image", image_, "/missing"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("ext4dio-read: /missing: "));
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  r = Write({"--image", image_, "--input", dir_ / "no-such-input", "/f"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no-such-input"));
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  r = Read({"--image", image_, "--output", dir_ / "no/such/dir/out", "/f"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no/such/dir/out"));
  // A file without --image must be on a mounted ext4: this one is on tmpfs.
  for (const std::string tool : {"ext4dio-write", "ext4dio-read"}) {
    r = tool == "ext4dio-write" ? Tool(tool, {"--input", p, dir_ / "src/f"})
                                : Tool(tool, {dir_ / "src/f"});
    EXPECT_EQ(r.exit_code, 1) << tool;
    EXPECT_THAT(r.err, HasSubstr("is not on an ext2/3/4 filesystem")) << tool;
    EXPECT_EQ(Lines(r.err), 1u) << r.err;
  }
  // A directory.
  r = Write({"--image", image_, "--input", p, "/"});
  EXPECT_EQ(r.exit_code, 1);
}

TEST_P(RwCliTest, ProgressOnlyWhenAskedOrOnATerminal) {
  const std::string data = RandomBytes(200000, 16);
  RunResult quiet = Write({"--image", image_, "--input", Payload(data), "/f"});
  ASSERT_EQ(quiet.exit_code, 0);
  EXPECT_EQ(quiet.err, "") << "stderr is not a terminal: silent";
  RunResult loud = Write({"--image", image_, "--input", Payload(data), "--progress", "/f"});
  ASSERT_EQ(loud.exit_code, 0) << loud.err;
  EXPECT_THAT(loud.err, HasSubstr("ext4dio-write: ["));
  EXPECT_THAT(loud.err, HasSubstr("100%"));
  EXPECT_THAT(loud.err, Not(HasSubstr("\r"))) << "plain lines when not a terminal";
  RunResult off = Write({"--image", image_, "--input", Payload(data), "--no-progress", "/f"});
  EXPECT_EQ(off.err, "");
  // A stream of unknown length: bytes and rate, no percentage.
  RunResult stream = PipeWrite(data, {"--image", image_, "--progress", "/f"});
  ASSERT_EQ(stream.exit_code, 0) << stream.err;
  EXPECT_THAT(stream.err, HasSubstr("ext4dio-write: "));
  EXPECT_THAT(stream.err, HasSubstr("/s"));
  EXPECT_THAT(stream.err, Not(HasSubstr("%")));

  RunResult rd = Read({"--image", image_, "/f"});
  EXPECT_EQ(rd.err, "");
  rd = Read({"--image", image_, "--progress", "--output", dir_ / "o", "/f"});
  ASSERT_EQ(rd.exit_code, 0);
  EXPECT_THAT(rd.err, HasSubstr("ext4dio-read: ["));
  EXPECT_THAT(rd.err, HasSubstr("100%"));
}

// Progress counts each request as it completes: a slow stream fed one
// --io-size chunk at a time shows every chunk written while the tool waits
// for the next (before, nothing was reaped until --queue-depth chunks were
// in flight: 0 % for seconds, then a queue's worth at once).
TEST_P(RwCliTest, ProgressGrowsByOneRequestAsEachCompletes) {
  testing::Child w({testing::ToolPath("ext4dio-write"), "--image", image_, "--io-size", "64K",
                    "--queue-depth", "32", "--progress", "/f"});
  ASSERT_TRUE(w.ok());
  for (int k = 1; k <= 3; ++k) {
    ASSERT_TRUE(w.Feed(RandomBytes(65536, 40 + k)));
    const std::string shown = std::to_string(64 * k) + ".0 KiB  ";
    // The chunk is written while the tool waits for more input; the next
    // progress line (once a second) shows it.
    EXPECT_TRUE(testing::Child::WaitFor([&] { return w.err().find(shown) != std::string::npos; },
                                        std::chrono::seconds(20)))
        << "chunk " << k << " not shown as written: " << w.err();
  }
  w.CloseInput();
  EXPECT_EQ(w.Wait(), 0) << w.err();
}

// A stream that is slow, then fast: while the tool waits for input it reaps
// its writes, and a buffer freed then must not be handed out twice (before
// the fix, the slot popped after reading was the one just freed, not the
// one read into: two chunks in flight in one buffer, the wrong bytes
// written, exit 0).
TEST_P(RwCliTest, SlowThenFastStreamWritesEveryByteRight) {
  const uint64_t kChunk = 4096;
  const std::string data = RandomBytes(kFSize - 1000, 61);
  testing::Child w({testing::ToolPath("ext4dio-write"), "--image", image_, "--io-size", "4K",
                    "--queue-depth", "8", "--offset", "1000", "/f"});
  ASSERT_TRUE(w.ok());
  size_t fed = 0;
  while (fed < data.size()) {
    // Slow: one chunk at a time, each read before the next is fed (the
    // tool then waits for input with that chunk's write in flight).
    for (int k = 0; k < 8 && fed < data.size(); ++k, fed += kChunk) {
      ASSERT_TRUE(w.Feed(data.substr(fed, kChunk)));
      ASSERT_TRUE(testing::Child::WaitFor(
          [&] { return testing::Child::Queued(w.in_fd()) == 0; }))
          << w.err();
    }
    // Fast: 16 chunks at once.
    if (fed >= data.size()) break;
    ASSERT_TRUE(w.Feed(data.substr(fed, 16 * kChunk)));
    fed = std::min<size_t>(fed + 16 * kChunk, data.size());
  }
  w.CloseInput();
  ASSERT_EQ(w.Wait(), 0) << w.err();
  EXPECT_TRUE(Dump("/f") == Splice(f_, 1000, data)) << "wrong data written";
}

TEST_P(RwCliTest, ProgressLineOnATerminal) {
  if (testing::Sh("command -v script").exit_code != 0) GTEST_SKIP() << "no script(1)";
  const std::string p = Payload(RandomBytes(kFSize, 17));
  // script(1) gives the command a terminal; what it printed comes back.
  const std::string cmd = Cmd({testing::ToolPath("ext4dio-write"), "--image", image_, "--input", p,
                               "--io-size", "4K", "--queue-depth", "1", "/f"});
  RunResult r = testing::Run({"script", "-qec", cmd, "/dev/null"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("\rext4dio-write: ["));
  EXPECT_THAT(r.out, HasSubstr("100%"));
  EXPECT_THAT(r.out, HasSubstr("/s"));
  EXPECT_EQ(Dump("/f"), testing::ReadFile(p));
  // --no-progress silences it even there.
  const std::string quiet = Cmd(
      {testing::ToolPath("ext4dio-write"), "--image", image_, "--input", p, "--no-progress", "/f"});
  r = testing::Run({"script", "-qec", quiet, "/dev/null"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("ext4dio-write")));
  // ext4dio-read too (data to a file, the terminal shows progress).
  const std::string rd =
      Cmd({testing::ToolPath("ext4dio-read"), "--image", image_, "--output", dir_ / "o", "/f"});
  r = testing::Run({"script", "-qec", rd, "/dev/null"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("\rext4dio-read: ["));
}

// Binary data is never written to a terminal unasked (as gzip -c): with
// standard output on a pty (script(1)), exit 1, one line saying why and
// what to do, and not a byte of the file; -o FILE and --force work there.
TEST_P(RwCliTest, ReadRefusesToWriteDataToATerminal) {
  if (testing::Sh("command -v script").exit_code != 0) GTEST_SKIP() << "no script(1)";
  const std::string read = testing::ToolPath("ext4dio-read");
  RunResult r = testing::Run(
      {"script", "-qec", Cmd({read, "--image", image_, "--no-progress", "/f"}), "/dev/null"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  std::string shown = r.out;
  shown.erase(std::remove(shown.begin(), shown.end(), '\r'), shown.end());
  // Only the message (the file's bytes would be tens of KiB).
  EXPECT_TRUE(shown ==
              "ext4dio-read: refusing to write binary data to a terminal; use -o FILE or "
              "redirect (--force writes it anyway)\n")
      << shown.size() << " bytes: " << shown.substr(0, 200);

  const std::string out = dir_ / "out";
  r = testing::Run({"script", "-qec",
                    Cmd({read, "--image", image_, "--no-progress", "-o", out, "/f"}),
                    "/dev/null"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(testing::ReadFile(out) == f_);

  // f_ has no '\n' (every byte is odd): the terminal passes it unchanged.
  r = testing::Run({"script", "-qec",
                    Cmd({read, "--image", image_, "--no-progress", "--force", "--length", "4096",
                         "/f"}),
                    "/dev/null"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out.size(), 4096u);
  EXPECT_TRUE(r.out == f_.substr(0, 4096));
}

// --output that is the image (by name, hard link or symlink; also standard
// output appending to it) is refused as cp refuses ("'X' and 'X' are the
// same file"), exit 1, the image byte-identical: before, the image was
// truncated to nothing.
TEST_P(RwCliTest, ReadRefusesAnOutputThatIsTheImage) {
  ASSERT_EQ(link(image_.c_str(), (dir_ / "hard.img").c_str()), 0);
  ASSERT_EQ(symlink(image_.c_str(), (dir_ / "sym.img").c_str()), 0);
  const std::string before = testing::ReadFile(image_);
  for (const std::string& out : {image_, dir_ / "hard.img", dir_ / "sym.img"}) {
    RunResult r = Read({"--image", image_, "--output", out, "--json", "/f"});
    EXPECT_EQ(r.exit_code, 1) << out << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("are the same file")) << out;
    EXPECT_THAT(r.err, HasSubstr("nothing written")) << out;
    EXPECT_EQ(Lines(r.err), 1u) << r.err;
    EXPECT_EQ(Json::parse(r.out)["bytes"], 0) << r.out;
    EXPECT_TRUE(testing::ReadFile(image_) == before) << "--output " << out << " changed the image";
  }
  // Standard output appended to the image.
  RunResult r = testing::Sh(Cmd({testing::ToolPath("ext4dio-read"), "--image", image_, "/f"}) +
                            " >> " + Quote(dir_ / "hard.img"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("'standard output' and '" + image_ + "' are the same file"));
  EXPECT_TRUE(testing::ReadFile(image_) == before) << "stdout >> image changed the image";
  // Another file is fine, and an existing one is truncated first.
  testing::WriteFile(dir_ / "o", std::string(kFSize * 2, 'x'));
  r = Read({"--image", image_, "--output", dir_ / "o", "/f"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(testing::ReadFile(dir_ / "o") == f_);
}

// --input (or standard input) that is the image being written is refused,
// nothing written: before, the image's first bytes went into /f.
TEST_P(RwCliTest, WriteRefusesAnInputThatIsTheImage) {
  ASSERT_EQ(link(image_.c_str(), (dir_ / "hard.img").c_str()), 0);
  ASSERT_EQ(symlink(image_.c_str(), (dir_ / "sym.img").c_str()), 0);
  const std::string before = testing::ReadFile(image_);
  for (const std::string& in : {image_, dir_ / "hard.img", dir_ / "sym.img"}) {
    RunResult r =
        Write({"--image", image_, "--input", in, "--length", "1000", "--json", "/f"});
    EXPECT_EQ(r.exit_code, 1) << in << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("are the same file")) << in;
    EXPECT_EQ(Json::parse(r.out)["bytes"], 0) << r.out;
    EXPECT_TRUE(testing::ReadFile(image_) == before) << "--input " << in << " changed the image";
  }
  RunResult r = testing::Sh(
      Cmd({testing::ToolPath("ext4dio-write"), "--image", image_, "--length", "1000", "/f"}) +
      " < " + Quote(dir_ / "sym.img"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("'standard input' and '" + image_ + "' are the same file"));
  EXPECT_TRUE(testing::ReadFile(image_) == before) << "stdin < image changed the image";
  EXPECT_TRUE(Dump("/f") == f_);
}

// SIGINT in the middle of a stream into an image: in-flight I/O finishes,
// the count written is reported (text and --json), exit 130; the file holds
// exactly the input's first N bytes and its old bytes after them. Before,
// the signal's default action killed the tool without a word.
TEST_P(RwCliTest, InterruptedWriteReportsWhatItWrote) {
  for (int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(sig == SIGINT ? "SIGINT" : "SIGTERM");
    const std::string before = Dump("/f");
    const std::string data = RandomBytes(96 * 1024, static_cast<uint32_t>(30 + sig));
    testing::Child child({testing::ToolPath("ext4dio-write"), "--image", image_, "--json",
                          "--io-size", "4K", "--queue-depth", "1", "/f"});
    ASSERT_TRUE(child.ok());
    ASSERT_TRUE(child.Feed(data));
    // Progress: the tool has read (and so written all but the last chunk
    // of) what it was fed; it now waits for more input.
    ASSERT_TRUE(testing::Child::WaitFor([&] { return testing::Child::Queued(child.in_fd()) == 0; }));
    ASSERT_TRUE(child.Signal(sig));
    const int rc = child.Wait();
    ASSERT_EQ(rc, 128 + sig) << child.err();
    EXPECT_THAT(child.err(), HasSubstr(sig == SIGINT ? "interrupted by SIGINT" : "interrupted by SIGTERM"));
    Json j = Json::parse(child.out());
    const uint64_t n = j["bytes"].get<uint64_t>();
    EXPECT_GT(n, 0u);
    EXPECT_LE(n, data.size());
    EXPECT_EQ(n % 4096, 0u) << "whole chunks";
    EXPECT_THAT(child.err(), HasSubstr(std::to_string(n) + " bytes written"));
    EXPECT_TRUE(Dump("/f") == Splice(before, 0, data.substr(0, n)))
        << "the file is not the input's first " << n << " bytes followed by its old bytes";
  }
}

// SIGTERM while ext4dio-read waits for a stalled reader of its standard
// output: it stops, reports the bytes it output (--json on stderr), exit
// 143; those bytes are the file's first bytes.
TEST_P(RwCliTest, InterruptedReadReportsWhatItOutput) {
  testing::Child child({testing::ToolPath("ext4dio-read"), "--image", image_, "--json", "/f"},
                       "/dev/null", /*stdout_pipe=*/true);
  ASSERT_TRUE(child.ok());
  // The pipe fills (the file is bigger than a pipe's buffer) and stays full.
  ASSERT_TRUE(testing::Child::WaitFor([&] { return testing::Child::Queued(child.out_fd()) > 0; }));
  ASSERT_TRUE(child.Signal(SIGTERM));
  const std::string got = child.ReadAllOutput();
  ASSERT_EQ(child.Wait(), 143) << child.err();
  const std::string err = child.err();
  EXPECT_THAT(err, HasSubstr("interrupted by SIGTERM"));
  Json j = Json::parse(err.substr(err.find('{')));
  EXPECT_EQ(j["bytes"].get<uint64_t>(), got.size());
  EXPECT_LT(got.size(), f_.size());
  EXPECT_TRUE(got == f_.substr(0, got.size()));
}

// A fully written file in many extents (1 KiB blocks, 256-block groups
// without flex_bg: the group metadata cuts it every 256 KiB), written by
// four threads in 64 KiB requests.
class RwCliFragmentedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(testing::Sh("mkdir -p " + Quote(dir_ / "src")).exit_code, 0);
    big_ = RandomBytes(6000000, 21);
    testing::WriteFile(dir_ / "src/big", big_);
    image_ = dir_ / "frag.img";
    testing::MakeFs("ext4", {"-b", "1024", "-O", "^flex_bg,^resize_inode", "-g", "256", "-N", "64"},
                    dir_ / "src", image_, "16M");
  }
  void TearDown() override {
    RunResult r = testing::Run({"e2fsck", "-fn", image_});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  std::string Dump() {
    const std::string out = dir_ / "dump.out";
    EXPECT_EQ(testing::Run({"debugfs", "-R", "dump /big " + out, image_}).exit_code, 0);
    return testing::ReadFile(out);
  }
  TempDir dir_;
  std::string image_, big_;
};

TEST_F(RwCliFragmentedTest, FourThreadsOfSmallRequests) {
  ASSERT_GE(testing::DebugfsExtents(image_, "/big").size(), 20u) << "not fragmented";
  const std::string write = testing::ToolPath("ext4dio-write");
  const std::string data = RandomBytes(big_.size(), 22);
  testing::WriteFile(dir_ / "payload", data);
  RunResult r = testing::Run({write, "--image", image_, "--input", dir_ / "payload", "--threads",
                              "4", "--io-size", "64K", "--verify", "--json", "/big"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out);
  EXPECT_EQ(j["bytes"], big_.size());
  EXPECT_EQ(j["verified"], true);
  std::string expected = data;
  EXPECT_TRUE(Dump() == expected);

  // Unaligned: every request has read-modify-write or buffered edges.
  const std::string data2 = RandomBytes(3000001, 23);
  testing::WriteFile(dir_ / "payload2", data2);
  r = testing::Run({write, "--image", image_, "--input", dir_ / "payload2", "--offset", "777",
                    "--threads", "4", "--io-size", "65535", "--queue-depth", "8", "--json",
                    "/big"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = Json::parse(r.out);
  EXPECT_GT(j["rmw_bytes"].get<uint64_t>() + j["buffered_bytes"].get<uint64_t>(), 0u);
  expected = Splice(expected, 777, data2);
  EXPECT_TRUE(Dump() == expected);

  // A pipe, four threads.
  const std::string data3 = RandomBytes(2500000, 24);
  testing::WriteFile(dir_ / "payload3", data3);
  r = testing::Sh("cat " + Quote(dir_ / "payload3") + " | " +
                  Cmd({write, "--image", image_, "--offset", "1000000", "--threads", "4",
                       "--io-size", "64K", "--verify", "/big"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expected = Splice(expected, 1000000, data3);
  EXPECT_TRUE(Dump() == expected);

  // Shallow queues, many threads, aligned requests mixed with read-modify-
  // write ones in the same device regions: must neither hang nor lose data.
  const std::string data4 = RandomBytes(4000000, 25);
  testing::WriteFile(dir_ / "payload4", data4);
  for (int round = 0; round < 5; ++round) {
    r = testing::Sh("timeout 60 " +
                    Cmd({write, "--image", image_, "--input", dir_ / "payload4", "--offset", "777",
                         "--threads", "4", "--queue-depth", "2", "--io-size", "64K", "/big"}));
    ASSERT_EQ(r.exit_code, 0) << "round " << round << " (124: hung): " << r.err;
  }
  expected = Splice(expected, 777, data4);
  EXPECT_TRUE(Dump() == expected);

  RunResult back = testing::Run({testing::ToolPath("ext4dio-read"), "--image", image_, "/big"});
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_TRUE(back.out == expected);
}

}  // namespace
}  // namespace ext4dio
