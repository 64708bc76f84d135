#include "pending_remap.h"

#include <algorithm>

namespace ext4dio {

void PendingRemap::Recount() {
  count_.store(in_flight_.size() + ended_.size(), std::memory_order_release);
  ended_count_.store(ended_.size(), std::memory_order_release);
}

void PendingRemap::Begin(uint64_t lo, uint64_t hi) {
  MutexLock lock(&mu_);
  in_flight_.emplace_back(lo, hi);
  Recount();
}

void PendingRemap::Insert(absl::btree_map<uint64_t, uint64_t>& cover, uint64_t lo,
                          uint64_t hi) {
  // Merge with every range it overlaps or touches.
  auto it = cover.upper_bound(lo);
  if (it != cover.begin() && std::prev(it)->second >= lo) --it;
  while (it != cover.end() && it->first <= hi) {
    lo = std::min(lo, it->first);
    hi = std::max(hi, it->second);
    it = cover.erase(it);
  }
  cover.emplace(lo, hi);
}

RangeList PendingRemap::Ranges(const absl::btree_map<uint64_t, uint64_t>& cover) {
  RangeList r;
  r.reserve(cover.size());
  for (const auto& [lo, hi] : cover) r.emplace_back(lo, hi);
  return r;
}

void PendingRemap::End(uint64_t lo, uint64_t hi, bool clean) {
  const WriteEnd e{lo, hi, clean};
  EndAll(&e, 1);
}

void PendingRemap::EndAll(const WriteEnd* ends, size_t n) {
  MutexLock lock(&mu_);
  for (size_t k = 0; k < n; ++k) {
    const auto [lo, hi, clean] = ends[k];
    if (!in_flight_.empty()) {
      auto it = std::find(in_flight_.begin(), in_flight_.end(), std::make_pair(lo, hi));
      if (it != in_flight_.end()) {
        *it = in_flight_.back();
        in_flight_.pop_back();
      }
    }
    ended_.push_back({lo, hi, ++seq_, clean});
    Insert(cover_, lo, hi);
    if (!clean) Insert(suspect_, lo, hi);
  }
  Recount();
}

bool PendingRemap::Overlaps(uint64_t lo, uint64_t hi) const {
  if (empty()) return false;
  MutexLock lock(&mu_);
  for (const auto& r : in_flight_)
    if (r.first < hi && lo < r.second) return true;
  // The last range starting before hi is the only one that can reach lo.
  auto it = cover_.lower_bound(hi);
  if (it == cover_.begin()) return false;
  --it;
  return it->second > lo;
}

PendingRemap::Batch PendingRemap::Ended() const {
  MutexLock lock(&mu_);
  return Batch{Ranges(cover_), Ranges(suspect_), seq_};
}

void PendingRemap::Remapped(const Batch& batch) {
  MutexLock lock(&mu_);
  ended_.erase(std::remove_if(ended_.begin(), ended_.end(),
                              [&](const EndedWrite& w) { return w.seq <= batch.upto; }),
               ended_.end());
  cover_.clear();
  suspect_.clear();
  for (const EndedWrite& w : ended_) {
    Insert(cover_, w.lo, w.hi);
    if (!w.clean) Insert(suspect_, w.lo, w.hi);
  }
  Recount();
}

void PendingRemap::Clear() {
  MutexLock lock(&mu_);
  ended_.clear();
  cover_.clear();
  suspect_.clear();
  Recount();
}

}  // namespace ext4dio
