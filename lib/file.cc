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
#include "image_lock.h"

namespace ext4dio {

const char* File::backend_name() const {
  return backend_ == BackendKind::kUring ? "io_uring" : "psync";
}

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

std::shared_ptr<const MapState> File::current() const {
  std::lock_guard<std::mutex> lock(state_mu_);
  return state_;
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
    lease_->Release();
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

DeviceExecutor::Context File::ExecContext() const {
  DeviceExecutor::Context c;
  c.name = &name_;
  c.current = &current_;
  c.ranges = const_cast<WriteRanges*>(&ranges_);
  c.write_flags = options_.dsync ? RWF_DSYNC : 0;
  c.offset_alignment = align_.offset;
  c.memory_alignment = align_.memory;
  c.kernel_writes_ended = &File::KernelWritesEnded;
  c.kernel_arg = const_cast<File*>(this);
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
  return ext4dio::WritableUntil(current()->loaded.map, offset, n);
}

uint64_t File::size() const {
  if (mounted_) {
    struct stat st;
    if (os_->Fstat(fd_file_, &st) == 0) return static_cast<uint64_t>(st.st_size);
  }
  return current()->loaded.map.file_size();
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
  if (mounted_ && pending_.Overlaps(req.offset, req.offset + req.length))
    return Started::kBlocking;
  absl::StatusOr<uint32_t> r =
      CommitRead(ex, req.cookie, /*sync=*/false, base, req.length, req.offset);
  if (!r.ok()) return r.status();
  return Started::kStarted;
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
