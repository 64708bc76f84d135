// File: what image and mounted mode share -- opening (the mode is picked
// here), the map's publication, the device executors and the device I/O a
// plan turns into -- and image mode itself. Mounted mode's kernel path and
// re-map: mounted.cc; its fast path (lease, monitor, coherence): fast_path.cc.
#include "file.h"

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

#include "async_queue.h"
#include "ext4_reader.h"
#include "image_file.h"
#include "mounted_file.h"

namespace ext4dio {

const char* File::backend_name() const {
  return backend_ == BackendKind::kUring ? "io_uring" : "psync";
}

File::~File() { CloseDevice(); }

void File::CloseDevice() {
  pool_.Clear();  // rings go before the descriptor they registered
  // The rings unregistered the descriptor before they went (os.cc), so this
  // close drops the last reference: an O_EXCL device claim ends here.
  if (fd_direct_ >= 0) os_->Close(std::exchange(fd_direct_, -1));
  if (fd_buffered_ >= 0) os_->Close(std::exchange(fd_buffered_, -1));
}

absl::StatusOr<std::shared_ptr<File>> File::Open(const OpenOptions& options) {
  if (options.queue_depth == 0 || options.queue_depth > 4096)
    return ErrnoError(EINVAL, absl::StrFormat("queue depth %d (1..4096)", options.queue_depth));
  if (options.target.image.empty()) return MountedFile::Open(options);
  return ImageFile::Open(options);
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
  MutexLock lock(&state_mu_);
  std::shared_ptr<const MapState> old = std::exchange(state_, std::move(state));
  current_.store(state_.get(), std::memory_order_release);
  return old;
}

std::shared_ptr<const MapState> File::current() const {
  MutexLock lock(&state_mu_);
  return state_;
}

std::shared_ptr<const MapState> File::snapshot() const {
  // A view shows every kernel-path write that has completed: re-map them
  // now rather than at the monitor's next round.
  BeforeView();
  MutexLock lock(&state_mu_);
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



FileStats File::stats() const {
  FileStats s;
  // Under exec_mu_: a retiring executor moves its counts into stats_.
  MutexLock retiring(&exec_mu_);
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
  qo.file_fd = KernelFd();  // mounted: kernel-path writes (AddKernelWrite)
  return os_->NewQueue(fd_direct_, qo);
}

DeviceExecutor::Context File::ExecContext() const {
  DeviceExecutor::Context c;
  c.name = &name_;
  c.current = &current_;
  c.ranges = const_cast<WriteRanges*>(&ranges_);
  c.write_flags = options_.dsync ? RWF_DSYNC : 0;
  c.offset_alignment = align_.offset;
  c.memory_alignment = align_.memory;
  AdjustContext(c);
  return c;
}

absl::StatusOr<std::unique_ptr<DeviceExecutor>> File::NewExecutor(uint32_t depth,
                                                                  bool for_async) {
  auto q = NewIoQueue(depth, for_async);
  if (!q.ok()) return q.status();
  return std::make_unique<DeviceExecutor>(ExecContext(), std::move(*q));
}


absl::Status File::Borrowed::error() const {
  return error_.ok() ? ErrnoError(ENOMEM, f_.name_ + ": cannot set up an I/O queue")
                     : Prefixed(f_.name_ + ": setting up an I/O queue: ", error_);
}

void File::RetireExecutor(std::unique_ptr<DeviceExecutor> ex) {
  bool member;  // an AsyncQueue's (a gate member in mounted mode)
  {
    MutexLock lock(&exec_mu_);
    member = std::find(async_executors_.begin(), async_executors_.end(), ex.get()) !=
             async_executors_.end();
  }
  // Not for a pool's temporary executor: its caller may be inside the gate,
  // and RemoveMember waits for a closer, which waits for that caller.
  if (member) AsyncExecutorRetired(ex.get());
  const DeviceExecutor::Stats s = ex->stats();
  {
    MutexLock lock(&exec_mu_);
    auto it = std::find(async_executors_.begin(), async_executors_.end(), ex.get());
    if (it != async_executors_.end()) async_executors_.erase(it);
    stats_[kFastBytes] += s.write_bytes;
    stats_[kFastReq] += s.write_ops;
    stats_[kReadBytes] += s.read_bytes;
    stats_[kReadReq] += s.read_ops;
    stats_[kZeroBytes] += s.zero_bytes;
    stats_[kKernelBytes] += s.kernel_bytes;  // a queue's O_DIRECT writes on the file
    stats_[kKernelReq] += s.kernel_ops;
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




std::string File::warning(uint32_t* reason) const {
  MutexLock lock(&warning_mu_);
  if (reason != nullptr) *reason = fast_path_reason_;
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
      // once the executor reports its end.
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



absl::StatusOr<size_t> File::PreadMapped(DeviceExecutor& ex, char* buf, size_t n,
                                         uint64_t offset) {
  absl::StatusOr<uint32_t> r = CommitRead(ex, 0, /*sync=*/true, buf, n, offset);
  if (!r.ok()) return r.status();
  return WaitFor(ex, *r);
}



absl::StatusOr<std::unique_ptr<AsyncQueue>> File::NewAsyncQueue(uint32_t depth) {
  auto ex = NewExecutor(depth, /*for_async=*/true);
  if (!ex.ok()) return ex.status();
  {
    MutexLock lock(&exec_mu_);
    async_executors_.push_back(ex->get());
  }
  AsyncExecutorAdded(ex->get());
  return std::make_unique<AsyncQueue>(shared_from_this(), std::move(*ex));
}

}  // namespace ext4dio
