# Sourced by ext4dio's shell tests, benchmarks and the demo: record every
# loop device, mount and scratch directory the script makes, as soon as it
# exists, so that its trap (and, if the script is killed, the trap of the
# run that started it) tears down exactly those and nothing else
# (scripts/cleanup-run.sh has the record format).
#
#   rr_begin                 this script's run directory, inside the parent
#                            run's ($EXT4DIO_TEST_RUN_DIR) when there is one;
#                            exported, so children record into it too
#   d=$(rr_mkdtemp TEMPLATE) mktemp -d, recorded
#   l=$(rr_losetup IMG)      losetup --find --show (direct I/O when it can),
#                            the backing file recorded before, the device after
#   rr_mount DEV MNT [ARGS]  mount, recorded
#   rr_cleanup               tear down what this script recorded (for a trap)
rr_scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rr_dir=""

rr_begin() {
  local parent=${EXT4DIO_TEST_RUN_DIR:-}
  if [ -n "$parent" ] && [ -d "$parent" ]; then
    rr_dir=$(mktemp -d "$parent/sh-XXXXXX") || return 1
  else
    rr_dir=$(mktemp -d /dev/shm/ext4dio-run-XXXXXX 2>/dev/null ||
      mktemp -d /tmp/ext4dio-run-XXXXXX) || return 1
  fi
  export EXT4DIO_TEST_RUN_DIR=$rr_dir
}

rr_record() {  # FIELDS...: one tab-separated line, appended in one write
  [ -n "$rr_dir" ] || return 0
  local IFS=$'\t'
  printf '%s\n' "$*" >>"$rr_dir/record"
}

rr_identity() {  # PATH -> "MAJ:MIN<TAB>INO" of the file's own device and inode
  stat -c '%Hd:%Ld	%i' "$1"
}

rr_mkdtemp() {
  local d
  d=$(mktemp -d "$1") || return 1
  rr_record dir "$(rr_identity "$d")" "$d"
  printf '%s\n' "$d"
}

rr_losetup() {
  local img=$1 id dev
  id=$(rr_identity "$img") || return 1
  rr_record image "$id" "$img"
  dev=$(losetup --find --show --direct-io=on "$img" 2>/dev/null) ||
    dev=$(losetup --find --show "$img") || return 1
  rr_record loop "$dev" "$id"
  printf '%s\n' "$dev"
}

rr_mount() {
  local dev=$1 mnt=$2
  shift 2
  rr_record mount "$dev" "$mnt"
  mount "$@" "$dev" "$mnt"
}

rr_cleanup() {
  [ -n "$rr_dir" ] || return 0
  bash "$rr_scripts/cleanup-run.sh" "$rr_dir"
  rr_dir=""
}
