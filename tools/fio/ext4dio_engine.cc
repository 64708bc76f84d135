// fio external ioengine for ext4dio: ioengine=external:/path/ext4dio.so.
//
// Each fio job (a thread: thread=1 is required) opens its files through the
// library, which keeps one handle (and one write lease) per file per
// process, so jobs of one fio run cooperate instead of breaking each
// other's lease. The engine owns file handling completely: fio never opens,
// lays out, extends or unlinks anything itself (FIO_DISKLESSIO), which also
// keeps it from touching a host path that happens to equal a path inside an
// image (ext4dio_image=IMG). What fio does to files for its own engines the
// engine does in mounted mode, through the library: a missing file is
// created (Acquire), a file shorter than the job's range is extended or laid
// out (PrepopulateFile); in an image both are errors, before any I/O.
// At the end each file gets one statistics line on stderr (PrintStats).
//
// I/O: one ext4dio queue (io_uring, or psync) per job and file, at the job's
// iodepth. fio's async model, as its io_uring engine: queue() only records
// the io_u in its file's pending array (FIO_Q_BUSY when pending + in flight
// would exceed the depth), commit() hands each file's pending requests to
// the library in one ext4dio_queue_submit_batch (one io_uring_enter for the
// batch; iodepth_batch_submit= sets how many fio queues before it commits),
// getevents(min, max) reaps (iodepth_batch_complete_min/max). A request that
// needs the kernel path runs inside the batch call (blocking) and completes
// like the rest; one the library refuses (nothing of it written, e.g.
// no_fallback) completes with its error. commit() stamps the issue time and
// records fio's submission latency and submit counts itself
// (FIO_ASYNCIO_SETS_ISSUE_TIME, io_u_queued, io_u_mark_submit), as fio
// expects of an engine with a commit hook.
// fsync=/fdatasync= (DDIR_SYNC/DATASYNC) commit the file's pending requests,
// wait for the job's writes in flight and then call ext4dio_sync (device
// cache flush; fdatasync of the file when the kernel path allocated).
//
// Build: against the source tree of the installed fio (FIO_IOOPS_VERSION must
// match exactly), with -include config-host.h -D_GNU_SOURCE; see
// tools/fio/meson.build.
#include <atomic>  // before fio.h: its arch headers otherwise declare
                   // templates inside extern "C"
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

extern "C" {
#include "fio.h"
#include "optgroup.h"
}

#include "ext4dio/ext4dio.h"

namespace {

struct Options {
  void* pad;  // fio stores the thread_data pointer here
  char* image;
  unsigned long long image_offset;
  char* backend;
  unsigned int sqpoll;
  unsigned int fixed_buffers;
  unsigned int no_fallback;
  unsigned int dsync;
  unsigned int reap_promptly;
};

fio_option kOptions[] = {
    {
        .name = "ext4dio_image",
        .lname = "ext4dio image",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(Options, image),
        .help = "Image file or unmounted device holding the filesystem: filename= is then "
                "a path inside it (default: filename= is a file on a mounted ext4)",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "ext4dio_image_offset",
        .lname = "ext4dio image offset",
        .type = FIO_OPT_ULL,
        .off1 = offsetof(Options, image_offset),
        .help = "Byte offset of the filesystem inside ext4dio_image (partitioned images)",
        .def = "0",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "ext4dio_backend",
        .lname = "ext4dio backend",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(Options, backend),
        .help = "Device I/O backend: auto (io_uring unless the device is bio-based), "
                "uring, sync (pwritev2)",
        .def = "auto",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "ext4dio_sqpoll",
        .lname = "ext4dio SQPOLL",
        .type = FIO_OPT_BOOL,
        .off1 = offsetof(Options, sqpoll),
        .help = "io_uring SQPOLL thread per ring",
        .def = "0",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "ext4dio_fixed_buffers",
        .lname = "ext4dio fixed buffers",
        .type = FIO_OPT_BOOL,
        .off1 = offsetof(Options, fixed_buffers),
        .help = "Register fio's I/O buffers with the ring (io_uring fixed buffers)",
        .def = "0",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "ext4dio_no_fallback",
        .lname = "ext4dio no fallback",
        .type = FIO_OPT_BOOL,
        .off1 = offsetof(Options, no_fallback),
        .help = "Mounted mode: fail writes that need the kernel path instead of taking it",
        .def = "0",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "ext4dio_dsync",
        .lname = "ext4dio dsync",
        .type = FIO_OPT_BOOL,
        .off1 = offsetof(Options, dsync),
        .help = "Write every request with RWF_DSYNC (FUA)",
        .def = "0",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "ext4dio_reap_promptly",
        .lname = "ext4dio reap promptly",
        .type = FIO_OPT_BOOL,
        .off1 = offsetof(Options, reap_promptly),
        .help = "Kept for old job files; no effect: every ring is COOP_TASKRUN now, and a "
                "lease break still sees an idle owner's completions (docs/safety.md)",
        .def = "1",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = nullptr,
    },
};

// Handles shared by all jobs of this fio process, by target: the library
// already shares a mounted file's handle, but an image is flock'ed per open,
// so a second job's own open would find it locked.
struct Shared {
  ext4dio_file* file = nullptr;
  int refs = 0;
  bool writable = false;
  bool did_io = false;  // a job opened a queue on it: report its statistics at the end
  std::string name;     // as the statistics line names it
};
std::mutex g_mu;
std::map<std::string, Shared>* g_files = new std::map<std::string, Shared>;

struct FileData {
  std::string key;
  ext4dio_file* file = nullptr;
  ext4dio_queue* queue = nullptr;
  uint32_t depth = 1;        // the queue's depth: pending + outstanding <= depth
  uint64_t outstanding = 0;  // started in the library, not reaped yet
  // Queued by fio, not yet handed to the library (commit() does): a fixed
  // array of `depth` entries, so queue() never allocates.
  std::unique_ptr<ext4dio_request[]> pending;
  uint32_t npending = 0;
  bool in_dirty = false;  // listed in JobData::dirty
};

// Every vector here is reserved to its bound when a job starts or opens a
// file (the job's iodepth, its number of files): none grows per I/O.
struct JobData {
  std::vector<io_u*> events;              // reaped, handed out by event()
  std::vector<io_u*> stash;               // done outside getevents (reaped while
                                          // waiting for a sync, refused at commit)
  std::vector<ext4dio_completion> comps;  // reap buffer
  std::vector<FileData*> files;           // open files of this job
  std::vector<FileData*> dirty;           // files with pending requests
  std::vector<std::string> held;          // keys of files this job did I/O on: one
                                          // reference each until Cleanup, so the
                                          // handle (and its statistics) lasts the
                                          // job, across fio's close and reopen
                                          // between phases (write, verify)
  std::set<std::string> logged;           // (file, code) of messages printed (error
                                          // path only: the set grows only on failures)
};

// errno for fio from a library code. fio shows errors as strerror() text
// and, for EIO and EREMOTEIO on the first I/O, suggests zonemode=zbd: each
// library code gets the errno closest to its meaning instead (the library's
// own message is logged beside it).
int ToErrno(int64_t code) {
  if (code >= 0) return 0;
  if (code > -1000) return static_cast<int>(-code);
  switch (-code) {
    case EXT4DIO_E_NEEDS_ALLOCATION:  // hole, unwritten extent or EOF, not writable here
    case EXT4DIO_E_UNSUPPORTED_FILE:
    case EXT4DIO_E_UNSUPPORTED_FS:
      return EOPNOTSUPP;
    case EXT4DIO_E_IN_USE:
      return EBUSY;
    case EXT4DIO_E_WRITE_REFUSED:
      return EPERM;
    case EXT4DIO_E_CORRUPT_FS:
    case EXT4DIO_E_TRUNCATED:
    case EXT4DIO_E_CORRUPT_MAP:
    case EXT4DIO_E_MAP_MISMATCH:
      return EUCLEAN;  // what ext4 itself returns for corruption (EFSCORRUPTED)
    case EXT4DIO_E_NOT_IN_USE:
      return ENOENT;
    case EXT4DIO_E_NOT_EXT4:
      return EINVAL;
    default:
      return ENOTRECOVERABLE;  // EXT4DIO_E_INTERNAL and codes newer than this engine
  }
}

// The library's message for `code` from the calling thread's last failed
// call, or its code's text.
std::string LibMessage(int64_t code) {
  const char* last = ext4dio_last_error();
  return last[0] ? last : ext4dio_strerror(static_cast<int>(code));
}

// log_err of `text` unless this job printed a message of the same kind
// before: one per file and code (the text names offsets, so a refusal that
// repeats at every offset of a random job would otherwise print, and be
// remembered, once per offset). fio's own total_err counts them all.
void LogOnce(thread_data* td, const fio_file* f, int64_t code, const std::string& text) {
  auto* jd = static_cast<JobData*>(td->io_ops_data);
  if (jd != nullptr &&
      !jd->logged.insert(std::string(f ? f->file_name : "") + '\0' + std::to_string(code)).second)
    return;
  log_err("ext4dio: %s\n", text.c_str());
}

int Fail(thread_data* td, int code, const std::string& what) {
  log_err("ext4dio: %s: %s\n", what.c_str(), LibMessage(code).c_str());
  td_verror(td, ToErrno(code < 0 ? code : -EIO), what.c_str());
  return 1;
}

std::string KeyOf(const Options* o, const fio_file* f) {
  return std::string(o->image ? o->image : "") + "\n" + std::to_string(o->image_offset) + "\n" +
         f->file_name;
}

// Creates the missing file `name` on the host (mounted mode only), and its
// missing directories (0700, as fio's create_work_dirs): an empty regular
// file, through the kernel. 0, or a negative errno (ext4dio_last_error()
// does not know it: the message is logged here).
int CreateMissing(const char* name) {
  std::string path = name;
  for (size_t i = path.find('/', 1); i != std::string::npos; i = path.find('/', i + 1)) {
    const std::string dir = path.substr(0, i);
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      const int err = errno;
      log_err("ext4dio: creating directory %s for %s: %s\n", dir.c_str(), name, strerror(err));
      return -err;
    }
  }
  const int fd = open(name, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    log_err("ext4dio: creating %s: %s\n", name, strerror(err));
    return -err;
  }
  close(fd);
  return 0;
}

// Opens (or shares) the library handle of `f`: for writing when the job
// writes; a reading job shares a writer's handle, and opens for writing
// too when it can, so a later writing job of this run can share it.
int Acquire(thread_data* td, fio_file* f, ext4dio_file** out) {
  auto* o = static_cast<Options*>(td->eo);
  const std::string key = KeyOf(o, f);
  std::lock_guard<std::mutex> lock(g_mu);
  Shared& s = (*g_files)[key];
  if (s.file != nullptr) {
    if (td_write(td) && !s.writable) {
      log_err("ext4dio: %s is open read-only in this fio run (read-only filesystem or "
              "file?) and cannot be written\n",
              f->file_name);
      td_verror(td, EROFS, "open");
      return 1;
    }
    ++s.refs;
    *out = s.file;
    return 0;
  }
  ext4dio_target t;
  ext4dio_target_init(&t);
  t.image = o->image;
  t.image_offset = o->image_offset;
  t.path = f->file_name;
  ext4dio_open_opts opts;
  ext4dio_open_opts_init(&opts);
  opts.queue_depth = td->o.iodepth ? td->o.iodepth : 1;
  opts.flags = (o->dsync ? EXT4DIO_OPEN_DSYNC : 0u) | (o->sqpoll ? EXT4DIO_OPEN_SQPOLL : 0u) |
               (o->no_fallback ? EXT4DIO_OPEN_NO_FALLBACK : 0u) |
               (o->reap_promptly ? EXT4DIO_OPEN_REAP_PROMPTLY : 0u);
  const std::string backend = o->backend ? o->backend : "auto";
  if (backend == "auto") {
    opts.backend = EXT4DIO_BACKEND_AUTO;
  } else if (backend == "uring" || backend == "io_uring") {
    opts.backend = EXT4DIO_BACKEND_URING;
  } else if (backend == "sync" || backend == "psync") {
    opts.backend = EXT4DIO_BACKEND_SYNC;
  } else {
    log_err("ext4dio: ext4dio_backend=%s: use auto, uring or sync\n", backend.c_str());
    td_verror(td, EINVAL, "ext4dio_backend");
    g_files->erase(key);
    return 1;
  }
  ext4dio_file* file = nullptr;
  bool writable = !read_only;
  int rc = -EROFS;
  if (writable) {
    ext4dio_open_opts w = opts;
    w.flags |= EXT4DIO_OPEN_WRITE;
    rc = ext4dio_open(&t, &w, &file);
    if (rc == -ENOENT && o->image == nullptr && td->o.allow_create) {
      // As fio does for its own engines (allow_file_create=1): create the
      // file, empty; PrepopulateFile then extends or lays it out to the
      // job's size through the library.
      rc = CreateMissing(f->file_name);
      if (rc == 0) rc = ext4dio_open(&t, &w, &file);
    }
    if (rc < 0 && !td_write(td) &&
        (rc == -EXT4DIO_E_WRITE_REFUSED || rc == -EXT4DIO_E_IN_USE || rc == -EACCES ||
         rc == -EPERM || rc == -EROFS)) {
      writable = false;  // a reader of something we may not write: read-only
    }
  }
  if (!writable) {
    if (td_write(td)) {
      g_files->erase(key);
      return Fail(td, rc, std::string("open ") + f->file_name + " for writing");
    }
    rc = ext4dio_open(&t, &opts, &file);
  }
  if (rc < 0) {
    g_files->erase(key);
    return Fail(td, rc, std::string("open ") + f->file_name);
  }
  s.file = file;
  s.refs = 1;
  s.writable = writable;
  s.name = o->image ? std::string(f->file_name) + " in " + o->image : f->file_name;
  *out = file;
  return 0;
}

// "64.0 MiB", as fio prints sizes (powers of 1024).
std::string Bytes(uint64_t n) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (n < 1024) return std::to_string(n) + " B";
  double v = static_cast<double>(n) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof(kUnits) / sizeof(kUnits[0])) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  snprintf(buf, sizeof(buf), "%.1f %s", v, kUnits[u]);
  return buf;
}

// One line per file when the run is done with it (its last job closed
// it): where its bytes went and whether the fast path is on, so a run that
// was silently all kernel path shows. On stderr (log_err), so that
// --output-format=json on stdout stays JSON.
void PrintStats(const std::string& name, ext4dio_file* file) {
  ext4dio_stats st;
  ext4dio_stats_init(&st);
  ext4dio_file_info info;
  ext4dio_file_info_init(&info);
  if (ext4dio_file_get_stats(file, &st) < 0 || ext4dio_file_get_info(file, &info) < 0) {
    log_err("ext4dio: %s: no statistics: %s\n", name.c_str(), ext4dio_last_error());
    return;
  }
  std::string state;
  if (!info.mounted) {
    state = "image mode (no kernel path)";
  } else if (info.fast_path) {
    state = "fast path on";
  } else {
    // The code for scripts, the library's text for people.
    state = std::string("fast path off (") + ext4dio_fast_path_reason_name(info.fast_path_reason) +
            "): " + (info.warning ? info.warning : "no reason given");
  }
  if (info.warning && info.fast_path) state += std::string(" (") + info.warning + ")";
  std::string extra;
  if (st.rmw_bytes) extra += ", read-modify-write " + Bytes(st.rmw_bytes);
  if (st.buffered_bytes) extra += ", buffered " + Bytes(st.buffered_bytes);
  log_err("ext4dio: %s: fast %s, kernel %s%s, read %s (kernel %s), lease breaks %llu, "
          "re-maps %llu, %s\n",
          name.c_str(), Bytes(st.fast_bytes).c_str(), Bytes(st.kernel_bytes).c_str(),
          extra.c_str(), Bytes(st.read_bytes).c_str(), Bytes(st.kernel_read_bytes).c_str(),
          static_cast<unsigned long long>(st.lease_breaks),
          static_cast<unsigned long long>(st.remaps), state.c_str());
}

void Release(const std::string& key) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_files->find(key);
  if (it == g_files->end()) return;
  if (--it->second.refs == 0) {
    if (it->second.did_io) PrintStats(it->second.name, it->second.file);
    ext4dio_close(it->second.file);
    g_files->erase(it);
  }
}

int Init(thread_data* td) {
  if (!td->o.use_thread) {
    log_err("ext4dio: the ext4dio engine needs thread=1: all jobs must share one process, "
            "so they share one handle (and write lease) per file instead of breaking each "
            "other's\n");
    return 1;
  }
  auto* jd = new JobData;
  const size_t depth = td->o.iodepth ? td->o.iodepth : 1;
  jd->comps.resize(depth);
  // fio has at most iodepth io_us of a job in flight, so no list of them
  // outgrows it.
  jd->events.reserve(depth);
  jd->stash.reserve(depth);
  td->io_ops_data = jd;
  return 0;
}

void Cleanup(thread_data* td) {
  auto* jd = static_cast<JobData*>(td->io_ops_data);
  if (jd == nullptr) return;
  // The last job of the run to let go of a file prints its statistics.
  for (const std::string& key : jd->held) Release(key);
  delete jd;
  td->io_ops_data = nullptr;
}

// fio calls this instead of looking at the files itself (no stat, no
// layout): the sizes come from the library.
int Setup(thread_data* td) {
  fio_file* f;
  unsigned int i;
  for_each_file(td, f, i) {
    ext4dio_file* file = nullptr;
    if (Acquire(td, f, &file) != 0) return 1;
    ext4dio_file_info info;
    ext4dio_file_info_init(&info);
    const int rc = ext4dio_file_get_info(file, &info);
    Release(KeyOf(static_cast<Options*>(td->eo), f));
    if (rc < 0) return Fail(td, rc, std::string("info ") + f->file_name);
    f->real_file_size = info.size;
    fio_file_set_size_known(f);
  }
  return 0;
}

// fio's hook for engines that handle files themselves (libpmem's
// generic_prepopulate_file), called once the job's range of `f` is known
// (file_offset, io_size) and before fio sizes its random map on it. When
// the range ends past EOF, fio's own engines extend the file first
// (filesetup.c: setup_files, extend_file); so does this one, through the
// library, instead of letting the job shrink to the file:
//  * reads (and writes with overwrite=1) need data there: the missing part
//    is written with fio's buffer contents (the kernel path), as fio lays a
//    file out;
//  * other writes: fallocate= as fio applies it (native/posix: allocate up
//    to the new size, keep: allocate without changing the size, truncate:
//    set the size, none: nothing, the writes extend the file).
// Unlike fio, which unlinks a short file and starts anew, the bytes below
// the old EOF are kept. In an image the file cannot grow: the job fails
// with the library's refusal, before any I/O.
int PrepopulateFile(thread_data* td, fio_file* f) {
  if (f->io_size == -1ULL || f->file_offset + f->io_size <= f->real_file_size) return 0;
  const uint64_t end = f->file_offset + f->io_size;
  auto* o = static_cast<Options*>(td->eo);
  if (read_only) {
    log_err("ext4dio: %s: the job reaches byte %llu, past the end of the file (%llu bytes), "
            "and --readonly forbids extending it\n",
            f->file_name, static_cast<unsigned long long>(end),
            static_cast<unsigned long long>(f->real_file_size));
    td_verror(td, EROFS, "extend");
    return 1;
  }
  ext4dio_file* file = nullptr;
  if (Acquire(td, f, &file) != 0) return 1;
  const std::string key = KeyOf(o, f);
  const bool layout = td_read(td) || (td_write(td) && td->o.overwrite && !td->o.file_append);
  int rc = 0;
  uint64_t size = 0;
  {
    // Jobs of this run that share the file extend it one at a time, each
    // from the size it has now (another job may have extended it already):
    // nothing another job wrote is laid out over.
    std::lock_guard<std::mutex> lock(g_mu);
    ext4dio_file_info info;
    ext4dio_file_info_init(&info);
    rc = ext4dio_file_get_info(file, &info);
    size = info.size;
    if (rc == 0 && size < end) {
      if (!info.mounted) {
        // What fio's fallocate= would ask for; refused by the library
        // (image mode never allocates or changes metadata), nothing written.
        rc = ext4dio_fallocate(file, 0, size, end - size);
        if (rc == 0) rc = -EXT4DIO_E_INTERNAL;  // cannot happen: never pretend it grew
      } else if (layout) {
        const unsigned long long bs = std::max<unsigned long long>(td->o.max_bs[DDIR_WRITE], 4096);
        void* buf = nullptr;
        if (posix_memalign(&buf, 4096, bs) != 0) {
          rc = -ENOMEM;
        } else {
          for (uint64_t pos = size; pos < end && !td->terminate;) {
            const uint64_t n = std::min<uint64_t>(bs, end - pos);
            fill_io_buffer(td, buf, n, n);
            const int64_t w = ext4dio_pwrite(file, buf, n, pos);
            if (w <= 0) {
              rc = w < 0 ? static_cast<int>(w) : -EIO;
              break;
            }
            pos += static_cast<uint64_t>(w);
          }
          free(buf);
          if (rc == 0 && td->o.create_fsync) rc = ext4dio_fsync(file);
        }
      } else {
        switch (td->o.fallocate_mode) {
          case FIO_FALLOCATE_NATIVE:
          case FIO_FALLOCATE_POSIX:
            rc = ext4dio_fallocate(file, 0, size, end - size);
            break;
          case FIO_FALLOCATE_KEEP_SIZE:
            rc = ext4dio_fallocate(file, EXT4DIO_FALLOC_KEEP_SIZE, size, end - size);
            break;
          case FIO_FALLOCATE_TRUNCATE:
            rc = ext4dio_truncate(file, end);  // grows only: size < end, under g_mu
            break;
          default:  // none: the job's writes past EOF extend the file
            break;
        }
      }
    }
  }
  if (rc < 0) {
    log_err("ext4dio: %s: the job reaches byte %llu (offset %llu + size %llu), past the end of "
            "the file (%llu bytes), and extending the file failed: %s\n",
            f->file_name, static_cast<unsigned long long>(end),
            static_cast<unsigned long long>(f->file_offset),
            static_cast<unsigned long long>(f->io_size), static_cast<unsigned long long>(size),
            LibMessage(rc).c_str());
    td_verror(td, ToErrno(rc), "extend");
    Release(key);
    return 1;
  }
  Release(key);
  f->real_file_size = end;  // as fio's setup_files before extend_file
  return 0;
}

int OpenFile(thread_data* td, fio_file* f) {
  auto* jd = static_cast<JobData*>(td->io_ops_data);
  auto* fd = new FileData;
  fd->key = KeyOf(static_cast<Options*>(td->eo), f);
  if (Acquire(td, f, &fd->file) != 0) {
    delete fd;
    return 1;
  }
  const uint32_t depth = td->o.iodepth ? td->o.iodepth : 1;
  fd->depth = depth;
  fd->pending.reset(new ext4dio_request[depth]);
  int rc = ext4dio_queue_open(fd->file, depth, &fd->queue);
  if (rc < 0) {
    Release(fd->key);
    delete fd;
    return Fail(td, rc, std::string("queue for ") + f->file_name);
  }
  auto* o = static_cast<Options*>(td->eo);
  if (o->fixed_buffers && td->orig_buffer != nullptr) {
    rc = ext4dio_queue_register_buffers(fd->queue, td->orig_buffer, td->orig_buffer_size);
    if (rc < 0) {
      ext4dio_queue_close(fd->queue);
      Release(fd->key);
      delete fd;
      return Fail(td, rc, "registering fio's buffers");
    }
  }
  if (std::find(jd->held.begin(), jd->held.end(), fd->key) == jd->held.end()) {
    std::lock_guard<std::mutex> lock(g_mu);
    Shared& sh = (*g_files)[fd->key];
    sh.did_io = true;
    ++sh.refs;  // released by Cleanup
    jd->held.push_back(fd->key);
  }
  FILE_SET_ENG_DATA(f, fd);
  jd->files.push_back(fd);
  jd->dirty.reserve(jd->files.size());
  return 0;
}

int CloseFile(thread_data* td, fio_file* f) {
  auto* jd = static_cast<JobData*>(td->io_ops_data);
  auto* fd = static_cast<FileData*>(FILE_ENG_DATA(f));
  if (fd == nullptr) return 0;
  // fio commits and reaps everything before it closes a file (nothing is
  // pending here then); a pending request would simply never start.
  ext4dio_queue_close(fd->queue);  // waits for what is in flight
  Release(fd->key);
  for (auto it = jd->files.begin(); it != jd->files.end(); ++it) {
    if (*it == fd) {
      jd->files.erase(it);
      break;
    }
  }
  for (auto it = jd->dirty.begin(); it != jd->dirty.end(); ++it) {
    if (*it == fd) {
      jd->dirty.erase(it);
      break;
    }
  }
  delete fd;
  FILE_SET_ENG_DATA(f, nullptr);
  return 0;
}

// Turns one library completion into fio's terms and appends the io_u. A
// failure's message (the library's text for its code, and the range that
// failed) is logged once.
void Complete(thread_data* td, const ext4dio_completion& c, std::vector<io_u*>& into) {
  auto* u = reinterpret_cast<io_u*>(static_cast<uintptr_t>(c.cookie));
  if (c.result < 0) {
    u->error = ToErrno(c.result);
    char where[160];
    snprintf(where, sizeof(where), "%s of %llu bytes at %llu (bytes %llu..%llu failed): ",
             u->ddir == DDIR_WRITE ? "write" : "read",
             static_cast<unsigned long long>(u->xfer_buflen),
             static_cast<unsigned long long>(u->offset),
             static_cast<unsigned long long>(c.error_offset),
             static_cast<unsigned long long>(c.error_offset + c.error_length -
                                             (c.error_length ? 1 : 0)));
    LogOnce(td, u->file, c.result, std::string(u->file->file_name) + ": " + where +
                    ext4dio_strerror(static_cast<int>(c.result)));
  } else {
    u->error = 0;
    u->resid = u->xfer_buflen - static_cast<unsigned long long>(c.result);
  }
  into.push_back(u);
}

// Reaps from `fd` into `into`: at least `min` (bounded by what is
// outstanding), at most `max`. Returns how many, or -1 (td error set).
int ReapFile(thread_data* td, JobData* jd, FileData* fd, unsigned min, unsigned max,
             std::vector<io_u*>& into) {
  if (max > jd->comps.size()) jd->comps.resize(max);
  const int n = ext4dio_queue_reap(fd->queue, jd->comps.data(), max, min);
  if (n < 0) {
    Fail(td, n, "reaping completions");
    return -1;
  }
  for (int i = 0; i < n; ++i) Complete(td, jd->comps[i], into);
  fd->outstanding -= static_cast<uint64_t>(n);
  return n;
}

// With FIO_ASYNCIO_SETS_ISSUE_TIME fio leaves the issue time (the start of
// the completion latency) to the engine, also for what queue() completes
// itself.
void StampIssue(thread_data* td, io_u* u) {
  if (fio_fill_issue_time(td)) fio_gettime(&u->issue_time, nullptr);
}

// Hands `fd`'s pending requests to the library, in order, one
// ext4dio_queue_submit_batch per run of started ones. A refused request
// (nothing of it written) completes with its error through the stash; the
// ones after it are submitted again. Started ones get fio's issue time and
// submission-latency sample now, as fio's own engines do after their submit
// call (a request that ran on the kernel path inside the call counts its
// time as submission, as a blocking io_submit does).
void CommitFile(thread_data* td, JobData* jd, FileData* fd) {
  const uint32_t n = fd->npending;
  uint32_t done = 0;
  while (done < n) {
    const int rc = ext4dio_queue_submit_batch(fd->queue, &fd->pending[done], n - done);
    const uint32_t started = rc > 0 ? static_cast<uint32_t>(rc) : 0;
    if (started > 0) {
      if (fio_fill_issue_time(td)) {
        timespec now;
        fio_gettime(&now, nullptr);
        for (uint32_t i = done; i < done + started; ++i) {
          auto* u = reinterpret_cast<io_u*>(static_cast<uintptr_t>(fd->pending[i].cookie));
          u->issue_time = now;
          io_u_queued(td, u);
        }
      }
      io_u_mark_submit(td, started);
      fd->outstanding += started;
      done += started;
      // Fewer than asked: pending[done] was refused. The next call starts
      // with it and returns its code (or starts it, if it now can).
      continue;
    }
    // pending[done] refused (rc < 0; 0 cannot come for a non-empty batch,
    // but must not loop either).
    auto* u = reinterpret_cast<io_u*>(static_cast<uintptr_t>(fd->pending[done].cookie));
    LogOnce(td, u->file, rc < 0 ? rc : -EIO, LibMessage(rc < 0 ? rc : -EIO));
    u->error = rc < 0 ? ToErrno(rc) : EIO;
    StampIssue(td, u);
    jd->stash.push_back(u);
    ++done;
  }
  fd->npending = 0;
}

fio_q_status Queue(thread_data* td, io_u* u) {
  auto* jd = static_cast<JobData*>(td->io_ops_data);
  auto* fd = static_cast<FileData*>(FILE_ENG_DATA(u->file));
  fio_ro_check(td, u);
  if (u->ddir == DDIR_SYNC || u->ddir == DDIR_DATASYNC) {
    StampIssue(td, u);
    // Writes this job queued or has in flight are covered: start them and
    // wait for them first (their completions are kept for getevents).
    CommitFile(td, jd, fd);
    while (fd->outstanding > 0) {
      if (ReapFile(td, jd, fd, 1, static_cast<unsigned>(fd->outstanding), jd->stash) < 0) {
        u->error = EIO;
        return FIO_Q_COMPLETED;
      }
    }
    const int rc = ext4dio_sync(fd->file);
    u->error = ToErrno(rc);
    if (rc < 0)
      LogOnce(td, u->file, rc, std::string("sync ") + u->file->file_name + ": " + LibMessage(rc));
    return FIO_Q_COMPLETED;
  }
  if (u->ddir != DDIR_READ && u->ddir != DDIR_WRITE) {
    StampIssue(td, u);
    u->error = EINVAL;  // trim: not offered
    return FIO_Q_COMPLETED;
  }
  if (fd->depth == 1) {
    // At iodepth=1 a queue buys nothing and costs a second system call
    // (submit, then wait): one synchronous call instead (submit and wait
    // in one io_uring_enter, or one pwritev2), as fio's psync does.
    StampIssue(td, u);
    const int64_t rc =
        u->ddir == DDIR_WRITE
            ? ext4dio_pwrite(fd->file, u->xfer_buf, u->xfer_buflen, u->offset)
            : ext4dio_pread(fd->file, u->xfer_buf, u->xfer_buflen, u->offset);
    if (rc < 0) {
      u->error = ToErrno(rc);
      LogOnce(td, u->file, rc, LibMessage(rc));
    } else {
      u->error = 0;
      u->resid = u->xfer_buflen - static_cast<unsigned long long>(rc);
    }
    return FIO_Q_COMPLETED;
  }
  if (fd->npending + fd->outstanding >= fd->depth) return FIO_Q_BUSY;
  ext4dio_request& r = fd->pending[fd->npending++];
  r.op = u->ddir == DDIR_WRITE ? EXT4DIO_OP_WRITE : EXT4DIO_OP_READ;
  r.buf = u->xfer_buf;
  r.length = u->xfer_buflen;
  r.offset = u->offset;
  r.cookie = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(u));
  if (!fd->in_dirty) {
    fd->in_dirty = true;
    jd->dirty.push_back(fd);  // reserved to the number of files at open
  }
  return FIO_Q_QUEUED;
}

// fio calls this when iodepth_batch_submit io_us are queued, before it
// waits for completions, and when it drains.
int Commit(thread_data* td) {
  auto* jd = static_cast<JobData*>(td->io_ops_data);
  for (FileData* fd : jd->dirty) {
    CommitFile(td, jd, fd);
    fd->in_dirty = false;
  }
  jd->dirty.clear();
  return 0;
}

// Stores at least `min` (fio bounds it by what is in flight) and at most
// `max` completions for event(): first what completed outside (the stash),
// then without blocking from every file, then blocking on the busiest file
// for what is still missing.
int GetEvents(thread_data* td, unsigned int min, unsigned int max, const timespec*) {
  auto* jd = static_cast<JobData*>(td->io_ops_data);
  jd->events.clear();
  while (!jd->stash.empty() && jd->events.size() < max) {
    jd->events.push_back(jd->stash.back());
    jd->stash.pop_back();
  }
  if (jd->files.size() == 1) {
    // One file (the usual job): one reap waits for what is missing and
    // takes whatever else is ready.
    FileData* fd = jd->files[0];
    const size_t have = jd->events.size();
    if (have < max && fd->outstanding > 0) {
      const uint64_t missing = min > have ? min - have : 0;
      const unsigned want = static_cast<unsigned>(std::min<uint64_t>(missing, fd->outstanding));
      if (ReapFile(td, jd, fd, want, max - static_cast<unsigned>(have), jd->events) < 0)
        return -EIO;
    }
    return static_cast<int>(jd->events.size());
  }
  for (FileData* fd : jd->files) {
    if (jd->events.size() >= max) break;
    if (fd->outstanding == 0) continue;
    if (ReapFile(td, jd, fd, 0, max - static_cast<unsigned>(jd->events.size()), jd->events) < 0)
      return -EIO;
  }
  while (jd->events.size() < min) {
    FileData* busiest = nullptr;
    for (FileData* fd : jd->files) {
      if (fd->outstanding > 0 && (busiest == nullptr || fd->outstanding > busiest->outstanding))
        busiest = fd;
    }
    if (busiest == nullptr) break;
    // Wait for all that is missing in one call when this file has them.
    const uint64_t missing = min - jd->events.size();
    const unsigned want = static_cast<unsigned>(std::min<uint64_t>(missing, busiest->outstanding));
    if (ReapFile(td, jd, busiest, want, max - static_cast<unsigned>(jd->events.size()),
                 jd->events) < 0)
      return -EIO;
  }
  return static_cast<int>(jd->events.size());
}

io_u* Event(thread_data* td, int i) {
  return static_cast<JobData*>(td->io_ops_data)->events[static_cast<size_t>(i)];
}

int Invalidate(thread_data*, fio_file*) { return 0; }  // no page cache on our path

int UnlinkFile(thread_data*, fio_file* f) {
  log_info("ext4dio: not unlinking %s (the engine never removes files)\n", f->file_name);
  return 0;
}

int GetFileSize(thread_data* td, fio_file* f) {
  if (fio_file_size_known(f)) return 0;
  ext4dio_file* file = nullptr;
  if (Acquire(td, f, &file) != 0) return 1;
  ext4dio_file_info info;
  ext4dio_file_info_init(&info);
  const int rc = ext4dio_file_get_info(file, &info);
  Release(KeyOf(static_cast<Options*>(td->eo), f));
  if (rc < 0) return Fail(td, rc, std::string("info ") + f->file_name);
  f->real_file_size = info.size;
  fio_file_set_size_known(f);
  return 0;
}

ioengine_ops MakeOps() {
  ioengine_ops ops = {};
  ops.name = "ext4dio";
  ops.version = FIO_IOOPS_VERSION;
  ops.flags = FIO_DISKLESSIO | FIO_NODISKUTIL | FIO_NOEXTEND | FIO_ASYNCIO_SETS_ISSUE_TIME;
  ops.setup = Setup;
  ops.prepopulate_file = PrepopulateFile;
  ops.init = Init;
  ops.queue = Queue;
  ops.commit = Commit;
  ops.getevents = GetEvents;
  ops.event = Event;
  ops.cleanup = Cleanup;
  ops.open_file = OpenFile;
  ops.close_file = CloseFile;
  ops.invalidate = Invalidate;
  ops.unlink_file = UnlinkFile;
  ops.get_file_size = GetFileSize;
  ops.option_struct_size = sizeof(Options);
  ops.options = kOptions;
  return ops;
}

}  // namespace

// fio looks up this symbol in an external engine.
extern "C" {
__attribute__((visibility("default"))) ioengine_ops ioengine = MakeOps();
}
