#!/usr/bin/env bash
# Unmounts and detaches loop devices that ext4dio's own tests or benchmarks
# created (backing files under /dev/shm/ext4dio-* or /tmp/ext4dio-*), e.g.
# after a crashed test. Never touches any other device.
set -u
command -v losetup >/dev/null 2>&1 || exit 0
[ "$(id -u)" -eq 0 ] || exit 0
losetup -a -O NAME,BACK-FILE -n 2>/dev/null | while read -r dev back; do
  case "$back" in
    /dev/shm/ext4dio-*|/tmp/ext4dio-*) ;;
    *) continue ;;
  esac
  for m in $(findmnt -rn -S "$dev" -o TARGET 2>/dev/null); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
  losetup -d "$dev" 2>/dev/null && echo "cleanup: detached leftover $dev ($back)" >&2
done
rm -rf /dev/shm/ext4dio-test-* /dev/shm/ext4dio-bench-* /dev/shm/ext4dio-demo-* 2>/dev/null
exit 0
