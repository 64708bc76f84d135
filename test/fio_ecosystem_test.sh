#!/usr/bin/env bash
# The fio engine behaves as fio's own engines do (issue 12, "fio engine"),
# each check next to fio's io_uring engine on the same file system where
# there is one to compare with:
#  * size=/offset= past EOF, mounted: the job does the I/O it asked for, as
#    io_uring does (same size after, same bytes moved), verified (verify=);
#    in an image the job fails with the library's refusal before any I/O and
#    the image is unchanged (byte for byte, e2fsck -fn, debugfs size);
#  * files that do not exist, mounted (filename= in a new directory,
#    directory= + nrfiles=): created and laid out; image: an error naming
#    the file, nothing created on the host;
#  * a library refusal: its message, once; an errno that says what it is
#    (not EIO, so no zonemode=zbd hint);
#  * one statistics line per file at the end, on stderr (JSON on stdout stays
#    JSON), with fast/kernel bytes and why the fast path was off;
#  * fdatasync latency: more than 1 us and within 10x of io_uring's (medians,
#    same file, same run), at iodepth 1 and 8.
# Usage: fio_ecosystem_test.sh ENGINE.so   (exit 77 when root or loops are missing)
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
dir=$(rr_mkdtemp /dev/shm/ext4dio-test-fioeco-XXXXXX) || exit 1
mnt="$dir/mnt"
fails=0
check() {  # check NAME CMD...: runs, prints the outcome
  local name=$1; shift
  if "$@" >"$dir/out" 2>&1; then echo "ok   $name"; else
    echo "FAIL $name"; sed 's/^/     /' "$dir/out" | tail -20; fails=$((fails + 1)); fi
}
MiB=$((1024 * 1024))

# run ENGINE ARGS...: fio with JSON on stdout ($dir/j.json), stderr in
# $dir/j.err, exit status in $dir/j.rc; never fails itself.
run() {
  local eng=$1; shift
  local e=(--ioengine=io_uring)
  [ "$eng" = ext4dio ] && e=(--ioengine=external:"$engine" --thread=1)
  fio "${e[@]}" --direct=1 --verify_state_save=0 "$@" --output-format=json >"$dir/j.json" 2>"$dir/j.err"
  echo $? >"$dir/j.rc"
}
# job FIELD...: prints the job's fields from $dir/j.json, summed over jobs:
# error, wbytes, rbytes, syncp50 (fdatasync latency median, ns). fio may
# print its own warnings before the JSON (STRICT=1: stdout is JSON only).
job() {
  STRICT=${STRICT:-0} python3 - "$dir/j.json" "$@" <<'PY'
import json, os, sys
text = open(sys.argv[1]).read()
jobs = json.loads(text if os.environ["STRICT"] == "1" else text[text.index("{"):])["jobs"]
get = {"error": lambda j: j["error"], "wbytes": lambda j: j["write"]["io_bytes"],
       "rbytes": lambda j: j["read"]["io_bytes"],
       "syncp50": lambda j: j["sync"]["lat_ns"]["percentile"]["50.000000"]}
print(" ".join(str(sum(get[f](j) for j in jobs)) for f in sys.argv[2:]))
PY
}
# expect_ok WBYTES RBYTES: the last run exited 0, no job error, moved exactly that.
expect_ok() {
  local rc; rc=$(cat "$dir/j.rc")
  [ "$rc" = 0 ] || { echo "fio exited $rc"; cat "$dir/j.err"; return 1; }
  local got; got=$(job error wbytes rbytes) || { echo "stdout is not JSON:"; head -5 "$dir/j.json"; return 1; }
  [ "$got" = "0 $1 $2" ] || { echo "error, written, read: $got; expected 0 $1 $2"; cat "$dir/j.err"; return 1; }
}

truncate -s 256M "$dir/fs.img"
mkfs.ext4 -q -b 4096 "$dir/fs.img"
loop=$(rr_losetup "$dir/fs.img") || exit 1
mkdir "$mnt" && rr_mount "$loop" "$mnt" || exit 1
written() { rm -f "$1"; dd if=/dev/zero of="$1" bs=1M count="$2" oflag=direct status=none; }

# ---- size=/offset= past EOF, mounted: what io_uring does, through the library.
past_eof() {  # past_eof SIZE_MIB JOB ARGS...: the same job through io_uring and ext4dio
  local mib=$1; shift
  written "$mnt/u" "$mib"; written "$mnt/e" "$mib"
  run io_uring --name=u --filename="$mnt/u" "$@"
  local want_size want_io; want_size=$(stat -c %s "$mnt/u")
  want_io=$(job wbytes rbytes) || return 1
  run ext4dio --name=e --filename="$mnt/e" "$@"
  expect_ok $want_io || return 1
  echo "io_uring: size $want_size, written+read $want_io; ext4dio: size $(stat -c %s "$mnt/e")"
  [ "$(stat -c %s "$mnt/e")" = "$want_size" ] || { echo "sizes differ"; return 1; }
}
check "size=16M on an 8 MiB file: 16 MiB written and verified, size 16 MiB (as io_uring)" \
  past_eof 8 --rw=write --bs=64k --size=16M --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1
check "randwrite size=16M on an 8 MiB file: every block once, verified (as io_uring)" \
  past_eof 8 --rw=randwrite --bs=4k --size=16M --iodepth=16 --verify=crc32c --do_verify=1 --verify_fatal=1
check "offset=20M size=4M on an 8 MiB file: 4 MiB written at 20M, size 24 MiB (as io_uring)" \
  past_eof 8 --rw=write --bs=64k --offset=20M --size=4M --iodepth=8 --verify=md5 --do_verify=1 --verify_fatal=1
check "randread size=16M on an 8 MiB file: laid out, 16 MiB read (as io_uring)" \
  past_eof 8 --rw=randread --bs=4k --size=16M --iodepth=8
check "fallocate=none, 2 jobs past EOF on one file: the writes extend it, verified (as io_uring)" \
  past_eof 4 --rw=write --bs=16k --size=4M --offset_increment=4M --numjobs=2 --fallocate=none \
    --iodepth=4 --verify=crc32c --do_verify=1 --verify_fatal=1
old_data() {  # the bytes below the old EOF are kept (fio itself unlinks and starts anew)
  rm -f "$mnt/k"; head -c $((4 * MiB)) /dev/urandom >"$dir/k4"; cp "$dir/k4" "$mnt/k" && sync
  run ext4dio --name=k --filename="$mnt/k" --rw=write --bs=64k --offset=4M --size=4M --iodepth=4
  expect_ok $((4 * MiB)) 0 || return 1
  cmp -n $((4 * MiB)) "$dir/k4" "$mnt/k" && [ "$(stat -c %s "$mnt/k")" = $((8 * MiB)) ]
}
check "extending keeps the data below the old EOF" old_data

# ---- Files that do not exist, mounted: created and laid out, as io_uring.
new_file() {
  rm -rf "$mnt/newdir"
  run ext4dio --name=n --filename="$mnt/newdir/sub/f" --rw=write --bs=64k --size=4M --iodepth=4 \
    --verify=crc32c --do_verify=1 --verify_fatal=1
  expect_ok $((4 * MiB)) $((4 * MiB)) && [ "$(stat -c %s "$mnt/newdir/sub/f")" = $((4 * MiB)) ]
}
check "filename= of a new file in new directories: created, 4 MiB written and verified" new_file
new_files() {
  rm -rf "$mnt/d"; mkdir "$mnt/d"
  run ext4dio --name=n --directory="$mnt/d" --nrfiles=3 --rw=randread --bs=4k --size=12M --iodepth=8
  expect_ok 0 $((12 * MiB)) || return 1
  [ "$(ls "$mnt/d" | wc -l)" = 3 ] || { ls -l "$mnt/d"; return 1; }
  for f in "$mnt"/d/*; do [ "$(stat -c %s "$f")" = $((4 * MiB)) ] || { ls -l "$mnt/d"; return 1; }; done
}
check "directory= nrfiles=3, randread: 3 files created and laid out, 12 MiB read" new_files
# Failing for the right reason: the engine's open of the missing file (not
# a bad option or an engine that did not load).
check "allow_file_create=0: a missing file is an error, not created" sh -c "
  ! fio --ioengine=external:'$engine' --thread=1 --name=m --filename='$mnt/nocreate' --rw=write \
    --size=1M --allow_file_create=0 >/dev/null 2>'$dir/nc.err' && [ ! -e '$mnt/nocreate' ] &&
  grep -q 'ext4dio: open $mnt/nocreate.*No such file' '$dir/nc.err' || { cat '$dir/nc.err'; exit 1; }"

# ---- Statistics at the end, on stderr; JSON on stdout stays JSON.
stats_line() {
  written "$mnt/st" 8
  run ext4dio --name=st --filename="$mnt/st" --rw=write --bs=64k --size=16M --iodepth=8 \
    --numjobs=2 --offset_increment=16M
  expect_ok $((32 * MiB)) 0 || return 1
  STRICT=1 job error >/dev/null || { echo "stdout is not JSON only:"; head -3 "$dir/j.json"; return 1; }
  cat "$dir/j.err"
  # 8 MiB overwrite the written extents (fast path), 24 MiB past EOF: the kernel's.
  [ "$(grep -c '^ext4dio: ' "$dir/j.err")" = 1 ] &&
    grep -q "^ext4dio: $mnt/st: fast 8.0 MiB, kernel 24.0 MiB, .*lease breaks 0, re-maps [0-9]*, fast path on$" \
      "$dir/j.err"
}
check "one stats line per file (2 jobs, one file): fast 8 MiB, kernel 24 MiB, fast path on; JSON stdout" stats_line
stats_off() {  # a descriptor held elsewhere: no lease, all kernel path, and the line says why
  written "$mnt/held" 4
  exec 9<"$mnt/held"
  run ext4dio --name=h --filename="$mnt/held" --rw=randwrite --bs=4k --size=4M --iodepth=8
  exec 9<&-
  expect_ok $((4 * MiB)) 0 || return 1
  cat "$dir/j.err"
  grep -q "^ext4dio: $mnt/held: fast 0 B, kernel 4.0 MiB, .*fast path off (lease-unavailable): .*lease.*open elsewhere" "$dir/j.err"
}
check "stats line: fast path off (file open elsewhere), why, all 4 MiB through the kernel" stats_off

# ---- A library refusal: its message once, a specific errno, no zoned hint.
# The same hole written 5 times (norandommap, io_size 5 blocks of size 1
# block); fio goes on past errors other than EIO only when told which
# (ignore_error: EOPNOTSUPP is 95).
refusal() {
  rm -f "$mnt/hole"; truncate -s 1M "$mnt/hole"
  run ext4dio --name=r --filename="$mnt/hole" --rw=randwrite --norandommap --bs=4k --size=4k \
    --io_size=20k --iodepth="$1" --ext4dio_no_fallback=1 --continue_on_error=all --ignore_error=,95
  cat "$dir/j.err"
  [ "$(cat "$dir/j.rc")" = 0 ] || return 1  # continue_on_error: the job runs to its end
  python3 - "$dir/j.json" <<'PY' || return 1
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print("errors:", j["total_err"], "first error:", j["first_error"])
import errno
sys.exit(0 if j["total_err"] == 5 and j["first_error"] == errno.EOPNOTSUPP else 1)
PY
  [ "$(grep -c 'bytes 0\.\.4095 are a hole' "$dir/j.err")" = 1 ] || { echo "not printed once"; return 1; }
  ! grep -q -e 'zonemode' -e 'Input/output error' "$dir/j.err" && [ "$(stat -c %b "$mnt/hole")" = 0 ]
}
check "a refusal repeated 5 times, iodepth 1: the library's message once, EOPNOTSUPP, no zoned hint" refusal 1
check "a refusal repeated 5 times, iodepth 4: the library's message once, EOPNOTSUPP, no zoned hint" refusal 4
# Refusals at 16 different offsets of one file (a random job over holes):
# still one message, not one per offset.
refusals_many() {
  rm -f "$mnt/holes"; truncate -s 1M "$mnt/holes"
  run ext4dio --name=r --filename="$mnt/holes" --rw=randwrite --bs=4k --size=64k --iodepth=4 \
    --ext4dio_no_fallback=1 --continue_on_error=all --ignore_error=,95
  cat "$dir/j.err"
  [ "$(cat "$dir/j.rc")" = 0 ] || return 1
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; sys.exit(0 if j["total_err"] == 16 else 1)' \
    "$dir/j.json" || { echo "not 16 refusals"; return 1; }
  [ "$(grep -c 'are a hole' "$dir/j.err")" = 1 ] || { echo "not printed once"; return 1; }
}
check "refusals at 16 offsets of one file: the library's message once" refusals_many

# ---- fdatasync latency: measured around the sync, of the order of the kernel's.
sync_latency() {
  local qd=$1 ours theirs
  written "$mnt/sync" 4
  run ext4dio --name=s --filename="$mnt/sync" --rw=randwrite --bs=4k --size=4M --iodepth="$qd" --fdatasync=4
  expect_ok $((4 * MiB)) 0 || return 1
  ours=$(job syncp50) || return 1
  run io_uring --name=s --filename="$mnt/sync" --rw=randwrite --bs=4k --size=4M --iodepth=1 --fdatasync=4
  theirs=$(job syncp50) || return 1
  echo "fdatasync latency median: ext4dio (iodepth $qd) $ours ns, io_uring (iodepth 1) $theirs ns" \
    "(ratio printed, not asserted both ways: on a loaded host the kernel's own fdatasync" \
    "has been seen at 3.5 ms against a usual 10-60 us)"
  # The defect was a sync timed before it ran (0.1-0.2 us): a device flush
  # measured around the call takes at least a microsecond; and it must not
  # be inflated past the kernel's own by an order of magnitude.
  [ "$ours" -gt 1000 ] && [ "$ours" -lt $((theirs * 10)) ]
}
check "fdatasync latency at iodepth 1: > 1 us and under 10x io_uring's" sync_latency 1
check "fdatasync latency at iodepth 8: > 1 us and under 10x io_uring's" sync_latency 8

umount "$mnt"
check "e2fsck -fn clean after the mounted runs" e2fsck -fn "$loop"

# ---- Image mode: the file cannot grow; a missing file is named; nothing written.
mkdir -p "$dir/src/data" && head -c $((64 * MiB)) /dev/urandom >"$dir/src/data/file"
truncate -s 128M "$dir/img" && mkfs.ext4 -q -b 4096 -d "$dir/src" "$dir/img"
sum=$(md5sum <"$dir/img")
image_refused() {  # image_refused WHAT ARGS...: fio fails, says WHAT, the image is unchanged
  local what=$1; shift
  run ext4dio --name=i --ext4dio_image="$dir/img" "$@" --bs=64k --iodepth=8
  cat "$dir/j.err"
  [ "$(cat "$dir/j.rc")" != 0 ] || { echo "fio exited 0"; return 1; }
  local err; err=$(job error) || return 1
  [ "$err" != 0 ] || { echo "job error 0"; return 1; }
  grep -q -- "$what" "$dir/j.err" || { echo "no '$what' on stderr"; return 1; }
  ! grep -q -e zonemode -e 'Input/output error' "$dir/j.err" || return 1
  [ "$(md5sum <"$dir/img")" = "$sum" ] || { echo "the image changed"; return 1; }
  e2fsck -fn "$dir/img" || return 1
  debugfs -R "stat /data/file" "$dir/img" 2>/dev/null | grep -q "Size: $((64 * MiB))$"
}
check "image: size=128M on a 64 MiB file fails with the library's refusal, nothing written" \
  image_refused "/data/file: .*image mode never changes metadata" --filename=/data/file --rw=write --size=128M
check "image: offset=64M fails with the library's refusal, nothing written" \
  image_refused "/data/file: .*image mode never changes metadata" --filename=/data/file --rw=write --offset=64M --size=1M
check "image: randread past EOF fails too (no layout in an image), nothing written" \
  image_refused "/data/file: .*image mode never changes metadata" --filename=/data/file --rw=randread --size=80M
image_missing() {  # named, and no host file of that name appears
  image_refused "/data/missing" --filename=/data/missing --rw=write --size=1M && [ ! -e /data/missing ]
}
check "image: a missing file is an error naming it, nothing created" image_missing

echo "$fails failed"
[ "$fails" = 0 ]
