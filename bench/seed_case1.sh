#!/usr/bin/env bash
# Seed case 1: 4 KiB random overwrites at QD1 from 1/4/8/16 threads into a
# fully written 1 GiB file on a mounted ext4 (loop device over /dev/shm):
#
#   kernel   open(file, O_RDWR|O_DIRECT) + pwrite     (ext4's own DIO path)
#   raw      pwrite O_DIRECT on the loop device at the same blocks (FIEMAP)
#   ext4dio  ext4dio_open (mounted mode) + ext4dio_pwrite
#
# Each thread writes the same seeded offsets in every mode. Rows run
# interleaved (the three modes in a rotating order per repetition); the table
# shows medians and ratios, then every run's IOPS.
#
#   bench/seed_case1.sh [--seconds S] [--reps R] [--size MIB] [--image-size MIB]
#                       [--threads "1 4 8 16"] [--build DIR|BINARY]
#
#   --seconds S        seconds per run (default 5)
#   --reps R           repetitions per point (default 3)
#   --size MIB         size of the written test file (default 1024)
#   --image-size MIB   size of the ext4 backing file (default 1.5 x --size)
#   --threads LIST     thread counts (default "1 4 8 16")
#   --build DIR        a build directory (uses DIR/bench/seed_case1), or the
#                      seed_case1 binary itself (default: build/ in the repo)
#
# Root only; exits 77 (skip) when not root or without loop devices. All it
# makes (/dev/shm/ext4dio-seed1-*, one loop device, one mount under
# /tmp/ext4dio-seed1-mnt-*) is removed on exit, failure or Ctrl-C. It never
# touches any other device.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
secs=5; reps=3; size_mib=1024; image_mib=""; thread_list="1 4 8 16"
build="$here/../build"
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) secs=${2:?}; shift 2 ;;
    --reps) reps=${2:?}; shift 2 ;;
    --size) size_mib=${2:?}; shift 2 ;;
    --image-size) image_mib=${2:?}; shift 2 ;;
    --threads) thread_list=${2:?}; shift 2 ;;
    --build) build=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "seed_case1.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "seed_case1.sh: --reps: a positive integer" >&2; exit 2; }
[[ $size_mib =~ ^[1-9][0-9]*$ ]] || { echo "seed_case1.sh: --size: MiB, a positive integer" >&2; exit 2; }
[[ $secs =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "seed_case1.sh: --seconds: a number" >&2; exit 2; }
[ -n "$image_mib" ] || image_mib=$(( size_mib * 3 / 2 + 64 ))
[[ $image_mib =~ ^[1-9][0-9]*$ ]] || { echo "seed_case1.sh: --image-size: MiB, a positive integer" >&2; exit 2; }
[ "$image_mib" -gt $(( size_mib + size_mib / 16 + 64 )) ] \
  || { echo "seed_case1.sh: --image-size $image_mib MiB is too small for a $size_mib MiB file" >&2; exit 2; }

if [ -f "$build" ] && [ -x "$build" ]; then bin=$build
elif [ -x "$build/bench/seed_case1" ]; then bin=$build/bench/seed_case1
elif [ -x "$build/seed_case1" ]; then bin=$build/seed_case1
else echo "seed_case1.sh: no seed_case1 binary in $build (build it: ninja -C DIR bench/seed_case1)" >&2; exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

if [ "$(id -u)" -ne 0 ]; then echo "seed_case1.sh: skipped: needs root (loop device, mount)" >&2; exit 77; fi
for t in losetup mkfs.ext4 mount umount dd awk; do
  command -v "$t" >/dev/null 2>&1 || { echo "seed_case1.sh: skipped: $t not installed" >&2; exit 77; }
done
if ! losetup -f >/dev/null 2>&1; then
  echo "seed_case1.sh: skipped: no free loop device (losetup -f failed; modprobe loop?)" >&2; exit 77
fi
avail_kib=$(df -Pk /dev/shm | awk 'NR==2 {print $4}')
if [ "$avail_kib" -lt $(( image_mib * 1024 + 65536 )) ]; then
  echo "seed_case1.sh: /dev/shm has $((avail_kib / 1024)) MiB free, needs $((image_mib + 64)) MiB" >&2; exit 1
fi

prog=seed_case1.sh
# shellcheck source=bench/scratch.sh
. "$(dirname "$0")/scratch.sh"  # cleanup trap for work/mnt/loop

work=$(rr_mkdtemp /dev/shm/ext4dio-seed1-XXXXXX) || exit 1
mnt=$(rr_mkdtemp /tmp/ext4dio-seed1-mnt-XXXXXX) || exit 1
img=$work/ext4.img
truncate -s "${image_mib}M" "$img"
# No lazy init: ext4lazyinit would zero inode tables under the benchmark.
mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 "$img"
# Recorded before and after it is attached, so the trap detaches it (and a
# device an older losetup attached without --direct-io) by backing inode.
loop=$(rr_losetup "$img") || exit 1
[ -b "$loop" ] || { echo "seed_case1.sh: losetup gave no block device ($loop)" >&2; exit 1; }
dio=$(cat "/sys/block/$(basename "$loop")/loop/dio" 2>/dev/null || echo "?")
mount -t ext4 "$loop" "$mnt"
mounted=1
file=$mnt/case1
dd if=/dev/zero of="$file" bs=1M count="$size_mib" oflag=direct status=none
sync
nextents="?"
if command -v filefrag >/dev/null 2>&1; then nextents=$(filefrag "$file" | awk '{print $2}'); fi

declare -A runs  # runs[mode,threads] = "iops iops ..."
declare -A fastpct
ext4dio_ok=1; ext4dio_why=""
# Probe ext4dio mode once: until mounted mode exists it says so, and its
# columns show n/a (kernel and raw still run). A failure after a good probe
# aborts the script.
if ! probe=$("$bin" --mode ext4dio --file "$file" --threads 1 --seconds 0.2 2>&1 >/dev/null); then
  ext4dio_ok=0; ext4dio_why=$probe
  echo "seed_case1.sh: ext4dio mode unavailable, its columns show n/a: $probe" >&2
fi

field() {  # field NAME < json-line
  awk -v k="\"$1\":" '{ i = index($0, k); if (!i) exit 1; s = substr($0, i + length(k));
    sub(/^"/, "", s); match(s, /^[^,}"]*/); print substr(s, 1, RLENGTH) }'
}
median() { sort -g | awk '{a[NR]=$1} END { if (!NR) exit 1; print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }'; }

modes=(kernel raw ext4dio)
for t in $thread_list; do
  for ((r = 0; r < reps; r++)); do
    for ((k = 0; k < 3; k++)); do
      m=${modes[$(( (r + k) % 3 ))]}
      args=(--mode "$m" --file "$file" --threads "$t" --seconds "$secs" --seed 1)
      case $m in
        raw) args+=(--device "$loop") ;;
        ext4dio) [ "$ext4dio_ok" = 1 ] || continue ;;
      esac
      if ! line=$("$bin" "${args[@]}"); then
        echo "seed_case1.sh: $m with $t threads failed (see above)" >&2; exit 1
      fi
      echo "$line" >&2
      runs[$m,$t]="${runs[$m,$t]:-} $(echo "$line" | field iops)"
      if [ "$m" = ext4dio ]; then
        fb=$(echo "$line" | field fast_bytes); kb=$(echo "$line" | field kernel_bytes)
        fastpct[$t]="${fastpct[$t]:-} $(awk -v f="$fb" -v k="$kb" 'BEGIN { printf "%.0f", (f + k) ? 100 * f / (f + k) : 0 }')"
      fi
    done
  done
done

med() { echo "${runs[$1,$2]:-}" | tr ' ' '\n' | grep . | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

echo "## Seed case 1: 4 KiB random overwrite, QD1 per thread, ${size_mib} MiB file on a mounted ext4"
echo
echo "Kernel $(uname -r), $(nproc) CPUs; ext4 (4 KiB blocks) on $loop (direct-io=$dio) over /dev/shm;"
echo "file written with dd oflag=direct, ${nextents} extent(s). ${reps} interleaved run(s) of ${secs} s per point, medians."
echo
echo "| threads | kernel IOPS | raw IOPS | ext4dio IOPS | ext4dio/raw | ext4dio/kernel |"
echo "|---:|---:|---:|---:|---:|---:|"
for t in $thread_list; do
  kk=$(med kernel "$t"); rr=$(med raw "$t")
  ee=n/a; [ "$ext4dio_ok" = 1 ] && ee=$(med ext4dio "$t")
  printf '| %s | %.0f | %.0f | %s | %s | %s |\n' "$t" "$kk" "$rr" \
    "$( [ "$ee" = n/a ] && echo n/a || printf '%.0f' "$ee")" "$(ratio "$ee" "$rr")" "$(ratio "$ee" "$kk")"
done
echo
echo "Every run (IOPS, in run order):"
echo
for t in $thread_list; do
  line="* $t thread(s): kernel${runs[kernel,$t]}; raw${runs[raw,$t]}"
  if [ "$ext4dio_ok" = 1 ]; then
    line+="; ext4dio${runs[ext4dio,$t]} (fast-path share of bytes, %:${fastpct[$t]})"
  fi
  echo "$line"
done
if [ "$ext4dio_ok" = 0 ]; then
  echo
  echo "ext4dio: n/a — $ext4dio_why"
fi
