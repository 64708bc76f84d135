// Mutex, MutexLock, CondVar: std::mutex and std::condition_variable with
// clang's thread-safety attributes (ABSL_LOCKABLE & co.), so members can be
// ABSL_GUARDED_BY them and -Wthread-safety checks every access.
//
// Why not absl::Mutex: Debian's abseil is a shared library built without
// ThreadSanitizer, so TSan cannot see its synchronisation and reports every
// access it guards as a race (seen in concurrency_test). libstdc++'s
// std::mutex is pthread_mutex_t, which TSan intercepts. The interface is
// absl::Mutex's (Lock/Unlock/TryLock, MutexLock(&mu), CondVar) so the code
// reads the same.
//
// Thread-safety: as std::mutex.
#ifndef EXT4DIO_LIB_MUTEX_H_
#define EXT4DIO_LIB_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace ext4dio {

class ABSL_LOCKABLE Mutex {
 public:
  constexpr Mutex() = default;  // constant-initialised: safe as a global
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  [[nodiscard]] bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  // Waits for a Signal, at most `timeout`; true when it timed out. `mu` is
  // released while waiting and held again on return.
  bool WaitWithTimeout(Mutex* mu, absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool timed_out =
        cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout)) == std::cv_status::timeout;
    lock.release();  // still held: the caller's
    return timed_out;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_MUTEX_H_
