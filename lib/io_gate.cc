#include "io_gate.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace ext4dio {

void IoGate::EnterSlow() {
  for (;;) {
    // Undo our count (the closer may be waiting for it), wait for the gate
    // to open, try again.
    Exit();
    uint32_t s = state_.load(std::memory_order_acquire);
    while ((s & kClosed) != 0) {
      state_.wait(s, std::memory_order_acquire);
      s = state_.load(std::memory_order_acquire);
    }
    s = state_.fetch_add(1, std::memory_order_acquire);
    if ((s & kClosed) == 0) return;
  }
}

IoGate::Exclusive::Exclusive(IoGate& gate) : gate_(gate) {
  gate_.exclusive_mu_.lock();
  gate_.closings_.fetch_add(1, std::memory_order_acq_rel);
  uint32_t s = gate_.state_.fetch_or(kClosed, std::memory_order_acq_rel) | kClosed;
  while ((s & kCount) != 0) {
    gate_.state_.wait(s, std::memory_order_acquire);
    s = gate_.state_.load(std::memory_order_acquire);
  }
  // Asynchronous members: their owners may be anywhere (idle, or waiting
  // in Enter); their device requests finish on their own, so poll.
  std::vector<const Member*> members;
  {
    std::lock_guard<std::mutex> lock(gate_.members_mu_);
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

IoGate::Exclusive::~Exclusive() {
  gate_.state_.fetch_and(kCount, std::memory_order_acq_rel);
  gate_.state_.notify_all();
  gate_.exclusive_mu_.unlock();
}

void IoGate::AddMember(const Member* m) {
  std::lock_guard<std::mutex> lock(members_mu_);
  members_.push_back(m);
}

void IoGate::RemoveMember(const Member* m) {
  // A closer may hold a copy of the list while polling: wait for it, so the
  // member outlives every poll.
  std::lock_guard<std::mutex> excl(exclusive_mu_);
  std::lock_guard<std::mutex> lock(members_mu_);
  members_.erase(std::remove(members_.begin(), members_.end(), m), members_.end());
}

}  // namespace ext4dio
