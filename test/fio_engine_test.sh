#!/usr/bin/env bash
# The fio engine end to end (root, a loop device backed by /dev/shm):
# fio's own verify= (crc32c, md5) through it with 1 and 4 jobs, over written
# extents (fast path) and holes/appends (kernel path), fsync= mapped to the
# library's sync, reads and writes mixed in one run; image mode never
# touching a host file of the same name; thread=1 enforced; --enghelp.
# Usage: fio_engine_test.sh ENGINE.so   (exit 77 when root or loops are missing)
set -uo pipefail
engine=$1
if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root (loop devices, mount)"; exit 77; fi
if ! losetup -f >/dev/null 2>&1; then echo "SKIP: no free loop device"; exit 77; fi
command -v fio >/dev/null || { echo "SKIP: fio is not installed"; exit 77; }

# Everything made here is recorded as it is made and torn down by the trap
# (scripts/run-record.sh): only what this run created is ever touched.
. "$(dirname "$0")/../scripts/run-record.sh"
rr_begin || exit 1
trap rr_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
dir=$(rr_mkdtemp /dev/shm/ext4dio-test-fio-XXXXXX) || exit 1
loop=""; mnt="$dir/mnt"
fails=0
check() {  # check NAME CMD...: runs, prints the outcome
  local name=$1; shift
  if "$@" >"$dir/out" 2>&1; then echo "ok   $name"; else
    echo "FAIL $name"; sed 's/^/     /' "$dir/out" | tail -20; fails=$((fails + 1)); fi
}
fio_ok() {  # fio_ok ARGS...: fio exits 0 and reports no job error
  fio --ioengine=external:"$engine" --thread=1 --direct=1 --verify_state_save=0 "$@" --output-format=json \
    --output="$dir/fio.json" >"$dir/fio.out" 2>"$dir/fio.err" || { cat "$dir/fio.out" "$dir/fio.err"; return 1; }
  python3 - "$dir/fio.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])  # fio may print warnings first
bad = [(x["jobname"], x["error"]) for x in j["jobs"] if x["error"] != 0]
if bad: print("job errors:", bad); sys.exit(1)
print("ios:", sum(x["write"]["total_ios"] + x["read"]["total_ios"] for x in j["jobs"]))
PY
}

truncate -s 256M "$dir/fs.img"
mkfs.ext4 -q -b 4096 "$dir/fs.img"
loop=$(rr_losetup "$dir/fs.img") || exit 1
mkdir "$mnt" && rr_mount "$loop" "$mnt" || exit 1
dd if=/dev/zero of="$mnt/written" bs=1M count=64 oflag=direct status=none   # fast path
truncate -s 64M "$mnt/sparse"                                                # kernel path
# half written, half hole
dd if=/dev/zero of="$mnt/mixed" bs=1M count=32 oflag=direct status=none && truncate -s 64M "$mnt/mixed"

check "enghelp lists the ext4dio_ options" \
  sh -c "fio --enghelp='$engine' | grep -q ext4dio_image && fio --enghelp='$engine' | grep -q ext4dio_no_fallback"
thread_error() {  # fio without thread=1: fails, and says why
  if fio --ioengine=external:"$engine" --name=x --filename="$mnt/written" --rw=read \
       --size=1M >"$dir/t.out" 2>&1; then echo "fio succeeded without thread=1"; return 1; fi
  grep -q 'needs thread=1' "$dir/t.out" || { cat "$dir/t.out"; return 1; }
}
check "thread=1 is required, with a clear error" thread_error
for v in crc32c md5; do
  check "verify=$v, 1 job, written extents (fast path)" fio_ok --name=v1 --filename="$mnt/written" \
    --rw=randwrite --bs=4k --iodepth=16 --size=16M --verify=$v --do_verify=1 --verify_fatal=1
  check "verify=$v, 4 jobs, holes (kernel path)" fio_ok --name=v4 --filename="$mnt/sparse" \
    --rw=randwrite --bs=8k --iodepth=8 --size=8M --offset_increment=8M --numjobs=4 \
    --verify=$v --do_verify=1 --verify_fatal=1
done
check "verify, 4 jobs over fast and kernel path, fsync=16" fio_ok --name=vm --filename="$mnt/mixed" \
  --rw=randwrite --bs=4k --iodepth=8 --size=16M --offset_increment=16M --numjobs=4 --fsync=16 \
  --verify=crc32c --do_verify=1 --verify_fatal=1
check "reads and writes at once (rw=randrw), then verify" fio_ok --name=rw --filename="$mnt/written" \
  --rw=randrw --bs=4k --iodepth=32 --size=32M --numjobs=2 --offset_increment=32M \
  --verify=crc32c --do_verify=1 --verify_fatal=1
check "the kernel path was really used: the sparse file got blocks" \
  sh -c "[ \$(stat -c %b '$mnt/sparse') -gt 0 ]"
check "fio never created or extended a file" \
  sh -c "[ \$(stat -c %s '$mnt/sparse') = 67108864 ] && [ \$(ls '$mnt' | wc -l) = 4 ]"
check "a missing file is an error, not created" \
  sh -c "! fio --ioengine=external:'$engine' --thread=1 --name=m --filename='$mnt/missing' --rw=write --size=1M >/dev/null 2>&1 && [ ! -e '$mnt/missing' ]"

# Image mode: the filename is a path inside the image; a host file of the
# same name stays as it was.
umount "$mnt"
check "e2fsck -fn clean after the mounted runs" e2fsck -fn "$loop"
canary="$dir/canary"; echo "host file" > "$canary"
mkdir -p "$dir/src/$(dirname "$canary")"
head -c 16M /dev/urandom > "$dir/src/$canary"
truncate -s 64M "$dir/img" && mkfs.ext4 -q -b 4096 -d "$dir/src" "$dir/img"
check "image mode, verify, 2 jobs" fio_ok --name=img --ext4dio_image="$dir/img" --filename="$canary" \
  --rw=randwrite --bs=4k --iodepth=32 --size=8M --offset_increment=8M --numjobs=2 \
  --verify=crc32c --do_verify=1 --verify_fatal=1
check "image mode left the host file alone" sh -c "[ \"\$(cat '$canary')\" = 'host file' ]"
check "e2fsck -fn clean on the image" e2fsck -fn "$dir/img"

echo "$fails failed"
[ "$fails" = 0 ]
