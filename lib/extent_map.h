// ExtentMap: an immutable map from a file's logical blocks to filesystem
// blocks, answering byte-range queries with segments.
//
// Thread-safety: immutable after construction; any number of threads may
// query one map at once.
//
// Layout (why it is fast): a random lookup in a large map costs what its
// cache misses cost. Extents are kept in leaves of 16: one cache line of
// their 32-bit logical starts (ext4 logical blocks are 32-bit; stored with
// the sign bit flipped, so SSE2's signed compares need no fix-up) followed by
// two lines of 8-byte records (48-bit physical block, 15-bit length - 1, the
// unwritten flag). A static B+-tree index of 16-key (one cache line) nodes
// over the first key of every leaf finds the leaf; at 1M extents the index
// is 270 KB and stays in L2 (1 MiB here), so a lookup is four cache hits
// and then the leaf's three lines, fetched at once (the record lines are
// prefetched while the key line is searched). A merge with the next extent
// usually finds it in the same lines. Extents that do not fit a record
// (length > 32768, physical >= 2^48 - 1: contiguous runs the reader
// merged, huge devices) are marked and kept whole in a side table,
// searched only for them. Memory: 12 bytes per extent plus ~0.27 for the index, plus 16
// per extent that does not fit (28.3 at most).
#ifndef EXT4DIO_LIB_EXTENT_MAP_H_
#define EXT4DIO_LIB_EXTENT_MAP_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace ext4dio {

// One leaf extent in filesystem blocks. `physical` is counted from the start
// of the filesystem.
struct Extent {
  uint64_t logical = 0;
  uint64_t physical = 0;
  uint32_t length = 0;  // blocks, >= 1
  bool unwritten = false;

  friend bool operator==(const Extent&, const Extent&) = default;
};

enum class SegmentKind : uint8_t { kMapped, kUnwritten, kHole, kPastEof };

// A byte range of the file. `device_offset` is valid for kMapped and
// kUnwritten: the byte offset on the device (or in the image file), i.e.
// already including the filesystem's offset inside it; 0 for kHole and
// kPastEof.
struct Segment {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t device_offset = 0;
  SegmentKind kind = SegmentKind::kHole;

  friend bool operator==(const Segment&, const Segment&) = default;
};

struct MapGeometry {
  uint32_t block_size = 4096;   // power of two, 1 KiB .. 64 KiB
  uint64_t device_offset = 0;   // byte offset of the filesystem on the device
  uint64_t file_size = 0;       // i_size
};

class ExtentMap {
 public:
  // The largest logical block + 1 an extent may reach (ext4: 32-bit blocks).
  static constexpr uint64_t kLogicalLimit = uint64_t{1} << 32;

  // Builds the map. REQUIRES nothing of `extents`: they are checked here and
  // an InvalidArgument error names the first offending extent when they are
  // not sorted by logical block, overlap, have length 0, reach past
  // kLogicalLimit, or (physical + length) * block_size + device_offset
  // overflows. Adjacent extents are kept as given (ExtentAt returns them as
  // stored). Extents may reach past file_size (unwritten preallocation, the
  // partial last block): queries clip them at EOF.
  static absl::StatusOr<ExtentMap> Build(const MapGeometry& geometry,
                                         const std::vector<Extent>& extents);

  ExtentMap() = default;  // an empty map of an empty file, 4 KiB blocks
  // A moved-from map is an empty map of the same geometry.
  ExtentMap(ExtentMap&& other) noexcept { *this = std::move(other); }
  ExtentMap& operator=(ExtentMap&& other) noexcept {
    geometry_ = other.geometry_;
    count_ = std::exchange(other.count_, 0);
    leaves_ = std::move(other.leaves_);
    levels_ = std::move(other.levels_);
    level_sizes_ = std::move(other.level_sizes_);
    escapes_ = std::move(other.escapes_);
    other.escapes_.clear();
    return *this;
  }
  ExtentMap(const ExtentMap&) = delete;
  ExtentMap& operator=(const ExtentMap&) = delete;

  const MapGeometry& geometry() const { return geometry_; }
  uint32_t block_size() const { return geometry_.block_size; }
  uint64_t file_size() const { return geometry_.file_size; }
  size_t extent_count() const { return count_; }
  Extent ExtentAt(size_t index) const;  // REQUIRES: index < extent_count()

  // Index of the last extent whose logical start is <= block, or -1 when
  // every extent starts after it (or the map is empty). Does not check that
  // the extent covers `block`.
  int64_t FindFloor(uint64_t block) const;

  // The single segment that starts at byte `offset` and extends as far as
  // its kind (and physical contiguity, for kMapped/kUnwritten) goes, but not
  // past `offset + max_length`. REQUIRES: max_length > 0 and offset +
  // max_length does not overflow.
  Segment SegmentAt(uint64_t offset, uint64_t max_length) const;

  // Consecutive segments covering [offset, offset + length). Bytes at or
  // past file_size() are one kPastEof segment; physically contiguous
  // extents of the same kind are merged. InvalidArgument if offset + length
  // overflows; an empty vector for length 0.
  absl::StatusOr<std::vector<Segment>> Query(uint64_t offset,
                                             uint64_t length) const;

  // Bytes of heap memory the map holds (for the <= 32 B/extent budget).
  size_t MemoryBytes() const;

 private:
  // 16 extents in three cache lines; padding slots (only in the last leaf)
  // have logical UINT32_MAX.
  struct alignas(64) Leaf {
    uint32_t logical[16];  // logical start ^ 2^31 (extent_map.cc: kKeyBias)
    // Bits 0-47: physical block, or 2^48 - 1 when the extent is in
    // escapes_; bits 48-62: length - 1 (0 when escaped); bit 63: unwritten.
    uint64_t record[16];
  };
  // An extent whose record says "escaped".
  struct Escape {
    uint32_t index;  // extent index (extents <= 2^32: each is >= 1 block)
    uint32_t length;
    uint64_t physical;
  };
  struct AlignedFree {
    void operator()(void* p) const;
  };

  MapGeometry geometry_;
  size_t count_ = 0;
  // Extent i is slot i % 16 of leaves_[i / 16]. levels_[0] holds the first
  // logical start of every leaf (biased like Leaf::logical), padded to a multiple of 16 with UINT32_MAX;
  // each level above holds the first key of every 16-key node of the level
  // below, padded likewise; the last level has at most 16 keys. A map of at
  // most 16 extents (one leaf) has no levels.
  std::unique_ptr<Leaf[], AlignedFree> leaves_;
  std::vector<std::unique_ptr<uint32_t[], AlignedFree>> levels_;
  std::vector<size_t> level_sizes_;  // padded sizes of levels_
  std::vector<Escape> escapes_;      // sorted by index
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_EXTENT_MAP_H_
