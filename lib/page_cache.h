// PageCache: keeping the kernel's cache of a mounted file coherent with the
// fast path, which writes the device underneath it.
//
// The kernel's own O_DIRECT write invalidates the file's cached pages and,
// where it cannot (a page pinned by a pipe that holds spliced data, by an
// mmap, by get_user_pages), falls back to a buffered write. ext4dio writes
// the device directly, so it must do the same by hand: drop the file's
// pages before the fast path writes, ASK the kernel what is still cached
// (never assume the drop worked: a large folio straddling the range, or a
// pinned page, survives it), and keep the ranges that could not be dropped
// on the kernel path, whose writes go through those very pages.
//
// Thread-safety: free functions, no shared state.
#ifndef EXT4DIO_LIB_PAGE_CACHE_H_
#define EXT4DIO_LIB_PAGE_CACHE_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "os.h"
#include "ranges.h"

namespace ext4dio {

// Writes back and drops every cached page of `fd`'s file, then returns the
// ranges the page cache still holds, rounded out to `granule` (a power of
// two, at least the page size). An error when write-back fails or the
// cache cannot be asked (then nothing may be assumed about it).
absl::StatusOr<RangeList> DropFileCache(Os& os, int fd, uint64_t granule);

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_PAGE_CACHE_H_
