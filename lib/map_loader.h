// MapLoader: from "a file somewhere" (an image + path/inode, or a file on a
// mounted ext4) to a validated ExtentMap and what is known about it.
//
// Thread-safety: LoadMap may be called from any number of threads.
#ifndef EXT4DIO_LIB_MAP_LOADER_H_
#define EXT4DIO_LIB_MAP_LOADER_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "extent_map.h"
#include "os.h"

namespace ext4dio {

struct Target {
  std::string image;          // empty: mounted mode, `path` is a host path
  uint64_t image_offset = 0;
  std::string path;           // image mode: path inside the filesystem
  uint64_t inode = 0;         // image mode: used when nonzero
};

enum class MapSource { kImage, kDevice, kFiemap };

struct LoadedMap {
  ExtentMap map;              // on-disk leaf extents, as stored
  uint64_t inode = 0;
  uint32_t cluster_size = 0;
  bool extent_tree = true;
  uint32_t depth = 0;
  MapSource source = MapSource::kImage;
  std::string device;         // what was read: image file or /dev node
  std::string warning;        // empty, or why to trust the map less
  uint32_t inode_flags = 0;   // i_flags (0 when only FIEMAP was read)
  // Image mode: OK, or why writing file data offline would be unsafe
  // (filesystem state, features, immutable/append-only file).
  absl::Status write_status;
};

// How many times a mounted file's on-disk map and FIEMAP may disagree (the
// file changing while we look) before the disagreement is reported.
inline constexpr int kCrossCheckAttempts = 3;

struct LoadOptions {
  // Image mode: the map is for writing, so write_status also covers block
  // ownership (no other inode claims the file's blocks: an inode scan).
  bool for_write = false;
  // ... except when the caller asked to skip that scan: then `warning`
  // says so.
  bool skip_ownership_check = false;
};

absl::StatusOr<LoadedMap> LoadMap(const Target& target, const LoadOptions& options = {});

class Ext4Reader;
struct MountedFileInfo;

// Mounted mode, for a caller that keeps its own descriptor `fd` of the file
// and a live reader of its device: the on-disk map cross-checked with FIEMAP
// (retried kCrossCheckAttempts times while the file changes); the file's
// system calls (FIEMAP, stat) through `os`.
absl::StatusOr<LoadedMap> LoadMountedMap(Os& os, Ext4Reader& reader, int fd,
                                         const MountedFileInfo& mf);
// The map from FIEMAP alone (the device cannot be read), with `warning`.
absl::StatusOr<LoadedMap> LoadFiemapOnly(Os& os, int fd, const MountedFileInfo& mf,
                                         std::string warning);

// The same through RealOs().
inline absl::StatusOr<LoadedMap> LoadMountedMap(Ext4Reader& reader, int fd,
                                                const MountedFileInfo& mf) {
  return LoadMountedMap(*RealOs(), reader, fd, mf);
}
inline absl::StatusOr<LoadedMap> LoadFiemapOnly(int fd, const MountedFileInfo& mf,
                                                std::string warning) {
  return LoadFiemapOnly(*RealOs(), fd, mf, std::move(warning));
}

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_MAP_LOADER_H_
