/* ext4dio.h — the C API of libext4dio, and its ABI.
 *
 * libext4dio reads a regular file's ext4 extent tree read-only (libext2fs),
 * maps file offsets to block-device offsets, and does the file's I/O straight
 * on the device.
 *
 * Conventions:
 *  1. Handles are opaque; every handle made by a function here is released by
 *     the matching *_free / *_close function, which accepts NULL.
 *  2. Functions that can fail return an int: 0 (or a count) on success, a
 *     negative errno (-ENOENT, -EACCES, ...) or a negative library code
 *     (-EXT4DIO_E_*) on failure. errno is not part of the contract.
 *  3. ext4dio_strerror(code) names the code; ext4dio_last_error() returns the
 *     full message of the last failure on the calling thread (which file,
 *     which extent, which block), valid until that thread's next call.
 *  4. Structs passed in carry their own size in `struct_size` (set by the
 *     *_init function) so that fields can be added without breaking callers.
 *  5. A map handle is immutable: any number of threads may query it at once.
 *     Loading is thread-safe.
 */
#ifndef EXT4DIO_EXT4DIO_H_
#define EXT4DIO_EXT4DIO_H_

#include <stddef.h>
#include <stdint.h>

#include "ext4dio/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Library error codes, returned negated. They start above any errno. */
enum ext4dio_error {
  EXT4DIO_E_NOT_EXT4 = 1000,     /* not an ext2/ext3/ext4 filesystem */
  EXT4DIO_E_CORRUPT_FS = 1001,   /* superblock or group descriptors invalid */
  EXT4DIO_E_TRUNCATED = 1002,    /* filesystem extends past its image/device */
  EXT4DIO_E_CORRUPT_MAP = 1003,  /* the file's extent tree or block map failed
                                    validation (the map is not returned) */
  EXT4DIO_E_UNSUPPORTED_FILE = 1004, /* inline data, encrypted, verity,
                                        data journaling, not a regular file */
  EXT4DIO_E_UNSUPPORTED_FS = 1005,   /* features this library cannot read */
  EXT4DIO_E_MAP_MISMATCH = 1006, /* on-disk tree and FIEMAP disagree */
  EXT4DIO_E_NOT_IN_USE = 1007,   /* the inode number is not an allocated inode */
  EXT4DIO_E_INTERNAL = 1099      /* a bug in libext4dio */
};

/* Where a file is. Image mode: `image` names an image file or an unmounted
 * block device; `path` is then a path inside that filesystem (symlinks are
 * followed) or `inode` a nonzero inode number. Mounted mode: `image` is NULL
 * and `path` is a file on a mounted ext4. */
struct ext4dio_target {
  size_t struct_size;
  const char *image;
  uint64_t image_offset; /* byte offset of the filesystem inside `image` */
  const char *path;
  uint64_t inode;
};
void ext4dio_target_init(struct ext4dio_target *target);

/* How a map was obtained. */
enum ext4dio_map_source {
  EXT4DIO_SOURCE_IMAGE = 0,  /* libext2fs on an image file or unmounted device */
  EXT4DIO_SOURCE_DEVICE = 1, /* libext2fs on a mounted fs's device; agrees
                                with FIEMAP */
  EXT4DIO_SOURCE_FIEMAP = 2  /* FIEMAP alone (the device was unreadable):
                                not validated against on-disk metadata */
};

struct ext4dio_map_info {
  size_t struct_size;
  uint32_t block_size;      /* filesystem block size, bytes */
  uint32_t cluster_size;    /* allocation unit, bytes (== block_size unless
                               bigalloc) */
  uint64_t size;            /* i_size, bytes */
  uint64_t inode;
  uint64_t extent_count;    /* on-disk leaf extents (runs, for block maps) */
  uint64_t device_offset;   /* byte offset of the filesystem in the device */
  uint32_t source;          /* enum ext4dio_map_source */
  uint32_t extent_tree;     /* 1: extent tree, 0: ext2/ext3 block map */
  const char *device;       /* the image or device read (owned by the map) */
  const char *warning;      /* NULL, or why the map deserves less trust */
};
void ext4dio_map_info_init(struct ext4dio_map_info *info);

#define EXT4DIO_EXTENT_UNWRITTEN 0x1u

/* One on-disk leaf extent, in filesystem blocks counted from the start of the
 * filesystem (not clusters). */
struct ext4dio_extent {
  uint64_t logical_block;
  uint64_t physical_block;
  uint64_t blocks;
  uint32_t flags; /* EXT4DIO_EXTENT_* */
};

enum ext4dio_segment_kind {
  EXT4DIO_SEG_MAPPED = 0,    /* written data at device_offset */
  EXT4DIO_SEG_UNWRITTEN = 1, /* allocated, reads as zeros; device_offset set */
  EXT4DIO_SEG_HOLE = 2,      /* nothing allocated, reads as zeros */
  EXT4DIO_SEG_PAST_EOF = 3   /* at or beyond i_size */
};

/* A byte range of the file and where it lives. Physically contiguous
 * extents of one kind are merged into one segment. */
struct ext4dio_segment {
  uint64_t file_offset;
  uint64_t length;
  uint64_t device_offset; /* valid for MAPPED and UNWRITTEN */
  uint32_t kind;          /* enum ext4dio_segment_kind */
};

struct ext4dio_map;

/* Reads and validates the file's map. On failure *out is NULL and nothing is
 * half-built: a map that fails validation is an error, never a partial map.
 * In mounted mode the on-disk tree is cross-checked against FIEMAP (after
 * the kernel writes back dirty pages); a disagreement is
 * -EXT4DIO_E_MAP_MISMATCH naming the first difference. */
int ext4dio_map_load(const struct ext4dio_target *target,
                     struct ext4dio_map **out);
void ext4dio_map_free(struct ext4dio_map *map);

int ext4dio_map_get_info(const struct ext4dio_map *map,
                         struct ext4dio_map_info *info);
/* The index-th on-disk leaf extent, in logical order. -ERANGE past the end. */
int ext4dio_map_extent(const struct ext4dio_map *map, uint64_t index,
                       struct ext4dio_extent *extent);
/* Describes [offset, offset + length) as consecutive segments. Fills at most
 * max_segments and stores their number in *n_segments; when the range needs
 * more, query again from the end of the last one. -EINVAL when offset +
 * length overflows. */
int ext4dio_map_query(const struct ext4dio_map *map, uint64_t offset,
                      uint64_t length, struct ext4dio_segment *segments,
                      size_t max_segments, size_t *n_segments);

/* Text for a code returned by this library (negative) or an errno. */
const char *ext4dio_strerror(int code);
/* The full message of the calling thread's last failed call ("" if none). */
const char *ext4dio_last_error(void);
/* The library's version string, e.g. "0.1.0". */
const char *ext4dio_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* EXT4DIO_EXT4DIO_H_ */
