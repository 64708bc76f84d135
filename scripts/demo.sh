#!/usr/bin/env bash
# The main job on a self-made demo image (no root needed): installs what is
# missing, builds, makes an ext4 image holding a fragmented sparse file with
# mkfs.ext4 -d, and prints that file's extent map with ext4dio-map.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build --buildtype=debugoptimized

work=$(mktemp -d /dev/shm/ext4dio-demo-XXXXXX 2>/dev/null || mktemp -d /tmp/ext4dio-demo-XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/src"
# 64 islands of 64 KiB, 256 KiB apart: a sparse, fragmented file.
for i in $(seq 0 63); do
  dd if=/dev/urandom of="$work/src/data.bin" bs=64K count=1 seek=$((i * 4)) conv=notrunc status=none
done
truncate -s 64M "$work/demo.img"
mkfs.ext4 -q -F -b 4096 -d "$work/src" "$work/demo.img"
echo "== ext4dio-map --image demo.img /data.bin"
build/tools/ext4dio-map --image "$work/demo.img" /data.bin
echo "== the same as JSON (first 300 bytes)"
build/tools/ext4dio-map --image "$work/demo.img" --json /data.bin | head -c 300; echo " ..."
echo "== debugfs agrees (first leaf extents)"
debugfs -R "ex /data.bin" "$work/demo.img" 2>/dev/null | head -5
