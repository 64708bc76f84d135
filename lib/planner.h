// Planner: turns a file request into device pieces before any byte moves.
// A write is planned in full and refused as a whole (naming the first range
// that would need allocation) before anything is written.
//
// Thread-safety: pure functions over immutable inputs.
#ifndef EXT4DIO_LIB_PLANNER_H_
#define EXT4DIO_LIB_PLANNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "extent_map.h"
#include "ranges.h"

namespace ext4dio {

// Physical byte ranges of the file's written extents on the device, sorted
// and merged: the independent check that a device write stays inside the
// file (built from the extents, not from the logical lookup).
class WrittenSet {
 public:
  WrittenSet() = default;
  explicit WrittenSet(const ExtentMap& map);
  // Whether [offset, offset + length) lies wholly inside written extents.
  bool Contains(uint64_t offset, uint64_t length) const;
  // This set and `added` (device byte ranges, any order): one merge, no
  // re-sort of what is here.
  WrittenSet With(RangeList added) const;
  friend bool operator==(const WrittenSet&, const WrittenSet&) = default;

 private:
  RangeList ranges_;  // [start, end) device bytes
};

struct Alignment {
  uint32_t offset = 4096;  // device offsets and lengths of direct I/O
  uint32_t memory = 4096;  // buffer addresses of direct I/O
};

struct Piece {
  enum Kind : uint8_t {
    kDirect,    // aligned O_DIRECT I/O at device_offset
    kRmw,       // unaligned bytes inside a unit wholly in the file: read-
                // modify-write of that unit, serialised per unit
    kBuffered,  // unaligned bytes whose unit reaches outside the file:
                // non-direct I/O of exactly these bytes
    kZero,      // read of a hole or unwritten extent: zeros, no I/O
    kEof,       // read at or past EOF: the read ends here
    kRefused,   // write needing allocation (only with show_refused)
    kKernel,    // mounted mode: through the kernel (hole, unwritten, past
                // EOF, or unaligned bytes whose unit reaches outside the file)
  };
  Kind kind = kDirect;
  uint64_t file_offset = 0;
  uint64_t length = 0;
  uint64_t device_offset = 0;  // kDirect, kRmw, kBuffered
};

const char* PieceKindName(Piece::Kind kind);

struct PlanOptions {
  Alignment alignment;
  uint64_t max_io = 1 << 20;  // split direct pieces at this many bytes
  // PlanWrite lists ranges that need allocation as kRefused pieces instead
  // of failing (for showing a plan).
  bool show_refused = false;
  // Mounted mode: what needs allocation, and unaligned bytes whose unit
  // reaches outside the file, become kKernel pieces (adjacent ones merged).
  bool kernel_path = false;
  // Mounted mode: sorted, disjoint [start, end) file byte ranges that must
  // go through the kernel even where mapped (pages the page cache could not
  // drop: see page_cache.h). Their pieces are kKernel (refused without
  // kernel_path). Rounded to whole write units by whoever makes them.
  const RangeList* kernel_only = nullptr;
  // Completes "writing them needs block allocation, which ..." when a
  // write is refused.
  const char* refusal = "image mode cannot do";
};

// Pieces for writing [offset, offset + length), in file order. Holes,
// unwritten extents and bytes at or past EOF cannot be written without
// allocation: EXT4DIO_E_NEEDS_ALLOCATION names the first such range.
absl::StatusOr<std::vector<Piece>> PlanWrite(const ExtentMap& map, const WrittenSet& written,
                                             uint64_t offset, uint64_t length,
                                             const PlanOptions& options);

// The same into *out (cleared first; its capacity is reused, so a caller
// that keeps the vector plans without allocating).
absl::Status PlanWriteInto(const ExtentMap& map, const WrittenSet& written, uint64_t offset,
                           uint64_t length, const PlanOptions& options, std::vector<Piece>* out);

// Pieces for reading [offset, offset + length): direct pieces are aligned
// device ranges enclosing what is wanted is the caller's job (kDirect pieces
// here are exact byte ranges; see File::Pread), holes and unwritten extents
// are kZero, and the first byte at EOF gives a final kEof piece.
absl::StatusOr<std::vector<Piece>> PlanRead(const ExtentMap& map, uint64_t offset,
                                            uint64_t length, const PlanOptions& options);

absl::Status PlanReadInto(const ExtentMap& map, uint64_t offset, uint64_t length,
                          const PlanOptions& options, std::vector<Piece>* out);

// The first byte at or after `offset` that a write cannot reach without
// allocation (hole, unwritten, EOF), or offset + length if none.
uint64_t WritableUntil(const ExtentMap& map, uint64_t offset, uint64_t length);

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_PLANNER_H_
