#include "image_lock.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "device.h"
#include "errors.h"

namespace ext4dio {
namespace {

bool ParseDev(const std::string& maj_min, dev_t* dev) {
  std::pair<std::string, std::string> p = absl::StrSplit(maj_min, ':');
  unsigned maj = 0, min = 0;
  if (!absl::SimpleAtoi(p.first, &maj) || !absl::SimpleAtoi(p.second, &min)) return false;
  *dev = makedev(maj, min);
  return true;
}

std::string MajMin(dev_t dev) { return absl::StrFormat("%d:%d", major(dev), minor(dev)); }

// Where block device MAJ:MIN is mounted in this process's namespace ("" if
// it is not, or not visibly).
std::string MountPointOf(const std::string& maj_min) {
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() > 4 && f[2] == maj_min) return f[4];
  }
  return "";
}

std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    }
    ::closedir(d);
  }
  return names;
}

// Names of loopN's partitions (loopNpM), from sysfs.
std::vector<std::string> Partitions(const std::string& loop) {
  std::vector<std::string> parts;
  for (const std::string& n : ListDir("/sys/block/" + loop)) {
    if (n.size() > loop.size() + 1 && n.compare(0, loop.size(), loop) == 0 &&
        n[loop.size()] == 'p')
      parts.push_back(n);
  }
  return parts;
}

// Why an O_EXCL open of `loop` (backed by `image`) failed with EBUSY: a
// visible mount or holder when there is one, else the cases this process
// cannot see.
std::string DescribeBusy(const LoopDevice& loop, const std::string& image) {
  const std::string base = "/sys/block/" + loop.name;
  std::vector<std::pair<std::string, std::string>> devs = {{loop.name, base}};
  for (const std::string& p : Partitions(loop.name)) devs.push_back({p, base + "/" + p});
  for (const auto& [name, sys] : devs) {
    const std::string where = MountPointOf(ReadFirstLine(sys + "/dev"));
    if (!where.empty())
      return absl::StrFormat("%s is mounted through /dev/%s on %s", image, name, where);
  }
  for (const auto& [name, sys] : devs) {
    std::vector<std::string> holders = ListDir(sys + "/holders");
    if (!holders.empty())
      return absl::StrFormat("%s is in use through /dev/%s (held by %s)", image, name,
                             absl::StrJoin(holders, ", "));
  }
  return absl::StrFormat(
      "%s is in use through %s, which another program holds exclusively: mounted in "
      "another mount namespace, lazily unmounted while a file on it is still open, or "
      "opened by another writer",
      image, loop.node);
}

}  // namespace

absl::Status CheckImageKind(const std::string& image) {
  struct stat st;
  if (::stat(image.c_str(), &st) != 0) return ErrnoError(errno, "stat " + image);
  if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) return absl::OkStatus();
  const char* what = S_ISFIFO(st.st_mode)   ? "a FIFO"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                     : S_ISDIR(st.st_mode)  ? "a directory"
                                            : "a special file";
  return LibError(EXT4DIO_E_UNSUPPORTED_FILE,
                  absl::StrFormat("%s is not a regular file or block device (%s)", image, what));
}

std::vector<LoopDevice> ListLoopDevices() {
  std::vector<LoopDevice> loops;
  for (const std::string& name : ListDir("/sys/block")) {
    if (name.size() <= 4 || name.compare(0, 4, "loop") != 0 ||
        !std::isdigit(static_cast<unsigned char>(name[4])))
      continue;
    LoopDevice l;
    l.name = name;
    const std::string base = "/sys/block/" + name;
    l.backing_file = ReadFirstLine(base + "/loop/backing_file");
    if (l.backing_file.empty()) continue;  // not bound
    if (!ParseDev(ReadFirstLine(base + "/dev"), &l.rdev)) continue;
    if (auto node = DeviceNode(l.rdev); node.ok()) l.node = *node;
    if (!l.node.empty()) {
      // Asking the device itself identifies the backing file even when its
      // path was unlinked or renamed.
      const int fd = ::open(l.node.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd >= 0) {
        loop_info64 info = {};
        if (::ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
          l.known_identity = true;
          l.backing_dev = info.lo_device;
          l.backing_ino = info.lo_inode;
        }
        ::close(fd);
      }
    }
    if (!l.known_identity) {
      // No access to the device: the kernel's path, where it still resolves.
      struct stat st;
      if (::stat(l.backing_file.c_str(), &st) == 0) {
        l.known_identity = true;
        l.backing_dev = st.st_dev;
        l.backing_ino = st.st_ino;
      }
    }
    loops.push_back(std::move(l));
  }
  return loops;
}

std::vector<LoopDevice> LoopDevicesBackedBy(dev_t dev, ino_t ino) {
  std::vector<LoopDevice> out;
  for (LoopDevice& l : ListLoopDevices()) {
    if (l.known_identity && l.backing_dev == static_cast<uint64_t>(dev) &&
        l.backing_ino == static_cast<uint64_t>(ino))
      out.push_back(std::move(l));
  }
  return out;
}

ImageClaim::~ImageClaim() {
  // Closing the only descriptor of its open file releases flock and OFD
  // locks and the exclusive claims right here.
  if (lock_fd_ >= 0) ::close(lock_fd_);
  for (int fd : exclusive_) ::close(fd);
}

absl::Status ImageClaim::LockFile(const std::string& what) {
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return ErrnoError(errno, "flock " + what);
    // Say what holds it: a shared lock (readers, e.g. `flock -s`) lets us
    // take one too; an exclusive one (a writer) does not.
    if (::flock(lock_fd_, LOCK_SH | LOCK_NB) == 0) {
      (void)::flock(lock_fd_, LOCK_UN);
      return LibError(EXT4DIO_E_IN_USE,
                      absl::StrCat(what, " is locked by a reader (flock): a shared lock is held "
                                         "on it, and a writer needs the image to itself"));
    }
    return LibError(EXT4DIO_E_IN_USE, absl::StrCat(what, " is locked by another writer (flock): "
                                                         "an exclusive lock is held on it"));
  }
  // Record locks (OFD, as qemu takes on byte ranges of images it has open,
  // or POSIX) are independent of flock: a write lock over the whole file
  // conflicts with any of them, and keeps their takers out while we write.
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (::fcntl(lock_fd_, F_OFD_SETLK, &fl) == 0) return absl::OkStatus();
  if (errno != EAGAIN && errno != EACCES) return ErrnoError(errno, "F_OFD_SETLK " + what);
  struct flock q = {};
  q.l_type = F_WRLCK;
  q.l_whence = SEEK_SET;
  std::string detail;
  if (::fcntl(lock_fd_, F_OFD_GETLK, &q) == 0 && q.l_type != F_UNLCK) {
    const std::string range =
        q.l_len == 0 ? absl::StrFormat("bytes %d to EOF", q.l_start)
                     : absl::StrFormat("bytes %d-%d", q.l_start, q.l_start + q.l_len - 1);
    // l_pid is the owner for POSIX locks and -1 for OFD locks (no owner).
    detail = absl::StrFormat(": a %s lock on %s, %s", q.l_type == F_RDLCK ? "read" : "write",
                             range,
                             q.l_pid > 0 ? absl::StrFormat("POSIX lock of pid %d", q.l_pid)
                                         : std::string("an OFD lock (e.g. qemu's)"));
  }
  return LibError(EXT4DIO_E_IN_USE,
                  absl::StrCat(what,
                               q.l_type == F_RDLCK ? " is locked by a reader (record lock"
                                                   : " is locked by another writer (record lock",
                               detail, ")"));
}

absl::Status ImageClaim::ClaimLoops(dev_t dev, ino_t ino, dev_t skip, const std::string& image) {
  for (const LoopDevice& loop : LoopDevicesBackedBy(dev, ino)) {
    if (loop.rdev == skip) continue;
    if (loop.node.empty()) {
      return LibError(EXT4DIO_E_IN_USE,
                      absl::StrFormat("%s is attached to loop device %s (%s), which has no /dev "
                                      "node here to claim it exclusively; detach it first",
                                      image, loop.name, MajMin(loop.rdev)));
    }
    // Held until the claim goes: a mount or another writer through this
    // device must fail with EBUSY meanwhile. Its exclusive claim also keeps
    // its partitions from being claimed (and fails if one is).
    const int fd = ::open(loop.node.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      const int err = errno;
      if (err == EBUSY) return LibError(EXT4DIO_E_IN_USE, DescribeBusy(loop, image));
      if (err == EACCES || err == EPERM) {
        return LibError(EXT4DIO_E_IN_USE,
                        absl::StrFormat("%s is attached to %s, which this process cannot open "
                                        "to claim exclusively (%s): it may be mounted where we "
                                        "cannot see; detach it or run with access to it",
                                        image, loop.node, strerror(err)));
      }
      return ErrnoError(err, "open " + loop.node);
    }
    exclusive_.push_back(fd);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ImageClaim>> ImageClaim::Acquire(int fd, const std::string& image,
                                                               std::string* warning) {
  std::unique_ptr<ImageClaim> c(new ImageClaim());
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, "stat " + image);

  if (S_ISREG(st.st_mode)) {
    // A descriptor of our own for the locks: closing it releases them at
    // once, whatever io_uring does with the writer's descriptors.
    c->lock_fd_ = ::open(image.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (c->lock_fd_ < 0) {
      if (errno == EWOULDBLOCK)
        return LibError(EXT4DIO_E_IN_USE, image + " is leased by another program");
      return ErrnoError(errno, "open " + image);
    }
    struct stat again;
    if (::fstat(c->lock_fd_, &again) != 0) return ErrnoError(errno, "stat " + image);
    if (again.st_dev != st.st_dev || again.st_ino != st.st_ino)
      return ErrnoError(ESTALE, image + " changed while it was being opened");
    if (absl::Status s = c->LockFile(image); !s.ok()) return s;
    if (absl::Status s = c->ClaimLoops(st.st_dev, st.st_ino, 0, image); !s.ok()) return s;
    return c;
  }
  if (!S_ISBLK(st.st_mode))
    return ErrnoError(EINVAL, image + " is not a regular file or block device");

  // A block device (the caller holds it O_EXCL). A loop device, or a
  // partition of one, also gets its backing file's locks, so a writer
  // through the file sees us and we see it.
  char real[PATH_MAX];
  const std::string sys = "/sys/dev/block/" + MajMin(st.st_rdev);
  if (::realpath(sys.c_str(), real) == nullptr) return c;  // no sysfs: O_EXCL alone
  std::string whole = real;
  const bool partition = ::access((sys + "/partition").c_str(), F_OK) == 0;
  if (partition) whole = whole.substr(0, whole.rfind('/'));
  whole = whole.substr(whole.rfind('/') + 1);
  if (::access(("/sys/block/" + whole + "/loop").c_str(), F_OK) != 0) return c;  // not a loop

  LoopDevice loop;
  bool found = false;
  for (LoopDevice& l : ListLoopDevices()) {
    if (l.name == whole) {
      loop = std::move(l);
      found = true;
    }
  }
  const std::string dev_name = "/dev/" + whole;
  if (!found) return c;  // unbound: no backing file to lock
  if (!partition) {
    // We hold the device: ask it directly (the node may be missing).
    loop_info64 info = {};
    if (::ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
      loop.known_identity = true;
      loop.backing_dev = info.lo_device;
      loop.backing_ino = info.lo_inode;
    }
  }
  std::string why;
  if (!loop.known_identity) {
    why = "its identity cannot be read from the device";
  } else {
    c->lock_fd_ = ::open(loop.backing_file.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat b;
    if (c->lock_fd_ < 0) {
      why = strerror(errno);
    } else if (::fstat(c->lock_fd_, &b) != 0 || !S_ISREG(b.st_mode) ||
               static_cast<uint64_t>(b.st_dev) != loop.backing_dev ||
               static_cast<uint64_t>(b.st_ino) != loop.backing_ino) {
      why = "that path is now another file (the backing file was unlinked or renamed)";
      ::close(std::exchange(c->lock_fd_, -1));
    }
  }
  if (!why.empty()) {
    *warning = absl::StrFormat(
        "cannot lock the backing file %s of %s (%s): only the exclusive open of %s "
        "guards against other writers",
        loop.backing_file, dev_name, why, image);
  } else {
    if (absl::Status s = c->LockFile(absl::StrFormat("the backing file %s of %s",
                                                     loop.backing_file, image));
        !s.ok())
      return s;
  }
  if (loop.known_identity) {
    // Other loop devices over the same file: claimed like an image file's.
    if (absl::Status s = c->ClaimLoops(static_cast<dev_t>(loop.backing_dev),
                                       static_cast<ino_t>(loop.backing_ino), loop.rdev, image);
        !s.ok())
      return s;
  }
  return c;
}

}  // namespace ext4dio
