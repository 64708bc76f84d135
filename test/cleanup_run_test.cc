// Cleanup by record (issue 9 item 13): scripts/cleanup-run.sh tears down
// exactly what one run recorded and nothing else. A child makes a LoopMount
// with EXT4DIO_TEST_RUN_DIR set and aborts (as a crashed test or a
// sanitizer report would); the run's cleanup must unmount and detach its
// device and remove its directory, while a loop-mounted ext4 of the same
// naming pattern (/dev/shm/ext4dio-test-*, which the old pattern-based
// cleanup destroyed) that is not in the record survives. Records that no
// longer match (a device number now backed by another file, a directory
// path now another inode) are left alone.
// Needs root and loop devices: exits 77 (skip) saying why when missing.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "testutil.h"

namespace ext4dio::testing {
namespace {

std::string CleanupScript() {
  const char* src = std::getenv("EXT4DIO_SOURCE_DIR");
  return std::string(src ? src : ".") + "/scripts/cleanup-run.sh";
}

// The loop device's backing file as the kernel reports it; "" when the
// device is not attached.
std::string BackingFile(const std::string& device) {
  RunResult r = Run({"losetup", "-l", "-n", "-O", "BACK-FILE", device});
  if (r.exit_code != 0) return "";
  std::string s = r.out;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  while (!s.empty() && s.front() == ' ') s.erase(0, 1);
  return s;
}

bool IsMountPoint(const std::string& path) {
  return Run({"mountpoint", "-q", path}).exit_code == 0;
}

// A fresh run directory, not inside any other run's (the test's own
// cleanup call must be the only one that sees it).
std::string MakeRunDir() {
  char tmpl[] = "/dev/shm/ext4dio-run-XXXXXX";
  const char* d = mkdtemp(tmpl);
  return d ? d : "";
}

// Field `index` of the first record line of `kind`.
std::string RecordField(const std::string& run_dir, const std::string& kind, size_t index) {
  std::istringstream in(ReadFile(run_dir + "/record"));
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string item;
    while (std::getline(ss, item, '\t')) f.push_back(item);
    if (!f.empty() && f[0] == kind && index < f.size()) return f[index];
  }
  return "";
}

TEST(CleanupRunTest, CrashedChildsDevicesAreCleanedAndNothingElse) {
  // Not in the child's record: must survive. Its image is named like the
  // ones the old pattern-based cleanup detached and deleted.
  LoopMount other({"-b", "4096"}, "32M");
  ASSERT_TRUE(other.ok()) << other.error();
  ASSERT_NE(other.image().find("/dev/shm/ext4dio-test-"), std::string::npos) << other.image();
  WriteFile(other / "keep", "still here");

  const std::string run_dir = MakeRunDir();
  ASSERT_FALSE(run_dir.empty());
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("EXT4DIO_TEST_RUN_DIR", run_dir.c_str(), 1);
    auto* crashed = new LoopMount({"-b", "1024"}, "16M");  // never torn down
    if (!crashed->ok()) _exit(3);
    WriteFile(*crashed / "f", "data");
    std::abort();
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT)
      << "child did not crash as planned: status " << status;

  const std::string device = RecordField(run_dir, "loop", 1);
  const std::string image = RecordField(run_dir, "image", 3);
  const std::string mount_point = RecordField(run_dir, "mount", 2);
  const std::string dir = RecordField(run_dir, "dir", 3);
  ASSERT_FALSE(device.empty()) << ReadFile(run_dir + "/record");
  ASSERT_EQ(BackingFile(device), image) << "the crash left no device to clean";
  ASSERT_TRUE(IsMountPoint(mount_point));

  RunResult r = testing::Run({"bash", CleanupScript(), run_dir});
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;

  EXPECT_NE(BackingFile(device), image) << device << " still attached to the crashed run's image";
  EXPECT_FALSE(IsMountPoint(mount_point)) << mount_point;
  struct stat st;
  EXPECT_NE(stat(dir.c_str(), &st), 0) << dir << " not removed";
  EXPECT_NE(stat(run_dir.c_str(), &st), 0) << run_dir << " not removed";

  // The unrecorded mount is untouched.
  EXPECT_EQ(BackingFile(other.device()), other.image());
  EXPECT_TRUE(IsMountPoint(other.mount_point()));
  EXPECT_EQ(ReadFile(other / "keep"), "still here");
}

TEST(CleanupRunTest, RecordsThatNoLongerMatchAreLeftAlone) {
  LoopMount other({"-b", "4096"}, "32M");
  ASSERT_TRUE(other.ok()) << other.error();
  TempDir unrelated;
  WriteFile(unrelated / "keep", "mine");

  const std::string run_dir = MakeRunDir();
  ASSERT_FALSE(run_dir.empty());
  // A device of this run detached long ago whose number another run's
  // device now has (another backing inode), and a directory of this run
  // removed and its path made again by someone else (another inode).
  const std::string stale =
      "loop\t" + other.device() + "\t0:1\t999999999\n" +
      "mount\t" + other.device() + "\t" + other.mount_point() + "\n" +
      "dir\t0:1\t999999999\t" + unrelated.path() + "\n";
  WriteFile(run_dir + "/record", stale);

  RunResult r = testing::Run({"bash", CleanupScript(), run_dir});
  EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(BackingFile(other.device()), other.image());
  EXPECT_TRUE(IsMountPoint(other.mount_point()));
  EXPECT_EQ(ReadFile(unrelated / "keep"), "mine");
  struct stat st;
  EXPECT_NE(stat(run_dir.c_str(), &st), 0) << run_dir << " not removed";
}

}  // namespace
}  // namespace ext4dio::testing
