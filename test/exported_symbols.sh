#!/usr/bin/env bash
# The ABI is the C API: libext4dio.so must export ext4dio_* symbols only,
# all under the version node of lib/ext4dio.map, with a soname.
set -euo pipefail
lib=$1
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^EXT4DIO_[0-9]*$' | grep -v '^ext4dio_[a-z0-9_]*@@EXT4DIO_[0-9]*$' || true)
if [ -n "$bad" ]; then
  echo "unexpected exported symbols:"; echo "$bad"; exit 1
fi
count=$(nm -D --defined-only "$lib" | grep -c ' ext4dio_' || true)
[ "$count" -ge 5 ] || { echo "only $count ext4dio_ symbols exported"; exit 1; }
readelf -d "$lib" | grep -q 'SONAME.*libext4dio\.so\.[0-9]' || { echo "no soname"; exit 1; }
echo "ok: $count ext4dio_* symbols, nothing else"
