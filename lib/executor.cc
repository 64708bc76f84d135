#include "executor.h"

#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "errors.h"
#include "map_state.h"

namespace ext4dio {

struct DeviceExecutor::Op {
  uint32_t req = 0;
  uint32_t gen = 0;  // bumped when the record is freed: stale completions
  bool live = false;
  bool zombie = false;  // its submission failed but the ring kept it
  bool on_file = false;  // kernel path: on the file's descriptor, at file offsets
  bool checked = false;  // passed the written-extent check (resubmits skip it)
  bool wrote_all = false;  // its last completion finished its whole length
  IoOp::Kind kind = IoOp::kRead;
  uint64_t kernel_offset = 0, kernel_length = 0;  // on_file: the whole write
  uint64_t device_offset = 0, file_offset = 0, length = 0;
  char* buf = nullptr;
  AlignedBuf bounce;  // owned bounce buffer (misaligned caller buffer)
  uint64_t bounce_bytes = 0;
  char* copy_dst = nullptr;  // bounced reads: copy bounce + copy_skip -> dst
  uint64_t copy_skip = 0, copy_n = 0;
};

struct DeviceExecutor::Req {
  uint64_t cookie = 0;
  bool write = false, sync = false, done = false, rmw_unit = false;
  uint64_t bytes = 0, zero_bytes = 0;
  uint32_t remaining = 0, device_ops = 0, kernel_ops = 0;
  uint64_t kernel_bytes = 0;
  int64_t error = 0;
  uint64_t error_offset = 0, error_length = 0, error_device = 0;
  bool not_submitted = false;
  uint64_t owner = 0;
  std::vector<WriteRanges::Range> ranges;  // registered while in flight
  std::vector<uint32_t> ops;               // op records, until Commit
  AsyncCompletion result;                  // sync requests
};

namespace {

// Grows a slab of records to n and lists the new ones as free (the lowest
// index comes out of the free list first).
template <typename T>
void GrowSlab(std::vector<T>& slab, std::vector<uint32_t>& free, size_t n) {
  const size_t old = slab.size();
  slab.resize(n);
  for (size_t i = n; i-- > old;) free.push_back(static_cast<uint32_t>(i));
}

// A free record's index; with none free (more outstanding than at open:
// completions not reaped, or requests with more ops than the ring's depth)
// the slab doubles, once, and stays so.
template <typename T>
uint32_t TakeFree(std::vector<T>& slab, std::vector<uint32_t>& free) {
  if (free.empty()) GrowSlab(slab, free, std::max<size_t>(2 * slab.size(), 1));
  const uint32_t i = free.back();
  free.pop_back();
  return i;
}

}  // namespace

DeviceExecutor::DeviceExecutor(const Context& context, std::unique_ptr<IoQueue> queue)
    : ctx_(context), queue_(std::move(queue)) {
  // Sized for the ring's depth up front (and kept): the steady state reuses.
  const uint32_t d = queue_->depth();
  free_reqs_.reserve(d + 2);
  GrowSlab(reqs_, free_reqs_, d + 2);
  for (Req& r : reqs_) {
    r.ranges.reserve(4);
    r.ops.reserve(4);
  }
  free_ops_.reserve(2 * d);
  GrowSlab(ops_, free_ops_, 2 * d);
  queued_.reserve(2 * d);
  batch_.reserve(d);
  results_.resize(std::min<uint32_t>(d, 256));
  ready_.reserve(2 * d);
  bounces_.reserve(16);
  pieces_.reserve(16);
  kernel_ended_.reserve(d);
}

DeviceExecutor::~DeviceExecutor() { (void)Drain(); }

uint64_t DeviceExecutor::PendingDeviceIo() const {
  // Order matters (see IoQueue::ReadyApprox): handled completions, then the
  // ring's ready count, then what was issued. Errs towards "still pending".
  const uint64_t done = completed_.load(std::memory_order_seq_cst);
  const uint64_t ready = queue_->ReadyApprox();
  const uint64_t issued = issued_.load(std::memory_order_seq_cst);
  return issued > done + ready ? issued - done - ready : 0;
}

DeviceExecutor::Stats DeviceExecutor::stats() const {
  Stats s;
  s.write_bytes = write_bytes_.load(std::memory_order_relaxed);
  s.write_ops = write_ops_.load(std::memory_order_relaxed);
  s.read_bytes = read_bytes_.load(std::memory_order_relaxed);
  s.read_ops = read_ops_.load(std::memory_order_relaxed);
  s.zero_bytes = zero_bytes_.load(std::memory_order_relaxed);
  s.kernel_bytes = kernel_bytes_.load(std::memory_order_relaxed);
  s.kernel_ops = kernel_ops_.load(std::memory_order_relaxed);
  return s;
}

uint32_t DeviceExecutor::BeginRequest(uint64_t cookie, bool write, bool sync, bool rmw_unit) {
  const uint32_t r = TakeFree(reqs_, free_reqs_);
  Req& q = reqs_[r];
  q.cookie = cookie;
  q.write = write;
  q.sync = sync;
  q.rmw_unit = rmw_unit;
  q.done = false;
  q.bytes = q.zero_bytes = 0;
  q.remaining = q.device_ops = q.kernel_ops = 0;
  q.kernel_bytes = 0;
  q.error = 0;
  q.error_offset = q.error_length = q.error_device = 0;
  q.not_submitted = false;
  q.owner = 0;
  q.ranges.clear();
  q.ops.clear();
  return r;
}

uint32_t DeviceExecutor::NewOp(uint32_t r) {
  const uint32_t i = TakeFree(ops_, free_ops_);
  Op& op = ops_[i];
  op.req = r;
  op.live = true;
  op.zombie = false;
  op.on_file = false;
  op.checked = false;
  op.wrote_all = false;
  op.copy_dst = nullptr;
  op.copy_skip = op.copy_n = 0;
  reqs_[r].ops.push_back(i);
  return i;
}

bool DeviceExecutor::TakeBounce(Op& op, uint64_t bytes) {
  bytes = AlignUp(bytes, 4096);
  for (size_t i = 0; i < bounces_.size(); ++i) {
    if (bounces_[i].first >= bytes) {
      std::swap(bounces_[i], bounces_.back());
      op.bounce_bytes = bounces_.back().first;
      op.bounce = std::move(bounces_.back().second);
      bounces_.pop_back();
      return true;
    }
  }
  op.bounce = AllocAligned(ctx_.memory_alignment, bytes);
  op.bounce_bytes = bytes;
  return op.bounce != nullptr;
}

void DeviceExecutor::GiveBounce(Op& op) {
  if (!op.bounce) return;
  if (bounces_.size() < 16) {
    bounces_.emplace_back(op.bounce_bytes, std::move(op.bounce));
  } else {
    op.bounce.reset();
  }
}

absl::Status DeviceExecutor::AddWrite(uint32_t r, uint64_t device_offset, uint64_t file_offset,
                                      const char* src, uint64_t length) {
  char* data = const_cast<char*>(src);
  Op& op = ops_[NewOp(r)];
  if (reinterpret_cast<uintptr_t>(src) % ctx_.memory_alignment != 0) {
    if (!TakeBounce(op, length)) return ErrnoError(ENOMEM, "bounce buffer");
    std::memcpy(op.bounce.get(), src, length);
    data = op.bounce.get();
  }
  op.kind = IoOp::kWrite;
  op.device_offset = device_offset;
  op.file_offset = file_offset;
  op.length = length;
  op.buf = data;
  reqs_[r].ranges.emplace_back(device_offset, device_offset + length);
  return absl::OkStatus();
}

void DeviceExecutor::AddKernelWrite(uint32_t r, uint64_t file_offset, const char* src,
                                    uint64_t length) {
  Op& op = ops_[NewOp(r)];
  op.kind = IoOp::kWrite;
  op.on_file = true;
  op.device_offset = op.file_offset = op.kernel_offset = file_offset;
  op.length = op.kernel_length = length;
  op.buf = const_cast<char*>(src);
  ++reqs_[r].kernel_ops;
  reqs_[r].kernel_bytes += length;
}

absl::Status DeviceExecutor::AddRead(uint32_t r, uint64_t device_offset, uint64_t file_offset,
                                     char* dst, uint64_t length) {
  const uint64_t a = ctx_.offset_alignment;
  const uint64_t start = AlignDown(device_offset, a);
  const uint64_t end = AlignUp(device_offset + length, a);
  const bool aligned = start == device_offset && end == device_offset + length &&
                       reinterpret_cast<uintptr_t>(dst) % ctx_.memory_alignment == 0;
  Op& op = ops_[NewOp(r)];
  op.kind = IoOp::kRead;
  if (aligned) {
    op.device_offset = device_offset;
    op.file_offset = file_offset;
    op.length = length;
    op.buf = dst;
  } else {
    if (!TakeBounce(op, end - start)) return ErrnoError(ENOMEM, "bounce buffer");
    op.device_offset = start;
    op.file_offset = file_offset - (device_offset - start);
    op.length = end - start;
    op.buf = op.bounce.get();
    op.copy_dst = dst;
    op.copy_skip = device_offset - start;
    op.copy_n = length;
  }
  return absl::OkStatus();
}

void DeviceExecutor::SetResult(uint32_t r, uint64_t bytes, uint64_t zero_bytes) {
  reqs_[r].bytes = bytes;
  reqs_[r].zero_bytes = zero_bytes;
}

void DeviceExecutor::Commit(uint32_t r) {
  Req& q = reqs_[r];
  q.remaining = static_cast<uint32_t>(q.ops.size());
  q.device_ops = q.remaining - q.kernel_ops;
  ++live_;
  if (q.write && !q.rmw_unit && !q.ranges.empty()) {
    // Waits only while another thread's read-modify-write overlaps; those
    // never wait while holding, so this cannot wait on our own requests.
    q.owner = WriteRanges::ThreadOwner();
    ctx_.ranges->BeginDirect(q.ranges, q.owner);
  }
  if (q.ops.empty()) {
    Finish(r);
    return;
  }
  queued_.insert(queued_.end(), q.ops.begin(), q.ops.end());
}

void DeviceExecutor::Abort(uint32_t r) {
  Req& q = reqs_[r];
  for (uint32_t i : q.ops) {
    Op& op = ops_[i];
    if (op.on_file)
      kernel_ended_.push_back({op.kernel_offset, op.kernel_offset + op.kernel_length, false});
    op.live = false;
    ++op.gen;
    GiveBounce(op);
    free_ops_.push_back(i);
  }
  q.ops.clear();
  free_reqs_.push_back(r);
  FlushKernelEnded();
}

void DeviceExecutor::Complete(const AsyncCompletion& c) {
  ready_.push_back(c);
  SignalReady();
}

void DeviceExecutor::SignalReady() {
  if (event_fd_ < 0 || from_results_) return;
  (void)::eventfd_write(event_fd_, 1);  // fails only when already readable
}

absl::Status DeviceExecutor::SetEventFd(int fd) {
  if (absl::Status s = queue_->SetEventFd(fd); !s.ok()) return s;
  event_fd_ = fd;
  if (fd >= 0 && HasReady()) (void)::eventfd_write(fd, 1);  // ready before it existed
  return absl::OkStatus();
}

void DeviceExecutor::FailOp(uint32_t i, int64_t code, bool not_submitted) {
  Op& op = ops_[i];
  Req& q = reqs_[op.req];
  if (q.error == 0) {
    q.error = code;
    q.error_offset = op.file_offset;
    q.error_length = op.length;
    q.error_device = op.device_offset;
    q.not_submitted = not_submitted;
  }
}

void DeviceExecutor::FinishOp(uint32_t i) {
  Op& op = ops_[i];
  const uint32_t r = op.req;
  op.live = false;
  ++op.gen;
  if (op.on_file) {
    kernel_ended_.push_back(
        {op.kernel_offset, op.kernel_offset + op.kernel_length, op.wrote_all});
  }
  if (op.bounce) {
    if (op.copy_dst != nullptr && reqs_[r].error == 0)
      std::memcpy(op.copy_dst, op.bounce.get() + op.copy_skip, op.copy_n);
    GiveBounce(op);
  }
  free_ops_.push_back(i);
  if (--reqs_[r].remaining == 0) Finish(r);
}

void DeviceExecutor::Finish(uint32_t r) {
  Req& q = reqs_[r];
  if (q.write && !q.rmw_unit && !q.ranges.empty()) ctx_.ranges->EndDirect(q.ranges, q.owner);
  AsyncCompletion c;
  c.cookie = q.cookie;
  if (q.error != 0) {
    c.result = q.error;
    c.error_offset = q.error_offset;
    c.error_length = q.error_length;
  } else {
    c.result = static_cast<int64_t>(q.bytes);
    if (q.rmw_unit) {
      // counted by the caller as one read-modify-write
    } else if (q.write) {
      Add(write_bytes_, q.bytes - q.kernel_bytes);
      Add(write_ops_, q.device_ops);
      if (q.kernel_ops != 0) {
        Add(kernel_bytes_, q.kernel_bytes);
        Add(kernel_ops_, q.kernel_ops);
      }
    } else {
      Add(read_bytes_, q.bytes - q.zero_bytes);
      Add(zero_bytes_, q.zero_bytes);
      Add(read_ops_, q.device_ops);
    }
  }
  --live_;
  if (q.sync) {
    q.result = c;
    q.done = true;
    last_failure_ = Failure{q.error, q.error_offset, q.error_length, q.error_device, q.write,
                            q.not_submitted};
    return;  // Wait frees it
  }
  ready_.push_back(c);
  SignalReady();
  q.ops.clear();
  free_reqs_.push_back(r);
}

absl::Status DeviceExecutor::Pump(size_t wait_nr) {
  batch_.clear();
  const uint32_t depth = queue_->depth();
  while (queued_head_ < queued_.size() && queue_->in_flight() + batch_.size() < depth) {
    const uint32_t i = queued_[queued_head_++];
    Op& op = ops_[i];
    if (reqs_[op.req].error != 0) {
      FinishOp(i);  // its request failed already: stop at the first failure
      continue;
    }
    if (op.kind == IoOp::kWrite && !op.on_file && !op.checked) {
      // The last check before the device: inside the file's written
      // extents. Reaching here is a bug in the planner: never write. (Only
      // once: a short write's remainder is resubmitted while reaping, outside
      // the gate, where the map may be replaced.)
      if (!ctx_.current->load(std::memory_order_acquire)->written.Contains(op.device_offset,
                                                                           op.length)) {
        FailOp(i, -EXT4DIO_E_INTERNAL, true);
        FinishOp(i);
        continue;
      }
      op.checked = true;
    }
    batch_.push_back(IoOp{op.kind, op.kind == IoOp::kWrite ? ctx_.write_flags : 0,
                          static_cast<uint8_t>(op.on_file ? 1 : 0),
                          static_cast<uint32_t>(op.length), op.device_offset, op.buf,
                          (uint64_t{op.gen} << 32) | i});
  }
  if (queued_head_ == queued_.size()) {
    queued_.clear();
    queued_head_ = 0;
  }
  if (batch_.empty()) {
    FlushKernelEnded();
    return absl::OkStatus();
  }
  const uint32_t before = queue_->in_flight();
  issued_.fetch_add(batch_.size(), std::memory_order_seq_cst);
  absl::Status s = wait_nr > 0 ? queue_->SubmitAndWait(batch_, wait_nr) : queue_->Submit(batch_);
  if (s.ok()) return s;
  // Some backends keep failed submissions in flight (they will be reaped:
  // their records stay until then, buffers untouched); the rest never
  // reach the device.
  const uint64_t kept = queue_->in_flight() - before;
  issued_.fetch_sub(batch_.size() - kept, std::memory_order_seq_cst);
  const int64_t code = CodeOf(s);
  for (const IoOp& io : batch_) {
    const uint32_t i = static_cast<uint32_t>(io.tag);
    FailOp(i, code, true);
    if (kept > 0) {
      ops_[i].zombie = true;
    } else {
      FinishOp(i);
    }
  }
  FlushKernelEnded();
  return absl::OkStatus();  // reported through the requests
}

absl::Status DeviceExecutor::ReapSome(size_t min_complete) {
  auto got = queue_->Reap(absl::MakeSpan(results_),
                          std::min<size_t>(min_complete, queue_->in_flight()));
  if (!got.ok()) {
    // The fate of what is in flight is unknown: never touch its buffers
    // again (the executor is dropped, not reused).
    broken_ = true;
    return got.status();
  }
  from_results_ = true;  // the backend signalled each of these
  for (size_t k = 0; k < *got; ++k) {
    const uint64_t tag = results_[k].tag;
    const uint32_t i = static_cast<uint32_t>(tag);
    if (i >= ops_.size() || !ops_[i].live || ops_[i].gen != static_cast<uint32_t>(tag >> 32))
      continue;  // stale (cannot happen with zombies kept; defensive)
    Op& op = ops_[i];
    const int64_t res = results_[k].result;
    Req& q = reqs_[op.req];
    if (!op.zombie && res > 0 && static_cast<uint64_t>(res) < op.length && q.error == 0) {
      // Short transfer: the remainder goes out again.
      op.device_offset += res;
      op.file_offset += res;
      op.buf += res;
      op.length -= res;
      queued_.push_back(i);
      continue;
    }
    if (!op.zombie && res <= 0) FailOp(i, res < 0 ? res : -EIO, false);
    // Positive evidence only (a kernel-path write's re-map trusts it).
    op.wrote_all = !op.zombie && res > 0 && static_cast<uint64_t>(res) == op.length;
    FinishOp(i);
  }
  from_results_ = false;
  // Freed slots take queued ops at once: a request must never sit with
  // ops queued and nothing in flight while it holds write ranges.
  absl::Status s = Pump(0);
  completed_.fetch_add(*got, std::memory_order_seq_cst);
  FlushKernelEnded();  // before any of their completions is handed out
  return s;
}

absl::Status DeviceExecutor::Flush() {
  while (queued_head_ < queued_.size()) {
    if (absl::Status s = Pump(0); !s.ok()) return s;
    if (queued_head_ < queued_.size()) {
      if (absl::Status s = ReapSome(1); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<AsyncCompletion> DeviceExecutor::Wait(uint32_t r) {
  while (!reqs_[r].done) {
    if (broken_) return ErrnoError(EIO, *ctx_.name + ": I/O queue broken");
    absl::Status s;
    if (queued_head_ < queued_.size() && queue_->in_flight() < queue_->depth()) {
      s = Pump(1);  // submit and wait for one in one system call
      if (s.ok()) s = ReapSome(0);
    } else if (queue_->in_flight() > 0) {  // (ring full: wait, don't spin)
      s = ReapSome(1);
    } else {
      break;
    }
    if (!s.ok()) return s;
  }
  Req& q = reqs_[r];
  if (!q.done) return LibError(EXT4DIO_E_INTERNAL, *ctx_.name + ": request lost");
  AsyncCompletion c = q.result;
  q.ops.clear();
  free_reqs_.push_back(r);
  return c;
}

absl::StatusOr<size_t> DeviceExecutor::Reap(absl::Span<AsyncCompletion> out,
                                            size_t min_complete) {
  if (broken_) return ErrnoError(EIO, *ctx_.name + ": I/O queue broken by a failed reap");
  size_t n = 0;
  bool peeked = false;
  for (;;) {
    while (n < out.size() && ready_head_ < ready_.size()) out[n++] = ready_[ready_head_++];
    if (ready_head_ == ready_.size()) {
      ready_.clear();
      ready_head_ = 0;
    }
    if (n == out.size() || live_ == 0) return n;
    if (n >= min_complete) {
      // Also what the ring already holds, without waiting.
      if (peeked || queue_->in_flight() == 0) return n;
      peeked = true;
      if (absl::Status s = ReapSome(0); !s.ok()) return s;
      continue;
    }
    if (queue_->in_flight() == 0) {
      if (queued_head_ == queued_.size()) return n;
      if (absl::Status s = Pump(0); !s.ok()) return s;
      continue;
    }
    if (absl::Status s = ReapSome(1); !s.ok()) return s;
  }
}

absl::Status DeviceExecutor::Drain() {
  while (live_ > 0 && !broken_) {
    if (queued_head_ < queued_.size()) {
      if (absl::Status s = Pump(0); !s.ok()) return s;
    }
    if (queue_->in_flight() == 0) {
      if (queued_head_ == queued_.size()) break;
      continue;
    }
    if (absl::Status s = ReapSome(1); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status DeviceExecutor::RegisterBuffers(void* base, size_t bytes) {
  if (outstanding() != 0) return ErrnoError(EBUSY, "registering buffers with requests outstanding");
  return queue_->RegisterBuffers(base, bytes);
}

}  // namespace ext4dio
