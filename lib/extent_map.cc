// ExtentMap: see extent_map.h for the layout.
//
// Search: levels_ are a static B+-tree over the first key (logical start) of
// every leaf. Every level is an array of 16-key nodes (one 64-byte cache
// line); entry j of a level is the first key of node j of the level below,
// and entry j of levels_[0] is the first key of leaf j. A lookup of x counts
// the keys <= x in one node per level, top down:
//   top:       index = count - 1              (count == 0: no floor)
//   below it:  index = 16 * index + count - 1 (count >= 1 by construction)
// ending in levels_[0], where index is the leaf; the floor extent is then
// 16 * leaf + (keys <= x in the leaf) - 1. A map of one leaf has no levels,
// and its count may be 0 (no floor).
//
// Keys are stored biased (see kKeyBias) but compared as the unsigned
// logical blocks they stand for; below, "key" means that value.
//
// Padding keys are UINT32_MAX. They compare <= x only when x == UINT32_MAX,
// and for that x (and any block >= 2^32) the floor is simply the last
// extent, since every key is <= UINT32_MAX; FindFloor answers that case
// before descending, so the descent never counts a padding key and never
// needs to clamp an index to the real size of a level.

#include "extent_map.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__GNUC__)
#define EXT4DIO_ALWAYS_INLINE __attribute__((always_inline))
#else
#define EXT4DIO_ALWAYS_INLINE
#endif

namespace ext4dio {
namespace {

constexpr size_t kNodeKeys = 16;  // 16 x uint32 = one 64-byte cache line
constexpr size_t kLeafSlots = 16;  // extents per leaf: one node of keys
constexpr size_t kCacheLine = 64;
constexpr uint32_t kPadKey = std::numeric_limits<uint32_t>::max();
// Keys are stored with the sign bit flipped, so SSE2's signed compares order
// them as unsigned numbers without flipping every key on every lookup.
constexpr uint32_t kKeyBias = uint32_t{1} << 31;

// Records (see ExtentMap::Leaf). An extent is kept in its record when its
// physical block is below kEscapedPhysical and its length at most
// kMaxRecordLength (ext4's largest written extent: 32768 blocks).
constexpr unsigned kLengthShift = 48;
constexpr uint64_t kPhysicalMask = (uint64_t{1} << kLengthShift) - 1;
constexpr uint64_t kEscapedPhysical = kPhysicalMask;
constexpr uint64_t kMaxRecordLength = uint64_t{1} << 15;
constexpr uint64_t kUnwrittenBit = uint64_t{1} << 63;

constexpr size_t RoundUpToNode(size_t n) {
  return (n + kNodeKeys - 1) / kNodeKeys * kNodeKeys;
}

// log2 of a block size (a power of two: Build checks it, and the default is
// 4096), without std::countr_zero's branch for 0.
EXT4DIO_ALWAYS_INLINE inline unsigned BlockShift(uint32_t block_size) {
#if defined(__GNUC__)
  return static_cast<unsigned>(__builtin_ctz(block_size));
#else
  return static_cast<unsigned>(std::countr_zero(block_size));
#endif
}

// Allocates `bytes` (> 0) aligned to a cache line, or nullptr. Arrays of at
// least one huge page are aligned to 2 MiB and advised to use transparent
// huge pages: a random lookup in a 1M-extent map touches ~12 MB, and with
// 4 KiB pages nearly every lookup would also miss the TLB. (Only the address
// space is rounded, not the memory the map holds: the tail pages past
// `bytes` are never touched.) Freed with std::free (AlignedFree).
void* AllocateAligned(size_t bytes) {
  size_t alignment = kCacheLine;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHugePage = size_t{2} << 20;
  if (bytes >= kHugePage) alignment = kHugePage;
#endif
  void* p = nullptr;
  if (posix_memalign(&p, alignment, bytes) != 0) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (alignment == kHugePage) {
    // Advisory only; failure (e.g. THP disabled) just means 4 KiB pages.
    (void)madvise(p, bytes & ~(kHugePage - 1), MADV_HUGEPAGE);
  }
#endif
  return p;
}

// Number of keys <= x in the 16-key, 64-byte aligned node. The keys of a
// node are sorted (padding UINT32_MAX last), so the keys > x form a suffix
// and the count is the position of the first one.
EXT4DIO_ALWAYS_INLINE inline unsigned CountLessEqual16(const uint32_t* node,
                                                       uint32_t x) {
#if defined(__SSE2__)
  // SSE2 has only signed 32-bit compares: flipping the sign bit of both
  // sides maps unsigned order onto signed order (the keys are stored
  // flipped).
  const __m128i xv = _mm_set1_epi32(static_cast<int32_t>(x ^ kKeyBias));
  const __m128i* p = reinterpret_cast<const __m128i*>(node);
  const __m128i gt0 = _mm_cmpgt_epi32(_mm_load_si128(p + 0), xv);
  const __m128i gt1 = _mm_cmpgt_epi32(_mm_load_si128(p + 1), xv);
  const __m128i gt2 = _mm_cmpgt_epi32(_mm_load_si128(p + 2), xv);
  const __m128i gt3 = _mm_cmpgt_epi32(_mm_load_si128(p + 3), xv);
  // 0 / -1 lanes survive signed saturation: 4x32 -> 8x16 -> 16x8 bits.
  const __m128i gt =
      _mm_packs_epi16(_mm_packs_epi32(gt0, gt1), _mm_packs_epi32(gt2, gt3));
  // Bit k set iff key k > x. popcount is not in the x86-64 baseline; with
  // the keys > x forming a suffix, 16 - popcount == count-trailing-zeros
  // (bsf), with bit 16 as the sentinel for "no key > x".
  const unsigned gt_mask = static_cast<unsigned>(_mm_movemask_epi8(gt));
  return static_cast<unsigned>(std::countr_zero(gt_mask | (1u << kNodeKeys)));
#else
  unsigned count = 0;
  for (size_t k = 0; k < kNodeKeys; ++k)
    count += (node[k] ^ kKeyBias) <= x ? 1u : 0u;
  return count;
#endif
}

// Prefetches the two record lines of a leaf while its key line is searched:
// on large maps all three are usually cache misses, and this overlaps them.
EXT4DIO_ALWAYS_INLINE inline void PrefetchRecords(const uint64_t* records) {
#if defined(__GNUC__)
  __builtin_prefetch(records);
  __builtin_prefetch(records + kCacheLine / sizeof(uint64_t));
#else
  (void)records;
#endif
}

// FindFloor. Templated on the (private) leaf type so that it can live here
// without naming it; `levels` points at levels_. With kPrefetch, also
// prefetches the leaf's records (for SegmentAt, which reads one next).
template <bool kPrefetch, typename Leaf, typename Level>
EXT4DIO_ALWAYS_INLINE inline int64_t Descend(const Leaf* leaves,
                                             const Level* levels,
                                             size_t num_levels, size_t count,
                                             uint64_t block) {
  if (count == 0) return -1;
  // Every key is <= UINT32_MAX (padding included): the last extent.
  if (block >= kPadKey) return static_cast<int64_t>(count) - 1;
  const uint32_t x = static_cast<uint32_t>(block);
  size_t leaf = 0;
  if (num_levels > 0) {
    size_t level = num_levels - 1;
    const unsigned top_count = CountLessEqual16(levels[level].get(), x);
    if (top_count == 0) return -1;
    leaf = top_count - 1;
    // x < UINT32_MAX: no padding key is counted, and the node chosen on each
    // level has a first key <= x, so each count below is >= 1.
    while (level > 0) {
      --level;
      const uint32_t* node = levels[level].get() + leaf * kNodeKeys;
      leaf = leaf * kNodeKeys + CountLessEqual16(node, x) - 1;
    }
  }
  if constexpr (kPrefetch) PrefetchRecords(leaves[leaf].record);
  // With levels the leaf's first key is <= x (count >= 1); without, a count
  // of 0 means every extent starts after x: -1.
  return static_cast<int64_t>(leaf * kLeafSlots +
                              CountLessEqual16(leaves[leaf].logical, x)) -
         1;
}

// An extent's physical block with the unwritten flag in bit 63 (physical
// ends are below 2^54: Build bounds them by 2^64 / 1024), and its length.
struct Physical {
  uint64_t word;
  uint64_t length;
};

// Segment construction shared by SegmentAt and Query; templated like
// Descend.
//
// REQUIRES: offset < limit <= file_size; `floor` is FindFloor(offset's
// block). Returns the segment starting at `offset`, ending at or before
// `limit`; sets *next_floor to FindFloor() of the block holding the
// segment's end (meaningful only when that end is < limit).
template <typename Leaf, typename Escape>
EXT4DIO_ALWAYS_INLINE inline Segment MakeSegment(
    const Leaf* leaves, size_t count, const std::vector<Escape>& escapes,
    uint64_t device_offset, unsigned shift, int64_t floor, uint64_t offset,
    uint64_t limit, int64_t* next_floor) {
  auto logical = [leaves](size_t j) -> uint64_t {
    return leaves[j / kLeafSlots].logical[j % kLeafSlots] ^ kKeyBias;
  };
  auto physical = [leaves, &escapes](size_t j) -> Physical {
    const uint64_t r = leaves[j / kLeafSlots].record[j % kLeafSlots];
    if ((r & kPhysicalMask) == kEscapedPhysical) [[unlikely]] {
      const auto it = std::partition_point(
          escapes.begin(), escapes.end(),
          [j](const Escape& e) { return e.index < j; });
      assert(it != escapes.end() && it->index == j);
      return Physical{it->physical | (r & kUnwrittenBit), it->length};
    }
    return Physical{r & (kPhysicalMask | kUnwrittenBit),
                    ((r & ~kUnwrittenBit) >> kLengthShift) + 1};
  };
  const uint64_t block = offset >> shift;
  if (floor >= 0) {
    size_t j = static_cast<size_t>(floor);
    const uint64_t start = logical(j);
    const Physical p = physical(j);
    uint64_t end_block = start + p.length;
    if (block < end_block) {
      const uint64_t unwritten = p.word & kUnwrittenBit;
      Segment seg;
      seg.offset = offset;
      seg.kind = unwritten ? SegmentKind::kUnwritten : SegmentKind::kMapped;
      seg.device_offset = device_offset + ((p.word & ~kUnwrittenBit) << shift) +
                          (offset - (start << shift));
      // Extents end below 2^32 blocks of <= 64 KiB: no overflow here.
      uint64_t seg_end = end_block << shift;
      // The physical end of the segment so far, with its flag: the next
      // extent continues the segment iff its word equals this.
      uint64_t continues = p.word + p.length;
      while (seg_end < limit && j + 1 < count) {
        if (logical(j + 1) != end_block) break;
        const Physical next = physical(j + 1);
        if (next.word != continues) break;
        ++j;
        end_block += next.length;
        continues += next.length;
        seg_end = end_block << shift;
      }
      if (seg_end <= limit && j + 1 < count && logical(j + 1) == end_block) {
        *next_floor = static_cast<int64_t>(j + 1);
      } else {
        *next_floor = static_cast<int64_t>(j);
      }
      seg.length = std::min(seg_end, limit) - offset;
      return seg;
    }
  }
  // A hole: up to the next extent (the one after the floor), or the limit.
  const size_t next = static_cast<size_t>(floor + 1);
  uint64_t hole_end = limit;
  *next_floor = floor;
  if (next < count) {
    const uint64_t next_start = logical(next) << shift;
    if (next_start <= limit) {
      hole_end = next_start;
      *next_floor = static_cast<int64_t>(next);
    }
  }
  Segment seg;
  seg.offset = offset;
  seg.length = hole_end - offset;
  seg.kind = SegmentKind::kHole;
  return seg;
}

}  // namespace

void ExtentMap::AlignedFree::operator()(void* p) const { std::free(p); }

absl::StatusOr<ExtentMap> ExtentMap::Build(const MapGeometry& geometry,
                                           const std::vector<Extent>& extents) {
  const uint32_t bs = geometry.block_size;
  if (bs < 1024 || bs > 65536 || !std::has_single_bit(bs)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "block size %u is not a power of two in [1024, 65536]", bs));
  }
  const unsigned shift = static_cast<unsigned>(std::countr_zero(bs));
  // The largest block count whose byte size (plus the filesystem's offset
  // in the device) fits in 64 bits.
  const uint64_t max_device_blocks =
      (std::numeric_limits<uint64_t>::max() - geometry.device_offset) >> shift;

  for (size_t i = 0; i < extents.size(); ++i) {
    const Extent& e = extents[i];
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(
          absl::StrFormat("extent %u (logical %u, length %u): %s", i, e.logical,
                          e.length, why));
    };
    if (e.length == 0) return bad("length is 0");
    if (i > 0) {
      const Extent& prev = extents[i - 1];
      if (e.logical < prev.logical) {
        return bad(absl::StrFormat(
            "not sorted by logical block: starts before extent %u (logical %u)",
            i - 1, prev.logical));
      }
      // prev passed the limit check: no overflow.
      if (e.logical < prev.logical + prev.length) {
        return bad(absl::StrFormat("overlaps extent %u (logical %u, length %u)",
                                   i - 1, prev.logical, prev.length));
      }
    }
    if (e.logical >= kLogicalLimit || kLogicalLimit - e.logical < e.length) {
      return bad("reaches past logical block 2^32");
    }
    if (e.physical > max_device_blocks ||
        max_device_blocks - e.physical < e.length) {
      return bad(absl::StrFormat(
          "physical block %u: the extent's end does not fit in a 64-bit "
          "device offset (block size %u, device offset %u)",
          e.physical, bs, geometry.device_offset));
    }
  }

  ExtentMap map;
  map.geometry_ = geometry;
  const size_t n = extents.size();
  if (n == 0) return map;

  auto oom = [] {
    return absl::ResourceExhaustedError("out of memory building an extent map");
  };
  const size_t num_leaves = (n + kLeafSlots - 1) / kLeafSlots;
  map.leaves_.reset(
      static_cast<Leaf*>(AllocateAligned(num_leaves * sizeof(Leaf))));
  if (map.leaves_ == nullptr) return oom();
  auto fits = [](const Extent& e) {
    return e.physical < kEscapedPhysical && e.length <= kMaxRecordLength;
  };
  const size_t num_escapes = static_cast<size_t>(
      std::count_if(extents.begin(), extents.end(),
                    [&](const Extent& e) { return !fits(e); }));
  map.escapes_.reserve(num_escapes);  // exactly: MemoryBytes counts capacity
  Leaf* leaves = map.leaves_.get();
  for (size_t i = 0; i < num_leaves * kLeafSlots; ++i) {
    Leaf& leaf = leaves[i / kLeafSlots];
    const size_t slot = i % kLeafSlots;
    if (i >= n) {
      leaf.logical[slot] = kPadKey ^ kKeyBias;
      leaf.record[slot] = 0;
      continue;
    }
    const Extent& e = extents[i];
    leaf.logical[slot] = static_cast<uint32_t>(e.logical) ^ kKeyBias;
    const uint64_t unwritten = e.unwritten ? kUnwrittenBit : 0;
    if (fits(e)) {
      leaf.record[slot] =
          e.physical | (uint64_t{e.length - 1} << kLengthShift) | unwritten;
    } else {
      leaf.record[slot] = kEscapedPhysical | unwritten;
      map.escapes_.push_back(
          Escape{static_cast<uint32_t>(i), e.length, e.physical});
    }
  }

  // levels_[0]: the first key of every leaf; each level above: the first
  // key of every 16-key node of the level below; up to a level of one node.
  if (num_leaves > 1) {
    const uint32_t* below = nullptr;  // the leaves, for levels_[0]
    size_t real = num_leaves;
    do {
      const size_t up_real =
          below == nullptr ? real : (real + kNodeKeys - 1) / kNodeKeys;
      const size_t up_padded = RoundUpToNode(up_real);
      std::unique_ptr<uint32_t[], AlignedFree> level(static_cast<uint32_t*>(
          AllocateAligned(up_padded * sizeof(uint32_t))));
      if (level == nullptr) return oom();
      for (size_t j = 0; j < up_real; ++j) {
        level[j] =
            below == nullptr ? leaves[j].logical[0] : below[j * kNodeKeys];
      }
      std::fill(level.get() + up_real, level.get() + up_padded,
                kPadKey ^ kKeyBias);
      below = level.get();
      map.levels_.push_back(std::move(level));
      map.level_sizes_.push_back(up_padded);
      real = up_real;
    } while (real > kNodeKeys);
  }
  map.count_ = n;
  return map;
}

Extent ExtentMap::ExtentAt(size_t index) const {
  const Leaf& leaf = leaves_[index / kLeafSlots];
  const size_t slot = index % kLeafSlots;
  const uint64_t r = leaf.record[slot];
  Extent e{leaf.logical[slot] ^ kKeyBias, r & kPhysicalMask,
           static_cast<uint32_t>(((r & ~kUnwrittenBit) >> kLengthShift) + 1),
           (r & kUnwrittenBit) != 0};
  if (e.physical == kEscapedPhysical) {
    const auto it = std::partition_point(
        escapes_.begin(), escapes_.end(),
        [index](const Escape& x) { return x.index < index; });
    e.physical = it->physical;
    e.length = it->length;
  }
  return e;
}

int64_t ExtentMap::FindFloor(uint64_t block) const {
  return Descend<false>(leaves_.get(), levels_.data(), levels_.size(), count_,
                        block);
}

Segment ExtentMap::SegmentAt(uint64_t offset, uint64_t max_length) const {
  const uint64_t file_size = geometry_.file_size;
  if (offset >= file_size) {
    return Segment{offset, max_length, 0, SegmentKind::kPastEof};
  }
  const uint64_t limit = std::min(offset + max_length, file_size);
  const unsigned shift = BlockShift(geometry_.block_size);
  const Leaf* leaves = leaves_.get();
  const size_t count = count_;
  static_assert(sizeof(Leaf) == 3 * kCacheLine &&
                alignof(Leaf) == kCacheLine);
  const int64_t floor = Descend<true>(leaves, levels_.data(), levels_.size(),
                                      count, offset >> shift);
  int64_t unused;
  return MakeSegment(leaves, count, escapes_, geometry_.device_offset, shift,
                     floor, offset, limit, &unused);
}

absl::StatusOr<std::vector<Segment>> ExtentMap::Query(uint64_t offset,
                                                      uint64_t length) const {
  std::vector<Segment> segments;
  if (length == 0) return segments;
  if (length > std::numeric_limits<uint64_t>::max() - offset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "query range %u + %u overflows 64 bits", offset, length));
  }
  const uint64_t end = offset + length;
  const uint64_t file_size = geometry_.file_size;
  const uint64_t limit = std::min(end, file_size);
  uint64_t pos = offset;
  if (pos < limit) {
    const unsigned shift = BlockShift(geometry_.block_size);
    int64_t floor = FindFloor(pos >> shift);
    // Typical queries cover a few segments: one allocation. Longer ones grow.
    const int64_t last = FindFloor((limit - 1) >> shift);
    segments.reserve(
        static_cast<size_t>(std::min<int64_t>(2 * (last - floor) + 4, 64)));
    while (pos < limit) {
      const Segment seg =
          MakeSegment(leaves_.get(), count_, escapes_, geometry_.device_offset,
                      shift, floor, pos, limit, &floor);
      assert(seg.length > 0);
      segments.push_back(seg);
      pos += seg.length;
    }
  }
  if (pos < end) {
    segments.push_back(Segment{pos, end - pos, 0, SegmentKind::kPastEof});
  }
  return segments;
}

size_t ExtentMap::MemoryBytes() const {
  if (count_ == 0) return 0;
  size_t bytes = (count_ + kLeafSlots - 1) / kLeafSlots * sizeof(Leaf) +
                 escapes_.capacity() * sizeof(Escape);
  for (size_t s : level_sizes_) bytes += s * sizeof(uint32_t);
  bytes += levels_.capacity() * sizeof(levels_[0]) +
           level_sizes_.capacity() * sizeof(level_sizes_[0]);
  return bytes;
}

}  // namespace ext4dio

#undef EXT4DIO_ALWAYS_INLINE
