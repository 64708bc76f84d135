// The exported C functions: thin adapters from the C ABI to the C++ modules.
// Nothing here may throw across the boundary.
#include <cerrno>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "errors.h"
#include "ext4dio/ext4dio.h"
#include "map_loader.h"

#define EXT4DIO_EXPORT extern "C" __attribute__((visibility("default")))

struct ext4dio_map {
  ext4dio::LoadedMap loaded;
};

namespace {

thread_local std::string last_error;

int Fail(const absl::Status& status) {
  last_error = std::string(status.message());
  return ext4dio::CodeOf(status);
}

int Fail(int code, const char* message) {
  last_error = message;
  return code;
}

// Copies the caller-declared prefix of `full` into `out` (struct_size
// protocol: older callers get the fields they know).
template <typename T>
int CopyOut(const T& full, T* out) {
  if (out == nullptr || out->struct_size == 0) return Fail(-EINVAL, "struct_size not set");
  const size_t n = std::min(out->struct_size, sizeof(T));
  T tmp = full;
  tmp.struct_size = n;
  std::memcpy(out, &tmp, n);
  return 0;
}

}  // namespace

EXT4DIO_EXPORT void ext4dio_target_init(ext4dio_target* t) {
  std::memset(t, 0, sizeof *t);
  t->struct_size = sizeof *t;
}

EXT4DIO_EXPORT void ext4dio_map_info_init(ext4dio_map_info* info) {
  std::memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
}

EXT4DIO_EXPORT int ext4dio_map_load(const ext4dio_target* t, ext4dio_map** out) {
  if (out == nullptr) return Fail(-EINVAL, "out is NULL");
  *out = nullptr;
  if (t == nullptr || t->struct_size < offsetof(ext4dio_target, inode) + sizeof(uint64_t))
    return Fail(-EINVAL, "target is NULL or its struct_size is too small");
  try {
    ext4dio::Target target;
    if (t->image) target.image = t->image;
    target.image_offset = t->image_offset;
    if (t->path) target.path = t->path;
    target.inode = t->inode;
    auto loaded = ext4dio::LoadMap(target);
    if (!loaded.ok()) return Fail(loaded.status());
    *out = new ext4dio_map{std::move(*loaded)};
    return 0;
  } catch (const std::bad_alloc&) {
    return Fail(-ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    return Fail(-EXT4DIO_E_INTERNAL, e.what());
  }
}

EXT4DIO_EXPORT void ext4dio_map_free(ext4dio_map* map) { delete map; }

EXT4DIO_EXPORT int ext4dio_map_get_info(const ext4dio_map* map,
                                        ext4dio_map_info* info) {
  if (map == nullptr) return Fail(-EINVAL, "map is NULL");
  const ext4dio::LoadedMap& m = map->loaded;
  ext4dio_map_info full;
  ext4dio_map_info_init(&full);
  full.block_size = m.map.block_size();
  full.cluster_size = m.cluster_size;
  full.size = m.map.file_size();
  full.inode = m.inode;
  full.extent_count = m.map.extent_count();
  full.device_offset = m.map.geometry().device_offset;
  full.source = static_cast<uint32_t>(m.source);
  full.extent_tree = m.extent_tree ? 1 : 0;
  full.device = m.device.c_str();
  full.warning = m.warning.empty() ? nullptr : m.warning.c_str();
  return CopyOut(full, info);
}

EXT4DIO_EXPORT int ext4dio_map_extent(const ext4dio_map* map, uint64_t index,
                                      ext4dio_extent* extent) {
  if (map == nullptr || extent == nullptr) return Fail(-EINVAL, "NULL argument");
  if (index >= map->loaded.map.extent_count())
    return Fail(-ERANGE, "extent index past the last extent");
  const ext4dio::Extent e = map->loaded.map.ExtentAt(index);
  extent->logical_block = e.logical;
  extent->physical_block = e.physical;
  extent->blocks = e.length;
  extent->flags = e.unwritten ? EXT4DIO_EXTENT_UNWRITTEN : 0;
  return 0;
}

EXT4DIO_EXPORT int ext4dio_map_query(const ext4dio_map* map, uint64_t offset,
                                     uint64_t length, ext4dio_segment* segments,
                                     size_t max_segments, size_t* n_segments) {
  if (map == nullptr || n_segments == nullptr || (segments == nullptr && max_segments))
    return Fail(-EINVAL, "NULL argument");
  *n_segments = 0;
  if (length > UINT64_MAX - offset) return Fail(-EINVAL, "offset + length overflows");
  const ext4dio::ExtentMap& m = map->loaded.map;
  uint64_t pos = offset;
  const uint64_t end = offset + length;
  size_t n = 0;
  while (pos < end && n < max_segments) {
    const ext4dio::Segment s = m.SegmentAt(pos, end - pos);
    segments[n].file_offset = s.offset;
    segments[n].length = s.length;
    segments[n].device_offset = s.device_offset;
    segments[n].kind = static_cast<uint32_t>(s.kind);
    ++n;
    pos += s.length;
  }
  *n_segments = n;
  return 0;
}

EXT4DIO_EXPORT const char* ext4dio_strerror(int code) {
  const int c = code < 0 ? -code : code;
  switch (c) {
    case 0: return "Success";
    case EXT4DIO_E_NOT_EXT4: return "Not an ext2/ext3/ext4 filesystem";
    case EXT4DIO_E_CORRUPT_FS: return "Filesystem superblock or group descriptors corrupt";
    case EXT4DIO_E_TRUNCATED: return "Filesystem extends past the end of its image or device";
    case EXT4DIO_E_CORRUPT_MAP: return "File's extent map failed validation";
    case EXT4DIO_E_UNSUPPORTED_FILE: return "File kind not supported";
    case EXT4DIO_E_UNSUPPORTED_FS: return "Filesystem features not supported";
    case EXT4DIO_E_MAP_MISMATCH: return "On-disk extent map and FIEMAP disagree";
    case EXT4DIO_E_NOT_IN_USE: return "Inode not in use";
    case EXT4DIO_E_INTERNAL: return "Internal error in libext4dio";
    default:
      if (c < 1000) return strerrordesc_np(c) ? strerrordesc_np(c) : "Unknown error";
      return "Unknown ext4dio error";
  }
}

EXT4DIO_EXPORT const char* ext4dio_last_error(void) { return last_error.c_str(); }

EXT4DIO_EXPORT const char* ext4dio_version(void) { return EXT4DIO_VERSION_STRING; }
