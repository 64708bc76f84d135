// The mounted path's system calls answered by a FakeOs (test/fake_os.h):
// Lease's failure and break paths, ReadFiemap's batches and errors, and
// DropFileCache reporting the ranges the page cache kept. Files live on
// tmpfs; no root needed (a lease on one's own file needs no privilege).
#include "fake_os.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "errors.h"
#include "fiemap.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lease.h"
#include "page_cache.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using testing::FakeOs;
using testing::TempDir;

constexpr uint64_t kB = 4096;

// A file of `size` bytes on tmpfs, open O_RDWR (our only descriptor of it).
class TmpFile {
 public:
  explicit TmpFile(uint64_t size) {
    testing::WriteFile(path(), std::string(size, 'x'));
    fd_ = ::open(path().c_str(), O_RDWR | O_CLOEXEC);
  }
  ~TmpFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  std::string path() const { return dir_ / "f"; }

 private:
  TempDir dir_;
  int fd_ = -1;
};

int RealLease(int fd) { return RealOs()->Fcntl(fd, F_GETLEASE, 0); }

// ---------------------------------------------------------------------------
// Lease.

TEST(FakeOsLeaseTest, EagainFromSetLeaseIsReturnedAndLeavesNothingBehind) {
  TmpFile f(kB);
  ASSERT_GE(f.fd(), 0);
  FakeOs os;
  os.setlease_errno = EAGAIN;
  Lease lease(os);
  const absl::Status s = lease.Take(f.fd(), F_WRLCK);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(CodeOf(s), -EAGAIN);
  EXPECT_THAT(s.message(), HasSubstr("taking a write lease"));
  EXPECT_FALSE(lease.taken());
  EXPECT_FALSE(lease.Held());
  // The signal was set before the attempt and cleared after it.
  const auto calls = os.fcntls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].first, F_SETSIG);
  EXPECT_NE(calls[0].second, 0);
  EXPECT_THAT(calls[1], Pair(F_SETLEASE, F_WRLCK));
  EXPECT_THAT(calls[2], Pair(F_SETSIG, 0));
  EXPECT_EQ(RealLease(f.fd()), F_UNLCK);
  // Release of a lease never taken makes no call.
  lease.Release();
  EXPECT_EQ(os.fcntls().size(), 3u);
}

TEST(FakeOsLeaseTest, ReadLeaseRefusalIsNamedAsSuch) {
  TmpFile f(kB);
  FakeOs os;
  os.setlease_errno = EAGAIN;
  Lease lease(os);
  const absl::Status s = lease.Take(f.fd(), F_RDLCK);
  EXPECT_EQ(CodeOf(s), -EAGAIN);
  EXPECT_THAT(s.message(), HasSubstr("taking a read lease"));
}

TEST(FakeOsLeaseTest, FailedSetOwnGivesTheLeaseBack) {
  TmpFile f(kB);
  FakeOs os;
  os.setown_errno = EPERM;
  Lease lease(os);
  const absl::Status s = lease.Take(f.fd(), F_WRLCK);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(CodeOf(s), -EPERM);
  EXPECT_THAT(s.message(), HasSubstr("F_SETOWN"));
  EXPECT_FALSE(lease.taken());
  // The kernel lease taken by F_SETLEASE was given up again.
  EXPECT_THAT(os.fcntls().back(), Pair(F_SETLEASE, F_UNLCK));
  EXPECT_EQ(RealLease(f.fd()), F_UNLCK);
}

TEST(FakeOsLeaseTest, HeldUntilGetLeaseReportsABreak) {
  TmpFile f(kB);
  FakeOs os;
  os.getlease_polls_before_break = 3;
  Lease lease(os);
  ASSERT_TRUE(lease.Take(f.fd(), F_WRLCK).ok());
  EXPECT_EQ(RealLease(f.fd()), F_WRLCK);
  // F_SETOWN 0 right after the lease: no signal at a break.
  const auto calls = os.fcntls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_THAT(calls[2], Pair(F_SETOWN, 0));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(lease.Held()) << "poll " << i;
  EXPECT_FALSE(lease.Held());
  EXPECT_TRUE(lease.taken());  // broken, not given up yet
  lease.Release();
  EXPECT_FALSE(lease.taken());
  EXPECT_EQ(RealLease(f.fd()), F_UNLCK);
  // Idempotent: one F_UNLCK however often it is called.
  lease.Release();
  int unlocks = 0;
  for (const auto& [cmd, arg] : os.fcntls()) unlocks += cmd == F_SETLEASE && arg == F_UNLCK;
  EXPECT_EQ(unlocks, 1);
}

TEST(FakeOsLeaseTest, AReadOnlyOpenerDowngradingTheTargetIsABreak) {
  TmpFile f(kB);
  FakeOs os;
  os.getlease_polls_before_break = 0;
  os.getlease_broken = F_RDLCK;  // what a write lease shows while a reader waits
  Lease lease(os);
  ASSERT_TRUE(lease.Take(f.fd(), F_WRLCK).ok());
  EXPECT_FALSE(lease.Held());
}

TEST(FakeOsLeaseTest, AReadLeaseIsHeldWhileGetLeaseSaysReadLease) {
  FakeOs os;
  Lease lease(os);
  {
    // Open for writing elsewhere (TmpFile's descriptor): no read lease.
    TmpFile f(kB);
    const int ro = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(ro, 0);
    testing::Defer close_ro([&] { ::close(ro); });
    EXPECT_EQ(CodeOf(lease.Take(ro, F_RDLCK)), -EAGAIN);
  }
  TempDir dir;
  testing::WriteFile(dir / "r", "data");
  const int rfd = ::open((dir / "r").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(rfd, 0);
  testing::Defer close_rfd([&] { ::close(rfd); });
  ASSERT_TRUE(lease.Take(rfd, F_RDLCK).ok());
  EXPECT_EQ(RealLease(rfd), F_RDLCK);
  EXPECT_TRUE(lease.Held());
  os.getlease_polls_before_break = 0;  // from now on: a writer waits
  os.getlease_broken = F_UNLCK;
  EXPECT_FALSE(lease.Held());
  lease.Release();
  EXPECT_EQ(RealLease(rfd), F_UNLCK);
}

TEST(FakeOsLeaseTest, DestructorGivesTheLeaseBack) {
  TmpFile f(kB);
  FakeOs os;
  {
    Lease lease(os);
    ASSERT_TRUE(lease.Take(f.fd(), F_WRLCK).ok());
    EXPECT_EQ(RealLease(f.fd()), F_WRLCK);
  }
  EXPECT_EQ(RealLease(f.fd()), F_UNLCK);
}

// ---------------------------------------------------------------------------
// ReadFiemap through Os::Fiemap.

// Answers a FIEMAP call with `extents` (logical, physical, length, flags).
void Answer(struct fiemap* fm, const std::vector<FiemapExtent>& extents) {
  ASSERT_LE(extents.size(), fm->fm_extent_count);
  fm->fm_mapped_extents = static_cast<uint32_t>(extents.size());
  for (size_t i = 0; i < extents.size(); ++i) {
    fm->fm_extents[i].fe_logical = extents[i].logical;
    fm->fm_extents[i].fe_physical = extents[i].physical;
    fm->fm_extents[i].fe_length = extents[i].length;
    fm->fm_extents[i].fe_flags = extents[i].flags;
  }
}

TEST(FakeOsFiemapTest, ReadsOnInBatchesUntilTheLastExtent) {
  TmpFile f(kB);
  FakeOs os;
  os.fiemap_replace = true;
  std::vector<std::pair<uint64_t, uint32_t>> asked;  // fm_start, fm_flags
  os.fiemap_rewrite = [&](struct fiemap* fm, int call) {
    asked.emplace_back(fm->fm_start, fm->fm_flags);
    if (call == 1) {
      Answer(fm, {{0, 100 * kB, 2 * kB, 0}, {4 * kB, 200 * kB, kB, 0}});
    } else {
      Answer(fm, {{5 * kB, 300 * kB, kB, FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_LAST}});
    }
  };
  auto got = ReadFiemap(os, f.fd(), /*sync=*/true, "f");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[2].physical, 300 * kB);
  // The second call starts where the first answer ended; only the first
  // asks the kernel to write back first.
  EXPECT_THAT(asked, ElementsAre(Pair(0u, FIEMAP_FLAG_SYNC), Pair(5 * kB, 0u)));
  auto extents = FiemapToExtents(*got, kB, 0, "f");
  ASSERT_TRUE(extents.ok()) << extents.status();
  EXPECT_THAT(*extents, ElementsAre(Extent{0, 100, 2, false}, Extent{4, 200, 1, false},
                                    Extent{5, 300, 1, true}));
}

TEST(FakeOsFiemapTest, AnIoctlErrorNamesTheFile) {
  TmpFile f(kB);
  FakeOs os;
  os.fiemap_errno = EIO;
  auto got = ReadFiemapRange(os, f.fd(), 0, kB, false, "the-file");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(CodeOf(got.status()), -EIO);
  EXPECT_THAT(got.status().message(), HasSubstr("FIEMAP on the-file"));
}

TEST(FakeOsFiemapTest, DelayedAllocationIsAMismatch) {
  TmpFile f(kB);
  FakeOs os;
  os.fiemap_replace = true;
  os.fiemap_rewrite = [&](struct fiemap* fm, int) {
    Answer(fm, {{0, 0, kB, FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_LAST}});
  };
  auto got = ReadFiemap(os, f.fd(), true, "f");
  ASSERT_TRUE(got.ok());
  auto extents = FiemapToExtents(*got, kB, 0, "f");
  ASSERT_FALSE(extents.ok());
  EXPECT_EQ(CodeOf(extents.status()), -EXT4DIO_E_MAP_MISMATCH);
  EXPECT_THAT(extents.status().message(), HasSubstr("delayed allocation"));
}

// ---------------------------------------------------------------------------
// DropFileCache.

TEST(FakeOsPageCacheTest, NothingKeptIsAnEmptyListAfterOneAttempt) {
  TmpFile f(64 * kB);
  FakeOs os;
  os.cache_scripted = true;
  auto kept = DropFileCache(os, f.fd(), kB);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_THAT(*kept, IsEmpty());
  EXPECT_EQ(os.calls("sync_file_range"), 1);
  EXPECT_EQ(os.calls("cachestat"), 1);
}

TEST(FakeOsPageCacheTest, KeptPagesAreReportedRoundedToTheGranule) {
  TmpFile f(64 * kB);
  FakeOs os;
  os.cache_scripted = true;
  os.cache_kept = {{5 * kB, 6 * kB}};
  auto kept = DropFileCache(os, f.fd(), kB);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_THAT(*kept, ElementsAre(Pair(5 * kB, 6 * kB)));
  EXPECT_EQ(os.calls("sync_file_range"), 2);  // tried twice before looking
  kept = DropFileCache(os, f.fd(), 4 * kB);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_THAT(*kept, ElementsAre(Pair(4 * kB, 8 * kB)));
  // Two ranges apart, one byte each; adjacent granules merge.
  os.cache_kept = {{100, 101}, {7 * kB + 5, 7 * kB + 6}, {8 * kB, 8 * kB + 1},
                   {63 * kB, 64 * kB}};
  kept = DropFileCache(os, f.fd(), kB);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_THAT(*kept, ElementsAre(Pair(0u, kB), Pair(7 * kB, 9 * kB), Pair(63 * kB, 64 * kB)));
}

TEST(FakeOsPageCacheTest, WritebackOrCachestatFailureIsAnError) {
  TmpFile f(8 * kB);
  FakeOs os;
  os.sync_file_range_errno = EIO;
  auto kept = DropFileCache(os, f.fd(), kB);
  ASSERT_FALSE(kept.ok());
  EXPECT_EQ(CodeOf(kept.status()), -EIO);
  EXPECT_THAT(kept.status().message(), HasSubstr("writing back"));
  FakeOs os2;
  os2.cachestat_errno = EOPNOTSUPP;
  kept = DropFileCache(os2, f.fd(), kB);
  ASSERT_FALSE(kept.ok());
  EXPECT_EQ(CodeOf(kept.status()), -EOPNOTSUPP);
  EXPECT_THAT(kept.status().message(), HasSubstr("cachestat"));
}

// The real calls behind the fake (the Os defaults) do what they say.
TEST(FakeOsTest, DefaultsAreTheRealCalls) {
  TmpFile f(2 * kB);
  FakeOs os;
  EXPECT_EQ(os.Fsync(f.fd()), 0);
  os.fsync_errno = EIO;
  EXPECT_EQ(os.Fsync(f.fd()), -EIO);
  EXPECT_EQ(os.Flush(f.fd()), 0);
  os.flush_errno = ENOSPC;
  EXPECT_EQ(os.Flush(f.fd()), -ENOSPC);
  const int fl = os.Fcntl(f.fd(), F_GETFL, 0);
  ASSERT_GE(fl, 0);
  EXPECT_EQ(fl & O_ACCMODE, O_RDWR);
  EXPECT_EQ(os.Fcntl(-1, F_GETFL, 0), -EBADF);
  struct stat st;
  ASSERT_EQ(os.Fstat(f.fd(), &st), 0);
  EXPECT_EQ(st.st_size, 2 * static_cast<off_t>(kB));
  EXPECT_EQ(os.Ftruncate(f.fd(), 3 * kB), 0);
  struct statx sx;
  ASSERT_EQ(os.Statx(f.fd(), STATX_SIZE, &sx), 0);
  EXPECT_EQ(sx.stx_size, 3 * kB);
  EXPECT_EQ(os.Fchmod(f.fd(), 0640), 0);
  ASSERT_EQ(os.Fstat(f.fd(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  const struct timespec times[2] = {{1000, 0}, {2000, 0}};
  EXPECT_EQ(os.Futimens(f.fd(), times), 0);
  ASSERT_EQ(os.Fstat(f.fd(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000);
  EXPECT_EQ(os.Fallocate(f.fd(), 0, 0, 4 * kB), 0);
  EXPECT_EQ(os.Fgetxattr(f.fd(), "user.nothing", nullptr, 0), -ENODATA);
  EXPECT_EQ(os.Fremovexattr(f.fd(), "user.nothing"), -ENODATA);
  EXPECT_EQ(os.SyncFileRange(f.fd(), 0, 0, SYNC_FILE_RANGE_WRITE), 0);
  EXPECT_EQ(os.calls("fsync"), 2);
}

}  // namespace
}  // namespace ext4dio
