// ext4dio-read: read a file on ext4 straight from the device offsets of its
// extents (direct I/O through io_uring) and write it to standard output or
// a file, in order.
//
//   ext4dio-read [--image IMG [--image-offset N]] [--inode N] [--output FILE|-]
//                [--offset N] [--length N] [--json] [--progress|--no-progress]
//                [TARGET]
//
// Holes and unwritten extents read as zeros without I/O; a read reaching end
// of file is short (the JSON "bytes" says how many).
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_util.h"
#include "ext4dio/ext4dio.hpp"
#include "progress.h"

namespace {

namespace cli = ext4dio::cli;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kTool = "ext4dio-read";
constexpr uint64_t kChunk = 1 << 20;
constexpr uint32_t kDepth = 32;

using cli::AllocBuffer;
using cli::Buffer;

// 0 or errno; EINTR when a stop signal came first. `*done` counts the
// bytes written, also on failure.
int WriteAll(int fd, const char* p, uint64_t n, uint64_t* done) {
  while (n > 0) {
    // A pipe whose reader stalls would block for ever: wait for room or a
    // stop signal.
    if (!cli::WaitReady(fd, POLLOUT)) return EINTR;
    const ssize_t r = ::write(fd, p, n);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno;
    }
    p += r;
    n -= static_cast<uint64_t>(r);
    *done += static_cast<uint64_t>(r);
  }
  return 0;
}


// Bytes of [offset, offset+length) that are holes or unwritten (read as
// zeros without I/O).
uint64_t ZeroBytes(const ext4dio::DirectFile& file, uint64_t offset, uint64_t length) {
  const cli::MapSnapshot snapshot = cli::SnapshotMap(file.get());
  const ext4dio_map* map = snapshot.get();
  if (map == nullptr) return 0;
  uint64_t zeros = 0, pos = offset;
  const uint64_t end = offset + length;
  ext4dio_segment segs[64];
  while (pos < end) {
    size_t n = 0;
    if (ext4dio_map_query(map, pos, end - pos, segs, 64, &n) != 0 || n == 0) break;
    for (size_t i = 0; i < n; ++i) {
      if (segs[i].kind == EXT4DIO_SEG_HOLE || segs[i].kind == EXT4DIO_SEG_UNWRITTEN)
        zeros += segs[i].length;
    }
    pos = segs[n - 1].file_offset + segs[n - 1].length;
  }
  return zeros;
}

}  // namespace

int main(int argc, char** argv) {
  const Clock::time_point start = Clock::now();
  CLI::App app{
      "Read a file on ext4 straight from the device offsets of its extents and write "
      "it to standard output (or --output FILE). Image mode (--image) reads a file "
      "inside an image or unmounted device without mounting it. Holes read as "
      "zeros; a read reaching end of file is short.",
      kTool};
  std::string target, output;
  cli::LocationArgs loc;
  uint64_t offset = 0, length = 0;
  bool json = false, progress_on = false, progress_off = false, force = false;
  cli::AddLocationOptions(app, loc);
  app.add_option("-o,--output", output,
                 "Write the data to FILE ('-': standard output, the default)")
      ->type_name("FILE");
  app.add_option("--offset", offset, "File offset to start at (default 0; K/M/G/T suffixes)")
      ->transform(cli::SizeValidator())
      ->type_name("BYTES");
  app.add_option("--length", length, "Bytes to read (default: to end of file)")
      ->transform(cli::SizeValidator())
      ->type_name("BYTES");
  app.add_flag("-f,--force", force,
               "Write the data to standard output even when it is a terminal");
  app.add_flag("--json", json,
               "Print one JSON object with the results (on standard error when the data "
               "goes to standard output)");
  app.add_flag("--progress", progress_on,
               "Show progress on standard error even when it is not a terminal");
  app.add_flag("--no-progress", progress_off, "Never show progress");
  app.add_option("TARGET", target, "File on a mounted ext4, or with --image a path inside it");
  app.set_help_flag("-h,--help", "Display this help and exit");
  app.set_version_flag("--version", std::string(kTool) + " " + ext4dio_version(),
                       "Output version information and exit");
  app.footer("Exit status: 0 success, 1 failure, 2 usage error.");
  cli::UseGnuHelp(app, {"ext4dio-read [OPTION]... TARGET",
                        "ext4dio-read --image=IMG [OPTION]... PATH|--inode=N"});

  if (int rc = cli::Parse(app, argc, argv); rc >= 0) return rc;
  auto usage = [](const std::string& msg) { return cli::UsageError(kTool, msg); };
  const bool has_length = app.count("--length") > 0;
  if (progress_on && progress_off) return usage("give --progress or --no-progress, not both");
  if (int rc = cli::CheckLocation(kTool, app, loc,
                                  target.empty() ? std::vector<std::string>{}
                                                 : std::vector<std::string>{target});
      rc >= 0)
    return rc;
  const std::string& image = loc.image;
  const uint64_t image_offset = loc.image_offset, inode = loc.inode;
  if (has_length && length > UINT64_MAX - offset) return usage("--offset + --length overflows");

  const std::string name = inode ? "inode " + std::to_string(inode) : target;
  const bool to_stdout = output.empty() || output == "-";
  if (to_stdout && !force && ::isatty(1) == 1) {
    // As gzip -c and zstd do: binary data on a terminal is never wanted.
    std::fprintf(stderr,
                 "%s: refusing to write binary data to a terminal; use -o FILE or redirect "
                 "(--force writes it anyway)\n",
                 kTool);
    return cli::kExitFailure;
  }
  const std::string output_name = to_stdout ? "standard output" : output;

  Json j = {{"file", name},
            {"image", image.empty() ? Json() : Json(image)},
            {"offset", offset},
            {"length", has_length ? Json(length) : Json()},
            {"bytes", 0},
            {"fast_path_bytes", 0},
            {"kernel_path_bytes", 0},
            {"device_bytes", 0},
            {"zero_bytes", 0},
            {"fast_path", false},
            {"warning", Json()},
            {"backend", Json()},
            {"output", to_stdout ? Json() : Json(output)}};
  uint64_t bytes = 0;
  const ext4dio::DirectFile* opened = nullptr;
  auto finish = [&](int code, const std::string& error) {
    if (!json) return code;
    j["bytes"] = bytes;
    j["fast_path_bytes"] = bytes;  // image mode: all of it without the kernel
    if (opened != nullptr) {
      j["size"] = opened->Info().size;  // now, not at open
      // Mounted mode: what the kernel read while the fast path was off.
      const uint64_t kernel = std::min<uint64_t>(opened->Stats().kernel_read_bytes, bytes);
      j["kernel_path_bytes"] = kernel;
      j["fast_path_bytes"] = bytes - kernel;
      const uint64_t zeros = kernel ? 0 : ZeroBytes(*opened, offset, bytes);
      j["zero_bytes"] = zeros;
      j["device_bytes"] = bytes - kernel - zeros;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    j["seconds"] = seconds;
    j["mib_per_s"] = seconds > 0 ? static_cast<double>(bytes) / (1 << 20) / seconds : 0.0;
    if (!error.empty()) j["error"] = error;
    const std::string text = j.dump() + "\n";
    if (to_stdout) {
      std::fputs(text.c_str(), stderr);
    } else {
      std::fputs(text.c_str(), stdout);
      std::fflush(stdout);
    }
    return code;
  };
  cli::Progress progress(kTool, cli::Progress::WantedFor(progress_on, progress_off));
  auto fail = [&](const std::string& who, std::string cause) {
    progress.Finish();
    // Library messages may already start with the file's name.
    if (cause.rfind(who + ": ", 0) == 0) cause.erase(0, who.size() + 2);
    const std::string line = who + ": " + cause;
    std::fprintf(stderr, "%s: %s\n", kTool, line.c_str());
    return finish(cli::kExitFailure, line);
  };

  cli::InstallStopHandlers();
  // Writing into the file (or image, or device) being read: refused as cp
  // refuses, by identity, before anything is truncated or written.
  const cli::ProtectedFiles protect = cli::ProtectFiles(image, target);
  auto conflict = [&](int fd, const std::string& path) -> std::string {
    struct stat st;
    const int rc = fd >= 0 ? ::fstat(fd, &st) : ::stat(path.c_str(), &st);
    if (rc != 0) return "";  // does not exist (yet): cannot be the target
    return cli::Conflict(protect, st, output_name);
  };
  if (std::string why = conflict(to_stdout ? 1 : -1, output); !why.empty())
    return fail(output_name, why + "; nothing written");

  ext4dio::Location where;
  where.image = image;
  where.image_offset = image_offset;
  where.path = target;
  where.inode = inode;
  ext4dio::DirectFileOptions opts;
  opts.queue_depth = kDepth;
  auto file = ext4dio::DirectFile::Open(where, opts);
  if (!file.ok()) {
    const int rc = fail(name, std::string(file.status().message()));
    std::fputs(cli::PartitionHint(kTool, app, loc).c_str(), stderr);
    return rc;
  }
  opened = &*file;
  if (!cli::SameTarget(protect, cli::OpenedInode(file->get())))
    return fail(name, "changed while being opened (another file was opened); nothing written");
  const ext4dio_file_info info = file->Info();
  j["fast_path"] = info.fast_path != 0;
  j["warning"] = info.warning ? Json(info.warning) : Json();
  j["backend"] = info.backend == EXT4DIO_BACKEND_URING ? "io_uring" : "psync";
  j["size"] = info.size;
  if (info.warning)
    std::fprintf(stderr, "%s: warning: %s: %s\n", kTool, name.c_str(), info.warning);

  // What there is to read: short at end of file.
  const uint64_t available = offset < info.size ? info.size - offset : 0;
  const uint64_t total = has_length ? std::min(length, available) : available;

  int out_fd = 1;
  if (!to_stdout) {
    // Not O_TRUNC: what was opened is checked first (the name may have
    // changed since the check above), then truncated.
    out_fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (out_fd < 0) return fail(output, std::strerror(errno));
    if (std::string why = conflict(out_fd, output); !why.empty()) {
      ::close(out_fd);
      return fail(output_name, why + "; nothing written");
    }
    struct stat st;
    if (::fstat(out_fd, &st) == 0 && S_ISREG(st.st_mode) && ::ftruncate(out_fd, 0) != 0) {
      const int err = errno;
      ::close(out_fd);
      return fail(output, std::string("truncating: ") + std::strerror(err));
    }
  }

  struct Slot {
    Buffer buf;
    uint64_t offset = 0, length = 0;
    int64_t result = 0;
    enum { kFree, kInFlight, kDone } state = kFree;
  };
  // Slots (and buffers) outlive the queue, which drains when it closes.
  std::vector<Slot> slots(kDepth);
  auto queue = ext4dio::RequestQueue::Open(*file, kDepth);
  if (!queue.ok()) return fail(name, std::string(queue.status().message()));

  progress.Start(total);
  std::vector<ext4dio_completion> done(kDepth);
  uint64_t next_submit = 0, next_write = 0;  // chunk indices
  const uint64_t chunks = (total + kChunk - 1) / kChunk;
  uint32_t in_flight = 0;
  bool eof = false;  // a read came back short: nothing after it
  int stop_signal = 0;
  while (next_write < chunks) {
    if ((stop_signal = cli::StopSignal()) != 0) break;  // the queue drains as it closes
    while (!eof && next_submit < chunks && slots[next_submit % kDepth].state == Slot::kFree) {
      Slot& s = slots[next_submit % kDepth];
      if (!s.buf) {
        s.buf = AllocBuffer(kChunk, info.memory_align);
        if (!s.buf) return fail(name, "cannot allocate a read buffer");
      }
      s.offset = offset + next_submit * kChunk;
      s.length = std::min(kChunk, total - next_submit * kChunk);
      ext4dio_request r{};
      r.op = EXT4DIO_OP_READ;
      r.buf = s.buf.get();
      r.length = s.length;
      r.offset = s.offset;
      r.cookie = next_submit % kDepth;
      if (absl::Status st = queue->Submit(r); !st.ok()) {
        return fail(name, std::string(st.message()) + "; " + std::to_string(bytes) + " bytes read");
      }
      s.state = Slot::kInFlight;
      ++in_flight;
      ++next_submit;
    }
    Slot& head = slots[next_write % kDepth];
    if (head.state == Slot::kDone) {
      if (head.result < 0) {
        return fail(name, "read of " + std::to_string(head.length) + " bytes at file offset " +
                              std::to_string(head.offset) +
                              " failed: " + ext4dio_strerror(static_cast<int>(head.result)) + "; " +
                              std::to_string(bytes) + " bytes read");
      }
      const uint64_t n = static_cast<uint64_t>(head.result);
      uint64_t out = 0;
      const int err = WriteAll(out_fd, head.buf.get(), n, &out);
      bytes += out;
      progress.Add(out);
      if (err == EINTR) {
        stop_signal = cli::StopSignal();
        break;
      }
      if (err != 0) return fail(output_name, std::string("write failed: ") + std::strerror(err));
      head.state = Slot::kFree;
      ++next_write;
      if (n < head.length) {
        eof = true;  // the file ended (shrank under us): stop here
        break;
      }
      continue;
    }
    if (in_flight == 0) break;  // cannot happen: the head is in flight
    auto got = queue->Reap(done.data(), done.size(), 1);
    if (!got.ok()) return fail(name, std::string(got.status().message()));
    for (size_t k = 0; k < *got; ++k) {
      Slot& s = slots[done[k].cookie];
      s.result = done[k].result;
      if (s.result < 0 && done[k].error_length) {
        s.offset = done[k].error_offset;
        s.length = done[k].error_length;
      }
      s.state = Slot::kDone;
      --in_flight;
    }
  }
  progress.Finish();
  if (!to_stdout) {
    if (::close(out_fd) != 0)
      return fail(output, std::string("close failed: ") + std::strerror(errno));
  }
  if (stop_signal != 0) {
    // Returning closes the queue (waiting for reads in flight) and the file.
    fail(name, std::string("interrupted by ") + cli::SignalName(stop_signal) + "; " +
                   std::to_string(bytes) + " bytes read to " + output_name);
    return 128 + stop_signal;
  }
  return finish(cli::kExitOk, "");
}
