#!/usr/bin/env bash
# First writes: the kernel path against the kernel (issue 11). The ext4dio
# fio engine (tools/fio/ext4dio.so, mounted mode) beside fio's own engines
# doing the same I/O, in one run — interleaved rounds (each round runs every
# row of a point once, in a rotating order), medians, ratios — on a mounted
# ext4 (mkfs.ext4 -b 4096 -O sparse_super2) over a loop device (direct-io)
# over /dev/shm. fio, 4 KiB random writes, direct=1, randrepeat=1 (the same
# block sequence for every row), fallocate=none, invalidate=0:
#
#  1. first  first writes into a FRESH file of --file-size MiB (default
#            1 GiB) made for every run, two layouts: `fallocate -l` (unwritten
#            extents) and `truncate -s` (sparse); QD 1 and 32 x numjobs 1 and
#            4 (jobs on disjoint parts: size = file/numjobs,
#            offset_increment = size). The random map is ON and each run
#            writes --ios 4 KiB blocks in all (number_ios = io_size = IOS /
#            numjobs per job; default 16384 = 64 MiB, 6.25 % of the file, so
#            every write is a first write). Rows: ext4dio vs the kernel on
#            the same fresh file: fio psync at QD1, fio io_uring at QD32.
#            Target: ext4dio / kernel >= 1.0.
#  2. second the fast path after the first writes: a fresh fallocated file;
#            a first pass through ext4dio (QD32, numjobs 4) writes the WHOLE
#            region of --second-mib MiB (default 64; file bytes L..L+R, the
#            start of the largest run of the file's extents that is
#            contiguous on the device, so file bytes L.. = device bytes P..),
#            every block once; then, at QD 1 and 32 x numjobs 1 and 4, the
#            same job again with ext4dio beside fio io_uring (at QD1 also
#            fio psync) on the raw loop device writing the same device bytes
#            (offset = P, from tools/ext4dio-map). Each of these runs writes
#            the region 4 times (io_size = 4 x the job's part; fio refills its
#            random map after each pass), all overwrites of written blocks;
#            each fio run opens the file anew. Target: ext4dio / raw >= 0.97
#            (raw psync at QD1, as issue 10's QD1 target; raw io_uring else).
#  3. mixed  QD32, 1 job, a fresh file per run whose first half is written
#            (dd from /dev/urandom, oflag=direct) and second half fallocated:
#            one fio job with random_distribution=zoned:70/50:30/50 (70 % of
#            the writes to the written half, 30 % to the fallocated half;
#            fio turns the random map off for any non-uniform distribution,
#            so a few of the 30 % land on a block written earlier in the
#            same run: the report gives the measured share of first writes —
#            unwritten blocks before minus after, per I/O — which must be
#            25–35 % and the same for both rows). --ios writes per run.
#            ext4dio vs fio io_uring on the same file. Target: >= 1.0.
#
#   bench/firstwrite_bench.sh [--quick] [--reps R] [--ios N] [--only LIST]
#                             [--build DIR] [--out DIR] [--file-size MIB]
#                             [--second-mib MIB] [--image-size MIB]
#
#   --quick          smoke run: 1 round, 128 MiB file, 1024 I/Os per run,
#                    an 8 MiB second-pass region (seconds)
#   --reps R         rounds per point (default 3)
#   --ios N          4 KiB writes per run in sections 1 and 3 (default 16384)
#   --only LIST      comma-separated subset of first,second,mixed
#   --build DIR      build directory with tools/fio/ext4dio.so and
#                    tools/ext4dio-map (default: build/ in the repository)
#   --out DIR        results directory (default bench/results/<date>-firstwrite)
#   --file-size MIB  the fresh test file (default 1024; --quick 128)
#   --second-mib MIB section 2's region (default 64; --quick 8)
#   --image-size MIB ext4 image on /dev/shm (default 2048; --quick 512)
#
# Every run is checked, and the script stops with an error (exit 1) when one
# fails: a non-zero exit or fio error, a short or dropped I/O, reads, not
# exactly the planned number of 4 KiB writes, bytes reported that the loop
# device did not see written (its sectors-written counter, sampled around
# each run after a sync, must agree within the I/Os in flight plus 8 MiB +
# 2 % for the journal, and 1 KiB more per planned first write: converting
# an extent or allocating a block dirties extent-tree leaves and bitmaps,
# journalled at each commit — up to 20 % of the data was seen), or a file that did not change as the run says it
# wrote (tools/ext4dio-map before and after each run: in section 1 exactly
# --ios blocks became written, none was written twice; in section 2 the
# first pass leaves the region written and in place; in section 3 the share
# of first writes above). The failed run's output is kept in DIR/failed.
#
# Writes DIR/report.md (the tables, also printed), DIR/runs.csv (every run)
# and DIR/meta.txt. Exit 0 when every run worked, 1 when a run or the set-up
# failed, 2 for usage errors, 77 (skip) when not root or no loop device is
# free. Root only. All it makes (/dev/shm/ext4dio-firstwrite-*, one loop
# device, one mount under /tmp/ext4dio-firstwrite-mnt-*) is recorded
# (scripts/run-record.sh) and removed on exit, failure or Ctrl-C; it never
# touches another device. A default run takes ~10 min on a 2-core VM while
# first writes run at ~2k IOPS; much less once they run at kernel speed.
set -euo pipefail

prog=firstwrite_bench.sh
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cmdline="bench/firstwrite_bench.sh${*:+ $*}"

reps=3; quick=0; build="$repo/build"; outdir=""; ios=""
image_mib=""; file_mib=""; second_mib=""; only="first,second,mixed"
mkfs_opts="-O sparse_super2"
passes=4  # section 2: passes over the region per run
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "$prog: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1; shift ;;
    --reps) reps=${2:?}; shift 2 ;;
    --ios) ios=${2:?}; shift 2 ;;
    --only) only=${2:?}; shift 2 ;;
    --build) build=${2:?}; shift 2 ;;
    --out) outdir=${2:?}; shift 2 ;;
    --file-size) file_mib=${2:?}; shift 2 ;;
    --second-mib) second_mib=${2:?}; shift 2 ;;
    --image-size) image_mib=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "$prog: unknown option $1" >&2; usage ;;
  esac
done
qds="1 32"; jobs_list="1 4"
if [ "$quick" = 1 ]; then
  reps=1
  : "${image_mib:=512}" "${file_mib:=128}" "${ios:=1024}" "${second_mib:=8}"
fi
: "${image_mib:=2048}" "${file_mib:=1024}" "${ios:=16384}" "${second_mib:=64}"
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$prog: $1: a positive integer, not '$2'" >&2; exit 2; }; }
posint --reps "$reps"; posint --ios "$ios"; posint --image-size "$image_mib"
posint --file-size "$file_mib"; posint --second-mib "$second_mib"
[ $(( file_mib % 8 )) = 0 ] || { echo "$prog: --file-size: a multiple of 8 MiB" >&2; exit 2; }
[ $(( ios % 4 )) = 0 ] || { echo "$prog: --ios: a multiple of 4 (numjobs 4 share it)" >&2; exit 2; }
# Every write a first write: at most half of a job's part (numjobs 4), and in
# section 3 the 30 % into the fallocated half must stay well below its size.
[ $(( ios * 4096 )) -le $(( file_mib << 19 )) ] \
  || { echo "$prog: --ios $ios: more than half of a $file_mib MiB file" >&2; exit 2; }
[ "$second_mib" -le $(( file_mib / 2 )) ] \
  || { echo "$prog: --second-mib $second_mib: more than half of the file" >&2; exit 2; }
[ "$image_mib" -ge $(( file_mib + file_mib / 4 + 128 )) ] \
  || { echo "$prog: --image-size $image_mib MiB is too small for a $file_mib MiB file" >&2; exit 2; }
all_sections="first second mixed"
sections=()
IFS=, read -r -a wanted <<< "$only"
for w in "${wanted[@]}"; do
  [[ " $all_sections " == *" $w "* ]] || { echo "$prog: --only: unknown section '$w'" >&2; exit 2; }
done
for s in $all_sections; do  # the report's order, whatever the list's
  for w in "${wanted[@]}"; do [ "$w" = "$s" ] && { sections+=("$s"); break; }; done
done
[ ${#sections[@]} -gt 0 ] || { echo "$prog: --only: no section" >&2; exit 2; }
want() { [[ " ${sections[*]} " == *" $1 "* ]]; }

if [ "$(id -u)" -ne 0 ]; then echo "$prog: skipped: needs root (mkfs, loop device, mount)" >&2; exit 77; fi
for t in fio mkfs.ext4 losetup mount umount dd python3 timeout fallocate truncate; do
  command -v "$t" >/dev/null 2>&1 || { echo "$prog: skipped: $t not installed" >&2; exit 77; }
done
if ! losetup -f >/dev/null 2>&1; then
  echo "$prog: skipped: no free loop device (losetup -f failed; modprobe loop?)" >&2; exit 77
fi
build=$(cd "$build" 2>/dev/null && pwd) || die "--build: no directory $build"
engine=$build/tools/fio/ext4dio.so
mapper=$build/tools/ext4dio-map
[ -f "$engine" ] || die "no fio engine $engine (ninja -C $build tools/fio/ext4dio.so; needs the fio source, scripts/setup.sh)"
[ -x "$mapper" ] || die "no $mapper (ninja -C $build tools/ext4dio-map)"
avail_kib=$(df -Pk /dev/shm | awk 'NR==2 {print $4}')
[ "$avail_kib" -ge $(( image_mib * 1024 + 65536 )) ] \
  || die "/dev/shm has $((avail_kib / 1024)) MiB free, needs $((image_mib + 64)) MiB"

[ -n "$outdir" ] || outdir=$repo/bench/results/$(date +%Y-%m-%d_%H%M%S)-firstwrite
mkdir -p "$outdir" || die "cannot create $outdir"
outdir=$(cd "$outdir" && pwd)

# shellcheck source=bench/scratch.sh
. "$here/scratch.sh"  # the trap: unmounts $mnt, tears down what was recorded
# shellcheck source=bench/mounted_fs.sh
. "$here/mounted_fs.sh"  # mf_loop_fs

work=$(rr_mkdtemp /dev/shm/ext4dio-firstwrite-XXXXXX) || exit 1
mnt=$(rr_mkdtemp /tmp/ext4dio-firstwrite-mnt-XXXXXX) || exit 1
mf_loop_fs "$image_mib" "$mkfs_opts" || exit 1
mount -t ext4 "$dev" "$mnt" || die "mount $dev failed"
mounted=1
file=$mnt/testfile
file_bytes=$(( file_mib << 20 ))
devstat=/sys/block/$(basename "$dev")/stat
[ -r "$devstat" ] || die "no $devstat"
dev_written() {  # bytes written to $dev so far
  local sectors
  sectors=$(awk '{ print $7 }' "$devstat")
  [[ $sectors =~ ^[0-9]+$ ]] || die "$devstat: no sector count ('$sectors')"
  echo $(( sectors * 512 ))
}

# make_file LAYOUT: a fresh $file of $file_bytes (the old one deleted first),
# synced, so its metadata is on the device before the next run's window.
make_file() {
  rm -f "$file"
  case $1 in
    fallocated) fallocate -l "$file_bytes" "$file" ;;
    sparse) truncate -s "$file_bytes" "$file" ;;
    half)
      dd if=/dev/urandom of="$file" bs=1M count=$(( file_mib / 2 )) oflag=direct \
        iflag=fullblock status=none && fallocate -l "$file_bytes" "$file" ;;
  esac || die "making a $1 file $file failed"
  sync
}

# map_stats [L S] -> "written unwritten extents fs_bs" of $file's blocks
# (all, or those in file bytes L..L+S), from ext4dio-map --json.
map_stats() {
  "$mapper" --json "$file" > "$work/map.json" || die "ext4dio-map $file failed"
  python3 - "$work/map.json" "$@" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
bs = m["block_size"]
lo, hi = 0, 1 << 62
if len(sys.argv) > 2:
    lo = int(sys.argv[2]) // bs; hi = lo + int(sys.argv[3]) // bs
w = u = 0
for e in m["extents"]:
    n = min(hi, e["logical_block"] + e["blocks"]) - max(lo, e["logical_block"])
    if n > 0:
        if e["unwritten"]: u += n
        else: w += n
print(w, u, len(m["extents"]), bs)
PY
}

# contiguous_run -> "L P S": the largest run of $file's extents (written or
# not) contiguous in the file and on the device: file bytes L..L+S = device
# bytes P..P+S.
contiguous_run() {
  "$mapper" --json "$file" > "$work/map.json" || die "ext4dio-map $file failed"
  python3 - "$work/map.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
bs = m["block_size"]
runs = []
for e in m["extents"]:
    if runs and runs[-1][0] + runs[-1][2] == e["logical_block"] \
            and runs[-1][1] + runs[-1][2] == e["physical_block"]:
        runs[-1][2] += e["blocks"]
    else:
        runs.append([e["logical_block"], e["physical_block"], e["blocks"]])
if not runs:
    sys.exit("the file has no extents")
best = max(runs, key=lambda r: r[2])
print(best[0] * bs, best[1] * bs + m.get("device_offset", 0), best[2] * bs)
PY
}

# --- one run: execute, check, record -------------------------------------------
runs_csv=$outdir/runs.csv
echo "section,point,row,rep,order,iops,bytes,ios,device_bytes,first_writes,ok" > "$runs_csv"
mkdir -p "$work/out"

# parse_out FILE -> "iops bytes ios": fio JSON, the write direction summed
# over jobs. Fails (with the reason on stderr) on any error, short or
# dropped I/O, or reads.
parse_out() {
  python3 - "$1" <<'PY'
import json, sys
s = open(sys.argv[1], errors="replace").read()
i = s.find("{")
if i < 0:
    sys.exit("no JSON in the output")
d, _ = json.JSONDecoder().raw_decode(s[i:])
jobs = d["jobs"]
bad = [j["jobname"] for j in jobs if j.get("error", 0)]
if bad:
    sys.exit("fio reported errors in " + ", ".join(bad))
w = [j["write"] for j in jobs]
if any(x.get("short_ios", 0) or x.get("drop_ios", 0) for x in w):
    sys.exit("short or dropped I/Os")
if any(j["read"]["io_bytes"] for j in jobs):
    sys.exit("reads in a write benchmark")
print(f"{sum(x['iops'] for x in w):.1f} {sum(x['io_bytes'] for x in w)} "
      f"{sum(x['total_ios'] for x in w)}")
PY
}

# check_bytes BYTES IOS DEVICE_BYTES INFLIGHT WANT_IOS FIRST: exactly
# WANT_IOS whole 4 KiB I/Os, and the device saw them written, FIRST of them
# first writes (see the header).
check_bytes() {
  local b=$1 n=$2 db=$3 inflight=$4 want=$5 first=$6
  [ "$n" = "$want" ] || { echo "$n I/Os done, $want planned"; return 1; }
  [ "$b" = $(( n * 4096 )) ] || { echo "$b bytes reported for $n I/Os of 4096 bytes"; return 1; }
  local slack=$(( inflight * 4096 + (8 << 20) + b / 50 + first * 1024 )) diff=$(( db - b ))
  [ "${diff#-}" -le "$slack" ] || {
    echo "reported $b bytes written, the device $dev saw $db written (more than $slack apart)"
    return 1
  }
}

# run_cmd WHAT INFLIGHT WANT_IOS FIRST CMD... -> sets r_iops r_bytes r_ios
# r_dev, or stops the script: the command failed, its output is wrong, or
# the device disagrees (FIRST: how many of the writes are first writes).
run_cmd() {
  local what=$1 inflight=$2 want=$3 first=$4; shift 4
  local out=$work/out/run.json before after res
  sync
  before=$(dev_written)
  timeout --kill-after=10 900 "$@" > "$out" 2> "$out.err" \
    || run_failed "$what" "exit status $? from: $*"
  sync  # the journal's share of the run inside the window
  after=$(dev_written)
  res=$(parse_out "$out" 2>>"$out.err") || run_failed "$what" "bad output ($(tail -n1 "$out.err"))"
  read -r r_iops r_bytes r_ios <<< "$res"
  # (A bad number in $(( )) would abort only the enclosing top-level command
  # and let the script go on: check first.)
  [[ $r_bytes =~ ^[0-9]+$ && $r_ios =~ ^[0-9]+$ && $before =~ ^[0-9]+$ && $after =~ ^[0-9]+$ ]] \
    || run_failed "$what" "not a count: bytes '$r_bytes', I/Os '$r_ios', device '$before'..'$after'"
  r_dev=$(( after - before ))
  local why
  why=$(check_bytes "$r_bytes" "$r_ios" "$r_dev" "$inflight" "$want" "$first") || run_failed "$what" "$why"
}
run_failed() {  # run_failed WHAT WHY: keep the output, say so, stop
  mkdir -p "$outdir/failed"
  local keep
  keep=$outdir/failed/$(echo "$1" | tr -c 'A-Za-z0-9_.=-' '_').txt
  { echo "# $1: $2"; cat "$work/out/run.json" "$work/out/run.json.err" 2>/dev/null; } > "$keep"
  echo "$prog: FAILED: $1: $2" >&2
  grep -vE '^[[:space:]]|^[{}]' "$work/out/run.json.err" 2>/dev/null | head -n 5 | sed 's/^/    /' >&2
  echo "$prog: its output: $keep" >&2
  exit 1
}

fio_common=(--output-format=json --thread=1 --direct=1 --bs=4k --rw=randwrite
            --randrepeat=1 --fallocate=none --invalidate=0 --ramp_time=0 --name=firstwrite)
# fio_args ROW QD JOBS OFFSET SIZE IOS [EXTRA...] -> the fio command line:
# JOBS jobs on consecutive SIZE/JOBS parts from OFFSET (file bytes, or device
# bytes for the raw rows), IOS writes in all.
fio_args() {
  local row=$1 qd=$2 jobs=$3 off=$4 size=$5 n=$6; shift 6
  local part=$(( size / jobs )) per=$(( n / jobs ))
  local a=(fio "${fio_common[@]}" --numjobs="$jobs" --iodepth="$qd"
           --offset="$off" --size="$part" --offset_increment="$part"
           --number_ios="$per" --io_size=$(( per * 4096 )))
  case $row in
    ext4dio) a+=(--ioengine="external:$engine" --filename="$file") ;;
    kernel_psync) a+=(--ioengine=psync --filename="$file") ;;
    kernel_uring) a+=(--ioengine=io_uring --filename="$file") ;;
    raw_uring) a+=(--ioengine=io_uring --filename="$dev" --allow_mounted_write=1) ;;
    raw_psync) a+=(--ioengine=psync --filename="$dev" --allow_mounted_write=1) ;;
    *) die "fio_args: no row $row" ;;
  esac
  printf '%s\0' "${a[@]}" "$@"
}

total_runs=0
if want first; then total_runs=$(( total_runs + 2 * 4 * 2 * reps )); fi
if want second; then total_runs=$(( total_runs + 1 + (3 + 2) * 2 * reps )); fi
if want mixed; then total_runs=$(( total_runs + 2 * reps )); fi
echo "$prog: $total_runs runs; first writes: $ios per run into a fresh ${file_mib} MiB file" >&2

done_runs=0
progress() {  # progress SECTION POINT ROW REP
  done_runs=$(( done_runs + 1 ))
  printf '%s: [%d/%d] %s %s %-13s round %d: %.0f IOPS\n' "$prog" "$done_runs" \
    "$total_runs" "$1" "$2" "$3" "$4" "$r_iops" >&2
}
record() {  # record SECTION POINT ROW REP ORDER FIRST_WRITES
  echo "$1,$2,$3,$4,$5,$r_iops,$r_bytes,$r_ios,$r_dev,$6,1" >> "$runs_csv"
}
# rotated K REP ROWS...: the row run K-th in round REP.
rotated() { local k=$1 rep=$2; shift 2; local r=("$@"); echo "${r[$(( (rep - 1 + k) % $# ))]}"; }

sums_before=$(sha256sum "$engine" "$(readlink -f "$build/lib/libext4dio.so.0" 2>/dev/null || echo "$engine")" |
  awk '{ printf "%s ", substr($1, 1, 12) }')
start=$(date +%s)

# --- 1. first writes -----------------------------------------------------------
if want first; then
  for layout in fallocated sparse; do
    for j in $jobs_list; do
      for q in $qds; do
        p="$layout qd=$q jobs=$j"
        kern=kernel_psync; [ "$q" = 1 ] || kern=kernel_uring
        rows=(ext4dio "$kern")
        for ((rep = 1; rep <= reps; rep++)); do
          for k in 0 1; do
            row=$(rotated "$k" "$rep" "${rows[@]}")
            make_file "$layout"
            read -r w0 u0 _ _ < <(map_stats)
            mapfile -d '' -t cmd < <(fio_args "$row" "$q" "$j" 0 "$file_bytes" "$ios")
            run_cmd "first $p $row round $rep" $(( q * j )) "$ios" "$ios" "${cmd[@]}"
            read -r w1 u1 x1 _ < <(map_stats)
            # Every write a first write of its own block: exactly $ios blocks
            # became written (from unwritten, or allocated in a hole).
            [ $(( w1 - w0 )) = "$ios" ] && { [ "$layout" = sparse ] || [ $(( u0 - u1 )) = "$ios" ]; } \
              || run_failed "first $p $row round $rep" \
                   "$(( w1 - w0 )) blocks became written ($w0 -> $w1, unwritten $u0 -> $u1), not $ios"
            progress first "$p" "$row" "$rep"
            record first "$p" "$row" "$rep" "$k" "$(( w1 - w0 ))"
            echo "$layout,$q,$j,$row,$rep,$x1" >> "$work/extents.csv"
          done
        done
      done
    done
  done
fi

# --- 2. the second pass ---------------------------------------------------------
second_desc=""
if want second; then
  make_file fallocated
  read -r run_l run_p run_s < <(contiguous_run) || die "no contiguous run in $file's map"
  region_s=$(( second_mib << 20 ))
  [ "$run_s" -ge "$region_s" ] \
    || die "the fresh file's largest contiguous run is $(( run_s >> 20 )) MiB, less than --second-mib $second_mib"
  region_l=$run_l; region_p=$run_p
  n_region=$(( region_s / 4096 ))
  mapfile -d '' -t cmd < <(fio_args ext4dio 32 4 "$region_l" "$region_s" "$n_region")
  run_cmd "second first-pass ext4dio" 128 "$n_region" "$n_region" "${cmd[@]}"
  progress second "first pass qd=32 jobs=4" ext4dio 1
  read -r w1 u1 x1 _ < <(map_stats "$region_l" "$region_s")
  [ "$w1" = "$n_region" ] && [ "$u1" = 0 ] \
    || run_failed "second first-pass ext4dio" "the region has $w1 written and $u1 unwritten blocks, not $n_region written"
  record second "first pass qd=32 jobs=4" ext4dio 1 0 "$w1"
  # Unwritten-extent conversion never moves a block: the region is still on
  # the device where the raw rows will write.
  read -r l2 p2 s2 < <(contiguous_run)
  [ "$l2" -le "$region_l" ] && [ $(( l2 + s2 )) -ge $(( region_l + region_s )) ] \
    && [ $(( p2 - l2 )) = $(( region_p - region_l )) ] \
    || die "the region moved on the device after the first pass ($region_l/$region_p -> $l2/$p2 +$s2)"
  second_desc="file bytes $region_l..$(( region_l + region_s )) ($second_mib MiB) = device bytes $region_p..$(( region_p + region_s )) of $dev; first pass: $n_region writes, $(printf %.0f "$r_iops") IOPS, the file then has $x1 extents"
  echo "$prog: second pass region: $second_desc" >&2
  n_second=$(( n_region * passes ))
  for j in $jobs_list; do
    for q in $qds; do
      p="qd=$q jobs=$j"
      rows=(ext4dio raw_uring); [ "$q" = 1 ] && rows+=(raw_psync)
      for ((rep = 1; rep <= reps; rep++)); do
        for ((k = 0; k < ${#rows[@]}; k++)); do
          row=$(rotated "$k" "$rep" "${rows[@]}")
          off=$region_l; [[ $row == raw_* ]] && off=$region_p
          mapfile -d '' -t cmd < <(fio_args "$row" "$q" "$j" "$off" "$region_s" "$n_second")
          run_cmd "second $p $row round $rep" $(( q * j )) "$n_second" 0 "${cmd[@]}"
          progress second "$p" "$row" "$rep"
          record second "$p" "$row" "$rep" "$k" 0
        done
      done
    done
  done
fi

# --- 3. mixed -------------------------------------------------------------------
if want mixed; then
  p="qd=32 jobs=1"
  rows=(ext4dio kernel_uring)
  for ((rep = 1; rep <= reps; rep++)); do
    for k in 0 1; do
      row=$(rotated "$k" "$rep" "${rows[@]}")
      make_file half
      read -r w0 u0 _ _ < <(map_stats)
      [ "$u0" = $(( file_bytes / 2 / 4096 )) ] || die "the half-written file has $u0 unwritten blocks"
      mapfile -d '' -t cmd < <(fio_args "$row" 32 1 0 "$file_bytes" "$ios" \
                                 --random_distribution=zoned:70/50:30/50 --norandommap=1)
      run_cmd "mixed $p $row round $rep" 32 "$ios" $(( ios * 3 / 10 )) "${cmd[@]}"
      read -r w1 u1 _ _ < <(map_stats)
      first=$(( u0 - u1 ))
      [ $(( first * 100 )) -ge $(( ios * 25 )) ] && [ $(( first * 100 )) -le $(( ios * 35 )) ] \
        || run_failed "mixed $p $row round $rep" "$first of $ios writes were first writes, not 25-35 %"
      [ -z "${mixed_first:-}" ] || [ "$mixed_first" = "$first" ] \
        || run_failed "mixed $p $row round $rep" "$first first writes, an earlier run made $mixed_first: not the same block sequence"
      mixed_first=$first
      progress mixed "$p" "$row" "$rep"
      record mixed "$p" "$row" "$rep" "$k" "$first"
    done
  done
fi

# Every planned run ran (a failure that did not stop the script would show here).
[ "$done_runs" = "$total_runs" ] || die "only $done_runs of $total_runs runs ran"
elapsed=$(( $(date +%s) - start ))
sums_after=$(sha256sum "$engine" "$(readlink -f "$build/lib/libext4dio.so.0" 2>/dev/null || echo "$engine")" |
  awk '{ printf "%s ", substr($1, 1, 12) }')
srcdir=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["directories"]["source"])' \
  "$build/meson-info/meson-info.json" 2>/dev/null || echo "$repo")
commit=$(git -C "$srcdir" describe --always --dirty 2>/dev/null || echo unknown)
[ "$srcdir" = "$repo" ] || commit="$commit in $srcdir"
binaries="tree $commit, $build: ext4dio.so, libext4dio.so sha256 ${sums_before% }"
if [ "$sums_before" != "$sums_after" ]; then
  binaries+=" — REBUILT DURING THE RUN (now ${sums_after% }): the numbers mix two versions"
  echo "$prog: warning: a measured binary was rebuilt during the run" >&2
fi
extents_note=""
if [ -f "$work/extents.csv" ]; then
  extents_note=$(awk -F, '$1 == "fallocated" { if ($6 > m) m = $6 } $1 == "sparse" { if ($6 > s) s = $6 }
    END { printf "after a section-1 run the file has up to %d extents (fallocated), %d (sparse)", m, s }' "$work/extents.csv")
fi
cat > "$outdir/meta.txt" <<EOF
command	$cmdline
date	$(date -u '+%Y-%m-%d %H:%M UTC')
machine	$(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)
storage	ext4 (4 KiB blocks, mkfs.ext4 $mkfs_opts) on $backing
file	a fresh ${file_mib} MiB file per run (sections 1, 3); $ios 4 KiB writes per run ($(( ios * 4 )) KiB, $(awk -v a="$ios" -v f="$file_mib" 'BEGIN { printf "%.2f", a * 400 / (f * 1024) }') % of the file)${extents_note:+; $extents_note}
second	${second_desc:-–}; $passes passes over the region per run
build	$binaries
runs	$reps interleaved round(s) per point, medians; $(fio --version); total ${elapsed} s
EOF

# --- the report ----------------------------------------------------------------
python3 - "$outdir" <<'PY' | tee "$outdir/report.md"
import csv, os, statistics, sys
out = sys.argv[1]
meta = dict(l.rstrip("\n").split("\t", 1) for l in open(os.path.join(out, "meta.txt")) if "\t" in l)
vals, first = {}, {}
for r in csv.DictReader(open(os.path.join(out, "runs.csv"))):
    k = (r["section"], r["point"], r["row"])
    vals.setdefault(k, []).append(float(r["iops"]))
    first.setdefault(k, []).append(int(r["first_writes"]) / int(r["ios"]))
def med(k):
    v = vals.get(k)
    return statistics.median(v) if v else None
def points(s):
    seen = []
    for (s2, p, _) in vals:
        if s2 == s and p not in seen: seen.append(p)
    return seen
def f0(x): return "–" if x is None else f"{x:.0f}"
def f2(x): return "–" if x is None else f"{x:.2f}"
def rat(a, b): return None if a is None or b is None or b == 0 else a / b
targets = []  # (description, goal, [(point, ratio)])
def target(desc, goal, got):
    targets.append((desc, goal, [(p, x) for p, x in got if x is not None]))

md = ["Command: `" + meta["command"] + "`", ""]
for k in ("date", "machine", "storage", "file", "second", "build", "runs"):
    if k in meta: md.append(f"* {k}: {meta[k]}")
md.append("")

ps = points("first")
if ps:
    md += ["### 1. First writes into a fresh file: the ext4dio engine vs the kernel (fio psync at QD1, io_uring at QD32) on the same file (write IOPS)", ""]
    for layout, how in (("fallocated", "`fallocate -l`: unwritten extents"), ("sparse", "`truncate -s`: a sparse file")):
        lp = [p for p in ps if p.startswith(layout + " ")]
        if not lp: continue
        md += [f"{how}:", "", "| numjobs | QD | ext4dio | kernel | **ext4dio/kernel** |", "|---:|---:|---:|---:|---:|"]
        got = []
        for p in lp:
            q = p.split()[1][3:]; j = p.split()[2][5:]
            e = med(("first", p, "ext4dio"))
            k = med(("first", p, "kernel_psync" if q == "1" else "kernel_uring"))
            got.append((p.split(" ", 1)[1], rat(e, k)))
            md.append(f"| {j} | {q} | {f0(e)} | {f0(k)} | {f2(rat(e, k))} |")
        md.append("")
        target(f"first writes, {layout}: ext4dio / kernel, every point", 1.0, got)

ps = [p for p in points("second") if not p.startswith("first pass")]
if ps:
    fp = med(("second", "first pass qd=32 jobs=4", "ext4dio"))
    md += ["### 2. The second pass: ext4dio vs fio on the raw device writing the same device bytes (write IOPS)", "",
           f"First pass (ext4dio, QD32, 4 jobs, every block of the region once): {f0(fp)} IOPS.", "",
           "| numjobs | QD | ext4dio | raw io_uring | raw psync | **ext4dio/raw** | ext4dio/raw io_uring |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    got = []
    for p in ps:
        q = p.split()[0][3:]; j = p.split()[1][5:]
        e, r, s = (med(("second", p, x)) for x in ("ext4dio", "raw_uring", "raw_psync"))
        ref = s if q == "1" else r
        got.append((p, rat(e, ref)))
        md.append(f"| {j} | {q} | {f0(e)} | {f0(r)} | {f0(s)} | {f2(rat(e, ref))} | {f2(rat(e, r))} |")
    md += ["", "(ext4dio/raw: against raw psync at QD1, as issue 10's QD1 target, raw io_uring at QD32.)", ""]
    target("second pass: ext4dio / raw (psync at QD1, else io_uring), every point", 0.97, got)

ps = points("mixed")
if ps:
    md += ["### 3. Mixed, QD32, 1 job: 70 % overwrites of the written half, 30 % into the fallocated half (write IOPS)", "",
           "| ext4dio | kernel io_uring | **ext4dio/kernel** | first writes (share of the I/Os) |", "|---:|---:|---:|---:|"]
    for p in ps:
        e, k = med(("mixed", p, "ext4dio")), med(("mixed", p, "kernel_uring"))
        fw = statistics.median(first[("mixed", p, "ext4dio")] + first[("mixed", p, "kernel_uring")])
        md.append(f"| {f0(e)} | {f0(k)} | {f2(rat(e, k))} | {100 * fw:.1f} % |")
        target("mixed: ext4dio / kernel io_uring", 1.0, [(p, rat(e, k))])
    md.append("")

if targets:
    md += ["### Targets (issue 11)", "", "| target | goal | worst | verdict |", "|---|---:|---:|---|"]
    for desc, goal, got in targets:
        if not got:
            md.append(f"| {desc} | ≥ {goal:.2f} | – | n/a |"); continue
        worst = min(got, key=lambda kv: kv[1]); miss = [p for p, x in got if x < goal]
        md.append(f"| {desc} | ≥ {goal:.2f} | {worst[1]:.2f} | {'PASS' if not miss else 'MISS (' + ', '.join(miss) + ')'} |")
    md.append("")
print("\n".join(md))
PY
echo "$prog: results in $outdir (report.md, runs.csv, meta.txt)" >&2
