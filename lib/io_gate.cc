#include "io_gate.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace ext4dio {

uint32_t IoGate::EnterSlow() {
  for (;;) {
    // Wait for the gate to open (nothing counted meanwhile), try again.
    uint32_t s = state_.load(std::memory_order_acquire);
    while ((s & kClosed) != 0) {
      state_.wait(s, std::memory_order_acquire);
      s = state_.load(std::memory_order_acquire);
    }
    while ((s & kClosed) == 0) {
      const uint32_t epoch = (s >> kEpochShift) & 1;
      if (state_.compare_exchange_weak(s, s + One(epoch), std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return epoch;
    }
  }
}

void IoGate::Synchronize() {
  MutexLock lock(&sync_mu_);
  // Flip the epoch: later callers count in the other one.
  const uint32_t before =
      state_.fetch_xor((1u << kEpochShift) | kSyncing, std::memory_order_acq_rel);
  const uint32_t old = (before >> kEpochShift) & 1;
  uint32_t s = before ^ ((1u << kEpochShift) | kSyncing);
  while (((s >> (old * kCountBits)) & kCountMask) != 0) {
    state_.wait(s, std::memory_order_acquire);
    s = state_.load(std::memory_order_acquire);
  }
  state_.fetch_and(~kSyncing, std::memory_order_acq_rel);
}

// The analysis cannot see that holding exclusive_mu_ with kClosed set is
// holding the gate: these two are where the capability is made.
IoGate::Exclusive::Exclusive(IoGate& gate) ABSL_NO_THREAD_SAFETY_ANALYSIS : gate_(gate) {
  gate_.exclusive_mu_.Lock();
  gate_.closings_.fetch_add(1, std::memory_order_acq_rel);
  uint32_t s = gate_.state_.fetch_or(kClosed, std::memory_order_acq_rel) | kClosed;
  while ((s & kCounts) != 0) {
    gate_.state_.wait(s, std::memory_order_acquire);
    s = gate_.state_.load(std::memory_order_acquire);
  }
  // Asynchronous members: their owners may be anywhere (idle, or waiting
  // in Enter); their device requests finish on their own, so poll.
  std::vector<const Member*> members;
  {
    MutexLock lock(&gate_.members_mu_);
    members = gate_.members_;
  }
  auto spin = std::chrono::microseconds(20);
  for (const Member* m : members) {
    while (m->PendingDeviceIo() != 0) {
      std::this_thread::sleep_for(spin);
      spin = std::min(spin * 2, std::chrono::microseconds(1000));
    }
  }
}

IoGate::Exclusive::~Exclusive() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  gate_.state_.fetch_and(~kClosed, std::memory_order_acq_rel);
  gate_.state_.notify_all();
  gate_.exclusive_mu_.Unlock();
}

void IoGate::AddMember(const Member* m) {
  MutexLock lock(&members_mu_);
  members_.push_back(m);
}

void IoGate::RemoveMember(const Member* m) {
  // A closer may hold a copy of the list while polling: wait for it, so the
  // member outlives every poll.
  MutexLock excl(&exclusive_mu_);
  MutexLock lock(&members_mu_);
  members_.erase(std::remove(members_.begin(), members_.end(), m), members_.end());
}

}  // namespace ext4dio
