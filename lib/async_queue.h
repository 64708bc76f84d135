// AsyncQueue: many requests in flight on one ring, for high queue depth.
// Submit plans a request and starts its device I/O; Reap collects finished
// requests by the caller's cookie.
//
// Thread-safety: one thread at a time per queue (make one queue per
// thread). Any number of queues and synchronous callers may use one File.
//
// Blocking: a write with unaligned pieces (read-modify-write or buffered),
// and in mounted mode any request that needs the kernel path (or arrives
// while the fast path is off), waits for this queue's in-flight requests
// and runs inside Submit, then completes like the rest. Submit also waits
// (reaping into the ready list) when the ring is full, so that every
// started request's device I/O is in flight when Submit returns.
//
// Mounted mode: the queue is a member of the file's IoGate, which counts
// its device requests in flight without the queue's owner.
#ifndef EXT4DIO_LIB_ASYNC_QUEUE_H_
#define EXT4DIO_LIB_ASYNC_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "io_gate.h"
#include "os.h"

namespace ext4dio {

class File;

struct AsyncRequest {
  bool write = false;
  void* buf = nullptr;
  uint64_t length = 0;
  uint64_t offset = 0;
  uint64_t cookie = 0;
};

struct AsyncCompletion {
  uint64_t cookie = 0;
  int64_t result = 0;         // bytes, or a negative C API code
  uint64_t error_offset = 0;  // file offset of the failed piece (result < 0)
  uint64_t error_length = 0;
};

class AsyncQueue final : public IoGate::Member {
 public:
  ~AsyncQueue() override;  // waits for what is in flight
  AsyncQueue(const AsyncQueue&) = delete;
  AsyncQueue& operator=(const AsyncQueue&) = delete;

  // Plans and starts `r`. An error here means the request was not started
  // (nothing written): e.g. EXT4DIO_E_NEEDS_ALLOCATION.
  [[nodiscard]] absl::Status Submit(const AsyncRequest& r);
  // Starts reqs in order, handing their device I/O to the ring together.
  // Returns how many were started; when fewer than reqs.size(), *refused
  // says why reqs[returned] was not (nothing of it written).
  size_t SubmitBatch(absl::Span<const AsyncRequest> reqs, absl::Status* refused);
  // Waits until at least min(min_complete, outstanding()) requests are
  // finished; returns up to out.size() of them.
  [[nodiscard]] absl::StatusOr<size_t> Reap(absl::Span<AsyncCompletion> out,
                                            size_t min_complete);
  // Registers the caller's buffer region with the ring (io_uring fixed
  // buffers): requests whose buffers lie inside it avoid per-I/O page
  // pinning. REQUIRES: nothing outstanding.
  [[nodiscard]] absl::Status RegisterBuffers(void* base, size_t bytes);
  // Requests submitted and not yet reaped.
  size_t outstanding() const { return requests_.size() + ready_.size(); }
  uint32_t depth() const { return queue_->depth(); }
  uint64_t PendingDeviceIo() const override;

 private:
  friend class File;
  struct Request;
  struct OpState;
  AsyncQueue(std::shared_ptr<File> file, std::unique_ptr<IoQueue> queue);

  enum class Planned { kStarted, kBlocking };
  absl::StatusOr<Planned> StartPlanned(const AsyncRequest& r);
  absl::Status RunBlocking(const AsyncRequest& r);
  void Pump();
  absl::Status ReapSome(size_t min_complete);
  void Finish(uint64_t id);
  absl::Status Drain();

  std::shared_ptr<File> file_;  // kept open until the queue goes
  std::unique_ptr<IoQueue> queue_;
  uint64_t next_request_ = 1;
  uint64_t next_op_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Request>> requests_;
  std::unordered_map<uint64_t, OpState> ops_;  // by tag
  std::deque<uint64_t> backlog_;               // op tags not yet submitted
  std::deque<AsyncCompletion> ready_;
  // Device requests handed to the ring, and those reaped and fully handled
  // (short ones resubmitted): see PendingDeviceIo.
  std::atomic<uint64_t> issued_{0};
  std::atomic<uint64_t> completed_{0};
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_ASYNC_QUEUE_H_
