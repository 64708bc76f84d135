// MountedFile: File for a file on a mounted ext4 (mounted mode).
//
// Overwrites of written extents go straight to the block device (the fast
// path) while we hold a write lease (lease.h); what needs the filesystem
// runs through the kernel on the file's own descriptor: hole fills and
// unwritten conversions concurrently inside the gate (io_gate.h),
// everything else (extending, unaligned, pinned pages) in its exclusive
// section. A range the kernel wrote stays on the kernel path until a
// deferred re-map batch (remap.h) puts it in the map. A monitor thread
// polls the lease: when another process opens or truncates the file it
// drains fast-path I/O, releases the lease and continues on the kernel
// path; it retakes the lease (and re-reads the map) when the file is free.
// One File per (device, inode) per process (open_registry.h).
//
// Code: mounted.cc (open, kernel path, re-map, metadata changes, async
// submission) and fast_path.cc (lease, start/stop, monitor, inode updates).
//
// Thread-safety: as File.
#ifndef EXT4DIO_LIB_MOUNTED_FILE_H_
#define EXT4DIO_LIB_MOUNTED_FILE_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "mutex.h"
#include "device.h"
#include "file.h"
#include "lease.h"
#include "pending_remap.h"

namespace ext4dio {

class Ext4Reader;

class MountedFile final : public File {
 public:
  // See File::Open.
  static absl::StatusOr<std::shared_ptr<File>> Open(const OpenOptions& options);
  ~MountedFile() override;

  absl::StatusOr<size_t> Pwrite(const void* buf, size_t n, uint64_t offset) override;
  absl::StatusOr<size_t> Pread(void* buf, size_t n, uint64_t offset) override;
  absl::Status Sync() override;
  absl::Status Fsync() override;
  absl::Status Truncate(uint64_t size) override;
  absl::Status Fallocate(int mode, uint64_t offset, uint64_t length) override;
  bool fast_path() const override { return fast_.load(std::memory_order_acquire); }
  absl::StatusOr<std::vector<Piece>> PlanWrite(uint64_t offset, uint64_t n,
                                               bool show_refused) const override;
  uint64_t WritableUntil(uint64_t offset, uint64_t n) const override;
  uint64_t size() const override;
  size_t SubmitAsync(DeviceExecutor& ex, absl::Span<const AsyncRequest> reqs,
                     absl::Status* refused) override;

 private:
  MountedFile() : File(/*mounted=*/true) {}
  void BeforeView() const override;
  int KernelFd() const override { return fd_file_; }
  void AdjustContext(DeviceExecutor::Context& c) const override;
  void AsyncExecutorAdded(DeviceExecutor* ex) override { gate_.AddMember(ex); }
  // Not for a pool's temporary executor: its caller may be inside the gate,
  // and RemoveMember waits for a closer, which waits for that caller.
  void AsyncExecutorRetired(DeviceExecutor* ex) override { gate_.RemoveMember(ex); }
  PlanOptions MountedPlan(const MapState& m) const;
  // Enters the gate for an async queue's submission: while it is closed,
  // keeps handling `ex`'s completions, so the writes it has in flight end
  // (a read-modify-write inside may wait for them, and the closer for it).
  uint32_t EnterReaping(DeviceExecutor& ex);
  enum class Started { kStarted, kBlocking };
  absl::StatusOr<Started> StartAsync(DeviceExecutor& ex, const AsyncRequest& r);
  absl::Status RunBlocking(DeviceExecutor& ex, const AsyncRequest& r);

  // Mounted mode. The *Locked ones run inside an IoGate::Exclusive
  // (ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_)).
  // `ex`: an idle executor to use, or nullptr (one from the pool).
  absl::StatusOr<size_t> PwriteMounted(DeviceExecutor* ex, const char* buf, size_t n,
                                       uint64_t offset);
  absl::StatusOr<size_t> PreadMounted(DeviceExecutor* ex, char* buf, size_t n, uint64_t offset);
  // The locked kernel path: inside the gate's Exclusive (extending,
  // unaligned or buffered writes, append-only files, the fast path off).
  absl::StatusOr<size_t> KernelWrite(const char* buf, size_t n, uint64_t offset)
      ABSL_LOCKS_EXCLUDED(gate_, map_mu_);
  // pwrite on the file until all of it is written or it fails (*err then
  // the errno); returns the bytes written.
  size_t WriteOnFile(const char* src, size_t n, uint64_t offset, int* err);
  // Whether kernel-path piece p (of `src`) may run concurrently, inside the
  // gate: an aligned O_DIRECT write within EOF into a hole or unwritten
  // extent (it allocates or converts, moving no block), fast path on.
  bool ConcurrentKernel(const Piece& p, const char* src, const MapState& m) const;
  // Runs such a piece now (REQUIRES: inside the gate), registered in pending_.
  absl::StatusOr<size_t> KernelWriteConcurrent(DeviceExecutor& ex, const char* src, uint64_t n,
                                               uint64_t offset);
  void NoteKernelWrite() {
    if (!kernel_dirty_.load(std::memory_order_relaxed)) kernel_dirty_.store(true);
  }
  static void KernelWritesEnded(void* file, const PendingRemap::WriteEnd* ends, size_t n);
  // Through the file's descriptor (O_DIRECT while the fast path is on:
  // unaligned ranges through an aligned bounce buffer). REQUIRES: inside
  // the gate.
  absl::StatusOr<size_t> KernelRead(char* buf, size_t n, uint64_t offset);
  // Sets or clears O_DIRECT on fd_file_. REQUIRES: inside an Exclusive.
  bool SetFileDirect(bool direct) ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_);
  // The deferred re-map (the monitor): the ranges the kernel path wrote and
  // that have completed, from FIEMAP into a new map, published without
  // closing the gate. `monitor`: the monitor's round, which skips when
  // another thread is replacing the map (so a lease break never waits for
  // someone else's re-map), stops the fast path when a batch fails, and
  // frees retired maps after gate_.Synchronize(). Otherwise (a map view,
  // on the caller's thread) it waits for map_mu_ but never for the gate:
  // that caller may own an async queue whose unreaped writes a
  // read-modify-write inside the gate waits for. A failed or unclean batch
  // is then left to the monitor, and the old map to its next round.
  void RemapPending(bool monitor) ABSL_LOCKS_EXCLUDED(gate_, map_mu_);
  // What RemapPending decided under map_mu_; the rest happens after it.
  struct RemapOutcome {
    enum Kind { kNothing, kFailed, kStrayPages, kPublished } kind = kNothing;
    absl::Status status;                      // kFailed
    std::shared_ptr<const MapState> retired;  // kPublished: the map replaced
  };
  RemapOutcome RemapPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(map_mu_);
  // The monitor: frees the maps views retired (after gate_.Synchronize()).
  void FreeRetiredMaps() ABSL_LOCKS_EXCLUDED(retired_mu_);
  // Inside an Exclusive nobody is in the gate: they can go at once.
  void DropRetiredMapsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_) {
    MutexLock lock(&retired_mu_);
    retired_.clear();
  }
  Mutex retired_mu_;
  // For the monitor to free.
  std::vector<std::shared_ptr<const MapState>> retired_ ABSL_GUARDED_BY(retired_mu_);
  absl::Status ReloadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_, map_mu_);
  // After truncate/fallocate on the file: write back and drop its pages,
  // re-read the map (fast path off if that fails).
  absl::Status AfterMetadataChangeLocked(const char* what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_, map_mu_);
  absl::Status StartFastPathLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_);
  // Writes back and drops all of the file's cached pages and records what
  // could not be dropped for the next SetMap (kernel_only_next_).
  absl::Status DropCacheLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_);
  // Re-reads flags, read-only state and shutdown: the fast path (re)starts
  // only on a file it may write. Updates append_only_.
  absl::Status RecheckFileLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_);
  // Before a fast-path write: mtime/ctime bumped once after open/sync, and
  // set-ID bits and capabilities removed as the kernel's write would.
  absl::Status PrepareFastWrite();
  void NoteFastWrite() {
    if (!times_dirty_.load(std::memory_order_relaxed)) times_dirty_.store(true);
    if (!wrote_since_poll_.load(std::memory_order_relaxed)) wrote_since_poll_.store(true);
  }
  // Monitor, while the fast path is on: timestamps at least once a second
  // while writing, set-ID bits that appeared meanwhile, read-only/shutdown.
  void PollWhileFast();
  // `reason`: EXT4DIO_FAST_PATH_*, the code of `why`.
  void StopFastPathLocked(const std::string& why, bool lease_break, uint32_t reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_);
  void TouchTimes();
  void TouchNow();
  absl::Status DropPrivilegesOnce();
  void Monitor() ABSL_LOCKS_EXCLUDED(gate_, map_mu_, monitor_mu_);

  // Held by whoever replaces the map (the deferred re-map, and the
  // Exclusive sections that change the file or re-read the map), so a re-map
  // computed before a truncate is never published after its reload. Order:
  // the gate's Exclusive, then map_mu_.
  Mutex map_mu_ ABSL_ACQUIRED_AFTER(gate_);
  int fd_file_ = -1;              // the file itself: our only descriptor of it
  MountedFileInfo info_;              // where it lives (its fd is closed)
  std::unique_ptr<Ext4Reader> reader_;  // live reader of the device
  bool can_fast_ = false;         // device and metadata readable and writable
  std::atomic<bool> append_only_{false};
  // /sys/fs/ext4/DEV/errors_count, read at fast-path start and polled: since
  // Linux 6.x errors=remount-ro marks the filesystem "emergency_ro" without
  // SB_RDONLY, so only the error count shows it cheaply.
  int errors_count_fd_ = -1;
  int64_t errors_baseline_ = -1;
  int64_t ErrorsCount() const;
  // Why a writer's fast path must stop now: read-only, shut down
  // (FilesystemStopped), or an error recorded since open. "" if none.
  std::string WhyStopped() const;
  Alignment kernel_align_{512, 512};  // O_DIRECT on the file itself
  // Kernel-path writes not in the map yet (pending_remap.h).
  PendingRemap pending_;
  // O_DIRECT is set on fd_file_ (changed only inside an Exclusive, so
  // stable for whoever is inside the gate): while the fast path is on.
  std::atomic<bool> file_direct_{false};
  // The file's size while the fast path is on (only Exclusive sections
  // change it then: extending writes, truncate, fallocate).
  std::atomic<uint64_t> known_size_{0};
  int64_t remap_not_before_ns_ = 0;  // monitor only
  IoGate gate_;
  std::unique_ptr<Lease> lease_;  // through os_; touched only inside the gate's Exclusive
  std::atomic<bool> fast_{false};
  std::atomic<bool> times_dirty_{false};    // fast writes since the last touch
  std::atomic<bool> kernel_dirty_{false};   // kernel writes since the last Sync
  std::atomic<bool> privileges_done_{false};
  std::atomic<bool> touch_needed_{true};     // no touch since open/sync yet
  std::atomic<bool> wrote_since_poll_{false};
  std::atomic<int64_t> last_touch_ns_{0};    // steady clock
  Mutex touch_mu_;       // one TouchNow at a time (atomics say when)
  Mutex privileges_mu_;  // one DropPrivilegesOnce at a time
  Mutex monitor_mu_;
  CondVar monitor_cv_;
  bool monitor_stop_ ABSL_GUARDED_BY(monitor_mu_) = false;
  std::thread monitor_;

};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_MOUNTED_FILE_H_
