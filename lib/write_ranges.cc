#include "write_ranges.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "absl/strings/str_format.h"
#include "errors.h"

// How the fast path stays correct (the orders used below rely on this).
//
// Dekker between a direct write D and a read-modify-write R of one stripe:
//   D: fast += 1 (seq_cst); if pending (seq_cst) != 0: fast -= 1, go exact
//   R: pending += 1 (seq_cst); wait until fast (seq_cst) drains
// In the single total order of seq_cst operations, either D's pending load
// comes after R's increment (D sees it and takes itself back) or D's
// increment comes before R's fast load (R counts D and waits for it). So no
// counted write is in flight once R has seen the stripe drained, and none
// can start until EndRmw: R's pending stays up across its whole I/O.
//
// "Drained" leaves out R's own thread's counted writes (they may be waiting
// to be reaped by R's thread itself); R knows them from its thread's record
// (below), which the ending side updates BEFORE it decrements `fast`. So
// fast >= own + others at every moment, and reading fast then own (own only
// shrinks while R's thread is inside BeginRmw) gives fast_read <= own_read
// only when no other thread's counted write is left.

namespace ext4dio {
namespace {

void Backoff(int& spins) {
  if (++spins < 64) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

bool Overlaps(uint64_t lo, uint64_t hi, uint64_t a, uint64_t b) { return lo < b && a < hi; }

// A thread's counted writes in flight in one stripe of one instance (one
// region of it at a time: a write to another region of the stripe while
// these are in flight takes the exact path). Only the owning thread touches
// the plain fields; other threads ending its writes count in
// `ended_elsewhere`. Offsets are relative to the region (< 1 MiB).
struct Slot {
  static constexpr int kListed = 4;
  uint64_t serial = 0;  // WriteRanges instance (0: none yet)
  uint64_t region = 0;
  uint32_t net = 0;  // begun minus ended by the owner itself
  std::atomic<uint32_t> ended_elsewhere{0};
  // Span of the counted writes begun since the slot was last empty.
  uint32_t span_lo = 0, span_hi = 0;
  // The first kListed of them, less those the owner ended itself (those
  // ended elsewhere stay: a superset of the ones in flight). `overflow`
  // when more came: then only the span is known.
  uint8_t listed = 0;
  bool overflow = false;
  std::array<std::pair<uint32_t, uint32_t>, kListed> ranges;

  // Acquire pairs with the other threads' release increments (their
  // EndDirect of this thread's writes); a stale value only overestimates.
  uint32_t InFlight() const { return net - ended_elsewhere.load(std::memory_order_acquire); }

  // Whether a counted write of the owner in flight may overlap [lo, hi)
  // (offsets in `region` of instance `serial`): exact while at most
  // kListed of them are, else by span.
  bool MayOverlap(uint64_t of_serial, uint64_t of_region, uint32_t lo, uint32_t hi) const {
    if (serial != of_serial || region != of_region || InFlight() == 0) return false;
    if (overflow) return lo < span_hi && span_lo < hi;
    for (int i = 0; i < listed; ++i) {
      if (lo < ranges[i].second && ranges[i].first < hi) return true;
    }
    return false;
  }
};

}  // namespace

namespace write_ranges_internal {
struct Record {
  std::array<Slot, WriteRanges::kStripes> slots;
};
}  // namespace write_ranges_internal

namespace {
using write_ranges_internal::Record;

// Owner ids are (serial << 16) | index: serials are never reused, indexes
// name a Record in this table (0: none, the thread always takes the exact
// path). A record is reused by a later thread only when its thread exited
// with nothing counted in flight (otherwise the reapers still need it, and
// it is never reused).
constexpr int kIndexBits = 16;
constexpr uint32_t kMaxRecords = 1u << kIndexBits;
std::atomic<Record*> g_records[kMaxRecords];
ABSL_CONST_INIT Mutex g_records_mu;
uint32_t g_next_record ABSL_GUARDED_BY(g_records_mu) = 1;
// Indexes of records free for reuse, under g_records_mu (a function-local
// static: a thread may start before this file's globals are initialized).
std::vector<uint32_t>& FreeRecords() {
  static auto* v = new std::vector<uint32_t>;
  return *v;
}

struct ThreadState {
  uint64_t id = 0;
  uint32_t index = 0;
  Record* record = nullptr;  // null before ThreadOwner() and after thread exit
};
thread_local ThreadState t_state;

struct ThreadExit {
  ~ThreadExit() {
    Record* r = t_state.record;
    if (r == nullptr) return;
    t_state.record = nullptr;
    for (const Slot& s : r->slots) {
      if (s.InFlight() != 0) return;  // still needed by whoever ends those
    }
    MutexLock lock(&g_records_mu);
    FreeRecords().push_back(t_state.index);
  }
};
thread_local ThreadExit t_exit;

void InitThread() {
  static std::atomic<uint64_t> next_serial{1};
  const uint64_t serial = next_serial.fetch_add(1, std::memory_order_relaxed);
  uint32_t index = 0;
  Record* record = nullptr;
  {
    MutexLock lock(&g_records_mu);
    if (!FreeRecords().empty()) {
      index = FreeRecords().back();
      FreeRecords().pop_back();
    } else if (g_next_record < kMaxRecords) {
      index = g_next_record++;
    }
    if (index != 0) {
      record = g_records[index].load(std::memory_order_relaxed);
      if (record == nullptr) {
        record = new Record;
        // Release: a thread ending our writes finds the record initialized.
        g_records[index].store(record, std::memory_order_release);
      }
    }
  }
  t_state = ThreadState{serial << kIndexBits | index, index, record};
  static_cast<void>(&t_exit);  // registers its destructor for this thread
}

Record* RecordOf(uint64_t owner) {
  const uint32_t index = owner & (kMaxRecords - 1);
  return index == 0 ? nullptr : g_records[index].load(std::memory_order_acquire);
}

// The caller's record when `owner` is the caller (one thread-local read per
// call; null otherwise or when the thread has none).
Record* SelfRecord(uint64_t owner) {
  const ThreadState& t = t_state;
  return owner == t.id ? t.record : nullptr;
}

std::atomic<uint64_t> g_next_instance{1};

constexpr uint64_t kHuge = ~uint64_t{0};  // ForEachStripe's region of a huge range

// Calls f(stripe, region, lo, hi) for each stripe `r` touches, with [lo, hi)
// its bytes in `region`, until f returns false. A range over >= kStripes
// regions visits every stripe once with region kHuge (and the whole range).
template <class F>
void ForEachStripe(const WriteRanges::Range& r, F f) {
  if (r.second <= r.first) return;
  const uint64_t first = r.first >> WriteRanges::kShift;
  const uint64_t last = (r.second - 1) >> WriteRanges::kShift;
  if (last - first + 1 >= WriteRanges::kStripes) {
    for (int s = 0; s < WriteRanges::kStripes; ++s) {
      if (!f(s, kHuge, r.first, r.second)) return;
    }
    return;
  }
  // Fewer than kStripes consecutive regions: distinct stripes.
  for (uint64_t g = first; g <= last; ++g) {
    const uint64_t lo = std::max(r.first, g << WriteRanges::kShift);
    const uint64_t hi = std::min(r.second, (g + 1) << WriteRanges::kShift);
    if (!f(static_cast<int>(g % WriteRanges::kStripes), g, lo, hi)) return;
  }
}

absl::Status SelfDeadlock(uint64_t unit, uint64_t length) {
  return ErrnoError(EDEADLK, absl::StrFormat("read-modify-write of device bytes %d..%d: this "
                                             "thread's own asynchronous write to them is still "
                                             "unreaped (reap it first)",
                                             unit, unit + length - 1));
}

}  // namespace

WriteRanges::WriteRanges() : serial_(g_next_instance.fetch_add(1, std::memory_order_relaxed)) {}

uint64_t WriteRanges::ThreadOwner() {
  if (t_state.id == 0) InitThread();
  return t_state.id;
}

// Inlined (also below): as calls, their prologues were a fifth of the
// fast path's instructions.
[[gnu::always_inline]] inline bool WriteRanges::TryCount(int s, uint64_t region, uint64_t lo, uint64_t hi, Record* rec) {
  Stripe& st = stripes_[s];
  // Acquire: only a hint here (the seq_cst load below decides); skips the
  // increment while an RMW is known to be pending.
  if (st.pending.load(std::memory_order_acquire) != 0) return false;
  Slot& slot = rec->slots[s];
  const uint32_t in_flight = slot.InFlight();
  if (in_flight != 0 && (slot.serial != serial_ || slot.region != region)) return false;
  // seq_cst increment, then seq_cst load: the Dekker pair (top).
  st.fast.fetch_add(1, std::memory_order_seq_cst);
  if (st.pending.load(std::memory_order_seq_cst) != 0) {
    // Release: the RMW that sees the stripe drained sees us gone.
    st.fast.fetch_sub(1, std::memory_order_release);
    return false;
  }
  const uint32_t l = static_cast<uint32_t>(lo - (region << kShift));
  const uint32_t h = static_cast<uint32_t>(hi - (region << kShift));
  if (in_flight == 0) {
    slot.serial = serial_;
    slot.region = region;
    slot.span_lo = l;
    slot.span_hi = h;
    slot.listed = 0;
    slot.overflow = false;
  } else {
    slot.span_lo = std::min(slot.span_lo, l);
    slot.span_hi = std::max(slot.span_hi, h);
  }
  if (slot.listed < Slot::kListed) {
    slot.ranges[slot.listed++] = {l, h};
  } else {
    slot.overflow = true;
  }
  ++slot.net;
  return true;
}

[[gnu::always_inline]] inline void WriteRanges::Uncount(int s, uint64_t lo, uint64_t hi, uint64_t owner, Record* self) {
  // The owner's record first, then the stripe (the order the RMW's drain
  // test relies on, top).
  if (self != nullptr) {
    Slot& slot = self->slots[s];
    --slot.net;
    const uint32_t l = static_cast<uint32_t>(lo - (slot.region << kShift));
    const uint32_t h = static_cast<uint32_t>(hi - (slot.region << kShift));
    for (int i = 0; i < slot.listed; ++i) {
      if (slot.ranges[i] == std::pair<uint32_t, uint32_t>{l, h}) {
        slot.ranges[i] = slot.ranges[--slot.listed];
        break;
      }
    }
  } else if (Record* rec = RecordOf(owner)) {
    // Release: pairs with the owner's acquire in InFlight().
    rec->slots[s].ended_elsewhere.fetch_add(1, std::memory_order_release);
  }
  // Release: an RMW whose (acquiring) seq_cst load sees the stripe drained
  // happens after this write's I/O and the record update above.
  stripes_[s].fast.fetch_sub(1, std::memory_order_release);
}

WriteRanges::Begun WriteRanges::BeginOne(const Range& r, int s, uint64_t region, uint64_t lo,
                                         uint64_t hi, uint64_t owner, Record* rec) {
  // Counted only for the caller's own writes (its record) within fewer
  // than kStripes regions.
  if (rec != nullptr && region != kHuge && TryCount(s, region, lo, hi, rec)) return Begun::kFast;
  Stripe& st = stripes_[s];
  MutexLock lock(&st.mu);
  for (const Entry& x : st.entries) {
    if (x.rmw && Overlaps(r.first, r.second, x.lo, x.hi)) return Begun::kConflict;
  }
  st.entries.push_back(Entry{r.first, r.second, owner, false});
  // Relaxed (under mu): EndDirect of this entry happens after this call,
  // so its relaxed load sees at least this increment (coherence).
  st.slow.fetch_add(1, std::memory_order_relaxed);
  return Begun::kSlow;
}

[[gnu::always_inline]] inline bool WriteRanges::RemoveExact(const Range& r, int s,
                                                            uint64_t owner) {
  Stripe& st = stripes_[s];
  // Our own registration happened before (Begin precedes End), so when it
  // was exact this reads >= 1; when it reads 0 we were counted.
  if (st.slow.load(std::memory_order_relaxed) == 0) return false;
  MutexLock lock(&st.mu);
  for (size_t i = 0; i < st.entries.size(); ++i) {
    const Entry& x = st.entries[i];
    if (!x.rmw && x.lo == r.first && x.hi == r.second && x.owner == owner) {
      // An identical counted write of the same owner may be ended here
      // instead; equal entries are interchangeable, the other End then
      // ends the counted one.
      st.entries[i] = st.entries.back();
      st.entries.pop_back();
      st.slow.fetch_sub(1, std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

void WriteRanges::EndOne(const Range& r, int s, uint64_t lo, uint64_t hi, uint64_t owner,
                         Record* self) {
  if (!RemoveExact(r, s, owner)) Uncount(s, lo, hi, owner, self);
}

void WriteRanges::Undo(absl::Span<const Range> ranges, size_t range, int stripes,
                       uint64_t owner, Record* self) {
  for (size_t i = 0; i <= range && i < ranges.size(); ++i) {
    int left = i < range ? WriteRanges::kStripes + 1 : stripes;
    ForEachStripe(ranges[i], [&](int s, uint64_t, uint64_t lo, uint64_t hi) {
      if (left-- <= 0) return false;
      EndOne(ranges[i], s, lo, hi, owner, self);
      return true;
    });
  }
}

bool WriteRanges::BeginRange(const Range& r, uint64_t owner, Record* rec, int* done) {
  *done = 0;
  const uint64_t region = r.first >> kShift;
  // The common case: a write of the caller's within one region, counted.
  if (rec != nullptr && r.first < r.second && region == (r.second - 1) >> kShift &&
      TryCount(static_cast<int>(region % kStripes), region, r.first, r.second, rec)) {
    return true;
  }
  bool ok = true;
  ForEachStripe(r, [&](int s, uint64_t g, uint64_t lo, uint64_t hi) {
    if (BeginOne(r, s, g, lo, hi, owner, rec) == Begun::kConflict) {
      ok = false;
      return false;
    }
    ++*done;
    return true;
  });
  return ok;
}

void WriteRanges::BeginDirect(absl::Span<const Range> ranges, uint64_t owner) {
  Record* const rec = SelfRecord(owner);
  int spins = 0;
  for (;;) {
    size_t i = 0;
    int done = 0;
    while (i < ranges.size() && BeginRange(ranges.data()[i], owner, rec, &done)) ++i;
    if (i == ranges.size()) return;
    // Undo and wait for the read-modify-write (short, holds nothing else).
    Undo(ranges, i, done, owner, rec);
    Backoff(spins);
  }
}

void WriteRanges::EndDirect(absl::Span<const Range> ranges, uint64_t owner) {
  Record* const self = SelfRecord(owner);
  for (const Range& r : ranges) {
    const uint64_t region = r.first >> kShift;
    if (r.first < r.second && region == (r.second - 1) >> kShift) {
      const int s = static_cast<int>(region % kStripes);
      if (!RemoveExact(r, s, owner)) Uncount(s, r.first, r.second, owner, self);
      continue;
    }
    ForEachStripe(r, [&](int s, uint64_t, uint64_t lo, uint64_t hi) {
      EndOne(r, s, lo, hi, owner, self);
      return true;
    });
  }
}

absl::Status WriteRanges::BeginRmw(uint64_t unit, uint64_t length, uint64_t owner) {
  const int s = static_cast<int>((unit >> kShift) % kStripes);
  Stripe& st = stripes_[s];
  const uint64_t hi = unit + length;
  // seq_cst: the Dekker pair with the directs' increment-then-check (top).
  // From here on new directs to the stripe take the exact path.
  st.pending.fetch_add(1, std::memory_order_seq_cst);
  const Slot* own = nullptr;
  if (owner == t_state.id && t_state.record != nullptr &&
      t_state.record->slots[s].serial == serial_) {
    own = &t_state.record->slots[s];
  }
  const uint64_t region = unit >> kShift;
  if (own != nullptr &&
      own->MayOverlap(serial_, region, static_cast<uint32_t>(unit - (region << kShift)),
                      static_cast<uint32_t>(hi - (region << kShift)))) {
    st.pending.fetch_sub(1, std::memory_order_release);
    return SelfDeadlock(unit, length);
  }
  // Wait for other threads' counted writes to drain; no new ones start.
  int spins = 0;
  while (st.fast.load(std::memory_order_seq_cst) > (own != nullptr ? own->InFlight() : 0)) {
    Backoff(spins);
  }
  // Then the exact entries, as ever.
  for (;;) {
    {
      MutexLock lock(&st.mu);
      bool busy = false;
      for (const Entry& x : st.entries) {
        if (!Overlaps(unit, hi, x.lo, x.hi)) continue;
        if (!x.rmw && x.owner == owner) {
          st.pending.fetch_sub(1, std::memory_order_release);
          return SelfDeadlock(unit, length);
        }
        busy = true;
      }
      if (!busy) {
        st.entries.push_back(Entry{unit, hi, owner, true});
        return absl::OkStatus();
      }
    }
    Backoff(spins);
  }
}

void WriteRanges::EndRmw(uint64_t unit, uint64_t length, uint64_t owner) {
  Stripe& st = stripes_[(unit >> kShift) % kStripes];
  {
    MutexLock lock(&st.mu);
    for (size_t i = 0; i < st.entries.size(); ++i) {
      const Entry& x = st.entries[i];
      if (x.rmw && x.lo == unit && x.hi == unit + length && x.owner == owner) {
        st.entries[i] = st.entries.back();
        st.entries.pop_back();
        break;
      }
    }
  }
  // Release: a direct that sees no RMW pending (acquire or seq_cst load)
  // and counts itself happens after this RMW's write-back.
  st.pending.fetch_sub(1, std::memory_order_release);
}

}  // namespace ext4dio
