#include "pending_remap.h"

#include <algorithm>

namespace ext4dio {

void PendingRemap::Recount() {
  count_.store(in_flight_.size() + ended_.size(), std::memory_order_release);
  ended_count_.store(ended_.size(), std::memory_order_release);
}

void PendingRemap::Begin(uint64_t lo, uint64_t hi) {
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_.emplace_back(lo, hi);
  Recount();
}

void PendingRemap::End(uint64_t lo, uint64_t hi) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(in_flight_.begin(), in_flight_.end(), std::make_pair(lo, hi));
  if (it != in_flight_.end()) {
    *it = in_flight_.back();
    in_flight_.pop_back();
  }
  ended_.push_back({lo, hi, ++seq_});
  // Into cover_: the ranges it overlaps or touches merge with it.
  auto first = FirstEndingAfter(cover_, lo);
  if (first != cover_.begin() && std::prev(first)->second == lo) --first;
  auto last = first;
  uint64_t mlo = lo, mhi = hi;
  while (last != cover_.end() && last->first <= hi) {
    mlo = std::min(mlo, last->first);
    mhi = std::max(mhi, last->second);
    ++last;
  }
  const auto at = cover_.erase(first, last);
  cover_.insert(at, {mlo, mhi});
  Recount();
}

bool PendingRemap::Overlaps(uint64_t lo, uint64_t hi) const {
  if (empty()) return false;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& r : in_flight_)
    if (r.first < hi && lo < r.second) return true;
  auto it = FirstEndingAfter(cover_, lo);
  return it != cover_.end() && it->first < hi;
}

PendingRemap::Batch PendingRemap::Ended() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Batch{cover_, seq_};
}

void PendingRemap::Remapped(const Batch& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  ended_.erase(std::remove_if(ended_.begin(), ended_.end(),
                              [&](const EndedWrite& w) { return w.seq <= batch.upto; }),
               ended_.end());
  cover_.clear();
  for (const EndedWrite& w : ended_) cover_.emplace_back(w.lo, w.hi);
  SortAndMerge(cover_);
  Recount();
}

void PendingRemap::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  ended_.clear();
  cover_.clear();
  Recount();
}

}  // namespace ext4dio
