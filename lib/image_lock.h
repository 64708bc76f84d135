// Exclusion for image-mode writers: one claim per writer that no other
// writer — through the image file or through a loop device over it — and no
// mount, in any mount namespace, can get past while it lives.
//
// The kernel offers two independent exclusion mechanisms and programs use
// either: locks on the image file (flock; OFD or POSIX record locks, which
// qemu takes on byte ranges), and exclusive opens of block devices (O_EXCL,
// which every mount of a block device holds, even lazily unmounted or in a
// namespace this process cannot see). A claim takes both for the image:
//  * on an image file: flock + an OFD write lock over the whole file, and an
//    O_EXCL descriptor of every loop device backed by the file (found by
//    device and inode, so a deleted or renamed backing path still matches);
//    a loop device's exclusive claim also covers its partitions;
//  * on a loop device (already opened O_EXCL by the caller): the same locks
//    on its backing file, and O_EXCL on any other loop device over it.
//
// Thread-safety: free functions, no shared state; an ImageClaim is owned by
// one File.
#ifndef EXT4DIO_LIB_IMAGE_LOCK_H_
#define EXT4DIO_LIB_IMAGE_LOCK_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ext4dio {

// EXT4DIO_E_UNSUPPORTED_FILE unless `image` is a regular file or a block
// device. Only stat()s it: opening a FIFO for reading blocks until a writer
// comes, so this must come before any open of an image.
absl::Status CheckImageKind(const std::string& image);

// A bound loop device.
struct LoopDevice {
  std::string name;          // "loop3"
  std::string node;          // "/dev/loop3", or "" when there is no node
  dev_t rdev = 0;            // its device number
  std::string backing_file;  // the kernel's path (may end in " (deleted)")
  // The backing file's st_dev/st_ino (LOOP_GET_STATUS64); known_identity is
  // false when the node could not be opened to ask (then only a backing
  // path that still resolves identifies the file).
  bool known_identity = false;
  uint64_t backing_dev = 0;
  uint64_t backing_ino = 0;
};

// Every bound loop device (from /sys/block/loop*).
std::vector<LoopDevice> ListLoopDevices();

// The loop devices whose backing file is (dev, ino).
std::vector<LoopDevice> LoopDevicesBackedBy(dev_t dev, ino_t ino);

// Held for a writer's life; dropping it releases every lock and exclusive
// descriptor at once (they live on descriptors of its own that no io_uring
// ever references, so the release is synchronous).
class ImageClaim {
 public:
  // `fd` is the writer's descriptor of `image` (a regular file, or a block
  // device opened with O_EXCL). EXT4DIO_E_IN_USE when another writer, a
  // lock or a mount holds the image, naming what holds it. `warning` is set
  // when only part of the claim could be taken (a loop device whose backing
  // file cannot be opened: then its O_EXCL alone guards it).
  static absl::StatusOr<std::unique_ptr<ImageClaim>> Acquire(int fd, const std::string& image,
                                                            std::string* warning);
  ~ImageClaim();
  ImageClaim(const ImageClaim&) = delete;
  ImageClaim& operator=(const ImageClaim&) = delete;

 private:
  ImageClaim() = default;
  // Locks `lock_fd_` (flock, then an OFD write lock over the whole file).
  absl::Status LockFile(const std::string& what);
  // O_EXCL on every loop device backed by (dev, ino) except `skip`.
  absl::Status ClaimLoops(dev_t dev, ino_t ino, dev_t skip, const std::string& image);

  int lock_fd_ = -1;               // the image (or backing) file, locked
  std::vector<int> exclusive_;     // O_EXCL descriptors of loop devices
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_IMAGE_LOCK_H_
