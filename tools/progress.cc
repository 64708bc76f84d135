#include "progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>

namespace ext4dio::cli {
namespace {

std::string Human(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 5) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%.0f %s", bytes, kUnits[u]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", bytes, kUnits[u]);
  }
  return buf;
}

std::string Clock(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const uint64_t s = static_cast<uint64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s / 60 % 60),
                  static_cast<unsigned long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llu:%02llu", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  }
  return buf;
}

void WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t r = ::write(fd, text.data() + done, text.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;  // progress is best effort
    done += static_cast<size_t>(r);
  }
}

size_t TerminalWidth(int fd) {
  struct winsize ws {};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
  return 80;
}

}  // namespace

Progress::Progress(std::string label, bool enabled, int fd)
    : label_(std::move(label)), enabled_(enabled), fd_(fd) {}

Progress::~Progress() { Finish(); }

bool Progress::WantedFor(bool force_on, bool force_off, int fd) {
  if (force_off) return false;
  if (force_on) return true;
  return ::isatty(fd) == 1;
}

std::string Progress::Format(const std::string& label, uint64_t done, uint64_t total,
                             double seconds, size_t width, bool final_line) {
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  std::string rate_text = Human(rate) + "/s";
  std::string line = label + ": ";
  if (total == 0) {
    line += Human(static_cast<double>(done)) + "  " + rate_text;
    if (final_line) line += "  in " + Clock(seconds);
    return line;
  }
  const double fraction = std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
  char pct[16];
  std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(fraction * 100.0));
  std::string tail = std::string(" ") + pct + "  " + Human(static_cast<double>(done)) + " / " +
                     Human(static_cast<double>(total)) + "  " + rate_text;
  if (final_line) {
    tail += "  in " + Clock(seconds);
  } else {
    const double left =
        rate > 0 ? static_cast<double>(total - std::min(done, total)) / rate : std::nan("");
    tail += "  ETA " + Clock(left);
  }
  // The bar takes what the terminal has left, within reason.
  const size_t fixed = line.size() + tail.size() + 2;
  size_t bar = width > fixed + 10 ? std::min<size_t>(width - fixed - 1, 40) : 10;
  const size_t full = static_cast<size_t>(fraction * static_cast<double>(bar));
  line += "[" + std::string(full, '#') + std::string(bar - full, '.') + "]" + tail;
  return line;
}

void Progress::Start(uint64_t total) {
  if (!enabled_ || started_) return;
  started_ = true;
  total_ = total;
  tty_ = ::isatty(fd_) == 1;
  start_ = std::chrono::steady_clock::now();
  thread_ = std::thread([this] { Loop(); });
}

void Progress::Loop() {
  // About 5 redraws a second on a terminal; once a second into a file/pipe.
  const auto period = tty_ ? std::chrono::milliseconds(200) : std::chrono::milliseconds(1000);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (cv_.wait_for(lock, period, [this] { return stop_; })) break;
    Draw(false);
  }
}

void Progress::Draw(bool final_line) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const size_t width = tty_ ? TerminalWidth(fd_) : 100;
  std::string text = Format(label_, done(), total_, seconds, width, final_line);
  if (tty_) {
    if (text.size() >= width) text.resize(width - 1);
    text = "\r" + text + "\033[K";
    if (final_line) text += "\n";
  } else {
    text += "\n";
  }
  WriteAll(fd_, text);
}

void Progress::Finish() {
  if (!enabled_ || !started_ || finished_) return;
  finished_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  Draw(true);
}

}  // namespace ext4dio::cli
