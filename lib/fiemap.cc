#include "fiemap.h"

#include <linux/fiemap.h>
#include <linux/fs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_format.h"
#include "errors.h"
#include "ext4_reader.h"

namespace ext4dio {

absl::StatusOr<std::vector<FiemapExtent>> ReadFiemap(Os& os, int fd, bool sync,
                                                      absl::string_view name) {
  return ReadFiemapRange(os, fd, 0, FIEMAP_MAX_OFFSET, sync, name);
}

absl::StatusOr<std::vector<FiemapExtent>> ReadFiemapRange(Os& os, int fd, uint64_t offset,
                                                           uint64_t length, bool sync,
                                                           absl::string_view name) {
  const uint64_t end = length > FIEMAP_MAX_OFFSET - offset ? FIEMAP_MAX_OFFSET : offset + length;
  // A small range (a re-map asks for a few blocks, thousands of times a
  // second) gets a buffer its size: at most one extent per 4 KiB, plus one.
  const uint64_t most = (end - offset) / 4096 + 2;
  const uint32_t batch = static_cast<uint32_t>(std::min<uint64_t>(1024, most));
  const size_t bytes = sizeof(fiemap) + batch * sizeof(fiemap_extent);
  std::unique_ptr<char[]> buf(new char[bytes]);
  std::vector<FiemapExtent> out;
  uint64_t start = offset;
  bool first = true;
  for (;;) {
    std::memset(buf.get(), 0, sizeof(fiemap));  // the kernel fills the extents it reports
    auto* fm = reinterpret_cast<fiemap*>(buf.get());
    fm->fm_start = start;
    fm->fm_length = end - start;
    fm->fm_flags = (sync && first) ? FIEMAP_FLAG_SYNC : 0;
    fm->fm_extent_count = batch;
    if (int rc = os.Fiemap(fd, fm); rc < 0)
      return ErrnoError(-rc, absl::StrFormat("FIEMAP on %s", name));
    first = false;
    if (fm->fm_mapped_extents == 0) break;
    bool last = false;
    for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
      const fiemap_extent& e = fm->fm_extents[i];
      out.push_back({e.fe_logical, e.fe_physical, e.fe_length, e.fe_flags});
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    const fiemap_extent& tail = fm->fm_extents[fm->fm_mapped_extents - 1];
    if (last || tail.fe_logical + tail.fe_length <= start) break;
    start = tail.fe_logical + tail.fe_length;
    if (start >= end) break;
    if (out.size() > (uint64_t{1} << 32)) {
      return LibError(EXT4DIO_E_MAP_MISMATCH,
                      absl::StrFormat("FIEMAP on %s does not end", name));
    }
  }
  return out;
}

absl::StatusOr<std::vector<Extent>> FiemapToExtents(
    const std::vector<FiemapExtent>& fiemap, uint32_t block_size,
    uint64_t device_offset, absl::string_view name) {
  std::vector<Extent> out;
  out.reserve(fiemap.size());
  for (const FiemapExtent& e : fiemap) {
    auto where_of = [&] {  // only for a message
      return absl::StrFormat("%s: FIEMAP extent at byte %d (%d bytes)", name, e.logical,
                             e.length);
    };
    if (e.flags & FIEMAP_EXTENT_DATA_INLINE)
      return LibError(EXT4DIO_E_UNSUPPORTED_FILE, where_of() + " is stored inline");
    if (e.flags & (FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_ENCRYPTED))
      return LibError(EXT4DIO_E_UNSUPPORTED_FILE, where_of() + " is encoded or encrypted");
    if (e.flags & (FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN))
      return LibError(EXT4DIO_E_MAP_MISMATCH,
                      where_of() + " has no blocks yet (delayed allocation)");
    if (e.flags & (FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_TAIL))
      return LibError(EXT4DIO_E_UNSUPPORTED_FILE, where_of() + " is not block aligned");
    if (e.logical % block_size || e.physical % block_size ||
        e.length % block_size || e.length == 0 || e.physical < device_offset ||
        (e.physical - device_offset) % block_size) {
      return LibError(EXT4DIO_E_MAP_MISMATCH,
                      where_of() + absl::StrFormat(" is not aligned to %d-byte blocks",
                                              block_size));
    }
    uint64_t logical = e.logical / block_size;
    uint64_t physical = (e.physical - device_offset) / block_size;
    uint64_t blocks = e.length / block_size;
    const bool unwritten = (e.flags & FIEMAP_EXTENT_UNWRITTEN) != 0;
    // Split very long runs: Extent lengths are 32-bit.
    while (blocks > 0) {
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(blocks, 1u << 30));
      out.push_back(Extent{logical, physical, n, unwritten});
      logical += n;
      physical += n;
      blocks -= n;
    }
  }
  return out;
}

namespace {
std::string Describe(const Extent& e) {
  return absl::StrFormat("logical %d..%d -> physical %d..%d%s", e.logical,
                         e.logical + e.length - 1, e.physical,
                         e.physical + e.length - 1,
                         e.unwritten ? " (unwritten)" : "");
}
}  // namespace

std::string FirstDifference(const std::vector<Extent>& on_disk,
                            const std::vector<Extent>& fiemap) {
  const std::vector<Extent> a = MergeContiguous(on_disk);
  const std::vector<Extent> b = MergeContiguous(fiemap);
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    if (!(a[i] == b[i])) {
      return absl::StrFormat("run %d: on disk %s, FIEMAP %s", i, Describe(a[i]),
                             Describe(b[i]));
    }
  }
  if (a.size() > n)
    return absl::StrFormat("run %d: on disk %s, FIEMAP has nothing", n, Describe(a[n]));
  if (b.size() > n)
    return absl::StrFormat("run %d: on disk nothing, FIEMAP %s", n, Describe(b[n]));
  return "";
}

}  // namespace ext4dio
