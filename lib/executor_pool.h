// ExecutorPool: the device executors of a file's synchronous callers, taken
// and given back without a lock (a tagged Treiber stack of slot indices over
// a fixed array), so concurrent pread/pwrite callers each get their own
// ring and an uncontended call costs two compare-and-swaps.
//
// Thread-safety: Take/Give/Add from any thread; ForEach and Clear take an
// internal mutex (Clear only when no executor is out).
#ifndef EXT4DIO_LIB_EXECUTOR_POOL_H_
#define EXT4DIO_LIB_EXECUTOR_POOL_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include "absl/base/thread_annotations.h"
#include "mutex.h"
#include "executor.h"

namespace ext4dio {

class ExecutorPool {
 public:
  static constexpr uint32_t kSlots = 64;
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Lease {
    uint32_t slot = kNone;
    DeviceExecutor* executor = nullptr;
  };

  // A free executor, or {kNone, nullptr} when none is.
  Lease Take() {
    uint64_t h = head_.load(std::memory_order_acquire);
    while ((h & kIndexMask) != 0) {
      const uint32_t i = static_cast<uint32_t>(h & kIndexMask) - 1;
      // May read a stale next_ if another thread took i meanwhile; the
      // tag then differs and the exchange fails.
      const uint64_t n = next_[i].load(std::memory_order_relaxed);
      const uint64_t nh = (((h >> 32) + 1) << 32) | n;
      if (head_.compare_exchange_weak(h, nh, std::memory_order_acquire,
                                      std::memory_order_acquire)) {
        return Lease{i, slots_[i].get()};
      }
    }
    return Lease{};
  }
  // Gives back what Take or Add returned.
  void Give(const Lease& lease) {
    const uint32_t i = lease.slot;
    uint64_t h = head_.load(std::memory_order_relaxed);
    uint64_t nh;
    do {
      next_[i].store(h & kIndexMask, std::memory_order_relaxed);
      nh = (((h >> 32) + 1) << 32) | (i + 1);
    } while (!head_.compare_exchange_weak(h, nh, std::memory_order_release,
                                          std::memory_order_relaxed));
  }
  // Adopts `e` into a new slot, taken by the caller; {kNone, nullptr} (and
  // `e` left to the caller) when every slot is used.
  Lease Add(std::unique_ptr<DeviceExecutor>& e) {
    MutexLock lock(&mu_);
    if (count_ == kSlots) return Lease{};
    const uint32_t i = count_++;
    slots_[i] = std::move(e);
    return Lease{i, slots_[i].get()};
  }
  // Calls f(const DeviceExecutor&) for every executor in the pool.
  template <typename F>
  void ForEach(F f) const {
    MutexLock lock(&mu_);
    for (uint32_t i = 0; i < count_; ++i) f(*slots_[i]);
  }
  void Clear() {
    MutexLock lock(&mu_);
    for (uint32_t i = 0; i < count_; ++i) slots_[i].reset();
    count_ = 0;
    head_.store(0, std::memory_order_release);
  }

 private:
  static constexpr uint64_t kIndexMask = 0xffffffffu;
  // (tag << 32) | (slot + 1); 0 in the low half: empty.
  std::atomic<uint64_t> head_{0};
  std::array<std::atomic<uint64_t>, kSlots> next_{};
  mutable Mutex mu_;  // count_ and slots_ growth
  uint32_t count_ ABSL_GUARDED_BY(mu_) = 0;
  // Written under mu_ (Add, Clear); Take reads a slot without it, after the
  // acquire of the head that a Give of that slot released.
  std::array<std::unique_ptr<DeviceExecutor>, kSlots> slots_;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_EXECUTOR_POOL_H_
