#!/usr/bin/env bash
# meson install into a DESTDIR, then build a C and a C++ consumer against the
# installed headers through the installed pkg-config files, and run them.
set -euo pipefail
build=$1
src=$(cd "$(dirname "$0")" && pwd)
dest=$(mktemp -d /tmp/ext4dio-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --destdir "$dest" --no-rebuild >/dev/null
pcdir=$(dirname "$(find "$dest" -name ext4dio.pc | head -1)")
[ -n "$pcdir" ] || { echo "ext4dio.pc not installed"; exit 1; }
export PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_PATH=$pcdir
libdir=$(dirname "$(find "$dest" -name 'libext4dio.so.0' | head -1)")

cat > "$dest/consumer.c" <<'C'
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
  return (rc < 0 && m == 0 && strcmp(ext4dio_version(), EXT4DIO_VERSION_STRING) == 0) ? 0 : 1;
}
C
cc -std=c11 -Wall -Werror "$dest/consumer.c" -o "$dest/consumer" $(pkg-config --cflags --libs ext4dio)
LD_LIBRARY_PATH=$libdir "$dest/consumer"

cat > "$dest/consumer.cc" <<'CC'
#include <ext4dio/ext4dio.hpp>
#include <iostream>
int main() {
  auto m = ext4dio::FileMap::Load(ext4dio::Location::InImage("/nonexistent.img", "/f"));
  std::cout << m.status() << "\n";
  return !m.ok() && absl::IsNotFound(m.status()) ? 0 : 1;
}
CC
c++ -std=c++20 -Wall -Werror "$dest/consumer.cc" -o "$dest/consumer_cc" $(pkg-config --cflags --libs ext4dio-cpp)
LD_LIBRARY_PATH=$libdir "$dest/consumer_cc"
echo "ok: installed library usable from C and C++ via pkg-config"
