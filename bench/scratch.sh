# Sourced by the root benchmarks (seed_case1.sh, seed_tables.sh): the
# scratch state they set up and the trap that tears it down even on failure
# or ^C. The sourcing script sets `prog` (for messages), then fills in
# `work` (a directory to delete), `mnt` (a mount point to remove), `loop`
# (a loop device it attached) and `mounted=1` as it creates them; nothing
# else is ever touched.
work=""; mnt=""; loop=""; mounted=0
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  if [ "$mounted" = 1 ]; then
    umount "$mnt" 2>/dev/null || { sleep 1; umount "$mnt" 2>/dev/null; } \
      || umount -l "$mnt" 2>/dev/null || echo "$prog: could not unmount $mnt" >&2
  fi
  if [ -n "$loop" ]; then
    losetup -d "$loop" 2>/dev/null || echo "$prog: could not detach $loop" >&2
  fi
  [ -n "$mnt" ] && rmdir "$mnt" 2>/dev/null
  [ -n "$work" ] && rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
