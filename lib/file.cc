#include "file.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "aligned.h"
#include "async_queue.h"
#include "errors.h"
#include "ext4_reader.h"
#include "fiemap.h"
#include "image_lock.h"
#include "remap.h"

namespace ext4dio {
namespace {

// Mounted files open in this process, by (st_dev, st_ino): a second
// descriptor of a file would break our own lease, so opens share one File.
std::mutex& RegistryMu() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}
std::map<std::pair<dev_t, ino_t>, std::weak_ptr<File>>& Registry() {
  static auto* r = new std::map<std::pair<dev_t, ino_t>, std::weak_ptr<File>>;
  return *r;
}

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

absl::StatusOr<std::shared_ptr<File>> File::Open(const OpenOptions& options) {
  if (options.queue_depth == 0 || options.queue_depth > 4096)
    return ErrnoError(EINVAL, absl::StrFormat("queue depth %d (1..4096)", options.queue_depth));
  if (options.target.image.empty()) return OpenMounted(options);
  return OpenImage(options);
}

std::shared_ptr<const MapState> File::SetMap(LoadedMap loaded) {
  WrittenSet written(loaded.map);
  return SetMap(std::move(loaded), std::move(written));
}

std::shared_ptr<const MapState> File::SetMap(LoadedMap loaded, WrittenSet written) {
  auto state = std::make_shared<MapState>();
  state->written = std::move(written);
  state->loaded = std::move(loaded);
  state->kernel_only = kernel_only_next_;
  std::lock_guard<std::mutex> lock(state_mu_);
  std::shared_ptr<const MapState> old = std::exchange(state_, std::move(state));
  current_.store(state_.get(), std::memory_order_release);
  return old;
}

std::shared_ptr<const MapState> File::snapshot() const {
  // A view shows every kernel-path write that has completed: re-map them
  // now rather than at the monitor's next round.
  if (mounted_ && pending_.ended() != 0) const_cast<File*>(this)->RemapPending();
  std::lock_guard<std::mutex> lock(state_mu_);
  return state_;
}

absl::Status File::SetUpBackend(const std::string& device_path) {
  auto geometry = ProbeGeometry(fd_direct_, device_path);
  if (!geometry.ok()) return geometry.status();
  align_ = Alignment{geometry->offset_align, geometry->memory_align};
  plan_.alignment = align_;
  plan_.max_io = options_.max_io ? options_.max_io : geometry->max_io;
  if (plan_.max_io < align_.offset) plan_.max_io = align_.offset;
  switch (options_.backend) {
    case BackendKind::kUring:
      if (!UringAvailable()) return ErrnoError(ENOSYS, "io_uring is not available here");
      backend_ = BackendKind::kUring;
      break;
    case BackendKind::kSync:
      backend_ = BackendKind::kSync;
      break;
    case BackendKind::kAuto:
      // Bio-based devices (zram, some dm) make io_uring punt every request
      // to worker threads: psync is faster there.
      backend_ = UringAvailable() && !geometry->bio_based ? BackendKind::kUring
                                                          : BackendKind::kSync;
      break;
  }
  // One queue made now: a broken backend fails at open, not at first I/O.
  // (Executors are made when first needed: the alignment may still change.)
  auto q = NewIoQueue(options_.queue_depth);
  if (!q.ok()) return q.status();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<File>> File::OpenImage(const OpenOptions& options) {
  std::shared_ptr<File> f(new File());
  f->options_ = options;
  f->os_ = options.os ? options.os : RealOs();
  const Target& t = options.target;
  f->name_ = t.inode ? absl::StrFormat("%s: inode %d", t.image, t.inode)
                     : absl::StrCat(t.image, ":", t.path);

  // Open and claim before reading the map, so no other writer changes what
  // we read.
  const int flags = (options.write ? O_RDWR : O_RDONLY);
  struct stat st;
  if (::stat(t.image.c_str(), &st) != 0) return ErrnoError(errno, "stat " + t.image);
  if (absl::Status s = CheckImageKind(t.image); !s.ok()) return s;  // before any open
  const bool is_blk = S_ISBLK(st.st_mode);
  f->fd_direct_ = f->os_->Open(t.image.c_str(), flags | O_DIRECT | (options.write && is_blk ? O_EXCL : 0), 0);
  if (f->fd_direct_ < 0) {
    const int err = -f->fd_direct_;
    if (err == EBUSY) {
      return LibError(EXT4DIO_E_IN_USE,
                      absl::StrCat(t.image, " is in use (mounted in some mount namespace, lazily "
                                            "unmounted with a file still open, or opened "
                                            "exclusively by another program)"));
    }
    if (options.write && (err == EACCES || err == EROFS || err == EPERM)) {
      return LibError(EXT4DIO_E_WRITE_REFUSED,
                      absl::StrCat(t.image, " cannot be opened for writing: ", strerror(err)));
    }
    return ErrnoError(err, "open " + t.image);
  }
  struct stat opened;
  if (::fstat(f->fd_direct_, &opened) != 0) return ErrnoError(errno, "stat " + t.image);
  if ((opened.st_mode & S_IFMT) != (st.st_mode & S_IFMT) || opened.st_dev != st.st_dev ||
      opened.st_ino != st.st_ino || opened.st_rdev != st.st_rdev)
    return ErrnoError(ESTALE, t.image + " changed while it was being opened");
  f->fd_buffered_ = f->os_->Open(t.image.c_str(), flags, 0);
  if (f->fd_buffered_ < 0) return ErrnoError(-f->fd_buffered_, "open " + t.image);
  std::string claim_warning;
  if (options.write) {
    // Locks on the image file and exclusive opens of the loop devices over
    // it (image_lock.h): every other writer and every mount, seen or not.
    auto claim = ImageClaim::Acquire(f->fd_direct_, t.image, &claim_warning);
    if (!claim.ok()) return claim.status();
    f->claim_ = std::move(*claim);
  }

  LoadOptions load;
  load.for_write = options.write;
  load.skip_ownership_check = options.skip_ownership_check;
  auto loaded = LoadMap(t, load);
  if (!loaded.ok()) return loaded.status();
  if (options.write && !loaded->write_status.ok()) return loaded->write_status;
  f->warning_ = loaded->warning;
  if (!claim_warning.empty()) {
    f->warning_ =
        f->warning_.empty() ? claim_warning : absl::StrCat(f->warning_, "; ", claim_warning);
  }
  f->SetMap(std::move(*loaded));
  if (absl::Status s = f->SetUpBackend(t.image); !s.ok()) return s;
  return f;
}

absl::StatusOr<std::shared_ptr<File>> File::OpenMounted(const OpenOptions& options) {
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

  std::lock_guard<std::mutex> registry_lock(RegistryMu());
  const auto key = std::make_pair(st.st_dev, st.st_ino);
  if (auto it = Registry().find(key); it != Registry().end()) {
    if (std::shared_ptr<File> open = it->second.lock()) {
      const OpenOptions& o = open->options_;
      // A reader may share a writer's File (its C handle stays read-only).
      const bool same = o.write == options.write && o.dsync == options.dsync &&
                        o.no_fallback == options.no_fallback && o.backend == options.backend &&
                        o.sqpoll == options.sqpoll;
      if (same || (o.write && !options.write)) return open;
      return LibError(EXT4DIO_E_IN_USE,
                      absl::StrFormat("%s is already open in this process (as %s) with other "
                                      "options; close it first or open it the same way",
                                      t.path, open->name_));
    }
    Registry().erase(it);
  }

  std::shared_ptr<File> f(new File());
  f->options_ = options;
  f->os_ = options.os ? options.os : RealOs();
  f->mounted_ = true;
  f->name_ = t.path;
  auto inspected = InspectMountedFile(t.path, path_fd);
  if (!inspected.ok()) return inspected.status();
  MountedFile& mf = *inspected;  // the inode of path_fd, so of `key`
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
  if (::fstat(f->fd_file_, &fst) != 0) return ErrnoError(errno, "stat " + t.path);
  if (fst.st_dev != mf.dev || fst.st_ino != mf.inode)
    return ErrnoError(ESTALE, t.path + " changed while it was being opened");
  ::close(std::exchange(mf.fd, -1));  // before the lease: it must be our only one
  f->info_ = std::move(mf);
  struct statx sx;
  if (::statx(f->fd_file_, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
      (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align != 0) {
    f->kernel_align_ = Alignment{sx.stx_dio_offset_align, std::max(sx.stx_dio_mem_align, 1u)};
  }

  // The fast path needs the device, readable metadata, and (for writers)
  // a device that accepts writes while mounted.
  std::string why_not;
  const std::string& dev = f->info_.device;
  if (!dev.empty())
    f->fd_direct_ = f->os_->Open(dev.c_str(), (options.write ? O_RDWR : O_RDONLY) | O_DIRECT, 0);
  if (dev.empty()) {
    // E.g. a bind mount inside a container with its own /dev.
    why_not = absl::StrCat("no device node for the filesystem (", f->info_.device_error,
                           "): fast path off, all I/O through the kernel, map from FIEMAP");
  } else if (f->fd_direct_ < 0) {
    why_not = absl::StrFormat(
        "cannot open %s for %s (%s%s): fast path off, all I/O through the kernel", dev,
        options.write ? "writing" : "reading", strerror(-f->fd_direct_),
        -f->fd_direct_ == EBUSY ? "; the kernel refuses writes to mounted block devices "
                                  "(bdev_allow_write_mounted=0?)"
                                : "");
  } else {
    ReaderOptions ro;
    ro.live = true;
    auto reader = Ext4Reader::Open(dev, ro);
    if (!reader.ok()) {
      if (!IsAccessError(reader.status())) return reader.status();
      why_not = absl::StrFormat("cannot read the metadata on %s (%s): fast path off", dev,
                                reader.status().message());
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
      } else if (!s.ok() && code != -EAGAIN) {
        return s;
      } else if (!s.ok()) {
        why_not = absl::StrCat("no lease (", s.message(),
                               "): the file is open elsewhere; I/O goes through the kernel "
                               "until it is not");
      }
    }
    if (!f->fast_.load()) {
      // The map for information (plans, ext4dio_file_map): from the device
      // when it can be read, else from FIEMAP.
      absl::StatusOr<LoadedMap> loaded =
          f->reader_ ? LoadMountedMap(*f->reader_, f->fd_file_, f->info_)
                     : LoadFiemapOnly(f->fd_file_, f->info_, "");
      if (!loaded.ok()) return loaded.status();
      {
        std::lock_guard<std::mutex> map_lock(f->map_mu_);
        f->SetMap(std::move(*loaded));
      }
      std::lock_guard<std::mutex> lock(f->warning_mu_);
      f->warning_ = why_not;
    }
  }
  if (f->can_fast_) f->monitor_ = std::thread([raw = f.get()] { raw->Monitor(); });
  Registry()[key] = f;
  return f;
}

File::~File() {
  if (monitor_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(monitor_mu_);
      monitor_stop_ = true;
    }
    monitor_cv_.notify_all();
    monitor_.join();
  }
  if (mounted_) {
    IoGate::Exclusive exclusive(gate_);
    TouchTimes();
    lease_.Release();
  }
  pool_.Clear();  // rings go before the descriptor they registered
  // The rings unregistered the descriptor before they went (os.cc), so this
  // close drops the last reference: an O_EXCL device claim ends here, and
  // claim_ (the image's locks) right after this body.
  if (fd_direct_ >= 0) os_->Close(fd_direct_);
  if (fd_buffered_ >= 0) os_->Close(fd_buffered_);
  if (fd_file_ >= 0) os_->Close(fd_file_);
  if (errors_count_fd_ >= 0) ::close(errors_count_fd_);
}

const char* File::backend_name() const {
  return backend_ == BackendKind::kUring ? "io_uring" : "psync";
}

FileStats File::stats() const {
  FileStats s;
  // Under exec_mu_: a retiring executor moves its counts into stats_.
  std::unique_lock<std::mutex> retiring(exec_mu_);
  s.fast_bytes = stats_[kFastBytes];
  s.fast_requests = stats_[kFastReq];
  s.rmw_bytes = stats_[kRmwBytes];
  s.rmw_requests = stats_[kRmwReq];
  s.buffered_bytes = stats_[kBufBytes];
  s.buffered_requests = stats_[kBufReq];
  s.read_bytes = stats_[kReadBytes];
  s.read_requests = stats_[kReadReq];
  s.zero_bytes = stats_[kZeroBytes];
  s.kernel_bytes = stats_[kKernelBytes];
  s.kernel_requests = stats_[kKernelReq];
  s.kernel_read_bytes = stats_[kKernelReadBytes];
  s.lease_breaks = stats_[kLeaseBreaks];
  s.remaps = stats_[kRemaps];
  // The executors' own counts (each written by its owner only).
  auto add = [&s](const DeviceExecutor& e) {
    const DeviceExecutor::Stats x = e.stats();
    s.fast_bytes += x.write_bytes;
    s.fast_requests += x.write_ops;
    s.read_bytes += x.read_bytes;
    s.read_requests += x.read_ops;
    s.zero_bytes += x.zero_bytes;
    s.kernel_bytes += x.kernel_bytes;
    s.kernel_requests += x.kernel_ops;
  };
  pool_.ForEach(add);
  for (const DeviceExecutor* e : async_executors_) add(*e);
  return s;
}

absl::StatusOr<std::unique_ptr<IoQueue>> File::NewIoQueue(uint32_t depth,
                                                          [[maybe_unused]] bool for_async) {
  QueueOptions qo;
  qo.depth = depth;
  qo.backend = backend_;
  qo.sqpoll = options_.sqpoll;
  // Every ring, mounted asynchronous ones included, is COOP_TASKRUN: a
  // lease break's gate still sees an idle owner's completions within a
  // timer tick (QueueOptions), so neither for_async nor
  // EXT4DIO_OPEN_REAP_PROMPTLY changes the ring any more.
  qo.file_fd = mounted_ ? fd_file_ : -1;  // kernel-path writes (AddKernelWrite)
  return os_->NewQueue(fd_direct_, qo);
}

// ---------------------------------------------------------------------------
// Device executors: a pool for synchronous callers, one per AsyncQueue.

DeviceExecutor::Context File::ExecContext() const {
  DeviceExecutor::Context c;
  c.name = &name_;
  c.current = &current_;
  c.ranges = const_cast<WriteRanges*>(&ranges_);
  c.write_flags = options_.dsync ? RWF_DSYNC : 0;
  c.offset_alignment = align_.offset;
  c.memory_alignment = align_.memory;
  c.kernel_write_ended = &File::KernelWriteEnded;
  c.kernel_arg = const_cast<File*>(this);
  return c;
}

absl::StatusOr<std::unique_ptr<DeviceExecutor>> File::NewExecutor(uint32_t depth,
                                                                  bool for_async) {
  auto q = NewIoQueue(depth, for_async);
  if (!q.ok()) return q.status();
  return std::make_unique<DeviceExecutor>(ExecContext(), std::move(*q));
}

// An executor for one synchronous call: from the pool (given back after),
// a new one added to it, or (every slot busy) a temporary one.
class File::Borrowed {
 public:
  explicit Borrowed(File& f) : f_(f) {
    lease_ = f.pool_.Take();
    if (lease_.executor != nullptr) return;
    auto made = f.NewExecutor(f.options_.queue_depth, /*for_async=*/false);
    if (!made.ok()) {
      error_ = made.status();
      return;
    }
    lease_ = f.pool_.Add(*made);
    if (lease_.executor == nullptr) temp_ = std::move(*made);
  }
  ~Borrowed() {
    if (temp_ != nullptr) {
      (void)temp_->Drain();
      f_.RetireExecutor(std::move(temp_));
    } else if (lease_.executor != nullptr && !lease_.executor->broken()) {
      // A broken ring (a failed reap) keeps its slot, never used again.
      f_.pool_.Give(lease_);
    }
  }
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;
  DeviceExecutor* get() const { return temp_ ? temp_.get() : lease_.executor; }
  absl::Status error() const {
    return error_.ok() ? ErrnoError(ENOMEM, f_.name_ + ": cannot set up an I/O queue")
                       : Prefixed(f_.name_ + ": setting up an I/O queue: ", error_);
  }

 private:
  File& f_;
  ExecutorPool::Lease lease_;
  std::unique_ptr<DeviceExecutor> temp_;
  absl::Status error_;
};

void File::RetireExecutor(std::unique_ptr<DeviceExecutor> ex) {
  bool member;  // an AsyncQueue's (a gate member in mounted mode)
  {
    std::lock_guard<std::mutex> lock(exec_mu_);
    member = std::find(async_executors_.begin(), async_executors_.end(), ex.get()) !=
             async_executors_.end();
  }
  // Not for a pool's temporary executor: its caller may be inside the gate,
  // and RemoveMember waits for a closer, which waits for that caller.
  if (member && mounted_) gate_.RemoveMember(ex.get());
  const DeviceExecutor::Stats s = ex->stats();
  {
    std::lock_guard<std::mutex> lock(exec_mu_);
    auto it = std::find(async_executors_.begin(), async_executors_.end(), ex.get());
    if (it != async_executors_.end()) async_executors_.erase(it);
    stats_[kFastBytes] += s.write_bytes;
    stats_[kFastReq] += s.write_ops;
    stats_[kReadBytes] += s.read_bytes;
    stats_[kReadReq] += s.read_ops;
    stats_[kZeroBytes] += s.zero_bytes;
  }
  ex.reset();  // the ring goes while the descriptor it registered is open
}

absl::Status File::FailureStatus(const DeviceExecutor::Failure& f) const {
  if (f.code == -EXT4DIO_E_INTERNAL) {
    // The executor's last check before the device refused it: a planner bug.
    return LibError(EXT4DIO_E_INTERNAL,
                    absl::StrFormat("%s: refusing a device write of %d bytes at device offset "
                                    "%d (file offset %d): outside the file's written extents",
                                    name_, f.length, f.device_offset, f.file_offset));
  }
  const std::string what = absl::StrFormat(
      "%s: %s of %d bytes at file offset %d (device offset %d) %s", name_,
      f.write ? "write" : "read", f.length, f.file_offset, f.device_offset,
      f.not_submitted ? "not submitted" : "failed");
  if (f.code <= -1000) return LibError(static_cast<ext4dio_error>(-f.code), what);
  return ErrnoError(static_cast<int>(-f.code), what);
}

PlanOptions File::MountedPlan(const MapState& m) const {
  PlanOptions options = plan_;
  options.kernel_only = &m.kernel_only;
  options.kernel_path = !options_.no_fallback;
  options.refusal = "only the kernel path can do, and no_fallback forbids it (nothing written)";
  return options;
}

absl::StatusOr<std::vector<Piece>> File::PlanWrite(uint64_t offset, uint64_t n,
                                                   bool show_refused) const {
  std::shared_ptr<const MapState> state = snapshot();
  if (mounted_ && !fast_path()) {
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
  PlanOptions options = mounted_ ? MountedPlan(*state) : plan_;
  options.show_refused = show_refused;
  return ext4dio::PlanWrite(state->loaded.map, state->written, offset, n, options);
}

uint64_t File::WritableUntil(uint64_t offset, uint64_t n) const {
  if (mounted_ && !options_.no_fallback) return offset + n;  // the kernel allocates
  return ext4dio::WritableUntil(snapshot()->loaded.map, offset, n);
}

uint64_t File::size() const {
  if (mounted_) {
    struct stat st;
    if (::fstat(fd_file_, &st) == 0) return static_cast<uint64_t>(st.st_size);
  }
  return snapshot()->loaded.map.file_size();
}

std::string File::warning() const {
  std::lock_guard<std::mutex> lock(warning_mu_);
  return warning_;
}

absl::StatusOr<uint32_t> File::CommitDirectWrite(DeviceExecutor& ex, uint64_t cookie, bool sync,
                                                 absl::Span<const Piece> pieces, const char* buf,
                                                 uint64_t offset) {
  const uint32_t r = ex.BeginRequest(cookie, /*write=*/true, sync);
  uint64_t bytes = 0;
  for (const Piece& p : pieces) {
    if (p.kind == Piece::kKernel) {
      // A concurrent kernel-path write (ConcurrentKernel said so): pending
      // from now until the executor reports its end.
      pending_.Begin(p.file_offset, p.file_offset + p.length);
      ex.AddKernelWrite(r, p.file_offset, buf + (p.file_offset - offset), p.length);
      bytes += p.length;
      continue;
    }
    if (p.kind != Piece::kDirect) continue;
    if (absl::Status s = ex.AddWrite(r, p.device_offset, p.file_offset,
                                     buf + (p.file_offset - offset), p.length);
        !s.ok()) {
      ex.Abort(r);
      return s;
    }
    bytes += p.length;
  }
  ex.SetResult(r, bytes);
  ex.Commit(r);
  return r;
}

absl::StatusOr<uint32_t> File::CommitRead(DeviceExecutor& ex, uint64_t cookie, bool sync,
                                          char* buf, uint64_t n, uint64_t offset) {
  std::vector<Piece>& pieces = ex.pieces();
  if (absl::Status s = PlanReadInto(cur().loaded.map, offset, n, plan_, &pieces); !s.ok())
    return Prefixed(name_ + ": ", s);
  const uint32_t r = ex.BeginRequest(cookie, /*write=*/false, sync);
  uint64_t total = 0, zero = 0;
  for (const Piece& p : pieces) {
    if (p.kind == Piece::kEof) break;
    char* d = buf + (p.file_offset - offset);
    if (p.kind == Piece::kZero) {
      std::memset(d, 0, p.length);
      zero += p.length;
    } else if (absl::Status s = ex.AddRead(r, p.device_offset, p.file_offset, d, p.length);
               !s.ok()) {
      ex.Abort(r);
      return s;
    }
    total = p.file_offset + p.length - offset;
  }
  ex.SetResult(r, total, zero);
  ex.Commit(r);
  return r;
}

absl::StatusOr<uint64_t> File::WaitFor(DeviceExecutor& ex, uint32_t r) {
  absl::StatusOr<AsyncCompletion> c = ex.Wait(r);
  if (!c.ok()) return c.status();
  if (c->result < 0) return FailureStatus(ex.last_failure());
  return static_cast<uint64_t>(c->result);
}

absl::Status File::WriteDirect(DeviceExecutor& ex, absl::Span<const Piece> pieces,
                               const char* buf, uint64_t offset) {
  if (std::none_of(pieces.begin(), pieces.end(),
                   [](const Piece& p) { return p.kind == Piece::kDirect; }))
    return absl::OkStatus();
  absl::StatusOr<uint32_t> r = CommitDirectWrite(ex, 0, /*sync=*/true, pieces, buf, offset);
  if (!r.ok()) return r.status();
  return WaitFor(ex, *r).status();
}

absl::Status File::WriteUnaligned(DeviceExecutor& ex, const Piece& p, const char* src) {
  const uint64_t a = align_.offset;
  if (p.kind == Piece::kBuffered) {
    if (!cur().written.Contains(p.device_offset, p.length)) {
      return FailureStatus(DeviceExecutor::Failure{-EXT4DIO_E_INTERNAL, p.file_offset, p.length,
                                                   p.device_offset, true, true});
    }
    // Exactly these bytes through the page cache: the kernel's own
    // read-modify-write of the page covers neighbours we may not touch
    // with direct I/O. Then write back and drop, so direct I/O agrees.
    uint64_t done = 0;
    while (done < p.length) {
      const ssize_t r = os_->Pwrite(fd_buffered_, src + done, p.length - done, p.device_offset + done);
      if (r <= 0) {
        return ErrnoError(r < 0 ? static_cast<int>(-r) : EIO,
                          absl::StrFormat("%s: write of %d bytes at file offset %d failed",
                                          name_, p.length - done, p.file_offset + done));
      }
      done += static_cast<uint64_t>(r);
    }
    const uint64_t page = 4096;
    const uint64_t start = AlignDown(p.device_offset, page);
    if (int rc = os_->WritebackAndDrop(fd_buffered_, start,
                                       AlignUp(p.device_offset + p.length, page) - start);
        rc < 0) {
      return ErrnoError(-rc, absl::StrFormat("%s: writing back %d bytes at file offset %d",
                                             name_, p.length, p.file_offset));
    }
    stats_[kBufBytes] += p.length;
    stats_[kBufReq] += 1;
    return absl::OkStatus();
  }
  // Read-modify-write of the unit, which lies wholly in the file's written
  // extents (the planner checked; the executor checks the write again).
  const uint64_t unit = AlignDown(p.device_offset, a);
  AlignedBuf buf = AllocAligned(align_.memory, a);
  if (!buf) return ErrnoError(ENOMEM, "read-modify-write buffer");
  const uint64_t unit_file = p.file_offset - (p.device_offset - unit);
  const uint64_t owner = WriteRanges::ThreadOwner();
  if (absl::Status s = ranges_.BeginRmw(unit, a, owner); !s.ok())
    return Prefixed(absl::StrFormat("%s: file offset %d: ", name_, p.file_offset), s);
  absl::Status s;
  for (const bool write : {false, true}) {
    if (write) std::memcpy(buf.get() + (p.device_offset - unit), src, p.length);
    const uint32_t r = ex.BeginRequest(0, write, /*sync=*/true, /*rmw_unit=*/true);
    s = write ? ex.AddWrite(r, unit, unit_file, buf.get(), a)
              : ex.AddRead(r, unit, unit_file, buf.get(), a);
    if (!s.ok()) {
      ex.Abort(r);
      break;
    }
    ex.SetResult(r, a);
    ex.Commit(r);
    s = WaitFor(ex, r).status();
    if (!s.ok()) break;
  }
  ranges_.EndRmw(unit, a, owner);
  if (s.ok()) {
    stats_[kRmwBytes] += p.length;
    stats_[kRmwReq] += 1;
  }
  return s;
}

absl::Status File::WritePieces(DeviceExecutor& ex, absl::Span<const Piece> pieces,
                               const char* buf, uint64_t offset, const Piece** failed) {
  // Direct pieces first (their ranges registered), then the unaligned ones
  // (a unit claimed for read-modify-write): never both held by one request.
  absl::Status s = WriteDirect(ex, pieces, buf, offset);
  for (const Piece& p : pieces) {
    if (!s.ok()) break;
    if (p.kind != Piece::kRmw && p.kind != Piece::kBuffered) continue;
    s = WriteUnaligned(ex, p, buf + (p.file_offset - offset));
    if (!s.ok() && failed != nullptr) *failed = &p;
  }
  return s;
}

absl::StatusOr<size_t> File::Pwrite(const void* buf, size_t n, uint64_t offset) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  if (mounted_) return PwriteMounted(nullptr, static_cast<const char*>(buf), n, offset);
  Borrowed ex(*this);
  if (ex.get() == nullptr) return ex.error();
  std::vector<Piece>& pieces = ex.get()->pieces();
  if (absl::Status s = ext4dio::PlanWriteInto(cur().loaded.map, cur().written, offset, n, plan_,
                                              &pieces);
      !s.ok()) {
    return Prefixed(name_ + ": ", s);
  }
  if (n == 0) return 0;
  if (absl::Status s = WritePieces(*ex.get(), pieces, static_cast<const char*>(buf), offset);
      !s.ok())
    return s;
  return n;
}

absl::StatusOr<size_t> File::Pread(void* buf, size_t n, uint64_t offset) {
  if (mounted_) return PreadMounted(nullptr, static_cast<char*>(buf), n, offset);
  Borrowed ex(*this);
  if (ex.get() == nullptr) return ex.error();
  return PreadMapped(*ex.get(), static_cast<char*>(buf), n, offset);
}

absl::StatusOr<size_t> File::PreadMapped(DeviceExecutor& ex, char* buf, size_t n,
                                         uint64_t offset) {
  absl::StatusOr<uint32_t> r = CommitRead(ex, 0, /*sync=*/true, buf, n, offset);
  if (!r.ok()) return r.status();
  return WaitFor(ex, *r);
}

// ---------------------------------------------------------------------------
// Asynchronous requests (AsyncQueue).

absl::StatusOr<File::Started> File::StartAsync(DeviceExecutor& ex, const AsyncRequest& req) {
  char* base = static_cast<char*>(req.buf);
  std::vector<Piece>& pieces = ex.pieces();
  if (req.write) {
    const MapState& m = cur();
    absl::Status planned =
        mounted_ ? ext4dio::PlanWriteInto(m.loaded.map, m.written, req.offset, req.length,
                                          MountedPlan(m), &pieces)
                 : ext4dio::PlanWriteInto(m.loaded.map, m.written, req.offset, req.length, plan_,
                                          &pieces);
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
    if (unaligned && mounted_) return Started::kBlocking;
    if (unaligned) {
      // Blocking: finish what is in flight, then run the whole request
      // here on this queue's ring, exactly as a synchronous write.
      if (absl::Status s = ex.Drain(); !s.ok()) return s;
      AsyncCompletion c;
      c.cookie = req.cookie;
      const Piece* failed = nullptr;
      absl::Status s = WritePieces(ex, pieces, base, req.offset, &failed);
      if (s.ok()) {
        c.result = static_cast<int64_t>(req.length);
      } else {
        c.result = CodeOf(s);
        // The unaligned piece that failed, or the direct pieces as a group.
        c.error_offset = failed ? failed->file_offset : req.offset;
        c.error_length = failed ? failed->length : req.length;
      }
      ex.Complete(c);
      return Started::kStarted;
    }
    if (mounted_ && direct) {
      if (absl::Status s = PrepareFastWrite(); !s.ok()) return s;
      NoteFastWrite();
    }
    if (kernel) kernel_dirty_ = true;
    // Every piece is direct or a concurrent kernel write here: the
    // request's result is req.length.
    absl::StatusOr<uint32_t> r =
        CommitDirectWrite(ex, req.cookie, /*sync=*/false, pieces, base, req.offset);
    if (!r.ok()) return r.status();
    return Started::kStarted;
  }
  // A range the kernel path wrote and the map does not show yet reads
  // through the kernel (pending_remap.h: checked before the map is read).
  if (mounted_ && pending_.Overlaps(req.offset, req.offset + req.length))
    return Started::kBlocking;
  absl::StatusOr<uint32_t> r =
      CommitRead(ex, req.cookie, /*sync=*/false, base, req.length, req.offset);
  if (!r.ok()) return r.status();
  return Started::kStarted;
}

absl::Status File::RunBlocking(DeviceExecutor& ex, const AsyncRequest& req) {
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

uint32_t File::EnterReaping(DeviceExecutor& ex) {
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

size_t File::SubmitAsync(DeviceExecutor& ex, absl::Span<const AsyncRequest> reqs,
                         absl::Status* refused) {
  size_t i = 0;
  if (!mounted_) {
    for (; i < reqs.size(); ++i) {
      if (reqs[i].write && !options_.write) {
        *refused = ErrnoError(EBADF, name_ + ": opened read-only");
        break;
      }
      absl::StatusOr<Started> st = StartAsync(ex, reqs[i]);
      if (!st.ok()) {
        *refused = st.status();
        break;
      }
    }
    // One submission for the batch. A failure here is a broken ring, which
    // the next Reap reports.
    (void)ex.Flush();
    return i;
  }
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

absl::Status File::Sync() {
  if (mounted_) {
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

// ---------------------------------------------------------------------------
// Mounted mode.

absl::Status File::StartFastPathLocked() {
  if (absl::Status s = lease_.Take(fd_file_, options_.write ? F_WRLCK : F_RDLCK); !s.ok())
    return s;
  // Nobody can open the file now to change its flags: check what may have
  // changed while we were away (chattr +i/+a/+j, a read-only remount, a
  // shutdown) before the device is written again.
  if (absl::Status s = RecheckFileLocked(); !s.ok()) {
    lease_.Release();
    return s;
  }
  // Nothing else has the file open now. Write back (and, for writers, drop)
  // its cached pages: delayed allocations become real blocks the map shows,
  // and no stale page can shadow what we write to the device. What cannot
  // be dropped (pinned pages) stays on the kernel path.
  absl::Status dropped = options_.write
                             ? DropCacheLocked()
                             : (::sync_file_range(fd_file_, 0, 0,
                                                  SYNC_FILE_RANGE_WAIT_BEFORE |
                                                      SYNC_FILE_RANGE_WRITE |
                                                      SYNC_FILE_RANGE_WAIT_AFTER) == 0
                                    ? absl::OkStatus()
                                    : ErrnoError(errno, name_ + ": writing back cached pages"));
  if (!dropped.ok()) {
    lease_.Release();
    return dropped;
  }
  {
    std::lock_guard<std::mutex> map_lock(map_mu_);
    if (absl::Status s = ReloadLocked(); !s.ok()) {
      lease_.Release();
      return s;
    }
  }
  if (!lease_.Held()) {
    lease_.Release();
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
  std::lock_guard<std::mutex> lock(warning_mu_);
  warning_ = cur().loaded.warning;
  return absl::OkStatus();
}

void File::StopFastPathLocked(const std::string& why, bool lease_break) {
  if (fast_.load()) {
    TouchTimes();
    fast_.store(false, std::memory_order_release);
    if (lease_break) ++stats_[kLeaseBreaks];
  }
  (void)SetFileDirect(false);  // the kernel path alone: as any other opener
  lease_.Release();
  std::lock_guard<std::mutex> lock(warning_mu_);
  warning_ = why;
}

bool File::SetFileDirect(bool direct) {
  if (file_direct_.load() == direct) return true;
  const int fl = ::fcntl(fd_file_, F_GETFL);
  if (fl < 0 || ::fcntl(fd_file_, F_SETFL, direct ? (fl | O_DIRECT) : (fl & ~O_DIRECT)) != 0)
    return false;
  file_direct_.store(direct, std::memory_order_release);
  return true;
}

absl::Status File::ReloadLocked() {
  auto loaded = LoadMountedMap(*reader_, fd_file_, info_);
  if (!loaded.ok()) return loaded.status();
  known_size_.store(loaded->map.file_size(), std::memory_order_release);
  SetMap(std::move(*loaded));
  // Inside an Exclusive: no kernel-path write is in flight, and the map
  // just read shows every one that ended.
  pending_.Clear();
  return absl::OkStatus();
}

void File::KernelWriteEnded(void* file, uint64_t offset, uint64_t length, bool clean) {
  static_cast<File*>(file)->pending_.End(offset, offset + length, clean);
}

void File::RemapPending() {
  std::unique_lock<std::mutex> map_lock(map_mu_);
  if (!fast_.load(std::memory_order_acquire)) return;  // a restart re-reads it all
  // What has ended so far; FIEMAP, read after this, shows all of it (the
  // kernel converts unwritten extents before it completes a write).
  const PendingRemap::Batch batch = pending_.Ended();
  if (batch.ranges.empty()) return;
  const MapState& old = cur();
  const ExtentMap& m = old.loaded.map;
  const uint64_t bs = m.block_size();
  auto fail = [&](const absl::Status& s) {
    map_lock.unlock();
    IoGate::Exclusive exclusive(gate_);
    StopFastPathLocked(absl::StrCat("re-mapping after kernel-path writes failed (", s.message(),
                                    "): fast path off"),
                       false);
  };
  struct stat st;
  if (::fstat(fd_file_, &st) != 0) return fail(ErrnoError(errno, "stat " + name_));
  RemapInput in;
  in.old = &old;
  in.batch = &batch;
  in.file_size = static_cast<uint64_t>(st.st_size);
  in.fiemap = [&](uint64_t offset, uint64_t length) -> absl::StatusOr<std::vector<Extent>> {
    auto fiemap = ReadFiemapRange(fd_file_, offset, length, /*sync=*/true, name_);
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
    map_lock.unlock();
    IoGate::Exclusive exclusive(gate_);
    if (!fast_.load()) return;
    absl::Status st = DropCacheLocked();
    if (st.ok()) {
      std::lock_guard<std::mutex> lock(map_mu_);
      st = ReloadLocked();
      if (st.ok()) ++stats_[kRemaps];
    }
    if (!st.ok()) {
      StopFastPathLocked(absl::StrCat("dropping the page cache after kernel-path writes failed (",
                                      st.message(), "): fast path off"),
                         false);
    }
    return;
  }
  std::shared_ptr<const MapState> retired =
      SetMap(std::move(next->loaded), std::move(next->written));
  // Only now: a reader that finds the range no longer pending loads the
  // new map (pending_remap.h).
  pending_.Remapped(batch);
  ++stats_[kRemaps];
  map_lock.unlock();
  // Callers inside the gate may still read the old map.
  gate_.Synchronize();
  retired.reset();
}

void File::TouchNow() {
  // mtime to now (ctime follows). Setting only mtime needs ownership; a
  // writer who is not the owner may still set both to now.
  const timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  if (::futimens(fd_file_, times) != 0 && (errno == EPERM || errno == EACCES))
    (void)::futimens(fd_file_, nullptr);
  last_touch_ns_.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now().time_since_epoch())
                           .count(),
                       std::memory_order_relaxed);
}

void File::TouchTimes() {
  // After fast-path writes, at sync/close/lease release and at least once a
  // second while writing (the monitor): mtime and ctime to now.
  if (!times_dirty_.exchange(false)) return;
  TouchNow();
}

absl::Status File::PrepareFastWrite() {
  // The kernel updates the times before the data lands (file_modified()):
  // so do we, once after open or sync, so a writer killed mid-write still
  // leaves a changed mtime; the monitor refreshes them while writing.
  if (touch_needed_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(touch_mu_);
    if (touch_needed_.load()) {
      TouchNow();
      touch_needed_.store(false, std::memory_order_release);
    }
  }
  return DropPrivilegesOnce();
}

absl::Status File::DropCacheLocked() {
  const uint64_t granule = std::max<uint64_t>({4096, static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)),
                                               info_.block_size, align_.offset});
  auto kept = DropFileCache(*os_, fd_file_, granule);
  if (!kept.ok()) return Prefixed(name_ + ": ", kept.status());
  kernel_only_next_ = std::move(*kept);
  return absl::OkStatus();
}

int64_t File::ErrorsCount() const {
  if (errors_count_fd_ < 0) return -1;
  char buf[32];
  const ssize_t n = ::pread(errors_count_fd_, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = '\0';
  return std::strtoll(buf, nullptr, 10);
}

absl::Status File::RecheckFileLocked() {
  if (absl::Status s = RefreshMountedFile(fd_file_, info_); !s.ok()) return s;
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

std::string File::WhyStopped() const {
  std::string why = FilesystemStopped(fd_file_);
  if (why.empty() && errors_baseline_ >= 0) {
    if (const int64_t errors = ErrorsCount(); errors > errors_baseline_) {
      why = absl::StrFormat("the filesystem recorded %d error(s) since it was opened "
                            "(errors=remount-ro makes it read-only; see dmesg)",
                            errors - errors_baseline_);
    }
  }
  return why;
}

void File::PollWhileFast() {
  if (!options_.write) return;
  if (std::string why = WhyStopped(); !why.empty()) {
    IoGate::Exclusive exclusive(gate_);
    StopFastPathLocked(absl::StrCat(why, ": fast path off; writes fail as the kernel's do"),
                       false);
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
  if ((::fstat(fd_file_, &st) == 0 &&
       ((st.st_mode & S_ISUID) || ((st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP)))) ||
      ::fgetxattr(fd_file_, "security.capability", nullptr, 0) >= 0) {
    privileges_done_ = false;
    if (wrote_since_poll_.exchange(false)) (void)DropPrivilegesOnce();
  } else {
    wrote_since_poll_ = false;
  }
}

absl::Status File::DropPrivilegesOnce() {
  if (privileges_done_.load(std::memory_order_acquire)) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(privileges_mu_);
  if (privileges_done_.load()) return absl::OkStatus();
  // The kernel's file_remove_privs(): set-user-ID always, set-group-ID when
  // group-executable, unless the writer has CAP_FSETID; file capabilities
  // always.
  struct stat st;
  if (::fstat(fd_file_, &st) != 0) return ErrnoError(errno, "stat " + name_);
  mode_t kill = 0;
  if (st.st_mode & S_ISUID) kill |= S_ISUID;
  if ((st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP)) kill |= S_ISGID;
  if (kill != 0 && !HasCapFsetid()) {
    if (::fchmod(fd_file_, st.st_mode & 07777 & ~kill) != 0)
      return ErrnoError(errno, name_ + ": clearing set-user/group-ID before writing");
  }
  if (::fgetxattr(fd_file_, "security.capability", nullptr, 0) >= 0 &&
      ::fremovexattr(fd_file_, "security.capability") != 0 && errno != ENODATA) {
    return ErrnoError(errno, name_ + ": removing file capabilities before writing");
  }
  privileges_done_.store(true, std::memory_order_release);
  return absl::OkStatus();
}

absl::StatusOr<size_t> File::KernelWrite(const char* buf, size_t n, uint64_t offset) {
  IoGate::Exclusive exclusive(gate_);
  std::lock_guard<std::mutex> map_lock(map_mu_);
  if (append_only_.load()) {
    struct stat st;
    if (::fstat(fd_file_, &st) != 0) return ErrnoError(errno, "stat " + name_);
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
  size_t done = 0;
  int err = 0;
  while (done < n) {
    const ssize_t r = os_->Pwrite(fd_file_, buf + done, n - done, offset + done);
    if (r <= 0) {
      err = r < 0 ? static_cast<int>(-r) : EIO;
      break;
    }
    done += static_cast<size_t>(r);
  }
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
  if (struct stat st; ::fstat(fd_file_, &st) == 0)
    known_size_.store(static_cast<uint64_t>(st.st_size), std::memory_order_release);
  if (done > 0) {
    kernel_dirty_ = true;
    stats_[kKernelBytes] += done;
    ++stats_[kKernelReq];
  }
  if (!coherent.ok()) {
    StopFastPathLocked(absl::StrCat("dropping the page cache after a kernel-path write failed (",
                                    coherent.message(), "): fast path off"),
                       false);
  }
  if (err != 0 && done == 0) {
    return ErrnoError(err, absl::StrFormat("%s: kernel-path write of %d bytes at file offset "
                                           "%d failed",
                                           name_, n, offset));
  }
  return done;
}

bool File::ConcurrentKernel(const Piece& p, const char* src, const MapState& m) const {
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

absl::StatusOr<size_t> File::KernelWriteConcurrent(const char* src, uint64_t n,
                                                   uint64_t offset) {
  pending_.Begin(offset, offset + n);
  kernel_dirty_ = true;
  uint64_t done = 0;
  int err = 0;
  while (done < n) {
    const ssize_t r = os_->Pwrite(fd_file_, src + done, n - done, offset + done);
    if (r <= 0) {
      err = r < 0 ? static_cast<int>(-r) : EIO;
      break;
    }
    done += static_cast<uint64_t>(r);
  }
  pending_.End(offset, offset + n, done == n);
  if (done > 0) {
    stats_[kKernelBytes] += done;
    ++stats_[kKernelReq];
  }
  if (err != 0 && done == 0) {
    return ErrnoError(err, absl::StrFormat("%s: kernel-path write of %d bytes at file offset "
                                           "%d failed",
                                           name_, n, offset));
  }
  return done;
}

absl::StatusOr<size_t> File::PwriteMounted(DeviceExecutor* given, const char* buf, size_t n,
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
      auto r = KernelWriteConcurrent(src, kp.length, pos);
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

absl::StatusOr<size_t> File::KernelRead(char* buf, size_t n, uint64_t offset) {
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

absl::StatusOr<size_t> File::PreadMounted(DeviceExecutor* given, char* buf, size_t n,
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

absl::Status File::Fsync() {
  if (!mounted_) return Sync();
  TouchTimes();
  touch_needed_ = true;
  int rc;
  do {
    rc = ::fsync(fd_file_);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return ErrnoError(errno, absl::StrCat(name_, ": fsync"));
  kernel_dirty_ = false;
  if (fd_direct_ >= 0) {
    if (int f = os_->Flush(fd_direct_); f < 0)
      return ErrnoError(-f, absl::StrCat(name_, ": flushing the device cache"));
  }
  return absl::OkStatus();
}

absl::Status File::Truncate(uint64_t size) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  if (!mounted_) {
    return LibError(EXT4DIO_E_WRITE_REFUSED,
                    name_ + ": truncating needs the filesystem; image mode never changes metadata");
  }
  if (size > static_cast<uint64_t>(INT64_MAX)) return ErrnoError(EFBIG, "size too large");
  IoGate::Exclusive exclusive(gate_);
  std::lock_guard<std::mutex> map_lock(map_mu_);
  if (::ftruncate(fd_file_, static_cast<off_t>(size)) != 0)
    return ErrnoError(errno, absl::StrFormat("%s: truncate to %d", name_, size));
  return AfterMetadataChangeLocked("truncate");
}

absl::Status File::AfterMetadataChangeLocked(const char* what) {
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
                       false);
    return Prefixed(absl::StrFormat("%s: writing back after %s: ", name_, what), s);
  }
  {
    if (absl::Status s = ReloadLocked(); !s.ok()) {
      StopFastPathLocked(absl::StrCat("re-reading the map after ", what, " failed (",
                                      s.message(), "): fast path off"),
                         false);
    }
  }
  return absl::OkStatus();
}

absl::Status File::Fallocate(int mode, uint64_t offset, uint64_t length) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  if (!mounted_) {
    return LibError(EXT4DIO_E_WRITE_REFUSED,
                    name_ + ": fallocate needs the filesystem; image mode never changes metadata");
  }
  const int allowed = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
  if ((mode & ~allowed) != 0 || length == 0 || offset > static_cast<uint64_t>(INT64_MAX) ||
      length > static_cast<uint64_t>(INT64_MAX) - offset) {
    return ErrnoError(EINVAL, absl::StrFormat("%s: fallocate mode 0x%x at %d, %d bytes", name_,
                                              mode, offset, length));
  }
  IoGate::Exclusive exclusive(gate_);
  std::lock_guard<std::mutex> map_lock(map_mu_);
  if (::fallocate(fd_file_, mode, static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
    return ErrnoError(errno, absl::StrFormat("%s: fallocate mode 0x%x at %d, %d bytes", name_,
                                             mode, offset, length));
  }
  return AfterMetadataChangeLocked("fallocate");
}

void File::Monitor() {
  using Clock = std::chrono::steady_clock;
  const auto poll = std::chrono::milliseconds(std::max<uint32_t>(options_.lease_poll_ms, 1));
  const auto retry = std::chrono::milliseconds(options_.lease_retry_ms);
  auto next_retry = Clock::now() + retry;
  std::unique_lock<std::mutex> lock(monitor_mu_);
  while (!monitor_stop_) {
    monitor_cv_.wait_for(lock, poll);
    if (monitor_stop_) break;
    lock.unlock();
    // lease_ is only changed on this thread (and before/after it runs).
    if (fast_.load()) {
      PollWhileFast();
    }
    if (!getenv("NOREMAP") && fast_.load() && pending_.ended() != 0 && MonotonicNs() >= remap_not_before_ns_) {
      // Off the hot path, at most a ninth of a core: a batch that took d
      // waits 8 d before the next one (ranges coalesce meanwhile).
      const int64_t t0 = MonotonicNs();
      RemapPending();
      const int64_t t1 = MonotonicNs();
      remap_not_before_ns_ = t1 + 8 * (t1 - t0);
    }
    if (fast_.load()) {
      if (!lease_.Held()) {
        IoGate::Exclusive exclusive(gate_);
        StopFastPathLocked(
            "another process opened or truncated the file: the lease was given up and I/O "
            "continues through the kernel until it can be retaken",
            true);
        next_retry = Clock::now() + retry;
      }
    } else if (Clock::now() >= next_retry) {
      IoGate::Exclusive exclusive(gate_);
      absl::Status s = StartFastPathLocked();
      if (!s.ok() && CodeOf(s) != -EAGAIN) {
        std::lock_guard<std::mutex> wl(warning_mu_);
        warning_ = absl::StrCat("fast path off: ", s.message());
      }
      next_retry = Clock::now() + retry;
    }
    lock.lock();
  }
}

absl::StatusOr<std::unique_ptr<AsyncQueue>> File::NewAsyncQueue(uint32_t depth) {
  auto ex = NewExecutor(depth, /*for_async=*/true);
  if (!ex.ok()) return ex.status();
  {
    std::lock_guard<std::mutex> lock(exec_mu_);
    async_executors_.push_back(ex->get());
  }
  if (mounted_) gate_.AddMember(ex->get());
  return std::make_unique<AsyncQueue>(shared_from_this(), std::move(*ex));
}

}  // namespace ext4dio
