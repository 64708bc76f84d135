#include "page_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "aligned.h"
#include "errors.h"

namespace ext4dio {
namespace {

// Bisection budget: pinned pages are rare and few; if someone pins
// thousands of scattered pages, the rest of the range is kept on the kernel
// path as a whole rather than asked about page by page.
constexpr int kMaxQueries = 4096;

struct Finder {
  Os& os;
  int fd;
  uint64_t granule;
  int queries = 0;
  RangeList out;

  void Add(uint64_t lo, uint64_t hi) {
    if (!out.empty() && out.back().second >= lo) {
      out.back().second = std::max(out.back().second, hi);
    } else {
      out.emplace_back(lo, hi);
    }
  }

  // REQUIRES: [lo, hi) granule-aligned and known to hold cached pages.
  absl::Status Find(uint64_t lo, uint64_t hi) {
    if (hi - lo <= granule || queries >= kMaxQueries) {
      Add(lo, hi);
      return absl::OkStatus();
    }
    const uint64_t mid = lo + AlignDown((hi - lo) / 2, granule);
    for (auto [a, b] : {std::pair{lo, mid}, std::pair{mid, hi}}) {
      ++queries;
      const int64_t c = os.CachedBytes(fd, a, b - a);
      if (c < 0) return ErrnoError(static_cast<int>(-c), "asking the page cache (cachestat)");
      if (c > 0) {
        if (absl::Status s = Find(a, b); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }
};

}  // namespace

absl::StatusOr<RangeList> DropFileCache(Os& os, int fd, uint64_t granule) {
  int64_t cached = 0;
  // Twice: pages that were under write-back, or sat in a per-CPU LRU batch,
  // can survive the first attempt.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (int rc = os.WritebackAndDrop(fd, 0, 0); rc < 0)
      return ErrnoError(-rc, "writing back the file's cached pages");
    cached = os.CachedBytes(fd, 0, 0);
    if (cached < 0)
      return ErrnoError(static_cast<int>(-cached), "asking the page cache (cachestat)");
    if (cached == 0) return RangeList{};
  }
  struct stat st;
  if (int rc = os.Fstat(fd, &st); rc < 0) return ErrnoError(-rc, "stat");
  const uint64_t end = AlignUp(std::max<uint64_t>(static_cast<uint64_t>(st.st_size), 1), granule);
  Finder f{os, fd, granule};
  if (absl::Status s = f.Find(0, end); !s.ok()) return s;
  if (f.out.empty()) f.out.emplace_back(0, end);  // cached, but found nowhere: all of it
  return f.out;
}

}  // namespace ext4dio
