// IoGate: user space's inode_dio_wait. Fast-path I/O runs "inside" the
// gate (many at once, one atomic add each); the kernel path, a map change or
// a lease release closes it: new fast-path entries wait, and Close returns
// only once every fast-path device request already started has physically
// completed.
//
// Two kinds of fast-path I/O are counted:
//  * synchronous calls bracket their whole I/O with Enter/Exit;
//  * asynchronous queues keep requests in flight after their call returns,
//    so they register as Members; Close polls each member's count of
//    device requests submitted and not yet completed. That count is read
//    without the member's owner (which may be idle, or blocked in the gate
//    itself), so no closer ever waits for another thread to reap.
//
// Thread-safety: all methods from any thread. A thread inside Enter/Exit
// must not Close (it would wait for itself).
#ifndef EXT4DIO_LIB_IO_GATE_H_
#define EXT4DIO_LIB_IO_GATE_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace ext4dio {

class IoGate {
 public:
  class Member {
   public:
    virtual ~Member() = default;
    // Device requests submitted and not known to be complete. May
    // overestimate, never underestimate; callable from any thread.
    virtual uint64_t PendingDeviceIo() const = 0;
  };

  // Blocks while the gate is closed.
  void Enter() {
    uint32_t s = state_.fetch_add(1, std::memory_order_acquire);
    if ((s & kClosed) == 0) return;
    EnterSlow();
  }
  void Exit() {
    const uint32_t s = state_.fetch_sub(1, std::memory_order_release);
    if ((s & kClosed) != 0 && (s & kCount) == 1) state_.notify_all();
  }

  // Holds the gate closed for its lifetime; one at a time (later ones wait).
  class Exclusive {
   public:
    explicit Exclusive(IoGate& gate);
    ~Exclusive();
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
  static constexpr uint32_t kClosed = 1u << 31;
  static constexpr uint32_t kCount = kClosed - 1;
  void EnterSlow();

  std::atomic<uint32_t> state_{0};
  std::atomic<uint64_t> closings_{0};
  std::mutex exclusive_mu_;  // held by the Exclusive
  std::mutex members_mu_;
  std::vector<const Member*> members_;
};

}  // namespace ext4dio

#endif  // EXT4DIO_LIB_IO_GATE_H_
