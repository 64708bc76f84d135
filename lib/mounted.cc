// File, mounted mode: opening a file on a mounted ext4, the kernel path
// (concurrent O_DIRECT hole fills and unwritten conversions inside the
// gate, the locked path under its Exclusive), the deferred re-map that
// brings what it wrote into the map (remap.h), and metadata changes through
// the handle. The fast path's state machine: fast_path.cc.
#include "mounted_file.h"

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
#include "absl/strings/str_format.h"
#include "aligned.h"
#include "errors.h"
#include "ext4_reader.h"
#include "image_lock.h"

#include "fiemap.h"
#include "open_registry.h"
#include "remap.h"

namespace ext4dio {
namespace {

// The EXT4DIO_FAST_PATH_* code of a failed re-map.
uint32_t RemapFailureReason(const absl::Status& s) {
  return CodeOf(s) == -EXT4DIO_E_MAP_MISMATCH ? EXT4DIO_FAST_PATH_MAP_MISMATCH
                                              : EXT4DIO_FAST_PATH_REMAP_FAILED;
}

}  // namespace

absl::StatusOr<std::shared_ptr<File>> MountedFile::Open(const OpenOptions& options) {
  const Target& t = options.target;
  if (t.path.empty()) return ErrnoError(EINVAL, "no file given");
  if (t.inode != 0) return ErrnoError(EINVAL, "an inode number needs an image (--image)");
  // Key the registry by what is opened, not by what the path named a moment
  // earlier (a symlink swapped meanwhile would file B's handle under A's
  // key). O_PATH opens nothing: it breaks no lease (ours included) and
  // cannot block on a FIFO.
  const int path_fd = ::open(t.path.c_str(), O_PATH | O_CLOEXEC);
  if (path_fd < 0) return ErrnoError(errno, "open " + t.path);
  struct PathFd {
    int fd;
    ~PathFd() { ::close(fd); }
  } path_fd_guard{path_fd};
  struct stat st;
  if (::fstat(path_fd, &st) != 0) return ErrnoError(errno, "stat " + t.path);

  MutexLock registry_lock(&OpenRegistry::mu());
  {
    if (std::shared_ptr<File> open = OpenRegistry::Find(st.st_dev, st.st_ino)) {
      const OpenOptions& o = open->options();
      // A reader may share a writer's File (its C handle stays read-only).
      const bool same = o.write == options.write && o.dsync == options.dsync &&
                        o.no_fallback == options.no_fallback && o.backend == options.backend &&
                        o.sqpoll == options.sqpoll;
      if (same || (o.write && !options.write)) return open;
      return LibError(EXT4DIO_E_IN_USE,
                      absl::StrFormat("%s is already open in this process (as %s) with other "
                                      "options; close it first or open it the same way",
                                      t.path, open->name()));
    }
  }

  std::shared_ptr<MountedFile> f(new MountedFile());
  f->options_ = options;
  f->os_ = options.os ? options.os : RealOs();
  f->name_ = t.path;
  f->lease_ = std::make_unique<Lease>(*f->os_);
  auto inspected = InspectMountedFile(t.path, path_fd);
  if (!inspected.ok()) return inspected.status();
  MountedFileInfo& mf = *inspected;  // the inode of path_fd, so of `key`
  if (absl::Status s = MountedRefusal(mf, options.write); !s.ok()) return s;
  f->append_only_ = (mf.flags & FS_APPEND_FL) != 0;

  // Our one descriptor of the file, reopened through the inspected one so
  // it is the same inode whatever happens to the path meanwhile.
  const std::string self = absl::StrFormat("/proc/self/fd/%d", mf.fd);
  const int file_flags =
      options.write ? (O_RDWR | (f->append_only_ ? O_APPEND : 0)) : O_RDONLY;
  f->fd_file_ = f->os_->Open(self.c_str(), file_flags, 0);
  if (f->fd_file_ < 0) {
    const int err = -f->fd_file_;
    if (options.write && (err == EACCES || err == EPERM || err == EROFS || err == ETXTBSY))
      return LibError(EXT4DIO_E_WRITE_REFUSED,
                      absl::StrCat(t.path, " cannot be opened for writing: ", strerror(err)));
    return ErrnoError(err, "open " + t.path);
  }
  struct stat fst;
  if (int rc = f->os_->Fstat(f->fd_file_, &fst); rc < 0) return ErrnoError(-rc, "stat " + t.path);
  if (fst.st_dev != mf.dev || fst.st_ino != mf.inode)
    return ErrnoError(ESTALE, t.path + " changed while it was being opened");
  ::close(std::exchange(mf.fd, -1));  // before the lease: it must be our only one
  f->info_ = std::move(mf);
  struct statx sx;
  if (f->os_->Statx(f->fd_file_, STATX_DIOALIGN, &sx) == 0 &&
      (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align != 0) {
    f->kernel_align_ = Alignment{sx.stx_dio_offset_align, std::max(sx.stx_dio_mem_align, 1u)};
  }

  // The fast path needs the device, readable metadata, and (for writers)
  // a device that accepts writes while mounted.
  std::string why_not;
  uint32_t why_code = EXT4DIO_FAST_PATH_NONE;  // why_not's EXT4DIO_FAST_PATH_*
  const std::string& dev = f->info_.device;
  if (!dev.empty())
    f->fd_direct_ = f->os_->Open(dev.c_str(), (options.write ? O_RDWR : O_RDONLY) | O_DIRECT, 0);
  if (dev.empty()) {
    // E.g. a bind mount inside a container with its own /dev.
    why_not = absl::StrCat("no device node for the filesystem (", f->info_.device_error,
                           "): fast path off, all I/O through the kernel, map from FIEMAP");
    why_code = EXT4DIO_FAST_PATH_NO_DEVICE;
  } else if (f->fd_direct_ < 0) {
    why_not = absl::StrFormat(
        "cannot open %s for %s (%s%s): fast path off, all I/O through the kernel", dev,
        options.write ? "writing" : "reading", strerror(-f->fd_direct_),
        -f->fd_direct_ == EBUSY ? "; the kernel refuses writes to mounted block devices "
                                  "(bdev_allow_write_mounted=0?)"
                                : "");
    const int err = -f->fd_direct_;
    why_code = err == EBUSY                    ? EXT4DIO_FAST_PATH_DEVICE_REFUSED
               : err == EACCES || err == EPERM ? EXT4DIO_FAST_PATH_NO_PRIVILEGE
                                               : EXT4DIO_FAST_PATH_DEVICE_UNAVAILABLE;
  } else {
    ReaderOptions ro;
    ro.live = true;
    auto reader = Ext4Reader::Open(dev, ro);
    if (!reader.ok()) {
      if (!IsAccessError(reader.status())) return reader.status();
      why_not = absl::StrFormat("cannot read the metadata on %s (%s): fast path off", dev,
                                reader.status().message());
      why_code = EXT4DIO_FAST_PATH_NO_PRIVILEGE;  // only access errors come here
    } else {
      f->reader_ = std::move(*reader);
      if (f->reader_->fsid() != f->info_.fsid) {
        return LibError(EXT4DIO_E_MAP_MISMATCH,
                        absl::StrFormat("%s does not hold the filesystem of %s (UUIDs differ)",
                                        dev, t.path));
      }
      if (absl::Status s = f->SetUpBackend(dev); !s.ok()) return s;
      // Device writes in whole filesystem blocks (read-modify-write below
      // that): where the kernel cannot invalidate a cached device page under
      // an O_DIRECT write, it writes through that page instead, and a
      // partial buffer of it may hold stale bytes (e.g. a 1 KiB data block
      // sharing a 4 KiB page with a journaled extent leaf, read buffered by
      // anyone). A whole-block write overwrites the whole buffer.
      f->align_.offset = std::max<uint32_t>(f->align_.offset, f->info_.block_size);
      {
        const std::string errors = absl::StrCat(
            "/sys/fs/ext4/", dev.substr(dev.rfind('/') + 1), "/errors_count");
        f->errors_count_fd_ = ::open(errors.c_str(), O_RDONLY | O_CLOEXEC);
        f->errors_baseline_ = f->ErrorsCount();
      }
      f->plan_.alignment = f->align_;
      f->can_fast_ = true;
    }
  }
  if (f->append_only_ && options.write) {
    f->can_fast_ = false;
    why_not = "append-only (chattr +a): only writes at EOF, through the kernel";
    why_code = EXT4DIO_FAST_PATH_APPEND_ONLY;
  }

  {
    IoGate::Exclusive exclusive(f->gate_);
    if (f->can_fast_) {
      absl::Status s = f->StartFastPathLocked();
      const int code = CodeOf(s);
      if (!s.ok() && (code == -EACCES || code == -EPERM)) {
        // Not the file's owner and no CAP_LEASE: no lease, ever.
        f->can_fast_ = false;
        why_not = absl::StrCat("no write lease (", s.message(),
                               ": only the file's owner or CAP_LEASE may take one): fast "
                               "path off, all I/O through the kernel");
        why_code = EXT4DIO_FAST_PATH_NO_PRIVILEGE;
      } else if (!s.ok() && code != -EAGAIN) {
        return s;
      } else if (!s.ok()) {
        why_not = absl::StrCat("no lease (", s.message(),
                               "): the file is open elsewhere; I/O goes through the kernel "
                               "until it is not");
        why_code = EXT4DIO_FAST_PATH_LEASE_UNAVAILABLE;
      }
    }
    if (!f->fast_.load()) {
      // The map for information (plans, ext4dio_file_map): from the device
      // when it can be read, else from FIEMAP.
      absl::StatusOr<LoadedMap> loaded =
          f->reader_ ? LoadMountedMap(*f->os_, *f->reader_, f->fd_file_, f->info_)
                     : LoadFiemapOnly(*f->os_, f->fd_file_, f->info_, "");
      if (!loaded.ok()) return loaded.status();
      {
        MutexLock map_lock(&f->map_mu_);
        f->SetMap(std::move(*loaded));
      }
      MutexLock lock(&f->warning_mu_);
      f->warning_ = why_not;
      f->fast_path_reason_ = why_code;
    }
  }
  if (f->can_fast_) f->monitor_ = std::thread([raw = f.get()] { raw->Monitor(); });
  OpenRegistry::Add(st.st_dev, st.st_ino, f);
  return f;
}

PlanOptions MountedFile::MountedPlan(const MapState& m) const {
  PlanOptions options = plan_;
  options.kernel_only = &m.kernel_only;
  options.kernel_path = !options_.no_fallback;
  options.refusal = "only the kernel path can do, and no_fallback forbids it (nothing written)";
  return options;
}

absl::Status MountedFile::RunBlocking(DeviceExecutor& ex, const AsyncRequest& req) {
  if (absl::Status s = ex.Drain(); !s.ok()) return s;
  absl::StatusOr<size_t> r =
      req.write ? PwriteMounted(&ex, static_cast<const char*>(req.buf), req.length, req.offset)
                : PreadMounted(&ex, static_cast<char*>(req.buf), req.length, req.offset);
  if (!r.ok() && req.write && CodeOf(r.status()) == -EXT4DIO_E_NEEDS_ALLOCATION) {
    return r.status();  // refused before anything was written: not started
  }
  AsyncCompletion c;
  c.cookie = req.cookie;
  if (r.ok()) {
    c.result = static_cast<int64_t>(*r);
  } else {
    c.result = CodeOf(r.status());
    c.error_offset = req.offset;
    c.error_length = req.length;
  }
  ex.Complete(c);
  return absl::OkStatus();
}

uint32_t MountedFile::EnterReaping(DeviceExecutor& ex) {
  uint32_t token;
  auto wait = std::chrono::microseconds(20);
  while (!gate_.TryEnter(&token)) {
    // The gate is closed: an Exclusive waits for every caller inside, and
    // one of them may be a read-modify-write waiting for our unreaped
    // writes to its stripe (write_ranges.h). Blocking here without reaping
    // would close the cycle; a failed poll surfaces at the next Reap.
    (void)ex.Poll();
    std::this_thread::sleep_for(wait);
    wait = std::min(wait * 2, std::chrono::microseconds(1000));
  }
  return token;
}

size_t MountedFile::SubmitAsync(DeviceExecutor& ex, absl::Span<const AsyncRequest> reqs,
                                absl::Status* refused) {
  size_t i = 0;
  // Mounted: plan and start inside the gate, so no map change or lease
  // release can come between the plan and the device (Flush included).
  uint32_t token = EnterReaping(ex);
  for (; i < reqs.size(); ++i) {
    const AsyncRequest& rq = reqs[i];
    if (rq.write && !options_.write) {
      *refused = ErrnoError(EBADF, name_ + ": opened read-only");
      break;
    }
    bool blocking = !fast_.load(std::memory_order_acquire);
    if (!blocking) {
      absl::StatusOr<Started> st = StartAsync(ex, rq);
      if (!st.ok()) {
        *refused = st.status();
        break;
      }
      blocking = *st == Started::kBlocking;
    }
    if (blocking) {
      (void)ex.Flush();
      gate_.Exit(token);
      absl::Status s = RunBlocking(ex, rq);
      token = EnterReaping(ex);
      if (!s.ok()) {
        *refused = std::move(s);
        break;
      }
    }
  }
  (void)ex.Flush();
  gate_.Exit(token);
  return i;
}

bool MountedFile::SetFileDirect(bool direct) {
  if (file_direct_.load() == direct) return true;
  const int fl = os_->Fcntl(fd_file_, F_GETFL, 0);
  if (fl < 0 || os_->Fcntl(fd_file_, F_SETFL, direct ? (fl | O_DIRECT) : (fl & ~O_DIRECT)) < 0)
    return false;
  file_direct_.store(direct, std::memory_order_release);
  return true;
}

absl::Status MountedFile::ReloadLocked() {
  auto loaded = LoadMountedMap(*os_, *reader_, fd_file_, info_);
  if (!loaded.ok()) return loaded.status();
  known_size_.store(loaded->map.file_size(), std::memory_order_release);
  SetMap(std::move(*loaded));
  // Inside an Exclusive: no kernel-path write is in flight, and the map
  // just read shows every one that ended.
  pending_.Clear();
  return absl::OkStatus();
}

void MountedFile::KernelWritesEnded(void* file, const PendingRemap::WriteEnd* ends, size_t n) {
  static_cast<MountedFile*>(file)->pending_.EndAll(ends, n);
}

void MountedFile::RemapPending(bool monitor) {
  if (monitor) {
    if (!map_mu_.TryLock()) return;
  } else {
    map_mu_.Lock();
  }
  RemapOutcome out = RemapPendingLocked();
  map_mu_.Unlock();
  switch (out.kind) {
    case RemapOutcome::kNothing:
      return;
    case RemapOutcome::kFailed: {
      if (!monitor) return;  // the monitor's next round fails the same way, and stops
      IoGate::Exclusive exclusive(gate_);
      StopFastPathLocked(absl::StrCat("re-mapping after kernel-path writes failed (",
                                      out.status.message(), "): fast path off"),
                         false, RemapFailureReason(out.status));
      return;
    }
    case RemapOutcome::kStrayPages: {
      if (!monitor) return;  // left to the monitor's next round
      IoGate::Exclusive exclusive(gate_);
      if (!fast_.load()) return;
      absl::Status dropped = DropCacheLocked();
      if (dropped.ok()) {
        MutexLock lock(&map_mu_);
        dropped = ReloadLocked();
        if (dropped.ok()) ++stats_[kRemaps];
      }
      if (!dropped.ok()) {
        StopFastPathLocked(absl::StrCat("dropping the page cache after kernel-path writes "
                                        "failed (",
                                        dropped.message(), "): fast path off"),
                           false, EXT4DIO_FAST_PATH_CACHE_FAILED);
      }
      return;
    }
    case RemapOutcome::kPublished:
      break;
  }
  // Callers inside the gate may still read the old map.
  if (!monitor) {
    {
      MutexLock lock(&retired_mu_);
      retired_.push_back(std::move(out.retired));
    }
    monitor_cv_.SignalAll();  // to free it soon: views must not pile up maps
    return;
  }
  gate_.Synchronize();
  out.retired.reset();
  FreeRetiredMaps();
}

MountedFile::RemapOutcome MountedFile::RemapPendingLocked() {
  RemapOutcome out;
  if (!fast_.load(std::memory_order_acquire)) return out;  // a restart re-reads it all
  // What has ended so far; FIEMAP, read after this, shows all of it (the
  // kernel converts unwritten extents before it completes a write).
  const PendingRemap::Batch batch = pending_.Ended();
  if (batch.ranges.empty()) return out;
  const MapState& old = cur();
  const ExtentMap& m = old.loaded.map;
  const uint64_t bs = m.block_size();
  auto fail = [&](const absl::Status& s) {
    out.kind = RemapOutcome::kFailed;
    out.status = s;
    return out;
  };
  struct stat st;
  if (int rc = os_->Fstat(fd_file_, &st); rc < 0) return fail(ErrnoError(-rc, "stat " + name_));
  RemapInput in;
  in.old = &old;
  in.batch = &batch;
  in.file_size = static_cast<uint64_t>(st.st_size);
  in.fiemap = [&](uint64_t offset, uint64_t length) -> absl::StatusOr<std::vector<Extent>> {
    auto fiemap = ReadFiemapRange(*os_, fd_file_, offset, length, /*sync=*/true, name_);
    if (!fiemap.ok()) return fiemap.status();
    return FiemapToExtents(*fiemap, static_cast<uint32_t>(bs), 0, name_);
  };
  in.validate = [&](const std::vector<Extent>& e) { return reader_->ValidateExtents(e, {}); };
  absl::StatusOr<RemapOutput> next = Remap(in);
  if (!next.ok()) return fail(next.status());
  // Never assume: the kernel-path writes were O_DIRECT and should have left
  // no page behind in the cache -- ask before a device write can reach
  // what they wrote. Pages beyond those known pinned (kernel_only): drop
  // them all and re-read the map instead (the locked path's remedy).
  uint64_t pinned = 0;
  for (const auto& r : old.kernel_only) pinned += r.second - r.first;
  if (const int64_t cached = os_->CachedBytes(fd_file_, 0, 0);
      cached < 0 || static_cast<uint64_t>(cached) > pinned) {
    out.kind = RemapOutcome::kStrayPages;
    return out;
  }
  out.retired = SetMap(std::move(next->loaded), std::move(next->written));
  // Only now: a reader that finds the range no longer pending loads the
  // new map (pending_remap.h).
  pending_.Remapped(batch);
  ++stats_[kRemaps];
  out.kind = RemapOutcome::kPublished;
  return out;
}

void MountedFile::FreeRetiredMaps() {
  std::vector<std::shared_ptr<const MapState>> old;
  {
    MutexLock lock(&retired_mu_);
    old.swap(retired_);
  }
  if (old.empty()) return;
  gate_.Synchronize();  // every caller that may still read them has left
}

size_t MountedFile::WriteOnFile(const char* src, size_t n, uint64_t offset, int* err) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = os_->Pwrite(fd_file_, src + done, n - done, offset + done);
    if (r <= 0) {
      *err = r < 0 ? static_cast<int>(-r) : EIO;
      break;
    }
    done += static_cast<size_t>(r);
  }
  return done;
}

absl::StatusOr<size_t> MountedFile::KernelWrite(const char* buf, size_t n, uint64_t offset) {
  IoGate::Exclusive exclusive(gate_);
  DropRetiredMapsLocked();
  MutexLock map_lock(&map_mu_);
  if (append_only_.load()) {
    struct stat st;
    if (int rc = os_->Fstat(fd_file_, &st); rc < 0) return ErrnoError(-rc, "stat " + name_);
    if (offset != static_cast<uint64_t>(st.st_size)) {
      return LibError(EXT4DIO_E_WRITE_REFUSED,
                      absl::StrFormat("%s is append-only (chattr +a): a write must start at "
                                      "its end (%d), not at %d",
                                      name_, st.st_size, offset));
    }
  }
  const Alignment ka = kernel_align_;
  const bool aligned = offset % ka.offset == 0 && n % ka.offset == 0 &&
                       reinterpret_cast<uintptr_t>(buf) % ka.memory == 0;
  // O_DIRECT where aligned, else through the page cache; the descriptor's
  // mode is put back before the gate opens (others rely on it inside).
  const bool was_direct = file_direct_.load();
  const bool direct = SetFileDirect(aligned) && aligned;
  const bool fast = fast_.load();
  // Pending from the old EOF when it extends: the gap it leaves reads as
  // zeros now, where the map still ends.
  const uint64_t from = std::min<uint64_t>(offset, known_size_.load());
  if (fast) pending_.Begin(from, offset + n);
  int err = 0;
  const size_t done = WriteOnFile(buf, n, offset, &err);
  (void)SetFileDirect(was_direct);
  if (fast) pending_.End(from, offset + n, /*clean=*/false);  // FIEMAP tells
  absl::Status coherent;
  if (fast && (done > 0 || err != 0)) {
    // The kernel may have cached (and zeroed past the old EOF) pages outside
    // [offset, offset + done), e.g. the page holding the old EOF, and on
    // large folios a ranged drop drops nothing: drop the whole file, and
    // keep on the kernel path what the cache would not give up.
    coherent = DropCacheLocked();
    if (coherent.ok() && kernel_only_next_ != cur().kernel_only) {
      // Pages it kept (or let go): on the kernel path from now on (or no
      // longer), before the next fast-path write.
      if (absl::Status s = ReloadLocked(); !s.ok()) coherent = s;
    }
  } else if (!direct && done > 0) {
    // Written through the page cache: write it back and drop it, so the
    // blocks are allocated and mapped, and direct I/O and the cache agree.
    const uint64_t start = AlignDown(offset, 4096);
    if (int rc = os_->WritebackAndDrop(fd_file_, start, AlignUp(offset + done, 4096) - start);
        rc < 0 && err == 0) {
      err = -rc;
    }
  }
  if (struct stat st; os_->Fstat(fd_file_, &st) == 0)
    known_size_.store(static_cast<uint64_t>(st.st_size), std::memory_order_release);
  if (done > 0) {
    kernel_dirty_ = true;
    stats_[kKernelBytes] += done;
    ++stats_[kKernelReq];
  }
  if (!coherent.ok()) {
    StopFastPathLocked(absl::StrCat("dropping the page cache after a kernel-path write failed (",
                                    coherent.message(), "): fast path off"),
                       false, EXT4DIO_FAST_PATH_CACHE_FAILED);
  }
  if (err != 0 && done == 0) {
    return ErrnoError(err, absl::StrFormat("%s: kernel-path write of %d bytes at file offset "
                                           "%d failed",
                                           name_, n, offset));
  }
  return done;
}

bool MountedFile::ConcurrentKernel(const Piece& p, const char* src, const MapState& m) const {
  // Holes and unwritten extents inside EOF only: ext4 allocates or converts
  // without moving a block the map shows (so fast-path I/O elsewhere goes
  // on), and caches no page for an aligned O_DIRECT write. Extending,
  // unaligned and pinned-page writes take the locked path.
  if (!file_direct_.load(std::memory_order_acquire) || !fast_.load(std::memory_order_acquire))
    return false;
  const uint64_t unit = std::max<uint64_t>(kernel_align_.offset, m.loaded.map.block_size());
  if (p.file_offset % unit != 0 || p.length % unit != 0 ||
      reinterpret_cast<uintptr_t>(src) % kernel_align_.memory != 0)
    return false;
  if (p.file_offset + p.length > known_size_.load(std::memory_order_acquire)) return false;
  if (!m.kernel_only.empty()) {
    auto it = FirstEndingAfter(m.kernel_only, p.file_offset);
    if (it != m.kernel_only.end() && it->first < p.file_offset + p.length) return false;
  }
  return true;
}

absl::StatusOr<size_t> MountedFile::KernelWriteConcurrent(DeviceExecutor& ex, const char* src,
                                                   uint64_t n, uint64_t offset) {
  NoteKernelWrite();
  int err = 0;
  const uint64_t done = WriteOnFile(src, n, offset, &err);
  pending_.End(offset, offset + n, done == n);
  if (done > 0) ex.CountKernelWrite(done);  // the executor's own counters: no shared line
  if (err != 0 && done == 0) {
    return ErrnoError(err, absl::StrFormat("%s: kernel-path write of %d bytes at file offset "
                                           "%d failed",
                                           name_, n, offset));
  }
  return done;
}

absl::StatusOr<size_t> MountedFile::PwriteMounted(DeviceExecutor* given, const char* buf, size_t n,
                                           uint64_t offset) {
  if (n == 0) return 0;
  if (n > UINT64_MAX - offset) return ErrnoError(EINVAL, "offset + length overflows");
  const bool no_fallback = options_.no_fallback;
  auto refuse_kernel = [&](const std::string& why) {
    return LibError(EXT4DIO_E_NEEDS_ALLOCATION,
                    absl::StrFormat("%s: %s, and no_fallback forbids the kernel path "
                                    "(nothing written)",
                                    name_, why));
  };
  if (append_only_.load(std::memory_order_relaxed)) {
    if (no_fallback) return refuse_kernel("the file is append-only");
    return KernelWrite(buf, n, offset);
  }
  const uint64_t end = offset + n;
  uint64_t pos = offset;
  auto partial = [&](absl::Status s) -> absl::StatusOr<size_t> {
    if (pos > offset) return static_cast<size_t>(pos - offset);  // short, like pwrite
    return s;
  };
  while (pos < end) {
    const uint32_t token = gate_.Enter();
    if (!fast_.load(std::memory_order_acquire)) {
      gate_.Exit(token);
      if (no_fallback) {
        if (pos > offset) return static_cast<size_t>(pos - offset);
        return refuse_kernel("the fast path is off (" + warning() + ")");
      }
      auto r = KernelWrite(buf + (pos - offset), end - pos, pos);
      if (!r.ok()) return partial(r.status());
      pos += *r;
      if (pos < end) return static_cast<size_t>(pos - offset);
      break;
    }
    std::optional<Borrowed> borrowed;
    DeviceExecutor* ex = given;
    if (ex == nullptr) {
      borrowed.emplace(*this);
      ex = borrowed->get();
      if (ex == nullptr) {
        gate_.Exit(token);
        return partial(borrowed->error());
      }
    }
    const MapState& m = cur();
    std::vector<Piece>& pieces = ex->pieces();
    if (absl::Status s = ext4dio::PlanWriteInto(m.loaded.map, m.written, pos, end - pos,
                                                MountedPlan(m), &pieces);
        !s.ok()) {
      gate_.Exit(token);
      return partial(Prefixed(name_ + ": ", s));
    }
    size_t k = 0;
    while (k < pieces.size() && pieces[k].kind != Piece::kKernel) ++k;
    absl::Status s;
    if (k > 0) {
      s = PrepareFastWrite();
      if (s.ok()) s = WritePieces(*ex, absl::MakeConstSpan(pieces.data(), k), buf + (pos - offset), pos);
      NoteFastWrite();  // also after a failure: some bytes may have landed
    }
    if (!s.ok()) {
      gate_.Exit(token);
      return partial(s);
    }
    if (k == pieces.size()) {
      gate_.Exit(token);
      break;
    }
    const Piece kp = pieces[k];
    pos = kp.file_offset;
    const char* src = buf + (pos - offset);
    if (ConcurrentKernel(kp, src, m)) {
      // A hole fill or unwritten conversion: beside the fast path and
      // other such writes, without draining anything.
      auto r = KernelWriteConcurrent(*ex, src, kp.length, pos);
      gate_.Exit(token);
      if (!r.ok()) return partial(r.status());
      pos += *r;
      if (*r < kp.length) return static_cast<size_t>(pos - offset);
      continue;
    }
    gate_.Exit(token);
    borrowed.reset();
    auto r = KernelWrite(src, kp.length, pos);
    if (!r.ok()) return partial(r.status());
    pos += *r;
    if (*r < kp.length) return static_cast<size_t>(pos - offset);
  }
  return n;
}

absl::StatusOr<size_t> MountedFile::KernelRead(char* buf, size_t n, uint64_t offset) {
  auto read_all = [&](char* dst, uint64_t len, uint64_t at) -> absl::StatusOr<uint64_t> {
    uint64_t got = 0;
    while (got < len) {
      const ssize_t r = os_->Pread(fd_file_, dst + got, len - got, at + got);
      if (r < 0) {
        if (got > 0) break;
        return ErrnoError(static_cast<int>(-r),
                          absl::StrFormat("%s: read of %d bytes at file offset %d failed", name_,
                                          len, at));
      }
      if (r == 0) break;  // EOF
      got += static_cast<uint64_t>(r);
    }
    return got;
  };
  const Alignment ka = kernel_align_;
  const bool direct = file_direct_.load(std::memory_order_acquire);
  size_t done = 0;
  if (!direct || (offset % ka.offset == 0 && n % ka.offset == 0 &&
                  reinterpret_cast<uintptr_t>(buf) % ka.memory == 0)) {
    auto r = read_all(buf, n, offset);
    if (!r.ok()) return r.status();
    done = *r;
  } else {
    // O_DIRECT on the descriptor: the enclosing aligned range through a
    // bounce buffer, 1 MiB at a time.
    constexpr uint64_t kChunk = 1 << 20;
    AlignedBuf bounce = AllocAligned(ka.memory, kChunk + 2 * ka.offset);
    if (!bounce) return ErrnoError(ENOMEM, "kernel-path read buffer");
    while (done < n) {
      const uint64_t at = offset + done;
      const uint64_t lo = AlignDown(at, ka.offset);
      const uint64_t want = std::min<uint64_t>(n - done, kChunk);
      const uint64_t hi = AlignUp(at + want, ka.offset);
      auto r = read_all(bounce.get(), hi - lo, lo);
      if (!r.ok()) {
        if (done > 0) break;
        return r.status();
      }
      const uint64_t skip = at - lo;
      if (*r <= skip) break;  // EOF
      const uint64_t got = std::min<uint64_t>(*r - skip, want);
      std::memcpy(buf + done, bounce.get() + skip, got);
      done += got;
      if (got < want) break;  // EOF
    }
  }
  stats_[kKernelReadBytes] += done;
  return done;
}

absl::StatusOr<size_t> MountedFile::PreadMounted(DeviceExecutor* given, char* buf, size_t n,
                                          uint64_t offset) {
  // Inside the gate either way: the kernel path's exclusive section
  // switches O_DIRECT on the descriptor we read through.
  const uint32_t token = gate_.Enter();
  absl::StatusOr<size_t> r;
  if (!fast_.load(std::memory_order_acquire) ||
      (n > 0 && pending_.Overlaps(offset, offset + std::min<uint64_t>(n, UINT64_MAX - offset)))) {
    // Fast path off, or a range the kernel path wrote that the map does not
    // show yet (checked before the map is read: pending_remap.h).
    r = KernelRead(buf, n, offset);
  } else if (given != nullptr) {
    r = PreadMapped(*given, buf, n, offset);
  } else {
    Borrowed ex(*this);
    r = ex.get() ? PreadMapped(*ex.get(), buf, n, offset) : absl::StatusOr<size_t>(ex.error());
  }
  gate_.Exit(token);
  return r;
}

absl::Status MountedFile::Fsync() {
  TouchTimes();
  touch_needed_ = true;
  if (int rc = os_->Fsync(fd_file_); rc < 0)
    return ErrnoError(-rc, absl::StrCat(name_, ": fsync"));
  kernel_dirty_ = false;
  if (fd_direct_ >= 0) {
    if (int f = os_->Flush(fd_direct_); f < 0)
      return ErrnoError(-f, absl::StrCat(name_, ": flushing the device cache"));
  }
  return absl::OkStatus();
}

absl::Status MountedFile::Truncate(uint64_t size) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  if (size > static_cast<uint64_t>(INT64_MAX)) return ErrnoError(EFBIG, "size too large");
  IoGate::Exclusive exclusive(gate_);
  MutexLock map_lock(&map_mu_);
  if (int rc = os_->Ftruncate(fd_file_, size); rc < 0)
    return ErrnoError(-rc, absl::StrFormat("%s: truncate to %d", name_, size));
  return AfterMetadataChangeLocked("truncate");
}

absl::Status MountedFile::AfterMetadataChangeLocked(const char* what) {
  DropRetiredMapsLocked();
  kernel_dirty_ = true;
  // ext4 zeroes partial blocks (a truncated last block's tail, the ends of
  // a punched or zeroed range) in the page cache, not on the device: write
  // them back and drop them, or a later fast-path write of such a block
  // would be shadowed (and overwritten when ext4 writes the page back).
  ++stats_[kKernelReq];
  if (!fast_.load()) {
    if (int rc = os_->WritebackAndDrop(fd_file_, 0, 0); rc < 0)
      return ErrnoError(-rc, absl::StrFormat("%s: writing back after %s", name_, what));
    return absl::OkStatus();
  }
  if (absl::Status s = DropCacheLocked(); !s.ok()) {
    StopFastPathLocked(absl::StrCat("dropping the page cache after ", what, " failed (",
                                    s.message(), "): fast path off"),
                       false, EXT4DIO_FAST_PATH_CACHE_FAILED);
    return Prefixed(absl::StrFormat("%s: writing back after %s: ", name_, what), s);
  }
  {
    if (absl::Status s = ReloadLocked(); !s.ok()) {
      StopFastPathLocked(absl::StrCat("re-reading the map after ", what, " failed (",
                                      s.message(), "): fast path off"),
                         false, RemapFailureReason(s));
    }
  }
  return absl::OkStatus();
}

absl::Status MountedFile::Fallocate(int mode, uint64_t offset, uint64_t length) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  const int allowed = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
  if ((mode & ~allowed) != 0 || length == 0 || offset > static_cast<uint64_t>(INT64_MAX) ||
      length > static_cast<uint64_t>(INT64_MAX) - offset) {
    return ErrnoError(EINVAL, absl::StrFormat("%s: fallocate mode 0x%x at %d, %d bytes", name_,
                                              mode, offset, length));
  }
  IoGate::Exclusive exclusive(gate_);
  MutexLock map_lock(&map_mu_);
  if (int rc = os_->Fallocate(fd_file_, mode, offset, length); rc < 0) {
    return ErrnoError(-rc, absl::StrFormat("%s: fallocate mode 0x%x at %d, %d bytes", name_,
                                             mode, offset, length));
  }
  return AfterMetadataChangeLocked("fallocate");
}

MountedFile::~MountedFile() {
  if (monitor_.joinable()) {
    {
      MutexLock lock(&monitor_mu_);
      monitor_stop_ = true;
    }
    monitor_cv_.SignalAll();
    monitor_.join();
  }
  {
    IoGate::Exclusive exclusive(gate_);
    TouchTimes();
    lease_->Release();
  }
  CloseDevice();  // the rings, which registered fd_file_ too, before it
  if (fd_file_ >= 0) os_->Close(fd_file_);
  if (errors_count_fd_ >= 0) ::close(errors_count_fd_);
}

absl::StatusOr<size_t> MountedFile::Pwrite(const void* buf, size_t n, uint64_t offset) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  return PwriteMounted(nullptr, static_cast<const char*>(buf), n, offset);
}

absl::StatusOr<size_t> MountedFile::Pread(void* buf, size_t n, uint64_t offset) {
  return PreadMounted(nullptr, static_cast<char*>(buf), n, offset);
}

uint64_t MountedFile::WritableUntil(uint64_t offset, uint64_t n) const {
  if (!options_.no_fallback) return offset + n;  // the kernel allocates
  return ext4dio::WritableUntil(current()->loaded.map, offset, n);
}

uint64_t MountedFile::size() const {
  struct stat st;
  if (os_->Fstat(fd_file_, &st) == 0) return static_cast<uint64_t>(st.st_size);
  return current()->loaded.map.file_size();
}

void MountedFile::BeforeView() const {
  if (pending_.ended() != 0) const_cast<MountedFile*>(this)->RemapPending(/*monitor=*/false);
}

void MountedFile::AdjustContext(DeviceExecutor::Context& c) const {
  c.kernel_writes_ended = &MountedFile::KernelWritesEnded;
  c.kernel_arg = const_cast<MountedFile*>(this);
}

absl::Status MountedFile::Sync() {
  {
    TouchTimes();
    touch_needed_ = true;  // the next fast write bumps them first again
    if (kernel_dirty_.exchange(false) || fd_direct_ < 0) {
      if (int rc = os_->Flush(fd_file_); rc < 0) {
        kernel_dirty_ = true;
        return ErrnoError(-rc, absl::StrCat(name_, ": fdatasync"));
      }
    }
    if (fd_direct_ < 0) return absl::OkStatus();
  }
  if (int rc = os_->Flush(fd_direct_); rc < 0)
    return ErrnoError(-rc, absl::StrCat(name_, ": flushing the device cache"));
  return absl::OkStatus();
}

absl::StatusOr<MountedFile::Started> MountedFile::StartAsync(DeviceExecutor& ex, const AsyncRequest& req) {
  char* base = static_cast<char*>(req.buf);
  std::vector<Piece>& pieces = ex.pieces();
  if (req.write) {
    const MapState& m = cur();
    absl::Status planned = ext4dio::PlanWriteInto(m.loaded.map, m.written, req.offset,
                                                  req.length, MountedPlan(m), &pieces);
    if (!planned.ok()) return Prefixed(name_ + ": ", planned);
    bool unaligned = false, direct = false, kernel = false;
    for (const Piece& p : pieces) {
      if (p.kind == Piece::kDirect) {
        direct = true;
      } else if (p.kind == Piece::kKernel &&
                 ConcurrentKernel(p, base + (p.file_offset - req.offset), m)) {
        kernel = true;  // an O_DIRECT write on the file, in this ring
      } else {
        unaligned = true;
      }
    }
    if (unaligned) return Started::kBlocking;  // the locked path, or RMW
    if (direct) {
      if (absl::Status s = PrepareFastWrite(); !s.ok()) return s;
      NoteFastWrite();
    }
    if (kernel) NoteKernelWrite();
    // Every piece is direct or a concurrent kernel write here: the
    // request's result is req.length.
    absl::StatusOr<uint32_t> r =
        CommitDirectWrite(ex, req.cookie, /*sync=*/false, pieces, base, req.offset);
    if (!r.ok()) return r.status();
    return Started::kStarted;
  }
  // A range the kernel path wrote and the map does not show yet reads
  // through the kernel (pending_remap.h: checked before the map is read).
  if (pending_.Overlaps(req.offset, req.offset + req.length))
    return Started::kBlocking;
  absl::StatusOr<uint32_t> r =
      CommitRead(ex, req.cookie, /*sync=*/false, base, req.length, req.offset);
  if (!r.ok()) return r.status();
  return Started::kStarted;
}

absl::StatusOr<std::vector<Piece>> MountedFile::PlanWrite(uint64_t offset, uint64_t n,
                                                   bool show_refused) const {
  std::shared_ptr<const MapState> state = snapshot();
  if (!fast_path()) {
    if (n > UINT64_MAX - offset) return ErrnoError(EINVAL, "offset + length overflows");
    std::vector<Piece> all;
    if (n > 0) {
      all.push_back(Piece{options_.no_fallback ? Piece::kRefused : Piece::kKernel, offset, n, 0});
      if (options_.no_fallback && !show_refused) {
        return LibError(EXT4DIO_E_NEEDS_ALLOCATION,
                        "the fast path is off (" + warning() +
                            ") and no_fallback forbids the kernel path");
      }
    }
    return all;
  }
  PlanOptions options = MountedPlan(*state);
  options.show_refused = show_refused;
  return ext4dio::PlanWrite(state->loaded.map, state->written, offset, n, options);
}

}  // namespace ext4dio
