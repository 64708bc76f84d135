#include "cli_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <limits>

namespace ext4dio::cli {

std::optional<uint64_t> ParseSize(std::string_view text) {
  size_t i = 0;
  uint64_t value = 0;
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return std::nullopt;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    value = value * 10 + d;
    ++i;
  }
  std::string suffix;
  for (; i < text.size(); ++i) suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  int shift = 0;
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'k': shift = 10; break;
      case 'm': shift = 20; break;
      case 'g': shift = 30; break;
      case 't': shift = 40; break;
      default: return std::nullopt;
    }
    const std::string rest = suffix.substr(1);
    if (!(rest.empty() || rest == "ib" || rest == "b")) return std::nullopt;
  }
  if (shift && value > (std::numeric_limits<uint64_t>::max() >> shift)) return std::nullopt;
  return value << shift;
}

CLI::Validator SizeValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        auto parsed = ParseSize(value);
        if (!parsed) {
          return "'" + value + "' is not a size (bytes, or a number with K, M, G or T)";
        }
        value = std::to_string(*parsed);
        return {};
      },
      "SIZE", "size");
}

Buffer AllocBuffer(uint64_t size, uint32_t align) {
  void* p = nullptr;
  const size_t a = std::max<size_t>({align, sizeof(void*), 4096});
  if (posix_memalign(&p, a, std::max<uint64_t>(size, 1)) != 0) return nullptr;
  return Buffer(static_cast<char*>(p));
}

int Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    app.exit(e);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  return -1;
}

namespace {

constexpr unsigned kLoopMajor = 7;

// The backing file of loop device `rdev`, from sysfs (the path it shows is
// then identified by stat, so a rename or a second link still matches; a
// deleted backing file cannot be named and is not found).
std::optional<std::pair<dev_t, ino_t>> LoopBacking(dev_t rdev) {
  if (major(rdev) != kLoopMajor) return std::nullopt;
  std::ifstream in("/sys/dev/block/" + std::to_string(major(rdev)) + ":" +
                   std::to_string(minor(rdev)) + "/loop/backing_file");
  std::string path;
  if (!std::getline(in, path) || path.empty()) return std::nullopt;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || S_ISBLK(st.st_mode)) return std::nullopt;
  return std::make_pair(st.st_dev, st.st_ino);
}

}  // namespace

FileId IdOf(const struct stat& st) {
  if (S_ISBLK(st.st_mode)) return BlockDeviceId(st.st_rdev);
  FileId id;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  return id;
}

FileId BlockDeviceId(dev_t rdev) {
  FileId id;
  id.block = true;
  id.dev = rdev;
  id.backing = LoopBacking(rdev);
  return id;
}

std::string SameData(const FileId& a, const std::string& a_name, const FileId& b,
                     const std::string& b_name) {
  const std::string qa = "'" + a_name + "'", qb = "'" + b_name + "'";
  if (a.block == b.block) {
    if (a.dev == b.dev && (a.block || a.ino == b.ino)) return qa + " and " + qb + " are the same file";
    if (a.block && a.backing && a.backing == b.backing)
      return qa + " and " + qb + " are loop devices over the same file";
    return "";
  }
  const FileId& dev = a.block ? a : b;
  const FileId& file = a.block ? b : a;
  if (dev.backing && *dev.backing == std::make_pair(file.dev, file.ino)) {
    return a.block ? qa + " is a loop device over " + qb : qb + " is a loop device over " + qa;
  }
  return "";
}

namespace {

// "/dev/loop3" for device number 7:3 (sysfs's DEVNAME), else "device 7:3".
std::string DeviceName(dev_t rdev) {
  const std::string mm = std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev));
  std::ifstream in("/sys/dev/block/" + mm + "/uevent");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("DEVNAME=", 0) == 0) return "/dev/" + line.substr(8);
  }
  return "device " + mm;
}

}  // namespace

ProtectedFiles ProtectFiles(const std::string& image, const std::string& target) {
  ProtectedFiles p;
  struct stat st;
  if (!image.empty()) {
    if (::stat(image.c_str(), &st) == 0) p.files.emplace_back(IdOf(st), image);
  } else if (::stat(target.c_str(), &st) == 0) {
    p.files.emplace_back(IdOf(st), target);
    // Writing the device under a mounted filesystem corrupts it.
    p.files.emplace_back(BlockDeviceId(st.st_dev), DeviceName(st.st_dev));
    p.target_ino = st.st_ino;
  }
  return p;
}

std::string Conflict(const ProtectedFiles& p, const struct stat& other, const std::string& name) {
  const FileId id = IdOf(other);
  for (const auto& [file, file_name] : p.files) {
    std::string why = SameData(id, name, file, file_name);
    if (!why.empty()) return why;
  }
  return "";
}

namespace {

std::atomic<int> g_stop_signal{0};
int g_stop_pipe[2] = {-1, -1};

void OnStopSignal(int sig) {
  int expected = 0;
  if (!g_stop_signal.compare_exchange_strong(expected, sig)) {
    // A second signal: the user insists (the first may be stuck behind a
    // blocking open or a stalled device). Die of it, as without a handler.
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  const int saved = errno;
  const char c = 0;
  // Non-blocking: a full pipe already wakes every waiter.
  (void)!::write(g_stop_pipe[1], &c, 1);
  errno = saved;
}

}  // namespace

void InstallStopHandlers() {
  if (g_stop_pipe[0] < 0 && ::pipe2(g_stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return;
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: the library's system calls (in its own threads too) go on;
  // the tools' own waits on input and output poll the pipe instead.
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

int StopSignal() { return g_stop_signal.load(std::memory_order_relaxed); }

bool WaitReady(int fd, short events) {
  for (;;) {
    if (StopSignal() != 0) return false;
    struct pollfd p[2] = {{fd, events, 0}, {g_stop_pipe[0], POLLIN, 0}};
    const int n = ::poll(p, g_stop_pipe[0] >= 0 ? 2 : 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return true;  // let the read or write itself report the problem
    }
    if (StopSignal() != 0) return false;
    // POLLERR/POLLHUP/POLLNVAL too: the read or write then says what it is.
    if (p[0].revents != 0) return true;
  }
}

const char* SignalName(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
  }
  return "a signal";
}

}  // namespace ext4dio::cli
