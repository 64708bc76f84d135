#!/usr/bin/env bash
# Ring set-up flags (issue 10, item 4): bench/ring_flags (see its header) on
# a loop device over /dev/shm with direct I/O:
#   1. idle  -- how long an idle owner's completions take to show in its CQ
#               ring, per flag set and idle state (the raw loop device);
#   2. tput  -- a bare liburing loop, 4 KiB random writes, QD 1/32/128, per
#               flag set (the raw loop device; image mode's question);
#   3. lease -- the loop device formatted and mounted: another process's
#               open(O_RDWR) of a file whose owner left queue writes
#               unreaped and went idle (default options, then
#               EXT4DIO_OPEN_REAP_PROMPTLY). The SIGSTOP row waits out
#               /proc/sys/fs/lease-break-time (45 s by default) per run.
#
#   bench/ring_flags.sh [--build DIR] [--seconds S] [--rounds R] [--only idle|tput|lease]
#
# Root only; exits 77 (skip) without root or loop devices. Everything it
# makes (/dev/shm/ext4dio-rings-*, one loop device, one mount) is removed on
# exit, failure or Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build="$here/../build"; secs=3; rounds=3; only=""
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=${2:?}; shift 2 ;;
    --seconds) secs=${2:?}; shift 2 ;;
    --rounds) rounds=${2:?}; shift 2 ;;
    --only) only=${2:?}; shift 2 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
bin=$build/bench/ring_flags
[ -x "$bin" ] || { echo "ring_flags.sh: no $bin (ninja -C $build bench/ring_flags)" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ]; then echo "ring_flags.sh: skipped: needs root" >&2; exit 77; fi
if ! losetup -f >/dev/null 2>&1; then echo "ring_flags.sh: skipped: no free loop device" >&2; exit 77; fi

prog=ring_flags.sh
# shellcheck source=bench/scratch.sh
. "$here/scratch.sh"  # cleanup trap for work/mnt/loop
work=$(rr_mkdtemp /dev/shm/ext4dio-rings-XXXXXX) || exit 1
mnt=$(rr_mkdtemp /tmp/ext4dio-rings-mnt-XXXXXX) || exit 1
img=$work/dev.img
truncate -s 1G "$img"
loop=$(rr_losetup "$img") || exit 1
[ -b "$loop" ] || { echo "ring_flags.sh: losetup gave no block device ($loop)" >&2; exit 1; }
echo "# $(uname -r), HZ $(zcat /proc/config.gz 2>/dev/null | sed -n 's/^CONFIG_HZ=//p'), $loop dio=$(cat /sys/block/"$(basename "$loop")"/loop/dio), $(git -C "$here" rev-parse --short HEAD 2>/dev/null)"
if [ -z "$only" ] || [ "$only" = idle ]; then
  "$bin" idle --dev "$loop"; echo
fi
if [ -z "$only" ] || [ "$only" = tput ]; then
  "$bin" tput --dev "$loop" --seconds "$secs" --rounds "$rounds"; echo
fi
if [ -z "$only" ] || [ "$only" = lease ]; then
  mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 "$loop"
  mount -t ext4 "$loop" "$mnt"
  mounted=1
  dd if=/dev/zero of="$mnt/f" bs=1M count=1 oflag=direct status=none
  sync
  "$bin" lease --file "$mnt/f"; echo
  "$bin" lease --file "$mnt/f" --reap-promptly
fi
