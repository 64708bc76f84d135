// ring_flags: which io_uring set-up flags post an idle owner's completions
// promptly, and what the cheap flags are worth (issue 10, item 4).
// bench/ring_flags.sh makes the loop device and the mount and runs all three.
//
//   ring_flags idle  --dev DEV [--n 32] [--bs 262144] [--reps 5]
//     An owner process makes a ring with each flag set, submits N writes to
//     DEV and a 20 ms timeout and goes idle in each state; this process reads the owner's CQ
//     ring (process_vm_readv, as the library's IoGate reads a ring without
//     its owner) and reports how long until the tail shows all N.
//   ring_flags tput  --dev DEV [--seconds 3] [--rounds 3] [--span BYTES]
//     A bare liburing loop (fixed file and buffers, every free slot
//     submitted in one io_uring_submit_and_wait) of 4 KiB random writes at
//     QD 1/32/128 with each flag set, rounds interleaved; medians.
//   ring_flags lease --file PATH [--reps 3] [--reap-promptly]
//     Through the library (mounted): an owner process opens PATH, leaves N
//     4 KiB queue writes unreaped and goes idle; this process times its own
//     open(O_RDWR) of PATH (the lease break), then checks the data.
//
// DESTROYS the contents of DEV (idle, tput); PATH's first 128 KiB (lease).
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ext4dio/ext4dio.h"

namespace {

#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

struct FlagSet {
  const char* name;
  unsigned flags;
};
const FlagSet kFlagSets[] = {
    {"none", 0},
    {"coop", IORING_SETUP_COOP_TASKRUN},
    {"coop|taskrun_flag", IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG},
    {"single_issuer|defer", IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN},
};

enum Idle { kNanosleep, kFutex, kPipeRead, kEpoll, kSpin, kSigstop, kVforkD, kNumIdle };
const char* const kIdleNames[] = {"nanosleep", "futex(cond_wait)", "pipe read()",
                                  "epoll_wait",  "user-space spin",  "SIGSTOP",
                                  "vfork (D, killable)"};

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

[[noreturn]] void Die(const char* what, int err) {
  fprintf(stderr, "ring_flags: %s: %s\n", what, strerror(err));
  exit(1);
}

std::string Arg(int argc, char** argv, const char* name, const char* def) {
  for (int i = 2; i + 1 < argc; ++i)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return def ? def : "";
}
bool Has(int argc, char** argv, const char* name) {
  for (int i = 2; i < argc; ++i)
    if (strcmp(argv[i], name) == 0) return true;
  return false;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// What the owner process tells the observer (anonymous shared memory).
struct Shared {
  std::atomic<int> ready{0};
  uintptr_t khead = 0, ktail = 0;
  uint64_t t_submit = 0;
  unsigned seen_at_idle = 0;  // completions the owner could see going idle
  int setup_errno = 0;
};

// Goes idle in `state` and never returns (the observer kills us).
[[noreturn]] void GoIdle(Idle state, int hold_fd) {
  switch (state) {
    case kNanosleep:
      for (;;) {
        timespec ts = {100, 0};
        nanosleep(&ts, nullptr);
      }
    case kFutex: {
      pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
      pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
      pthread_mutex_lock(&mu);
      for (;;) pthread_cond_wait(&cv, &mu);
    }
    case kPipeRead: {
      char c;
      for (;;) (void)!read(hold_fd, &c, 1);  // the observer never writes
    }
    case kEpoll: {
      int ep = epoll_create1(0);
      epoll_event ev;
      for (;;) epoll_wait(ep, &ev, 1, -1);
    }
    case kSpin:
      for (;;) asm volatile("");
    case kSigstop:
      for (;;) raise(SIGSTOP);
    case kVforkD: {
      // The parent of a vfork sleeps TASK_KILLABLE (uninterruptible but for
      // fatal signals) until the child execs or exits: the child waits for
      // the observer to close the pipe.
      pid_t c = vfork();
      if (c == 0) {
        char ch;
        while (read(hold_fd, &ch, 1) > 0) {
        }
        _exit(0);
      }
      for (;;) pause();
    }
    case kNumIdle:
      break;
  }
  abort();
}

// Submits n writes and a timeout of marker_ms (whose completion takes the
// same task-work path and surely comes while we are idle), then idles.
[[noreturn]] void IdleOwner(Shared* sh, const char* dev, unsigned flags, unsigned n,
                            size_t bs, unsigned marker_ms, Idle state, int hold_fd) {
  int fd = open(dev, O_RDWR | O_DIRECT);
  if (fd < 0) Die("open device", errno);
  io_uring ring;
  io_uring_params p = {};
  p.flags = flags;
  int rc = io_uring_queue_init_params(n + 1, &ring, &p);
  if (rc < 0) {
    sh->setup_errno = -rc;
    sh->ready.store(2);
    _exit(1);
  }
  void* buf;
  if (posix_memalign(&buf, 4096, bs * n)) Die("posix_memalign", ENOMEM);
  memset(buf, 0x5a, bs * n);
  for (unsigned i = 0; i < n; ++i) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_write(sqe, fd, static_cast<char*>(buf) + i * bs, bs, i * bs);
  }
  __kernel_timespec marker = {0, (long long)marker_ms * 1000000};
  io_uring_prep_timeout(io_uring_get_sqe(&ring), &marker, 0, 0);
  sh->khead = reinterpret_cast<uintptr_t>(ring.cq.khead);
  sh->ktail = reinterpret_cast<uintptr_t>(ring.cq.ktail);
  sh->t_submit = NowNs();
  rc = io_uring_submit(&ring);
  if (rc != int(n + 1)) Die("io_uring_submit", rc < 0 ? -rc : EIO);
  sh->seen_at_idle = std::min(n, *ring.cq.ktail - *ring.cq.khead);
  sh->ready.store(1, std::memory_order_release);
  GoIdle(state, hold_fd);
}

unsigned ReadRemote(pid_t pid, uintptr_t addr) {
  unsigned v = 0;
  iovec local = {&v, sizeof v}, remote = {reinterpret_cast<void*>(addr), sizeof v};
  if (process_vm_readv(pid, &local, 1, &remote, 1, 0) != sizeof v) return ~0u;
  return v;
}

int IdleMain(int argc, char** argv) {
  const std::string dev = Arg(argc, argv, "--dev", nullptr);
  const unsigned n = std::stoul(Arg(argc, argv, "--n", "32"));
  const size_t bs = std::stoul(Arg(argc, argv, "--bs", "262144"));
  const int reps = std::stoi(Arg(argc, argv, "--reps", "5"));
  const double timeout_ms = std::stod(Arg(argc, argv, "--timeout-ms", "3000"));
  const unsigned marker_ms = std::stoul(Arg(argc, argv, "--marker-ms", "20"));
  if (dev.empty()) Die("--dev is required", EINVAL);
  printf("# %u writes of %zu bytes to %s and a %u ms timeout (a completion sure to come "
         "while the owner is idle); ms after the timeout's expiry until the CQ tail shows "
         "all %u (median / max of %d; '>' = not within %.0f ms of submit); (N) = writes "
         "the owner had not seen when it went idle (median)\n",
         n, bs, dev.c_str(), marker_ms, n + 1, reps, timeout_ms);
  printf("| idle state | %s | %s | %s | %s |\n|---|---:|---:|---:|---:|\n", kFlagSets[0].name,
         kFlagSets[1].name, kFlagSets[2].name, kFlagSets[3].name);
  auto* sh = static_cast<Shared*>(
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (sh == MAP_FAILED) Die("mmap", errno);
  for (int s = 0; s < kNumIdle; ++s) {
    printf("| %s |", kIdleNames[s]);
    for (const FlagSet& fs : kFlagSets) {
      std::vector<double> ms;
      std::vector<double> pending;
      bool timed_out = false;
      int err = 0;
      for (int r = 0; r < reps && err == 0; ++r) {
        new (sh) Shared();
        int hold[2];
        if (pipe(hold)) Die("pipe", errno);
        fflush(stdout);  // the child must not inherit unwritten rows
        pid_t pid = fork();
        if (pid < 0) Die("fork", errno);
        if (pid == 0) {
          // A group of its own: a stopped member of an orphaned group would
          // bring SIGHUP to ours.
          setpgid(0, 0);
          close(hold[1]);
          IdleOwner(sh, dev.c_str(), fs.flags, n, bs, marker_ms, Idle(s), hold[0]);
        }
        close(hold[0]);
        while (sh->ready.load(std::memory_order_acquire) == 0) sched_yield();
        if (sh->ready.load() == 2) {
          err = sh->setup_errno;
        } else {
          pending.push_back(n - sh->seen_at_idle);
          const uint64_t deadline = sh->t_submit + uint64_t(timeout_ms * 1e6);
          uint64_t t = 0;
          for (;;) {
            const unsigned head = ReadRemote(pid, sh->khead);
            const unsigned tail = ReadRemote(pid, sh->ktail);
            t = NowNs();
            if (tail - head >= n + 1) break;
            if (t > deadline) {
              timed_out = true;
              break;
            }
            timespec ts = {0, 50000};
            nanosleep(&ts, nullptr);
          }
          ms.push_back((t - sh->t_submit) / 1e6 - marker_ms);
        }
        kill(pid, SIGKILL);
        close(hold[1]);  // releases a vfork child
        waitpid(pid, nullptr, 0);
      }
      if (err != 0) {
        printf(" setup: %s |", strerror(err));
      } else {
        const double mx = *std::max_element(ms.begin(), ms.end());
        const bool med_out = timed_out && Median(ms) >= timeout_ms - marker_ms;
        printf(" %s%.2f / %s%.2f (%.0f) |", med_out ? ">" : "", Median(ms),
               timed_out ? ">" : "", mx, Median(pending));
      }
      fflush(stdout);
    }
    printf("\n");
  }
  return 0;
}

// ---- tput: the bare loop ----

struct TputResult {
  double iops;
  double cpu_us_per_io;
};

TputResult RunTput(int fd, unsigned flags, unsigned qd, double seconds, uint64_t span) {
  io_uring ring;
  io_uring_params p = {};
  p.flags = flags;
  if (int rc = io_uring_queue_init_params(std::max(qd, 2u), &ring, &p); rc < 0)
    Die("io_uring_queue_init_params", -rc);
  if (int rc = io_uring_register_files(&ring, &fd, 1); rc < 0) Die("register_files", -rc);
  void* buf;
  if (posix_memalign(&buf, 4096, size_t(4096) * qd)) Die("posix_memalign", ENOMEM);
  memset(buf, 0xa5, size_t(4096) * qd);
  iovec iov = {buf, size_t(4096) * qd};
  if (int rc = io_uring_register_buffers(&ring, &iov, 1); rc < 0) Die("register_buffers", -rc);
  std::mt19937_64 rng(qd * 7919 + flags);
  const uint64_t blocks = span / 4096;
  std::vector<unsigned> free_slots;
  for (unsigned i = 0; i < qd; ++i) free_slots.push_back(i);
  uint64_t done = 0;
  rusage r0, r1;
  getrusage(RUSAGE_THREAD, &r0);
  const uint64_t t0 = NowNs(), t_end = t0 + uint64_t(seconds * 1e9);
  uint64_t t = t0;
  unsigned in_flight = 0;
  for (;;) {
    const bool stop = (done & 255) == 0 && (t = NowNs()) >= t_end;
    if (!stop) {
      while (!free_slots.empty()) {
        const unsigned slot = free_slots.back();
        free_slots.pop_back();
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        io_uring_prep_write_fixed(sqe, 0, static_cast<char*>(buf) + size_t(slot) * 4096, 4096,
                                  (rng() % blocks) * 4096, 0);
        sqe->flags |= IOSQE_FIXED_FILE;
        io_uring_sqe_set_data64(sqe, slot);
        ++in_flight;
      }
    }
    if (in_flight == 0) break;
    int rc = io_uring_submit_and_wait(&ring, 1);
    if (rc < 0 && rc != -EINTR) Die("io_uring_submit_and_wait", -rc);
    io_uring_cqe* cqes[128];
    unsigned got = io_uring_peek_batch_cqe(&ring, cqes, 128);
    for (unsigned i = 0; i < got; ++i) {
      if (cqes[i]->res != 4096) Die("write", cqes[i]->res < 0 ? -cqes[i]->res : EIO);
      free_slots.push_back(unsigned(io_uring_cqe_get_data64(cqes[i])));
    }
    io_uring_cq_advance(&ring, got);
    in_flight -= got;
    if (!stop) done += got;
  }
  getrusage(RUSAGE_THREAD, &r1);
  const double wall = (t - t0) / 1e9;
  auto us = [](const timeval& a) { return a.tv_sec * 1e6 + a.tv_usec; };
  const double cpu = us(r1.ru_utime) - us(r0.ru_utime) + us(r1.ru_stime) - us(r0.ru_stime);
  io_uring_queue_exit(&ring);
  free(buf);
  return {done / wall, cpu / double(done)};
}

int TputMain(int argc, char** argv) {
  const std::string dev = Arg(argc, argv, "--dev", nullptr);
  const double seconds = std::stod(Arg(argc, argv, "--seconds", "3"));
  const int rounds = std::stoi(Arg(argc, argv, "--rounds", "3"));
  const uint64_t span = std::stoull(Arg(argc, argv, "--span", "268435456"));
  if (dev.empty()) Die("--dev is required", EINVAL);
  int fd = open(dev.c_str(), O_RDWR | O_DIRECT);
  if (fd < 0) Die("open device", errno);
  const unsigned qds[] = {1, 32, 128};
  const int nf = sizeof kFlagSets / sizeof kFlagSets[0];
  // [qd][flags] -> per-round results
  std::vector<std::vector<std::vector<TputResult>>> res(3, std::vector<std::vector<TputResult>>(nf));
  for (int r = 0; r < rounds; ++r)
    for (int q = 0; q < 3; ++q)
      for (int f = 0; f < nf; ++f) {
        // Rotate the order so no flag set always runs first.
        const int ff = (f + r) % nf;
        res[q][ff].push_back(RunTput(fd, kFlagSets[ff].flags, qds[q], seconds, span));
      }
  printf("# 4 KiB random writes to %s (first %llu MiB), fixed file+buffers, batch submit; "
         "%d interleaved rounds of %.1f s; median kIOPS (CPU us per I/O, user+sys)\n",
         dev.c_str(), (unsigned long long)(span >> 20), rounds, seconds);
  printf("| QD |");
  for (const FlagSet& fs : kFlagSets) printf(" %s |", fs.name);
  printf(" defer / coop|taskrun_flag |\n|---|");
  for (int f = 0; f <= nf; ++f) printf("---:|");
  printf("\n");
  for (int q = 0; q < 3; ++q) {
    printf("| %u |", qds[q]);
    double med[8];
    for (int f = 0; f < nf; ++f) {
      std::vector<double> iops, cpu;
      for (const TputResult& t : res[q][f]) {
        iops.push_back(t.iops);
        cpu.push_back(t.cpu_us_per_io);
      }
      med[f] = Median(iops);
      printf(" %.1f (%.2f) |", med[f] / 1000, Median(cpu));
    }
    printf(" %.3f |\n", med[3] / med[2]);
  }
  return 0;
}

// ---- lease: end to end through the library ----

struct LeaseShared {
  std::atomic<int> ready{0};
  char error[256] = {};
};

[[noreturn]] void LeaseOwner(LeaseShared* sh, const char* path, bool prompt, unsigned n,
                             Idle state, int hold_fd) {
  ext4dio_target target;
  ext4dio_target_init(&target);
  target.path = path;
  ext4dio_open_opts opts;
  ext4dio_open_opts_init(&opts);
  opts.flags = EXT4DIO_OPEN_WRITE | (prompt ? EXT4DIO_OPEN_REAP_PROMPTLY : 0u);
  ext4dio_file* f = nullptr;
  ext4dio_queue* q = nullptr;
  if (int rc = ext4dio_open(&target, &opts, &f); rc < 0) {
    snprintf(sh->error, sizeof sh->error, "ext4dio_open: %s", ext4dio_last_error());
    sh->ready.store(2);
    _exit(1);
  }
  if (int rc = ext4dio_queue_open(f, n, &q); rc < 0) {
    snprintf(sh->error, sizeof sh->error, "ext4dio_queue_open: %s", ext4dio_last_error());
    sh->ready.store(2);
    _exit(1);
  }
  void* buf;
  if (posix_memalign(&buf, 4096, size_t(4096) * n)) Die("posix_memalign", ENOMEM);
  std::vector<ext4dio_request> reqs(n);
  for (unsigned i = 0; i < n; ++i) {
    memset(static_cast<char*>(buf) + size_t(i) * 4096, int(0x40 + i), 4096);
    reqs[i] = {EXT4DIO_OP_WRITE, static_cast<char*>(buf) + size_t(i) * 4096, 4096,
               uint64_t(i) * 4096, i};
  }
  if (int rc = ext4dio_queue_submit_batch(q, reqs.data(), n); rc != int(n)) {
    snprintf(sh->error, sizeof sh->error, "submit: %d %s", rc, ext4dio_last_error());
    sh->ready.store(2);
    _exit(1);
  }
  sh->ready.store(1, std::memory_order_release);
  GoIdle(state, hold_fd);
}

int LeaseMain(int argc, char** argv) {
  const std::string path = Arg(argc, argv, "--file", nullptr);
  const int reps = std::stoi(Arg(argc, argv, "--reps", "3"));
  const bool prompt = Has(argc, argv, "--reap-promptly");
  const unsigned n = 32;
  if (path.empty()) Die("--file is required", EINVAL);
  auto* sh = static_cast<LeaseShared*>(mmap(nullptr, sizeof(LeaseShared), PROT_READ | PROT_WRITE,
                                            MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (sh == MAP_FAILED) Die("mmap", errno);
  printf("# %s, %u x 4 KiB queue writes left unreaped%s; ms for another process's "
         "open(O_RDWR) (median / max of %d), then the data checked O_DIRECT\n",
         path.c_str(), n, prompt ? ", EXT4DIO_OPEN_REAP_PROMPTLY" : "", reps);
  printf("| idle state | open() ms | data |\n|---|---:|---|\n");
  void* rbuf;
  if (posix_memalign(&rbuf, 4096, size_t(4096) * n)) Die("posix_memalign", ENOMEM);
  for (int s = 0; s < kNumIdle; ++s) {
    std::vector<double> ms;
    std::string data = "ok";
    // A stopped or D-state owner holds the break for the whole
    // lease-break-time: once.
    const int runs = s == kSigstop || s == kVforkD ? std::min(reps, 1) : reps;
    for (int r = 0; r < runs; ++r) {
      new (sh) LeaseShared();
      int hold[2];
      if (pipe(hold)) Die("pipe", errno);
      fflush(stdout);
      pid_t pid = fork();
      if (pid < 0) Die("fork", errno);
      if (pid == 0) {
        setpgid(0, 0);  // as in IdleMain
        close(hold[1]);
        LeaseOwner(sh, path.c_str(), prompt, n, Idle(s), hold[0]);
      }
      close(hold[0]);
      while (sh->ready.load(std::memory_order_acquire) == 0) sched_yield();
      if (sh->ready.load() == 2) {
        fprintf(stderr, "owner: %s\n", sh->error);
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        return 1;
      }
      const uint64_t t0 = NowNs();
      int fd = open(path.c_str(), O_RDWR | O_DIRECT);
      const uint64_t t1 = NowNs();
      if (fd < 0) Die("open", errno);
      ms.push_back((t1 - t0) / 1e6);
      if (pread(fd, rbuf, size_t(4096) * n, 0) != ssize_t(4096) * n) Die("pread", errno);
      for (unsigned i = 0; i < n; ++i)
        if (static_cast<unsigned char*>(rbuf)[size_t(i) * 4096 + 4095] != 0x40 + i) data = "STALE";
      // Scramble it for the next run.
      memset(rbuf, 0, size_t(4096) * n);
      if (pwrite(fd, rbuf, size_t(4096) * n, 0) != ssize_t(4096) * n) Die("pwrite", errno);
      close(fd);
      kill(pid, SIGKILL);
      close(hold[1]);
      waitpid(pid, nullptr, 0);
    }
    printf("| %s | %.1f / %.1f | %s |\n", kIdleNames[s], Median(ms),
           *std::max_element(ms.begin(), ms.end()), data.c_str());
    fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "idle") return IdleMain(argc, argv);
  if (mode == "tput") return TputMain(argc, argv);
  if (mode == "lease") return LeaseMain(argc, argv);
  fprintf(stderr, "usage: ring_flags idle --dev DEV | tput --dev DEV | lease --file PATH\n");
  return 2;
}
