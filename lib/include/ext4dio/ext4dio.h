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
  EXT4DIO_E_NEEDS_ALLOCATION = 1008, /* the write touches a hole, an unwritten
                                        extent or EOF, and there is no kernel
                                        path (image mode): nothing written */
  EXT4DIO_E_IN_USE = 1009,       /* the image is mounted, locked by another
                                    writer, or MMP shows it in use */
  EXT4DIO_E_WRITE_REFUSED = 1010, /* writing is unsafe: journal needs recovery,
                                     errors flag, unknown or shared-block
                                     features, immutable/append-only file,
                                     read-only image */
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

/* ---- Files: direct I/O at the mapped device offsets ------------------
 *
 * Image mode (image file or unmounted device): the file's map is read and
 * validated at open; a write is planned in full before any byte moves and
 * refused as a whole (-EXT4DIO_E_NEEDS_ALLOCATION, nothing written) when it
 * touches a hole, an unwritten extent or EOF. Writers lock the image (flock,
 * or O_EXCL for a device) and are refused on a mounted image, a journal that
 * needs recovery, the errors flag, MMP in use, unknown features,
 * immutable or append-only files, and files whose blocks another inode also
 * claims (see EXT4DIO_OPEN_SKIP_OWNERSHIP_CHECK). Image mode never changes metadata: the
 * inode's mtime stays as it was.
 *
 * Mounted mode (target.path of a file on a mounted ext4, no image): the
 * library holds the file's only descriptor and a write lease (a read lease
 * for read-only opens); overwrites of written extents go to the device,
 * everything else through the kernel (see ext4dio_pwrite). Do not open the
 * file yourself while it is open here: use the handle (pread, fsync,
 * truncate, fallocate). Opening the same file again in this process returns
 * a handle sharing the first one's lease (-EXT4DIO_E_IN_USE when its write
 * options differ). Another process's open is let in within milliseconds;
 * I/O then continues through the kernel until the lease can be retaken.
 * Refused: encrypted, verity, DAX, inline-data, data-journaled files
 * (-EXT4DIO_E_UNSUPPORTED_FILE); writers of immutable files and read-only
 * mounts (-EXT4DIO_E_WRITE_REFUSED). docs/safety.md has the full contract.
 *
 * Thread-safety: ext4dio_pwrite/pread/sync on one file from any number of
 * threads at once (each concurrent caller gets its own ring). A queue is
 * used by one thread at a time.
 */
struct ext4dio_file;

#define EXT4DIO_OPEN_WRITE 0x1u         /* open for writing */
#define EXT4DIO_OPEN_DSYNC 0x2u         /* every device write with FUA */
#define EXT4DIO_OPEN_SQPOLL 0x4u        /* io_uring SQPOLL thread per ring */
#define EXT4DIO_OPEN_NO_FALLBACK 0x8u   /* mounted: a write that needs the kernel
                                           path fails (nothing written) */
#define EXT4DIO_OPEN_REAP_PROMPTLY 0x10u /* accepted, no effect: every ring
   now posts completions cheaply (io_uring COOP_TASKRUN) and a lease break
   still never waits for an idle queue owner (docs/safety.md, item 10). */
#define EXT4DIO_OPEN_SKIP_OWNERSHIP_CHECK 0x20u /* image mode, writers: skip the
   inode scan that refuses a file whose blocks another inode (or the bad-blocks
   inode) also claims (-EXT4DIO_E_CORRUPT_MAP naming the block and the inode);
   the file's warning then says it was skipped. No effect in mounted mode. */

enum ext4dio_backend {
  EXT4DIO_BACKEND_AUTO = 0,  /* io_uring unless unavailable or the device is
                                bio-based (io_uring would punt to workers) */
  EXT4DIO_BACKEND_URING = 1,
  EXT4DIO_BACKEND_SYNC = 2   /* preadv2/pwritev2 */
};

struct ext4dio_open_opts {
  size_t struct_size;
  uint32_t flags;        /* EXT4DIO_OPEN_* */
  uint32_t queue_depth;  /* per ring; 0 means 32 */
  uint32_t backend;      /* enum ext4dio_backend */
  uint64_t max_io;       /* split device requests at this size; 0: device's */
};
void ext4dio_open_opts_init(struct ext4dio_open_opts *opts);

int ext4dio_open(const struct ext4dio_target *target,
                 const struct ext4dio_open_opts *opts, struct ext4dio_file **out);
/* Waits for nothing (callers finish their I/O first); releases everything. */
void ext4dio_close(struct ext4dio_file *file);

/* Image mode: all of [offset, offset+n) or an error: returns n, or a
 * negative code with the failed file offset and length in
 * ext4dio_last_error().
 * Mounted mode: pieces that need the filesystem (holes, unwritten extents,
 * past EOF) go through the kernel, blocking the fast path meanwhile; pieces
 * run in file order and stop at the first failure, so a failure after some
 * bytes were written returns that shorter count, like pwrite(2). */
int64_t ext4dio_pwrite(struct ext4dio_file *file, const void *buf, size_t n,
                       uint64_t offset);
/* Up to n bytes; holes and unwritten extents read as zeros; short at EOF. */
int64_t ext4dio_pread(struct ext4dio_file *file, void *buf, size_t n,
                      uint64_t offset);
/* Makes written data durable: flushes the device's write cache; mounted,
 * also sets mtime/ctime after fast-path writes and fdatasyncs the file when
 * the kernel path allocated since the last sync. */
int ext4dio_sync(struct ext4dio_file *file);
/* Mounted mode: fsync(2) of the file plus a device cache flush (image mode:
 * as ext4dio_sync). */
int ext4dio_fsync(struct ext4dio_file *file);
/* Mounted mode, through the kernel (the application cannot open its own
 * file while ext4dio holds the lease), followed by a re-read of the map.
 * Image mode refuses: it never changes metadata. */
int ext4dio_truncate(struct ext4dio_file *file, uint64_t size);
#define EXT4DIO_FALLOC_KEEP_SIZE 0x1u   /* do not change the size */
#define EXT4DIO_FALLOC_PUNCH_HOLE 0x2u  /* free the range (implies KEEP_SIZE) */
#define EXT4DIO_FALLOC_ZERO_RANGE 0x4u  /* zero the range (unwritten extents) */
int ext4dio_fallocate(struct ext4dio_file *file, uint32_t mode, uint64_t offset,
                      uint64_t length);

/* Why a file's fast path is off (ext4dio_file_info.fast_path_reason): the
 * code beside the warning's text. ext4dio_fast_path_reason_name() names it. */
enum ext4dio_fast_path_reason {
  EXT4DIO_FAST_PATH_NONE = 0,        /* on (image mode: always) */
  EXT4DIO_FAST_PATH_NO_DEVICE = 1,   /* no device node for the filesystem
                                        (e.g. a container without its /dev) */
  EXT4DIO_FAST_PATH_DEVICE_UNAVAILABLE = 2, /* the device cannot be opened */
  EXT4DIO_FAST_PATH_NO_PRIVILEGE = 3, /* no permission to the device or its
                                         metadata, or no write lease (not the
                                         file's owner, no CAP_LEASE) */
  EXT4DIO_FAST_PATH_DEVICE_REFUSED = 4, /* the kernel refuses writes to a
                                           mounted block device (EBUSY) */
  EXT4DIO_FAST_PATH_LEASE_UNAVAILABLE = 5, /* open elsewhere when opened
                                              here: retried until it is not */
  EXT4DIO_FAST_PATH_LEASE_BROKEN = 6, /* another process opened or truncated
                                         it: retried until it is free again */
  EXT4DIO_FAST_PATH_APPEND_ONLY = 7,  /* chattr +a: writes at EOF only */
  EXT4DIO_FAST_PATH_FS_STOPPED = 8,   /* read-only remount, shutdown or
                                         filesystem errors */
  EXT4DIO_FAST_PATH_MAP_MISMATCH = 9, /* a re-read map disagreed with FIEMAP */
  EXT4DIO_FAST_PATH_REMAP_FAILED = 10, /* re-reading the map failed */
  EXT4DIO_FAST_PATH_CACHE_FAILED = 11, /* writing back and dropping the
                                          page cache failed */
  EXT4DIO_FAST_PATH_RESTART_REFUSED = 12 /* retaking it after a lease break
                                            failed: the file or filesystem
                                            changed meanwhile (the warning
                                            says how) */
};
/* "none", "no-device", ... ; "unknown" for a code this library lacks. */
const char *ext4dio_fast_path_reason_name(uint32_t reason);

struct ext4dio_file_info {
  size_t struct_size;
  uint64_t size;              /* i_size */
  uint32_t block_size;
  uint32_t offset_align;      /* device offsets/lengths that avoid RMW */
  uint32_t memory_align;      /* buffer addresses that avoid bouncing */
  uint32_t backend;           /* the backend in use: URING or SYNC */
  uint64_t max_io;
  int fast_path;              /* 1: I/O goes straight to the device now */
  const char *warning;        /* NULL or text (why the fast path is off);
                                 valid until the next call on this file */
  int mounted;                /* 1: a file on a mounted filesystem */
  uint32_t fast_path_reason;  /* enum ext4dio_fast_path_reason: why
                                 fast_path is 0, read with `warning` (NONE
                                 while it is 1). Part of the 0.1 base
                                 struct: it fills what was tail padding, so
                                 sizeof did not change. A later field must
                                 grow the struct past 64 bytes, or
                                 struct_size cannot tell callers apart. */
};
void ext4dio_file_info_init(struct ext4dio_file_info *info);
int ext4dio_file_get_info(const struct ext4dio_file *file, struct ext4dio_file_info *info);
/* The file's current map, owned by the file: valid until the next
 * ext4dio_file_map call on this file (from any thread) or ext4dio_close.
 * Mounted mode: call again after writes for a fresh one. */
const struct ext4dio_map *ext4dio_file_map(const struct ext4dio_file *file);
/* A snapshot of the file's current map with a lifetime of its own: the
 * caller frees it with ext4dio_map_free (also after ext4dio_close). */
int ext4dio_file_map_snapshot(const struct ext4dio_file *file, struct ext4dio_map **out);

struct ext4dio_stats {
  size_t struct_size;
  uint64_t fast_bytes, fast_requests;         /* direct device writes */
  uint64_t rmw_bytes, rmw_requests;           /* read-modify-write of a unit */
  uint64_t buffered_bytes, buffered_requests; /* non-direct writes */
  uint64_t kernel_bytes, kernel_requests;     /* kernel path (mounted mode) */
  uint64_t read_bytes, read_requests;         /* device reads */
  uint64_t zero_bytes;                        /* holes/unwritten read */
  uint64_t kernel_read_bytes;                 /* reads through the kernel */
  uint64_t lease_breaks;    /* fast path given up for another opener */
  uint64_t remaps;          /* ranges re-mapped after kernel-path writes */
};
void ext4dio_stats_init(struct ext4dio_stats *stats);
int ext4dio_file_get_stats(const struct ext4dio_file *file, struct ext4dio_stats *stats);

enum ext4dio_piece_kind {
  EXT4DIO_PIECE_FAST = 0,      /* aligned direct device write */
  EXT4DIO_PIECE_RMW = 1,       /* read-modify-write of a unit inside the file */
  EXT4DIO_PIECE_BUFFERED = 2,  /* non-direct write of just these bytes */
  EXT4DIO_PIECE_KERNEL = 3,    /* through the kernel (mounted mode) */
  EXT4DIO_PIECE_REFUSED = 4    /* needs allocation: not writable here */
};
struct ext4dio_piece {
  uint64_t file_offset;
  uint64_t length;
  uint64_t device_offset;  /* FAST, RMW, BUFFERED */
  uint32_t kind;           /* enum ext4dio_piece_kind */
};
/* The plan for writing [offset, offset+length), including REFUSED pieces,
 * without writing. Fills at most max and sets *n to the total count (call
 * again with more room when *n > max). */
int ext4dio_plan_write(const struct ext4dio_file *file, uint64_t offset, uint64_t length,
                       struct ext4dio_piece *pieces, size_t max, size_t *n);
/* The first byte at or after offset (up to offset+length) that cannot be
 * written here (hole, unwritten extent, EOF). */
uint64_t ext4dio_writable_until(const struct ext4dio_file *file, uint64_t offset,
                                uint64_t length);

/* ---- Asynchronous queues ------------------------------------------------
 * One ring per queue; submit with a cookie, reap completions. In mounted
 * mode, aligned writes into holes and unwritten extents inside EOF go to
 * the ring as O_DIRECT writes on the file (the kernel allocates) beside the
 * device I/O. Blocking inside submit (then completing like the rest): a
 * write with unaligned pieces, and in mounted mode a request that needs the
 * locked kernel path (past EOF, unaligned next to a hole), a read of a
 * range the kernel path wrote that is not re-mapped yet, or any request
 * while the fast path is off (no lease). Submit also waits when the ring is
 * full. Closing waits for what is in flight. */
struct ext4dio_queue;

#define EXT4DIO_OP_READ 0u
#define EXT4DIO_OP_WRITE 1u

struct ext4dio_request {
  uint32_t op;        /* EXT4DIO_OP_* */
  void *buf;
  uint64_t length;
  uint64_t offset;
  uint64_t cookie;
};
struct ext4dio_completion {
  uint64_t cookie;
  int64_t result;        /* bytes, or a negative code */
  uint64_t error_offset; /* file offset and length that failed */
  uint64_t error_length;
};

/* A queue keeps its file open: ext4dio_close may come before
 * ext4dio_queue_close (the file is released with its last queue), and a
 * queue stays usable after its file's handle was closed. */
int ext4dio_queue_open(struct ext4dio_file *file, uint32_t depth, struct ext4dio_queue **out);
void ext4dio_queue_close(struct ext4dio_queue *queue);
/* Registers [base, base+bytes) with the queue's ring as a fixed buffer
 * (io_uring): later requests whose buffers lie inside it skip per-I/O page
 * pinning. Nothing may be outstanding. A no-op with the sync backend. */
int ext4dio_queue_register_buffers(struct ext4dio_queue *queue, void *base, size_t bytes);
/* 0 when started; a negative code when the request was not started (nothing
 * written), e.g. -EXT4DIO_E_NEEDS_ALLOCATION. */
int ext4dio_queue_submit(struct ext4dio_queue *queue, const struct ext4dio_request *request);
/* Starts requests[0..n) in order and hands their device I/O to the ring
 * together (one io_uring_enter for the batch when none blocks). Returns how
 * many were started: n, or fewer when requests[returned] was refused
 * (nothing of it written; ext4dio_last_error() says why) -- the ones after
 * it were not looked at. A negative code when requests[0] was refused. */
int ext4dio_queue_submit_batch(struct ext4dio_queue *queue,
                               const struct ext4dio_request *requests, size_t n);
/* Waits for at least min (bounded by what is outstanding) and stores up to
 * max completions; returns how many, or a negative code. */
int ext4dio_queue_reap(struct ext4dio_queue *queue, struct ext4dio_completion *out,
                       size_t max, size_t min);
/* A pollable descriptor for event loops (poll, epoll, io_uring poll): an
 * eventfd that becomes readable (POLLIN) whenever a completion is ready for
 * ext4dio_queue_reap, on every backend (io_uring_register_eventfd on the
 * queue's ring; the sync backend and blocking paths signal it themselves).
 * Made at the first call (later calls return the same one), owned by the
 * queue and closed by ext4dio_queue_close: do not close it. Its count is not
 * a number of completions: after a wakeup, read(2) 8 bytes from it to
 * re-arm it (it is non-blocking) and reap with min 0 until reap returns
 * fewer than max. Returns the descriptor or a negative code. */
int ext4dio_queue_event_fd(struct ext4dio_queue *queue);

/* Text for a code returned by this library (negative) or an errno. */
const char *ext4dio_strerror(int code);
/* The full message of the calling thread's last failed call ("" if none). */
const char *ext4dio_last_error(void);
/* The library's version string, e.g. "0.1.0". */
const char *ext4dio_version(void);
/* The running library's version as a number: EXT4DIO_VERSION_NUMBER
 * (version.h) of the library that was loaded, which may be newer than the
 * headers compiled against. Compare with EXT4DIO_MAKE_VERSION(a, b, c), e.g.
 * ext4dio_version_number() >= EXT4DIO_MAKE_VERSION(0, 2, 0). */
int ext4dio_version_number(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* EXT4DIO_EXT4DIO_H_ */
