// File: an open file for direct I/O at its mapped device offsets: the
// interface both modes implement (ImageFile, image_file.h; MountedFile,
// mounted_file.h), and what they share.
//
// Image mode: an image file or unmounted device plus a path or inode inside
// it. The map is read and validated once at open; every write is planned in
// full before any byte moves and refused as a whole when it would need
// allocation. Each device write is checked against the file's written
// extents right before it is submitted.
//
// Mounted mode: a file on a mounted ext4. Overwrites of written extents go
// straight to the block device (the fast path) while we hold a write lease
// (lease.h); everything that needs the filesystem (holes, unwritten extents,
// appends, unaligned bytes next to them) runs through the kernel on the
// file's own descriptor inside the gate's exclusive section (io_gate.h),
// after which the range is re-mapped from FIEMAP and validated. A monitor
// thread polls the lease: when another process opens or truncates the file
// it drains fast-path I/O, releases the lease and continues on the kernel
// path; it retakes the lease (and re-reads the map) when the file is free.
// One File per (device, inode) per process: opening the same file again
// shares it (see Open).
//
// Thread-safety: Pwrite, Pread, Sync and the accessors may be called from
// any number of threads at once. Each concurrent caller gets its own device
// executor (executor.h: an io_uring, or a synchronous submitter) from a
// lock-free pool; no ring is shared behind a lock. The File plans; the
// executor runs what was planned. Concurrent unaligned writers lose nothing: a
// read-modify-write of a unit waits for direct writes overlapping it (see
// write_ranges.h).
#ifndef EXT4DIO_LIB_FILE_H_
#define EXT4DIO_LIB_FILE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "mutex.h"
#include "device.h"
#include "executor.h"
#include "executor_pool.h"
#include "ext4dio/ext4dio.h"
#include "extent_map.h"
#include "io_gate.h"
#include "map_loader.h"
#include "map_state.h"
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
  bool no_fallback = false;  // mounted: never use the kernel path for writes
  bool skip_ownership_check = false;  // image, write: no inode scan (a warning says so)
  Os* os = nullptr;          // nullptr: the real OS (tests inject faults here)
  // Mounted: how often the lease is polled, and retaken after a break.
  uint32_t lease_poll_ms = 10;
  uint32_t lease_retry_ms = 200;
};

struct FileStats {
  uint64_t fast_bytes = 0, fast_requests = 0;          // direct device writes
  uint64_t rmw_bytes = 0, rmw_requests = 0;            // read-modify-write units
  uint64_t buffered_bytes = 0, buffered_requests = 0;  // non-direct writes
  uint64_t read_bytes = 0, read_requests = 0;          // device reads
  uint64_t zero_bytes = 0;                             // holes/unwritten read
  uint64_t kernel_bytes = 0, kernel_requests = 0;      // kernel path (mounted)
  uint64_t kernel_read_bytes = 0;  // reads through the kernel (mounted)
  uint64_t lease_breaks = 0;   // fast path given up for another opener
  uint64_t remaps = 0;         // ranges re-mapped after kernel-path changes
};

class AsyncQueue;

class File : public std::enable_shared_from_this<File> {
 public:
  // Mounted mode: when this process already has the file open, returns the
  // same File if the options agree (write, dsync, no_fallback, backend),
  // else EXT4DIO_E_IN_USE: a second descriptor would break our own lease.
  // Picks the mode: ImageFile (image_file.h) when options.target names an
  // image or device, else MountedFile (mounted_file.h).
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<File>> Open(const OpenOptions& options);
  virtual ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // Image mode: writes all of [offset, offset + n) or fails: on failure the
  // status names the file offset and length that failed (a prefix may have
  // been written). EXT4DIO_E_NEEDS_ALLOCATION (nothing written) when the
  // range touches a hole, an unwritten extent or EOF.
  // Mounted mode: pieces needing the filesystem go through the kernel; the
  // pieces run in file order and stop at the first failure: a failure after
  // some bytes were written returns that shorter count (like pwrite), the
  // next call reports the error. With no_fallback, a request that would
  // need the kernel is refused before anything is written.
  [[nodiscard]] virtual absl::StatusOr<size_t> Pwrite(const void* buf, size_t n,
                                                      uint64_t offset) = 0;
  // Reads up to n bytes; holes and unwritten extents read as zeros, a read
  // reaching EOF is short.
  [[nodiscard]] virtual absl::StatusOr<size_t> Pread(void* buf, size_t n, uint64_t offset) = 0;
  // Makes written data durable: flushes the device's write cache; mounted,
  // also updates mtime/ctime after fast-path writes and fdatasyncs the file
  // when the kernel path allocated since the last Sync.
  [[nodiscard]] virtual absl::Status Sync() = 0;
  // Mounted mode, on the kernel path (the file's descriptor is ours alone
  // while the lease is held), followed by a re-read of the map.
  [[nodiscard]] virtual absl::Status Fsync() = 0;
  [[nodiscard]] virtual absl::Status Truncate(uint64_t size) = 0;
  // fallocate(2) modes: 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE |
  // FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE [| KEEP_SIZE].
  [[nodiscard]] virtual absl::Status Fallocate(int mode, uint64_t offset, uint64_t length) = 0;

  bool mounted() const { return mounted_; }
  // Whether I/O currently goes straight to the device (image mode: always).
  virtual bool fast_path() const = 0;
  // Why the fast path is off (or the map less trusted); "" if nothing.
  // *reason (when given): the same as an EXT4DIO_FAST_PATH_* code, read
  // with the text.
  std::string warning(uint32_t* reason = nullptr) const;

  // The plan Pwrite would follow; with show_refused, ranges needing
  // allocation are kRefused pieces instead of an error.
  [[nodiscard]] virtual absl::StatusOr<std::vector<Piece>> PlanWrite(
      uint64_t offset, uint64_t n, bool show_refused = false) const = 0;
  // First byte from offset that cannot be written without allocation.
  virtual uint64_t WritableUntil(uint64_t offset, uint64_t n) const = 0;

  // The current map (mounted mode: replaced after kernel-path changes,
  // which it shows once they completed; a snapshot stays valid as long as
  // it is held). Not from inside the gate (it may re-map).
  std::shared_ptr<const MapState> snapshot() const;
  // The map as published now, without re-mapping first (geometry, sizes).
  std::shared_ptr<const MapState> current() const;
  // Image mode: the map, fixed for the File's life (mounted: use snapshot()).
  const ExtentMap& map() const { return cur().loaded.map; }
  virtual uint64_t size() const = 0;
  // The alignment (device offsets/lengths, buffer addresses) that avoids
  // read-modify-write and bounce buffers.
  Alignment alignment() const { return align_; }
  const char* backend_name() const;
  uint64_t max_io() const { return plan_.max_io; }
  bool writable() const { return options_.write; }
  FileStats stats() const;
  const std::string& name() const { return name_; }
  const OpenOptions& options() const { return options_; }

  // A queue for asynchronous requests, owned by the caller; one thread at a
  // time. The queue keeps this File alive until it is destroyed.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<AsyncQueue>> NewAsyncQueue(uint32_t depth);

  // For AsyncQueue: plans and starts reqs in order on `ex` (an executor
  // NewAsyncQueue made), handing their device I/O to the ring together.
  // Blocking requests (see async_queue.h) run here and complete like the
  // rest. Returns how many were started; when fewer, *refused says why the
  // next was not (nothing of it written).
  virtual size_t SubmitAsync(DeviceExecutor& ex, absl::Span<const AsyncRequest> reqs,
                             absl::Status* refused) = 0;
  // For AsyncQueue: its executor is done (drained): no longer a member of
  // the gate, its statistics kept.
  void RetireExecutor(std::unique_ptr<DeviceExecutor> ex);

 protected:
  class Borrowed;  // an executor of the pool, for one synchronous call

  enum Stat {
    kFastBytes, kFastReq, kRmwBytes, kRmwReq, kBufBytes, kBufReq, kReadBytes, kReadReq,
    kZeroBytes, kKernelBytes, kKernelReq, kKernelReadBytes, kLeaseBreaks, kRemaps, kStatCount
  };

  explicit File(bool mounted) : mounted_(mounted) {}
  // The mode's hooks: before a map view (mounted: re-map what ended); the
  // descriptor kernel-path ops use in a ring (-1: none); an executor's
  // context; an AsyncQueue's executor made or retired.
  virtual void BeforeView() const {}
  virtual int KernelFd() const { return -1; }
  virtual void AdjustContext(DeviceExecutor::Context& c) const { (void)c; }
  virtual void AsyncExecutorAdded(DeviceExecutor* ex) { (void)ex; }
  virtual void AsyncExecutorRetired(DeviceExecutor* ex) { (void)ex; }
  // Rings go, then the device descriptors close (derived destructors call
  // it before closing what the rings registered). Idempotent.
  void CloseDevice();
  absl::Status SetUpBackend(const std::string& device_path);
  const MapState& cur() const { return *current_.load(std::memory_order_acquire); }
  // Publishes a new map; returns the old one, which callers inside the gate
  // may still read: free it inside an Exclusive or after gate_.Synchronize().
  // REQUIRES (mounted): MountedFile::map_mu_.
  std::shared_ptr<const MapState> SetMap(LoadedMap loaded);
  // The same with its written set already built (the re-map's, by merge).
  std::shared_ptr<const MapState> SetMap(LoadedMap loaded, WrittenSet written);

  DeviceExecutor::Context ExecContext() const;
  // `for_async`: the executor keeps I/O in flight between calls (AsyncQueue).
  absl::StatusOr<std::unique_ptr<DeviceExecutor>> NewExecutor(uint32_t depth, bool for_async);
  absl::StatusOr<std::unique_ptr<IoQueue>> NewIoQueue(uint32_t depth, bool for_async = false);
  // Builds and commits on `ex` (for the next Flush or Wait) one request:
  // the direct pieces of a plan for `buf` at `offset`, or a mapped read of
  // [offset, offset + n) into buf (holes and unwritten extents zeroed here).
  // Returns the request's index.
  absl::StatusOr<uint32_t> CommitDirectWrite(DeviceExecutor& ex, uint64_t cookie, bool sync,
                                             absl::Span<const Piece> pieces, const char* buf,
                                             uint64_t offset);
  absl::StatusOr<uint32_t> CommitRead(DeviceExecutor& ex, uint64_t cookie, bool sync, char* buf,
                                      uint64_t n, uint64_t offset);
  // Runs sync request r to its end: its bytes, or the status of its first
  // failed op.
  absl::StatusOr<uint64_t> WaitFor(DeviceExecutor& ex, uint32_t r);
  // Synchronous device I/O on `ex` (idle, or drained): the direct pieces of
  // a plan as one request; an unaligned piece; a mapped read.
  absl::Status WriteDirect(DeviceExecutor& ex, absl::Span<const Piece> pieces, const char* buf,
                           uint64_t offset);
  absl::Status WriteUnaligned(DeviceExecutor& ex, const Piece& piece, const char* src);
  // Direct pieces first, then the unaligned ones; *failed (if given) is the
  // piece that failed.
  absl::Status WritePieces(DeviceExecutor& ex, absl::Span<const Piece> pieces, const char* buf,
                           uint64_t offset, const Piece** failed = nullptr);
  absl::StatusOr<size_t> PreadMapped(DeviceExecutor& ex, char* buf, size_t n, uint64_t offset);
  // The status of a failed synchronous request (its first failed op).
  absl::Status FailureStatus(const DeviceExecutor::Failure& f) const;

  OpenOptions options_;
  Os* os_ = nullptr;
  std::string name_;
  const bool mounted_;
  mutable Mutex state_mu_;
  std::shared_ptr<const MapState> state_ ABSL_GUARDED_BY(state_mu_);  // the owner of *current_
  std::atomic<const MapState*> current_{nullptr};
  Alignment align_;
  PlanOptions plan_;
  BackendKind backend_ = BackendKind::kSync;
  int fd_direct_ = -1;    // O_DIRECT on the image/device
  int fd_buffered_ = -1;  // the same without O_DIRECT (unaligned pieces)
  WriteRanges ranges_;
  mutable Mutex warning_mu_;
  std::string warning_ ABSL_GUARDED_BY(warning_mu_);  // what warning() says
  uint32_t fast_path_reason_ ABSL_GUARDED_BY(warning_mu_) = EXT4DIO_FAST_PATH_NONE;
  // Mounted: file ranges the page cache kept after a drop, for the next
  // SetMap (MapState::kernel_only). Inside the gate's Exclusive only.
  RangeList kernel_only_next_;

  ExecutorPool pool_;  // synchronous callers' executors
  mutable Mutex exec_mu_;
  std::vector<const DeviceExecutor*> async_executors_ ABSL_GUARDED_BY(exec_mu_);  // AsyncQueues' (stats)

  mutable std::array<std::atomic<uint64_t>, kStatCount> stats_{};
};

// File::Borrowed: an executor for one synchronous call: from the pool (given back after),
// a new one added to it, or (every slot busy) a temporary one.
class File::Borrowed {
 public:
  explicit Borrowed(File& f) : f_(f) {
    lease_ = f.pool_.Take();
    if (lease_.executor != nullptr) return;
    auto made = f.NewExecutor(f.options_.queue_depth, /*for_async=*/false);
    if (!made.ok()) {
      error_ = made.status();
      return;
    }
    lease_ = f.pool_.Add(*made);
    if (lease_.executor == nullptr) temp_ = std::move(*made);
  }
  ~Borrowed() {
    if (temp_ != nullptr) {
      (void)temp_->Drain();
      f_.RetireExecutor(std::move(temp_));
    } else if (lease_.executor != nullptr && !lease_.executor->broken()) {
      // A broken ring (a failed reap) keeps its slot, never used again.
      f_.pool_.Give(lease_);
    }
  }
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;
  DeviceExecutor* get() const { return temp_ ? temp_.get() : lease_.executor; }
  absl::Status error() const;  // why get() is null

 private:
  File& f_;
  ExecutorPool::Lease lease_;
  std::unique_ptr<DeviceExecutor> temp_;
  absl::Status error_;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_FILE_H_
