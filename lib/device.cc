#include "device.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "errors.h"

namespace ext4dio {

MountedFile::MountedFile(MountedFile&& o) noexcept { *this = std::move(o); }

MountedFile& MountedFile::operator=(MountedFile&& o) noexcept {
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
    mount_point = std::move(o.mount_point);
    mount_options = std::move(o.mount_options);
    super_options = std::move(o.super_options);
  }
  return *this;
}

MountedFile::~MountedFile() {
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

absl::StatusOr<MountedFile> InspectMountedFile(const std::string& path) {
  MountedFile m;
  m.path = path;
  m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (m.fd < 0 && errno == ELOOP)
    m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // a symlink: follow it
  if (m.fd < 0) return ErrnoError(errno, "open " + path);
  struct stat st;
  if (::fstat(m.fd, &st) != 0) return ErrnoError(errno, "stat " + path);
  struct statfs sfs;
  if (::fstatfs(m.fd, &sfs) != 0) return ErrnoError(errno, "statfs " + path);
  if (sfs.f_type != EXT4_SUPER_MAGIC) {
    return LibError(EXT4DIO_E_NOT_EXT4,
                    absl::StrFormat("%s is not on an ext2/3/4 filesystem "
                                    "(filesystem magic 0x%x)",
                                    path, static_cast<unsigned long>(sfs.f_type)));
  }
  if (!S_ISREG(st.st_mode)) {
    return LibError(EXT4DIO_E_UNSUPPORTED_FILE,
                    absl::StrFormat("%s is not a regular file", path));
  }
  m.dev = st.st_dev;
  m.inode = st.st_ino;
  m.size = static_cast<uint64_t>(st.st_size);
  m.block_size = static_cast<uint32_t>(sfs.f_bsize);
  uint32_t v[2];
  std::memcpy(v, &sfs.f_fsid, sizeof v);
  m.fsid = uint64_t{v[0]} | (uint64_t{v[1]} << 32);

  auto node = DeviceNode(st.st_dev);
  if (!node.ok()) return node.status();
  m.device = *node;

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

}  // namespace ext4dio
