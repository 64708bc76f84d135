#!/usr/bin/env bash
# Builds and runs test/consumer/consumer.{c,cc} against the ext4dio.pc and
# ext4dio-cpp.pc that PKG_CONFIG_PATH (and PKG_CONFIG_SYSROOT_DIR) point at,
# and checks they load libext4dio.so.0 from LIBDIR.
# Usage: build_consumers.sh LIBDIR VERSION OUTDIR
set -euo pipefail
lib=$1 version=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "build_consumers: $*" >&2; exit 1; }
cc -std=c11 -Wall -Werror -DEXPECTED_VERSION="\"$version\"" "$here/consumer.c" -o "$out/consumer" \
  $(pkg-config --cflags --libs ext4dio)
ldd=$(LD_LIBRARY_PATH=$lib ldd "$out/consumer")
grep -q "libext4dio.so.0 => $lib/" <<<"$ldd" || fail "the C consumer does not load $lib/libext4dio.so.0"
LD_LIBRARY_PATH=$lib "$out/consumer" || fail "C consumer failed (ext4dio_version() != $version?)"
c++ -std=c++20 -Wall -Werror "$here/consumer.cc" -o "$out/consumer_cc" \
  $(pkg-config --cflags --libs ext4dio-cpp)
LD_LIBRARY_PATH=$lib "$out/consumer_cc" || fail "C++ consumer failed"
