// FakeOs: an Os that forwards every call to the real one, except where a
// test scripted a different answer: F_SETLEASE failing, F_GETLEASE
// reporting a break after N polls, a FIEMAP answer rewritten (or made up),
// fsync/fdatasync/write-back failing, cachestat reporting pages kept. It
// counts the calls it sees, so a test can tell which ones the code made.
//
// Thread-safety: script it before handing it to the code under test; the
// counters may be read from any thread.
#ifndef EXT4DIO_TEST_FAKE_OS_H_
#define EXT4DIO_TEST_FAKE_OS_H_

#include <fcntl.h>
#include <linux/fiemap.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "os.h"
#include "ranges.h"

namespace ext4dio::testing {

class FakeOs : public Os {
 public:
  // --- Scripts (0 or empty: forward to the real call).

  // F_SETLEASE to F_RDLCK/F_WRLCK fails with this errno (F_UNLCK still
  // reaches the kernel, so a real lease is always given back).
  int setlease_errno = 0;
  // F_SETOWN fails with this errno.
  int setown_errno = 0;
  // F_GETLEASE: the first `getlease_polls_before_break` polls are answered
  // by the kernel; every later one reports `getlease_broken` (F_UNLCK: a
  // writer is waiting; F_RDLCK: a reader is). -1: never break.
  int getlease_polls_before_break = -1;
  int getlease_broken = F_UNLCK;
  // FIEMAP: after the real ioctl, `fiemap_rewrite` may change the answer
  // (extents, their count, flags); it gets the number of FIEMAP calls made
  // so far (1 for the first). With `fiemap_replace`, the real ioctl is not
  // made at all and the rewrite alone answers (tmpfs has no FIEMAP).
  std::function<void(struct ::fiemap*, int call)> fiemap_rewrite;
  bool fiemap_replace = false;
  int fiemap_errno = 0;
  // fsync(2), fdatasync (Flush) and sync_file_range fail with these errnos.
  int fsync_errno = 0;
  int flush_errno = 0;
  int sync_file_range_errno = 0;
  // Cached bytes: with `cache_kept` set, CachedBytes answers as if exactly
  // these [start, end) file byte ranges stayed in the page cache (whatever
  // the kernel holds); `cachestat_errno` makes it fail.
  bool cache_scripted = false;
  RangeList cache_kept;
  int cachestat_errno = 0;

  // --- What was called.
  int calls(const std::string& what) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = calls_.find(what);
    return it == calls_.end() ? 0 : it->second;
  }
  // fcntl commands and arguments, in order.
  std::vector<std::pair<int, long>> fcntls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return fcntls_;
  }

  // --- Os.
  int Fcntl(int fd, int cmd, long arg) override {
    Count("fcntl");
    {
      std::lock_guard<std::mutex> lock(mu_);
      fcntls_.emplace_back(cmd, arg);
    }
    if (cmd == F_SETLEASE && arg != F_UNLCK && setlease_errno != 0) return -setlease_errno;
    if (cmd == F_SETOWN && setown_errno != 0) return -setown_errno;
    if (cmd == F_GETLEASE) {
      const int poll = getlease_polls_.fetch_add(1);
      if (getlease_polls_before_break >= 0 && poll >= getlease_polls_before_break)
        return getlease_broken;
    }
    return Os::Fcntl(fd, cmd, arg);
  }

  int Fiemap(int fd, struct ::fiemap* fm) override {
    const int call = Count("fiemap");
    if (fiemap_errno != 0) return -fiemap_errno;
    if (!fiemap_replace) {
      if (int rc = Os::Fiemap(fd, fm); rc < 0) return rc;
    }
    if (fiemap_rewrite) fiemap_rewrite(fm, call);
    return 0;
  }

  int Fsync(int fd) override {
    Count("fsync");
    return fsync_errno != 0 ? -fsync_errno : Os::Fsync(fd);
  }
  int Flush(int fd) override {
    Count("flush");
    return flush_errno != 0 ? -flush_errno : Os::Flush(fd);
  }
  int SyncFileRange(int fd, uint64_t offset, uint64_t n, unsigned flags) override {
    Count("sync_file_range");
    return sync_file_range_errno != 0 ? -sync_file_range_errno
                                      : Os::SyncFileRange(fd, offset, n, flags);
  }
  int64_t CachedBytes(int fd, uint64_t offset, uint64_t n) override {
    Count("cachestat");
    if (cachestat_errno != 0) return -cachestat_errno;
    if (!cache_scripted) return Os::CachedBytes(fd, offset, n);
    const uint64_t end = n == 0 ? UINT64_MAX : offset + n;
    int64_t bytes = 0;
    for (const auto& [lo, hi] : cache_kept) {
      const uint64_t a = std::max(lo, offset), b = std::min(hi, end);
      if (a < b) bytes += static_cast<int64_t>(b - a);
    }
    return bytes;
  }
  int Fstat(int fd, struct stat* st) override {
    Count("fstat");
    return Os::Fstat(fd, st);
  }
  int Statx(int fd, unsigned mask, struct statx* sx) override {
    Count("statx");
    return Os::Statx(fd, mask, sx);
  }

 private:
  // Returns the count after this call.
  int Count(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    return ++calls_[what];
  }

  mutable std::mutex mu_;
  std::map<std::string, int> calls_;
  std::vector<std::pair<int, long>> fcntls_;
  std::atomic<int> getlease_polls_{0};
};

}  // namespace ext4dio::testing

#endif  // EXT4DIO_TEST_FAKE_OS_H_
