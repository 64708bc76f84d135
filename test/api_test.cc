// The C++ API contract: one code <-> status mapping (the library's statuses,
// lib/errors.h, and the wrapper's, ext4dio.hpp, agree on the absl code of
// every C API code, and every code survives C -> Status -> C on both sides
// and across them), and the wrapper at parity with the C options.
#include <poll.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "errors.h"
#include "ext4dio/ext4dio.h"
#include "ext4dio/ext4dio.hpp"
#include "testutil.h"

namespace ext4dio {
namespace {

// Every errno (the library passes through whatever a syscall or libext2fs
// returns) and every EXT4DIO_E_* code, negated as the C API returns them.
std::vector<int> AllCodes() {
  std::vector<int> codes;
  for (int e = 1; e <= 133; ++e) codes.push_back(-e);  // EHWPOISON is 133
  for (int c : {EXT4DIO_E_NOT_EXT4, EXT4DIO_E_CORRUPT_FS, EXT4DIO_E_TRUNCATED,
                EXT4DIO_E_CORRUPT_MAP, EXT4DIO_E_UNSUPPORTED_FILE, EXT4DIO_E_UNSUPPORTED_FS,
                EXT4DIO_E_MAP_MISMATCH, EXT4DIO_E_NOT_IN_USE, EXT4DIO_E_NEEDS_ALLOCATION,
                EXT4DIO_E_IN_USE, EXT4DIO_E_WRITE_REFUSED, EXT4DIO_E_INTERNAL})
    codes.push_back(-c);
  return codes;
}

// What the library makes for `code`: ErrnoError for errnos, LibError else.
absl::Status LibraryStatus(int code) {
  return -code < EXT4DIO_E_NOT_EXT4 ? ErrnoError(-code, "ctx")
                                    : LibError(static_cast<ext4dio_error>(-code), "msg");
}

TEST(StatusContract, LibraryAndWrapperAgreeOnEveryCode) {
  for (int code : AllCodes()) {
    SCOPED_TRACE(absl::StrCat("code ", code, " (", ext4dio_strerror(code), ")"));
    const absl::Status lib = LibraryStatus(code);
    const absl::Status wrap = StatusFromCode(code, "msg");
    ASSERT_FALSE(lib.ok());
    ASSERT_FALSE(wrap.ok());
    EXPECT_EQ(lib.code(), wrap.code()) << lib << " vs " << wrap;
  }
}

TEST(StatusContract, EveryCodeRoundTrips) {
  for (int code : AllCodes()) {
    SCOPED_TRACE(absl::StrCat("code ", code, " (", ext4dio_strerror(code), ")"));
    const absl::Status lib = LibraryStatus(code);
    const absl::Status wrap = StatusFromCode(code, "msg");
    EXPECT_EQ(CodeOf(lib), code);          // library -> C
    EXPECT_EQ(CodeOfStatus(wrap), code);   // C -> wrapper -> C
    EXPECT_EQ(CodeOfStatus(lib), code);    // library status read by the wrapper
    EXPECT_EQ(CodeOf(wrap), code);         // wrapper status read by the library
    EXPECT_EQ(CodeOf(Prefixed("p: ", lib)), code);
  }
}

TEST(StatusContract, TheCodeIsATypedPayload) {
  for (int code : AllCodes()) {
    SCOPED_TRACE(code);
    const absl::optional<absl::Cord> p = LibraryStatus(code).GetPayload(kCodePayloadUrl);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->size(), 4u);  // an int32, little-endian, not decimal text
    EXPECT_EQ(CodeFromPayload(LibraryStatus(code)), code);
  }
  // A malformed payload is not a code: the absl code decides.
  absl::Status s = absl::NotFoundError("x");
  s.SetPayload(kCodePayloadUrl, absl::Cord("-5"));
  EXPECT_FALSE(CodeFromPayload(s).has_value());
  EXPECT_EQ(CodeOf(s), -ENOENT);
  EXPECT_EQ(CodeOfStatus(s), -ENOENT);
}

TEST(StatusContract, AStatusWithoutACodeMapsBackToItsOwnAbslCode) {
  for (int c = 1; c <= 16; ++c) {  // kCancelled .. kUnauthenticated
    const absl::Status s(static_cast<absl::StatusCode>(c), "plain");
    SCOPED_TRACE(s.ToString());
    const int code = CodeOf(s);
    EXPECT_LT(code, 0);
    EXPECT_EQ(code, CodeOfStatus(s));
    // kUnknown, kFailedPrecondition, kAborted and kUnauthenticated have no
    // errno of their own: EXT4DIO_E_INTERNAL.
    if (s.code() != absl::StatusCode::kUnknown &&
        s.code() != absl::StatusCode::kFailedPrecondition &&
        s.code() != absl::StatusCode::kAborted &&
        s.code() != absl::StatusCode::kUnauthenticated) {
      EXPECT_EQ(StatusCodeFor(code), s.code());
    }
  }
  EXPECT_EQ(CodeOf(absl::OkStatus()), 0);
  EXPECT_EQ(CodeOfStatus(absl::OkStatus()), 0);
}

// errno 0 (a call that did not set it) is still an error.
TEST(StatusContract, ErrnoZeroIsNotOk) {
  const absl::Status s = ErrnoError(0, "ctx");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(CodeOf(s), -EXT4DIO_E_INTERNAL);
}

// Through the real C API and the wrapper: the code the C call returned is
// the one the wrapper's status carries.
TEST(StatusContract, CApiCodeThroughTheWrapper) {
  ext4dio_target t;
  ext4dio_target_init(&t);
  t.image = "/nonexistent/ext4dio-status-test.img";
  t.path = "/f";
  ext4dio_map* m = nullptr;
  const int rc = ext4dio_map_load(&t, &m);
  ASSERT_EQ(rc, -ENOENT);
  const absl::Status s = LastStatus(rc);
  EXPECT_EQ(CodeOfStatus(s), rc);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;

  auto loaded = FileMap::Load(Location::InImage(t.image, "/f"));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(CodeOfStatus(loaded.status()), -ENOENT);
  EXPECT_EQ(loaded.status().code(), LibraryStatus(-ENOENT).code());
}

// ---- The wrapper at parity with the C options -------------------------

// Every EXT4DIO_OPEN_* flag has its DirectFileOptions field, and each field
// sets exactly its flag.
TEST(WrapperParity, EveryOpenFlagHasAField) {
  const struct {
    uint32_t flag;
    bool DirectFileOptions::*field;
  } kFlags[] = {
      {EXT4DIO_OPEN_WRITE, &DirectFileOptions::write},
      {EXT4DIO_OPEN_DSYNC, &DirectFileOptions::dsync},
      {EXT4DIO_OPEN_SQPOLL, &DirectFileOptions::sqpoll},
      {EXT4DIO_OPEN_NO_FALLBACK, &DirectFileOptions::no_fallback},
      {EXT4DIO_OPEN_REAP_PROMPTLY, &DirectFileOptions::reap_promptly},
      {EXT4DIO_OPEN_SKIP_OWNERSHIP_CHECK, &DirectFileOptions::skip_ownership_check},
  };
  uint32_t all = 0;
  for (const auto& [flag, field] : kFlags) {
    DirectFileOptions o;
    o.*field = true;
    EXPECT_EQ(o.ToC().flags, flag);
    all |= flag;
  }
  // Every flag ext4dio.h defines is covered above: read from the header
  // itself, so a new EXT4DIO_OPEN_* without a wrapper field fails here.
  const char* src = std::getenv("EXT4DIO_SOURCE_DIR");
  ASSERT_NE(src, nullptr) << "EXT4DIO_SOURCE_DIR (set by meson test)";
  const std::string header = testing::ReadFile(std::string(src) + "/lib/include/ext4dio/ext4dio.h");
  const std::regex define(R"(#define (EXT4DIO_OPEN_\w+) +(0x[0-9a-fA-F]+)u?)");
  uint32_t declared = 0;
  int n = 0;
  for (auto it = std::sregex_iterator(header.begin(), header.end(), define);
       it != std::sregex_iterator(); ++it, ++n) {
    declared |= static_cast<uint32_t>(std::stoul((*it)[2].str(), nullptr, 16));
  }
  EXPECT_EQ(n, static_cast<int>(std::size(kFlags))) << "EXT4DIO_OPEN_* flags in ext4dio.h";
  EXPECT_EQ(all, declared);
  EXPECT_EQ(DirectFileOptions{}.ToC().flags, 0u);
}

TEST(WrapperParity, OtherOpenOptionsPassThrough) {
  DirectFileOptions o;
  o.queue_depth = 7;
  o.backend = EXT4DIO_BACKEND_SYNC;
  o.max_io = 1 << 20;
  const ext4dio_open_opts c = o.ToC();
  EXPECT_EQ(c.struct_size, sizeof c);
  EXPECT_EQ(c.queue_depth, 7u);
  EXPECT_EQ(c.backend, static_cast<uint32_t>(EXT4DIO_BACKEND_SYNC));
  EXPECT_EQ(c.max_io, uint64_t{1} << 20);
}

// dir/fs.img: a 16 MiB ext4 (4 KiB blocks) holding /f, 64 KiB of 'x'.
void MakeImageWithFile(const testing::TempDir& dir) {
  ASSERT_EQ(mkdir((dir / "src").c_str(), 0755), 0);
  testing::WriteFile(dir / "src/f", std::string(64 * 1024, 'x'));
  testing::MakeFs("ext4", {"-b", "4096"}, dir / "src", dir / "fs.img", "16M");
}

// End to end in an image: REAP_PROMPTLY is accepted through the wrapper,
// and the file's map is reachable from it.
TEST(WrapperParity, OpensWithEveryImageFlag) {
  testing::TempDir dir;
  ASSERT_NO_FATAL_FAILURE(MakeImageWithFile(dir));
  DirectFileOptions o;
  o.write = true;
  o.dsync = true;
  o.reap_promptly = true;
  o.skip_ownership_check = true;
  auto f = DirectFile::Open(Location::InImage(dir / "fs.img", "/f"), o);
  ASSERT_TRUE(f.ok()) << f.status();
  auto m = f->MapSnapshot();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->size(), 64u * 1024);
  f->Close();
  EXPECT_EQ(m->size(), 64u * 1024);  // the snapshot outlives the file
}

// RequestQueue::EventFd: readable once a submitted write completed, and the
// completion is then reaped without waiting.
TEST(WrapperParity, QueueEventFdWakesAPollLoop) {
  testing::TempDir dir;
  ASSERT_NO_FATAL_FAILURE(MakeImageWithFile(dir));
  DirectFileOptions o;
  o.write = true;
  auto f = DirectFile::Open(Location::InImage(dir / "fs.img", "/f"), o);
  ASSERT_TRUE(f.ok()) << f.status();
  auto q = RequestQueue::Open(*f, 4);
  ASSERT_TRUE(q.ok()) << q.status();
  auto efd = q->EventFd();
  ASSERT_TRUE(efd.ok()) << efd.status();
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, 4096), 0);
  std::memset(buf, 'y', 4096);
  ASSERT_TRUE(q->Submit({EXT4DIO_OP_WRITE, buf, 4096, 8192, 42}).ok());
  pollfd p = {*efd, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 30000), 1);  // a generous bound, not a timing check
  ext4dio_completion c[2];
  auto n = q->Reap(c, 2, 0);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(*n, 1u);
  EXPECT_EQ(c[0].cookie, 42u);
  EXPECT_EQ(c[0].result, 4096);
  free(buf);
}

}  // namespace
}  // namespace ext4dio
