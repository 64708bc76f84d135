#include "async_queue.h"

#include "file.h"

namespace ext4dio {

AsyncQueue::AsyncQueue(std::shared_ptr<File> file, std::unique_ptr<DeviceExecutor> executor)
    : file_(std::move(file)), executor_(std::move(executor)) {}

AsyncQueue::~AsyncQueue() {
  (void)executor_->Drain();
  file_->RetireExecutor(std::move(executor_));
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
