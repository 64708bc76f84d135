// AsyncQueue: many requests in flight on one ring, for high queue depth.
// Submit (or SubmitBatch) plans requests and starts their device I/O; Reap
// collects finished requests by the caller's cookie. The queue is a thin
// owner of one DeviceExecutor (executor.h) and the File it belongs to: the
// file plans, the executor runs.
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
// Mounted mode: the queue's executor is a member of the file's IoGate,
// which counts its device requests in flight without the queue's owner.
#ifndef EXT4DIO_LIB_ASYNC_QUEUE_H_
#define EXT4DIO_LIB_ASYNC_QUEUE_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "executor.h"

namespace ext4dio {

class File;

class AsyncQueue {
 public:
  // Made by File::NewAsyncQueue.
  AsyncQueue(std::shared_ptr<File> file, std::unique_ptr<DeviceExecutor> executor);
  ~AsyncQueue();  // waits for what is in flight
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
                                            size_t min_complete) {
    return executor_->Reap(out, min_complete);
  }
  // Registers the caller's buffer region with the ring (io_uring fixed
  // buffers): requests whose buffers lie inside it avoid per-I/O page
  // pinning. REQUIRES: nothing outstanding.
  [[nodiscard]] absl::Status RegisterBuffers(void* base, size_t bytes) {
    return executor_->RegisterBuffers(base, bytes);
  }
  // An eventfd (created at the first call, owned by the queue, closed with
  // it) that becomes readable whenever a completion is ready for Reap, on
  // every backend: for poll/epoll loops. Its count is not a number of
  // completions: after a wakeup, read it (or not) and Reap with
  // min_complete 0 until it returns fewer than asked.
  [[nodiscard]] absl::StatusOr<int> EventFd();
  // Requests submitted and not yet reaped.
  size_t outstanding() const { return executor_->outstanding(); }
  uint32_t depth() const { return executor_->depth(); }

 private:
  std::shared_ptr<File> file_;  // kept open until the queue goes
  std::unique_ptr<DeviceExecutor> executor_;
  int event_fd_ = -1;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_ASYNC_QUEUE_H_
