// ext4dio.hpp — header-only C++ wrapper over the C API (ext4dio.h).
//
// RAII handles and absl::Status / absl::StatusOr instead of int codes. No
// C++ type crosses the library boundary: everything here is inline over the
// exported C functions, so the ABI stays the C one.
//
// Thread-safety: as in ext4dio.h — a FileMap is immutable and may be queried
// from many threads at once.
//
// Link with pkg-config ext4dio-cpp (libext4dio plus abseil's status).
#ifndef EXT4DIO_EXT4DIO_HPP_
#define EXT4DIO_EXT4DIO_HPP_

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "ext4dio/ext4dio.h"
#include "ext4dio/status.hpp"

namespace ext4dio {

// The status for a C API code (negative) with `message` (the code's text
// when empty): absl code and typed payload from ext4dio/status.hpp, the same
// table the library uses. OK for code >= 0.
inline absl::Status StatusFromCode(int code, const std::string& message) {
  return StatusWithCode(code, message.empty() ? ext4dio_strerror(code) : message);
}

// The C API code (negative) of a status from this wrapper or the library; 0
// for OK.
inline int CodeOfStatus(const absl::Status& status) { return CodeFromStatus(status); }

// The status of the calling thread's last failed call, which returned `code`.
inline absl::Status LastStatus(int code) {
  return StatusFromCode(code, ext4dio_last_error());
}

// Where a file is: an image (file or unmounted device) and a path or inode
// inside it, or a file on a mounted ext4.
struct Location {
  std::string image;  // empty: mounted mode
  uint64_t image_offset = 0;
  std::string path;
  uint64_t inode = 0;

  static Location Mounted(std::string path) { return {{}, 0, std::move(path), 0}; }
  static Location InImage(std::string image, std::string path, uint64_t offset = 0) {
    return {std::move(image), offset, std::move(path), 0};
  }
  static Location InodeInImage(std::string image, uint64_t inode, uint64_t offset = 0) {
    return {std::move(image), offset, {}, inode};
  }
  // The C struct; it points into this Location's strings.
  ext4dio_target ToTarget() const {
    ext4dio_target t;
    ext4dio_target_init(&t);
    t.image = image.empty() ? nullptr : image.c_str();
    t.image_offset = image_offset;
    t.path = path.empty() ? nullptr : path.c_str();
    t.inode = inode;
    return t;
  }
};

// A file's validated, immutable extent map.
class FileMap {
 public:
  [[nodiscard]] static absl::StatusOr<FileMap> Load(const Location& where) {
    const ext4dio_target t = where.ToTarget();
    ext4dio_map* m = nullptr;
    if (int rc = ext4dio_map_load(&t, &m); rc < 0) return LastStatus(rc);
    return FileMap(m);
  }

  const ext4dio_map_info& info() const { return info_; }
  uint32_t block_size() const { return info_.block_size; }
  uint64_t size() const { return info_.size; }
  uint64_t extent_count() const { return info_.extent_count; }
  // Empty when the map is fully trusted.
  std::string warning() const { return info_.warning ? info_.warning : ""; }

  // The on-disk leaf extents, as stored, in logical order.
  std::vector<ext4dio_extent> Extents() const {
    std::vector<ext4dio_extent> out(info_.extent_count);
    for (uint64_t i = 0; i < info_.extent_count; ++i)
      ext4dio_map_extent(map_.get(), i, &out[i]);
    return out;
  }

  // Segments covering [offset, offset + length).
  [[nodiscard]] absl::StatusOr<std::vector<ext4dio_segment>> Query(
      uint64_t offset, uint64_t length) const {
    std::vector<ext4dio_segment> out;
    ext4dio_segment batch[64];
    uint64_t pos = offset;
    if (length > UINT64_MAX - offset)
      return absl::InvalidArgumentError("offset + length overflows");
    const uint64_t end = offset + length;
    while (pos < end) {
      size_t n = 0;
      if (int rc = ext4dio_map_query(map_.get(), pos, end - pos, batch, 64, &n); rc < 0)
        return LastStatus(rc);
      if (n == 0) break;
      out.insert(out.end(), batch, batch + n);
      pos = batch[n - 1].file_offset + batch[n - 1].length;
    }
    return out;
  }

  const ext4dio_map* get() const { return map_.get(); }

 private:
  friend class DirectFile;
  struct Free {
    void operator()(ext4dio_map* m) const { ext4dio_map_free(m); }
  };
  explicit FileMap(ext4dio_map* m) : map_(m) {
    ext4dio_map_info_init(&info_);
    ext4dio_map_get_info(m, &info_);
  }

  std::unique_ptr<ext4dio_map, Free> map_;
  ext4dio_map_info info_;
};

// ext4dio_open_opts with a field per EXT4DIO_OPEN_* flag (ToC() is the C
// struct).
struct DirectFileOptions {
  bool write = false;                 // EXT4DIO_OPEN_WRITE
  bool dsync = false;                 // EXT4DIO_OPEN_DSYNC
  bool sqpoll = false;                // EXT4DIO_OPEN_SQPOLL
  uint32_t queue_depth = 32;
  ext4dio_backend backend = EXT4DIO_BACKEND_AUTO;
  uint64_t max_io = 0;
  bool no_fallback = false;  // mounted: refuse writes that need the kernel path
  bool reap_promptly = false;         // EXT4DIO_OPEN_REAP_PROMPTLY (no effect now)
  bool skip_ownership_check = false;  // image: EXT4DIO_OPEN_SKIP_OWNERSHIP_CHECK

  ext4dio_open_opts ToC() const {
    ext4dio_open_opts opts;
    ext4dio_open_opts_init(&opts);
    opts.flags = (write ? EXT4DIO_OPEN_WRITE : 0u) | (dsync ? EXT4DIO_OPEN_DSYNC : 0u) |
                 (sqpoll ? EXT4DIO_OPEN_SQPOLL : 0u) |
                 (no_fallback ? EXT4DIO_OPEN_NO_FALLBACK : 0u) |
                 (reap_promptly ? EXT4DIO_OPEN_REAP_PROMPTLY : 0u) |
                 (skip_ownership_check ? EXT4DIO_OPEN_SKIP_OWNERSHIP_CHECK : 0u);
    opts.queue_depth = queue_depth;
    opts.backend = backend;
    opts.max_io = max_io;
    return opts;
  }
};

// A file open for direct I/O at its mapped device offsets (see ext4dio.h
// for the image-mode rules). Thread-safe: Pwrite/Pread/Sync from many
// threads at once.
class DirectFile {
 public:
  [[nodiscard]] static absl::StatusOr<DirectFile> Open(const Location& where,
                                                       const DirectFileOptions& o = {}) {
    const ext4dio_target t = where.ToTarget();
    const ext4dio_open_opts opts = o.ToC();
    ext4dio_file* f = nullptr;
    if (int rc = ext4dio_open(&t, &opts, &f); rc < 0) return LastStatus(rc);
    return DirectFile(f);
  }

  // Writes all n bytes or fails (the message names the failed offset; a
  // mounted-mode write that stopped part-way says how much was written).
  [[nodiscard]] absl::Status Pwrite(const void* buf, size_t n, uint64_t offset) {
    int64_t rc = ext4dio_pwrite(file_.get(), buf, n, offset);
    if (rc < 0) return LastStatus(static_cast<int>(rc));
    if (static_cast<uint64_t>(rc) < n) {
      // The error that stopped it comes with the next write at its offset.
      const uint64_t at = offset + static_cast<uint64_t>(rc);
      int64_t again = ext4dio_pwrite(file_.get(), static_cast<const char*>(buf) + rc,
                                     n - static_cast<size_t>(rc), at);
      if (again < 0) return LastStatus(static_cast<int>(again));
      if (static_cast<uint64_t>(again) < n - static_cast<uint64_t>(rc))
        return absl::DataLossError("short write at file offset " + std::to_string(at));
    }
    return absl::OkStatus();
  }
  // Bytes written (mounted mode: short when a piece failed after others
  // were written, like pwrite(2)).
  [[nodiscard]] absl::StatusOr<size_t> PwriteSome(const void* buf, size_t n, uint64_t offset) {
    int64_t rc = ext4dio_pwrite(file_.get(), buf, n, offset);
    if (rc < 0) return LastStatus(static_cast<int>(rc));
    return static_cast<size_t>(rc);
  }
  // Bytes read: short at EOF.
  [[nodiscard]] absl::StatusOr<size_t> Pread(void* buf, size_t n, uint64_t offset) {
    int64_t rc = ext4dio_pread(file_.get(), buf, n, offset);
    if (rc < 0) return LastStatus(static_cast<int>(rc));
    return static_cast<size_t>(rc);
  }
  [[nodiscard]] absl::Status Sync() {
    int rc = ext4dio_sync(file_.get());
    return rc < 0 ? LastStatus(rc) : absl::OkStatus();
  }
  // Mounted mode, through the kernel, then re-mapped (see ext4dio.h).
  [[nodiscard]] absl::Status Fsync() {
    int rc = ext4dio_fsync(file_.get());
    return rc < 0 ? LastStatus(rc) : absl::OkStatus();
  }
  [[nodiscard]] absl::Status Truncate(uint64_t size) {
    int rc = ext4dio_truncate(file_.get(), size);
    return rc < 0 ? LastStatus(rc) : absl::OkStatus();
  }
  // mode: EXT4DIO_FALLOC_* bits.
  [[nodiscard]] absl::Status Fallocate(uint32_t mode, uint64_t offset, uint64_t length) {
    int rc = ext4dio_fallocate(file_.get(), mode, offset, length);
    return rc < 0 ? LastStatus(rc) : absl::OkStatus();
  }
  ext4dio_file_info Info() const {
    ext4dio_file_info info;
    ext4dio_file_info_init(&info);
    ext4dio_file_get_info(file_.get(), &info);
    return info;
  }
  // Closes now (also what the destructor does); the object is then empty.
  void Close() { file_.reset(); }
  ext4dio_stats Stats() const {
    ext4dio_stats s;
    ext4dio_stats_init(&s);
    ext4dio_file_get_stats(file_.get(), &s);
    return s;
  }
  // The plan for a write, refused ranges included, nothing written.
  [[nodiscard]] absl::StatusOr<std::vector<ext4dio_piece>> PlanWrite(uint64_t offset,
                                                                     uint64_t length) const {
    size_t n = 0;
    if (int rc = ext4dio_plan_write(file_.get(), offset, length, nullptr, 0, &n); rc < 0)
      return LastStatus(rc);
    std::vector<ext4dio_piece> pieces(n);
    if (int rc = ext4dio_plan_write(file_.get(), offset, length, pieces.data(), n, &n); rc < 0)
      return LastStatus(rc);
    return pieces;
  }
  uint64_t WritableUntil(uint64_t offset, uint64_t length) const {
    return ext4dio_writable_until(file_.get(), offset, length);
  }
  // A snapshot of the file's current map with a lifetime of its own
  // (ext4dio_file_map_snapshot).
  [[nodiscard]] absl::StatusOr<FileMap> MapSnapshot() const {
    ext4dio_map* m = nullptr;
    if (int rc = ext4dio_file_map_snapshot(file_.get(), &m); rc < 0) return LastStatus(rc);
    return FileMap(m);
  }
  ext4dio_file* get() const { return file_.get(); }

 private:
  struct Closer {
    void operator()(ext4dio_file* f) const { ext4dio_close(f); }
  };
  explicit DirectFile(ext4dio_file* f) : file_(f) {}
  std::unique_ptr<ext4dio_file, Closer> file_;
};

// Asynchronous requests on one ring; one thread at a time.
class RequestQueue {
 public:
  // REQUIRES: `file` outlives the queue.
  [[nodiscard]] static absl::StatusOr<RequestQueue> Open(DirectFile& file, uint32_t depth) {
    ext4dio_queue* q = nullptr;
    if (int rc = ext4dio_queue_open(file.get(), depth, &q); rc < 0) return LastStatus(rc);
    return RequestQueue(q);
  }
  [[nodiscard]] absl::Status Submit(const ext4dio_request& r) {
    int rc = ext4dio_queue_submit(queue_.get(), &r);
    return rc < 0 ? LastStatus(rc) : absl::OkStatus();
  }
  // Starts requests[0..n) with one submission; returns how many started
  // (fewer: requests[returned] was refused, nothing of it written; submit
  // from there again to get its error), or the error when the first was
  // refused.
  [[nodiscard]] absl::StatusOr<size_t> SubmitBatch(const ext4dio_request* requests, size_t n) {
    int rc = ext4dio_queue_submit_batch(queue_.get(), requests, n);
    if (rc < 0) return LastStatus(rc);
    return static_cast<size_t>(rc);
  }
  // io_uring fixed buffers for requests inside [base, base+bytes).
  [[nodiscard]] absl::Status RegisterBuffers(void* base, size_t bytes) {
    int rc = ext4dio_queue_register_buffers(queue_.get(), base, bytes);
    return rc < 0 ? LastStatus(rc) : absl::OkStatus();
  }
  [[nodiscard]] absl::StatusOr<size_t> Reap(ext4dio_completion* out, size_t max, size_t min) {
    int rc = ext4dio_queue_reap(queue_.get(), out, max, min);
    if (rc < 0) return LastStatus(rc);
    return static_cast<size_t>(rc);
  }
  // A descriptor readable whenever a completion is ready (an eventfd owned
  // by the queue: ext4dio_queue_event_fd).
  [[nodiscard]] absl::StatusOr<int> EventFd() {
    int rc = ext4dio_queue_event_fd(queue_.get());
    if (rc < 0) return LastStatus(rc);
    return rc;
  }

 private:
  struct Close {
    void operator()(ext4dio_queue* q) const { ext4dio_queue_close(q); }
  };
  explicit RequestQueue(ext4dio_queue* q) : queue_(q) {}
  std::unique_ptr<ext4dio_queue, Close> queue_;
};

}  // namespace ext4dio

#endif  // EXT4DIO_EXT4DIO_HPP_
