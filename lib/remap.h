// Remap: the deferred re-map's computation (mounted mode). From the map a
// file had, the kernel-path writes that ended since (PendingRemap::Batch)
// and what FIEMAP says about some of their ranges, the file's new map and
// written set -- without re-reading the rest of the file:
//  * unwritten blocks a clean O_DIRECT write covered are written in place
//    (ext4 converts, never moves, a block to do so): no FIEMAP for them;
//  * holes filled, partial blocks, and writes that failed, were short or
//    went through the page cache: FIEMAP, validated;
//  * written data the old map showed there must still be written in
//    FIEMAP's answer (blocks are freed only under the gate's Exclusive,
//    which re-reads the whole map), else EXT4DIO_E_MAP_MISMATCH.
// One pass over the old extents per batch; the written set is merged, not
// rebuilt. File::RemapPending publishes the result.
//
// Thread-safety: a pure function of its inputs (and of what the callbacks do).
#ifndef EXT4DIO_LIB_REMAP_H_
#define EXT4DIO_LIB_REMAP_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "map_state.h"
#include "pending_remap.h"

namespace ext4dio {

struct RemapInput {
  const MapState* old = nullptr;
  const PendingRemap::Batch* batch = nullptr;
  // The file's extents overlapping [offset, offset + length) (bytes, whole
  // blocks), from FIEMAP: in logical order, possibly clipped to the range.
  std::function<absl::StatusOr<std::vector<Extent>>(uint64_t offset, uint64_t length)> fiemap;
  // Checks extents FIEMAP gave against the filesystem (bitmaps, metadata).
  std::function<absl::Status(const std::vector<Extent>&)> validate;
  uint64_t file_size = 0;  // now (read after the batch was taken)
};

struct RemapOutput {
  LoadedMap loaded;  // the old one's fields, the new map, source kFiemap
  WrittenSet written;
  uint64_t fiemap_calls = 0;   // spans asked
  uint64_t converted_blocks = 0;  // unwritten -> written without asking
};

absl::StatusOr<RemapOutput> Remap(const RemapInput& in);

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_REMAP_H_
