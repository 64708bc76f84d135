// FIEMAP: the kernel's own answer to "where are this file's blocks".
// Used to map files when the device cannot be read and to cross-check the
// on-disk extent tree of a mounted file.
//
// Thread-safety: free functions; the ioctl is safe on a shared descriptor.
#ifndef EXT4DIO_LIB_FIEMAP_H_
#define EXT4DIO_LIB_FIEMAP_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "extent_map.h"
#include "os.h"

namespace ext4dio {

struct FiemapExtent {
  uint64_t logical = 0;   // bytes
  uint64_t physical = 0;  // bytes from the start of the device
  uint64_t length = 0;    // bytes
  uint32_t flags = 0;     // FIEMAP_EXTENT_*
};

// All extents of the open file `fd` (`name` for messages), the ioctl through
// `os`. With `sync` the kernel first writes back dirty pages, so delayed
// allocations are real.
absl::StatusOr<std::vector<FiemapExtent>> ReadFiemap(Os& os, int fd, bool sync,
                                                      absl::string_view name);

// The extents overlapping [offset, offset + length) (whole, not clipped).
absl::StatusOr<std::vector<FiemapExtent>> ReadFiemapRange(Os& os, int fd, uint64_t offset,
                                                           uint64_t length, bool sync,
                                                           absl::string_view name);

// The same through RealOs().
inline absl::StatusOr<std::vector<FiemapExtent>> ReadFiemap(int fd, bool sync,
                                                             absl::string_view name) {
  return ReadFiemap(*RealOs(), fd, sync, name);
}
inline absl::StatusOr<std::vector<FiemapExtent>> ReadFiemapRange(int fd, uint64_t offset,
                                                                  uint64_t length, bool sync,
                                                                  absl::string_view name) {
  return ReadFiemapRange(*RealOs(), fd, offset, length, sync, name);
}

// Converts to filesystem blocks of `block_size`, physical counted from the
// filesystem start, which lies `device_offset` bytes into the device.
// Refuses (EXT4DIO_E_UNSUPPORTED_FILE) inline, encoded, encrypted and
// unaligned extents; delayed or unknown ones give EXT4DIO_E_MAP_MISMATCH.
absl::StatusOr<std::vector<Extent>> FiemapToExtents(
    const std::vector<FiemapExtent>& fiemap, uint32_t block_size,
    uint64_t device_offset, absl::string_view name);

// "" when the two lists describe the same mapping once physically contiguous
// neighbours are merged; otherwise the first difference, in words.
std::string FirstDifference(const std::vector<Extent>& on_disk,
                            const std::vector<Extent>& fiemap);

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_FIEMAP_H_
