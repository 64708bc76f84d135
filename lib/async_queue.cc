#include "async_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "errors.h"
#include "file.h"

namespace ext4dio {

AsyncQueue::AsyncQueue(std::shared_ptr<File> file, std::unique_ptr<DeviceExecutor> executor)
    : file_(std::move(file)), executor_(std::move(executor)) {}

AsyncQueue::~AsyncQueue() {
  (void)executor_->Drain();
  if (event_fd_ >= 0) {
    // Unregistered before it closes: the number may be reused at once.
    (void)executor_->SetEventFd(-1);
    ::close(event_fd_);
  }
  file_->RetireExecutor(std::move(executor_));
}

absl::StatusOr<int> AsyncQueue::EventFd() {
  if (event_fd_ >= 0) return event_fd_;
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, "eventfd");
  if (absl::Status s = executor_->SetEventFd(fd); !s.ok()) {
    ::close(fd);
    return s;
  }
  event_fd_ = fd;
  return fd;
}

absl::Status AsyncQueue::Submit(const AsyncRequest& r) {
  absl::Status refused;
  if (file_->SubmitAsync(*executor_, absl::MakeConstSpan(&r, 1), &refused) == 1)
    return absl::OkStatus();
  return refused;
}

size_t AsyncQueue::SubmitBatch(absl::Span<const AsyncRequest> reqs, absl::Status* refused) {
  return file_->SubmitAsync(*executor_, reqs, refused);
}

}  // namespace ext4dio
