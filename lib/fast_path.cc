// File, mounted mode's fast path: the write lease that makes it exclusive,
// starting it (re-checks, page-cache drop, map reload) and stopping it, the
// monitor thread that polls the lease, the filesystem's state and the
// pending re-maps, and what the kernel's own write would do to the inode
// (times, set-ID bits, capabilities).
#include "mounted_file.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "absl/strings/str_format.h"
#include "aligned.h"
#include "errors.h"
#include "ext4_reader.h"
#include "image_lock.h"

#include "page_cache.h"

namespace ext4dio {
namespace {

int64_t MonotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool HasCapFsetid() {
  __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  return (data[CAP_FSETID / 32].effective & (1u << (CAP_FSETID % 32))) != 0;
}

}  // namespace

absl::Status MountedFile::StartFastPathLocked() {
  if (absl::Status s = lease_->Take(fd_file_, options_.write ? F_WRLCK : F_RDLCK); !s.ok())
    return s;
  // Nobody can open the file now to change its flags: check what may have
  // changed while we were away (chattr +i/+a/+j, a read-only remount, a
  // shutdown) before the device is written again.
  if (absl::Status s = RecheckFileLocked(); !s.ok()) {
    lease_->Release();
    return s;
  }
  // Nothing else has the file open now. Write back (and, for writers, drop)
  // its cached pages: delayed allocations become real blocks the map shows,
  // and no stale page can shadow what we write to the device. What cannot
  // be dropped (pinned pages) stays on the kernel path.
  absl::Status dropped;
  if (options_.write) {
    dropped = DropCacheLocked();
  } else if (int rc = os_->SyncFileRange(fd_file_, 0, 0,
                                         SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                             SYNC_FILE_RANGE_WAIT_AFTER);
             rc < 0) {
    dropped = ErrnoError(-rc, name_ + ": writing back cached pages");
  }
  if (!dropped.ok()) {
    lease_->Release();
    return dropped;
  }
  {
    MutexLock map_lock(&map_mu_);
    if (absl::Status s = ReloadLocked(); !s.ok()) {
      lease_->Release();
      return s;
    }
  }
  if (!lease_->Held()) {
    lease_->Release();
    return ErrnoError(EAGAIN, "the lease was broken while the map was read");
  }
  // Kernel-path writes are O_DIRECT on our descriptor while the fast path
  // is on: aligned ones then run concurrently (ConcurrentKernel), and no
  // kernel-path I/O fills the page cache behind the device writes. Where
  // the file refuses O_DIRECT, every kernel-path write takes the locked path.
  if (options_.write) (void)SetFileDirect(true);
  privileges_done_ = false;  // mode bits may have changed while we were away
  touch_needed_ = true;      // others may have set the times meanwhile
  fast_.store(true, std::memory_order_release);
  MutexLock lock(&warning_mu_);
  warning_ = cur().loaded.warning;
  fast_path_reason_ = EXT4DIO_FAST_PATH_NONE;
  return absl::OkStatus();
}

void MountedFile::StopFastPathLocked(const std::string& why, bool lease_break,
                                     uint32_t reason) {
  if (fast_.load()) {
    TouchTimes();
    fast_.store(false, std::memory_order_release);
    if (lease_break) ++stats_[kLeaseBreaks];
  }
  (void)SetFileDirect(false);  // the kernel path alone: as any other opener
  lease_->Release();
  MutexLock lock(&warning_mu_);
  warning_ = why;
  fast_path_reason_ = reason;
}

void MountedFile::TouchNow() {
  // mtime to now (ctime follows). Setting only mtime needs ownership; a
  // writer who is not the owner may still set both to now.
  const timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  if (int rc = os_->Futimens(fd_file_, times); rc == -EPERM || rc == -EACCES)
    (void)os_->Futimens(fd_file_, nullptr);
  last_touch_ns_.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now().time_since_epoch())
                           .count(),
                       std::memory_order_relaxed);
}

void MountedFile::TouchTimes() {
  // After fast-path writes, at sync/close/lease release and at least once a
  // second while writing (the monitor): mtime and ctime to now.
  if (!times_dirty_.exchange(false)) return;
  TouchNow();
}

absl::Status MountedFile::PrepareFastWrite() {
  // The kernel updates the times before the data lands (file_modified()):
  // so do we, once after open or sync, so a writer killed mid-write still
  // leaves a changed mtime; the monitor refreshes them while writing.
  if (touch_needed_.load(std::memory_order_acquire)) {
    MutexLock lock(&touch_mu_);
    if (touch_needed_.load()) {
      TouchNow();
      touch_needed_.store(false, std::memory_order_release);
    }
  }
  return DropPrivilegesOnce();
}

absl::Status MountedFile::DropCacheLocked() {
  const uint64_t granule = std::max<uint64_t>({4096, static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)),
                                               info_.block_size, align_.offset});
  auto kept = DropFileCache(*os_, fd_file_, granule);
  if (!kept.ok()) return Prefixed(name_ + ": ", kept.status());
  kernel_only_next_ = std::move(*kept);
  return absl::OkStatus();
}

int64_t MountedFile::ErrorsCount() const {
  if (errors_count_fd_ < 0) return -1;
  char buf[32];
  const ssize_t n = ::pread(errors_count_fd_, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = '\0';
  return std::strtoll(buf, nullptr, 10);
}

absl::Status MountedFile::RecheckFileLocked() {
  if (absl::Status s = RefreshMountedFile(*os_, fd_file_, info_); !s.ok()) return s;
  if (absl::Status s = MountedRefusal(info_, options_.write); !s.ok()) return s;
  if (options_.write) {
    if (std::string why = WhyStopped(); !why.empty())
      return LibError(EXT4DIO_E_WRITE_REFUSED, absl::StrCat(name_, ": ", why));
  }
  append_only_ = (info_.flags & FS_APPEND_FL) != 0;
  if (append_only_ && options_.write) {
    return LibError(EXT4DIO_E_WRITE_REFUSED,
                    name_ + " is append-only (chattr +a): only writes at EOF, through the kernel");
  }
  return absl::OkStatus();
}

std::string MountedFile::WhyStopped() const {
  std::string why = FilesystemStopped(*os_, fd_file_);
  if (why.empty() && errors_baseline_ >= 0) {
    if (const int64_t errors = ErrorsCount(); errors > errors_baseline_) {
      why = absl::StrFormat("the filesystem recorded %d error(s) since it was opened "
                            "(errors=remount-ro makes it read-only; see dmesg)",
                            errors - errors_baseline_);
    }
  }
  return why;
}

void MountedFile::PollWhileFast() {
  if (!options_.write) return;
  if (std::string why = WhyStopped(); !why.empty()) {
    IoGate::Exclusive exclusive(gate_);
    StopFastPathLocked(absl::StrCat(why, ": fast path off; writes fail as the kernel's do"),
                       false, EXT4DIO_FAST_PATH_FS_STOPPED);
    return;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  if (times_dirty_.load() && now - last_touch_ns_.load() >= 1'000'000'000) TouchTimes();
  // Set-ID bits set meanwhile (chmod needs no open, so no lease break): the
  // kernel clears them on every write. Written since the last poll: clear
  // them now; else before the next write.
  struct stat st;
  if ((os_->Fstat(fd_file_, &st) == 0 &&
       ((st.st_mode & S_ISUID) || ((st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP)))) ||
      os_->Fgetxattr(fd_file_, "security.capability", nullptr, 0) >= 0) {
    privileges_done_ = false;
    if (wrote_since_poll_.exchange(false)) (void)DropPrivilegesOnce();
  } else {
    wrote_since_poll_ = false;
  }
}

absl::Status MountedFile::DropPrivilegesOnce() {
  if (privileges_done_.load(std::memory_order_acquire)) return absl::OkStatus();
  MutexLock lock(&privileges_mu_);
  if (privileges_done_.load()) return absl::OkStatus();
  // The kernel's file_remove_privs(): set-user-ID always, set-group-ID when
  // group-executable, unless the writer has CAP_FSETID; file capabilities
  // always.
  struct stat st;
  if (int rc = os_->Fstat(fd_file_, &st); rc < 0) return ErrnoError(-rc, "stat " + name_);
  mode_t kill = 0;
  if (st.st_mode & S_ISUID) kill |= S_ISUID;
  if ((st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP)) kill |= S_ISGID;
  if (kill != 0 && !HasCapFsetid()) {
    if (int rc = os_->Fchmod(fd_file_, st.st_mode & 07777 & ~kill); rc < 0)
      return ErrnoError(-rc, name_ + ": clearing set-user/group-ID before writing");
  }
  if (os_->Fgetxattr(fd_file_, "security.capability", nullptr, 0) >= 0) {
    if (int rc = os_->Fremovexattr(fd_file_, "security.capability"); rc < 0 && rc != -ENODATA)
      return ErrnoError(-rc, name_ + ": removing file capabilities before writing");
  }
  privileges_done_.store(true, std::memory_order_release);
  return absl::OkStatus();
}

void MountedFile::Monitor() {
  using Clock = std::chrono::steady_clock;
  const auto poll = std::chrono::milliseconds(std::max<uint32_t>(options_.lease_poll_ms, 1));
  const auto retry = std::chrono::milliseconds(options_.lease_retry_ms);
  auto next_retry = Clock::now() + retry;
  monitor_mu_.Lock();
  while (!monitor_stop_) {
    monitor_cv_.WaitWithTimeout(&monitor_mu_, absl::FromChrono(poll));
    if (monitor_stop_) break;
    monitor_mu_.Unlock();
    // lease_ is only changed on this thread (and before/after it runs).
    if (fast_.load()) {
      PollWhileFast();
    }
    FreeRetiredMaps();
    if (fast_.load() && pending_.ended() != 0 && MonotonicNs() >= remap_not_before_ns_) {
      // Off the hot path, at most a ninth of a core: a batch that took d
      // waits 8 d before the next one (ranges coalesce meanwhile).
      const int64_t t0 = MonotonicNs();
      RemapPending(/*monitor=*/true);
      const int64_t t1 = MonotonicNs();
      remap_not_before_ns_ = t1 + 8 * (t1 - t0);
    }
    if (fast_.load()) {
      if (!lease_->Held()) {
        IoGate::Exclusive exclusive(gate_);
        StopFastPathLocked(
            "another process opened or truncated the file: the lease was given up and I/O "
            "continues through the kernel until it can be retaken",
            true, EXT4DIO_FAST_PATH_LEASE_BROKEN);
        next_retry = Clock::now() + retry;
      }
    } else if (Clock::now() >= next_retry) {
      IoGate::Exclusive exclusive(gate_);
      absl::Status s = StartFastPathLocked();
      if (!s.ok() && CodeOf(s) != -EAGAIN) {
        MutexLock wl(&warning_mu_);
        warning_ = absl::StrCat("fast path off: ", s.message());
        fast_path_reason_ = EXT4DIO_FAST_PATH_RESTART_REFUSED;
      }
      next_retry = Clock::now() + retry;
    }
    monitor_mu_.Lock();
  }
  monitor_mu_.Unlock();
}

}  // namespace ext4dio
