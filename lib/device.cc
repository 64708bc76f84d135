#include "device.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <dirent.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "errors.h"

namespace ext4dio {

MountedFileInfo::MountedFileInfo(MountedFileInfo&& o) noexcept { *this = std::move(o); }

MountedFileInfo& MountedFileInfo::operator=(MountedFileInfo&& o) noexcept {
  if (this != &o) {
    if (fd >= 0) ::close(fd);
    fd = std::exchange(o.fd, -1);
    path = std::move(o.path);
    dev = o.dev;
    inode = o.inode;
    size = o.size;
    block_size = o.block_size;
    fsid = o.fsid;
    device = std::move(o.device);
    device_error = std::move(o.device_error);
    mount_point = std::move(o.mount_point);
    mount_options = std::move(o.mount_options);
    super_options = std::move(o.super_options);
    flags = o.flags;
    read_only = o.read_only;
    dax = o.dax;
  }
  return *this;
}

MountedFileInfo::~MountedFileInfo() {
  if (fd >= 0) ::close(fd);
}

absl::StatusOr<std::string> DeviceNode(dev_t dev) {
  const std::string uevent = absl::StrFormat("/sys/dev/block/%d:%d/uevent",
                                             major(dev), minor(dev));
  std::ifstream in(uevent);
  if (!in) {
    return ErrnoError(ENODEV, absl::StrFormat("device %d:%d has no %s",
                                              major(dev), minor(dev), uevent));
  }
  std::string line, name;
  while (std::getline(in, line)) {
    if (line.rfind("DEVNAME=", 0) == 0) name = line.substr(8);
  }
  if (name.empty()) {
    return ErrnoError(ENODEV, absl::StrFormat("%s names no device", uevent));
  }
  std::string node = "/dev/" + name;
  struct stat st;
  if (::stat(node.c_str(), &st) != 0) return ErrnoError(errno, "stat " + node);
  if (!S_ISBLK(st.st_mode) || st.st_rdev != dev) {
    return ErrnoError(ENODEV, absl::StrFormat("%s is not block device %d:%d",
                                              node, major(dev), minor(dev)));
  }
  return node;
}

absl::Status RefreshMountedFile(Os& os, int fd, MountedFileInfo& m) {
  int flags = 0;
  if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
    m.flags = static_cast<uint32_t>(flags);
  } else if (errno != ENOTTY && errno != EOPNOTSUPP) {
    return ErrnoError(errno, "reading the file flags of " + m.path);
  }
  struct statvfs vfs;
  if (::fstatvfs(fd, &vfs) != 0) return ErrnoError(errno, "statvfs " + m.path);
  m.read_only = (vfs.f_flag & ST_RDONLY) != 0;
  struct statx sx;
  if (os.Statx(fd, 0, &sx) == 0)
    m.dax = (sx.stx_attributes_mask & STATX_ATTR_DAX) && (sx.stx_attributes & STATX_ATTR_DAX);
  return absl::OkStatus();
}

std::string FilesystemStopped(Os& os, int fd) {
  struct statvfs vfs;
  if (::fstatvfs(fd, &vfs) == 0 && (vfs.f_flag & ST_RDONLY) != 0)
    return "the filesystem is now read-only (remounted, or errors=remount-ro after an error)";
  // ext4 checks its emergency state before anything else in read_iter,
  // even for an empty read (0 otherwise, and no atime update): EIO after a
  // shutdown, EROFS once errors=remount-ro struck (since 6.x that no longer
  // sets SB_RDONLY, so statvfs does not show it).
  char byte;
  if (const ssize_t rc = os.Pread(fd, &byte, 0, 0); rc < 0) {
    if (rc == -EIO)
      return "the filesystem was shut down (EXT4_IOC_SHUTDOWN, or an I/O error forced it)";
    if (rc == -EROFS)
      return "the filesystem is now read-only (errors=remount-ro after an error)";
  }
  return "";
}

absl::StatusOr<MountedFileInfo> InspectMountedFile(const std::string& path, int path_fd) {
  MountedFileInfo m;
  m.path = path;
  // Never open a FIFO or device node for reading: that may block forever
  // (a FIFO without writer) or have side effects. O_PATH opens nothing.
  int pfd = path_fd;
  if (pfd < 0) {
    pfd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (pfd < 0) return ErrnoError(errno, "open " + path);
  }
  struct stat st;
  const int stat_rc = ::fstat(pfd, &st);
  const int stat_err = errno;
  if (stat_rc == 0 && S_ISREG(st.st_mode)) {
    // The same inode, opened for reading through the O_PATH descriptor.
    const std::string self = absl::StrFormat("/proc/self/fd/%d", pfd);
    m.fd = ::open(self.c_str(), O_RDONLY | O_CLOEXEC);
  }
  const int open_err = errno;
  if (pfd != path_fd) ::close(pfd);
  if (stat_rc != 0) return ErrnoError(stat_err, "stat " + path);
  if (!S_ISREG(st.st_mode)) {
    return LibError(EXT4DIO_E_UNSUPPORTED_FILE,
                    absl::StrFormat("%s is not a regular file", path));
  }
  if (m.fd < 0) return ErrnoError(open_err, "open " + path);
  struct stat fst;
  if (::fstat(m.fd, &fst) != 0) return ErrnoError(errno, "stat " + path);
  if (fst.st_dev != st.st_dev || fst.st_ino != st.st_ino)
    return ErrnoError(ESTALE, path + " changed while it was being opened");
  struct statfs sfs;
  if (::fstatfs(m.fd, &sfs) != 0) return ErrnoError(errno, "statfs " + path);
  if (sfs.f_type != EXT4_SUPER_MAGIC) {
    return LibError(EXT4DIO_E_NOT_EXT4,
                    absl::StrFormat("%s is not on an ext2/3/4 filesystem "
                                    "(filesystem magic 0x%x)",
                                    path, static_cast<unsigned long>(sfs.f_type)));
  }
  m.dev = st.st_dev;
  m.inode = st.st_ino;
  if (absl::Status s = RefreshMountedFile(m.fd, m); !s.ok()) return s;
  m.size = static_cast<uint64_t>(st.st_size);
  m.block_size = static_cast<uint32_t>(sfs.f_bsize);
  uint32_t v[2];
  std::memcpy(v, &sfs.f_fsid, sizeof v);
  m.fsid = uint64_t{v[0]} | (uint64_t{v[1]} << 32);

  auto node = DeviceNode(st.st_dev);
  if (node.ok()) {
    m.device = *node;
  } else {
    m.device_error = std::string(node.status().message());
  }

  // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTS
  std::ifstream mi("/proc/self/mountinfo");
  const std::string want = absl::StrFormat("%d:%d", major(st.st_dev), minor(st.st_dev));
  std::string line;
  while (std::getline(mi, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() < 10 || f[2] != want) continue;
    size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash + 3 >= f.size()) continue;
    m.mount_point = f[4];
    m.mount_options = f[5];
    m.super_options = f[dash + 3];
    break;
  }
  return m;
}

absl::Status MountedRefusal(const MountedFileInfo& m, bool write) {
  auto refuse = [&](ext4dio_error code, const std::string& why) {
    return LibError(code, absl::StrFormat("%s: %s", m.path, why));
  };
  constexpr uint32_t kInlineData = 0x10000000;  // EXT4_INLINE_DATA_FL
  if (m.flags & FS_ENCRYPT_FL)
    return refuse(EXT4DIO_E_UNSUPPORTED_FILE, "is encrypted: the device holds ciphertext");
  if (m.flags & FS_VERITY_FL)
    return refuse(EXT4DIO_E_UNSUPPORTED_FILE,
                  "has fs-verity enabled: reads through the device would skip verification");
  if (m.dax || (m.flags & FS_DAX_FL))
    return refuse(EXT4DIO_E_UNSUPPORTED_FILE, "uses DAX: its data is mapped, not block I/O");
  if (m.flags & kInlineData)
    return refuse(EXT4DIO_E_UNSUPPORTED_FILE, "keeps its data inline in the inode");
  if (m.flags & FS_JOURNAL_DATA_FL)
    return refuse(EXT4DIO_E_UNSUPPORTED_FILE,
                  "is data-journaled (chattr +j): its newest data may be in the journal");
  for (absl::string_view opt : absl::StrSplit(m.super_options, ',')) {
    if (opt == "data=journal")
      return refuse(EXT4DIO_E_UNSUPPORTED_FILE,
                    absl::StrCat(m.mount_point, " is mounted data=journal: file data may be "
                                                "in the journal, not at its blocks"));
    if (opt == "dax" || opt == "dax=always")
      return refuse(EXT4DIO_E_UNSUPPORTED_FILE, absl::StrCat(m.mount_point, " is mounted with DAX"));
  }
  if (!write) return absl::OkStatus();
  if (m.flags & FS_IMMUTABLE_FL)
    return refuse(EXT4DIO_E_WRITE_REFUSED, "is immutable (chattr +i)");
  if (m.read_only)
    return refuse(EXT4DIO_E_WRITE_REFUSED,
                  absl::StrCat("its filesystem is mounted read-only at ", m.mount_point,
                               " (or was remounted read-only after an error)"));
  return absl::OkStatus();
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

absl::StatusOr<DeviceGeometry> ProbeGeometry(int fd, const std::string& path) {
  DeviceGeometry g;
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, "stat " + path);
  if (S_ISBLK(st.st_mode)) {
    g.block_device = true;
    int lbs = 0;
    if (::ioctl(fd, BLKSSZGET, &lbs) != 0) return ErrnoError(errno, "BLKSSZGET " + path);
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) return ErrnoError(errno, "BLKGETSIZE64 " + path);
    g.size = bytes;
    g.offset_align = static_cast<uint32_t>(lbs);
    g.memory_align = static_cast<uint32_t>(lbs);
    const std::string sys = absl::StrFormat("/sys/dev/block/%d:%d", major(st.st_rdev),
                                            minor(st.st_rdev));
    uint64_t kb = 0;
    std::string v = ReadFirstLine(sys + "/queue/max_sectors_kb");
    if (v.empty()) v = ReadFirstLine(sys + "/../queue/max_sectors_kb");  // a partition
    if (absl::SimpleAtoi(v, &kb) && kb >= 4) g.max_io = std::min<uint64_t>(kb * 1024, 4 << 20);
    struct stat mq;
    g.bio_based = ::stat((sys + "/mq").c_str(), &mq) != 0 &&
                  ::stat((sys + "/../mq").c_str(), &mq) != 0;
  } else if (S_ISREG(st.st_mode)) {
    g.size = static_cast<uint64_t>(st.st_size);
    struct statx sx;
    if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align != 0) {
      g.offset_align = sx.stx_dio_offset_align;
      g.memory_align = std::max<uint32_t>(sx.stx_dio_mem_align, 1);
    }
  } else {
    return ErrnoError(EINVAL, path + ": not an image file or block device");
  }
  return g;
}

}  // namespace ext4dio
