// Finding the block device and mount of a file on a mounted ext4.
//
// Thread-safety: free functions, no shared state.
#ifndef EXT4DIO_LIB_DEVICE_H_
#define EXT4DIO_LIB_DEVICE_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "os.h"

namespace ext4dio {

struct MountedFileInfo {
  int fd = -1;                 // O_RDONLY descriptor of the file (owned)
  std::string path;
  dev_t dev = 0;               // st_dev of the file
  uint64_t inode = 0;          // st_ino
  uint64_t size = 0;           // st_size
  uint32_t block_size = 0;     // statfs f_bsize
  uint64_t fsid = 0;           // statfs f_fsid, as one 64-bit value
  std::string device;          // /dev/NAME with st_rdev == dev ("" if none)
  std::string device_error;    // why `device` is empty
  std::string mount_point;
  std::string mount_options;   // per-mount options (mountinfo field 6)
  std::string super_options;   // filesystem options (after " - ")
  uint32_t flags = 0;          // FS_IOC_GETFLAGS (FS_APPEND_FL, ...)
  bool read_only = false;      // statvfs ST_RDONLY (also after errors=remount-ro)
  bool dax = false;            // STATX_ATTR_DAX

  MountedFileInfo() = default;
  MountedFileInfo(MountedFileInfo&& o) noexcept;
  MountedFileInfo& operator=(MountedFileInfo&& o) noexcept;
  ~MountedFileInfo();
};

// Opens `path` read-only and finds out where it lives. EXT4DIO_E_NOT_EXT4
// when it is not on ext4 (statfs magic); EXT4DIO_E_UNSUPPORTED_FILE when it
// is not a regular file (checked before any open that could block, e.g. on
// a FIFO). When the device node of st_dev cannot be found (a bind mount in
// a container with its own /dev), `device` is empty and `device_error` says
// why. With `path_fd` >= 0 (an O_PATH descriptor of `path`), that very
// inode is inspected, whatever the path names by now.
absl::StatusOr<MountedFileInfo> InspectMountedFile(const std::string& path, int path_fd = -1);

// Re-reads what may change while a file is open (per-file flags, read-only
// mount, DAX) into `m`, from the open descriptor `fd`.
absl::Status RefreshMountedFile(Os& os, int fd, MountedFileInfo& m);
inline absl::Status RefreshMountedFile(int fd, MountedFileInfo& m) {
  return RefreshMountedFile(*RealOs(), fd, m);
}

// Why the fast path must stop now even though the lease is held: the
// filesystem was remounted read-only (also errors=remount-ro) or shut down
// (EXT4_IOC_SHUTDOWN: every file operation fails with EIO). "" when neither.
// Two cheap system calls on the open descriptor `fd`.
std::string FilesystemStopped(Os& os, int fd);
inline std::string FilesystemStopped(int fd) { return FilesystemStopped(*RealOs(), fd); }

// Why I/O through ext4dio on this mounted file would be unsafe (or OK):
// EXT4DIO_E_UNSUPPORTED_FILE for encrypted, verity, DAX, inline-data and
// data-journaled files (per-file flag or data=journal mount) — their data
// is not (only) where the extent map says; with `write` also
// EXT4DIO_E_WRITE_REFUSED for immutable files and read-only mounts.
absl::Status MountedRefusal(const MountedFileInfo& m, bool write);

// The first line of a small text file (sysfs attributes), "" if unreadable.
std::string ReadFirstLine(const std::string& path);

// The /dev node of block device `dev`, checked by its st_rdev.
absl::StatusOr<std::string> DeviceNode(dev_t dev);

// What direct I/O on an image file or block device needs and allows.
struct DeviceGeometry {
  bool block_device = false;
  uint32_t offset_align = 4096;  // device offsets and lengths
  uint32_t memory_align = 4096;  // buffer addresses
  uint64_t max_io = 1 << 20;     // largest request worth sending
  bool bio_based = false;        // no blk-mq: io_uring punts to workers
  uint64_t size = 0;             // bytes
};

// Probes `fd` (opened on `path`): STATX_DIOALIGN for files (4096 when the
// filesystem does not say), logical block size, max_sectors_kb and blk-mq
// for block devices.
absl::StatusOr<DeviceGeometry> ProbeGeometry(int fd, const std::string& path);

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_DEVICE_H_
