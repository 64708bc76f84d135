# Sourced by the root benchmarks (seed_case1.sh, seed_tables.sh): the
# scratch state they set up and the trap that tears it down even on failure
# or ^C. The sourcing script sets `prog` (for messages), then makes its
# directories with rr_mkdtemp and its loop device with rr_losetup
# (scripts/run-record.sh: each recorded the moment it exists), and sets
# `mnt` and `mounted=1` when it mounts something (a loop device of its own or
# a device given on the command line). The trap unmounts `mnt` if mounted,
# then tears down exactly what was recorded; nothing else is ever touched.
# shellcheck source=scripts/run-record.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/run-record.sh"
rr_begin || { echo "$prog: cannot make a run directory" >&2; exit 1; }
work=""; mnt=""; loop=""; mounted=0
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  if [ "$mounted" = 1 ]; then
    umount "$mnt" 2>/dev/null || { sleep 1; umount "$mnt" 2>/dev/null; } \
      || umount -l "$mnt" 2>/dev/null || echo "$prog: could not unmount $mnt" >&2
  fi
  rr_cleanup || echo "$prog: cleanup left something behind (see above)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
