/* The C API from a real C program (C11, no C++ anywhere in this file):
 * load a map from an image, read its info and extents, query segments,
 * and check error codes and messages for bad input. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ext4dio/ext4dio.h"
#include "capi_check.h"

static char dir[] = "/tmp/ext4dio-capi-XXXXXX";
int failures = 0;

static void cleanup(void) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

int main(void) {
  if (mkdtemp(dir) == NULL) return 1;
  atexit(cleanup);
  char cmd[1024], image[256];
  snprintf(image, sizeof image, "%s/fs.img", dir);
  /* /f: 8 islands of 4 KiB, 8 KiB apart -> 8 one-block extents. */
  snprintf(cmd, sizeof cmd,
           "mkdir -p %s/src && for i in 0 1 2 3 4 5 6 7; do "
           "dd if=/dev/urandom of=%s/src/f bs=4096 count=1 seek=$((i*2)) "
           "conv=notrunc status=none; done && "
           "mkfs.ext4 -q -F -b 4096 -d %s/src %s 16M",
           dir, dir, dir, image);
  if (system(cmd) != 0) {
    fprintf(stderr, "making the image failed\n");
    return 1;
  }

  CHECK(EXT4DIO_VERSION_NUMBER >= EXT4DIO_MAKE_VERSION(0, 1, 0));
  CHECK(strcmp(ext4dio_version(), EXT4DIO_VERSION_STRING) == 0);
  /* The runtime number is the compile-time one, and both agree with the
   * string and the parts. */
  CHECK(ext4dio_version_number() == EXT4DIO_VERSION_NUMBER);
  CHECK(ext4dio_version_number() == EXT4DIO_MAKE_VERSION(EXT4DIO_VERSION_MAJOR,
                                                         EXT4DIO_VERSION_MINOR,
                                                         EXT4DIO_VERSION_PATCH));
  {
    char parts[64];
    snprintf(parts, sizeof parts, "%d.%d.%d", EXT4DIO_VERSION_MAJOR, EXT4DIO_VERSION_MINOR,
             EXT4DIO_VERSION_PATCH);
    CHECK(strcmp(parts, ext4dio_version()) == 0);
  }

  struct ext4dio_target t;
  ext4dio_target_init(&t);
  t.image = image;
  t.path = "/f";
  struct ext4dio_map *map = NULL;
  int rc = ext4dio_map_load(&t, &map);
  CHECK(rc == 0);
  if (rc != 0) return 1;

  struct ext4dio_map_info info;
  ext4dio_map_info_init(&info);
  CHECK(ext4dio_map_get_info(map, &info) == 0);
  CHECK(info.block_size == 4096);
  CHECK(info.size == 15 * 4096);
  CHECK(info.extent_count == 8);
  CHECK(info.source == EXT4DIO_SOURCE_IMAGE);
  CHECK(info.extent_tree == 1);
  CHECK(info.warning == NULL);
  CHECK(strcmp(info.device, image) == 0);

  struct ext4dio_extent e;
  for (uint64_t i = 0; i < info.extent_count; i++) {
    CHECK(ext4dio_map_extent(map, i, &e) == 0);
    CHECK(e.logical_block == 2 * i);
    CHECK(e.blocks == 1);
    CHECK(e.flags == 0);
  }
  CHECK(ext4dio_map_extent(map, 8, &e) == -ERANGE);

  /* Segments: mapped, hole, mapped, ... then past EOF; in batches of 4. */
  struct ext4dio_segment segs[4];
  size_t n = 0;
  CHECK(ext4dio_map_query(map, 0, 20 * 4096, segs, 4, &n) == 0);
  CHECK(n == 4);
  CHECK(segs[0].kind == EXT4DIO_SEG_MAPPED && segs[0].length == 4096);
  CHECK(segs[1].kind == EXT4DIO_SEG_HOLE && segs[1].file_offset == 4096);
  CHECK(ext4dio_map_extent(map, 0, &e) == 0);
  CHECK(segs[0].device_offset == e.physical_block * 4096);
  CHECK(ext4dio_map_query(map, 15 * 4096, 5 * 4096, segs, 4, &n) == 0);
  CHECK(n == 1 && segs[0].kind == EXT4DIO_SEG_PAST_EOF);
  CHECK(ext4dio_map_query(map, UINT64_MAX, 2, segs, 4, &n) == -EINVAL);
  ext4dio_map_free(map);
  ext4dio_map_free(NULL);

  /* Errors: specific codes, a message naming the problem. */
  t.path = "/missing";
  CHECK(ext4dio_map_load(&t, &map) == -ENOENT && map == NULL);
  CHECK(strstr(ext4dio_last_error(), "/missing") != NULL);
  t.path = "/";
  CHECK(ext4dio_map_load(&t, &map) == -EXT4DIO_E_UNSUPPORTED_FILE);
  t.path = NULL;
  t.inode = 99999;
  CHECK(ext4dio_map_load(&t, &map) == -EXT4DIO_E_NOT_IN_USE);
  t.inode = 0;
  t.path = "/f";
  t.image = "/dev/null";
  rc = ext4dio_map_load(&t, &map);
  CHECK(rc < 0);
  t.image = "/etc/passwd";
  CHECK(ext4dio_map_load(&t, &map) == -EXT4DIO_E_NOT_EXT4 ||
        ext4dio_map_load(&t, &map) == -EXT4DIO_E_TRUNCATED);
  CHECK(strcmp(ext4dio_strerror(-EXT4DIO_E_CORRUPT_MAP),
               "File's extent map failed validation") == 0);
  CHECK(strcmp(ext4dio_strerror(-ENOENT), "No such file or directory") == 0);
  CHECK(ext4dio_map_load(NULL, &map) == -EINVAL);

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("capi_test: all checks passed\n");
  return 0;
}
