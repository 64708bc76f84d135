#!/usr/bin/env bash
# End-to-end I/O benchmarks for image mode, always beside the reference in
# the same run, interleaved, repeated, medians and ratios reported:
#
#  1. 4 KiB random overwrite at QD 1/8/32/128 through ext4dio's async queue
#     (bench/qd_bench) vs fio's io_uring engine on the same byte range, on an
#     image file (tmpfs) and, as root, on a loop device over it.
#  2. Streaming 256 MiB and 1 GiB into a file of an image: ext4dio-write vs
#     dd oflag=direct onto the same bytes (extent by extent), and vs
#     debugfs write / e2cp of the same payload into a new file.
#
#   bench/io_bench.sh [BUILD_DIR] [--quick]
# Prints a markdown report on stdout. Everything it makes lives in
# /dev/shm/ext4dio-bench-* and is removed on exit (also on failure).
set -euo pipefail
build=${1:-build}
quick=${2:-}
reps=3; secs=3; qds="1 8 32 128"; sizes="256 1024"
if [ "$quick" = "--quick" ]; then reps=1; secs=1; qds="1 32"; sizes="64"; fi
[ -x "$build/bench/qd_bench" ] || { echo "build $build first (ninja -C $build)" >&2; exit 1; }
# Everything made here is recorded as it is made and torn down by the trap
# (scripts/run-record.sh): only what this run created is ever touched.
. "$(dirname "$0")/../scripts/run-record.sh"
rr_begin
trap rr_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
work=$(rr_mkdtemp /dev/shm/ext4dio-bench-XXXXXX)
loop=""

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
json_field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])$1)"; }

# A 96 MiB file that mkfs lays out as one extent (it fits one block group),
# so fio can be given exactly the same bytes: offset = physical block * 4096.
mkdir -p "$work/src"
head -c 96M /dev/zero | tr '\0' 'x' > "$work/src/f"
truncate -s 200M "$work/img"
mkfs.ext4 -q -F -b 4096 -d "$work/src" "$work/img"
rm -rf "$work/src"
map=$("$build/tools/ext4dio-map" --image "$work/img" --json /f)
nextents=$(echo "$map" | json_field '["extents"].__len__()')
[ "$nextents" = 1 ] || { echo "expected one extent, got $nextents" >&2; exit 1; }
phys=$(echo "$map" | json_field '["extents"][0]["physical_block"]')
off=$((phys * 4096)); size=$((96 << 20))

echo "## 4 KiB random overwrite, ext4dio async queue vs fio io_uring on the same bytes"
echo
echo "Kernel $(uname -r), $(nproc) cores; ${reps} interleaved runs of ${secs} s per point, medians."
echo
qd_table() {  # qd_table LABEL TARGET
  local label=$1 target=$2
  echo "### $label"
  echo
  echo "| QD | ext4dio IOPS | fio io_uring IOPS | ext4dio / fio |"
  echo "|---:|---:|---:|---:|"
  for qd in $qds; do
    : > "$work/ours"; : > "$work/fio"
    for _ in $(seq "$reps"); do
      "$build/bench/qd_bench" --image "$target" --path /f --qd "$qd" --seconds "$secs" \
        | json_field '["iops"]' >> "$work/ours"
      fio --name=ref --filename="$target" --offset="$off" --size="$size" --rw=randwrite \
        --bs=4k --direct=1 --ioengine=io_uring --iodepth="$qd" --time_based \
        --runtime="$secs" --randrepeat=0 --norandommap --output-format=json 2>/dev/null \
        | python3 -c "import json,sys; print(int(json.load(sys.stdin)['jobs'][0]['write']['iops']))" \
        >> "$work/fio"
    done
    o=$(median < "$work/ours"); f=$(median < "$work/fio")
    printf '| %s | %.0f | %.0f | %.2f |\n' "$qd" "$o" "$f" "$(echo "$o / $f" | bc -l)"
  done
  echo
}
qd_table "image file on tmpfs" "$work/img"
if [ "$(id -u)" -eq 0 ] && losetup -f >/dev/null 2>&1; then
  loop=$(rr_losetup "$work/img")
  qd_table "loop device ($loop) over the image" "$loop"
  losetup -d "$loop"; loop=""
else
  echo "(loop device rows skipped: needs root)"; echo
fi

echo "## Streaming into a file of an image"
echo
echo "| payload | ext4dio-write | dd oflag=direct, same bytes | ext4dio / dd | debugfs write (new file) | e2cp (new file) |"
echo "|---:|---:|---:|---:|---:|---:|"
now() { date +%s.%N; }
for mib in $sizes; do
  rm -rf "$work/s"; mkdir -p "$work/s/src"
  head -c "${mib}M" /dev/urandom > "$work/payload"
  # Not zeros: mke2fs -d would keep all-zero blocks as holes.
  head -c "${mib}M" /dev/zero | tr '\0' 'y' > "$work/s/src/target"
  truncate -s $((mib * 3 + 128))M "$work/s/img"
  mkfs.ext4 -q -F -b 4096 -d "$work/s/src" "$work/s/img"
  rm -rf "$work/s/src"
  smap=$("$build/tools/ext4dio-map" --image "$work/s/img" --json /target)
  echo "$smap" | python3 -c "
import json,sys
for e in json.load(sys.stdin)['extents']:
    print(e['logical_block']*4096, e['physical_block']*4096, e['blocks']*4096)" > "$work/extents"
  : > "$work/t_ours"; : > "$work/t_dd"; : > "$work/t_debugfs"; : > "$work/t_e2cp"
  for _ in $(seq "$reps"); do
    t0=$(now); "$build/tools/ext4dio-write" --image "$work/s/img" --input "$work/payload" --no-progress /target; t1=$(now)
    echo "$t1 - $t0" | bc -l >> "$work/t_ours"
    t0=$(now)
    while read -r lo po n; do
      dd if="$work/payload" of="$work/s/img" bs=1M iflag=skip_bytes,count_bytes \
        oflag=direct,seek_bytes conv=notrunc skip="$lo" seek="$po" count="$n" status=none
    done < "$work/extents"
    t1=$(now); echo "$t1 - $t0" | bc -l >> "$work/t_dd"
    t0=$(now); debugfs -w -R "write $work/payload copy_debugfs" "$work/s/img" >/dev/null 2>&1; t1=$(now)
    echo "$t1 - $t0" | bc -l >> "$work/t_debugfs"
    debugfs -w -R "rm copy_debugfs" "$work/s/img" >/dev/null 2>&1
    if command -v e2cp >/dev/null 2>&1; then
      t0=$(now); e2cp "$work/payload" "$work/s/img:/copy_e2cp"; t1=$(now)
      echo "$t1 - $t0" | bc -l >> "$work/t_e2cp"
      debugfs -w -R "rm copy_e2cp" "$work/s/img" >/dev/null 2>&1
    fi
  done
  cmp <(debugfs -R "cat /target" "$work/s/img" 2>/dev/null) "$work/payload" \
    || { echo "payload mismatch after streaming" >&2; exit 1; }
  rate() { echo "$mib / $1" | bc -l; }
  o=$(median < "$work/t_ours"); d=$(median < "$work/t_dd"); g=$(median < "$work/t_debugfs")
  e=$( [ -s "$work/t_e2cp" ] && median < "$work/t_e2cp" || echo 0)
  printf '| %d MiB | %.0f MiB/s | %.0f MiB/s | %.2f | %.0f MiB/s | %s |\n' "$mib" \
    "$(rate "$o")" "$(rate "$d")" "$(echo "$d / $o" | bc -l)" "$(rate "$g")" \
    "$( [ "$e" != 0 ] && printf '%.0f MiB/s' "$(rate "$e")" || echo n/a)"
  rm -rf "$work/s" "$work/payload"
done
echo
echo "Streaming rows: whole-command wall time including open, map and (dd) one process per extent."
