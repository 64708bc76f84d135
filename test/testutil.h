// Helpers for ext4dio's tests: running commands, scratch directories on
// tmpfs, building ext4 images with mkfs -d, and reading the independent
// oracle (debugfs) back.
#ifndef EXT4DIO_TEST_TESTUTIL_H_
#define EXT4DIO_TEST_TESTUTIL_H_

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "extent_map.h"

namespace ext4dio {
struct OpenOptions;  // file.h
class Os;            // os.h
}  // namespace ext4dio

namespace ext4dio::testing {

struct RunResult {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string out;
  std::string err;
};

// Runs `f` when the scope ends (undo chattr, give a device node back, ...).
class Defer {
 public:
  explicit Defer(std::function<void()> f) : f_(std::move(f)) {}
  ~Defer() { if (f_) f_(); }
  Defer(const Defer&) = delete;
  Defer& operator=(const Defer&) = delete;

 private:
  std::function<void()> f_;
};

// Runs argv[0] (PATH is searched) with `input` on stdin; never throws.
RunResult Run(const std::vector<std::string>& argv, const std::string& input = "");
// Runs `command` through /bin/sh -c.
RunResult Sh(const std::string& command);
// Shell-quotes one word.
std::string Quote(const std::string& word);

// Cleanup by record (scripts/cleanup-run.sh): when $EXT4DIO_TEST_RUN_DIR
// names a directory (scripts/test.sh makes one per run), appends one
// tab-separated line to its `record` file in a single write, so that the
// run's trap can tear the object down even after this process crashed.
// A no-op without the variable.
void RecordForCleanup(const std::vector<std::string>& fields);
// "MAJ:MIN<TAB>INO" of the file or directory itself (lstat), "" on error.
std::string FileIdentity(const std::string& path);

// A fresh directory (on /dev/shm when it exists, for speed), removed with
// everything in it when the object goes away (never across a mount).
// Recorded for cleanup (RecordForCleanup) as soon as it exists.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Path of a built tool ("ext4dio-map"): $EXT4DIO_BUILD_DIR/tools/NAME.
std::string ToolPath(const std::string& name);

// Writes `count` islands of `island_bytes` random bytes, `stride` bytes apart
// (island start to island start), leaving holes between them. Returns the
// bytes written in file order (holes as zeros are not included).
void WriteIslands(const std::string& path, uint64_t count, uint64_t island_bytes,
                  uint64_t stride, uint32_t seed);
void WriteFile(const std::string& path, const std::string& data);
std::string ReadFile(const std::string& path);

// n pseudo-random bytes drawn from rng (eight per draw).
std::string RandomBytes(size_t n, std::mt19937_64& rng);
// The same from a generator seeded with `seed`: equal seeds, equal bytes.
std::string RandomBytes(size_t n, uint64_t seed);

// mkfs.<type> -q -F ARGS -d SRC IMAGE SIZE; fails the test on error.
void MakeFs(const std::string& type, const std::vector<std::string>& args,
            const std::string& src_dir, const std::string& image,
            const std::string& size);

// The oracle: debugfs's view of a file, through "IMAGE?offset=N" when
// offset is nonzero. Extent trees: the leaf lines of `ex`; block maps: the
// BLOCKS section of `stat`, merged into maximal runs.
std::vector<Extent> DebugfsExtents(const std::string& image, const std::string& path,
                                   uint64_t offset = 0);
std::vector<Extent> DebugfsBlockMap(const std::string& image, const std::string& path,
                                    uint64_t offset = 0);
// Inode number and size from `stat`.
uint64_t DebugfsInode(const std::string& image, const std::string& path,
                      uint64_t offset = 0);
uint64_t DebugfsSize(const std::string& image, const std::string& path,
                     uint64_t offset = 0);

// A loop-mounted ext4 made for one test: image on tmpfs, mkfs, losetup,
// mount; torn down (umount, detach, remove) when the object goes away. Only
// devices this object attached are ever touched. The image's identity is
// recorded before losetup, the device after it and the mount before it, so
// the run's cleanup finds them if this process dies.
class LoopMount {
 public:
  // REQUIRES: CanUseLoopDevices(). ok() tells whether set-up worked.
  LoopMount(const std::vector<std::string>& mkfs_args, const std::string& size,
            const std::string& mount_options = "");
  ~LoopMount();
  LoopMount(const LoopMount&) = delete;
  LoopMount& operator=(const LoopMount&) = delete;
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const std::string& device() const { return device_; }
  const std::string& mount_point() const { return mount_point_; }
  const std::string& image() const { return image_; }
  std::string operator/(const std::string& name) const { return mount_point_ + "/" + name; }

 private:
  TempDir dir_;
  std::string image_, device_, mount_point_, error_;
  bool mounted_ = false;
  bool ok_ = false;
};

// A loop device over an existing image (not mounted), detached when this
// goes. The image's identity is recorded before losetup and the device after
// it, so the run's cleanup finds it if this process dies. Only the device it
// attached is ever touched.
class LoopDevice {
 public:
  // REQUIRES: CanUseLoopDevices(). device() is empty when it failed (error()).
  explicit LoopDevice(const std::string& image, bool read_only = false);
  ~LoopDevice();
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  const std::string& device() const { return device_; }
  const std::string& error() const { return error_; }

 private:
  std::string device_, error_;
};

// Options that open the mounted file at `path` for writing, through `os`
// (nullptr: the real OS).
OpenOptions MountedWriterOptions(const std::string& path, Os* os = nullptr);

// True when running as root with loop devices available (mounted tests).
bool CanUseLoopDevices(std::string* why);

}  // namespace ext4dio::testing

#endif  // EXT4DIO_TEST_TESTUTIL_H_
