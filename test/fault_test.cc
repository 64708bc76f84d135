// Faults on the data path, injected through the Os interface: EIO on the
// Nth device write or read, short transfers (the library must resubmit the
// remainder), 0-byte transfers, failed flushes, failed buffered writes and
// write-backs. The caller must get the error with the file offset of the
// failed piece, no success may be reported for bytes not written, and after
// a short transfer the data must still be exact.
//
// Both backends (io_uring, psync), synchronous calls and AsyncQueue.
//
// Cases marked "REGRESSION" guard library bugs found while writing these
// tests (each comment says what the bug was; all are fixed).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "aligned.h"
#include "async_queue.h"
#include "errors.h"
#include "file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "os.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::RandomBytes;

using ::testing::HasSubstr;
using testing::TempDir;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * 1024;

enum class Fault { kNone, kEio, kShort, kZero };

// One recorded device operation as the library submitted it.
struct Seen {
  IoOp::Kind kind;
  uint64_t offset;
  uint32_t length;
  Fault fault;
};

class FaultOs;

// Wraps a real queue: faulted operations either never reach it (EIO, 0
// bytes: a made-up result is handed out by Reap) or reach it shortened
// (short transfer: the device really does only the first part).
class FaultQueue final : public IoQueue {
 public:
  FaultQueue(FaultOs* os, std::unique_ptr<IoQueue> inner) : os_(os), inner_(std::move(inner)) {}
  uint32_t depth() const override { return inner_->depth(); }
  uint32_t in_flight() const override {
    return inner_->in_flight() + static_cast<uint32_t>(made_up_.size());
  }
  const char* name() const override { return inner_->name(); }
  absl::Status Submit(absl::Span<const IoOp> ops) override;
  absl::StatusOr<size_t> Reap(absl::Span<IoResult> out, size_t min_complete) override {
    size_t n = 0;
    while (n < out.size() && !made_up_.empty()) {
      out[n++] = made_up_.front();
      made_up_.pop_front();
    }
    const size_t want = min_complete > n ? min_complete - n : 0;
    if (n < out.size() && (want > 0 || inner_->in_flight() > 0)) {
      auto got = inner_->Reap(out.subspan(n), std::min<size_t>(want, inner_->in_flight()));
      if (!got.ok()) return got.status();
      n += *got;
    }
    return n;
  }

 private:
  FaultOs* os_;
  std::unique_ptr<IoQueue> inner_;
  std::deque<IoResult> made_up_;
};

class FaultOs : public Os {
 public:
  // Arms a fault on the nth (1-based, counted from now, over all queues)
  // device write or read. `every`: on every one from then on.
  void FailWrite(int nth, Fault f, bool every = false) {
    std::lock_guard<std::mutex> l(mu_);
    write_at_ = writes_ + nth;
    write_fault_ = f;
    write_every_ = every;
  }
  // The queue's Submit refuses (with `err`) the batch holding the nth
  // device write: none of it is in flight, as IoQueue promises.
  void FailSubmit(int nth, int err) {
    std::lock_guard<std::mutex> l(mu_);
    submit_at_ = writes_ + nth;
    submit_errno_ = err;
  }
  // Whether a batch with these writes is to be refused (counts nothing).
  int SubmitError(absl::Span<const IoOp> ops) {
    std::lock_guard<std::mutex> l(mu_);
    int w = writes_;
    for (const IoOp& op : ops) {
      if (op.kind != IoOp::kWrite) continue;
      if (submit_at_ && ++w == submit_at_) {
        submit_at_ = 0;
        refused_.push_back(op);
        return submit_errno_;
      }
    }
    return 0;
  }
  std::vector<IoOp> refused() {
    std::lock_guard<std::mutex> l(mu_);
    return refused_;
  }
  void FailRead(int nth, Fault f) {
    std::lock_guard<std::mutex> l(mu_);
    read_at_ = reads_ + nth;
    read_fault_ = f;
  }
  // Buffered (non-direct) writes through Os::Pwrite.
  void FailPwrite(int nth, Fault f) {
    std::lock_guard<std::mutex> l(mu_);
    pwrite_at_ = pwrites_ + nth;
    pwrite_fault_ = f;
  }
  void Disarm() {
    std::lock_guard<std::mutex> l(mu_);
    write_at_ = read_at_ = pwrite_at_ = submit_at_ = 0;
    write_every_ = false;
    flush_errno_ = writeback_errno_ = 0;
  }
  void set_flush_errno(int e) { flush_errno_ = e; }
  void set_writeback_errno(int e) { writeback_errno_ = e; }

  std::vector<Seen> seen() {
    std::lock_guard<std::mutex> l(mu_);
    return seen_;
  }
  void ClearSeen() {
    std::lock_guard<std::mutex> l(mu_);
    seen_.clear();
  }
  // The operations that were faulted.
  std::vector<Seen> faulted() {
    std::vector<Seen> out;
    for (const Seen& s : seen())
      if (s.fault != Fault::kNone) out.push_back(s);
    return out;
  }
  int writes() {
    std::lock_guard<std::mutex> l(mu_);
    return writes_;
  }

  // Decides (and records) the fate of one device operation.
  Fault Decide(const IoOp& op) {
    std::lock_guard<std::mutex> l(mu_);
    Fault f = Fault::kNone;
    if (op.kind == IoOp::kWrite) {
      ++writes_;
      if (write_at_ && (writes_ == write_at_ || (write_every_ && writes_ >= write_at_)))
        f = write_fault_;
    } else {
      ++reads_;
      if (read_at_ && reads_ == read_at_) f = read_fault_;
    }
    seen_.push_back(Seen{op.kind, op.offset, op.length, f});
    return f;
  }

  // Os: everything delegates to the real one.
  int Open(const char* path, int flags, mode_t mode) override {
    return RealOs()->Open(path, flags, mode);
  }
  int Close(int fd) override { return RealOs()->Close(fd); }
  int Flush(int fd) override {
    if (flush_errno_) return -flush_errno_;
    return RealOs()->Flush(fd);
  }
  ssize_t Pread(int fd, void* buf, size_t n, uint64_t offset) override {
    return RealOs()->Pread(fd, buf, n, offset);
  }
  ssize_t Pwrite(int fd, const void* buf, size_t n, uint64_t offset) override {
    Fault f = Fault::kNone;
    {
      std::lock_guard<std::mutex> l(mu_);
      ++pwrites_;
      if (pwrite_at_ && pwrites_ == pwrite_at_) f = pwrite_fault_;
      seen_.push_back(Seen{IoOp::kWrite, offset, static_cast<uint32_t>(n), f});
      ++buffered_writes_;
    }
    switch (f) {
      case Fault::kEio: return -EIO;
      case Fault::kZero: return 0;
      case Fault::kShort: return RealOs()->Pwrite(fd, buf, std::max<size_t>(1, n / 2), offset);
      case Fault::kNone: break;
    }
    return RealOs()->Pwrite(fd, buf, n, offset);
  }
  int WritebackAndDrop(int fd, uint64_t offset, uint64_t n) override {
    if (writeback_errno_) return -writeback_errno_;
    return RealOs()->WritebackAndDrop(fd, offset, n);
  }
  absl::StatusOr<std::unique_ptr<IoQueue>> NewQueue(int fd, const QueueOptions& o) override {
    auto q = RealOs()->NewQueue(fd, o);
    if (!q.ok()) return q.status();
    return std::unique_ptr<IoQueue>(new FaultQueue(this, std::move(*q)));
  }

  // A short transfer's length: half, in 4 KiB units while that is possible.
  static uint32_t ShortLength(uint32_t n) {
    if (n >= 8192) return n / 2 / 4096 * 4096;
    return std::max<uint32_t>(1, n / 2);
  }

 private:
  std::mutex mu_;
  int writes_ = 0, reads_ = 0, pwrites_ = 0, buffered_writes_ = 0;
  int write_at_ = 0, read_at_ = 0, pwrite_at_ = 0, submit_at_ = 0, submit_errno_ = 0;
  std::vector<IoOp> refused_;
  bool write_every_ = false;
  Fault write_fault_ = Fault::kNone, read_fault_ = Fault::kNone, pwrite_fault_ = Fault::kNone;
  std::atomic<int> flush_errno_{0}, writeback_errno_{0};
  std::vector<Seen> seen_;
};

absl::Status FaultQueue::Submit(absl::Span<const IoOp> ops) {
  if (int err = os_->SubmitError(ops))
    return ErrnoError(err, "injected submission failure");
  std::vector<IoOp> pass;
  size_t added = 0;
  for (const IoOp& op : ops) {
    switch (os_->Decide(op)) {
      case Fault::kEio:
        made_up_.push_back(IoResult{op.tag, -EIO});
        ++added;
        break;
      case Fault::kZero:
        made_up_.push_back(IoResult{op.tag, 0});
        ++added;
        break;
      case Fault::kShort: {
        IoOp shorter = op;
        shorter.length = FaultOs::ShortLength(op.length);
        pass.push_back(shorter);
        break;
      }
      case Fault::kNone:
        pass.push_back(op);
        break;
    }
  }
  if (pass.empty()) return absl::OkStatus();
  absl::Status s = inner_->Submit(pass);
  if (!s.ok()) {
    // None of `ops` may be in flight after an error.
    for (size_t i = 0; i < added; ++i) made_up_.pop_back();
  }
  return s;
}

// ---------------------------------------------------------------------------

// The file offset that device byte `dev` holds, from the map's written
// extents; UINT64_MAX if none.
uint64_t DeviceToFile(const ExtentMap& m, uint64_t dev) {
  const uint64_t bs = m.block_size();
  for (size_t i = 0; i < m.extent_count(); ++i) {
    const Extent e = m.ExtentAt(i);
    const uint64_t start = m.geometry().device_offset + e.physical * bs;
    if (dev >= start && dev < start + uint64_t{e.length} * bs) return e.logical * bs + (dev - start);
  }
  return UINT64_MAX;
}

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

class FaultTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::kUring && !UringAvailable())
      GTEST_SKIP() << "io_uring is not available here";
    const std::string src = dir_ / "src";
    ASSERT_EQ(testing::Sh("mkdir -p " + testing::Quote(src)).exit_code, 0);
    testing::WriteIslands(src + "/c", 1, 4 * kMiB, 4 * kMiB, 21);
    testing::WriteIslands(src + "/f", 20, 3 * 4096 + 100, 8 * 4096, 22);
    image_ = dir_ / "fs.img";
    testing::MakeFs("ext4", {"-b", "4096"}, src, image_, "32M");
    model_c_ = testing::ReadFile(src + "/c");
    model_f_ = testing::ReadFile(src + "/f");
  }

  std::shared_ptr<File> Open(const std::string& path, uint64_t max_io = 64 * kKiB,
                             const std::string& image = "") {
    OpenOptions o;
    o.target.image = image.empty() ? image_ : image;
    o.target.path = path;
    o.write = true;
    o.backend = GetParam();
    o.max_io = max_io;
    o.os = &os_;
    auto f = File::Open(o);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *f : nullptr;
  }

  // The file's bytes, read through a separate, fault-free handle.
  std::string ReadBack(const std::string& path, uint64_t size, const std::string& image = "") {
    OpenOptions o;
    o.target.image = image.empty() ? image_ : image;
    o.target.path = path;
    auto f = File::Open(o);
    EXPECT_TRUE(f.ok()) << f.status();
    if (!f.ok()) return "";
    std::string out(size, '\0');
    auto r = (*f)->Pread(out.data(), size, 0);
    EXPECT_TRUE(r.ok()) << r.status();
    return out;
  }

  TempDir dir_;
  std::string image_;
  std::string model_c_, model_f_;
  FaultOs os_;
};

// Every device write of `ops` (as seen) is either all old or all new bytes
// in the file; `failed` (file range) is all old.
void ExpectOldOrNew(const std::string& got, const std::string& old_bytes, const std::string& new_bytes,
                    uint64_t off, uint64_t len, uint64_t failed_off, uint64_t failed_len) {
  ASSERT_EQ(new_bytes.size(), len);
  for (uint64_t b = off; b < off + len; b += 4096) {
    const uint64_t n = std::min<uint64_t>(4096, off + len - b);
    const std::string g = got.substr(b, n);
    const bool in_failed = b >= failed_off && b < failed_off + failed_len;
    if (in_failed) {
      EXPECT_TRUE(g == old_bytes.substr(b, n)) << "file block at " << b
                                               << " of the failed write changed";
    } else {
      EXPECT_TRUE(g == old_bytes.substr(b, n) || g == new_bytes.substr(b - off, n))
          << "file block at " << b << " is neither old nor new";
    }
  }
}

TEST_P(FaultTest, EioOnTheNthDeviceWrite) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  const uint64_t off = 256 * kKiB, len = kMiB;  // 16 device writes of 64 KiB
  const std::string data = RandomBytes(len, 1);
  const FileStats before = f->stats();
  os_.ClearSeen();
  os_.FailWrite(5, Fault::kEio);
  auto r = f->Pwrite(data.data(), len, off);
  ASSERT_FALSE(r.ok()) << "a failed device write reported success";
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
  auto bad = os_.faulted();
  ASSERT_EQ(bad.size(), 1u);
  const uint64_t bad_file = DeviceToFile(f->map(), bad[0].offset);
  EXPECT_THAT(Msg(r.status()), HasSubstr(absl::StrCat("file offset ", bad_file)));
  EXPECT_THAT(Msg(r.status()), HasSubstr("/c"));
  // Nothing counted as written.
  EXPECT_EQ(f->stats().fast_bytes, before.fast_bytes);
  os_.Disarm();
  ExpectOldOrNew(ReadBack("/c", model_c_.size()), model_c_, data, off, len, bad_file,
                 bad[0].length);
  // The same write again, without the fault: exact.
  r = f->Pwrite(data.data(), len, off);
  ASSERT_TRUE(r.ok()) << r.status();
  model_c_.replace(off, len, data);
  EXPECT_TRUE(ReadBack("/c", model_c_.size()) == model_c_);
}

TEST_P(FaultTest, ShortWriteIsResubmittedAndDataIsExact) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  const uint64_t off = 512 * kKiB, len = kMiB;
  const std::string data = RandomBytes(len, 2);
  os_.ClearSeen();
  os_.FailWrite(3, Fault::kShort);
  auto r = f->Pwrite(data.data(), len, off);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, len);
  model_c_.replace(off, len, data);
  // The remainder went out: 17 device writes for 16 pieces, and the one
  // after the short one starts where it stopped.
  const auto seen = os_.seen();
  const auto bad = os_.faulted();
  ASSERT_EQ(bad.size(), 1u);
  bool remainder = false;
  for (const Seen& s : seen) {
    if (s.kind == IoOp::kWrite && s.fault == Fault::kNone &&
        s.offset == bad[0].offset + FaultOs::ShortLength(bad[0].length) &&
        s.length == bad[0].length - FaultOs::ShortLength(bad[0].length))
      remainder = true;
  }
  EXPECT_TRUE(remainder) << "the rest of the short write was not resubmitted";
  EXPECT_EQ(std::count_if(seen.begin(), seen.end(), [](const Seen& s) { return s.kind == IoOp::kWrite; }),
            17);
  EXPECT_TRUE(ReadBack("/c", model_c_.size()) == model_c_);
  EXPECT_EQ(f->stats().fast_bytes, len);
}

TEST_P(FaultTest, EveryWriteShortStillCompletes) {
  auto f = Open("/c", kMiB);
  ASSERT_NE(f, nullptr);
  const uint64_t off = 0, len = 3 * kMiB + 4096;
  const std::string data = RandomBytes(len, 3);
  os_.FailWrite(1, Fault::kShort, /*every=*/true);
  auto r = f->Pwrite(data.data(), len, off);
  ASSERT_TRUE(r.ok()) << r.status();
  os_.Disarm();
  model_c_.replace(off, len, data);
  EXPECT_TRUE(ReadBack("/c", model_c_.size()) == model_c_);
}

TEST_P(FaultTest, ShortWriteInAReadModifyWrite) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  // 10 bytes inside a block: read the unit, write it back (write #1 short).
  const std::string data = RandomBytes(10, 4);
  os_.FailWrite(1, Fault::kShort);
  auto r = f->Pwrite(data.data(), 10, 4096 * 7 + 5);
  ASSERT_TRUE(r.ok()) << r.status();
  model_c_.replace(4096 * 7 + 5, 10, data);
  EXPECT_EQ(os_.faulted().size(), 1u);
  EXPECT_TRUE(ReadBack("/c", model_c_.size()) == model_c_);
  EXPECT_EQ(f->stats().rmw_bytes, 10u);
}

TEST_P(FaultTest, ZeroByteWriteIsAnError) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  const std::string data = RandomBytes(256 * kKiB, 5);
  os_.ClearSeen();
  os_.FailWrite(2, Fault::kZero);
  auto r = f->Pwrite(data.data(), data.size(), kMiB);
  ASSERT_FALSE(r.ok()) << "a write that transferred nothing reported success";
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
  auto bad = os_.faulted();
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_THAT(Msg(r.status()),
              HasSubstr(absl::StrCat("file offset ", DeviceToFile(f->map(), bad[0].offset))));
  EXPECT_EQ(f->stats().fast_bytes, 0u);
  // In a read-modify-write too.
  os_.FailWrite(1, Fault::kZero);
  r = f->Pwrite(data.data(), 3, 3 * 4096 + 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
  EXPECT_THAT(Msg(r.status()), HasSubstr("file offset 12288"));
  EXPECT_EQ(f->stats().rmw_bytes, 0u);
}

TEST_P(FaultTest, FailedFlushFailsSync) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(f->Sync().ok());
  for (int e : {EIO, ENOSPC}) {
    os_.set_flush_errno(e);
    absl::Status s = f->Sync();
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(CodeOf(s), -e) << s;
    EXPECT_THAT(Msg(s), HasSubstr("flush"));
  }
  os_.Disarm();
  EXPECT_TRUE(f->Sync().ok());
}

TEST_P(FaultTest, EioOnReads) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  std::string buf(kMiB, '\0');
  // Aligned: 16 device reads, the 2nd fails.
  os_.ClearSeen();
  os_.FailRead(2, Fault::kEio);
  auto r = f->Pread(buf.data(), kMiB, 2 * kMiB);
  ASSERT_FALSE(r.ok()) << "a failed read reported success";
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
  auto bad = os_.faulted();
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_THAT(Msg(r.status()),
              HasSubstr(absl::StrCat("file offset ", DeviceToFile(f->map(), bad[0].offset))));
  // Unaligned (bounced).
  os_.ClearSeen();
  os_.FailRead(1, Fault::kEio);
  r = f->Pread(buf.data() + 1, 5000, 3 * 4096 + 7);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
  EXPECT_THAT(Msg(r.status()), HasSubstr("file offset 12288"));
  // The read half of a read-modify-write: nothing is written.
  const int writes = os_.writes();
  os_.FailRead(1, Fault::kEio);
  r = f->Pwrite("abc", 3, 5 * 4096 + 9);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
  EXPECT_THAT(Msg(r.status()), HasSubstr("file offset 20480"));
  EXPECT_EQ(os_.writes(), writes) << "a unit whose read failed was written";
  os_.Disarm();
  EXPECT_TRUE(ReadBack("/c", model_c_.size()) == model_c_);
  // Short and 0-byte reads: short ones are completed, 0-byte ones fail.
  os_.FailRead(3, Fault::kShort);
  r = f->Pread(buf.data(), kMiB, kMiB);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, kMiB);
  EXPECT_TRUE(buf == model_c_.substr(kMiB, kMiB));
  os_.FailRead(1, Fault::kZero);
  r = f->Pread(buf.data(), 4096, 0);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
}

// A queue that refuses a submission is a failed device request too: the
// caller must learn which file range was not written.
TEST_P(FaultTest, RefusedSubmissionNamesTheFileRange) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  const uint64_t off = 0, len = 512 * kKiB;
  const std::string data = RandomBytes(len, 6);
  os_.FailSubmit(1, EAGAIN);
  auto r = f->Pwrite(data.data(), len, off);
  ASSERT_FALSE(r.ok()) << "a refused submission reported success";
  EXPECT_EQ(CodeOf(r.status()), -EAGAIN) << r.status();
  ASSERT_EQ(os_.refused().size(), 1u);
  // REGRESSION (fixed): lib/file.cc:313 RunOps (`if (absl::Status s = q.Submit(batch);
  // ...) first_error = s;`) passes the queue's bare error up
  // ("injected submission failure: ..." / "io_uring_submit: ...") without
  // the file name or the file offset of the requests that were not
  // written, unlike every other device failure (contract 7: "a failed or
  // short device request reaches the caller with its file offset"). Fix:
  // Prefixed(name_ + ": write of N bytes at file offset X", s) for the
  // first op of the refused batch.
  EXPECT_THAT(Msg(r.status()), HasSubstr("/c"));
  EXPECT_THAT(Msg(r.status()),
              HasSubstr(absl::StrCat("file offset ", DeviceToFile(f->map(), os_.refused()[0].offset))));
  os_.Disarm();
  EXPECT_TRUE(ReadBack("/c", model_c_.size()) == model_c_) << "bytes of a refused submission written";
  // Async: the completion carries it.
  auto q = f->NewAsyncQueue(4);
  ASSERT_TRUE(q.ok());
  os_.FailSubmit(1, EAGAIN);
  ASSERT_TRUE((*q)->Submit(AsyncRequest{true, const_cast<char*>(data.data()), 64 * kKiB, 3 * kMiB, 3}).ok());
  AsyncCompletion c[2];
  auto n = (*q)->Reap(absl::MakeSpan(c), 1);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(c[0].result, -EAGAIN);
  EXPECT_EQ(c[0].error_offset, 3 * kMiB);
  EXPECT_EQ(c[0].error_length, 64 * kKiB);
}

// ---------------------------------------------------------------------------
// Async queues: the completion carries the failure and where it was.

struct Done {
  std::vector<AsyncCompletion> c;
};

Done ReapAll(AsyncQueue& q, size_t n) {
  Done d;
  d.c.resize(n + 1);
  size_t got = 0;
  while (q.outstanding() > 0) {
    auto r = q.Reap(absl::MakeSpan(d.c).subspan(got), 1);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    got += *r;
  }
  d.c.resize(got);
  return d;
}

TEST_P(FaultTest, AsyncEioCarriesTheFailedPiece) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  auto q = f->NewAsyncQueue(8);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<std::string> data;
  for (int i = 0; i < 4; ++i) data.push_back(RandomBytes(256 * kKiB, 10 + i));
  os_.ClearSeen();
  os_.FailWrite(6, Fault::kEio);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE((*q)->Submit(AsyncRequest{true, data[i].data(), data[i].size(),
                                          static_cast<uint64_t>(i) * 256 * kKiB, uint64_t(i)})
                    .ok());
  }
  Done d = ReapAll(**q, 4);
  ASSERT_EQ(d.c.size(), 4u);
  auto bad = os_.faulted();
  ASSERT_EQ(bad.size(), 1u);
  const uint64_t bad_file = DeviceToFile(f->map(), bad[0].offset);
  int failed = 0;
  for (const AsyncCompletion& c : d.c) {
    const uint64_t start = c.cookie * 256 * kKiB;
    if (bad_file >= start && bad_file < start + 256 * kKiB) {
      ++failed;
      EXPECT_EQ(c.result, -EIO);
      EXPECT_EQ(c.error_offset, bad_file);
      EXPECT_EQ(c.error_length, bad[0].length);
    } else {
      EXPECT_EQ(c.result, static_cast<int64_t>(256 * kKiB)) << "cookie " << c.cookie;
      model_c_.replace(start, 256 * kKiB, data[c.cookie]);
    }
  }
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(f->stats().fast_bytes, 3 * 256 * kKiB) << "bytes of the failed request counted";
  os_.Disarm();
  const std::string got = ReadBack("/c", model_c_.size());
  EXPECT_TRUE(got.substr(bad_file, bad[0].length) == model_c_.substr(bad_file, bad[0].length))
      << "the failed piece was written";
}

TEST_P(FaultTest, AsyncShortAndZeroWrites) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  auto q = f->NewAsyncQueue(4);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<std::string> data;
  for (int i = 0; i < 6; ++i) data.push_back(RandomBytes(128 * kKiB + 4096 * i, 20 + i));
  os_.FailWrite(2, Fault::kShort);
  uint64_t off = 0;
  std::vector<uint64_t> offs;
  for (int i = 0; i < 6; ++i) {
    offs.push_back(off);
    ASSERT_TRUE((*q)->Submit(AsyncRequest{true, data[i].data(), data[i].size(), off, uint64_t(i)}).ok());
    off += data[i].size();
  }
  Done d = ReapAll(**q, 6);
  ASSERT_EQ(d.c.size(), 6u);
  for (const AsyncCompletion& c : d.c) {
    EXPECT_EQ(c.result, static_cast<int64_t>(data[c.cookie].size())) << "cookie " << c.cookie;
    model_c_.replace(offs[c.cookie], data[c.cookie].size(), data[c.cookie]);
  }
  EXPECT_EQ(os_.faulted().size(), 1u);
  EXPECT_TRUE(ReadBack("/c", model_c_.size()) == model_c_);
  // 0 bytes: an error, with where.
  os_.ClearSeen();
  os_.FailWrite(1, Fault::kZero);
  ASSERT_TRUE((*q)->Submit(AsyncRequest{true, data[0].data(), 64 * kKiB, 2 * kMiB, 7}).ok());
  d = ReapAll(**q, 1);
  ASSERT_EQ(d.c.size(), 1u);
  EXPECT_EQ(d.c[0].result, -EIO);
  EXPECT_EQ(d.c[0].error_offset, 2 * kMiB);
  EXPECT_EQ(d.c[0].error_length, 64 * kKiB);
}

TEST_P(FaultTest, AsyncReadEio) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  auto q = f->NewAsyncQueue(8);
  ASSERT_TRUE(q.ok()) << q.status();
  std::string a(256 * kKiB, '\0'), b(5000, '\0');
  os_.ClearSeen();
  os_.FailRead(3, Fault::kEio);
  ASSERT_TRUE((*q)->Submit(AsyncRequest{false, a.data(), a.size(), kMiB, 1}).ok());
  ASSERT_TRUE((*q)->Submit(AsyncRequest{false, b.data() , 4000, 3 * kMiB + 7, 2}).ok());
  Done d = ReapAll(**q, 2);
  ASSERT_EQ(d.c.size(), 2u);
  auto bad = os_.faulted();
  ASSERT_EQ(bad.size(), 1u);
  const uint64_t bad_file = DeviceToFile(f->map(), bad[0].offset);
  for (const AsyncCompletion& c : d.c) {
    if (c.cookie == 1) {
      EXPECT_EQ(c.result, -EIO);
      EXPECT_EQ(c.error_offset, bad_file);
      EXPECT_EQ(c.error_length, bad[0].length);
    } else {
      EXPECT_EQ(c.result, 4000);
      EXPECT_TRUE(b.substr(0, 4000) == model_c_.substr(3 * kMiB + 7, 4000));
    }
  }
}

// A request with unaligned pieces runs inside Submit (blocking); a failure
// there must complete it with an error naming the failed piece.
TEST_P(FaultTest, AsyncBlockingPathFailure) {
  auto f = Open("/c");
  ASSERT_NE(f, nullptr);
  auto q = f->NewAsyncQueue(4);
  ASSERT_TRUE(q.ok()) << q.status();
  // 100 bytes + 512 KiB aligned + 100 bytes: direct pieces, then two RMWs.
  const uint64_t off = kMiB - 100, len = 512 * kKiB + 200;
  const std::string data = RandomBytes(len, 30);
  os_.ClearSeen();
  // The direct pieces are writes 1..8 (64 KiB each); #9 is the first RMW's.
  os_.FailWrite(9, Fault::kEio);
  ASSERT_TRUE((*q)->Submit(AsyncRequest{true, const_cast<char*>(data.data()), len, off, 5}).ok());
  Done d = ReapAll(**q, 1);
  ASSERT_EQ(d.c.size(), 1u);
  EXPECT_EQ(d.c[0].result, -EIO);
  auto bad = os_.faulted();
  ASSERT_EQ(bad.size(), 1u);
  const uint64_t bad_unit = DeviceToFile(f->map(), bad[0].offset);
  ASSERT_EQ(bad_unit, kMiB - 4096);
  // The failed piece: the 100 bytes at `off`, written as the unit at
  // 1 MiB - 4 KiB. The completion must name that (the piece or its unit),
  // not the whole request.
  // REGRESSION (fixed): lib/async_queue.cc:178-183 (blocking path of
  // AsyncQueue::Submit) sets error_offset = req.offset and error_length =
  // req.length for any failure, i.e. the whole request, not the failed
  // piece; the C API documents "file offset and length that failed", and
  // the fast path does report the failed op. Fix: carry the failed file
  // range out of RunOps/WriteUnaligned (e.g. a status payload or an
  // out-parameter) and use it here.
  EXPECT_GE(d.c[0].error_offset, bad_unit);
  EXPECT_LE(d.c[0].error_offset + d.c[0].error_length, bad_unit + 4096)
      << "error range " << d.c[0].error_offset << "+" << d.c[0].error_length
      << " is not the failed piece";
  EXPECT_GT(d.c[0].error_length, 0u);
  // At least: inside the request and covering the failed piece.
  EXPECT_LE(d.c[0].error_offset, off);
  EXPECT_GE(d.c[0].error_offset + d.c[0].error_length, off + 100);
}

// ---------------------------------------------------------------------------
// The buffered path (1 KiB blocks on tmpfs: a piece whose 4 KiB unit holds
// another file's blocks is written through the page cache).

class BufferedFaultTest : public FaultTest {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::kUring && !UringAvailable())
      GTEST_SKIP() << "io_uring is not available here";
    const std::string src = dir_ / "src1k";
    ASSERT_EQ(testing::Sh("mkdir -p " + testing::Quote(src)).exit_code, 0);
    testing::WriteIslands(src + "/g", 30, 1024 + 500, 5 * 1024, 41);
    image1k_ = dir_ / "fs1k.img";
    testing::MakeFs("ext4", {"-b", "1024"}, src, image1k_, "16M");
    model_g_ = testing::ReadFile(src + "/g");
  }

  // A file offset whose 1-byte write is a kBuffered piece.
  uint64_t BufferedOffset(const File& f) {
    for (uint64_t off = 0; off < f.size(); off += 512) {
      auto plan = f.PlanWrite(off, 1);
      if (plan.ok() && plan->size() == 1 && (*plan)[0].kind == Piece::kBuffered) return off;
    }
    return UINT64_MAX;
  }

  std::string image1k_, model_g_;
};

TEST_P(BufferedFaultTest, FailedShortAndZeroBufferedWrites) {
  auto f = Open("/g", 64 * kKiB, image1k_);
  ASSERT_NE(f, nullptr);
  const uint64_t off = BufferedOffset(*f);
  ASSERT_NE(off, UINT64_MAX) << "no buffered piece in this layout";
  const std::string data = RandomBytes(600, 40);
  ASSERT_LE(off + 600, f->WritableUntil(off, 600));
  // EIO.
  os_.FailPwrite(1, Fault::kEio);
  auto r = f->Pwrite(data.data(), 600, off);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
  EXPECT_THAT(Msg(r.status()), HasSubstr(absl::StrCat("file offset ", off)));
  EXPECT_EQ(f->stats().buffered_bytes, 0u);
  EXPECT_TRUE(ReadBack("/g", model_g_.size(), image1k_) == model_g_);
  // 0 bytes.
  os_.FailPwrite(1, Fault::kZero);
  r = f->Pwrite(data.data(), 600, off);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
  EXPECT_THAT(Msg(r.status()), HasSubstr(absl::StrCat("file offset ", off)));
  // Short: completed.
  os_.FailPwrite(1, Fault::kShort);
  r = f->Pwrite(data.data(), 600, off);
  ASSERT_TRUE(r.ok()) << r.status();
  model_g_.replace(off, 600, data);
  EXPECT_TRUE(ReadBack("/g", model_g_.size(), image1k_) == model_g_);
  EXPECT_EQ(f->stats().buffered_bytes, 600u);
  // A failed write-back is an error too.
  os_.set_writeback_errno(EIO);
  r = f->Pwrite(data.data(), 10, off);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(CodeOf(r.status()), -EIO) << r.status();
  EXPECT_THAT(Msg(r.status()), HasSubstr(absl::StrCat("file offset ", off)));
  os_.Disarm();
}

std::string BackendName(const ::testing::TestParamInfo<BackendKind>& info) {
  return info.param == BackendKind::kUring ? "io_uring" : "psync";
}
INSTANTIATE_TEST_SUITE_P(Backends, FaultTest,
                         ::testing::Values(BackendKind::kUring, BackendKind::kSync), BackendName);
INSTANTIATE_TEST_SUITE_P(Backends, BufferedFaultTest,
                         ::testing::Values(BackendKind::kUring, BackendKind::kSync), BackendName);

}  // namespace
}  // namespace ext4dio
