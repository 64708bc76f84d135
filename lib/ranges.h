// RangeList: sorted, disjoint half-open [start, end) ranges (bytes, blocks or
// clusters): building one, and finding where a position falls.
//
// Thread-safety: free functions over values.
#ifndef EXT4DIO_LIB_RANGES_H_
#define EXT4DIO_LIB_RANGES_H_

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace ext4dio {

using RangeList = std::vector<std::pair<uint64_t, uint64_t>>;

// Sorts `r` by start and merges ranges that overlap or touch.
inline void SortAndMerge(RangeList& r) {
  std::sort(r.begin(), r.end());
  RangeList merged;
  for (const auto& x : r) {
    if (!merged.empty() && x.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, x.second);
    } else {
      merged.push_back(x);
    }
  }
  r = std::move(merged);
}

// The first range of `r` that ends after `v` (r.end() when none does).
inline RangeList::const_iterator FirstEndingAfter(const RangeList& r, uint64_t v) {
  return std::upper_bound(r.begin(), r.end(), v,
                          [](uint64_t x, const std::pair<uint64_t, uint64_t>& e) {
                            return x < e.second;
                          });
}

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_RANGES_H_
