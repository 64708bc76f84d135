// A one-line progress display on standard error for the ext4dio tools.
//
// On a terminal the line is redrawn in place about five times a second
// ("\r" + erase): bytes done, the rate, and, when the total is known, a bar,
// the percentage and an estimate of the time left. When standard error is
// not a terminal (and progress was asked for with --progress) the same text
// is printed as plain lines, about once a second, so logs stay readable.
// Finish() draws the final state and ends the line with a newline.
//
// Thread-safety: Add() may be called from any number of threads at once;
// Start() and Finish() from one thread.
#ifndef EXT4DIO_TOOLS_PROGRESS_H_
#define EXT4DIO_TOOLS_PROGRESS_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace ext4dio::cli {

class Progress {
 public:
  // `label` starts every line ("ext4dio-write"). A disabled Progress does
  // nothing at all.
  Progress(std::string label, bool enabled, int fd = 2);
  ~Progress();  // Finish()es if needed
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Whether to show progress: --no-progress wins, then --progress, else
  // only when `fd` is a terminal.
  static bool WantedFor(bool force_on, bool force_off, int fd = 2);

  bool enabled() const { return enabled_; }
  // Starts the clock and the display; `total` bytes expected, 0 = unknown.
  void Start(uint64_t total);
  // Counts `bytes` more done. Cheap; never blocks on the display.
  void Add(uint64_t bytes) { done_.fetch_add(bytes, std::memory_order_relaxed); }
  uint64_t done() const { return done_.load(std::memory_order_relaxed); }
  // Draws the final line and ends it with a newline. Idempotent.
  void Finish();

  // The text of one progress line (exposed for tests): `width` is the
  // terminal width the line must fit in.
  static std::string Format(const std::string& label, uint64_t done, uint64_t total, double seconds,
                            size_t width, bool final_line);

 private:
  void Loop();
  void Draw(bool final_line);

  const std::string label_;
  const bool enabled_;
  const int fd_;
  bool tty_ = false;
  uint64_t total_ = 0;
  std::atomic<uint64_t> done_{0};
  std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool started_ = false;
  bool finished_ = false;
  std::thread thread_;
};

}  // namespace ext4dio::cli

#endif  // EXT4DIO_TOOLS_PROGRESS_H_
