#!/usr/bin/env bash
# The fio engine end to end (root, a loop device backed by /dev/shm):
# fio's own verify= (crc32c, md5) through it with 1 and 4 jobs, over written
# extents (fast path) and holes/appends (kernel path), fsync= mapped to the
# library's sync, reads and writes mixed in one run; image mode never
# touching a host file of the same name; thread=1 enforced; --enghelp.
# Batching (fio's queue/commit model): verify at iodepth=32,
# iodepth_batch_submit=8 over every value of the engine's options (mode,
# backend, fixed buffers, reap_promptly: all 24 combinations; jobs, rw,
# verify and iodepth_batch_complete_min 1/4/32 pairwise); every I/O gets a
# submission-latency sample; batches of 16 reach the library as batches
# (fio's submit histogram) and take far fewer io_uring_enter calls than
# I/Os (strace); a refused request inside a batch fails alone.
# Usage: fio_engine_test.sh ENGINE.so   (exit 77 when root or loops are missing)
set -uo pipefail
engine=$1
if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root (loop devices, mount)"; exit 77; fi
if ! losetup -f >/dev/null 2>&1; then echo "SKIP: no free loop device"; exit 77; fi
command -v fio >/dev/null || { echo "SKIP: fio is not installed"; exit 77; }
command -v strace >/dev/null || { echo "strace is missing (scripts/setup.sh installs it)"; exit 1; }

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
# fio_ok ARGS...: fio exits 0, reports no job error, did I/O, and recorded a
# submission latency (slat) for every I/O: fio leaves that to an engine with
# a commit hook, and an engine that does not call io_u_queued has none.
fio_ok() {
  fio --ioengine=external:"$engine" --thread=1 --direct=1 --verify_state_save=0 "$@" --output-format=json \
    --output="$dir/fio.json" >"$dir/fio.out" 2>"$dir/fio.err" || { cat "$dir/fio.out" "$dir/fio.err"; return 1; }
  python3 - "$dir/fio.json" "${sync_calls:-0}" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])  # fio may print warnings first
bad = [(x["jobname"], x["error"]) for x in j["jobs"] if x["error"] != 0]
if bad: print("job errors:", bad); sys.exit(1)
ios = sum(x[d]["total_ios"] for x in j["jobs"] for d in ("read", "write"))
slat = sum(x[d]["slat_ns"]["N"] for x in j["jobs"] for d in ("read", "write"))
print("ios:", ios, "slat samples:", slat)
if ios == 0: print("no I/O done"); sys.exit(1)
if sys.argv[2] == "1":  # iodepth=1: synchronous calls, completed in queue() (no slat, as psync)
    if slat != 0: print("synchronous I/Os with a submission latency"); sys.exit(1)
elif slat != ios: print("I/Os without a submission-latency sample"); sys.exit(1)
PY
}

truncate -s 512M "$dir/fs.img"
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
# iodepth=1: one synchronous library call per I/O (one io_uring_enter),
# completed inside queue(); both paths, verified.
sync_calls=1
check "iodepth=1 (synchronous calls), verify, fast path" fio_ok --name=s1 --filename="$mnt/written" \
  --rw=randwrite --bs=4k --iodepth=1 --size=8M --verify=crc32c --do_verify=1 --verify_fatal=1
rm -f "$mnt/s1sparse"; truncate -s 16M "$mnt/s1sparse"
check "iodepth=1 (synchronous calls), verify, holes (kernel path), 2 jobs" fio_ok --name=s2 \
  --filename="$mnt/s1sparse" --rw=randwrite --bs=4k --iodepth=1 --size=4M --offset_increment=8M \
  --numjobs=2 --verify=md5 --do_verify=1 --verify_fatal=1
rm -f "$mnt/s1sparse"
sync_calls=0
check "reads and writes at once (rw=randrw), then verify" fio_ok --name=rw --filename="$mnt/written" \
  --rw=randrw --bs=4k --iodepth=32 --size=32M --numjobs=2 --offset_increment=32M \
  --verify=crc32c --do_verify=1 --verify_fatal=1
check "the kernel path was really used: the sparse file got blocks" \
  sh -c "[ \$(stat -c %b '$mnt/sparse') -gt 0 ]"
check "fio never created or extended a file" \
  sh -c "[ \$(stat -c %s '$mnt/sparse') = 67108864 ] && [ \$(ls '$mnt' | wc -l) = 4 ]"
check "a missing file is created and written (as fio's own engines do)" \
  sh -c "fio --ioengine=external:'$engine' --thread=1 --name=m --filename='$mnt/missing' --rw=write --size=1M >/dev/null 2>&1 && [ \$(stat -c %s '$mnt/missing') = 1048576 ] && rm '$mnt/missing'"

# Batching: fio queues up to iodepth_batch_submit io_us, commits them as one
# batch and reaps at least iodepth_batch_complete_min at a time. Every mode
# x backend x fixed buffers x reap_promptly combination; jobs, rw, verify
# and the completion batch vary so that every pair of values meets. "kernel"
# is a fresh sparse file each time (every write allocates), "image" a file
# inside an unmounted image.
mkdir -p "$dir/combo-src/data" && head -c 64M /dev/urandom >"$dir/combo-src/data/file"
truncate -s 128M "$dir/combo.img" && mkfs.ext4 -q -b 4096 -d "$dir/combo-src" "$dir/combo.img"
dd if=/dev/zero of="$mnt/cwritten" bs=1M count=64 oflag=direct status=none
while read -r mode backend fixed reap jobs rw v cmin; do
  case $mode in
    fast) target=(--filename="$mnt/cwritten") ;;
    kernel) rm -f "$mnt/csparse"; truncate -s 64M "$mnt/csparse"; target=(--filename="$mnt/csparse") ;;
    image) target=(--ext4dio_image="$dir/combo.img" --filename=/data/file) ;;
  esac
  check "batched: $mode backend=$backend fixed_buffers=$fixed reap_promptly=$reap $jobs job(s) $rw verify=$v complete_min=$cmin" \
    fio_ok --name=b "${target[@]}" --ext4dio_backend="$backend" --ext4dio_fixed_buffers="$fixed" \
    --ext4dio_reap_promptly="$reap" --rw="$rw" --bs=4k --size=4M --offset_increment=16M \
    --numjobs="$jobs" --iodepth=32 --iodepth_batch_submit=8 --iodepth_batch_complete_min="$cmin" \
    --iodepth_batch_complete_max=32 --verify="$v" --do_verify=1 --verify_fatal=1
done <<'ROWS'
fast uring 0 0 1 randwrite crc32c 1
fast uring 0 1 4 randrw md5 4
fast uring 1 0 1 randrw md5 32
fast uring 1 1 4 randwrite crc32c 32
fast sync 0 0 1 randwrite crc32c 4
fast sync 0 1 4 randrw md5 1
fast sync 1 0 4 randwrite md5 1
fast sync 1 1 1 randrw crc32c 4
kernel uring 0 0 1 randwrite crc32c 32
kernel uring 0 1 4 randrw md5 1
kernel uring 1 0 1 randwrite crc32c 4
kernel uring 1 1 4 randrw md5 32
kernel sync 0 0 1 randwrite crc32c 32
kernel sync 0 1 4 randrw md5 1
kernel sync 1 0 1 randwrite crc32c 4
kernel sync 1 1 4 randrw md5 1
image uring 0 0 1 randwrite crc32c 4
image uring 0 1 4 randrw md5 32
image uring 1 0 1 randwrite crc32c 1
image uring 1 1 4 randrw md5 4
image sync 0 0 1 randwrite crc32c 32
image sync 0 1 4 randrw md5 1
image sync 1 0 1 randwrite crc32c 4
image sync 1 1 4 randrw md5 32
ROWS
check "e2fsck -fn clean on the batched runs' image" e2fsck -fn "$dir/combo.img"

# One commit is one batch: with iodepth_batch_submit=16 and
# iodepth_batch_complete_min=16, fio's submit histogram has (nearly) every
# submission in its 9..16 bucket, and the ring sees far fewer io_uring_enter
# calls than I/Os (a count, not a timing: < I/Os / 4; submitting inside
# queue() made one per I/O).
batch_calls() {
  strace -f -c -e trace=io_uring_enter -o "$dir/strace.txt" \
    fio --ioengine=external:"$engine" --thread=1 --direct=1 --name=s --filename="$mnt/cwritten" \
    --ext4dio_backend=uring --rw=randwrite --bs=4k --size=64M --number_ios=4096 --iodepth=32 \
    --iodepth_batch_submit=16 --iodepth_batch_complete_min=16 --output-format=json \
    --output="$dir/s.json" >"$dir/s.out" 2>&1 || { cat "$dir/s.out"; return 1; }
  python3 - "$dir/s.json" "$dir/strace.txt" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
ios = job["write"]["total_ios"]
calls = 0
for line in open(sys.argv[2]):  # "% time  seconds  usecs/call  calls  [errors]  syscall"
    f = line.split()
    if f and f[-1] == "io_uring_enter": calls = int(f[3])
print("ios:", ios, "io_uring_enter calls:", calls, "submit histogram:", job["iodepth_submit"])
if ios != 4096: print("expected 4096 I/Os"); sys.exit(1)
if job["iodepth_submit"]["16"] < 90: print("submissions are not batches of 16"); sys.exit(1)
if job["iodepth_complete"]["16"] < 90: print("completions are not reaped 16 at a time"); sys.exit(1)
if not 0 < calls < ios / 4: print("not about one io_uring_enter per batch"); sys.exit(1)
PY
}
check "iodepth_batch_submit=16: batches of 16, io_uring_enter calls < I/Os / 4" batch_calls

# A request the library refuses (no_fallback: a hole needs allocation) fails
# alone: the requests after it in the same batch are started again and
# written. The refusal is EOPNOTSUPP (95), which fio continues past only when
# told (ignore_error). Holes at blocks 0, 3 and 12 of every 16 (first and middle of a
# batch of 8: sequential writes, committed and reaped 8 at a time), every
# one refused (the library's message printed once for the file), nothing
# allocated.
refused_in_batch() {
  local f=$mnt/holey blocks
  dd if=/dev/zero of="$f" bs=1M count=1 oflag=direct status=none || return 1
  for i in $(seq 0 255); do
    case $((i % 16)) in 0|3|12) fallocate --punch-hole -o $((i * 4096)) -l 4096 "$f" || return 1 ;; esac
  done
  blocks=$(stat -c %b "$f")
  fio --ioengine=external:"$engine" --thread=1 --direct=1 --name=h --filename="$f" --rw=write \
    --bs=4k --size=1M --iodepth=8 --iodepth_batch_submit=8 --iodepth_batch_complete_min=8 \
    --ext4dio_no_fallback=1 --continue_on_error=all --ignore_error=,95 --buffer_pattern=0xa5 --output-format=json \
    --output="$dir/h.json" 2>"$dir/h.err" || { cat "$dir/h.err"; return 1; }
  [ "$(stat -c %b "$f")" = "$blocks" ] || { echo "blocks were allocated"; return 1; }
  python3 - "$dir/h.json" "$dir/h.err" "$f" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
holes = [i for i in range(256) if i % 16 in (0, 3, 12)]
msgs = [int(m) for m in re.findall(r"bytes (\d+)\.\.\d+ are a hole", open(sys.argv[2]).read())]
data = open(sys.argv[3], "rb").read()
zero = [i for i in range(256) if data[i * 4096:(i + 1) * 4096] == bytes(4096)]
written = [i for i in range(256) if data[i * 4096:(i + 1) * 4096] == b"\xa5" * 4096]
print("errors:", job["total_err"], "messages:", len(msgs), "holes left:", len(zero),
      "written blocks:", len(written), "expected", len(holes), "holes")
# One message for the file's refusals (the engine logs once per file and
# code): the first hole's; fio's total_err and the data show every one.
ok = (job["total_err"] == len(holes) and msgs == [holes[0] * 4096] and
      zero == holes and len(written) == 256 - len(holes))
sys.exit(0 if ok else 1)
PY
}
check "a refused request in a batch fails alone; the rest of the batch is written" refused_in_batch

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
