// PendingRemap: the file ranges written through the kernel (mounted mode)
// that the map does not show yet. A kernel-path write registers its range
// before it starts (Begin) and ends it when it completes (End); the re-map
// (File::RemapPending, off the hot path) takes what has ended (Ended),
// reads those ranges back from FIEMAP into a new map, publishes it, and
// only then forgets them (Remapped). Until then the range stays on the
// kernel path for reads as well as writes, so a read never returns the
// zeros of a hole the kernel has just filled.
//
// Order is what makes that hold without a lock on the read path: the new
// map is published before Remapped, so a reader that finds no overlap
// (Overlaps false) and then loads the map sees one that shows the write.
//
// Thread-safety: all methods from any thread.
#ifndef EXT4DIO_LIB_PENDING_REMAP_H_
#define EXT4DIO_LIB_PENDING_REMAP_H_

#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "mutex.h"
#include "ranges.h"

namespace ext4dio {

class PendingRemap {
 public:
  // A kernel-path write of file bytes [lo, hi) is about to start. Only
  // the locked path announces its writes: a read concurrent with a write
  // may see either content, and one after it (after its End) sees it
  // pending; so concurrent writes just End.
  void Begin(uint64_t lo, uint64_t hi);
  // It has ended (whatever its result: blocks may have been allocated).
  // `clean`: an aligned O_DIRECT write that wrote all of it, so unwritten
  // blocks in it are now written in place (ext4 converts, never moves) and
  // the re-map may say so without asking FIEMAP; else (failed, short,
  // buffered) it asks. Ends a Begin of the same range, if there was one.
  void End(uint64_t lo, uint64_t hi, bool clean);
  struct WriteEnd {
    uint64_t lo, hi;
    bool clean;
  };
  // Several at once, under one lock (an executor's reap).
  void EndAll(const WriteEnd* ends, size_t n);
  // Whether [lo, hi) overlaps a write in flight or one not re-mapped yet.
  // Without any: one atomic load.
  bool Overlaps(uint64_t lo, uint64_t hi) const;
  bool empty() const { return count_.load(std::memory_order_acquire) == 0; }
  // Writes ended and not re-mapped.
  size_t ended() const { return ended_count_.load(std::memory_order_acquire); }

  // The ended ranges (sorted, merged), those of them not clean, and a mark
  // for Remapped.
  struct Batch {
    RangeList ranges;
    RangeList suspect;
    uint64_t upto = 0;
  };
  Batch Ended() const;
  // The ranges of `batch` are in the published map: forgets the writes
  // that had ended when it was taken (later ones stay).
  void Remapped(const Batch& batch);
  // A full re-read of the map (nothing in flight: inside the gate's
  // Exclusive) shows every ended write: forgets them all.
  void Clear();

 private:
  struct EndedWrite {
    uint64_t lo, hi, seq;
    bool clean;
  };
  void Recount() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Insert(absl::btree_map<uint64_t, uint64_t>& cover, uint64_t lo, uint64_t hi);
  static RangeList Ranges(const absl::btree_map<uint64_t, uint64_t>& cover);

  mutable Mutex mu_;
  std::vector<std::pair<uint64_t, uint64_t>> in_flight_ ABSL_GUARDED_BY(mu_);  // a multiset
  std::vector<EndedWrite> ended_ ABSL_GUARDED_BY(mu_);                         // in End order
  // ended_ (and those not clean), merged: start -> end.
  absl::btree_map<uint64_t, uint64_t> cover_ ABSL_GUARDED_BY(mu_), suspect_ ABSL_GUARDED_BY(mu_);
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<size_t> count_{0};
  std::atomic<size_t> ended_count_{0};
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_PENDING_REMAP_H_
