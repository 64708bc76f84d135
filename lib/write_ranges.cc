#include "write_ranges.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "absl/strings/str_format.h"
#include "errors.h"

namespace ext4dio {
namespace {

void Backoff(int& spins) {
  if (++spins < 64) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

bool Overlaps(uint64_t lo, uint64_t hi, uint64_t a, uint64_t b) { return lo < b && a < hi; }

}  // namespace

uint64_t WriteRanges::ThreadOwner() {
  static std::atomic<uint64_t> next{1};
  thread_local const uint64_t id = next.fetch_add(1);
  return id;
}

void WriteRanges::StripesOf(const Range& r, std::vector<int>* out) {
  out->clear();
  if (r.second <= r.first) return;
  const uint64_t first = r.first >> kShift, last = (r.second - 1) >> kShift;
  if (last - first + 1 >= kStripes) {
    for (int i = 0; i < kStripes; ++i) out->push_back(i);
    return;
  }
  for (uint64_t x = first; x <= last; ++x) out->push_back(static_cast<int>(x % kStripes));
  std::sort(out->begin(), out->end());
  out->erase(std::unique(out->begin(), out->end()), out->end());
}

void WriteRanges::Remove(Stripe& s, const Entry& e) {
  for (size_t i = 0; i < s.entries.size(); ++i) {
    const Entry& x = s.entries[i];
    if (x.lo == e.lo && x.hi == e.hi && x.owner == e.owner && x.rmw == e.rmw) {
      s.entries[i] = s.entries.back();
      s.entries.pop_back();
      return;
    }
  }
}

void WriteRanges::BeginDirect(absl::Span<const Range> ranges, uint64_t owner) {
  std::vector<int> stripes;
  std::vector<std::pair<int, Entry>> added;
  int spins = 0;
  for (;;) {
    bool conflict = false;
    for (const Range& r : ranges) {
      StripesOf(r, &stripes);
      for (int i : stripes) {
        Stripe& s = stripes_[i];
        std::lock_guard<std::mutex> lock(s.mu);
        for (const Entry& x : s.entries) {
          if (x.rmw && Overlaps(r.first, r.second, x.lo, x.hi)) conflict = true;
        }
        if (conflict) break;
        const Entry e{r.first, r.second, owner, false};
        s.entries.push_back(e);
        added.emplace_back(i, e);
      }
      if (conflict) break;
    }
    if (!conflict) return;
    // Undo and wait for the read-modify-write (short, holds nothing else).
    for (const auto& [i, e] : added) {
      std::lock_guard<std::mutex> lock(stripes_[i].mu);
      Remove(stripes_[i], e);
    }
    added.clear();
    Backoff(spins);
  }
}

void WriteRanges::EndDirect(absl::Span<const Range> ranges, uint64_t owner) {
  std::vector<int> stripes;
  for (const Range& r : ranges) {
    StripesOf(r, &stripes);
    for (int i : stripes) {
      std::lock_guard<std::mutex> lock(stripes_[i].mu);
      Remove(stripes_[i], Entry{r.first, r.second, owner, false});
    }
  }
}

absl::Status WriteRanges::BeginRmw(uint64_t unit, uint64_t length, uint64_t owner) {
  Stripe& s = stripes_[(unit >> kShift) % kStripes];
  int spins = 0;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(s.mu);
      bool busy = false;
      for (const Entry& x : s.entries) {
        if (!Overlaps(unit, unit + length, x.lo, x.hi)) continue;
        if (!x.rmw && x.owner == owner) {
          return ErrnoError(EDEADLK,
                            absl::StrFormat("read-modify-write of device bytes %d..%d: this "
                                            "thread's own asynchronous write to them is still "
                                            "unreaped (reap it first)",
                                            unit, unit + length - 1));
        }
        busy = true;
      }
      if (!busy) {
        s.entries.push_back(Entry{unit, unit + length, owner, true});
        return absl::OkStatus();
      }
    }
    Backoff(spins);
  }
}

void WriteRanges::EndRmw(uint64_t unit, uint64_t length, uint64_t owner) {
  Stripe& s = stripes_[(unit >> kShift) % kStripes];
  std::lock_guard<std::mutex> lock(s.mu);
  Remove(s, Entry{unit, unit + length, owner, true});
}

}  // namespace ext4dio
