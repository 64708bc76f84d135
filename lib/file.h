// File: an open file for direct I/O at its mapped device offsets.
//
// Image mode (this milestone): an image file or unmounted device plus a
// path or inode inside it. The map is read and validated once at open; every
// write is planned in full before any byte moves and refused as a whole when
// it would need allocation. Each device write is checked against the file's
// written extents right before it is submitted.
//
// Thread-safety: Pwrite, Pread, Sync and the accessors may be called from
// any number of threads at once. Each concurrent caller gets its own I/O
// queue (an io_uring, or a synchronous submitter) from a pool; no ring is
// shared behind a lock. Concurrent unaligned writers lose nothing: a
// read-modify-write of a unit waits for direct writes overlapping it (see
// write_ranges.h).
#ifndef EXT4DIO_LIB_FILE_H_
#define EXT4DIO_LIB_FILE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "device.h"
#include "extent_map.h"
#include "map_loader.h"
#include "os.h"
#include "planner.h"
#include "write_ranges.h"

namespace ext4dio {

struct OpenOptions {
  Target target;
  bool write = false;
  uint32_t queue_depth = 32;
  BackendKind backend = BackendKind::kAuto;
  bool sqpoll = false;
  bool dsync = false;        // every device write with RWF_DSYNC (FUA)
  uint64_t max_io = 0;       // 0: the device's maximum (1 MiB for images)
  Os* os = nullptr;          // nullptr: the real OS (tests inject faults here)
};

struct FileStats {
  uint64_t fast_bytes = 0, fast_requests = 0;          // direct device writes
  uint64_t rmw_bytes = 0, rmw_requests = 0;            // read-modify-write units
  uint64_t buffered_bytes = 0, buffered_requests = 0;  // non-direct writes
  uint64_t read_bytes = 0, read_requests = 0;          // device reads
  uint64_t zero_bytes = 0;                             // holes/unwritten read
  uint64_t kernel_bytes = 0, kernel_requests = 0;      // kernel path (mounted)
};

class AsyncQueue;

class File {
 public:
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<File>> Open(const OpenOptions& options);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // Writes all of [offset, offset + n) or fails: on failure the status names
  // the file offset and length that failed and no success is reported for
  // bytes not written (a prefix may have been written).
  // EXT4DIO_E_NEEDS_ALLOCATION (nothing written) when the range touches a
  // hole, an unwritten extent or EOF.
  [[nodiscard]] absl::StatusOr<size_t> Pwrite(const void* buf, size_t n, uint64_t offset);
  // Reads up to n bytes; holes and unwritten extents read as zeros, a read
  // reaching EOF is short.
  [[nodiscard]] absl::StatusOr<size_t> Pread(void* buf, size_t n, uint64_t offset);
  // Flushes the device's write cache.
  [[nodiscard]] absl::Status Sync();

  // The plan Pwrite would follow; with show_refused, ranges needing
  // allocation are kRefused pieces instead of an error.
  [[nodiscard]] absl::StatusOr<std::vector<Piece>> PlanWrite(uint64_t offset, uint64_t n,
                                                             bool show_refused = false) const;
  // First byte from offset that cannot be written without allocation.
  uint64_t WritableUntil(uint64_t offset, uint64_t n) const;

  const ExtentMap& map() const { return loaded_.map; }
  const LoadedMap& loaded() const { return loaded_; }
  uint64_t size() const { return loaded_.map.file_size(); }
  // The alignment (device offsets/lengths, buffer addresses) that avoids
  // read-modify-write and bounce buffers.
  Alignment alignment() const { return align_; }
  const char* backend_name() const;
  uint64_t max_io() const { return plan_.max_io; }
  bool writable() const { return options_.write; }
  FileStats stats() const;
  const std::string& name() const { return name_; }

  // A queue for asynchronous requests, owned by the caller; one thread at a
  // time. REQUIRES: this File outlives it.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<AsyncQueue>> NewAsyncQueue(uint32_t depth);

 private:
  friend class AsyncQueue;
  struct Slot;
  struct Op;  // one device request of a plan, with where it came from

  enum Stat {
    kFastBytes, kFastReq, kRmwBytes, kRmwReq, kBufBytes, kBufReq, kReadBytes, kReadReq,
    kZeroBytes, kKernelBytes, kKernelReq, kStatCount
  };

  File() = default;
  std::unique_ptr<Slot> AcquireSlot();
  void ReleaseSlot(std::unique_ptr<Slot> slot);
  absl::StatusOr<std::unique_ptr<IoQueue>> NewIoQueue(uint32_t depth);
  // Submits and completes `ops` on `q`, resubmitting short transfers.
  absl::Status RunOps(IoQueue& q, std::vector<Op>& ops);
  absl::Status WriteDirect(IoQueue& q, const std::vector<Piece>& pieces, const char* buf,
                           uint64_t offset);
  absl::Status WriteUnaligned(IoQueue& q, const Piece& piece, const char* src);
  absl::Status CheckInside(uint64_t device_offset, uint64_t length, uint64_t file_offset) const;
  absl::Status ReadDirect(IoQueue& q, const Piece& piece, char* dst);

  OpenOptions options_;
  Os* os_ = nullptr;
  std::string name_;
  LoadedMap loaded_;
  WrittenSet written_;
  Alignment align_;
  PlanOptions plan_;
  BackendKind backend_ = BackendKind::kSync;
  int fd_direct_ = -1;    // O_DIRECT on the image/device
  int fd_buffered_ = -1;  // the same without O_DIRECT (unaligned pieces)
  WriteRanges ranges_;

  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Slot>> pool_;

  mutable std::array<std::atomic<uint64_t>, kStatCount> stats_{};
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_FILE_H_
