#include "async_queue.h"

#include <linux/fs.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_format.h"
#include "aligned.h"
#include "errors.h"
#include "file.h"
#include "io_gate.h"
#include "planner.h"

namespace ext4dio {

struct AsyncQueue::Request {
  uint64_t cookie = 0;
  bool write = false;
  uint64_t bytes = 0;       // result on success
  uint64_t zero_bytes = 0;  // reads: bytes of holes/unwritten filled here
  size_t remaining = 0;     // device ops not finished
  int64_t error = 0;        // first failure (negative code)
  uint64_t error_offset = 0, error_length = 0;
  std::vector<WriteRanges::Range> ranges;  // registered while in flight
  uint64_t owner = 0;
  uint64_t device_ops = 0;
  std::vector<AlignedBuf> bounces;
  // Bounced reads: copy bounce[i] + skip -> dst, n bytes at completion.
  struct CopyOut {
    char* dst;
    const char* src;
    uint64_t n;
  };
  std::vector<CopyOut> copy_outs;
};

struct AsyncQueue::OpState {
  uint64_t request;
  IoOp::Kind kind;
  uint64_t device_offset, file_offset, length;
  char* buf;
};

AsyncQueue::AsyncQueue(std::shared_ptr<File> file, std::unique_ptr<IoQueue> queue)
    : file_(std::move(file)), queue_(std::move(queue)) {}

AsyncQueue::~AsyncQueue() {
  (void)Drain();
  if (file_->mounted_) file_->gate_.RemoveMember(this);
}

uint64_t AsyncQueue::PendingDeviceIo() const {
  // Order matters (see IoQueue::ReadyApprox): handled completions, then the
  // ring's ready count, then what was issued. Errs towards "still pending".
  const uint64_t done = completed_.load(std::memory_order_seq_cst);
  const uint64_t ready = queue_->ReadyApprox();
  const uint64_t issued = issued_.load(std::memory_order_seq_cst);
  return issued > done + ready ? issued - done - ready : 0;
}

absl::Status AsyncQueue::Drain() {
  while (!requests_.empty()) {
    Pump();
    if (queue_->in_flight() == 0 && backlog_.empty()) break;
    if (absl::Status s = ReapSome(1); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void AsyncQueue::Pump() {
  std::vector<IoOp> batch;
  const int flags = file_->options_.dsync ? RWF_DSYNC : 0;
  while (!backlog_.empty() && queue_->in_flight() + batch.size() < queue_->depth()) {
    const uint64_t tag = backlog_.front();
    backlog_.pop_front();
    OpState& op = ops_.at(tag);
    if (op.kind == IoOp::kWrite) {
      // The last check before the device: inside the file's written extents.
      absl::Status s = file_->CheckInside(op.device_offset, op.length, op.file_offset);
      if (!s.ok()) {
        Request& r = *requests_.at(op.request);
        if (r.error == 0) {
          r.error = CodeOf(s);
          r.error_offset = op.file_offset;
          r.error_length = op.length;
        }
        const uint64_t id = op.request;
        ops_.erase(tag);
        if (--r.remaining == 0) Finish(id);
        continue;
      }
    }
    batch.push_back(IoOp{op.kind, op.kind == IoOp::kWrite ? flags : 0,
                         static_cast<uint32_t>(op.length), op.device_offset, op.buf, tag});
  }
  if (batch.empty()) return;
  const uint32_t before = queue_->in_flight();
  issued_.fetch_add(batch.size(), std::memory_order_seq_cst);
  if (absl::Status s = queue_->Submit(batch); !s.ok()) {
    // Some backends keep failed submissions in flight (they will be
    // reaped); the rest never reach the device.
    const uint64_t kept = queue_->in_flight() - before;
    issued_.fetch_sub(batch.size() - kept, std::memory_order_seq_cst);
    // Not in flight: fail those requests' ops here.
    for (const IoOp& io : batch) {
      OpState op = ops_.at(io.tag);
      ops_.erase(io.tag);
      Request& r = *requests_.at(op.request);
      if (r.error == 0) {
        r.error = CodeOf(s);
        r.error_offset = op.file_offset;
        r.error_length = op.length;
      }
      if (--r.remaining == 0) Finish(op.request);
    }
  }
}

void AsyncQueue::Finish(uint64_t id) {
  auto it = requests_.find(id);
  Request& r = *it->second;
  if (r.write && !r.ranges.empty()) file_->ranges_.EndDirect(r.ranges, r.owner);
  AsyncCompletion c;
  c.cookie = r.cookie;
  if (r.error != 0) {
    c.result = r.error;
    c.error_offset = r.error_offset;
    c.error_length = r.error_length;
  } else {
    for (const Request::CopyOut& co : r.copy_outs) std::memcpy(co.dst, co.src, co.n);
    c.result = static_cast<int64_t>(r.bytes);
    if (r.write) {
      file_->stats_[File::kFastBytes] += r.bytes;
      file_->stats_[File::kFastReq] += r.device_ops;
    } else {
      file_->stats_[File::kReadBytes] += r.bytes - r.zero_bytes;
      file_->stats_[File::kZeroBytes] += r.zero_bytes;
      file_->stats_[File::kReadReq] += r.device_ops;
    }
  }
  ready_.push_back(c);
  requests_.erase(it);
}

absl::Status AsyncQueue::ReapSome(size_t min_complete) {
  IoResult results[64];
  auto got = queue_->Reap(absl::MakeSpan(results),
                          std::min<size_t>(min_complete, queue_->in_flight()));
  if (!got.ok()) return got.status();
  for (size_t k = 0; k < *got; ++k) {
    const uint64_t tag = results[k].tag;
    auto found = ops_.find(tag);
    // An op whose submission was reported failed (and its request finished)
    // may still complete if the kernel took it after all: ignore it.
    if (found == ops_.end()) continue;
    OpState& op = found->second;
    Request& r = *requests_.at(op.request);
    const int64_t res = results[k].result;
    if (res > 0 && static_cast<uint64_t>(res) < op.length && r.error == 0) {
      op.device_offset += res;
      op.file_offset += res;
      op.buf += res;
      op.length -= res;
      backlog_.push_front(tag);  // the remainder, next
      continue;
    }
    if ((res <= 0) && r.error == 0) {
      r.error = res < 0 ? res : -EIO;
      r.error_offset = op.file_offset;
      r.error_length = op.length;
    }
    const uint64_t id = op.request;
    ops_.erase(tag);
    if (--r.remaining == 0) Finish(id);
  }
  // Freed slots take waiting ops at once: a request must never sit with
  // ops waiting and nothing in flight while it holds region locks.
  Pump();
  completed_.fetch_add(*got, std::memory_order_seq_cst);
  return absl::OkStatus();
}

absl::StatusOr<AsyncQueue::Planned> AsyncQueue::StartPlanned(const AsyncRequest& req) {
  File& f = *file_;
  const Alignment a = f.align_;
  auto request = std::make_unique<Request>();
  request->cookie = req.cookie;
  request->write = req.write;
  std::vector<OpState> ops;
  char* base = static_cast<char*>(req.buf);

  if (req.write) {
    const MapState& m = f.cur();
    auto pieces = ext4dio::PlanWrite(m.loaded.map, m.written, req.offset, req.length,
                                     f.mounted_ ? f.MountedPlan(m) : f.plan_);
    if (!pieces.ok()) return Prefixed(f.name_ + ": ", pieces.status());
    bool unaligned = false;
    for (const Piece& p : *pieces) unaligned |= p.kind != Piece::kDirect;
    if (unaligned && f.mounted_) return Planned::kBlocking;
    if (unaligned) {
      // Blocking path: finish what is in flight, then run the whole request
      // here with this queue's ring, exactly as a synchronous write.
      if (absl::Status s = Drain(); !s.ok()) return s;
      AsyncCompletion c;
      c.cookie = req.cookie;
      c.error_offset = req.offset;  // the direct pieces, as a group
      c.error_length = req.length;
      absl::Status s = f.WriteDirect(*queue_, *pieces, base, req.offset);
      for (const Piece& p : *pieces) {
        if (!s.ok()) break;
        if (p.kind == Piece::kDirect) continue;
        s = f.WriteUnaligned(*queue_, p, base + (p.file_offset - req.offset));
        if (!s.ok()) {
          c.error_offset = p.file_offset;
          c.error_length = p.length;
        }
      }
      c.result = s.ok() ? static_cast<int64_t>(req.length) : CodeOf(s);
      if (s.ok()) c.error_offset = c.error_length = 0;
      ready_.push_back(c);
      return Planned::kStarted;
    }
    if (f.mounted_ && !pieces->empty()) {
      if (absl::Status s = f.PrepareFastWrite(); !s.ok()) return s;
      f.NoteFastWrite();
    }
    for (const Piece& p : *pieces) {
      char* src = base + (p.file_offset - req.offset);
      if (reinterpret_cast<uintptr_t>(src) % a.memory != 0) {
        request->bounces.push_back(AllocAligned(a.memory, p.length));
        if (!request->bounces.back()) return ErrnoError(ENOMEM, "bounce buffer");
        std::memcpy(request->bounces.back().get(), src, p.length);
        src = request->bounces.back().get();
      }
      ops.push_back(OpState{0, IoOp::kWrite, p.device_offset, p.file_offset, p.length, src});
      request->ranges.emplace_back(p.device_offset, p.device_offset + p.length);
    }
    // Waits only while another thread's read-modify-write overlaps; those
    // never wait while holding, so this cannot wait on our own requests.
    request->owner = WriteRanges::ThreadOwner();
    if (!ops.empty()) f.ranges_.BeginDirect(request->ranges, request->owner);
    request->bytes = req.length;
  } else {
    auto pieces = PlanRead(f.cur().loaded.map, req.offset, req.length, f.plan_);
    if (!pieces.ok()) return Prefixed(f.name_ + ": ", pieces.status());
    uint64_t total = 0;
    for (const Piece& p : *pieces) {
      if (p.kind == Piece::kEof) break;
      char* dst = base + (p.file_offset - req.offset);
      total = p.file_offset + p.length - req.offset;
      if (p.kind == Piece::kZero) {
        std::memset(dst, 0, p.length);
        request->zero_bytes += p.length;
        continue;
      }
      const uint64_t start = AlignDown(p.device_offset, a.offset);
      const uint64_t end = AlignUp(p.device_offset + p.length, a.offset);
      if (start == p.device_offset && end == p.device_offset + p.length &&
          reinterpret_cast<uintptr_t>(dst) % a.memory == 0) {
        ops.push_back(OpState{0, IoOp::kRead, p.device_offset, p.file_offset, p.length, dst});
      } else {
        request->bounces.push_back(AllocAligned(a.memory, end - start));
        if (!request->bounces.back()) return ErrnoError(ENOMEM, "bounce buffer");
        char* b = request->bounces.back().get();
        request->copy_outs.push_back({dst, b + (p.device_offset - start), p.length});
        ops.push_back(OpState{0, IoOp::kRead, start, p.file_offset - (p.device_offset - start),
                              end - start, b});
      }
    }
    request->bytes = total;
  }

  const uint64_t id = next_request_++;
  request->remaining = ops.size();
  request->device_ops = ops.size();
  requests_.emplace(id, std::move(request));
  if (ops.empty()) {
    Finish(id);
    return Planned::kStarted;
  }
  for (OpState& op : ops) {
    op.request = id;
    const uint64_t tag = next_op_++;
    ops_.emplace(tag, op);
    backlog_.push_back(tag);
  }
  Pump();
  // Every op of a started request goes to the device before we return:
  // nothing planned against this map may wait in the backlog past it.
  while (!backlog_.empty()) {
    if (absl::Status s = ReapSome(1); !s.ok()) return s;
  }
  return Planned::kStarted;
}

absl::Status AsyncQueue::RunBlocking(const AsyncRequest& req) {
  File& f = *file_;
  if (absl::Status s = Drain(); !s.ok()) return s;
  absl::StatusOr<size_t> r = req.write ? f.Pwrite(req.buf, req.length, req.offset)
                                       : f.Pread(req.buf, req.length, req.offset);
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
  ready_.push_back(c);
  return absl::OkStatus();
}

absl::Status AsyncQueue::Submit(const AsyncRequest& req) {
  File& f = *file_;
  if (req.write && !f.options_.write) return ErrnoError(EBADF, f.name_ + ": opened read-only");
  if (!f.mounted_) {
    auto planned = StartPlanned(req);
    return planned.status();
  }
  // Mounted: plan and start inside the gate, so no map change or lease
  // release can come between the plan and the device.
  f.gate_.Enter();
  if (!f.fast_.load(std::memory_order_acquire)) {
    f.gate_.Exit();
    return RunBlocking(req);
  }
  absl::StatusOr<Planned> planned = StartPlanned(req);
  f.gate_.Exit();
  if (!planned.ok()) return planned.status();
  if (*planned == Planned::kBlocking) return RunBlocking(req);
  return absl::OkStatus();
}

size_t AsyncQueue::SubmitBatch(absl::Span<const AsyncRequest> reqs, absl::Status* refused) {
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (absl::Status s = Submit(reqs[i]); !s.ok()) {
      *refused = std::move(s);
      return i;
    }
  }
  return reqs.size();
}

absl::Status AsyncQueue::RegisterBuffers(void* base, size_t bytes) {
  if (outstanding() != 0) return ErrnoError(EBUSY, "registering buffers with requests outstanding");
  return queue_->RegisterBuffers(base, bytes);
}

absl::StatusOr<size_t> AsyncQueue::Reap(absl::Span<AsyncCompletion> out, size_t min_complete) {
  size_t n = 0;
  for (;;) {
    while (n < out.size() && !ready_.empty()) {
      out[n++] = ready_.front();
      ready_.pop_front();
    }
    if (n >= min_complete || n == out.size() || requests_.empty()) return n;
    Pump();
    if (queue_->in_flight() == 0) {
      if (backlog_.empty()) return n;
      continue;
    }
    if (absl::Status s = ReapSome(1); !s.ok()) return s;
  }
}

}  // namespace ext4dio
