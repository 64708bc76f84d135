// ext4dio_file_info.fast_path_reason: the machine-readable code beside the
// warning's text, for each reason a test can bring about on a loop-mounted
// ext4 (root only: mounted_main exits 77 saying why otherwise); and a
// mounted-mode queue's eventfd (the kernel path and the blocking path
// signal it too).
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "ext4dio/ext4dio.h"
#include "testutil.h"

namespace ext4dio {
namespace {

using testing::LoopMount;
using testing::Quote;
using testing::Sh;

struct Opened {
  ext4dio_file* f = nullptr;
  int rc = 0;
  ~Opened() { ext4dio_close(f); }
};

void OpenMounted(const std::string& path, bool write, Opened* out) {
  ext4dio_target t;
  ext4dio_target_init(&t);
  t.path = path.c_str();
  ext4dio_open_opts o;
  ext4dio_open_opts_init(&o);
  o.flags = write ? EXT4DIO_OPEN_WRITE : 0;
  out->rc = ext4dio_open(&t, &o, &out->f);
}

ext4dio_file_info Info(const ext4dio_file* f) {
  ext4dio_file_info info;
  ext4dio_file_info_init(&info);
  EXPECT_EQ(ext4dio_file_get_info(f, &info), 0);
  return info;
}

// The file's reason once it is not `from` (the monitor acts on its own
// thread); gives up after 30 s, a bound for a hung run, not a timing check.
uint32_t ReasonOnceNot(const ext4dio_file* f, uint32_t from) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  uint32_t r = Info(f).fast_path_reason;
  while (r == from && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    r = Info(f).fast_path_reason;
  }
  return r;
}

void WriteSynced(const std::string& path, size_t bytes) {
  testing::WriteFile(path, std::string(bytes, 'a'));
  ASSERT_EQ(Sh("sync " + Quote(path)).exit_code, 0);
}

class FastPathReasonTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(mount_.ok()) << mount_.error(); }
  LoopMount mount_{{"-b", "4096"}, "64M"};
};

TEST_F(FastPathReasonTest, NamesAreStable) {
  EXPECT_STREQ(ext4dio_fast_path_reason_name(EXT4DIO_FAST_PATH_NONE), "none");
  EXPECT_STREQ(ext4dio_fast_path_reason_name(EXT4DIO_FAST_PATH_LEASE_BROKEN), "lease-broken");
  EXPECT_STREQ(ext4dio_fast_path_reason_name(EXT4DIO_FAST_PATH_RESTART_REFUSED),
               "restart-refused");
  EXPECT_STREQ(ext4dio_fast_path_reason_name(999), "unknown");
  for (uint32_t r = EXT4DIO_FAST_PATH_NONE; r <= EXT4DIO_FAST_PATH_RESTART_REFUSED; ++r)
    EXPECT_STRNE(ext4dio_fast_path_reason_name(r), "unknown") << r;
}

TEST_F(FastPathReasonTest, OnIsNoneAndAnOlderStructStopsBeforeTheField) {
  const std::string path = mount_ / "on";
  WriteSynced(path, 64 * 1024);
  Opened o;
  OpenMounted(path, true, &o);
  ASSERT_EQ(o.rc, 0) << ext4dio_last_error();
  const ext4dio_file_info info = Info(o.f);
  EXPECT_EQ(info.fast_path, 1) << (info.warning ? info.warning : "");
  EXPECT_EQ(info.fast_path_reason, uint32_t{EXT4DIO_FAST_PATH_NONE});
  // The struct_size contract: nothing is written past what the caller
  // says it has (here: up to the field).
  ext4dio_file_info old;
  std::memset(&old, 0xAB, sizeof old);
  old.struct_size = offsetof(ext4dio_file_info, fast_path_reason);
  ASSERT_EQ(ext4dio_file_get_info(o.f, &old), 0);
  EXPECT_EQ(old.fast_path_reason, 0xABABABABu);
}

// Open elsewhere when opened here: LEASE_UNAVAILABLE; closed there, the
// monitor retakes the lease (NONE).
TEST_F(FastPathReasonTest, LeaseUnavailableThenRetaken) {
  const std::string path = mount_ / "busy";
  WriteSynced(path, 64 * 1024);
  const int other = open(path.c_str(), O_RDONLY);
  ASSERT_GE(other, 0);
  Opened o;
  OpenMounted(path, true, &o);
  ASSERT_EQ(o.rc, 0) << ext4dio_last_error();
  ext4dio_file_info info = Info(o.f);
  EXPECT_EQ(info.fast_path, 0);
  EXPECT_EQ(info.fast_path_reason, uint32_t{EXT4DIO_FAST_PATH_LEASE_UNAVAILABLE})
      << (info.warning ? info.warning : "");
  close(other);
  EXPECT_EQ(ReasonOnceNot(o.f, EXT4DIO_FAST_PATH_LEASE_UNAVAILABLE),
            uint32_t{EXT4DIO_FAST_PATH_NONE});
}

// Another open while the fast path is on: the lease is given up
// (LEASE_BROKEN) while that descriptor stays open.
TEST_F(FastPathReasonTest, LeaseBroken) {
  const std::string path = mount_ / "broken";
  WriteSynced(path, 64 * 1024);
  Opened o;
  OpenMounted(path, true, &o);
  ASSERT_EQ(o.rc, 0) << ext4dio_last_error();
  ASSERT_EQ(Info(o.f).fast_path, 1);
  const int other = open(path.c_str(), O_RDONLY);  // waits for the lease's release
  ASSERT_GE(other, 0);
  EXPECT_EQ(ReasonOnceNot(o.f, EXT4DIO_FAST_PATH_NONE), uint32_t{EXT4DIO_FAST_PATH_LEASE_BROKEN});
  EXPECT_EQ(Info(o.f).fast_path, 0);
  close(other);
}

// While the lease is away the file becomes immutable: retaking it is
// refused (RESTART_REFUSED), not retried as a busy file.
TEST_F(FastPathReasonTest, RestartRefused) {
  const std::string path = mount_ / "immutable";
  WriteSynced(path, 64 * 1024);
  Opened o;
  OpenMounted(path, true, &o);
  ASSERT_EQ(o.rc, 0) << ext4dio_last_error();
  ASSERT_EQ(Info(o.f).fast_path, 1);
  const int other = open(path.c_str(), O_RDONLY);  // breaks the lease
  ASSERT_GE(other, 0);
  ASSERT_EQ(ReasonOnceNot(o.f, EXT4DIO_FAST_PATH_NONE), uint32_t{EXT4DIO_FAST_PATH_LEASE_BROKEN});
  ASSERT_EQ(Sh("chattr +i " + Quote(path)).exit_code, 0);
  testing::Defer undo([&] { Sh("chattr -i " + Quote(path)); });
  close(other);
  EXPECT_EQ(ReasonOnceNot(o.f, EXT4DIO_FAST_PATH_LEASE_BROKEN),
            uint32_t{EXT4DIO_FAST_PATH_RESTART_REFUSED})
      << Info(o.f).warning;
  EXPECT_EQ(Info(o.f).fast_path, 0);
}

TEST_F(FastPathReasonTest, AppendOnly) {
  const std::string path = mount_ / "append";
  WriteSynced(path, 64 * 1024);
  ASSERT_EQ(Sh("chattr +a " + Quote(path)).exit_code, 0);
  testing::Defer undo([&] { Sh("chattr -a " + Quote(path)); });
  Opened o;
  OpenMounted(path, true, &o);
  ASSERT_EQ(o.rc, 0) << ext4dio_last_error();
  EXPECT_EQ(Info(o.f).fast_path, 0);
  EXPECT_EQ(Info(o.f).fast_path_reason, uint32_t{EXT4DIO_FAST_PATH_APPEND_ONLY});
}

// Not root: the device cannot be opened (root:disk 0660).
TEST_F(FastPathReasonTest, NoPrivilege) {
  const std::string path = mount_ / "nobody";
  WriteSynced(path, 64 * 1024);
  ASSERT_EQ(chmod(path.c_str(), 0666), 0);
  ASSERT_EQ(chmod(mount_.mount_point().c_str(), 0755), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Exit codes: 0 as expected; 10+ which check failed.
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) _exit(10);
    ext4dio_target t;
    ext4dio_target_init(&t);
    t.path = path.c_str();
    ext4dio_open_opts opts;
    ext4dio_open_opts_init(&opts);
    ext4dio_file* f = nullptr;
    if (ext4dio_open(&t, &opts, &f) != 0) _exit(11);
    ext4dio_file_info info;
    ext4dio_file_info_init(&info);
    if (ext4dio_file_get_info(f, &info) != 0) _exit(12);
    if (info.fast_path != 0) _exit(13);
    if (info.fast_path_reason != EXT4DIO_FAST_PATH_NO_PRIVILEGE) _exit(20 + info.fast_path_reason);
    ext4dio_close(f);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: setuid, 11: open, 12: info, 13: fast path on, "
                                       "20+N: reason N";
}

// EXT4_IOC_SHUTDOWN while a writer is on the fast path: FS_STOPPED.
TEST_F(FastPathReasonTest, FilesystemStopped) {
  const std::string path = mount_ / "shutdown";
  WriteSynced(path, 64 * 1024);
  Opened o;
  OpenMounted(path, true, &o);
  ASSERT_EQ(o.rc, 0) << ext4dio_last_error();
  ASSERT_EQ(Info(o.f).fast_path, 1);
  const int dir = open(mount_.mount_point().c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 0);
  uint32_t how = 2;  // EXT4_GOING_FLAGS_NOLOGFLUSH
  ASSERT_EQ(ioctl(dir, _IOR('X', 125, uint32_t), &how), 0) << strerror(errno);
  close(dir);
  EXPECT_EQ(ReasonOnceNot(o.f, EXT4DIO_FAST_PATH_NONE), uint32_t{EXT4DIO_FAST_PATH_FS_STOPPED})
      << Info(o.f).warning;
}

// A mounted queue's eventfd: a fast-path overwrite, a kernel-path write
// into a hole (on the ring, on the file) and an append past EOF (the
// blocking path) each make it readable; reaped with min 0 afterwards.
TEST_F(FastPathReasonTest, MountedQueueEventFd) {
  const std::string path = mount_ / "queue";
  WriteSynced(path, 64 * 1024);
  ASSERT_EQ(truncate(path.c_str(), 256 * 1024), 0);  // a hole after 64 KiB
  Opened o;
  OpenMounted(path, true, &o);
  ASSERT_EQ(o.rc, 0) << ext4dio_last_error();
  ext4dio_queue* q = nullptr;
  ASSERT_EQ(ext4dio_queue_open(o.f, 4, &q), 0) << ext4dio_last_error();
  const int efd = ext4dio_queue_event_fd(q);
  ASSERT_GE(efd, 0) << ext4dio_last_error();
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, 8192), 0);
  std::memset(buf, 'q', 8192);
  const uint64_t offsets[] = {0, 128 * 1024, 256 * 1024};  // fast, hole, past EOF
  for (uint64_t k = 0; k < 3; ++k) {
    SCOPED_TRACE(offsets[k]);
    ext4dio_request r = {EXT4DIO_OP_WRITE, buf, 8192, offsets[k], k};
    ASSERT_EQ(ext4dio_queue_submit(q, &r), 0) << ext4dio_last_error();
    pollfd p = {efd, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 30000), 1);  // a bound for a hung run
    uint64_t n;
    ASSERT_EQ(read(efd, &n, sizeof n), static_cast<ssize_t>(sizeof n));
    ext4dio_completion c[4];
    int got = 0, rc;
    while ((rc = ext4dio_queue_reap(q, c + got, 4 - got, 0)) > 0) got += rc;
    ASSERT_EQ(rc, 0) << ext4dio_last_error();
    ASSERT_EQ(got, 1);
    EXPECT_EQ(c[0].cookie, k);
    EXPECT_EQ(c[0].result, 8192);
  }
  ext4dio_queue_close(q);
  free(buf);
}

}  // namespace
}  // namespace ext4dio
