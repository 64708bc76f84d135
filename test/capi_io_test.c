/* The C API's file I/O from a real C program (C11, no C++ in this file):
 * open an image file for writing, pwrite/pread aligned and unaligned, plan
 * writes, find the writable extent, file info and statistics, async queues
 * (open/submit/reap/close), and the error codes, with the image made here by
 * mkfs.ext4 -d and read back independently with debugfs. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ext4dio/ext4dio.h"
#include "capi_check.h"

static char dir[] = "/tmp/ext4dio-capi-io-XXXXXX";
int failures = 0;

#define BLOCK 4096u
#define F_SIZE (15u * BLOCK)          /* /f: 8 one-block islands, 2 blocks apart */
#define C_SIZE (1024u * 1024u + 100u) /* /c: contiguous */

static void cleanup(void) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

/* The whole of a small file, malloc'ed; *n its size. */
static unsigned char *slurp(const char *path, size_t *n) {
  FILE *fp = fopen(path, "rb");
  if (fp == NULL) return NULL;
  fseek(fp, 0, SEEK_END);
  long size = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  unsigned char *buf = malloc(size > 0 ? (size_t)size : 1);
  *n = fread(buf, 1, (size_t)size, fp);
  fclose(fp);
  return buf;
}

/* debugfs's view of /PATH in the image equals want[0..n). */
static int debugfs_matches(const char *image, const char *path, const unsigned char *want,
                           size_t n) {
  char cmd[1024], out[512];
  snprintf(out, sizeof out, "%s/dump.out", dir);
  snprintf(cmd, sizeof cmd, "debugfs -R 'dump %s %s' '%s' 2>/dev/null", path, out, image);
  unlink(out);
  if (system(cmd) != 0) return 0;
  size_t got_n = 0;
  unsigned char *got = slurp(out, &got_n);
  int same = got != NULL && got_n == n && memcmp(got, want, n) == 0;
  free(got);
  return same;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = (unsigned char)(seed >> 16);
  }
}

static void *aligned(size_t align, size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, align, n) != 0) return NULL;
  return p;
}

/* Waits (up to 30 s: a generous bound, not a timing assertion) until fd is
 * readable; 1 when it is. */
static int readable_within(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  return r == 1 && (p.revents & POLLIN);
}

/* ext4dio_queue_event_fd on `backend`: readable after a submitted write
 * completes (direct, and through the blocking unaligned path), not before
 * and not after everything was reaped; what it announced is reaped with
 * min 0. Writes into /c, recorded in model_c. */
static void event_fd_checks(const struct ext4dio_target *t, uint32_t backend,
                            unsigned char *model_c, unsigned seed) {
  struct ext4dio_open_opts o;
  ext4dio_open_opts_init(&o);
  o.flags = EXT4DIO_OPEN_WRITE;
  o.backend = backend;
  struct ext4dio_file *f = NULL;
  CHECK(ext4dio_open(t, &o, &f) == 0 && f != NULL);
  if (f == NULL) return;
  struct ext4dio_queue *q = NULL;
  CHECK(ext4dio_queue_open(f, 4, &q) == 0 && q != NULL);
  if (q == NULL) {
    ext4dio_close(f);
    return;
  }
  CHECK(ext4dio_queue_event_fd(NULL) == -EINVAL);
  const int efd = ext4dio_queue_event_fd(q);
  CHECK(efd >= 0);
  CHECK(ext4dio_queue_event_fd(q) == efd); /* one per queue */
  if (efd < 0) goto out;
  CHECK(!readable_within(efd, 0)); /* nothing submitted */
  unsigned char *buf = aligned(BLOCK, 2 * BLOCK);
  struct ext4dio_completion c[4];
  uint64_t ev;
  /* 0: an aligned direct write; 1: an unaligned one (the blocking path);
   * 2: a read past EOF (no I/O at all: completed without the ring). */
  for (int k = 0; k < 3; k++) {
    const uint64_t off = k == 0 ? 256u * 1024 : k == 1 ? 300u * 1024 + 7 : 2u * C_SIZE;
    const uint64_t len = k == 0 ? 2 * BLOCK : k == 1 ? 1000 : BLOCK;
    if (k < 2) fill(buf, (size_t)len, seed + (unsigned)k);
    struct ext4dio_request r = {k < 2 ? EXT4DIO_OP_WRITE : EXT4DIO_OP_READ, buf, len, off,
                                500 + (uint64_t)k};
    CHECK(ext4dio_queue_submit(q, &r) == 0);
    CHECK(readable_within(efd, 30000));
    CHECK(read(efd, &ev, sizeof ev) == (ssize_t)sizeof ev && ev >= 1);
    int got = 0, n;
    while ((n = ext4dio_queue_reap(q, c + got, 4 - (size_t)got, 0)) > 0) got += n;
    CHECK(n == 0);
    CHECK(got == 1 && c[0].cookie == 500 + (uint64_t)k &&
          c[0].result == (k < 2 ? (int64_t)len : 0));
    if (k < 2) memcpy(model_c + off, buf, (size_t)len);
    CHECK(!readable_within(efd, 0)); /* all reaped, counter read */
  }
  free(buf);
out:
  ext4dio_queue_close(q);
  CHECK(ext4dio_sync(f) == 0);
  ext4dio_close(f);
}

/* A queue whose completion is ready before ext4dio_queue_event_fd is first
 * called: the new descriptor is readable at once. */
static void event_fd_late_checks(const struct ext4dio_target *t, unsigned char *model_c) {
  struct ext4dio_open_opts o;
  ext4dio_open_opts_init(&o);
  o.flags = EXT4DIO_OPEN_WRITE;
  o.backend = EXT4DIO_BACKEND_SYNC;
  struct ext4dio_file *f = NULL;
  CHECK(ext4dio_open(t, &o, &f) == 0 && f != NULL);
  if (f == NULL) return;
  struct ext4dio_queue *q = NULL;
  CHECK(ext4dio_queue_open(f, 4, &q) == 0 && q != NULL);
  unsigned char *buf = aligned(BLOCK, BLOCK);
  fill(buf, BLOCK, 77);
  struct ext4dio_request r = {EXT4DIO_OP_WRITE, buf, BLOCK, 320u * 1024, 9};
  CHECK(q != NULL && ext4dio_queue_submit(q, &r) == 0);
  memcpy(model_c + r.offset, buf, BLOCK);
  const int efd = q ? ext4dio_queue_event_fd(q) : -1;
  CHECK(efd >= 0 && readable_within(efd, 30000));
  struct ext4dio_completion c;
  CHECK(q != NULL && ext4dio_queue_reap(q, &c, 1, 0) == 1 && c.cookie == 9);
  ext4dio_queue_close(q);
  free(buf);
  CHECK(ext4dio_sync(f) == 0);
  ext4dio_close(f);
}

int main(void) {
  if (mkdtemp(dir) == NULL) return 1;
  atexit(cleanup);
  char cmd[2048], image[256], src[256];
  snprintf(image, sizeof image, "%s/fs.img", dir);
  snprintf(src, sizeof src, "%s/src", dir);
  snprintf(cmd, sizeof cmd,
           "mkdir -p %s && for i in 0 1 2 3 4 5 6 7; do "
           "dd if=/dev/urandom of=%s/f bs=4096 count=1 seek=$((i*2)) "
           "conv=notrunc status=none; done && "
           "head -c %u /dev/urandom > %s/c && "
           "mkfs.ext4 -q -F -b 4096 -d %s %s 16M >/dev/null",
           src, src, C_SIZE, src, src, image);
  if (system(cmd) != 0) {
    fprintf(stderr, "making the image failed\n");
    return 1;
  }
  char path[512];
  size_t n_f = 0, n_c = 0;
  snprintf(path, sizeof path, "%s/f", src);
  unsigned char *model_f = slurp(path, &n_f);
  snprintf(path, sizeof path, "%s/c", src);
  unsigned char *model_c = slurp(path, &n_c);
  if (model_f == NULL || model_c == NULL || n_f != F_SIZE || n_c != C_SIZE) {
    fprintf(stderr, "source files are not as planned\n");
    return 1;
  }

  struct ext4dio_target t;
  ext4dio_target_init(&t);
  t.image = image;
  t.path = "/f";
  struct ext4dio_open_opts opts;
  ext4dio_open_opts_init(&opts);
  CHECK(opts.queue_depth == 32);
  opts.flags = EXT4DIO_OPEN_WRITE;
  opts.queue_depth = 8;
  struct ext4dio_file *f = NULL;
  int rc = ext4dio_open(&t, &opts, &f);
  CHECK(rc == 0 && f != NULL);
  if (f == NULL) return 1;

  /* ---- info, map, stats --------------------------------------------- */
  struct ext4dio_file_info info;
  ext4dio_file_info_init(&info);
  CHECK(ext4dio_file_get_info(f, &info) == 0);
  CHECK(info.size == F_SIZE);
  CHECK(info.block_size == BLOCK);
  CHECK(info.offset_align >= 512 && info.offset_align <= BLOCK &&
        (info.offset_align & (info.offset_align - 1)) == 0);
  CHECK(info.memory_align >= 1 && info.memory_align <= BLOCK);
  CHECK(info.backend == EXT4DIO_BACKEND_URING || info.backend == EXT4DIO_BACKEND_SYNC);
  CHECK(info.max_io >= info.offset_align);
  CHECK(info.fast_path == 1);
  CHECK(info.fast_path_reason == EXT4DIO_FAST_PATH_NONE); /* image mode: always on */
  CHECK(info.warning == NULL);
  /* struct_size protocol: an older, shorter struct gets only its prefix. */
  struct ext4dio_file_info small;
  memset(&small, 0x77, sizeof small);
  small.struct_size = offsetof(struct ext4dio_file_info, block_size);
  CHECK(ext4dio_file_get_info(f, &small) == 0);
  CHECK(small.size == F_SIZE);
  CHECK(small.block_size == 0x77777777u);
  small.struct_size = 0;
  CHECK(ext4dio_file_get_info(f, &small) == -EINVAL);

  const struct ext4dio_map *map = ext4dio_file_map(f);
  CHECK(map != NULL);
  struct ext4dio_map_info minfo;
  ext4dio_map_info_init(&minfo);
  CHECK(ext4dio_map_get_info(map, &minfo) == 0);
  CHECK(minfo.extent_count == 8 && minfo.size == F_SIZE);

  struct ext4dio_stats st0;
  ext4dio_stats_init(&st0);
  CHECK(ext4dio_file_get_stats(f, &st0) == 0);
  CHECK(st0.fast_bytes == 0 && st0.rmw_bytes == 0 && st0.read_bytes == 0);

  /* ---- what can be written ------------------------------------------ */
  CHECK(ext4dio_writable_until(f, 0, 100000) == BLOCK);
  CHECK(ext4dio_writable_until(f, 10, 100) == 110);
  CHECK(ext4dio_writable_until(f, BLOCK, 10) == BLOCK);       /* a hole */
  CHECK(ext4dio_writable_until(f, 2 * BLOCK + 5, 1 << 20) == 3 * BLOCK);
  CHECK(ext4dio_writable_until(f, 14 * BLOCK, 2 * BLOCK) == F_SIZE); /* EOF */
  CHECK(ext4dio_writable_until(f, F_SIZE, 1) == F_SIZE);

  size_t n = 0;
  CHECK(ext4dio_plan_write(f, 0, 3 * BLOCK, NULL, 0, &n) == 0);
  CHECK(n == 3);
  struct ext4dio_piece pieces[8];
  CHECK(ext4dio_plan_write(f, 0, 3 * BLOCK, pieces, 8, &n) == 0);
  if (n == 3) {
    CHECK(pieces[0].kind == EXT4DIO_PIECE_FAST && pieces[0].file_offset == 0 &&
          pieces[0].length == BLOCK);
    CHECK(pieces[1].kind == EXT4DIO_PIECE_REFUSED && pieces[1].file_offset == BLOCK &&
          pieces[1].length == BLOCK);
    CHECK(pieces[2].kind == EXT4DIO_PIECE_FAST && pieces[2].file_offset == 2 * BLOCK);
    struct ext4dio_extent e0, e1;
    CHECK(ext4dio_map_extent(map, 0, &e0) == 0 && ext4dio_map_extent(map, 1, &e1) == 0);
    CHECK(pieces[0].device_offset == e0.physical_block * BLOCK);
    CHECK(pieces[2].device_offset == e1.physical_block * BLOCK);
  }
  /* Room for fewer than needed: the count says how many. */
  memset(pieces, 0, sizeof pieces);
  CHECK(ext4dio_plan_write(f, 0, 3 * BLOCK, pieces, 1, &n) == 0);
  CHECK(n == 3 && pieces[0].length == BLOCK && pieces[1].length == 0);
  /* Unaligned bytes inside a block: read-modify-write. */
  CHECK(ext4dio_plan_write(f, 7, 3, pieces, 8, &n) == 0);
  CHECK(n == 1 && pieces[0].kind == EXT4DIO_PIECE_RMW && pieces[0].file_offset == 7 &&
        pieces[0].length == 3);
  CHECK(ext4dio_plan_write(f, F_SIZE - 1, 2, pieces, 8, &n) == 0);
  CHECK(n == 2 && pieces[1].kind == EXT4DIO_PIECE_REFUSED && pieces[1].file_offset == F_SIZE);
  CHECK(ext4dio_plan_write(NULL, 0, 1, pieces, 8, &n) == -EINVAL);
  CHECK(ext4dio_plan_write(f, 0, 1, NULL, 8, &n) == -EINVAL);

  /* ---- synchronous writes and reads ---------------------------------- */
  unsigned char *abuf = aligned(BLOCK, 4 * BLOCK);
  unsigned char *rbuf = aligned(BLOCK, 4 * BLOCK + 64);
  fill(abuf, BLOCK, 1);
  CHECK(ext4dio_pwrite(f, abuf, BLOCK, 0) == BLOCK);
  memcpy(model_f, abuf, BLOCK);
  CHECK(ext4dio_pread(f, rbuf, BLOCK, 0) == BLOCK && memcmp(rbuf, model_f, BLOCK) == 0);
  /* Unaligned buffer, offset and length. */
  fill(abuf, 200, 2);
  CHECK(ext4dio_pwrite(f, abuf + 1, 100, 2 * BLOCK + 7) == 100);
  memcpy(model_f + 2 * BLOCK + 7, abuf + 1, 100);
  CHECK(ext4dio_pread(f, rbuf + 3, 1000, 2 * BLOCK + 1) == 1000);
  CHECK(memcmp(rbuf + 3, model_f + 2 * BLOCK + 1, 1000) == 0);
  /* A whole block from an unaligned buffer. */
  fill(abuf, BLOCK + 1, 3);
  CHECK(ext4dio_pwrite(f, abuf + 1, BLOCK, 4 * BLOCK) == BLOCK);
  memcpy(model_f + 4 * BLOCK, abuf + 1, BLOCK);
  /* Up to EOF exactly (the last block is whole here: 15 blocks). */
  fill(abuf, 10, 4);
  CHECK(ext4dio_pwrite(f, abuf, 10, F_SIZE - 10) == 10);
  memcpy(model_f + F_SIZE - 10, abuf, 10);
  CHECK(ext4dio_pwrite(f, abuf, 0, 0) == 0);

  /* Reads: holes read as zeros, short at EOF, 0 past it. */
  memset(rbuf, 0xee, 2 * BLOCK);
  CHECK(ext4dio_pread(f, rbuf, 2 * BLOCK, BLOCK - 100) == 2 * BLOCK);
  CHECK(memcmp(rbuf, model_f + BLOCK - 100, 2 * BLOCK) == 0);
  CHECK(rbuf[100] == 0 && rbuf[100 + BLOCK - 1] == 0);
  CHECK(ext4dio_pread(f, rbuf, 4 * BLOCK, F_SIZE - 100) == 100);
  CHECK(memcmp(rbuf, model_f + F_SIZE - 100, 100) == 0);
  CHECK(ext4dio_pread(f, rbuf, 10, F_SIZE) == 0);
  CHECK(ext4dio_pread(f, rbuf, 10, F_SIZE + 1000000) == 0);

  /* Refusals: nothing written, the first refused byte named. */
  fill(abuf, 4 * BLOCK, 5);
  CHECK(ext4dio_pwrite(f, abuf, BLOCK, BLOCK) == -EXT4DIO_E_NEEDS_ALLOCATION);
  CHECK(strstr(ext4dio_last_error(), "4096") != NULL);
  CHECK(ext4dio_pwrite(f, abuf, 3 * BLOCK, 0) == -EXT4DIO_E_NEEDS_ALLOCATION);
  CHECK(strstr(ext4dio_last_error(), "4096") != NULL);
  CHECK(ext4dio_pwrite(f, abuf + 1, 2000, 3 * BLOCK - 1000) == -EXT4DIO_E_NEEDS_ALLOCATION);
  CHECK(strstr(ext4dio_last_error(), "12288") != NULL);
  CHECK(ext4dio_pwrite(f, abuf, 20, F_SIZE - 10) == -EXT4DIO_E_NEEDS_ALLOCATION);
  CHECK(strstr(ext4dio_last_error(), "61440") != NULL);
  CHECK(strlen(ext4dio_strerror(-EXT4DIO_E_NEEDS_ALLOCATION)) > 0);
  unsigned char *whole = malloc(F_SIZE);
  CHECK(ext4dio_pread(f, whole, F_SIZE, 0) == F_SIZE && memcmp(whole, model_f, F_SIZE) == 0);

  /* NULL arguments. */
  CHECK(ext4dio_pwrite(NULL, abuf, 1, 0) == -EINVAL);
  CHECK(ext4dio_pwrite(f, NULL, 1, 0) == -EINVAL);
  CHECK(ext4dio_pread(NULL, rbuf, 1, 0) == -EINVAL);
  CHECK(ext4dio_sync(NULL) == -EINVAL);
  CHECK(ext4dio_file_get_stats(NULL, &st0) == -EINVAL);

  CHECK(ext4dio_sync(f) == 0);

  /* An unknown fallocate mode: -EINVAL with a message naming the mode. */
  CHECK(ext4dio_fallocate(f, 0x80u | EXT4DIO_FALLOC_KEEP_SIZE, 0, BLOCK) == -EINVAL);
  CHECK(strstr(ext4dio_last_error(), "0x80") != NULL);
  CHECK(strstr(ext4dio_last_error(), "0x81") != NULL);

  struct ext4dio_stats st;
  ext4dio_stats_init(&st);
  CHECK(ext4dio_file_get_stats(f, &st) == 0);
  CHECK(st.fast_bytes >= 2 * BLOCK);
  CHECK(st.rmw_bytes + st.buffered_bytes >= 110);
  CHECK(st.read_bytes > 0 && st.read_requests > 0);
  CHECK(st.zero_bytes >= BLOCK);
  CHECK(st.kernel_bytes == 0);

  /* A second writer of the same file in this process: refused while we hold
   * the image (-EXT4DIO_E_IN_USE), or shared (DESIGN: one open per
   * (device, inode) per process, reference-counted). */
  struct ext4dio_file *g = NULL;
  rc = ext4dio_open(&t, &opts, &g);
  CHECK((rc == -EXT4DIO_E_IN_USE && g == NULL) || (rc == 0 && g != NULL));
  ext4dio_close(g);
  g = NULL;
  /* A reader is fine, and refuses writes. */
  struct ext4dio_open_opts ro;
  ext4dio_open_opts_init(&ro);
  CHECK(ext4dio_open(&t, &ro, &g) == 0 && g != NULL);
  CHECK(ext4dio_pwrite(g, abuf, 1, 0) == -EBADF);
  CHECK(ext4dio_pread(g, rbuf, BLOCK, 0) == BLOCK && memcmp(rbuf, model_f, BLOCK) == 0);
  ext4dio_close(g);
  /* Unknown backend. */
  ro.backend = 77;
  g = NULL;
  CHECK(ext4dio_open(&t, &ro, &g) == -EINVAL && g == NULL);

  /* ---- async queues on /c -------------------------------------------- */
  ext4dio_close(f);
  f = NULL;
  t.path = "/c";
  CHECK(ext4dio_open(&t, &opts, &f) == 0 && f != NULL);
  if (f == NULL) return 1;
  struct ext4dio_queue *q = NULL;
  CHECK(ext4dio_queue_open(f, 4, &q) == 0 && q != NULL);
  if (q == NULL) return 1;
  enum { NREQ = 8 };
  unsigned char *bufs[NREQ];
  struct ext4dio_request reqs[NREQ];
  for (int i = 0; i < NREQ; i++) {
    bufs[i] = aligned(BLOCK, 64 * 1024 + 16);
    memset(&reqs[i], 0, sizeof reqs[i]);
    reqs[i].cookie = 100 + (uint64_t)i;
  }
  /* 5 aligned writes of 64 KiB, one unaligned write (blocking path), two
   * reads of untouched ranges (one unaligned, one reaching EOF). */
  for (int i = 0; i < 5; i++) {
    fill(bufs[i], 64 * 1024, 10 + (unsigned)i);
    reqs[i].op = EXT4DIO_OP_WRITE;
    reqs[i].buf = bufs[i];
    reqs[i].length = 64 * 1024;
    reqs[i].offset = (uint64_t)i * 64 * 1024;
  }
  fill(bufs[5], 5000, 20);
  reqs[5].op = EXT4DIO_OP_WRITE;
  reqs[5].buf = bufs[5] + 3;
  reqs[5].length = 3000;
  reqs[5].offset = 400 * 1024 + 11;
  reqs[6].op = EXT4DIO_OP_READ;
  reqs[6].buf = bufs[6] + 1;
  reqs[6].length = 10000;
  reqs[6].offset = 600 * 1024 + 5;
  reqs[7].op = EXT4DIO_OP_READ;
  reqs[7].buf = bufs[7];
  reqs[7].length = 64 * 1024;
  reqs[7].offset = C_SIZE - 1000;
  for (int i = 0; i < NREQ; i++) CHECK(ext4dio_queue_submit(q, &reqs[i]) == 0);
  struct ext4dio_completion done[NREQ + 2];
  int got = 0, seen[NREQ] = {0};
  while (got < NREQ) {
    int r = ext4dio_queue_reap(q, done + got, (size_t)(NREQ + 2 - got), 1);
    CHECK(r > 0);
    if (r <= 0) break;
    got += r;
  }
  CHECK(got == NREQ);
  CHECK(ext4dio_queue_reap(q, done, NREQ, 1) == 0); /* nothing outstanding */
  for (int k = 0; k < got; k++) {
    int i = (int)(done[k].cookie - 100);
    CHECK(i >= 0 && i < NREQ);
    if (i < 0 || i >= NREQ) continue;
    CHECK(!seen[i]);
    seen[i] = 1;
    int64_t want = i == 7 ? 1000 : (int64_t)reqs[i].length;
    CHECK(done[k].result == want);
  }
  CHECK(memcmp(bufs[6] + 1, model_c + 600 * 1024 + 5, 10000) == 0);
  CHECK(memcmp(bufs[7], model_c + C_SIZE - 1000, 1000) == 0);
  for (int i = 0; i < 6; i++) memcpy(model_c + reqs[i].offset, reqs[i].buf, reqs[i].length);
  /* Refused at submit: nothing started, nothing to reap. */
  reqs[0].offset = C_SIZE - 10;
  reqs[0].length = 64 * 1024;
  CHECK(ext4dio_queue_submit(q, &reqs[0]) == -EXT4DIO_E_NEEDS_ALLOCATION);
  CHECK(ext4dio_queue_reap(q, done, NREQ, 0) == 0);
  reqs[0].op = 9;
  CHECK(ext4dio_queue_submit(q, &reqs[0]) == -EINVAL);
  CHECK(ext4dio_queue_submit(NULL, &reqs[0]) == -EINVAL);
  CHECK(ext4dio_queue_reap(NULL, done, 1, 0) == -EINVAL);
  CHECK(ext4dio_queue_open(NULL, 4, &q) == -EINVAL);
  /* Closing with requests in flight waits for them. */
  fill(bufs[0], 64 * 1024, 30);
  reqs[0].op = EXT4DIO_OP_WRITE;
  reqs[0].buf = bufs[0];
  reqs[0].length = 64 * 1024;
  reqs[0].offset = 512 * 1024;
  CHECK(ext4dio_queue_submit(q, &reqs[0]) == 0);
  memcpy(model_c + 512 * 1024, bufs[0], 64 * 1024);
  ext4dio_queue_close(q);
  ext4dio_queue_close(NULL);
  CHECK(ext4dio_sync(f) == 0);
  ext4dio_close(f);
  ext4dio_close(NULL);

  /* ---- a pollable descriptor for queue completions --------------------- */
  event_fd_checks(&t, EXT4DIO_BACKEND_URING, model_c, 40);
  event_fd_checks(&t, EXT4DIO_BACKEND_SYNC, model_c, 50);
  event_fd_late_checks(&t, model_c);

  /* ---- read back independently ---------------------------------------- */
  CHECK(debugfs_matches(image, "/f", model_f, F_SIZE));
  CHECK(debugfs_matches(image, "/c", model_c, C_SIZE));
  snprintf(cmd, sizeof cmd, "e2fsck -fn '%s' >/dev/null 2>&1", image);
  CHECK(system(cmd) == 0);

  for (int i = 0; i < NREQ; i++) free(bufs[i]);
  free(abuf);
  free(rbuf);
  free(whole);
  free(model_f);
  free(model_c);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("capi_io_test: all checks passed\n");
  return 0;
}
