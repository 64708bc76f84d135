// ext4dio-write: write standard input (or a file) into a file on ext4 at the
// device offsets of its extents, with direct I/O through io_uring.
//
//   ext4dio-write [--image IMG [--image-offset N]] [--inode N] [--input FILE|-]
//                 [--offset N] [--length N] [--queue-depth N] [--io-size N]
//                 [--threads N] [--sync] [--dsync] [--verify] [--no-fallback]
//                 [--no-ownership-check]
//                 [--dry-run] [--json] [--progress|--no-progress] [TARGET]
//
// An input of known length (a regular file, or --length) is planned in full
// first: if any byte would need block allocation (a hole, an unwritten
// extent, past EOF), nothing is written. A stream of unknown length is
// written in order and stops at the first byte that needs allocation.
//
// Data path: --threads threads, each with its own asynchronous request
// queue (--queue-depth requests in flight); one reader under a mutex hands
// out consecutive --io-size chunks of the input with their file offsets, so
// files and pipes work alike. Buffers are aligned and reused.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cli_util.h"
#include "ext4dio/ext4dio.hpp"
#include "progress.h"

namespace {

namespace cli = ext4dio::cli;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kTool = "ext4dio-write";
constexpr uint64_t kMaxIoSize = uint64_t{1} << 30;
constexpr uint32_t kMaxQueueDepth = 4096;
constexpr uint32_t kMaxThreads = 1024;

using cli::AllocBuffer;
using cli::Buffer;

// FNV-1a over 64-bit words (then the tail bytes): a cheap 64-bit checksum
// per chunk, so --verify need not keep the data.
uint64_t Checksum(const char* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  constexpr uint64_t kPrime = 0x100000001b3ull;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * kPrime;
  }
  for (; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * kPrime;
  return h ^ n;
}

const char* PieceKindName(uint32_t kind) {
  switch (kind) {
    case EXT4DIO_PIECE_FAST:
      return "fast";
    case EXT4DIO_PIECE_RMW:
      return "rmw";
    case EXT4DIO_PIECE_BUFFERED:
      return "buffered";
    case EXT4DIO_PIECE_KERNEL:
      return "kernel";
    case EXT4DIO_PIECE_REFUSED:
      return "refused";
  }
  return "unknown";
}

bool HasDeviceOffset(uint32_t kind) {
  return kind == EXT4DIO_PIECE_FAST || kind == EXT4DIO_PIECE_RMW || kind == EXT4DIO_PIECE_BUFFERED;
}

// Why the byte at `offset` cannot be written without allocation.
std::string AllocationCause(const ext4dio::DirectFile& file, uint64_t offset) {
  const cli::MapSnapshot snapshot = cli::SnapshotMap(file.get());
  const ext4dio_map* map = snapshot.get();
  ext4dio_segment seg{};
  size_t n = 0;
  if (map != nullptr && ext4dio_map_query(map, offset, 1, &seg, 1, &n) == 0 && n == 1) {
    switch (seg.kind) {
      case EXT4DIO_SEG_HOLE:
        return "a hole";
      case EXT4DIO_SEG_UNWRITTEN:
        return "an unwritten (preallocated) extent";
      case EXT4DIO_SEG_PAST_EOF:
        return "past end of file (size " + std::to_string(file.Info().size) + ")";
      default:
        break;
    }
  }
  return "not written data";
}


std::string Range(uint64_t offset, uint64_t length) {
  return std::to_string(offset) + ".." + std::to_string(offset + length - 1);
}

// Called before a thread blocks (on input, or on another thread's use of
// the input): reaps what that thread has in flight, so progress and the
// gate see completions as they arrive, not when the queue fills.
using IdleFn = std::function<void()>;

// True when reading `fd` would not block now.
bool Readable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

// Reads up to n bytes (fewer only at end of input). -errno on error;
// -EINTR when a stop signal (SIGINT, SIGTERM) came first, or `stopped` was
// set (by `idle`'s reaping, when the queue failed): a producer that keeps
// its pipe open and silent must not hold a failed run. `idle` runs before
// every wait for more input.
int64_t ReadFull(int fd, char* buf, uint64_t n, const IdleFn& idle,
                 const std::atomic<bool>& stopped) {
  uint64_t done = 0;
  while (done < n) {
    if (!Readable(fd)) idle();
    if (stopped.load()) return -EINTR;
    // A pipe may stay silent for ever: wait for it or for a stop signal.
    if (!cli::WaitReady(fd, POLLIN)) return -EINTR;
    const ssize_t r = ::read(fd, buf + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) break;
    done += static_cast<uint64_t>(r);
  }
  return static_cast<int64_t>(done);
}

// Decides when each chunk may be submitted, so that the count reported
// written is a prefix of the range: every byte of [offset, offset+N)
// written, and nothing after a failed chunk started.
//
// Chunks are numbered in file order. A chunk the plan sends to the kernel
// path (allocation: holes, unwritten extents, past EOF; the only path that
// can fail with ENOSPC) is a barrier: it starts only when every earlier
// chunk has completed, and no later chunk starts until it has. After a
// failure in chunk f, chunks before f still start (they fill the prefix up
// to the failure), none after it. After a stop (a signal, or a failure that
// belongs to no chunk) only chunks before one already started still start.
//
// A thread must not wait here while requests of its own are in flight
// (their completions may be what the wait is for): WriterThread drains its
// queue first.
class Gate {
 public:
  enum class Turn { kGo, kWait, kNever };

  // Called in chunk order (ChunkSource::Next, under its lock).
  void Register(uint64_t index, uint64_t length, bool barrier) {
    std::lock_guard<std::mutex> lock(mu_);
    chunks_.push_back(Chunk{length, barrier});
    if (barrier) open_barriers_.insert(index);
  }

  Turn Check(uint64_t index, bool barrier) {
    std::lock_guard<std::mutex> lock(mu_);
    return CheckLocked(index, barrier);
  }

  // Blocks while the answer is kWait.
  Turn Wait(uint64_t index, bool barrier) {
    std::unique_lock<std::mutex> lock(mu_);
    Turn t;
    // The timeout only lets a stop signal end the wait when no other
    // thread is left to notice it.
    while ((t = CheckLocked(index, barrier)) == Turn::kWait) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    return t;
  }

  void Started(uint64_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    started_end_ = std::max(started_end_, index + 1);
  }

  // A request of chunk `index` failed: no later chunk may start.
  void FailAt(uint64_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = std::min(limit_, index + 1);
    cv_.notify_all();
  }

  // Nothing new starts except chunks before one already started.
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    StopLocked();
  }

  // Chunk `index` is done: its first `good` bytes are written (all of them
  // on success; 0 when it never started).
  void Complete(uint64_t index, uint64_t good) {
    std::lock_guard<std::mutex> lock(mu_);
    Chunk& c = chunks_[index];
    c.done = true;
    c.good = std::min(good, c.length);
    if (c.good < c.length) limit_ = std::min(limit_, index + 1);
    if (c.barrier) open_barriers_.erase(index);
    for (; done_end_ < chunks_.size() && chunks_[done_end_].done; ++done_end_) {
      if (sealed_) continue;
      prefix_ += chunks_[done_end_].good;
      if (chunks_[done_end_].good < chunks_[done_end_].length) sealed_ = true;
    }
    cv_.notify_all();
  }

  // After every writer is done: bytes from the start of the range that
  // are all written.
  uint64_t PrefixBytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return prefix_;
  }

 private:
  struct Chunk {
    uint64_t length;
    bool barrier;
    bool done = false;
    uint64_t good = 0;
  };

  void StopLocked() {
    limit_ = std::min(limit_, started_end_);
    cv_.notify_all();
  }

  Turn CheckLocked(uint64_t index, bool barrier) {
    if (cli::StopSignal() != 0) StopLocked();
    if (index >= limit_) return Turn::kNever;
    if (barrier) return done_end_ == index ? Turn::kGo : Turn::kWait;
    if (!open_barriers_.empty() && *open_barriers_.begin() < index) return Turn::kWait;
    return Turn::kGo;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Chunk> chunks_;        // by index
  std::set<uint64_t> open_barriers_;  // barrier chunks not yet done
  uint64_t limit_ = UINT64_MAX;      // chunks at or past this never start
  uint64_t started_end_ = 0;         // 1 + the highest index started
  uint64_t done_end_ = 0;            // every chunk before it is done
  uint64_t prefix_ = 0;
  bool sealed_ = false;              // the prefix ended at a short chunk
};

// Hands out consecutive chunks of the input with their file offsets and
// write plans. One reader under a mutex: works for files and pipes alike.
// Chunks are planned and registered with the gate here, in order, so the
// gate knows every earlier chunk's kind before a later one asks to start.
class ChunkSource {
 public:
  struct Chunk {
    uint64_t index, offset, length;
    absl::StatusOr<std::vector<ext4dio_piece>> plan;
    bool barrier;  // the plan has kernel-path pieces
  };

  // `length`: bytes to write, or nullopt for a stream to its end (then each
  // chunk is cut at the first byte `file` cannot write without allocation).
  ChunkSource(int fd, const ext4dio::DirectFile& file, Gate& gate, uint64_t offset,
              std::optional<uint64_t> length, uint64_t io_size, uint64_t align)
      : fd_(fd),
        file_(file),
        gate_(gate),
        start_(offset),
        pos_(offset),
        length_(length),
        io_size_(io_size) {
    // Cut the first chunk so the rest start aligned: unaligned chunk edges
    // cost a read-modify-write each.
    first_ = io_size;
    if (align > 1 && io_size % align == 0 && offset % align != 0) {
      const uint64_t end = (offset + io_size) / align * align;
      if (end > offset) first_ = end - offset;
    }
  }

  // `idle` runs before this thread blocks waiting for the input (its turn
  // at it, or data); it must not call back into the source.
  std::optional<Chunk> Next(char* buf, const IdleFn& idle) {
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) {
      idle();
      lock.lock();
    }
    if (done_ || stopped_.load()) return std::nullopt;
    uint64_t want = index_ == 0 ? first_ : io_size_;
    if (length_) want = std::min(want, start_ + *length_ - pos_);
    if (want == 0) {
      done_ = true;
      return std::nullopt;
    }
    const int64_t r = ReadFull(fd_, buf, want, idle, stopped_);
    if (r == -EINTR) {
      // Stopped by a signal or a failure elsewhere: what was read of this
      // chunk is not written.
      done_ = true;
      return std::nullopt;
    }
    if (r < 0) {
      read_errno_ = static_cast<int>(-r);
      done_ = true;
      return std::nullopt;
    }
    uint64_t got = static_cast<uint64_t>(r);
    input_bytes_ += got;
    if (got < want) {
      done_ = true;
      if (length_) short_input_ = true;
    }
    if (!length_ && got > 0) {
      const uint64_t w = file_.WritableUntil(pos_, got);
      if (w < pos_ + got) {
        refused_at_ = w;
        got = w - pos_;
        done_ = true;
      }
    }
    if (got == 0) return std::nullopt;
    Chunk c{index_++, pos_, got, file_.PlanWrite(pos_, got), false};
    if (c.plan.ok()) {
      c.barrier = std::any_of(c.plan->begin(), c.plan->end(),
                              [](const ext4dio_piece& p) { return p.kind == EXT4DIO_PIECE_KERNEL; });
    }
    gate_.Register(c.index, c.length, c.barrier);
    pos_ += got;
    return c;
  }

  // Lock-free: called from a writer's reaping, which may run inside Next.
  void Stop() { stopped_ = true; }

  // After the writers are done.
  int read_errno() const { return read_errno_; }
  bool short_input() const { return short_input_; }
  uint64_t input_bytes() const { return input_bytes_; }
  std::optional<uint64_t> refused_at() const { return refused_at_; }

 private:
  std::mutex mu_;
  const int fd_;
  const ext4dio::DirectFile& file_;
  Gate& gate_;
  const uint64_t start_;
  uint64_t pos_;
  const std::optional<uint64_t> length_;
  const uint64_t io_size_;
  uint64_t first_;
  uint64_t index_ = 0;
  bool done_ = false;
  std::atomic<bool> stopped_{false};
  int read_errno_ = 0;
  bool short_input_ = false;
  uint64_t input_bytes_ = 0;
  std::optional<uint64_t> refused_at_;
};

struct ChunkSum {
  uint64_t offset, length, sum;
};

// What the writer threads share.
struct WriteState {
  std::mutex mu;
  std::string error;  // the first failure
  std::atomic<bool> failed{false};
  std::vector<ChunkSum> sums;  // with --verify
  Gate gate;

  void Fail(const std::string& message) {
    std::lock_guard<std::mutex> lock(mu);
    if (error.empty()) error = message;
    failed = true;
  }
};

struct WriterConfig {
  uint32_t depth;
  uint64_t buffer_size;
  uint32_t memory_align;
  bool verify;
};

// One writer thread: its own queue, up to `depth` chunks in flight.
//
// Each chunk's plan (made by the source) also keeps the device operations
// of the requests in flight within the ring's depth (a chunk whose pieces
// would not fit is sent as several requests, and a request waits until its
// pieces fit). A request whose pieces wait inside the library's queue for a
// ring slot keeps its region locks without making progress, and another
// thread's read-modify-write of a unit in those regions then waits for it
// forever (see the report on lib/async_queue.cc).
void WriterThread(ext4dio::DirectFile& file, ChunkSource& source, WriteState& state,
                  const WriterConfig& config, cli::Progress& progress) {
  struct Slot {
    Buffer buf;
    uint64_t index = 0, offset = 0, length = 0;
    uint64_t fail_at = 0;  // file offset where this chunk's written prefix ends
    uint32_t pending = 0;  // requests of this chunk in flight
  };
  struct Request {
    uint32_t slot;
    uint64_t offset, length;
    uint32_t ops;  // device operations it occupies in the ring
  };
  Gate& gate = state.gate;
  // Slots (and their buffers) outlive the queue, which drains on close.
  std::vector<Slot> slots(config.depth);
  std::vector<uint32_t> free_slots;
  for (uint32_t i = config.depth; i > 0; --i) free_slots.push_back(i - 1);
  auto queue = ext4dio::RequestQueue::Open(file, config.depth);
  if (!queue.ok()) {
    state.Fail(std::string(queue.status().message()));
    gate.Stop();
    source.Stop();
    return;
  }
  std::vector<ext4dio_completion> done(config.depth);
  std::vector<Request> requests;  // by cookie
  std::vector<uint64_t> free_cookies;
  uint32_t ops_in_flight = 0;
  size_t requests_out = 0;

  // A failure that belongs to no chunk: stop everything not yet started.
  auto fail = [&](const std::string& message) {
    state.Fail(message);
    gate.Stop();
    source.Stop();
  };
  // Chunk `s` failed at file offset `at`: its prefix ends there, and no
  // later chunk starts.
  auto fail_chunk = [&](uint32_t s, uint64_t at, const std::string& message) {
    Slot& slot = slots[s];
    slot.fail_at = std::min(slot.fail_at, at);
    state.Fail(message);
    gate.FailAt(slot.index);
    source.Stop();
  };
  auto release = [&](uint32_t s) {
    Slot& slot = slots[s];
    if (--slot.pending > 0) return;
    gate.Complete(slot.index, slot.fail_at - slot.offset);
    free_slots.push_back(s);
  };
  // Reaps at least `min` completions; false when the queue itself failed.
  auto reap = [&](size_t min) -> bool {
    auto got = queue->Reap(done.data(), done.size(), min);
    if (!got.ok()) {
      fail(std::string(got.status().message()));
      return false;
    }
    for (size_t k = 0; k < *got; ++k) {
      const ext4dio_completion& c = done[k];
      const Request r = requests[c.cookie];
      free_cookies.push_back(c.cookie);
      ops_in_flight -= r.ops;
      --requests_out;
      if (c.result < 0) {
        const uint64_t off = c.error_length ? c.error_offset : r.offset;
        const uint64_t len = c.error_length ? c.error_length : r.length;
        // Which bytes of a failed request were written is not known: none
        // of it counts.
        fail_chunk(r.slot, r.offset,
                   "write of " + std::to_string(len) + " bytes at file offset " +
                       std::to_string(off) +
                       " failed: " + ext4dio_strerror(static_cast<int>(c.result)));
      } else if (static_cast<uint64_t>(c.result) != r.length) {
        // Short, as pwrite(2): the bytes before the shortfall are written.
        progress.Add(static_cast<uint64_t>(c.result));
        fail_chunk(r.slot, r.offset + static_cast<uint64_t>(c.result),
                   "write of " + std::to_string(r.length) + " bytes at file offset " +
                       std::to_string(r.offset) + " was short (" + std::to_string(c.result) +
                       " bytes)");
      } else {
        progress.Add(r.length);
      }
      release(r.slot);
    }
    return true;
  };
  // Reaps everything this thread has in flight.
  auto drain = [&]() -> bool {
    while (requests_out > 0) {
      if (!reap(1)) return false;
    }
    return true;
  };
  // Submits [offset, offset+length) of slot `s` taking `ops` ring slots.
  auto submit = [&](uint32_t s, uint64_t offset, uint64_t length, uint32_t ops) -> bool {
    while (ops_in_flight + ops > config.depth && requests_out > 0) {
      if (!reap(1)) return false;
    }
    uint64_t cookie;
    if (free_cookies.empty()) {
      cookie = requests.size();
      requests.push_back({});
    } else {
      cookie = free_cookies.back();
      free_cookies.pop_back();
    }
    requests[cookie] = Request{s, offset, length, ops};
    ext4dio_request r{};
    r.op = EXT4DIO_OP_WRITE;
    r.buf = slots[s].buf.get() + (offset - slots[s].offset);
    r.length = length;
    r.offset = offset;
    r.cookie = cookie;
    if (absl::Status st = queue->Submit(r); !st.ok()) {
      free_cookies.push_back(cookie);
      fail_chunk(s, offset, std::string(st.message()));  // not started: nothing written
      return false;
    }
    ++slots[s].pending;
    ops_in_flight += ops;
    ++requests_out;
    return true;
  };

  // Before blocking on the input: everything this thread has in flight is
  // reaped (a slow stream must not leave finished writes unreaped until the
  // queue fills). A failure of the queue itself is recorded; the loop
  // stops at its next turn.
  bool queue_failed = false;
  const IdleFn idle = [&] {
    while (!queue_failed && requests_out > 0) {
      if (!reap(1)) queue_failed = true;
    }
  };

  bool more = true;
  for (;;) {
    while (more && !free_slots.empty()) {
      // What has completed is counted now, not when the queue is full.
      if (requests_out > 0 && !reap(0)) return;
      if (cli::StopSignal() != 0) {
        gate.Stop();
        source.Stop();
        more = false;
        break;
      }
      // Taken before Next: its idle() reaps, and a slot it frees is pushed
      // onto free_slots meanwhile (popping after Next took that one instead,
      // left this one free while its buffer was in flight: two chunks in one
      // buffer, the wrong data written).
      const uint32_t s = free_slots.back();
      free_slots.pop_back();
      Slot& slot = slots[s];
      if (!slot.buf) {
        slot.buf = AllocBuffer(config.buffer_size, config.memory_align);
        if (!slot.buf) {
          free_slots.push_back(s);
          fail("cannot allocate a " + std::to_string(config.buffer_size) + "-byte I/O buffer");
          more = false;
          break;
        }
      }
      auto chunk = source.Next(slot.buf.get(), idle);
      if (queue_failed) {
        if (chunk) gate.Complete(chunk->index, 0);  // never started
        return;
      }
      if (!chunk) {
        free_slots.push_back(s);
        more = false;
        break;
      }
      slot.index = chunk->index;
      slot.offset = chunk->offset;
      slot.length = chunk->length;
      slot.fail_at = chunk->offset + chunk->length;
      slot.pending = 1;  // held until every request of the chunk is submitted
      Gate::Turn turn = gate.Check(chunk->index, chunk->barrier);
      if (turn == Gate::Turn::kWait) {
        // What we wait for may be our own requests' completions.
        if (!drain()) {
          gate.Complete(chunk->index, 0);
          return;
        }
        turn = gate.Wait(chunk->index, chunk->barrier);
      }
      if (turn == Gate::Turn::kNever) {
        slot.fail_at = slot.offset;  // never started: nothing of it written
        release(s);
        continue;
      }
      gate.Started(chunk->index);
      if (config.verify) {
        const uint64_t sum = Checksum(slot.buf.get(), chunk->length);
        std::lock_guard<std::mutex> lock(state.mu);
        state.sums.push_back(ChunkSum{chunk->offset, chunk->length, sum});
      }
      const auto& plan = chunk->plan;
      if (!plan.ok()) {
        fail_chunk(s, slot.offset, std::string(plan.status().message()));
      } else if (std::any_of(plan->begin(), plan->end(),
                             [](const ext4dio_piece& p) { return p.kind != EXT4DIO_PIECE_FAST; })) {
        // Unaligned pieces: the library runs the whole request inside
        // Submit after draining this queue; nothing stays in the ring.
        submit(s, chunk->offset, chunk->length, 0);
      } else {
        // Aligned: one device operation per piece; at most `depth` pieces
        // per request.
        for (size_t i = 0; i < plan->size() && slot.fail_at == slot.offset + slot.length;) {
          const size_t n = std::min<size_t>(config.depth, plan->size() - i);
          const ext4dio_piece& first = (*plan)[i];
          const ext4dio_piece& last = (*plan)[i + n - 1];
          if (!submit(s, first.file_offset, last.file_offset + last.length - first.file_offset,
                      static_cast<uint32_t>(n)))
            break;
          i += n;
        }
      }
      release(s);
      // A barrier holds every later chunk back until it completes: reap it
      // now rather than after reading more input.
      if (chunk->barrier && !drain()) return;
    }
    if (requests_out == 0) break;
    if (!reap(1)) return;  // the queue drains what is in flight as it closes
  }
}

struct Args {
  std::string image, target, input;
  uint64_t image_offset = 0, inode = 0, offset = 0, length = 0;
  uint64_t io_size = 1 << 20;
  uint32_t queue_depth = 32, threads = 1;
  bool sync = false, dsync = false, verify = false, no_fallback = false;
  bool no_ownership_check = false;
  bool dry_run = false, json = false, progress = false, no_progress = false;
  bool has_length = false;
};

// Builds and prints the --json object and the one-line failures.
class Report {
 public:
  Report(const Args& args, std::string name, Clock::time_point start)
      : args_(args), name_(std::move(name)), start_(start) {
    j_["file"] = name_;
    j_["image"] = args.image.empty() ? Json() : Json(args.image);
    j_["offset"] = args.offset;
    j_["length"] = args.has_length ? Json(args.length) : Json();
    j_["bytes"] = 0;
    j_["fast_path_bytes"] = 0;
    j_["kernel_path_bytes"] = 0;
    j_["direct_bytes"] = 0;
    j_["rmw_bytes"] = 0;
    j_["buffered_bytes"] = 0;
    j_["fast_path"] = false;
    j_["warning"] = Json();
    j_["backend"] = Json();
    j_["threads"] = args.threads;
    j_["queue_depth"] = args.queue_depth;
    j_["io_size"] = args.io_size;
    j_["sync"] = args.sync;
    j_["dsync"] = args.dsync;
    j_["verify"] = args.verify;
    j_["verified"] = false;
    j_["dry_run"] = args.dry_run;
  }

  Json& json() { return j_; }

  void SetFile(const ext4dio::DirectFile& f) {
    const ext4dio_file_info info = f.Info();
    j_["fast_path"] = info.fast_path != 0;
    j_["warning"] = info.warning ? Json(info.warning) : Json();
    j_["backend"] = info.backend == EXT4DIO_BACKEND_URING ? "io_uring" : "psync";
    j_["size"] = info.size;
    j_["block_size"] = info.block_size;
    file_ = &f;
  }

  void SetBytes(uint64_t bytes) { bytes_ = bytes; }

  // Prints the JSON object (if asked for) and returns the exit code.
  int Done(int code, const std::string& error = "") {
    if (args_.json) {
      j_["bytes"] = bytes_;
      if (file_ != nullptr) {
        // The size now: an extending write (mounted mode) changed it.
        j_["size"] = file_->Info().size;
        const ext4dio_stats st = file_->Stats();
        j_["direct_bytes"] = st.fast_bytes;
        j_["rmw_bytes"] = st.rmw_bytes;
        j_["buffered_bytes"] = st.buffered_bytes;
        j_["kernel_path_bytes"] = st.kernel_bytes;
        j_["fast_path_bytes"] = st.fast_bytes + st.rmw_bytes + st.buffered_bytes;
        j_["lease_breaks"] = st.lease_breaks;
      }
      const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
      j_["seconds"] = seconds;
      j_["mib_per_s"] = seconds > 0 ? static_cast<double>(bytes_) / (1 << 20) / seconds : 0.0;
      if (!error.empty()) j_["error"] = error;
      std::cout << j_.dump() << "\n";
      std::cout.flush();
    }
    return code;
  }

  // One stderr line "ext4dio-write: WHO: cause", the JSON, exit 1.
  int Fail(const std::string& who, std::string cause) {
    // Library messages may already start with the file's name.
    if (cause.rfind(who + ": ", 0) == 0) cause.erase(0, who.size() + 2);
    const std::string line = who + ": " + cause;
    std::fprintf(stderr, "%s: %s\n", kTool, line.c_str());
    return Done(cli::kExitFailure, line);
  }
  int Fail(const std::string& cause) { return Fail(name_, cause); }

 private:
  const Args& args_;
  const std::string name_;
  const Clock::time_point start_;
  const ext4dio::DirectFile* file_ = nullptr;
  uint64_t bytes_ = 0;
  Json j_;
};

std::string WrittenText(uint64_t bytes) {
  return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes") + " written";
}

}  // namespace

int main(int argc, char** argv) {
  const Clock::time_point start = Clock::now();
  CLI::App app{
      "Write standard input (or --input FILE) into a file on ext4 at --offset, with "
      "direct I/O at the device offsets of the file's extents. Image mode (--image) "
      "writes into a file inside an image or unmounted device without mounting it; "
      "it never allocates, so a write that touches a hole, an unwritten extent or "
      "end of file is refused. An input of known length (a regular file, or "
      "--length) is checked in full before any byte is written; a stream stops at "
      "the first byte that would need allocation.",
      kTool};
  Args a;
  cli::LocationArgs loc;
  cli::AddLocationOptions(app, loc);
  app.add_option("-i,--input", a.input, "Read the data from FILE ('-': standard input, the default)")
      ->type_name("FILE");
  app.add_option("--offset", a.offset, "File offset to write at (default 0; K/M/G/T suffixes)")
      ->transform(cli::SizeValidator())
      ->type_name("BYTES");
  app.add_option("--length", a.length, "Write exactly this many bytes (the input must have them)")
      ->transform(cli::SizeValidator())
      ->type_name("BYTES");
  app.add_option("--queue-depth", a.queue_depth,
                 "Requests in flight per thread (1-4096, default 32)")
      ->type_name("N");
  app.add_option("--io-size", a.io_size, "Bytes per request (default 1M, at most 1G)")
      ->transform(cli::SizeValidator())
      ->type_name("BYTES");
  app.add_option("--threads", a.threads, "Submitting threads, one queue each (default 1)")
      ->type_name("N");
  app.add_flag("--sync", a.sync, "Flush the device's write cache before exiting");
  app.add_flag("--dsync", a.dsync, "Write every request with FUA (RWF_DSYNC)");
  app.add_flag("--verify", a.verify, "Read the range back through the library and compare");
  app.add_flag("--no-fallback", a.no_fallback,
               "Never use the kernel path (image mode never does: allocation is refused)");
  app.add_flag("--no-ownership-check", a.no_ownership_check,
               "Image mode: do not scan the inodes for other claims on the file's blocks "
               "(a warning says so)");
  app.add_flag("--dry-run", a.dry_run,
               "Write nothing; print the plan: OFFSET LENGTH KIND DEVICE_OFFSET per piece "
               "(KIND: fast, rmw, buffered, kernel, refused)");
  app.add_flag("--json", a.json, "Print one JSON object with the results on standard output");
  app.add_flag("--progress", a.progress,
               "Show progress on standard error even when it is not a terminal");
  app.add_flag("--no-progress", a.no_progress, "Never show progress");
  app.add_option("TARGET", a.target, "File on a mounted ext4, or with --image a path inside it");
  app.set_help_flag("-h,--help", "Display this help and exit");
  app.set_version_flag("--version", std::string(kTool) + " " + ext4dio_version(),
                       "Output version information and exit");
  app.footer("Exit status: 0 success, 1 failure, 2 usage error.");
  cli::UseGnuHelp(app, {"ext4dio-write [OPTION]... TARGET",
                        "ext4dio-write --image=IMG [OPTION]... PATH|--inode=N"});

  if (int rc = cli::Parse(app, argc, argv); rc >= 0) return rc;
  auto usage = [](const std::string& msg) { return cli::UsageError(kTool, msg); };
  if (a.progress && a.no_progress) return usage("give --progress or --no-progress, not both");
  if (int rc = cli::CheckLocation(kTool, app, loc,
                                  a.target.empty() ? std::vector<std::string>{}
                                                   : std::vector<std::string>{a.target});
      rc >= 0)
    return rc;
  a.image = loc.image;
  a.image_offset = loc.image_offset;
  a.inode = loc.inode;
  a.has_length = app.count("--length") > 0;
  if (a.queue_depth < 1 || a.queue_depth > kMaxQueueDepth)
    return usage("--queue-depth must be 1..4096");
  if (a.threads < 1 || a.threads > kMaxThreads) return usage("--threads must be 1..1024");
  if (a.io_size < 1 || a.io_size > kMaxIoSize) return usage("--io-size must be 1 byte..1G");
  if (a.has_length && a.length > UINT64_MAX - a.offset)
    return usage("--offset + --length overflows");

  const std::string name = a.inode ? "inode " + std::to_string(a.inode) : a.target;
  Report report(a, name, start);
  cli::InstallStopHandlers();
  const cli::ProtectedFiles protect = cli::ProtectFiles(a.image, a.target);

  // The input, and its length when it has one.
  const bool from_stdin = a.input.empty() || a.input == "-";
  const std::string input_name = from_stdin ? "standard input" : a.input;
  int in_fd = 0;
  if (!from_stdin) {
    in_fd = ::open(a.input.c_str(), O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) return report.Fail(a.input, std::strerror(errno));
  }
  std::optional<uint64_t> available;  // bytes left in a regular-file input
  {
    struct stat st;
    if (::fstat(in_fd, &st) != 0) return report.Fail(input_name, std::strerror(errno));
    if (S_ISDIR(st.st_mode)) return report.Fail(input_name, "is a directory");
    // Reading the file (or image, or device) being written: refused as cp
    // refuses, by identity, before anything is opened for writing.
    if (std::string why = cli::Conflict(protect, st, input_name); !why.empty())
      return report.Fail(input_name, why + "; nothing written");
    if (S_ISREG(st.st_mode)) {
      const off_t pos = ::lseek(in_fd, 0, SEEK_CUR);
      if (pos >= 0) {
        available = static_cast<uint64_t>(st.st_size) > static_cast<uint64_t>(pos)
                        ? static_cast<uint64_t>(st.st_size) - static_cast<uint64_t>(pos)
                        : 0;
      }
    }
  }
  std::optional<uint64_t> length;
  if (a.has_length) {
    length = a.length;
  } else if (available) {
    length = *available;
  }
  if (a.dry_run && !length) {
    return usage("--dry-run needs a known length: give --length, or a regular file as input");
  }
  if (length && *length > UINT64_MAX - a.offset) return usage("--offset + input size overflows");
  report.json()["length"] = length ? Json(*length) : Json();

  ext4dio::Location where;
  where.image = a.image;
  where.image_offset = a.image_offset;
  where.path = a.target;
  where.inode = a.inode;
  ext4dio::DirectFileOptions opts;
  opts.write = true;
  opts.dsync = a.dsync;
  opts.queue_depth = a.queue_depth;
  opts.no_fallback = a.no_fallback;
  opts.skip_ownership_check = a.no_ownership_check;
  auto file = ext4dio::DirectFile::Open(where, opts);
  if (!file.ok()) {
    const int rc = report.Fail(std::string(file.status().message()));
    std::fputs(cli::PartitionHint(kTool, app, loc).c_str(), stderr);
    return rc;
  }
  report.SetFile(*file);
  const ext4dio_file_info info = file->Info();
  if (!cli::SameTarget(protect, cli::OpenedInode(file->get())))
    return report.Fail("changed while being opened (another file was opened); nothing written");
  if (info.warning)
    std::fprintf(stderr, "%s: warning: %s: %s\n", kTool, name.c_str(), info.warning);

  // Known length: plan it all before any byte moves.
  if (length) {
    auto plan = file->PlanWrite(a.offset, *length);
    if (!plan.ok()) return report.Fail(std::string(plan.status().message()));
    const ext4dio_piece* refused = nullptr;
    for (const ext4dio_piece& p : *plan) {
      if (p.kind == EXT4DIO_PIECE_REFUSED) {
        refused = &p;
        break;
      }
    }
    if (a.dry_run) {
      if (a.json) {
        Json pieces = Json::array();
        for (const ext4dio_piece& p : *plan) {
          pieces.push_back(
              {{"file_offset", p.file_offset},
               {"length", p.length},
               {"kind", PieceKindName(p.kind)},
               {"device_offset", HasDeviceOffset(p.kind) ? Json(p.device_offset) : Json()}});
        }
        report.json()["plan"] = pieces;
      } else {
        for (const ext4dio_piece& p : *plan) {
          const std::string dev = HasDeviceOffset(p.kind) ? std::to_string(p.device_offset) : "-";
          std::printf("%" PRIu64 " %" PRIu64 " %s %s\n", p.file_offset, p.length,
                      PieceKindName(p.kind), dev.c_str());
        }
        std::fflush(stdout);
      }
    }
    if (refused != nullptr) {
      return report.Fail("cannot write bytes " + Range(refused->file_offset, refused->length) +
                         ": needs allocation: " + AllocationCause(*file, refused->file_offset) +
                         (a.image.empty() ? " (--no-fallback forbids the kernel path)"
                                          : " (image mode cannot allocate)") +
                         "; nothing written");
    }
    if (a.dry_run) return report.Done(cli::kExitOk);
    if (available && a.has_length && *available < a.length) {
      return report.Fail("input " + input_name + " has " + std::to_string(*available) +
                         " bytes, --length asks for " + std::to_string(a.length) + "; " +
                         WrittenText(0));
    }
  }

  // The data path.
  cli::Progress progress(kTool, cli::Progress::WantedFor(a.progress, a.no_progress));
  const uint64_t align = std::max<uint32_t>(info.offset_align, 1);
  WriteState state;
  ChunkSource source(in_fd, *file, state.gate, a.offset, length, a.io_size, align);
  // Buffers no bigger than the whole write needs.
  const uint64_t buffer_size =
      length ? std::max<uint64_t>(std::min(a.io_size, *length), 1) : a.io_size;
  const WriterConfig config{a.queue_depth, buffer_size, info.memory_align, a.verify};
  uint32_t nthreads = a.threads;
  if (length) {
    // No more threads than chunks.
    const uint64_t chunks = *length / a.io_size + 2;
    nthreads = static_cast<uint32_t>(std::min<uint64_t>(nthreads, chunks));
  }
  progress.Start(length.value_or(0));
  if (!length || *length > 0) {
    std::vector<std::thread> threads;
    for (uint32_t t = 1; t < nthreads; ++t) {
      threads.emplace_back([&] { WriterThread(*file, source, state, config, progress); });
    }
    WriterThread(*file, source, state, config, progress);
    for (std::thread& t : threads) t.join();
  }
  progress.Finish();
  // A prefix of the range (Gate): what the user may rely on.
  const uint64_t written = state.gate.PrefixBytes();
  report.SetBytes(written);
  auto written_range = [&] {
    return WrittenText(written) + (written ? " (file offsets " + Range(a.offset, written) + ")" : "");
  };

  if (state.failed) return report.Fail(state.error + "; " + written_range());
  if (const int sig = cli::StopSignal(); sig != 0) {
    // In-flight I/O is done; returning closes the file through the
    // library (mounted mode: mtime/ctime set, lease released).
    report.Fail(std::string("interrupted by ") + cli::SignalName(sig) + "; " + written_range());
    return 128 + sig;
  }
  if (source.read_errno()) {
    return report.Fail(input_name, std::string("read failed: ") +
                                       std::strerror(source.read_errno()) + "; " +
                                       WrittenText(written));
  }
  if (source.refused_at()) {
    const uint64_t at = *source.refused_at();
    return report.Fail("stopped at file offset " + std::to_string(at) +
                       ": needs allocation: " + AllocationCause(*file, at) +
                       (a.image.empty() ? " (--no-fallback forbids the kernel path); "
                                        : " (image mode cannot allocate); ") +
                       written_range());
  }
  if (source.short_input()) {
    return report.Fail("input " + input_name + " ended after " +
                       std::to_string(source.input_bytes()) + " of " + std::to_string(*length) +
                       " bytes (--length); " + WrittenText(written));
  }
  if (a.sync) {
    if (absl::Status s = file->Sync(); !s.ok()) {
      return report.Fail(std::string(s.message()) + "; " + WrittenText(written) +
                         " but not flushed");
    }
  }
  if (a.verify) {
    std::vector<ChunkSum>& sums = state.sums;
    std::sort(sums.begin(), sums.end(),
              [](const ChunkSum& x, const ChunkSum& y) { return x.offset < y.offset; });
    Buffer buf = AllocBuffer(buffer_size, info.memory_align);
    if (!buf) return report.Fail("cannot allocate a verify buffer");
    for (const ChunkSum& c : sums) {
      auto got = file->Pread(buf.get(), c.length, c.offset);
      if (!got.ok()) return report.Fail("verify: " + std::string(got.status().message()));
      if (*got != c.length || Checksum(buf.get(), c.length) != c.sum) {
        return report.Fail("verify failed: the " + std::to_string(c.length) +
                           " bytes at file offset " + std::to_string(c.offset) +
                           " read back differ from what was written");
      }
    }
    report.json()["verified"] = true;
  }
  return report.Done(cli::kExitOk);
}
