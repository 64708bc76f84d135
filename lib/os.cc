#include "os.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <vector>

#include "absl/strings/str_format.h"
#include "errors.h"

namespace ext4dio {
namespace {

// One io_uring per queue: the device registered as fixed file 0, optional
// registered buffer region, optional SQPOLL.
class UringQueue final : public IoQueue {
 public:
  static absl::StatusOr<std::unique_ptr<IoQueue>> Create(int fd, const QueueOptions& o) {
    auto q = std::unique_ptr<UringQueue>(new UringQueue(fd, o));
    io_uring_params p = {};
    if (o.sqpoll) {
      p.flags |= IORING_SETUP_SQPOLL;
      p.sq_thread_idle = 200;  // ms before the poller sleeps
    } else {
      // Completions run as task work when we next return to user space,
      // instead of an IPI interrupting us for each one: at depth, that IPI
      // storm halved IOPS. A sleeping owner is still woken to post them
      // (TWA_SIGNAL_NO_IPI wakes interruptible sleeps), so the IoGate sees
      // an idle owner's completions (QueueOptions). TASKRUN_FLAG tells our
      // own peeks (Reap with nothing to wait for) that some are pending, so
      // they enter the kernel for them instead of finding none.
      p.flags |= IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    }
    int rc = io_uring_queue_init_params(o.depth, &q->ring_, &p);
    if (rc == -EINVAL && (p.flags & IORING_SETUP_COOP_TASKRUN)) {  // kernel < 5.19
      p = {};
      rc = io_uring_queue_init_params(o.depth, &q->ring_, &p);
    }
    if (rc < 0) return ErrnoError(-rc, "io_uring_queue_init");
    q->initialized_ = true;
    const int fds[2] = {fd, o.file_fd};
    if (io_uring_register_files(&q->ring_, fds, o.file_fd >= 0 ? 2 : 1) == 0)
      q->fixed_file_ = true;
    return std::unique_ptr<IoQueue>(std::move(q));
  }

  ~UringQueue() override {
    if (!initialized_) return;
    // A ring is torn down asynchronously after its fd closes (a kernel
    // worker, even after this process exits), and the files registered
    // with it are only released then: an O_EXCL device claim or a lock
    // would outlive the File. Unregistering puts them now, in our context.
    if (fixed_file_) io_uring_unregister_files(&ring_);
    io_uring_queue_exit(&ring_);
  }

  uint32_t depth() const override { return depth_; }
  uint32_t in_flight() const override { return in_flight_; }
  const char* name() const override { return "io_uring"; }
  uint64_t ReadyApprox() const override {
    // Head before tail: the caller counts completions it saw the owner
    // account before this call (AsyncQueue::PendingDeviceIo), which never
    // exceed the head read afterwards.
    const unsigned head = __atomic_load_n(ring_.cq.khead, __ATOMIC_ACQUIRE);
    const unsigned tail = __atomic_load_n(ring_.cq.ktail, __ATOMIC_ACQUIRE);
    return tail - head;
  }

  absl::Status Submit(absl::Span<const IoOp> ops) override { return SubmitAndWait(ops, 0); }

  absl::Status SubmitAndWait(absl::Span<const IoOp> ops, size_t wait_nr) override {
    if (in_flight_ + ops.size() > depth_)
      return ErrnoError(EOVERFLOW, "io_uring queue over its depth");
    for (const IoOp& op : ops) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) return ErrnoError(EBUSY, "io_uring submission queue full");
      const int target = fixed_file_ ? op.file : op.file ? file_fd_ : fd_;
      char* b = static_cast<char*>(op.buf);
      const bool fixed_buf = region_ != nullptr && b >= region_ &&
                             b + op.length <= region_ + region_bytes_;
      if (op.kind == IoOp::kWrite) {
        if (fixed_buf)
          io_uring_prep_write_fixed(sqe, target, op.buf, op.length, op.offset, 0);
        else
          io_uring_prep_write(sqe, target, op.buf, op.length, op.offset);
      } else {
        if (fixed_buf)
          io_uring_prep_read_fixed(sqe, target, op.buf, op.length, op.offset, 0);
        else
          io_uring_prep_read(sqe, target, op.buf, op.length, op.offset);
      }
      sqe->rw_flags = op.rw_flags;
      if (fixed_file_) sqe->flags |= IOSQE_FIXED_FILE;
      io_uring_sqe_set_data64(sqe, op.tag);
    }
    size_t submitted = 0;
    while (submitted < ops.size()) {
      // The last (usually only) enter also waits: one system call per
      // synchronous I/O.
      int rc = wait_nr > 0 ? io_uring_submit_and_wait(&ring_, static_cast<unsigned>(wait_nr))
                           : io_uring_submit(&ring_);
      if (rc == -EINTR) {
        if (wait_nr > 0 && io_uring_sq_ready(&ring_) == 0) {
          // Submitted; only the wait was interrupted (Reap waits again).
          submitted = ops.size();
          break;
        }
        continue;
      }
      if (rc < 0) {
        // Entries still in the SQ ring would go out with the next submit;
        // there is no way to take them back, so account them as in flight
        // and let Reap collect them.
        in_flight_ += static_cast<uint32_t>(ops.size());
        return ErrnoError(-rc, "io_uring_submit");
      }
      if (rc == 0) break;  // SQPOLL: the kernel thread takes them
      submitted += static_cast<size_t>(rc);
    }
    in_flight_ += static_cast<uint32_t>(ops.size());
    return absl::OkStatus();
  }

  absl::Status SetEventFd(int fd) override {
    if (event_fd_ >= 0) (void)io_uring_unregister_eventfd(&ring_);
    event_fd_ = -1;
    if (fd < 0) return absl::OkStatus();
    if (int rc = io_uring_register_eventfd(&ring_, fd); rc < 0)
      return ErrnoError(-rc, "io_uring_register_eventfd");
    event_fd_ = fd;
    return absl::OkStatus();
  }

  absl::Status RegisterBuffers(void* base, size_t bytes) override {
    if (in_flight_ != 0) return ErrnoError(EBUSY, "registering buffers with I/O in flight");
    if (region_ != nullptr) {
      io_uring_unregister_buffers(&ring_);
      region_ = nullptr;
      region_bytes_ = 0;
    }
    iovec iov = {base, bytes};
    if (int rc = io_uring_register_buffers(&ring_, &iov, 1); rc < 0)
      return ErrnoError(-rc, "io_uring_register_buffers");
    region_ = static_cast<char*>(base);
    region_bytes_ = bytes;
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> Reap(absl::Span<IoResult> out, size_t min_complete) override {
    if (min_complete > 0) {
      io_uring_cqe* cqe = nullptr;
      int rc;
      do {
        rc = io_uring_wait_cqe_nr(&ring_, &cqe, static_cast<unsigned>(min_complete));
      } while (rc == -EINTR || rc == -EAGAIN);
      if (rc < 0) return ErrnoError(-rc, "io_uring_wait_cqe");
    }
    io_uring_cqe* cqes[64];
    size_t got = 0;
    while (got < out.size()) {
      const unsigned want = static_cast<unsigned>(std::min<size_t>(64, out.size() - got));
      const unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, want);
      if (n == 0) break;
      for (unsigned i = 0; i < n; ++i) {
        out[got + i].tag = io_uring_cqe_get_data64(cqes[i]);
        out[got + i].result = cqes[i]->res;
      }
      io_uring_cq_advance(&ring_, n);
      got += n;
      in_flight_ -= n;
    }
    return got;
  }

 private:
  UringQueue(int fd, const QueueOptions& o) : fd_(fd), file_fd_(o.file_fd), depth_(o.depth) {}

  io_uring ring_ = {};
  bool initialized_ = false;
  int fd_, file_fd_;
  uint32_t depth_;
  uint32_t in_flight_ = 0;
  bool fixed_file_ = false;
  char* region_ = nullptr;
  size_t region_bytes_ = 0;
};

// preadv2/pwritev2 executed at submit time; Reap hands out the results.
class SyncQueue final : public IoQueue {
 public:
  SyncQueue(int fd, int file_fd, uint32_t depth)
      : fds_{fd, file_fd}, depth_(depth), done_(depth) {}
  uint32_t depth() const override { return depth_; }
  uint32_t in_flight() const override { return count_; }
  const char* name() const override { return "psync"; }
  uint64_t ReadyApprox() const override { return ready_.load(std::memory_order_acquire); }

  absl::Status Submit(absl::Span<const IoOp> ops) override {
    if (count_ + ops.size() > depth_)
      return ErrnoError(EOVERFLOW, "sync queue over its depth");
    for (const IoOp& op : ops) {
      iovec iov = {op.buf, op.length};
      const int fd = fds_[op.file ? 1 : 0];
      ssize_t rc;
      do {
        rc = op.kind == IoOp::kWrite
                 ? ::pwritev2(fd, &iov, 1, static_cast<off_t>(op.offset), op.rw_flags)
                 : ::preadv2(fd, &iov, 1, static_cast<off_t>(op.offset), op.rw_flags);
      } while (rc < 0 && errno == EINTR);
      done_[(head_ + count_) % depth_] = {op.tag, rc < 0 ? -int64_t{errno} : int64_t{rc}};
      ++count_;
      ready_.fetch_add(1, std::memory_order_release);
    }
    if (!ops.empty()) SignalEventFd();  // done here, as io_uring's CQEs would be
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> Reap(absl::Span<IoResult> out, size_t) override {
    size_t n = 0;
    while (n < out.size() && count_ > 0) {
      out[n++] = done_[head_];
      head_ = (head_ + 1) % depth_;
      --count_;
      ready_.fetch_sub(1, std::memory_order_release);
    }
    return n;
  }

 private:
  int fds_[2];
  uint32_t depth_;
  std::vector<IoResult> done_;  // a ring of depth_ results: nothing allocated per I/O
  uint32_t head_ = 0, count_ = 0;
  std::atomic<uint64_t> ready_{0};
};

}  // namespace

void IoQueue::SignalEventFd() const {
  if (event_fd_ < 0) return;
  // Fails only when the counter would overflow: it is then readable anyway.
  (void)::eventfd_write(event_fd_, 1);
}

int Os::Open(const char* path, int flags, mode_t mode) {
  int fd = ::open(path, flags | O_CLOEXEC, mode);
  return fd < 0 ? -errno : fd;
}

int Os::Close(int fd) { return ::close(fd) == 0 ? 0 : -errno; }

int Os::Flush(int fd) {
  int rc;
  do {
    rc = ::fdatasync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : -errno;
}

ssize_t Os::Pread(int fd, void* buf, size_t n, uint64_t offset) {
  ssize_t rc;
  do {
    rc = ::pread(fd, buf, n, static_cast<off_t>(offset));
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : rc;
}

ssize_t Os::Pwrite(int fd, const void* buf, size_t n, uint64_t offset) {
  ssize_t rc;
  do {
    rc = ::pwrite(fd, buf, n, static_cast<off_t>(offset));
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : rc;
}

int Os::Fcntl(int fd, int cmd, long arg) {
  int rc;
  do {
    rc = ::fcntl(fd, cmd, arg);
  } while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : rc;
}

int Os::Fiemap(int fd, struct ::fiemap* fm) {
  return ::ioctl(fd, FS_IOC_FIEMAP, fm) == 0 ? 0 : -errno;
}

int Os::Ftruncate(int fd, uint64_t size) {
  int rc;
  do {
    rc = ::ftruncate(fd, static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : -errno;
}

int Os::Fallocate(int fd, int mode, uint64_t offset, uint64_t length) {
  int rc;
  do {
    rc = ::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length));
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : -errno;
}

int Os::Fsync(int fd) {
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : -errno;
}

int Os::Fstat(int fd, struct stat* st) { return ::fstat(fd, st) == 0 ? 0 : -errno; }

int Os::Statx(int fd, unsigned mask, struct statx* sx) {
  return ::statx(fd, "", AT_EMPTY_PATH, mask, sx) == 0 ? 0 : -errno;
}

int Os::Futimens(int fd, const struct timespec times[2]) {
  return ::futimens(fd, times) == 0 ? 0 : -errno;
}

int Os::Fchmod(int fd, mode_t mode) { return ::fchmod(fd, mode) == 0 ? 0 : -errno; }

ssize_t Os::Fgetxattr(int fd, const char* name, void* value, size_t size) {
  const ssize_t rc = ::fgetxattr(fd, name, value, size);
  return rc < 0 ? -errno : rc;
}

int Os::Fremovexattr(int fd, const char* name) {
  return ::fremovexattr(fd, name) == 0 ? 0 : -errno;
}

int Os::SyncFileRange(int fd, uint64_t offset, uint64_t n, unsigned flags) {
  int rc;
  do {
    rc = ::sync_file_range(fd, static_cast<off_t>(offset), static_cast<off_t>(n), flags);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : -errno;
}

int Os::WritebackAndDrop(int fd, uint64_t offset, uint64_t n) {
  if (int rc = SyncFileRange(fd, offset, n,
                             SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                 SYNC_FILE_RANGE_WAIT_AFTER);
      rc < 0)
    return rc;
  // The data is written back: dropping the pages is only for coherence with
  // later direct reads, so a failure here is not an I/O error.
  (void)::posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(n),
                        POSIX_FADV_DONTNEED);
  return 0;
}

namespace {

struct CachestatRange {
  uint64_t off, len;
};
struct Cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
#ifndef __NR_cachestat
#define __NR_cachestat 451  // the same number on every architecture
#endif

// mincore(2) over shared read-only mappings of the range, 1 GiB at a time.
int64_t MincoreCachedBytes(int fd, uint64_t offset, uint64_t n) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return -errno;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t end = n == 0 ? size : std::min(size, offset + n);
  uint64_t pos = offset / page * page;
  int64_t cached = 0;
  std::vector<unsigned char> vec;
  while (pos < end) {
    const uint64_t len = std::min<uint64_t>(end - pos, uint64_t{1} << 30);
    void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(pos));
    if (m == MAP_FAILED) return -errno;
    vec.assign((len + page - 1) / page, 0);
    const int rc = ::mincore(m, len, vec.data());
    const int err = errno;
    ::munmap(m, len);
    if (rc != 0) return -err;
    for (unsigned char v : vec) cached += (v & 1) ? static_cast<int64_t>(page) : 0;
    pos += len;
  }
  return cached;
}

}  // namespace

int64_t Os::CachedBytes(int fd, uint64_t offset, uint64_t n) {
  static std::atomic<bool> no_cachestat{false};
  if (!no_cachestat.load(std::memory_order_relaxed)) {
    CachestatRange range{offset, n};
    Cachestat cs{};
    if (::syscall(__NR_cachestat, fd, &range, &cs, 0) == 0)
      return static_cast<int64_t>(cs.nr_cache) * ::sysconf(_SC_PAGESIZE);
    if (errno != ENOSYS) return -errno;
    no_cachestat = true;
  }
  return MincoreCachedBytes(fd, offset, n);
}

absl::StatusOr<std::unique_ptr<IoQueue>> Os::NewQueue(int fd, const QueueOptions& options) {
  if (options.depth == 0 || options.depth > 4096)
    return ErrnoError(EINVAL, absl::StrFormat("queue depth %d (1..4096)", options.depth));
  if (options.backend == BackendKind::kSync)
    return std::unique_ptr<IoQueue>(new SyncQueue(fd, options.file_fd, options.depth));
  return UringQueue::Create(fd, options);
}

Os* RealOs() {
  static Os* os = new Os();
  return os;
}

bool UringAvailable() {
  static const bool available = [] {
    io_uring ring;
    if (io_uring_queue_init(2, &ring, 0) != 0) return false;
    io_uring_queue_exit(&ring);
    return true;
  }();
  return available;
}

}  // namespace ext4dio
