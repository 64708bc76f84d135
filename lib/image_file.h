// ImageFile: File for an image file or unmounted device plus a path or
// inode inside it (image mode). The map is read and validated once at
// open; every write is planned in full before any byte moves and refused as
// a whole when it would need allocation; metadata never changes. Writers
// hold the image's locks (image_lock.h) for the File's life.
//
// Thread-safety: as File.
#ifndef EXT4DIO_LIB_IMAGE_FILE_H_
#define EXT4DIO_LIB_IMAGE_FILE_H_

#include <memory>
#include <string>
#include <vector>

#include "file.h"

namespace ext4dio {

class ImageClaim;  // image_lock.h

class ImageFile final : public File {
 public:
  // See File::Open.
  static absl::StatusOr<std::shared_ptr<File>> Open(const OpenOptions& options);
  ~ImageFile() override;

  absl::StatusOr<size_t> Pwrite(const void* buf, size_t n, uint64_t offset) override;
  absl::StatusOr<size_t> Pread(void* buf, size_t n, uint64_t offset) override;
  absl::Status Sync() override;
  absl::Status Fsync() override { return Sync(); }
  // Refused: image mode never changes metadata.
  absl::Status Truncate(uint64_t size) override;
  absl::Status Fallocate(int mode, uint64_t offset, uint64_t length) override;
  bool fast_path() const override { return true; }
  absl::StatusOr<std::vector<Piece>> PlanWrite(uint64_t offset, uint64_t n,
                                               bool show_refused) const override;
  uint64_t WritableUntil(uint64_t offset, uint64_t n) const override;
  uint64_t size() const override { return cur().loaded.map.file_size(); }
  size_t SubmitAsync(DeviceExecutor& ex, absl::Span<const AsyncRequest> reqs,
                     absl::Status* refused) override;

 private:
  ImageFile();
  // Plans and starts one request on `ex`; an unaligned write runs here,
  // after what is in flight, and completes like the rest.
  absl::Status StartAsync(DeviceExecutor& ex, const AsyncRequest& r);

  std::unique_ptr<ImageClaim> claim_;  // writers: locks, loop devices
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_IMAGE_FILE_H_
