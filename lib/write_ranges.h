// WriteRanges: the device ranges of direct writes in flight and the units
// under read-modify-write, so that a read-modify-write never writes back
// stale bytes over a concurrent direct write to the same unit.
//
// A direct write waits while a read-modify-write of a unit it overlaps is in
// progress (those are short and never wait while holding their unit), and a
// read-modify-write waits for the direct writes it overlaps to finish.
//
// The bookkeeping is striped over 1 MiB device regions (region % 256), and
// the common case -- no read-modify-write in the stripe -- is lock- and
// allocation-free: a direct write only counts itself in the stripe (one
// atomic add and one subtract) and in its thread's own record. A
// read-modify-write announces itself in the stripe ("pending"); from then on
// new direct writes to the stripe register their exact ranges under the
// stripe's mutex (the slow path, as all of them did before), and the
// read-modify-write waits for the counted ones to drain -- so it is never
// starved by a stream of them -- and then for exact overlaps.
//
// EDEADLK: a read-modify-write that would wait for an unreaped direct write
// of its own thread (an async request not reaped yet) fails at once instead;
// a non-overlapping own write neither fails nor blocks it. "Own" is by the
// owner passed to BeginDirect, whichever thread calls EndDirect. The test is
// exact (byte overlap) except when the thread has had more than 4 counted
// writes in flight in the unit's 1 MiB region at once since it last had none
// there: then it is by their span (lowest to highest byte), which may fail an
// RMW that falls in a gap between them. Writes the thread began that another
// thread has ended may still count until the thread's writes in the region
// all end; again only while they would overlap.
//
// Thread-safety: all methods from any thread, with the requirements below.
#ifndef EXT4DIO_LIB_WRITE_RANGES_H_
#define EXT4DIO_LIB_WRITE_RANGES_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "mutex.h"
#include "absl/types/span.h"

namespace ext4dio {
namespace write_ranges_internal {
struct Record;  // a thread's counted writes (write_ranges.cc)
}  // namespace write_ranges_internal

class WriteRanges {
 public:
  using Range = std::pair<uint64_t, uint64_t>;  // device bytes [first, second)

  WriteRanges();
  WriteRanges(const WriteRanges&) = delete;
  WriteRanges& operator=(const WriteRanges&) = delete;

  // An id for the calling thread (stable for its lifetime, never reused).
  static uint64_t ThreadOwner();

  // Registers direct writes over `ranges` for `owner`; waits while a
  // read-modify-write overlaps one of them, holding nothing meanwhile.
  // The counted (fast) path needs `owner` == ThreadOwner() of the caller;
  // any other owner takes the exact path.
  void BeginDirect(absl::Span<const Range> ranges, uint64_t owner);
  // Ends what BeginDirect registered: the same ranges and owner, from any
  // thread (e.g. the one reaping an async queue).
  void EndDirect(absl::Span<const Range> ranges, uint64_t owner);

  // Claims [unit, unit + length) for a read-modify-write by `owner` (the
  // calling thread's ThreadOwner()). REQUIRES: the unit lies within one
  // 1 MiB region.
  absl::Status BeginRmw(uint64_t unit, uint64_t length, uint64_t owner);
  void EndRmw(uint64_t unit, uint64_t length, uint64_t owner);

  // Implementation details, public for the .cc's per-thread records.
  static constexpr int kStripes = 256;
  static constexpr int kShift = 20;

 private:
  struct Entry {
    uint64_t lo, hi, owner;
    bool rmw;
  };
  // One cache line per stripe for the counters the fast path touches, so
  // that writers to different stripes never share a line.
  struct alignas(64) Stripe {
    // Direct writes counted here (fast path), in flight or about to see
    // `pending` and take themselves back.
    std::atomic<uint32_t> fast{0};
    // Read-modify-writes between the start of BeginRmw and EndRmw.
    std::atomic<uint32_t> pending{0};
    // Direct entries in `entries` (changed under `mu`; read without it by
    // EndDirect to skip the mutex when there are none).
    std::atomic<uint32_t> slow{0};
    Mutex mu;
    std::vector<Entry> entries ABSL_GUARDED_BY(mu);  // slow-path directs and RMWs
  };

  using Record = write_ranges_internal::Record;
  enum class Begun { kFast, kSlow, kConflict };
  // Counts [lo, hi) (within `region`, stripe `s`) in the stripe and in
  // `rec`, the caller's record; false when an RMW is pending there or the
  // record's slot for the stripe is busy with another region.
  bool TryCount(int s, uint64_t region, uint64_t lo, uint64_t hi, Record* rec);
  // Undoes TryCount; `self` is the caller's record when the caller is
  // `owner`, else null (the owner's record is then found by its id).
  void Uncount(int s, uint64_t lo, uint64_t hi, uint64_t owner, Record* self);
  // Registers r in stripe `s` (its part in region `region` is [lo, hi)):
  // counted when `rec` allows, else exact under the stripe's mutex.
  Begun BeginOne(const Range& r, int s, uint64_t region, uint64_t lo, uint64_t hi,
                 uint64_t owner, Record* rec);
  // Removes r's exact entry of `owner` from stripe `s`; false if none.
  bool RemoveExact(const Range& r, int s, uint64_t owner);
  void EndOne(const Range& r, int s, uint64_t lo, uint64_t hi, uint64_t owner, Record* self);
  // Registers all of r; on a conflict returns false with *done its stripes
  // registered (in ForEachStripe order) before it.
  bool BeginRange(const Range& r, uint64_t owner, Record* rec, int* done);
  // Ends the registrations of ranges[0..range) and of the first `stripes`
  // stripes of ranges[range].
  void Undo(absl::Span<const Range> ranges, size_t range, int stripes, uint64_t owner,
            Record* self);

  const uint64_t serial_;  // tells instances apart in the per-thread records
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_WRITE_RANGES_H_
