#include "file.h"

#include <fcntl.h>
#include <sched.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "aligned.h"
#include "async_queue.h"
#include "errors.h"

namespace ext4dio {
namespace {

}  // namespace

// ---------------------------------------------------------------------------
struct File::Slot {
  std::unique_ptr<IoQueue> queue;
};

struct File::Op {
  IoOp::Kind kind;
  uint64_t device_offset;
  uint64_t file_offset;
  char* buf;
  uint64_t length;
};

absl::StatusOr<std::shared_ptr<File>> File::Open(const OpenOptions& options) {
  std::shared_ptr<File> f(new File());
  f->options_ = options;
  f->os_ = options.os ? options.os : RealOs();
  const Target& t = options.target;
  if (t.image.empty()) {
    return absl::UnimplementedError(absl::StrCat(
        t.path, ": I/O on files of a mounted filesystem is not available in this "
                "version; use --image with an image or unmounted device"));
  }
  f->name_ = t.inode ? absl::StrFormat("%s: inode %d", t.image, t.inode)
                     : absl::StrCat(t.image, ":", t.path);
  if (options.queue_depth == 0 || options.queue_depth > 4096)
    return ErrnoError(EINVAL, absl::StrFormat("queue depth %d (1..4096)", options.queue_depth));

  // Open and lock before reading the map, so no other writer changes what
  // we read.
  const int flags = (options.write ? O_RDWR : O_RDONLY);
  struct stat st;
  if (::stat(t.image.c_str(), &st) != 0) return ErrnoError(errno, "stat " + t.image);
  const bool is_blk = S_ISBLK(st.st_mode);
  if (options.write && !is_blk) {
    if (absl::Status s = CheckImageNotMounted(t.image); !s.ok()) return s;
  }
  f->fd_direct_ = f->os_->Open(t.image.c_str(), flags | O_DIRECT | (options.write && is_blk ? O_EXCL : 0), 0);
  if (f->fd_direct_ < 0) {
    const int err = -f->fd_direct_;
    if (err == EBUSY) {
      return LibError(EXT4DIO_E_IN_USE,
                      absl::StrCat(t.image, " is in use (mounted, or opened exclusively "
                                            "by another program)"));
    }
    if (options.write && (err == EACCES || err == EROFS || err == EPERM)) {
      return LibError(EXT4DIO_E_WRITE_REFUSED,
                      absl::StrCat(t.image, " cannot be opened for writing: ", strerror(err)));
    }
    return ErrnoError(err, "open " + t.image);
  }
  f->fd_buffered_ = f->os_->Open(t.image.c_str(), flags, 0);
  if (f->fd_buffered_ < 0) return ErrnoError(-f->fd_buffered_, "open " + t.image);
  if (options.write && !is_blk && ::flock(f->fd_direct_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return LibError(EXT4DIO_E_IN_USE,
                      absl::StrCat(t.image, " is locked by another writer (flock)"));
    }
    return ErrnoError(errno, "flock " + t.image);
  }

  auto loaded = LoadMap(t);
  if (!loaded.ok()) return loaded.status();
  f->loaded_ = std::move(*loaded);
  if (options.write && !f->loaded_.write_status.ok()) return f->loaded_.write_status;

  auto geometry = ProbeGeometry(f->fd_direct_, t.image);
  if (!geometry.ok()) return geometry.status();
  f->align_ = Alignment{geometry->offset_align, geometry->memory_align};
  f->plan_.alignment = f->align_;
  f->plan_.max_io = options.max_io ? options.max_io : geometry->max_io;
  if (f->plan_.max_io < f->align_.offset) f->plan_.max_io = f->align_.offset;
  f->written_ = WrittenSet(f->loaded_.map);

  switch (options.backend) {
    case BackendKind::kUring:
      if (!UringAvailable()) return ErrnoError(ENOSYS, "io_uring is not available here");
      f->backend_ = BackendKind::kUring;
      break;
    case BackendKind::kSync:
      f->backend_ = BackendKind::kSync;
      break;
    case BackendKind::kAuto:
      // Bio-based devices (zram, some dm) make io_uring punt every request
      // to worker threads: psync is faster there.
      f->backend_ = UringAvailable() && !geometry->bio_based ? BackendKind::kUring
                                                             : BackendKind::kSync;
      break;
  }
  // One queue made now: a broken backend fails at open, not at first I/O.
  auto q = f->NewIoQueue(options.queue_depth);
  if (!q.ok()) return q.status();
  auto slot = std::make_unique<Slot>();
  slot->queue = std::move(*q);
  f->ReleaseSlot(std::move(slot));
  return f;
}

File::~File() {
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    pool_.clear();  // rings go before the descriptor they registered
  }
  // io_uring releases registered files asynchronously after its rings go,
  // so the flock would outlive us for a moment: drop it explicitly.
  if (fd_direct_ >= 0 && options_.write) ::flock(fd_direct_, LOCK_UN);
  if (fd_direct_ >= 0) os_->Close(fd_direct_);
  if (fd_buffered_ >= 0) os_->Close(fd_buffered_);
}

const char* File::backend_name() const {
  return backend_ == BackendKind::kUring ? "io_uring" : "psync";
}

FileStats File::stats() const {
  FileStats s;
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
  return s;
}

absl::StatusOr<std::unique_ptr<IoQueue>> File::NewIoQueue(uint32_t depth) {
  QueueOptions qo;
  qo.depth = depth;
  qo.backend = backend_;
  qo.sqpoll = options_.sqpoll;
  return os_->NewQueue(fd_direct_, qo);
}

std::unique_ptr<File::Slot> File::AcquireSlot() {
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (!pool_.empty()) {
      auto s = std::move(pool_.back());
      pool_.pop_back();
      return s;
    }
  }
  auto q = NewIoQueue(options_.queue_depth);
  if (!q.ok()) return nullptr;
  auto s = std::make_unique<Slot>();
  s->queue = std::move(*q);
  return s;
}

void File::ReleaseSlot(std::unique_ptr<Slot> slot) {
  std::lock_guard<std::mutex> lock(pool_mu_);
  pool_.push_back(std::move(slot));
}

absl::StatusOr<std::vector<Piece>> File::PlanWrite(uint64_t offset, uint64_t n,
                                                   bool show_refused) const {
  PlanOptions options = plan_;
  options.show_refused = show_refused;
  return ext4dio::PlanWrite(loaded_.map, written_, offset, n, options);
}

uint64_t File::WritableUntil(uint64_t offset, uint64_t n) const {
  return ext4dio::WritableUntil(loaded_.map, offset, n);
}

absl::Status File::CheckInside(uint64_t device_offset, uint64_t length,
                               uint64_t file_offset) const {
  if (written_.Contains(device_offset, length)) return absl::OkStatus();
  // Reaching here is a bug in the planner: never write.
  return LibError(EXT4DIO_E_INTERNAL,
                  absl::StrFormat("%s: refusing a device write of %d bytes at device offset "
                                  "%d (file offset %d): outside the file's written extents",
                                  name_, length, device_offset, file_offset));
}

absl::Status File::RunOps(IoQueue& q, std::vector<Op>& ops) {
  absl::Status first_error;
  size_t next = 0;
  std::vector<size_t> retry;
  std::vector<IoOp> batch;
  IoResult results[64];
  const int flags = options_.dsync ? RWF_DSYNC : 0;
  while (true) {
    batch.clear();
    while (q.in_flight() + batch.size() < q.depth() && first_error.ok() &&
           (!retry.empty() || next < ops.size())) {
      size_t i;
      if (!retry.empty()) {
        i = retry.back();
        retry.pop_back();
      } else {
        i = next++;
      }
      const Op& op = ops[i];
      if (op.kind == IoOp::kWrite) {
        if (absl::Status s = CheckInside(op.device_offset, op.length, op.file_offset); !s.ok()) {
          first_error = s;
          break;
        }
      }
      batch.push_back(IoOp{op.kind, op.kind == IoOp::kWrite ? flags : 0,
                           static_cast<uint32_t>(op.length), op.device_offset, op.buf, i});
    }
    if (!batch.empty()) {
      if (absl::Status s = q.Submit(batch); !s.ok() && first_error.ok()) {
        const Op& op = ops[batch.front().tag];
        first_error = Prefixed(
            absl::StrFormat("%s: %s of %d bytes at file offset %d (device offset %d) not "
                            "submitted: ",
                            name_, op.kind == IoOp::kWrite ? "write" : "read", op.length,
                            op.file_offset, op.device_offset),
            s);
      }
    }
    if (q.in_flight() == 0) break;
    auto got = q.Reap(absl::MakeSpan(results), 1);
    if (!got.ok()) {
      // Cannot learn the fate of in-flight requests: report, and do not
      // touch their buffers again (the queue is dropped with the slot).
      return got.status();
    }
    for (size_t k = 0; k < *got; ++k) {
      Op& op = ops[results[k].tag];
      const int64_t r = results[k].result;
      const char* what = op.kind == IoOp::kWrite ? "write" : "read";
      if (r < 0) {
        if (first_error.ok()) {
          first_error = ErrnoError(
              static_cast<int>(-r),
              absl::StrFormat("%s: %s of %d bytes at file offset %d (device offset %d) failed",
                              name_, what, op.length, op.file_offset, op.device_offset));
        }
      } else if (r == 0) {
        if (first_error.ok()) {
          first_error = ErrnoError(
              EIO, absl::StrFormat("%s: %s of %d bytes at file offset %d (device offset %d) "
                                   "transferred nothing",
                                   name_, what, op.length, op.file_offset, op.device_offset));
        }
      } else if (static_cast<uint64_t>(r) < op.length) {
        // Short transfer: resubmit the remainder.
        op.device_offset += r;
        op.file_offset += r;
        op.buf += r;
        op.length -= r;
        retry.push_back(results[k].tag);
      }
    }
    if (!first_error.ok() && q.in_flight() == 0) break;
  }
  return first_error;
}

absl::Status File::WriteDirect(IoQueue& q, const std::vector<Piece>& pieces, const char* buf,
                               uint64_t offset) {
  std::vector<Op> ops;
  std::vector<AlignedBuf> bounces;
  std::vector<WriteRanges::Range> ranges;
  uint64_t bytes = 0;
  for (const Piece& p : pieces) {
    if (p.kind != Piece::kDirect) continue;
    const char* src = buf + (p.file_offset - offset);
    char* data = const_cast<char*>(src);
    if (reinterpret_cast<uintptr_t>(src) % align_.memory != 0) {
      bounces.push_back(AllocAligned(align_.memory, p.length));
      if (!bounces.back()) return ErrnoError(ENOMEM, "bounce buffer");
      std::memcpy(bounces.back().get(), src, p.length);
      data = bounces.back().get();
    }
    ops.push_back(Op{IoOp::kWrite, p.device_offset, p.file_offset, data, p.length});
    ranges.emplace_back(p.device_offset, p.device_offset + p.length);
    bytes += p.length;
  }
  if (ops.empty()) return absl::OkStatus();
  const uint64_t owner = WriteRanges::ThreadOwner();
  ranges_.BeginDirect(ranges, owner);
  absl::Status s = RunOps(q, ops);
  ranges_.EndDirect(ranges, owner);
  if (s.ok()) {
    stats_[kFastBytes] += bytes;
    stats_[kFastReq] += ops.size();
  }
  return s;
}

absl::Status File::WriteUnaligned(IoQueue& q, const Piece& p, const char* src) {
  const uint64_t a = align_.offset;
  if (p.kind == Piece::kBuffered) {
    if (absl::Status s = CheckInside(p.device_offset, p.length, p.file_offset); !s.ok()) return s;
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
  // extents (the planner checked; CheckInside checks again).
  const uint64_t unit = AlignDown(p.device_offset, a);
  AlignedBuf buf = AllocAligned(align_.memory, a);
  if (!buf) return ErrnoError(ENOMEM, "read-modify-write buffer");
  const uint64_t unit_file = p.file_offset - (p.device_offset - unit);
  const uint64_t owner = WriteRanges::ThreadOwner();
  if (absl::Status s = ranges_.BeginRmw(unit, a, owner); !s.ok())
    return Prefixed(absl::StrFormat("%s: file offset %d: ", name_, p.file_offset), s);
  std::vector<Op> read = {Op{IoOp::kRead, unit, unit_file, buf.get(), a}};
  absl::Status s = CheckInside(unit, a, unit_file);
  if (s.ok()) s = RunOps(q, read);
  if (s.ok()) {
    std::memcpy(buf.get() + (p.device_offset - unit), src, p.length);
    std::vector<Op> write = {Op{IoOp::kWrite, unit, unit_file, buf.get(), a}};
    s = RunOps(q, write);
  }
  ranges_.EndRmw(unit, a, owner);
  if (s.ok()) {
    stats_[kRmwBytes] += p.length;
    stats_[kRmwReq] += 1;
  }
  return s;
}

absl::StatusOr<size_t> File::Pwrite(const void* buf, size_t n, uint64_t offset) {
  if (!options_.write) return ErrnoError(EBADF, name_ + ": opened read-only");
  auto pieces = PlanWrite(offset, n);
  if (!pieces.ok()) return Prefixed(name_ + ": ", pieces.status());
  if (n == 0) return 0;
  std::unique_ptr<Slot> slot = AcquireSlot();
  if (!slot) return ErrnoError(ENOMEM, name_ + ": cannot set up an I/O queue");
  const char* src = static_cast<const char*>(buf);
  // Direct pieces first (region locks shared), then the unaligned ones (a
  // unit's region exclusive): never both held by one request.
  absl::Status s = WriteDirect(*slot->queue, *pieces, src, offset);
  for (const Piece& p : *pieces) {
    if (!s.ok()) break;
    if (p.kind == Piece::kRmw || p.kind == Piece::kBuffered)
      s = WriteUnaligned(*slot->queue, p, src + (p.file_offset - offset));
  }
  if (slot->queue->in_flight() == 0) ReleaseSlot(std::move(slot));
  if (!s.ok()) return s;
  return n;
}

absl::Status File::ReadDirect(IoQueue& q, const Piece& p, char* dst) {
  const uint64_t a = align_.offset;
  const uint64_t start = AlignDown(p.device_offset, a);
  const uint64_t end = AlignUp(p.device_offset + p.length, a);
  const bool aligned = start == p.device_offset && end == p.device_offset + p.length &&
                       reinterpret_cast<uintptr_t>(dst) % align_.memory == 0;
  std::vector<Op> ops;
  AlignedBuf bounce;
  if (aligned) {
    ops.push_back(Op{IoOp::kRead, p.device_offset, p.file_offset, dst, p.length});
  } else {
    bounce = AllocAligned(align_.memory, end - start);
    if (!bounce) return ErrnoError(ENOMEM, "bounce buffer");
    ops.push_back(Op{IoOp::kRead, start, p.file_offset - (p.device_offset - start),
                     bounce.get(), end - start});
  }
  absl::Status s = RunOps(q, ops);
  if (!s.ok()) return s;
  if (!aligned) std::memcpy(dst, bounce.get() + (p.device_offset - start), p.length);
  stats_[kReadBytes] += p.length;
  stats_[kReadReq] += 1;
  return absl::OkStatus();
}

absl::StatusOr<size_t> File::Pread(void* buf, size_t n, uint64_t offset) {
  auto pieces = PlanRead(loaded_.map, offset, n, plan_);
  if (!pieces.ok()) return Prefixed(name_ + ": ", pieces.status());
  char* dst = static_cast<char*>(buf);
  std::unique_ptr<Slot> slot;
  size_t total = 0;
  std::vector<Op> ops;
  std::vector<std::pair<AlignedBuf, const Piece*>> bounces;
  // Aligned pieces go out together; unaligned ones are bounced one by one.
  for (const Piece& p : *pieces) {
    if (p.kind == Piece::kEof) break;
    char* d = dst + (p.file_offset - offset);
    if (p.kind == Piece::kZero) {
      std::memset(d, 0, p.length);
      stats_[kZeroBytes] += p.length;
    } else {
      if (!slot) {
        slot = AcquireSlot();
        if (!slot) return ErrnoError(ENOMEM, name_ + ": cannot set up an I/O queue");
      }
      const bool aligned = p.device_offset % align_.offset == 0 &&
                           p.length % align_.offset == 0 &&
                           reinterpret_cast<uintptr_t>(d) % align_.memory == 0;
      if (aligned) {
        ops.push_back(Op{IoOp::kRead, p.device_offset, p.file_offset, d, p.length});
        stats_[kReadBytes] += p.length;
        stats_[kReadReq] += 1;
      } else if (absl::Status s = ReadDirect(*slot->queue, p, d); !s.ok()) {
        return s;
      }
    }
    total = p.file_offset + p.length - offset;
  }
  if (!ops.empty()) {
    if (absl::Status s = RunOps(*slot->queue, ops); !s.ok()) return s;
  }
  if (slot && slot->queue->in_flight() == 0) ReleaseSlot(std::move(slot));
  return total;
}

absl::Status File::Sync() {
  if (int rc = os_->Flush(fd_direct_); rc < 0)
    return ErrnoError(-rc, absl::StrCat(name_, ": flushing the device cache"));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AsyncQueue>> File::NewAsyncQueue(uint32_t depth) {
  auto q = NewIoQueue(depth);
  if (!q.ok()) return q.status();
  return std::unique_ptr<AsyncQueue>(new AsyncQueue(this, std::move(*q)));
}

}  // namespace ext4dio
