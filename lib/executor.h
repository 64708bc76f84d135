// DeviceExecutor: the one place where device I/O is submitted and reaped,
// for synchronous calls (File::Pwrite/Pread borrow one from the file's pool)
// and asynchronous queues (AsyncQueue owns one) alike.
//
// A request is built in place (BeginRequest, AddWrite/AddRead, Commit) from
// a plan the file made; its device ops go to the ring at the next Flush (all
// of them: Flush reaps while the ring is full), and it completes when its
// last op does. Records live in slabs sized at construction and reused
// through free lists; an op's record index (and a generation, so a stale
// completion of a failed submission is recognised) travels in the ring's
// user_data. Nothing is allocated per request in the steady state: vectors
// keep their capacity, bounce buffers are pooled, completions are written
// straight into the caller's array. Statistics are this executor's own
// (written only by its owner, read by anyone).
//
// Thread-safety: one thread at a time (the owner); PendingDeviceIo and
// Stats from any thread.
#ifndef EXT4DIO_LIB_EXECUTOR_H_
#define EXT4DIO_LIB_EXECUTOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "aligned.h"
#include "io_gate.h"
#include "os.h"
#include "pending_remap.h"
#include "planner.h"
#include "write_ranges.h"

namespace ext4dio {

struct MapState;  // map_state.h

struct AsyncRequest {
  bool write = false;
  void* buf = nullptr;
  uint64_t length = 0;
  uint64_t offset = 0;
  uint64_t cookie = 0;
};

// The same layout as the C API's ext4dio_completion (capi.cc checks).
struct AsyncCompletion {
  uint64_t cookie = 0;
  int64_t result = 0;         // bytes, or a negative C API code
  uint64_t error_offset = 0;  // file offset of the failed piece (result < 0)
  uint64_t error_length = 0;
};

class DeviceExecutor final : public IoGate::Member {
 public:
  // What the executor needs of its file; all pointers outlive it.
  struct Context {
    const std::string* name = nullptr;
    // The file's current map: every device write is checked against its
    // written extents right before it goes to the ring.
    const std::atomic<const MapState*>* current = nullptr;
    WriteRanges* ranges = nullptr;
    int write_flags = 0;  // RWF_DSYNC for FUA writes
    uint32_t offset_alignment = 4096;
    uint32_t memory_alignment = 4096;
    // Mounted mode: called (on the reaping thread, before any of their
    // completions is handed out) with the kernel-path writes that have
    // ended, whatever their result (also aborted or never submitted);
    // `clean`: all of it was written. One call per reap.
    void (*kernel_writes_ended)(void* arg, const PendingRemap::WriteEnd* ends, size_t n) = nullptr;
    void* kernel_arg = nullptr;
  };
  struct Stats {
    uint64_t write_bytes = 0, write_ops = 0;  // direct device writes
    uint64_t read_bytes = 0, read_ops = 0;    // device reads
    uint64_t zero_bytes = 0;                  // holes/unwritten read
    uint64_t kernel_bytes = 0, kernel_ops = 0;  // writes on the file (kernel path)
  };

  DeviceExecutor(const Context& context, std::unique_ptr<IoQueue> queue);
  ~DeviceExecutor() override;  // waits for what is in flight
  DeviceExecutor(const DeviceExecutor&) = delete;
  DeviceExecutor& operator=(const DeviceExecutor&) = delete;

  // --- Building a request (one at a time). ---
  // `sync`: Wait() returns its completion instead of the ready list.
  // `rmw_unit`: one half of a read-modify-write whose unit the caller holds
  // in WriteRanges: not registered there again, not counted in the stats.
  uint32_t BeginRequest(uint64_t cookie, bool write, bool sync, bool rmw_unit = false);
  // A direct device write of `length` bytes of `src` at device_offset
  // (aligned to offset_alignment; a misaligned src is bounced).
  [[nodiscard]] absl::Status AddWrite(uint32_t r, uint64_t device_offset, uint64_t file_offset,
                                      const char* src, uint64_t length);
  // Mounted mode: a kernel-path O_DIRECT write of `length` bytes of `src`
  // at file_offset on the file's own descriptor (the queue's file_fd).
  // REQUIRES: offset, length and src aligned for O_DIRECT on the file, and
  // the context's kernel_writes_ended told when it ends. Not checked
  // against the map: the kernel allocates.
  void AddKernelWrite(uint32_t r, uint64_t file_offset, const char* src, uint64_t length);
  // A device read into dst; an unaligned range or buffer goes through an
  // enclosing aligned bounce read.
  [[nodiscard]] absl::Status AddRead(uint32_t r, uint64_t device_offset, uint64_t file_offset,
                                     char* dst, uint64_t length);
  // Bytes the request reports on success (reads: up to EOF), and of them
  // zero-filled without I/O.
  void SetResult(uint32_t r, uint64_t bytes, uint64_t zero_bytes = 0);
  // Registers the request's writes with WriteRanges (waits while another
  // thread's read-modify-write overlaps them) and queues its ops for the
  // next Flush; a request without ops completes here.
  void Commit(uint32_t r);
  // Forgets a request that was not committed (its plan failed).
  void Abort(uint32_t r);
  // A completion computed elsewhere (a blocking path), handed out by Reap.
  void Complete(const AsyncCompletion& c);

  // Scratch space for the caller's plan (capacity kept between requests).
  std::vector<Piece>& pieces() { return pieces_; }

  // --- Running. ---
  // Hands every queued op to the ring (reaping while it is full).
  [[nodiscard]] absl::Status Flush();
  // Runs sync request `r` to its end (submit and wait in one system call
  // when the ring allows) and returns its completion.
  [[nodiscard]] absl::StatusOr<AsyncCompletion> Wait(uint32_t r);
  // At least min(min_complete, outstanding()) completions, up to out.size().
  [[nodiscard]] absl::StatusOr<size_t> Reap(absl::Span<AsyncCompletion> out, size_t min_complete);
  // Waits for every request (their completions stay ready for Reap).
  [[nodiscard]] absl::Status Drain();
  // Handles whatever completions the ring holds now, without waiting (their
  // requests end: write ranges released, completions ready for Reap).
  [[nodiscard]] absl::Status Poll() { return live_ > 0 ? ReapSome(0) : absl::OkStatus(); }
  // A kernel-path write this executor's owner made itself (pwrite), for
  // the statistics.
  void CountKernelWrite(uint64_t bytes) {
    Add(kernel_bytes_, bytes);
    Add(kernel_ops_, 1);
  }
  [[nodiscard]] absl::Status RegisterBuffers(void* base, size_t bytes);
  // Signals eventfd `fd` (-1: stop) whenever a completion becomes ready for
  // Reap: the ring's results through the backend (IoQueue::SetEventFd),
  // completions made without one (blocking paths, requests without I/O,
  // failed submissions) here. The caller keeps `fd` open until it sets -1.
  [[nodiscard]] absl::Status SetEventFd(int fd);
  // Whether completions are ready to reap without waiting.
  bool HasReady() const { return ready_head_ < ready_.size() || queue_->ReadyApprox() > 0; }

  size_t outstanding() const { return live_ + ready_.size() - ready_head_; }
  uint32_t depth() const { return queue_->depth(); }
  const char* backend_name() const { return queue_->name(); }
  // Whether the ring is broken (a failed reap): the executor must not be reused.
  bool broken() const { return broken_; }
  uint64_t PendingDeviceIo() const override;
  Stats stats() const;

  // The file and device offsets and code of request r's first failure,
  // for a synchronous caller's message (valid after Wait returned it).
  struct Failure {
    int64_t code = 0;
    uint64_t file_offset = 0, length = 0, device_offset = 0;
    bool write = false;
    bool not_submitted = false;
  };
  const Failure& last_failure() const { return last_failure_; }

 private:
  struct Req;
  struct Op;
  uint32_t NewOp(uint32_t r);
  void FailOp(uint32_t op_index, int64_t code, bool not_submitted);
  void FinishOp(uint32_t op_index);
  void Finish(uint32_t r);
  absl::Status Pump(size_t wait_nr);
  absl::Status ReapSome(size_t min_complete);
  // Gives op a bounce buffer of >= bytes (pooled, or new); false when out
  // of memory (the caller then aborts op's request, which frees op).
  bool TakeBounce(Op& op, uint64_t bytes);
  // Returns op's bounce buffer (if any) to the pool, or frees it.
  void GiveBounce(Op& op);
  static void Add(std::atomic<uint64_t>& a, uint64_t n) {
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  Context ctx_;
  std::unique_ptr<IoQueue> queue_;
  std::vector<Piece> pieces_;
  std::vector<Req> reqs_;
  std::vector<uint32_t> free_reqs_;
  std::vector<Op> ops_;
  std::vector<uint32_t> free_ops_;
  std::vector<uint32_t> queued_;   // op indices not yet submitted, FIFO from queued_head_
  size_t queued_head_ = 0;
  std::vector<IoOp> batch_;
  std::vector<IoResult> results_;
  std::vector<AsyncCompletion> ready_;  // FIFO from ready_head_
  size_t ready_head_ = 0;
  size_t live_ = 0;  // requests committed and not finished
  std::vector<std::pair<uint64_t, AlignedBuf>> bounces_;  // free bounce buffers by size
  bool broken_ = false;
  int event_fd_ = -1;        // SetEventFd's
  bool from_results_ = false;  // inside ReapSome: the backend signalled these
  void SignalReady();
  Failure last_failure_;
  std::vector<PendingRemap::WriteEnd> kernel_ended_;  // told at the next FlushKernelEnded
  void FlushKernelEnded() {
    if (kernel_ended_.empty()) return;
    ctx_.kernel_writes_ended(ctx_.kernel_arg, kernel_ended_.data(), kernel_ended_.size());
    kernel_ended_.clear();
  }
  // Device ops handed to the ring, and those reaped and fully handled
  // (short ones resubmitted): see PendingDeviceIo.
  std::atomic<uint64_t> issued_{0};
  std::atomic<uint64_t> completed_{0};
  std::atomic<uint64_t> write_bytes_{0}, write_ops_{0}, read_bytes_{0}, read_ops_{0},
      zero_bytes_{0}, kernel_bytes_{0}, kernel_ops_{0};
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_EXECUTOR_H_
