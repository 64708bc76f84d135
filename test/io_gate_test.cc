// Direct tests of IoGate (lib/io_gate.h) with threads. Every wait is proved
// by ordering: the thread that unblocks a waiter sets a flag before it does,
// and the waiter checks the flag once it returns. Sleeps only widen the
// window in which a gate that does not wait would be caught; no assertion
// depends on how long anything takes. WaitUntil's limit only keeps a broken
// gate from hanging the test.
#include "io_gate.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace ext4dio {
namespace {

using std::chrono::milliseconds;

// Polls until cond() holds; false after `limit` (a hang guard, not a timing
// assertion).
bool WaitUntil(const std::function<bool()>& cond,
               std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

// Lets a broken gate (one that does not wait) run ahead before the flag
// that proves the wait is set.
void Widen() { std::this_thread::sleep_for(milliseconds(30)); }

class CountingMember : public IoGate::Member {
 public:
  explicit CountingMember(uint64_t pending) : pending_(pending) {}
  uint64_t PendingDeviceIo() const override {
    polls_.fetch_add(1);
    return pending_.load();
  }
  void Set(uint64_t n) { pending_.store(n); }
  uint64_t polls() const { return polls_.load(); }

 private:
  std::atomic<uint64_t> pending_;
  mutable std::atomic<uint64_t> polls_{0};
};

TEST(IoGateTest, ManyCallersAreInsideAtOnceWhileOpen) {
  IoGate gate;
  constexpr int kThreads = 8;
  std::atomic<int> inside{0};
  std::atomic<bool> all_seen{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      const uint32_t token = gate.Enter();
      inside.fetch_add(1);
      // Stay inside until everyone is: Enter never waits for other callers.
      EXPECT_TRUE(WaitUntil([&] { return inside.load() == kThreads; }));
      all_seen = true;
      gate.Exit(token);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(all_seen);
  EXPECT_EQ(gate.closings(), 0u);
  // Nested entries of one thread, and a closing afterwards finds nobody.
  const uint32_t a = gate.Enter();
  const uint32_t b = gate.Enter();
  gate.Exit(b);
  gate.Exit(a);
  { IoGate::Exclusive closed(gate); }
  EXPECT_EQ(gate.closings(), 1u);
}

TEST(IoGateTest, ExclusiveWaitsForCallersInside) {
  IoGate gate;
  const uint32_t token = gate.Enter();
  std::atomic<bool> exited{false}, closed{false};
  std::thread closer([&] {
    IoGate::Exclusive ex(gate);
    EXPECT_TRUE(exited) << "the gate closed with a caller inside";
    closed = true;
  });
  ASSERT_TRUE(WaitUntil([&] { return gate.closings() == 1; }));
  Widen();
  EXPECT_FALSE(closed);
  exited = true;
  gate.Exit(token);
  closer.join();
  EXPECT_TRUE(closed);
}

TEST(IoGateTest, EnterBlocksWhileClosed) {
  IoGate gate;
  std::atomic<bool> opened{false}, entered{false};
  std::optional<IoGate::Exclusive> ex;
  ex.emplace(gate);
  std::thread caller([&] {
    const uint32_t token = gate.Enter();
    EXPECT_TRUE(opened) << "Enter returned while the gate was closed";
    entered = true;
    gate.Exit(token);
  });
  Widen();
  EXPECT_FALSE(entered);
  opened = true;
  ex.reset();
  caller.join();
  EXPECT_TRUE(entered);
}

TEST(IoGateTest, ExclusiveWaitsForMembersDeviceIo) {
  IoGate gate;
  CountingMember m(2);
  gate.AddMember(&m);
  std::atomic<bool> drained{false}, closed{false};
  std::thread closer([&] {
    IoGate::Exclusive ex(gate);
    EXPECT_TRUE(drained) << "closed with device I/O pending";
    closed = true;
  });
  ASSERT_TRUE(WaitUntil([&] { return m.polls() > 0; }));
  m.Set(1);  // one completes: still pending
  const uint64_t polls = m.polls();
  ASSERT_TRUE(WaitUntil([&] { return m.polls() > polls; }));
  Widen();
  EXPECT_FALSE(closed);
  drained = true;
  m.Set(0);
  closer.join();
  EXPECT_TRUE(closed);
  gate.RemoveMember(&m);
}

TEST(IoGateTest, ClosingsCountsEveryExclusiveAndOnlyThose) {
  IoGate gate;
  EXPECT_EQ(gate.closings(), 0u);
  gate.Synchronize();
  EXPECT_EQ(gate.closings(), 0u);
  for (int i = 1; i <= 3; ++i) {
    IoGate::Exclusive ex(gate);
    EXPECT_EQ(gate.closings(), static_cast<uint64_t>(i));
  }
  const uint32_t t = gate.Enter();
  gate.Exit(t);
  EXPECT_EQ(gate.closings(), 3u);
}

TEST(IoGateTest, ExclusivesTakeTurns) {
  IoGate gate;
  std::optional<IoGate::Exclusive> first;
  first.emplace(gate);
  std::atomic<bool> released{false}, second_in{false};
  std::thread second([&] {
    IoGate::Exclusive ex(gate);
    EXPECT_TRUE(released);
    second_in = true;
  });
  Widen();
  EXPECT_FALSE(second_in);
  released = true;
  first.reset();
  second.join();
  EXPECT_TRUE(second_in);
}

// Enters in the epoch after `old` (the token is the entry's epoch: Enter
// returns it for Exit), retrying while a Synchronize has not flipped yet.
// Fails the test (and enters anyway) when no flip comes.
uint32_t EnterAfterFlip(IoGate& gate, uint32_t old) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    const uint32_t t = gate.Enter();
    if (t != old) return t;
    if (std::chrono::steady_clock::now() > end) {
      ADD_FAILURE() << "Synchronize never started a new epoch";
      return t;
    }
    gate.Exit(t);
    std::this_thread::yield();
  }
}

TEST(IoGateTest, SynchronizeWaitsForEarlierCallersNotLaterOnes) {
  IoGate gate;
  const uint32_t early = gate.Enter();
  std::atomic<bool> early_exited{false}, synced{false};
  std::thread sync([&] {
    gate.Synchronize();
    EXPECT_TRUE(early_exited) << "Synchronize returned with an earlier caller inside";
    synced = true;
  });
  // A later caller enters in the new epoch (so after the flip) and stays.
  const uint32_t late = EnterAfterFlip(gate, early);
  EXPECT_EQ(gate.closings(), 0u);  // the gate never closed
  Widen();
  EXPECT_FALSE(synced);
  early_exited = true;
  gate.Exit(early);
  // Synchronize returns with the later caller still inside.
  const bool done = WaitUntil([&] { return synced.load(); });
  EXPECT_TRUE(done) << "Synchronize waited for a caller that entered after it";
  gate.Exit(late);
  sync.join();
}

TEST(IoGateTest, SecondSynchronizeWaitsForTheSecondEpoch) {
  IoGate gate;
  // Epoch A: nobody inside: returns at once (a hang here fails by timeout).
  gate.Synchronize();
  const uint32_t first = gate.Enter();
  std::atomic<bool> first_exited{false}, second_exited{false};
  std::atomic<int> synced{0};
  std::thread s1([&] {
    gate.Synchronize();
    EXPECT_TRUE(first_exited);
    synced.fetch_add(1);
  });
  const uint32_t second = EnterAfterFlip(gate, first);
  first_exited = true;
  gate.Exit(first);
  s1.join();
  EXPECT_EQ(synced.load(), 1);
  // Now `second` is the earlier caller: the next Synchronize waits for it.
  std::thread s2([&] {
    gate.Synchronize();
    EXPECT_TRUE(second_exited);
    synced.fetch_add(1);
  });
  const uint32_t third = EnterAfterFlip(gate, second);
  EXPECT_EQ(third, first);  // two epochs, taken in turn
  Widen();
  EXPECT_EQ(synced.load(), 1);
  second_exited = true;
  gate.Exit(second);
  EXPECT_TRUE(WaitUntil([&] { return synced.load() == 2; }))
      << "Synchronize waited for a caller that entered after it";
  gate.Exit(third);
  s2.join();
}

TEST(IoGateTest, ExclusiveWaitsForBothEpochsWhileSynchronizing) {
  IoGate gate;
  const uint32_t early = gate.Enter();
  std::atomic<bool> early_exited{false}, late_exited{false}, synced{false}, closed{false};
  std::thread sync([&] {
    gate.Synchronize();
    EXPECT_TRUE(early_exited);
    synced = true;
  });
  const uint32_t late = EnterAfterFlip(gate, early);
  std::thread closer([&] {
    IoGate::Exclusive ex(gate);
    EXPECT_TRUE(early_exited && late_exited) << "closed with a caller inside";
    closed = true;
  });
  ASSERT_TRUE(WaitUntil([&] { return gate.closings() == 1; }));
  early_exited = true;
  gate.Exit(early);
  // The synchronizer only waited for the early caller; the closer waits
  // for the late one too.
  EXPECT_TRUE(WaitUntil([&] { return synced.load(); }));
  Widen();
  EXPECT_FALSE(closed);
  late_exited = true;
  gate.Exit(late);
  closer.join();
  sync.join();
  EXPECT_TRUE(closed);
}

TEST(IoGateTest, SynchronizeWhileClosedReturnsAndKeepsTheGateClosed) {
  IoGate gate;
  std::optional<IoGate::Exclusive> ex;
  ex.emplace(gate);
  std::atomic<bool> synced{false}, opened{false}, entered{false};
  std::thread sync([&] {
    gate.Synchronize();  // nobody inside: returns though the gate is closed
    synced = true;
  });
  EXPECT_TRUE(WaitUntil([&] { return synced.load(); }));
  sync.join();
  std::thread caller([&] {
    const uint32_t t = gate.Enter();
    EXPECT_TRUE(opened) << "Synchronize opened a closed gate";
    entered = true;
    gate.Exit(t);
  });
  Widen();
  EXPECT_FALSE(entered);
  opened = true;
  ex.reset();
  caller.join();
  EXPECT_TRUE(entered);
}

TEST(IoGateTest, RemoveMemberWaitsForAClosersPolls) {
  IoGate gate;
  auto m = std::make_unique<CountingMember>(1);
  gate.AddMember(m.get());
  std::atomic<bool> drained{false}, releasing{false}, removed{false}, go{false};
  std::thread closer([&] {
    {
      IoGate::Exclusive ex(gate);
      EXPECT_TRUE(drained);
      EXPECT_TRUE(WaitUntil([&] { return go.load(); }));
      releasing = true;
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return m->polls() > 0; }));
  std::thread remover([&] {
    gate.RemoveMember(m.get());
    // The closer was done with the member (and the gate) before this returned.
    EXPECT_TRUE(releasing) << "RemoveMember returned while a closer could poll it";
    removed = true;
  });
  Widen();
  EXPECT_FALSE(removed);
  drained = true;
  m->Set(0);
  Widen();
  EXPECT_FALSE(removed);
  go = true;
  closer.join();
  remover.join();
  EXPECT_TRUE(removed);
  // Removed: a closer no longer polls it (it would wait forever on 5).
  m->Set(5);
  const uint64_t polls = m->polls();
  std::atomic<bool> closed{false};
  std::thread again([&] {
    IoGate::Exclusive ex(gate);
    closed = true;
  });
  const bool ok = WaitUntil([&] { return closed.load(); });
  EXPECT_TRUE(ok) << "a removed member is still polled";
  if (!ok) m->Set(0);
  again.join();
  EXPECT_EQ(m->polls(), polls);
}

}  // namespace
}  // namespace ext4dio
