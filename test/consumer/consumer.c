/* A consumer of the installed C API (test/install_test.sh,
 * test/debian_package_test.sh): built with `pkg-config --cflags --libs
 * ext4dio`; checks the loaded library is the version installed. */
#include <ext4dio/ext4dio.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  struct ext4dio_target t;
  ext4dio_target_init(&t);
  t.image = "/nonexistent.img";
  t.path = "/f";
  struct ext4dio_map *m = 0;
  int rc = ext4dio_map_load(&t, &m);
  printf("version %s, load: %s\n", ext4dio_version(), ext4dio_strerror(rc));
  return (rc < 0 && m == 0 && strcmp(ext4dio_version(), EXT4DIO_VERSION_STRING) == 0 &&
          strcmp(ext4dio_version(), EXPECTED_VERSION) == 0 &&
          ext4dio_version_number() == EXT4DIO_VERSION_NUMBER) ? 0 : 1;
}
