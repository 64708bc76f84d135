#!/usr/bin/env bash
# Cost of the image-mode ownership check (lib/ownership.*): the time of an
# image-mode write open (ext4dio-write --dry-run: the same open, nothing
# written) with the check and with --no-ownership-check, on a large sparse
# image on /dev/shm holding many small files (mkfs.ext4 -d).
#
# Usage: bench/ownership_bench.sh BUILD_DIR [FILES [SIZE [RUNS]]]
#   defaults: 100000 files, a 16G image, 5 runs (the median is printed).
#   MKFS_OPTS (environment): extra mkfs.ext4 options, e.g. "-O ^metadata_csum,^uninit_bg"
#   (no lazy skipping: every inode table is read).
# Needs no root. Everything it makes lives in one mktemp directory, removed
# on exit.
set -euo pipefail
build=${1:?build dir}
files=${2:-100000}
size=${3:-16G}
runs=${4:-5}
prog=ownership_bench
write=$build/tools/ext4dio-write
[ -x "$write" ] || { echo "$prog: $write not built" >&2; exit 1; }
# shellcheck source=bench/scratch.sh
source "$(dirname "$0")/scratch.sh"
work=$(mktemp -d /dev/shm/ext4dio-ownbench-XXXXXX)

mkdir "$work/src"
# FILES one-block files in directories of 1000, and the 256 MiB target.
python3 - "$work/src" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.mkdir(d)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(b"x" * 100)
with open(os.path.join(root, "target"), "wb") as f:
    f.truncate(256 << 20)
    for off in range(0, 256 << 20, 1 << 20):
        f.seek(off); f.write(os.urandom(4096))
PY
t0=$(date +%s.%N)
# shellcheck disable=SC2086
mkfs.ext4 -q -F -b 4096 ${MKFS_OPTS:-} -d "$work/src" "$work/img" "$size"
t1=$(date +%s.%N)
rm -rf "$work/src"
head -c 4096 /dev/urandom > "$work/payload"
echo "$prog: $size image${MKFS_OPTS:+ (mkfs $MKFS_OPTS)}, $files files + /target (256 MiB, 256 extents), mkfs -d took" \
     "$(echo "$t1 - $t0" | bc) s; $(du -h "$work/img" | cut -f1) allocated" >&2

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
time_open() {  # extra args for ext4dio-write; prints seconds per run
  for _ in $(seq "$runs"); do
    local s e
    s=$(date +%s%N)
    "$write" --image "$work/img" --dry-run --input "$work/payload" "$@" /target >/dev/null 2>&1
    e=$(date +%s%N)
    echo "scale=4; ($e - $s) / 1000000000" | bc
  done
}
# Warm the page cache once, then measure each way.
"$write" --image "$work/img" --dry-run --input "$work/payload" /target >/dev/null
with=$(time_open | median)
without=$(time_open --no-ownership-check | median)
echo "write open (ext4dio-write --dry-run), median of $runs: with the ownership check" \
     "${with} s, with --no-ownership-check ${without} s"
