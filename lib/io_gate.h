// IoGate: user space's inode_dio_wait. Fast-path I/O runs "inside" the
// gate (many at once, one atomic add each); the kernel path, a map change or
// a lease release closes it: new fast-path entries wait, and Close returns
// only once every fast-path device request already started has physically
// completed.
//
// Two kinds of fast-path I/O are counted:
//  * synchronous calls bracket their whole I/O with Enter/Exit (and every
//    caller brackets its planning: it reads the file's map in between);
//  * asynchronous queues keep requests in flight after their call returns,
//    so they register as Members; Close polls each member's count of
//    device requests submitted and not yet completed. That count is read
//    without the member's owner (which may be idle, or blocked in the gate
//    itself), so no closer ever waits for another thread to reap.
//
// The gate is also the map's read-copy-update: a map replaced while the
// gate is open (a deferred re-map) may still be read by callers inside;
// Synchronize waits for every caller that entered before it to leave (not
// for later ones: the entry count is kept in two epochs), after which the
// old map can go.
//
// Thread-safety: all methods from any thread. A thread inside Enter/Exit
// must not Close or Synchronize (it would wait for itself). At most
// 16,383 threads inside at once. For clang's -Wthread-safety the gate is a
// capability held exclusively by an Exclusive: what only an Exclusive may
// touch is ABSL_GUARDED_BY(gate_), and functions that must run inside one
// are ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_). Enter/Exit are not modelled
// (their token and the RCU use do not fit a lock).
#ifndef EXT4DIO_LIB_IO_GATE_H_
#define EXT4DIO_LIB_IO_GATE_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "mutex.h"

namespace ext4dio {

class ABSL_LOCKABLE IoGate {
 public:
  class Member {
   public:
    virtual ~Member() = default;
    // Device requests submitted and not known to be complete. May
    // overestimate, never underestimate; callable from any thread.
    virtual uint64_t PendingDeviceIo() const = 0;
  };

  // Blocks while the gate is closed. Returns the token to pass to Exit.
  [[nodiscard]] uint32_t Enter() {
    uint32_t s = state_.load(std::memory_order_relaxed);
    while ((s & kClosed) == 0) {
      const uint32_t epoch = (s >> kEpochShift) & 1;
      if (state_.compare_exchange_weak(s, s + One(epoch), std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return epoch;
    }
    return EnterSlow();
  }
  // Enter without waiting: false (nothing counted) while the gate is closed.
  [[nodiscard]] bool TryEnter(uint32_t* token) {
    uint32_t s = state_.load(std::memory_order_relaxed);
    while ((s & kClosed) == 0) {
      const uint32_t epoch = (s >> kEpochShift) & 1;
      if (state_.compare_exchange_weak(s, s + One(epoch), std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        *token = epoch;
        return true;
      }
    }
    return false;
  }
  void Exit(uint32_t token) {
    const uint32_t s = state_.fetch_sub(One(token), std::memory_order_release) - One(token);
    // A closer waits for both counts, a synchronizer for the old epoch's.
    if ((s & (kClosed | kSyncing)) != 0 && ((s >> (token * kCountBits)) & kCountMask) == 0)
      state_.notify_all();
  }

  // Waits until every caller that was inside when it was called has left.
  // Callers entering meanwhile neither wait nor are waited for.
  void Synchronize();

  // Holds the gate closed for its lifetime; one at a time (later ones wait).
  class ABSL_SCOPED_LOCKABLE Exclusive {
   public:
    explicit Exclusive(IoGate& gate) ABSL_EXCLUSIVE_LOCK_FUNCTION(gate);
    ~Exclusive() ABSL_UNLOCK_FUNCTION();
    Exclusive(const Exclusive&) = delete;
    Exclusive& operator=(const Exclusive&) = delete;

   private:
    IoGate& gate_;
  };

  void AddMember(const Member* m);
  void RemoveMember(const Member* m);
  // Closings so far (each Exclusive is one): a fast path that saw the same
  // count before and after planning knows no map change came in between.
  uint64_t closings() const { return closings_.load(std::memory_order_acquire); }

 private:
  // state_: closed | syncing | epoch | count of epoch 1 | count of epoch 0.
  static constexpr uint32_t kClosed = 1u << 31;
  static constexpr uint32_t kSyncing = 1u << 30;
  static constexpr uint32_t kEpochShift = 29;
  static constexpr uint32_t kCountBits = 14;
  static constexpr uint32_t kCountMask = (1u << kCountBits) - 1;
  static constexpr uint32_t kCounts = (1u << (2 * kCountBits)) - 1;
  static constexpr uint32_t One(uint32_t epoch) { return 1u << (epoch * kCountBits); }
  uint32_t EnterSlow();

  std::atomic<uint32_t> state_{0};
  std::atomic<uint64_t> closings_{0};
  Mutex exclusive_mu_;  // held by the Exclusive
  Mutex sync_mu_;       // one Synchronize at a time
  Mutex members_mu_ ABSL_ACQUIRED_AFTER(exclusive_mu_);
  std::vector<const Member*> members_ ABSL_GUARDED_BY(members_mu_);
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_IO_GATE_H_
