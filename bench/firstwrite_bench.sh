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
# shellcheck source=bench/bench_lib.sh
. "$here/bench_lib.sh"  # usage, die, posint, want, bl_*
while [ $# -gt 0 ]; do
  case $1 in
    --second-mib) second_mib=${2:?}; shift 2 ;;
    *) bl_option "$@"; shift "$bl_shift" ;;  # the options all share
  esac
done
qds="1 32"; jobs_list="1 4"
if [ "$quick" = 1 ]; then
  reps=1
  : "${image_mib:=512}" "${file_mib:=128}" "${ios:=1024}" "${second_mib:=8}"
fi
: "${image_mib:=2048}" "${file_mib:=1024}" "${ios:=16384}" "${second_mib:=64}"
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
bl_sections "first second mixed" "$only"

bl_need_root fio mkfs.ext4 losetup mount umount dd python3 timeout fallocate truncate
bl_need_loop
bl_build_tools  # build, engine, mapper
bl_need_shm "$image_mib"

bl_outdir firstwrite

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
bl_devstat  # dev_written

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

# run_cmd WHAT INFLIGHT WANT_IOS FIRST CMD... -> sets r_iops r_bytes r_ios
# r_dev, or stops the script: the command failed, its fio JSON is wrong (an
# error, a short or dropped I/O, reads), not exactly WANT_IOS 4 KiB writes,
# or the device disagrees (FIRST: how many of the writes are first writes;
# see the header). A sync before and after puts the journal's share of the
# run inside the window.
run_cmd() {
  local what=$1 inflight=$2 want=$3 first=$4; shift 4
  bl_run_cmd "$what" fio "$inflight" "$want" "$first" 900 1 "$@"
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

bin_sums() { bl_sums "$engine" "$(readlink -f "$build/lib/libext4dio.so.0" 2>/dev/null || echo "$engine")"; }
sums_before=$(bin_sums)
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
sums_after=$(bin_sums)
binaries=$(bl_binaries "ext4dio.so, libext4dio.so" "$sums_before" "$sums_after")
extents_note=""
if [ -f "$work/extents.csv" ]; then
  extents_note=$(awk -F, '$1 == "fallocated" { if ($6 > m) m = $6 } $1 == "sparse" { if ($6 > s) s = $6 }
    END { printf "after a section-1 run the file has up to %d extents (fallocated), %d (sparse)", m, s }' "$work/extents.csv")
fi
cat > "$outdir/meta.txt" <<EOF
command	$cmdline
date	$(date -u '+%Y-%m-%d %H:%M UTC')
machine	$(bl_machine)
storage	ext4 (4 KiB blocks, mkfs.ext4 $mkfs_opts) on $backing
file	a fresh ${file_mib} MiB file per run (sections 1, 3); $ios 4 KiB writes per run ($(( ios * 4 )) KiB, $(awk -v a="$ios" -v f="$file_mib" 'BEGIN { printf "%.2f", a * 400 / (f * 1024) }') % of the file)${extents_note:+; $extents_note}
second	${second_desc:-–}; $passes passes over the region per run
build	$binaries
runs	$reps interleaved round(s) per point, medians; $(fio --version); total ${elapsed} s
EOF

# --- the report ----------------------------------------------------------------
bl_report "$outdir" <<'PY' | tee "$outdir/report.md"
import csv, os, statistics, sys
from bench_report import header, med, points, f0, f2, rat, target, targets_md
out = sys.argv[1]
meta, md = header(out, ("date", "machine", "storage", "file", "second", "build", "runs"))
vals, first, targets = {}, {}, []  # targets: (description, goal, [(point, ratio)])
for r in csv.DictReader(open(os.path.join(out, "runs.csv"))):
    k = (r["section"], r["point"], r["row"])
    vals.setdefault(k, []).append(float(r["iops"]))
    first.setdefault(k, []).append(int(r["first_writes"]) / int(r["ios"]))

ps = points(vals, "first")
if ps:
    md += ["### 1. First writes into a fresh file: the ext4dio engine vs the kernel (fio psync at QD1, io_uring at QD32) on the same file (write IOPS)", ""]
    for layout, how in (("fallocated", "`fallocate -l`: unwritten extents"), ("sparse", "`truncate -s`: a sparse file")):
        lp = [p for p in ps if p.startswith(layout + " ")]
        if not lp: continue
        md += [f"{how}:", "", "| numjobs | QD | ext4dio | kernel | **ext4dio/kernel** |", "|---:|---:|---:|---:|---:|"]
        got = []
        for p in lp:
            q = p.split()[1][3:]; j = p.split()[2][5:]
            e = med(vals, ("first", p, "ext4dio"))
            k = med(vals, ("first", p, "kernel_psync" if q == "1" else "kernel_uring"))
            got.append((p.split(" ", 1)[1], rat(e, k)))
            md.append(f"| {j} | {q} | {f0(e)} | {f0(k)} | {f2(rat(e, k))} |")
        md.append("")
        target(targets, f"first writes, {layout}: ext4dio / kernel, every point", 1.0, got)

ps = [p for p in points(vals, "second") if not p.startswith("first pass")]
if ps:
    fp = med(vals, ("second", "first pass qd=32 jobs=4", "ext4dio"))
    md += ["### 2. The second pass: ext4dio vs fio on the raw device writing the same device bytes (write IOPS)", "",
           f"First pass (ext4dio, QD32, 4 jobs, every block of the region once): {f0(fp)} IOPS.", "",
           "| numjobs | QD | ext4dio | raw io_uring | raw psync | **ext4dio/raw** | ext4dio/raw io_uring |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    got = []
    for p in ps:
        q = p.split()[0][3:]; j = p.split()[1][5:]
        e, r, s = (med(vals, ("second", p, x)) for x in ("ext4dio", "raw_uring", "raw_psync"))
        ref = s if q == "1" else r
        got.append((p, rat(e, ref)))
        md.append(f"| {j} | {q} | {f0(e)} | {f0(r)} | {f0(s)} | {f2(rat(e, ref))} | {f2(rat(e, r))} |")
    md += ["", "(ext4dio/raw: against raw psync at QD1, as issue 10's QD1 target, raw io_uring at QD32.)", ""]
    target(targets, "second pass: ext4dio / raw (psync at QD1, else io_uring), every point", 0.97, got)

ps = points(vals, "mixed")
if ps:
    md += ["### 3. Mixed, QD32, 1 job: 70 % overwrites of the written half, 30 % into the fallocated half (write IOPS)", "",
           "| ext4dio | kernel io_uring | **ext4dio/kernel** | first writes (share of the I/Os) |", "|---:|---:|---:|---:|"]
    for p in ps:
        e, k = med(vals, ("mixed", p, "ext4dio")), med(vals, ("mixed", p, "kernel_uring"))
        fw = statistics.median(first[("mixed", p, "ext4dio")] + first[("mixed", p, "kernel_uring")])
        md.append(f"| {f0(e)} | {f0(k)} | {f2(rat(e, k))} | {100 * fw:.1f} % |")
        target(targets, "mixed: ext4dio / kernel io_uring", 1.0, [(p, rat(e, k))])
    md.append("")

md += targets_md("issue 11", targets)
print("\n".join(md))
PY
echo "$prog: results in $outdir (report.md, runs.csv, meta.txt)" >&2
