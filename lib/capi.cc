// The exported C functions: thin adapters from the C ABI to the C++ modules.
// Nothing here may throw across the boundary.
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <vector>
#include <new>
#include <string>

#include <linux/falloc.h>

#include "absl/strings/str_format.h"
#include "errors.h"
#include "ext4dio/ext4dio.h"
#include "async_queue.h"
#include "file.h"
#include "map_loader.h"

#define EXT4DIO_EXPORT extern "C" __attribute__((visibility("default")))

// A map is either owned (ext4dio_map_load) or borrowed from a file.
struct ext4dio_map {
  ext4dio::LoadedMap owned;
  const ext4dio::LoadedMap* m = &owned;
  std::shared_ptr<const ext4dio::MapState> keep;  // a file's map snapshot
};

// One per ext4dio_open; in mounted mode several may share one File.
struct ext4dio_file {
  std::shared_ptr<ext4dio::File> file;
  bool writable = false;
  // The snapshot handed out by ext4dio_file_map, valid until the next call.
  mutable ext4dio::Mutex mu;
  mutable std::unique_ptr<ext4dio_map> map_view ABSL_GUARDED_BY(mu);
  mutable std::string warning ABSL_GUARDED_BY(mu);
};

struct ext4dio_queue {
  std::unique_ptr<ext4dio::AsyncQueue> queue;
};

namespace {

thread_local std::string last_error;

int Fail(const absl::Status& status) {
  last_error = std::string(status.message());
  return ext4dio::CodeOf(status);
}

int Fail(int code, const char* message) {
  last_error = message;
  return code;
}

// Copies the caller-declared prefix of `full` into `out` (struct_size
// protocol: older callers get the fields they know).
template <typename T>
int CopyOut(const T& full, T* out) {
  if (out == nullptr || out->struct_size == 0) return Fail(-EINVAL, "struct_size not set");
  const size_t n = std::min(out->struct_size, sizeof(T));
  T tmp = full;
  tmp.struct_size = n;
  std::memcpy(out, &tmp, n);
  return 0;
}

}  // namespace

EXT4DIO_EXPORT void ext4dio_target_init(ext4dio_target* t) {
  std::memset(t, 0, sizeof *t);
  t->struct_size = sizeof *t;
}

EXT4DIO_EXPORT void ext4dio_map_info_init(ext4dio_map_info* info) {
  std::memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
}

EXT4DIO_EXPORT int ext4dio_map_load(const ext4dio_target* t, ext4dio_map** out) {
  if (out == nullptr) return Fail(-EINVAL, "out is NULL");
  *out = nullptr;
  if (t == nullptr || t->struct_size < offsetof(ext4dio_target, inode) + sizeof(uint64_t))
    return Fail(-EINVAL, "target is NULL or its struct_size is too small");
  try {
    ext4dio::Target target;
    if (t->image) target.image = t->image;
    target.image_offset = t->image_offset;
    if (t->path) target.path = t->path;
    target.inode = t->inode;
    auto loaded = ext4dio::LoadMap(target);
    if (!loaded.ok()) return Fail(loaded.status());
    auto* m = new ext4dio_map;
    m->owned = std::move(*loaded);
    *out = m;
    return 0;
  } catch (const std::bad_alloc&) {
    return Fail(-ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    return Fail(-EXT4DIO_E_INTERNAL, e.what());
  }
}

EXT4DIO_EXPORT void ext4dio_map_free(ext4dio_map* map) { delete map; }

EXT4DIO_EXPORT int ext4dio_map_get_info(const ext4dio_map* map,
                                        ext4dio_map_info* info) {
  if (map == nullptr) return Fail(-EINVAL, "map is NULL");
  const ext4dio::LoadedMap& m = *map->m;
  ext4dio_map_info full;
  ext4dio_map_info_init(&full);
  full.block_size = m.map.block_size();
  full.cluster_size = m.cluster_size;
  full.size = m.map.file_size();
  full.inode = m.inode;
  full.extent_count = m.map.extent_count();
  full.device_offset = m.map.geometry().device_offset;
  full.source = static_cast<uint32_t>(m.source);
  full.extent_tree = m.extent_tree ? 1 : 0;
  full.device = m.device.c_str();
  full.warning = m.warning.empty() ? nullptr : m.warning.c_str();
  return CopyOut(full, info);
}

EXT4DIO_EXPORT int ext4dio_map_extent(const ext4dio_map* map, uint64_t index,
                                      ext4dio_extent* extent) {
  if (map == nullptr || extent == nullptr) return Fail(-EINVAL, "NULL argument");
  if (index >= map->m->map.extent_count())
    return Fail(-ERANGE, "extent index past the last extent");
  const ext4dio::Extent e = map->m->map.ExtentAt(index);
  extent->logical_block = e.logical;
  extent->physical_block = e.physical;
  extent->blocks = e.length;
  extent->flags = e.unwritten ? EXT4DIO_EXTENT_UNWRITTEN : 0;
  return 0;
}

EXT4DIO_EXPORT int ext4dio_map_query(const ext4dio_map* map, uint64_t offset,
                                     uint64_t length, ext4dio_segment* segments,
                                     size_t max_segments, size_t* n_segments) {
  if (map == nullptr || n_segments == nullptr || (segments == nullptr && max_segments))
    return Fail(-EINVAL, "NULL argument");
  *n_segments = 0;
  if (length > UINT64_MAX - offset) return Fail(-EINVAL, "offset + length overflows");
  const ext4dio::ExtentMap& m = map->m->map;
  uint64_t pos = offset;
  const uint64_t end = offset + length;
  size_t n = 0;
  while (pos < end && n < max_segments) {
    const ext4dio::Segment s = m.SegmentAt(pos, end - pos);
    segments[n].file_offset = s.offset;
    segments[n].length = s.length;
    segments[n].device_offset = s.device_offset;
    segments[n].kind = static_cast<uint32_t>(s.kind);
    ++n;
    pos += s.length;
  }
  *n_segments = n;
  return 0;
}

// ---- files ------------------------------------------------------------
namespace {

ext4dio::Target ToTarget(const ext4dio_target* t) {
  ext4dio::Target target;
  if (t->image) target.image = t->image;
  target.image_offset = t->image_offset;
  if (t->path) target.path = t->path;
  target.inode = t->inode;
  return target;
}

bool TargetOk(const ext4dio_target* t) {
  return t != nullptr && t->struct_size >= offsetof(ext4dio_target, inode) + sizeof(uint64_t);
}

template <typename F>
auto Guard(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Fail(-ENOMEM, "out of memory");
  } catch (const std::exception& e) {
    return Fail(-EXT4DIO_E_INTERNAL, e.what());
  }
}

}  // namespace

EXT4DIO_EXPORT void ext4dio_open_opts_init(ext4dio_open_opts* o) {
  std::memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->queue_depth = 32;
}

EXT4DIO_EXPORT int ext4dio_open(const ext4dio_target* t, const ext4dio_open_opts* o,
                                ext4dio_file** out) {
  if (out == nullptr) return Fail(-EINVAL, "out is NULL");
  *out = nullptr;
  if (!TargetOk(t)) return Fail(-EINVAL, "target is NULL or its struct_size is too small");
  ext4dio_open_opts opts;
  ext4dio_open_opts_init(&opts);
  if (o != nullptr) std::memcpy(&opts, o, std::min(o->struct_size, sizeof opts));
  return Guard([&]() -> int {
    ext4dio::OpenOptions options;
    options.target = ToTarget(t);
    options.write = opts.flags & EXT4DIO_OPEN_WRITE;
    options.dsync = opts.flags & EXT4DIO_OPEN_DSYNC;
    options.sqpoll = opts.flags & EXT4DIO_OPEN_SQPOLL;
    options.queue_depth = opts.queue_depth ? opts.queue_depth : 32;
    options.max_io = opts.max_io;
    options.no_fallback = opts.flags & EXT4DIO_OPEN_NO_FALLBACK;
    // EXT4DIO_OPEN_REAP_PROMPTLY is accepted and changes nothing (ext4dio.h).
    options.skip_ownership_check = opts.flags & EXT4DIO_OPEN_SKIP_OWNERSHIP_CHECK;
    switch (opts.backend) {
      case EXT4DIO_BACKEND_AUTO: options.backend = ext4dio::BackendKind::kAuto; break;
      case EXT4DIO_BACKEND_URING: options.backend = ext4dio::BackendKind::kUring; break;
      case EXT4DIO_BACKEND_SYNC: options.backend = ext4dio::BackendKind::kSync; break;
      default: return Fail(-EINVAL, "unknown backend");
    }
    auto file = ext4dio::File::Open(options);
    if (!file.ok()) return Fail(file.status());
    auto* f = new ext4dio_file;
    f->file = std::move(*file);
    f->writable = options.write;
    *out = f;
    return 0;
  });
}

EXT4DIO_EXPORT void ext4dio_close(ext4dio_file* f) { delete f; }

EXT4DIO_EXPORT int64_t ext4dio_pwrite(ext4dio_file* f, const void* buf, size_t n,
                                      uint64_t offset) {
  if (f == nullptr || (buf == nullptr && n)) return Fail(-EINVAL, "NULL argument");
  if (!f->writable) return Fail(-EBADF, "the file was opened read-only");
  return Guard([&]() -> int64_t {
    auto r = f->file->Pwrite(buf, n, offset);
    if (!r.ok()) return Fail(r.status());
    return static_cast<int64_t>(*r);
  });
}

EXT4DIO_EXPORT int64_t ext4dio_pread(ext4dio_file* f, void* buf, size_t n, uint64_t offset) {
  if (f == nullptr || (buf == nullptr && n)) return Fail(-EINVAL, "NULL argument");
  return Guard([&]() -> int64_t {
    auto r = f->file->Pread(buf, n, offset);
    if (!r.ok()) return Fail(r.status());
    return static_cast<int64_t>(*r);
  });
}

EXT4DIO_EXPORT int ext4dio_sync(ext4dio_file* f) {
  if (f == nullptr) return Fail(-EINVAL, "NULL argument");
  return Guard([&]() -> int {
    absl::Status s = f->file->Sync();
    return s.ok() ? 0 : Fail(s);
  });
}

EXT4DIO_EXPORT int ext4dio_fsync(ext4dio_file* f) {
  if (f == nullptr) return Fail(-EINVAL, "NULL argument");
  return Guard([&]() -> int {
    absl::Status s = f->file->Fsync();
    return s.ok() ? 0 : Fail(s);
  });
}

EXT4DIO_EXPORT int ext4dio_truncate(ext4dio_file* f, uint64_t size) {
  if (f == nullptr) return Fail(-EINVAL, "NULL argument");
  if (!f->writable) return Fail(-EBADF, "the file was opened read-only");
  return Guard([&]() -> int {
    absl::Status s = f->file->Truncate(size);
    return s.ok() ? 0 : Fail(s);
  });
}

EXT4DIO_EXPORT int ext4dio_fallocate(ext4dio_file* f, uint32_t mode, uint64_t offset,
                                     uint64_t length) {
  if (f == nullptr) return Fail(-EINVAL, "NULL argument");
  if (!f->writable) return Fail(-EBADF, "the file was opened read-only");
  constexpr uint32_t kKnown =
      EXT4DIO_FALLOC_KEEP_SIZE | EXT4DIO_FALLOC_PUNCH_HOLE | EXT4DIO_FALLOC_ZERO_RANGE;
  if (mode & ~kKnown) {
    return Fail(ext4dio::ErrnoError(
        EINVAL, absl::StrFormat("fallocate mode 0x%x: unknown bits 0x%x (known: "
                                 "EXT4DIO_FALLOC_KEEP_SIZE 0x1, _PUNCH_HOLE 0x2, _ZERO_RANGE 0x4)",
                                 mode, mode & ~kKnown)));
  }
  int m = 0;
  if (mode & EXT4DIO_FALLOC_KEEP_SIZE) m |= FALLOC_FL_KEEP_SIZE;
  if (mode & EXT4DIO_FALLOC_PUNCH_HOLE) m |= FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  if (mode & EXT4DIO_FALLOC_ZERO_RANGE) m |= FALLOC_FL_ZERO_RANGE;
  return Guard([&]() -> int {
    absl::Status s = f->file->Fallocate(m, offset, length);
    return s.ok() ? 0 : Fail(s);
  });
}

EXT4DIO_EXPORT void ext4dio_file_info_init(ext4dio_file_info* info) {
  std::memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
}

EXT4DIO_EXPORT int ext4dio_file_get_info(const ext4dio_file* f, ext4dio_file_info* info) {
  if (f == nullptr) return Fail(-EINVAL, "file is NULL");
  ext4dio_file_info full;
  ext4dio_file_info_init(&full);
  const ext4dio::File& file = *f->file;
  full.size = file.size();
  full.block_size = file.current()->loaded.map.block_size();
  full.offset_align = file.alignment().offset;
  full.memory_align = file.alignment().memory;
  full.backend = std::strcmp(file.backend_name(), "io_uring") == 0 ? EXT4DIO_BACKEND_URING
                                                                     : EXT4DIO_BACKEND_SYNC;
  full.max_io = file.max_io();
  full.fast_path = file.fast_path() ? 1 : 0;
  full.mounted = file.mounted() ? 1 : 0;
  {
    ext4dio::MutexLock lock(&f->mu);
    f->warning = file.warning(&full.fast_path_reason);
    full.warning = f->warning.empty() ? nullptr : f->warning.c_str();
  }
  return CopyOut(full, info);
}

EXT4DIO_EXPORT const char* ext4dio_fast_path_reason_name(uint32_t reason) {
  switch (reason) {
    case EXT4DIO_FAST_PATH_NONE: return "none";
    case EXT4DIO_FAST_PATH_NO_DEVICE: return "no-device";
    case EXT4DIO_FAST_PATH_DEVICE_UNAVAILABLE: return "device-unavailable";
    case EXT4DIO_FAST_PATH_NO_PRIVILEGE: return "no-privilege";
    case EXT4DIO_FAST_PATH_DEVICE_REFUSED: return "device-refused";
    case EXT4DIO_FAST_PATH_LEASE_UNAVAILABLE: return "lease-unavailable";
    case EXT4DIO_FAST_PATH_LEASE_BROKEN: return "lease-broken";
    case EXT4DIO_FAST_PATH_APPEND_ONLY: return "append-only";
    case EXT4DIO_FAST_PATH_FS_STOPPED: return "fs-stopped";
    case EXT4DIO_FAST_PATH_MAP_MISMATCH: return "map-mismatch";
    case EXT4DIO_FAST_PATH_REMAP_FAILED: return "remap-failed";
    case EXT4DIO_FAST_PATH_CACHE_FAILED: return "cache-failed";
    case EXT4DIO_FAST_PATH_RESTART_REFUSED: return "restart-refused";
  }
  return "unknown";
}

EXT4DIO_EXPORT const ext4dio_map* ext4dio_file_map(const ext4dio_file* f) {
  if (f == nullptr) return nullptr;
  try {
    std::shared_ptr<const ext4dio::MapState> now = f->file->snapshot();
    ext4dio::MutexLock lock(&f->mu);
    // Only the latest view is kept (valid until the next call or close): a
    // caller polling the map must not grow the file's memory without bound.
    if (f->map_view == nullptr || f->map_view->keep != now) {
      auto v = std::make_unique<ext4dio_map>();
      v->keep = now;
      v->m = &now->loaded;
      f->map_view = std::move(v);
    }
    return f->map_view.get();
  } catch (const std::exception&) {
    return nullptr;
  }
}

EXT4DIO_EXPORT int ext4dio_file_map_snapshot(const ext4dio_file* f, ext4dio_map** out) {
  if (f == nullptr || out == nullptr) return Fail(-EINVAL, "NULL argument");
  *out = nullptr;
  return Guard([&]() -> int {
    auto v = std::make_unique<ext4dio_map>();
    v->keep = f->file->snapshot();
    v->m = &v->keep->loaded;
    *out = v.release();
    return 0;
  });
}

EXT4DIO_EXPORT void ext4dio_stats_init(ext4dio_stats* s) {
  std::memset(s, 0, sizeof *s);
  s->struct_size = sizeof *s;
}

EXT4DIO_EXPORT int ext4dio_file_get_stats(const ext4dio_file* f, ext4dio_stats* out) {
  if (f == nullptr) return Fail(-EINVAL, "file is NULL");
  const ext4dio::FileStats st = f->file->stats();
  ext4dio_stats full;
  ext4dio_stats_init(&full);
  full.fast_bytes = st.fast_bytes;
  full.fast_requests = st.fast_requests;
  full.rmw_bytes = st.rmw_bytes;
  full.rmw_requests = st.rmw_requests;
  full.buffered_bytes = st.buffered_bytes;
  full.buffered_requests = st.buffered_requests;
  full.kernel_bytes = st.kernel_bytes;
  full.kernel_requests = st.kernel_requests;
  full.read_bytes = st.read_bytes;
  full.read_requests = st.read_requests;
  full.zero_bytes = st.zero_bytes;
  full.kernel_read_bytes = st.kernel_read_bytes;
  full.lease_breaks = st.lease_breaks;
  full.remaps = st.remaps;
  return CopyOut(full, out);
}

EXT4DIO_EXPORT int ext4dio_plan_write(const ext4dio_file* f, uint64_t offset, uint64_t length,
                                      ext4dio_piece* pieces, size_t max, size_t* n) {
  if (f == nullptr || n == nullptr || (pieces == nullptr && max)) return Fail(-EINVAL, "NULL argument");
  return Guard([&]() -> int {
    auto plan = f->file->PlanWrite(offset, length, /*show_refused=*/true);
    if (!plan.ok()) return Fail(plan.status());
    *n = plan->size();
    for (size_t i = 0; i < plan->size() && i < max; ++i) {
      const ext4dio::Piece& p = (*plan)[i];
      pieces[i].file_offset = p.file_offset;
      pieces[i].length = p.length;
      pieces[i].device_offset = p.device_offset;
      switch (p.kind) {
        case ext4dio::Piece::kDirect: pieces[i].kind = EXT4DIO_PIECE_FAST; break;
        case ext4dio::Piece::kRmw: pieces[i].kind = EXT4DIO_PIECE_RMW; break;
        case ext4dio::Piece::kBuffered: pieces[i].kind = EXT4DIO_PIECE_BUFFERED; break;
        case ext4dio::Piece::kKernel: pieces[i].kind = EXT4DIO_PIECE_KERNEL; break;
        default: pieces[i].kind = EXT4DIO_PIECE_REFUSED; break;
      }
    }
    return 0;
  });
}

EXT4DIO_EXPORT uint64_t ext4dio_writable_until(const ext4dio_file* f, uint64_t offset,
                                               uint64_t length) {
  if (f == nullptr) return offset;
  if (length > UINT64_MAX - offset) length = UINT64_MAX - offset;
  return f->file->WritableUntil(offset, length);
}

EXT4DIO_EXPORT int ext4dio_queue_open(ext4dio_file* f, uint32_t depth, ext4dio_queue** out) {
  if (f == nullptr || out == nullptr) return Fail(-EINVAL, "NULL argument");
  *out = nullptr;
  return Guard([&]() -> int {
    auto q = f->file->NewAsyncQueue(depth ? depth : 32);
    if (!q.ok()) return Fail(q.status());
    *out = new ext4dio_queue{std::move(*q)};
    return 0;
  });
}

EXT4DIO_EXPORT void ext4dio_queue_close(ext4dio_queue* q) { delete q; }

EXT4DIO_EXPORT int ext4dio_queue_submit(ext4dio_queue* q, const ext4dio_request* r) {
  if (q == nullptr || r == nullptr || (r->buf == nullptr && r->length))
    return Fail(-EINVAL, "NULL argument");
  if (r->op != EXT4DIO_OP_READ && r->op != EXT4DIO_OP_WRITE) return Fail(-EINVAL, "unknown op");
  return Guard([&]() -> int {
    ext4dio::AsyncRequest req{r->op == EXT4DIO_OP_WRITE, r->buf, r->length, r->offset, r->cookie};
    absl::Status s = q->queue->Submit(req);
    return s.ok() ? 0 : Fail(s);
  });
}

EXT4DIO_EXPORT int ext4dio_queue_submit_batch(ext4dio_queue* q, const ext4dio_request* r,
                                              size_t n) {
  if (q == nullptr || (r == nullptr && n)) return Fail(-EINVAL, "NULL argument");
  if (n > INT32_MAX) return Fail(-EINVAL, "batch too large");
  for (size_t i = 0; i < n; ++i) {
    if ((r[i].buf == nullptr && r[i].length) ||
        (r[i].op != EXT4DIO_OP_READ && r[i].op != EXT4DIO_OP_WRITE)) {
      if (i == 0) return Fail(-EINVAL, "request 0: NULL buffer or unknown op");
      // Start the valid prefix; the caller sees the count, and the message
      // says why the next one was not started.
      Fail(-EINVAL, "NULL buffer or unknown op");
      n = i;
      break;
    }
  }
  return Guard([&]() -> int {
    // Converted in chunks on the stack: nothing allocated per request, and
    // only the entries used are constructed (a default-constructed array
    // of 64 was a 2.5 KiB memset per call).
    alignas(ext4dio::AsyncRequest) unsigned char raw[64 * sizeof(ext4dio::AsyncRequest)];
    auto* chunk = reinterpret_cast<ext4dio::AsyncRequest*>(raw);
    size_t done = 0;
    while (done < n) {
      const size_t k = std::min<size_t>(n - done, 64);
      for (size_t i = 0; i < k; ++i) {
        const ext4dio_request& x = r[done + i];
        new (&chunk[i])
            ext4dio::AsyncRequest{x.op == EXT4DIO_OP_WRITE, x.buf, x.length, x.offset, x.cookie};
      }
      absl::Status refused;
      const size_t started = q->queue->SubmitBatch(absl::MakeConstSpan(chunk, k), &refused);
      done += started;
      if (started < k) {  // requests[done] refused, nothing of it written
        const int code = Fail(refused);
        return done == 0 ? code : static_cast<int>(done);
      }
    }
    return static_cast<int>(done);
  });
}

EXT4DIO_EXPORT int ext4dio_queue_register_buffers(ext4dio_queue* q, void* base, size_t bytes) {
  if (q == nullptr || base == nullptr || bytes == 0) return Fail(-EINVAL, "NULL or empty region");
  absl::Status s = q->queue->RegisterBuffers(base, bytes);
  return s.ok() ? 0 : Fail(s);
}

EXT4DIO_EXPORT int ext4dio_queue_reap(ext4dio_queue* q, ext4dio_completion* out, size_t max,
                                      size_t min) {
  if (q == nullptr || (out == nullptr && max)) return Fail(-EINVAL, "NULL argument");
  return Guard([&]() -> int {
    // Straight into the caller's array: the layouts are the same.
    static_assert(sizeof(ext4dio_completion) == sizeof(ext4dio::AsyncCompletion));
    static_assert(offsetof(ext4dio_completion, cookie) ==
                  offsetof(ext4dio::AsyncCompletion, cookie));
    static_assert(offsetof(ext4dio_completion, result) ==
                  offsetof(ext4dio::AsyncCompletion, result));
    static_assert(offsetof(ext4dio_completion, error_offset) ==
                  offsetof(ext4dio::AsyncCompletion, error_offset));
    static_assert(offsetof(ext4dio_completion, error_length) ==
                  offsetof(ext4dio::AsyncCompletion, error_length));
    const size_t n = std::min<size_t>(max, INT32_MAX);
    auto got = q->queue->Reap(
        absl::MakeSpan(reinterpret_cast<ext4dio::AsyncCompletion*>(out), n), std::min(min, n));
    if (!got.ok()) return Fail(got.status());
    return static_cast<int>(*got);
  });
}

EXT4DIO_EXPORT int ext4dio_queue_event_fd(ext4dio_queue* q) {
  if (q == nullptr) return Fail(-EINVAL, "queue is NULL");
  return Guard([&]() -> int {
    auto fd = q->queue->EventFd();
    if (!fd.ok()) return Fail(fd.status());
    return *fd;
  });
}

EXT4DIO_EXPORT const char* ext4dio_strerror(int code) {
  const int c = code < 0 ? -code : code;
  switch (c) {
    case 0: return "Success";
    case EXT4DIO_E_NOT_EXT4: return "Not an ext2/ext3/ext4 filesystem";
    case EXT4DIO_E_CORRUPT_FS: return "Filesystem superblock or group descriptors corrupt";
    case EXT4DIO_E_TRUNCATED: return "Filesystem extends past the end of its image or device";
    case EXT4DIO_E_CORRUPT_MAP: return "File's extent map failed validation";
    case EXT4DIO_E_UNSUPPORTED_FILE: return "File kind not supported";
    case EXT4DIO_E_UNSUPPORTED_FS: return "Filesystem features not supported";
    case EXT4DIO_E_MAP_MISMATCH: return "On-disk extent map and FIEMAP disagree";
    case EXT4DIO_E_NOT_IN_USE: return "Inode not in use";
    case EXT4DIO_E_NEEDS_ALLOCATION: return "Write needs block allocation (hole, unwritten extent or EOF)";
    case EXT4DIO_E_IN_USE: return "Image or device in use (mounted, locked or MMP)";
    case EXT4DIO_E_WRITE_REFUSED: return "Writing refused: filesystem or file state makes it unsafe";
    case EXT4DIO_E_INTERNAL: return "Internal error in libext4dio";
    default:
      if (c < 1000) return strerrordesc_np(c) ? strerrordesc_np(c) : "Unknown error";
      return "Unknown ext4dio error";
  }
}

EXT4DIO_EXPORT const char* ext4dio_last_error(void) { return last_error.c_str(); }

EXT4DIO_EXPORT const char* ext4dio_version(void) { return EXT4DIO_VERSION_STRING; }

EXT4DIO_EXPORT int ext4dio_version_number(void) { return EXT4DIO_VERSION_NUMBER; }
