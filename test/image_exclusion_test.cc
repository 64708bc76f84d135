// Image mode's exclusion (issue 9, items 7, 10 and 12): two writers of one
// image exclude each other whichever way each comes in (the image file or a
// loop device over it); flock, OFD and POSIX locks on the image are
// honoured; mounts this process cannot see in its mountinfo (another mount
// namespace, a lazy unmount with a file still open, a loop device whose
// backing name was unlinked) refuse the write; a FIFO as the image is
// refused without blocking; the exclusive claim on a device is gone when a
// writer's process has exited. Every refusal leaves the file's bytes in the
// image as they were.
// Needs root and loop devices: exits 77 (skip) saying why when missing.
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "errors.h"
#include "file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::RandomBytes;

using ::testing::HasSubstr;
using ::testing::Not;
using testing::Quote;
using testing::RunResult;
using testing::TempDir;

constexpr uint64_t kFileBytes = 256 * 1024;

bool InMountinfo(const std::string& what) {
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    if (line.find(what) != std::string::npos) return true;
  }
  return false;
}

// A mount in this namespace, unmounted (lazily if it must) when this goes.
class Mount {
 public:
  Mount(const std::string& device, const std::string& dir, const std::string& options) {
    RunResult r = testing::Run({"mount", "-t", "ext4", "-o", options, device, dir});
    mounted_ = r.exit_code == 0;
    error_ = r.err;
    dir_ = dir;
  }
  ~Mount() {
    if (mounted_ && testing::Run({"umount", dir_}).exit_code != 0)
      testing::Run({"umount", "-l", dir_});
  }
  bool ok() const { return mounted_; }
  const std::string& error() const { return error_; }
  void Forget() { mounted_ = false; }  // unmounted by the test itself

 private:
  std::string dir_, error_;
  bool mounted_ = false;
};

// A child in its own mount namespace holding `device` mounted read-only on
// `dir` until this goes (the namespace, and with it the mount, dies with
// the child). Invisible in our mountinfo.
class MountInOtherNamespace {
 public:
  MountInOtherNamespace(const std::string& device, const std::string& dir) {
    int ready[2], hold[2];
    if (pipe(ready) != 0 || pipe(hold) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(ready[0]);
      close(hold[1]);
      char status = 'y';
      if (unshare(CLONE_NEWNS) != 0 ||
          mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
          mount(device.c_str(), dir.c_str(), "ext4", MS_RDONLY, nullptr) != 0)
        status = 'n';
      (void)!write(ready[1], &status, 1);
      char c;
      while (read(hold[0], &c, 1) > 0) {
      }
      _exit(0);
    }
    close(ready[1]);
    close(hold[0]);
    hold_ = hold[1];
    char status = 'n';
    if (pid_ > 0 && read(ready[0], &status, 1) == 1) ok_ = status == 'y';
    close(ready[0]);
  }
  ~MountInOtherNamespace() {
    if (hold_ >= 0) close(hold_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  bool ok() const { return ok_; }

 private:
  pid_t pid_ = -1;
  int hold_ = -1;
  bool ok_ = false;
};

class ImageExclusionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = dir_ / "src";
    image_ = dir_ / "fs.img";
    mnt_ = dir_ / "mnt";
    ASSERT_EQ(testing::Sh("mkdir -p " + Quote(src_) + " " + Quote(mnt_)).exit_code, 0);
    original_ = RandomBytes(kFileBytes, 1);
    testing::WriteFile(src_ + "/f", original_);
    testing::MakeFs("ext4", {"-b", "4096"}, src_, image_, "64M");
    extents_ = testing::DebugfsExtents(image_, "/f");
    ASSERT_FALSE(extents_.empty());
    payload_ = dir_ / "payload";
    testing::WriteFile(payload_, RandomBytes(64 * 1024, 2));
  }

  // /f's bytes as they are in the image file (at its extents), whoever
  // holds it: what a writer that got through would have changed.
  std::string FileBytesInImage() const {
    std::ifstream in(image_, std::ios::binary);
    std::string out;
    for (const Extent& e : extents_) {
      std::string b(uint64_t{e.length} * 4096, '\0');
      in.seekg(static_cast<std::streamoff>(e.physical * 4096));
      in.read(b.data(), static_cast<std::streamsize>(b.size()));
      out += b;
    }
    out.resize(kFileBytes);
    return out;
  }

  OpenOptions WriterOf(const std::string& image) const {
    OpenOptions o;
    o.target.image = image;
    o.target.path = "/f";
    o.write = true;
    return o;
  }

  // ext4dio-write --image IMAGE --input payload /f
  RunResult WriteWithCli(const std::string& image) const {
    return testing::Run(
        {testing::ToolPath("ext4dio-write"), "--image", image, "--input", payload_, "/f"});
  }

  // The CLI is refused with `message`, and /f is as it was.
  void ExpectCliRefused(const std::string& image, const std::string& message) {
    const std::string before = FileBytesInImage();
    RunResult r = WriteWithCli(image);
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr(message));
    EXPECT_TRUE(FileBytesInImage() == before) << "a refused writer changed /f";
  }

  TempDir dir_;
  std::string src_, image_, mnt_, payload_, original_;
  std::vector<Extent> extents_;
};

// --- Item 7: writers through the file and through a loop device ---------

TEST_F(ImageExclusionTest, LoopDeviceWriterIsRefusedWhileAFileWriterHoldsTheImage) {
  // The file writer came first, before the loop device existed: the loop
  // writer must see its locks on the backing file.
  auto holder = File::Open(WriterOf(image_));
  ASSERT_TRUE(holder.ok()) << holder.status();
  testing::LoopDevice loop(image_);
  ASSERT_FALSE(loop.device().empty()) << loop.error();
  ExpectCliRefused(loop.device(), "locked by another writer (flock)");
}

TEST_F(ImageExclusionTest, FileWriterClaimsLoopDevicesOverTheImageUntilClose) {
  testing::LoopDevice loop(image_);
  ASSERT_FALSE(loop.device().empty()) << loop.error();
  auto holder = File::Open(WriterOf(image_));
  ASSERT_TRUE(holder.ok()) << holder.status();
  // Its exclusive claim on the loop device keeps a loop writer out...
  ExpectCliRefused(loop.device(), "in use");
  // ...and is released at close: the loop writer then gets in.
  holder->reset();
  RunResult r = WriteWithCli(loop.device());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(FileBytesInImage().substr(0, 64 * 1024), testing::ReadFile(payload_));
}

TEST_F(ImageExclusionTest, FileWriterIsRefusedWhileALoopDeviceWriterHoldsTheImage) {
  testing::LoopDevice loop(image_);
  ASSERT_FALSE(loop.device().empty()) << loop.error();
  auto holder = File::Open(WriterOf(loop.device()));
  ASSERT_TRUE(holder.ok()) << holder.status();
  EXPECT_EQ((*holder)->warning(), "");
  // The loop writer holds the backing file's locks too.
  EXPECT_NE(testing::Run({"flock", "-n", "-x", image_, "true"}).exit_code, 0);
  ExpectCliRefused(image_, "locked by another writer");
}

TEST_F(ImageExclusionTest, LoopDeviceWriterWarnsWhenItsBackingFileCannotBeLocked) {
  const std::string alias = dir_ / "alias.img";
  ASSERT_EQ(link(image_.c_str(), alias.c_str()), 0);
  testing::LoopDevice loop(image_);
  ASSERT_FALSE(loop.device().empty()) << loop.error();
  ASSERT_EQ(unlink(image_.c_str()), 0);  // the kernel's backing path is gone
  auto holder = File::Open(WriterOf(loop.device()));
  ASSERT_TRUE(holder.ok()) << holder.status();
  EXPECT_THAT((*holder)->warning(),
              HasSubstr("cannot lock the backing file " + image_ + " (deleted) of " +
                        loop.device()));
  // Its O_EXCL still keeps a writer through the file (the alias) out.
  image_ = alias;
  ExpectCliRefused(alias, "in use through " + loop.device());
}

// --- Item 7: record locks (qemu's OFD locks, POSIX locks) ----------------

TEST_F(ImageExclusionTest, OfdAndPosixRecordLocksOnTheImageAreHonoured) {
  const int fd = open(image_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  // What qemu holds on an image it has open: shared OFD locks on bytes
  // around 100 and 200.
  struct flock fl = {};
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 100;
  fl.l_len = 1;
  ASSERT_EQ(fcntl(fd, F_OFD_SETLK, &fl), 0) << strerror(errno);
  auto f = File::Open(WriterOf(image_));
  ASSERT_FALSE(f.ok()) << "opened for writing under an OFD lock";
  EXPECT_EQ(CodeOf(f.status()), -EXT4DIO_E_IN_USE) << f.status();
  EXPECT_THAT(std::string(f.status().message()),
              HasSubstr("record lock: a read lock on bytes 100-100, an OFD lock"));
  ExpectCliRefused(image_, "record lock");
  fl.l_type = F_UNLCK;
  ASSERT_EQ(fcntl(fd, F_OFD_SETLK, &fl), 0);

  // A POSIX lock names its owner.
  fl.l_type = F_WRLCK;
  fl.l_start = 0;
  fl.l_len = 4096;
  ASSERT_EQ(fcntl(fd, F_SETLK, &fl), 0) << strerror(errno);
  f = File::Open(WriterOf(image_));
  ASSERT_FALSE(f.ok()) << "opened for writing under a POSIX lock";
  EXPECT_EQ(CodeOf(f.status()), -EXT4DIO_E_IN_USE) << f.status();
  EXPECT_THAT(std::string(f.status().message()),
              HasSubstr(absl::StrFormat("a write lock on bytes 0-4095, POSIX lock of pid %d",
                                        getpid())));
  fl.l_type = F_UNLCK;
  ASSERT_EQ(fcntl(fd, F_SETLK, &fl), 0);

  // Unlocked: a writer gets in and keeps a qemu-like locker out meanwhile.
  f = File::Open(WriterOf(image_));
  ASSERT_TRUE(f.ok()) << f.status();
  fl.l_type = F_RDLCK;
  fl.l_start = 100;
  fl.l_len = 1;
  EXPECT_NE(fcntl(fd, F_OFD_SETLK, &fl), 0) << "a writer must hold a record lock";
  f->reset();
  EXPECT_EQ(fcntl(fd, F_OFD_SETLK, &fl), 0) << "the record lock must go at close";
  close(fd);
}

// --- Item 7: mounts this process cannot see ------------------------------

TEST_F(ImageExclusionTest, RefusesAnImageMountedInAnotherMountNamespace) {
  testing::LoopDevice loop(image_);
  ASSERT_FALSE(loop.device().empty()) << loop.error();
  MountInOtherNamespace other(loop.device(), mnt_);
  ASSERT_TRUE(other.ok()) << "mounting in a new mount namespace failed";
  ASSERT_FALSE(InMountinfo(mnt_)) << "the other namespace's mount is visible here";
  ExpectCliRefused(image_, "in use through " + loop.device());
}

TEST_F(ImageExclusionTest, RefusesAnImageLazilyUnmountedWithAFileStillOpen) {
  testing::LoopDevice loop(image_);
  ASSERT_FALSE(loop.device().empty()) << loop.error();
  Mount m(loop.device(), mnt_, "ro");
  ASSERT_TRUE(m.ok()) << m.error();
  const int fd = open((mnt_ + "/f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(testing::Run({"umount", "-l", mnt_}).exit_code, 0);
  m.Forget();
  ASSERT_FALSE(InMountinfo(mnt_));
  ExpectCliRefused(image_, "in use through " + loop.device());
  close(fd);
}

TEST_F(ImageExclusionTest, RefusesAnImageMountedThroughALoopDeviceOfAnUnlinkedName) {
  // The loop device was set up on a name that is gone; the image lives on
  // under a hard link.
  const std::string alias = dir_ / "alias.img";
  ASSERT_EQ(link(image_.c_str(), alias.c_str()), 0);
  testing::LoopDevice loop(image_);
  ASSERT_FALSE(loop.device().empty()) << loop.error();
  Mount m(loop.device(), mnt_, "ro");
  ASSERT_TRUE(m.ok()) << m.error();
  ASSERT_EQ(unlink(image_.c_str()), 0);
  image_ = alias;  // FileBytesInImage reads the alias
  ExpectCliRefused(alias, "is mounted through " + loop.device() + " on " + mnt_);
}

// --- Item 10: a FIFO (or other special file) as the image ----------------

TEST_F(ImageExclusionTest, SpecialFilesAsTheImageAreRefusedWithoutBlocking) {
  const std::string fifo = dir_ / "fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // `timeout` only turns a hang (the old behaviour) into a failure.
  for (const char* tool : {"ext4dio-read", "ext4dio-write", "ext4dio-map"}) {
    SCOPED_TRACE(tool);
    std::vector<std::string> argv = {"timeout", "60", testing::ToolPath(tool), "--image", fifo};
    if (std::string(tool) == "ext4dio-write") argv.insert(argv.end(), {"--input", payload_});
    if (std::string(tool) == "ext4dio-read") argv.insert(argv.end(), {"--output", dir_ / "out"});
    argv.push_back("/f");
    RunResult r = testing::Run(argv);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr("is not a regular file or block device (a FIFO)"));
  }
  OpenOptions o = WriterOf("/dev/null");
  for (bool write : {false, true}) {
    o.write = write;
    auto f = File::Open(o);
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(CodeOf(f.status()), -EXT4DIO_E_UNSUPPORTED_FILE) << f.status();
    EXPECT_THAT(std::string(f.status().message()), HasSubstr("(a character device)"));
  }
}

// --- Item 12: the device claim ends with the writer ----------------------

TEST_F(ImageExclusionTest, BackToBackLoopDeviceWritersAllSucceed) {
  testing::LoopDevice loop(image_);
  ASSERT_FALSE(loop.device().empty()) << loop.error();
  int failed = 0;
  std::string first_error;
  for (int i = 0; i < 60; ++i) {
    RunResult r = WriteWithCli(loop.device());
    if (r.exit_code != 0) {
      if (failed++ == 0) first_error = absl::StrFormat("run %d: %s", i, r.err);
    }
  }
  EXPECT_EQ(failed, 0) << first_error;
  EXPECT_EQ(FileBytesInImage().substr(0, 64 * 1024), testing::ReadFile(payload_));
}

}  // namespace
}  // namespace ext4dio
