#!/usr/bin/env bash
# fio verify over first writes through the engine, mounted mode (issue 11,
# "Tests"): the kernel path -- hole fills of a sparse file, unwritten-extent
# conversions of a freshly fallocated one -- driven by 4 jobs on disjoint
# regions of one file (one shared library handle), 4 KiB random writes at
# QD 1 and 16, every block read back through the engine soon after it was
# written (verify=crc32c, verify_backlog=64), then:
#  * a full verify pass (verify_only) through the engine in a new fio, after
#    the writer is gone;
#  * the same pass through fio's own psync engine with O_DIRECT: what the
#    kernel reads from the file is what fio wrote;
#  * no unwritten extent left in the file (filefrag): the kernel converted
#    every block it was given;
#  * e2fsck -fn clean after umount.
# On 4 KiB-block ext4 (fallocated and sparse, QD 1 and 16) and one 1 KiB-block
# case.
# Usage: fio_verify_test.sh ENGINE.so   (exit 77 when root or loops are missing)
set -uo pipefail
engine=$1
if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root (loop devices, mount)"; exit 77; fi
if ! losetup -f >/dev/null 2>&1; then echo "SKIP: no free loop device"; exit 77; fi
command -v fio >/dev/null || { echo "SKIP: fio is not installed"; exit 77; }
command -v filefrag >/dev/null || { echo "filefrag is missing (e2fsprogs)"; exit 1; }

# Everything made here is recorded as it is made and torn down by the trap
# (scripts/run-record.sh): only what this run created is ever touched.
. "$(dirname "$0")/../scripts/run-record.sh"
rr_begin || exit 1
trap rr_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
dir=$(rr_mkdtemp /dev/shm/ext4dio-test-fiov-XXXXXX) || exit 1
fails=0
check() {  # check NAME CMD...: runs, prints the outcome
  local name=$1; shift
  if "$@" >"$dir/out" 2>&1; then echo "ok   $name"; else
    echo "FAIL $name"; sed 's/^/     /' "$dir/out" | tail -20; fails=$((fails + 1)); fi
}

jobs=4
per_job=$((8 * 1024 * 1024))  # bytes per job: 2048 4 KiB blocks
blocks=$((jobs * per_job / 4096))

# fio_run WANT_READS WANT_WRITES ARGS...: fio exits 0, no job reports an
# error, and the jobs together read and wrote exactly that many 4 KiB blocks
# (so a verify pass really read every block, and the writer wrote each once;
# a verify_only pass counts the writes it replays without issuing them).
fio_run() {
  local reads=$1 writes=$2; shift 2
  fio --direct=1 --verify_state_save=0 "$@" --output-format=json --output="$dir/fio.json" \
    >"$dir/fio.out" 2>"$dir/fio.err" || { cat "$dir/fio.out" "$dir/fio.err"; return 1; }
  python3 - "$dir/fio.json" "$reads" "$writes" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])  # fio may print warnings first
bad = [(x["jobname"], x["error"]) for x in j["jobs"] if x["error"] != 0]
if bad: print("job errors:", bad); sys.exit(1)
reads = sum(x["read"]["total_ios"] for x in j["jobs"])
writes = sum(x["write"]["total_ios"] for x in j["jobs"])
print("reads:", reads, "writes:", writes, "expected", sys.argv[2], sys.argv[3])
sys.exit(0 if (reads, writes) == (int(sys.argv[2]), int(sys.argv[3])) else 1)
PY
}

# The job: 4 jobs, each its own per_job bytes of the one file, every block
# written once in random order (fio's random map), crc32c headers.
job=(--name=v --rw=randwrite --bs=4k --size=$per_job --offset_increment=$per_job --numjobs=$jobs
     --verify=crc32c --verify_fatal=1)

no_unwritten() {  # the file has extents and none of them is unwritten
  filefrag -v "$1" | tee "$dir/frag" | grep -q unwritten && { echo "unwritten extents left:"; grep unwritten "$dir/frag" | head; return 1; }
  [ "$(stat -c %b "$1")" -ge $((jobs * per_job / 512)) ] || { echo "only $(stat -c %b "$1") sectors allocated"; return 1; }
}

# one_case BLOCK_SIZE LAYOUT QD: a fresh file, the writer with its backlog
# verify, then the verify-only passes through the engine and through psync.
one_case() {
  local bs=$1 layout=$2 qd=$3 f
  f="$mnt/$layout-qd$qd"
  case $layout in
    fallocated) fallocate -l $((jobs * per_job)) "$f" ;;
    sparse) truncate -s $((jobs * per_job)) "$f" ;;
  esac
  local tag="$bs-byte blocks, $layout file, QD $qd"
  check "$tag: randwrite 4 jobs, verify_backlog=64 through the engine" \
    fio_run $blocks $blocks --ioengine=external:"$engine" --thread=1 "${job[@]}" --filename="$f" \
      --iodepth="$qd" --do_verify=1 --verify_backlog=64
  local sum; sum=$(md5sum <"$f")
  check "$tag: verify_only through the engine, new process" \
    fio_run $blocks $blocks --ioengine=external:"$engine" --thread=1 "${job[@]}" --filename="$f" \
      --iodepth=16 --verify_only=1
  check "$tag: verify_only through psync (the kernel, O_DIRECT)" \
    fio_run $blocks $blocks --ioengine=psync "${job[@]}" --filename="$f" --verify_only=1
  check "$tag: the verify_only passes wrote nothing" sh -c "[ \"\$(md5sum <'$f')\" = '$sum' ]"
  check "$tag: every block written, no unwritten extent left" no_unwritten "$f"
  check "$tag: the size is unchanged" sh -c "[ \$(stat -c %s '$f') = $((jobs * per_job)) ]"
}

for row in "4096 fallocated 1" "4096 fallocated 16" "4096 sparse 1" "4096 sparse 16" \
           "1024 sparse 16" "1024 fallocated 1"; do
  set -- $row
  bs=$1
  img="$dir/fs-$bs.img"; mnt="$dir/mnt-$bs"
  if [ ! -e "$img" ]; then
    truncate -s 192M "$img" && mkfs.ext4 -q -b "$bs" "$img" || exit 1
    loop=$(rr_losetup "$img") || exit 1
    mkdir "$mnt" && rr_mount "$loop" "$mnt" || exit 1
    eval "loop_$bs=$loop"
  fi
  one_case "$@"
done
for bs in 4096 1024; do
  umount "$dir/mnt-$bs" || { echo "FAIL umount $dir/mnt-$bs"; fails=$((fails + 1)); continue; }
  eval "loop=\$loop_$bs"
  check "$bs-byte blocks: e2fsck -fn clean" e2fsck -fn "$loop"
done

echo "$fails failed"
[ "$fails" = 0 ]
