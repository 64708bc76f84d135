// WriteRanges: the device ranges of direct writes in flight and the units
// under read-modify-write, so that a read-modify-write never writes back
// stale bytes over a concurrent direct write to the same unit.
//
// Only true overlaps wait: a direct write waits while a read-modify-write of
// a unit it overlaps is in progress (those are short and never wait while
// holding their unit), and a read-modify-write waits for overlapping direct
// writes to finish. A read-modify-write that overlaps an in-flight write of
// its own thread (an async request not reaped yet) would wait for itself:
// it fails at once with EDEADLK instead.
//
// Thread-safety: all methods from any thread. The bookkeeping is striped
// over 1 MiB device regions, so writers to different regions never meet.
#ifndef EXT4DIO_LIB_WRITE_RANGES_H_
#define EXT4DIO_LIB_WRITE_RANGES_H_

#include <array>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace ext4dio {

class WriteRanges {
 public:
  using Range = std::pair<uint64_t, uint64_t>;  // device bytes [first, second)

  // An id for the calling thread (stable for its lifetime, never reused).
  static uint64_t ThreadOwner();

  // Registers direct writes over `ranges` for `owner`; waits while a
  // read-modify-write overlaps one of them.
  void BeginDirect(absl::Span<const Range> ranges, uint64_t owner);
  void EndDirect(absl::Span<const Range> ranges, uint64_t owner);

  // Claims [unit, unit + length) for a read-modify-write by `owner` (the
  // calling thread). REQUIRES: the unit lies within one 1 MiB region.
  absl::Status BeginRmw(uint64_t unit, uint64_t length, uint64_t owner);
  void EndRmw(uint64_t unit, uint64_t length, uint64_t owner);

 private:
  static constexpr int kStripes = 256;
  static constexpr int kShift = 20;
  struct Entry {
    uint64_t lo, hi, owner;
    bool rmw;
  };
  struct Stripe {
    std::mutex mu;
    std::vector<Entry> entries;
  };
  static void StripesOf(const Range& r, std::vector<int>* out);
  static void Remove(Stripe& s, const Entry& e);

  std::array<Stripe, kStripes> stripes_;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_WRITE_RANGES_H_
