#!/bin/bash
# make_seeds.sh OUTDIR: a seed corpus of small ext2/3/4 images for fuzz_map.
#
# Each image holds a file /f (inode 12: the first inode after lost+found) in
# a different shape: a few extents, a depth-1 and a depth-2 extent tree, an
# ext2/ext3 block map with indirect blocks, with and without metadata_csum,
# 64bit off, bigalloc, 4 KiB blocks, inline data, /f as a symlink. Images are
# at most 1 MiB (run.sh's -max_len), mostly 256 KiB with 1 KiB blocks, so
# that libFuzzer mutates the metadata and not acres of zeros.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
export PATH="$PATH:/sbin:/usr/sbin"
for tool in mkfs.ext4 mkfs.ext2 mkfs.ext3 python3; do
  command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/ext4dio-seeds-XXXXXX")
trap 'rm -rf "$work"' EXIT

# islands DIR COUNT ISLAND_BYTES STRIDE: DIR/f with COUNT islands of random
# bytes STRIDE apart (holes between them: one extent per island).
islands() {
  mkdir -p "$1"
  python3 - "$1/f" "$2" "$3" "$4" <<'PY'
import os, random, sys
path, count, island, stride = sys.argv[1], *map(int, sys.argv[2:])
rng = random.Random(count * 7919 + island)
with open(path, "wb") as f:
    for i in range(count):
        f.seek(i * stride)
        f.write(bytes(rng.randrange(1, 256) for _ in range(island)))
PY
}

# seed NAME SIZE MKFS ARGS...: mkfs -d the source dir $src into OUT/NAME.
seed() {
  local name=$1 size=$2 mkfs=$3
  shift 3
  rm -f "$work/img"
  # mke2fs does not always write the last blocks of a new image file: make
  # it the full size first, or the image is shorter than its filesystem.
  truncate -s "$size" "$work/img"
  "$mkfs" -q -F "$@" -d "$src" "$work/img" "$size" >/dev/null
  cp "$work/img" "$out/$name"
}

base=(-b 1024 -N 16 -O ^has_journal -E root_owner=0:0 -U clear -L seed)

src=$work/few; islands "$src" 3 1024 4096
seed ext4-few-csum.img 256K mkfs.ext4 "${base[@]}"
seed ext4-few-nocsum.img 256K mkfs.ext4 "${base[@]}" -O ^metadata_csum
seed ext4-few-no64bit.img 256K mkfs.ext4 "${base[@]}" -O ^64bit,^metadata_csum

src=$work/few4k; islands "$src" 3 1024 8192
seed ext4-few-4k.img 512K mkfs.ext4 -b 4096 -N 16 -O ^has_journal -E root_owner=0:0 -U clear

src=$work/depth1; islands "$src" 8 1024 4096
seed ext4-depth1-csum.img 256K mkfs.ext4 "${base[@]}"
seed ext4-depth1-nocsum.img 256K mkfs.ext4 "${base[@]}" -O ^metadata_csum
seed ext4-depth1-bigalloc.img 512K mkfs.ext4 "${base[@]}" -O bigalloc -C 4096

# 64 KiB images: almost every byte is metadata, which is what to mutate.
tiny=(-b 1024 -N 16 -O ^has_journal,^resize_inode -E root_owner=0:0 -U clear)
src=$work/tiny; islands "$src" 6 1024 2048
seed ext4-64k-depth1-csum.img 64K mkfs.ext4 "${tiny[@]}"
seed ext4-64k-depth1-nocsum.img 64K mkfs.ext4 "${tiny[@]}" -O ^metadata_csum
src=$work/tiny-bm; islands "$src" 1 16384 16384
seed ext2-64k-ind.img 64K mkfs.ext2 "${tiny[@]}"

src=$work/depth2; islands "$src" 400 1024 2048
seed ext4-depth2-csum.img 1M mkfs.ext4 "${base[@]}"

# Block maps: 40 blocks reach the single indirect block, 300 the double.
src=$work/ind; islands "$src" 1 40960 4096
seed ext3-ind.img 256K mkfs.ext3 "${base[@]}"
src=$work/dind; islands "$src" 1 307200 4096
seed ext2-dind.img 512K mkfs.ext2 "${base[@]}"
src=$work/sparse-bm; islands "$src" 20 1024 3072
seed ext2-sparse.img 256K mkfs.ext2 "${base[@]}"

src=$work/inline; mkdir -p "$src"; printf 'tiny' > "$src/f"
seed ext4-inline.img 256K mkfs.ext4 "${base[@]}" -O inline_data

src=$work/symlink; islands "$src" 2 1024 4096
mv "$src/f" "$src/g"; ln -s g "$src/f"
seed ext4-symlink.img 256K mkfs.ext4 "${base[@]}"

ls -l "$out" >&2
