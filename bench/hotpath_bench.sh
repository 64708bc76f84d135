#!/usr/bin/env bash
# The hot path at the raw device's cost (issue 10): ext4dio beside the raw
# device writing the same blocks and beside the kernel's ext4 file, in one
# run — interleaved rounds (each round runs every row of a point once, in a
# rotating order), medians, ratios — on a mounted ext4 over a loop device
# (direct-io) over /dev/shm. 4 KiB random overwrites of written extents:
#
#  1. fio   the ext4dio engine (default options) vs fio io_uring on the raw
#           device (offset = the device byte of the file's region) and on the
#           kernel's ext4 file (the same file and region); QD 1/8/32/128 x
#           numjobs 1/2; at QD1 also fio psync on the raw device.
#  2. case1 the seed's case 1 (tools/fio/seed-case1.fio: psync, QD1), numjobs
#           1/4/16: the engine vs psync on the raw device vs the kernel file.
#  3. fixed fio io_uring fixedbufs=1 registerfiles=1 on the raw device vs the
#           engine with ext4dio_fixed_buffers=1, QD32.
#  4. capi  the C API (bench/qd_bench, mounted mode, QD_BENCH_ARGS) vs a bare
#           liburing loop (bench/uring_loop: fixed file and buffers, batched
#           submit, COOP_TASKRUN|SINGLE_ISSUER|DEFER_TASKRUN like fio, peek
#           then wait) on the same device bytes, the same random offsets in
#           the same order, QD 1/32/128.
#  5. instr user-space instructions per 4 KiB I/O: `perf stat -e
#           instructions:u` (callgrind where the CPU has no counters, e.g. in
#           a VM) of qd_bench and uring_loop over --ios N I/Os minus a zero-I/O
#           run (startup), divided by N; for fio's engine vs fio io_uring on
#           the raw device, a number_ios=N run minus a number_ios=1 run.
#
#   bench/hotpath_bench.sh [--quick] [--reps R] [--runtime T] [--ios N]
#                          [--only LIST] [--build DIR] [--out DIR]
#                          [--image-size MIB] [--file-size MIB]
#
#   --quick          smoke run: 1 round of 1 s, a few points, small file
#   --reps R         rounds per point (default 3)
#   --runtime T      seconds per run (default 5)
#   --ios N          I/Os per instruction count (default 200000 with perf,
#                    20000 with callgrind; --quick: 2000)
#   --only LIST      comma-separated subset of fio,case1,fixed,capi,instr
#   --build DIR      build directory with tools/fio/ext4dio.so,
#                    tools/ext4dio-map, bench/qd_bench, bench/uring_loop
#                    (default: build/ in the repository)
#   --out DIR        results directory (default bench/results/<date>-hotpath)
#   --image-size MIB ext4 image on /dev/shm (default 2048; --quick 512)
#   --file-size MIB  the test file (default 1024; --quick 256)
#
#   QD_BENCH_ARGS    qd_bench's options in section 4 and 5 (default
#                    "--reap-promptly --fixed-buffers": what the fio engine
#                    does by default, plus uring_loop's fixed buffers)
#
# Every run is checked, and the script stops with an error (exit 1) when one
# fails: a non-zero exit or fio error, a short or dropped I/O, no I/O, bytes
# reported that are not whole 4 KiB I/Os, or bytes reported that the loop
# device did not see written (its sectors-written counter, sampled around
# each run, must agree within the I/Os in flight plus 8 MiB + 2 % for the
# journal) — so a reference and ext4dio are known to have written what they
# report to the same device. In section 5 both sides must write exactly N
# I/Os. The failed run's output is kept in DIR/failed.
#
# Writes DIR/report.md (the tables, also printed), DIR/runs.csv (every run),
# DIR/instr.csv and DIR/meta.txt. Exit 0 when every run worked, 1 when a run
# or the set-up failed, 2 for usage errors, 77 (skip) when not root or no
# loop device is free. Root only. All it makes (/dev/shm/ext4dio-hotpath-*,
# one loop device, one mount under /tmp/ext4dio-hotpath-mnt-*) is recorded
# (scripts/run-record.sh) and removed on exit, failure or Ctrl-C; it never
# touches another device.
set -euo pipefail

prog=hotpath_bench.sh
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cmdline="bench/hotpath_bench.sh${*:+ $*}"

reps=3; runtime=5; quick=0; build="$repo/build"; outdir=""; ios=""
image_mib=""; file_mib=""; only="fio,case1,fixed,capi,instr"
mkfs_opts="-O sparse_super2"
qd_bench_args=${QD_BENCH_ARGS---reap-promptly --fixed-buffers}
# shellcheck source=bench/bench_lib.sh
. "$here/bench_lib.sh"  # usage, die, posint, want, bl_*
while [ $# -gt 0 ]; do
  case $1 in
    --runtime) runtime=${2:?}; shift 2 ;;
    *) bl_option "$@"; shift "$bl_shift" ;;  # the options all share
  esac
done
fio_qds="1 8 32 128"; fio_jobs="1 2"; case1_jobs="1 4 16"; capi_qds="1 32 128"; instr_qds="1 32"
if [ "$quick" = 1 ]; then
  reps=1; runtime=1
  fio_qds="1 32"; case1_jobs="1 4"; capi_qds="1 32"; instr_qds="32"
  : "${image_mib:=512}" "${file_mib:=256}" "${ios:=2000}"
fi
: "${image_mib:=2048}" "${file_mib:=1024}"
posint --reps "$reps"; posint --runtime "$runtime"; posint --image-size "$image_mib"
posint --file-size "$file_mib"
[ -z "$ios" ] || posint --ios "$ios"
[ "$image_mib" -ge $(( file_mib + file_mib / 4 + 128 )) ] \
  || { echo "$prog: --image-size $image_mib MiB is too small for a $file_mib MiB file" >&2; exit 2; }
bl_sections "fio case1 fixed capi instr" "$only"

bl_need_root fio mkfs.ext4 losetup mount umount dd python3 timeout
bl_need_loop
bl_build_tools  # build, engine, mapper
qd_bench=$build/bench/qd_bench
uring_loop=$build/bench/uring_loop
for b in "$qd_bench" "$uring_loop"; do
  [ -x "$b" ] || die "no $b (ninja -C $build ${b#"$build"/})"
done
case1_job=$repo/tools/fio/seed-case1.fio
[ -f "$case1_job" ] || die "no $case1_job"
bl_need_shm "$image_mib"

# The instruction counter: perf's, where the CPU exposes one to this
# machine; else callgrind (exact, but it runs the program ~50x slower,
# which changes how many completions each reap finds at depth).
counter=none
if want instr; then
  if command -v perf >/dev/null 2>&1 &&
     perf stat -x, -e instructions:u -- true 2>&1 >/dev/null | grep -q '^[0-9][0-9]*,'; then
    counter=perf; : "${ios:=200000}"
  elif command -v valgrind >/dev/null 2>&1; then
    counter=callgrind; : "${ios:=20000}"
  else
    echo "$prog: no instruction counter (perf without hardware counters, no valgrind): section 5 skipped" >&2
  fi
fi

bl_outdir hotpath

# shellcheck source=bench/scratch.sh
. "$here/scratch.sh"  # the trap: unmounts $mnt, tears down what was recorded
# shellcheck source=bench/mounted_fs.sh
. "$here/mounted_fs.sh"  # mf_loop_fs, mf_write_file, mf_region

work=$(rr_mkdtemp /dev/shm/ext4dio-hotpath-XXXXXX) || exit 1
mnt=$(rr_mkdtemp /tmp/ext4dio-hotpath-mnt-XXXXXX) || exit 1
mf_loop_fs "$image_mib" "$mkfs_opts" || exit 1
mount -t ext4 "$dev" "$mnt" || die "mount $dev failed"
mounted=1
file=$mnt/testfile
echo "$prog: writing ${file_mib} MiB of random data into $file" >&2
mf_write_file "$file" "$file_mib" || exit 1
read -r region_l region_p region_s region_n nextents fs_bs < <(mf_region "$mapper" "$file") \
  || die "no region from $file's map"
[ "$fs_bs" = 4096 ] || die "block size $fs_bs, expected 4096"
region_desc="file bytes $region_l..$(( region_l + region_s )) ($(( region_s >> 20 )) MiB, $region_n of the file's $nextents extents) = device bytes $region_p..$(( region_p + region_s )) of $dev"
echo "$prog: region: $region_desc" >&2
bl_devstat  # dev_written

# The seed's case 1 as it is, with what this benchmark must set in [global]:
# the engine, the region, the run time, random offsets as in every other row.
grep -q '^runtime=60$' "$case1_job" && grep -q '^\[global\]$' "$case1_job" \
  || die "$case1_job changed (no runtime=60 or [global]): update this script"
# shellcheck disable=SC2016  # ${VAR}: fio expands them, not the shell
sed -e 's/^runtime=60$/runtime=${RUNTIME}/' \
    -e '/^\[global\]$/a ioengine=${ENGINE}\noffset=${OFFSET}\nsize=${SIZE}\nallow_mounted_write=1\nnorandommap=1\nrandrepeat=0\nramp_time=0' \
    "$case1_job" > "$work/case1.fio"

# --- one run: execute, check, record -------------------------------------------
runs_csv=$outdir/runs.csv
instr_csv=$outdir/instr.csv
echo "section,point,row,rep,order,iops,bytes,ios,device_bytes,usr_us_per_io,ok" > "$runs_csv"
echo "row,qd,ios,instructions,instructions_startup,per_io,counter" > "$instr_csv"
mkdir -p "$work/out"

# run_cmd WHAT KIND INFLIGHT CMD... -> sets r_iops r_bytes r_ios r_usr r_dev,
# or stops the script: the command failed, its output (fio JSON, or
# qd_bench/uring_loop's JSON line: KIND fio or json) is wrong, or the device
# disagrees (see the header).
run_cmd() {
  local what=$1 kind=$2 inflight=$3; shift 3
  bl_run_cmd "$what" "$kind" "$inflight" "" 0 $(( runtime + 300 )) 0 "$@"
}

fio_common=(--output-format=json --thread=1 --direct=1 --bs=4k --rw=randwrite
            --norandommap=1 --randrepeat=0 --ramp_time=0)
# fio_args ROW QD JOBS -> the fio command line of that row (time-based).
fio_args() {
  local row=$1 qd=$2 jobs=$3
  local a=(fio "${fio_common[@]}" --name=randwrite --numjobs="$jobs" --iodepth="$qd"
           --time_based=1 --runtime="$runtime")
  case $row in
    ext4dio) a+=(--ioengine="external:$engine" --filename="$file") ;;
    ext4dio_fixed) a+=(--ioengine="external:$engine" --ext4dio_fixed_buffers=1 --filename="$file") ;;
    kernel_uring) a+=(--ioengine=io_uring --filename="$file") ;;
    raw_uring) a+=(--ioengine=io_uring --filename="$dev" --allow_mounted_write=1) ;;
    raw_uring_fixed) a+=(--ioengine=io_uring --fixedbufs=1 --registerfiles=1
                         --filename="$dev" --allow_mounted_write=1) ;;
    raw_psync) a+=(--ioengine=psync --filename="$dev" --allow_mounted_write=1) ;;
  esac
  case $row in
    raw_*) a+=(--offset="$region_p" --size="$region_s") ;;
    *) a+=(--offset="$region_l" --size="$region_s") ;;
  esac
  printf '%s\0' "${a[@]}"
}
case1_args() {  # case1_args ROW JOBS -> env + fio on the seed's job file
  local row=$1 jobs=$2 eng target off
  case $row in
    ext4dio) eng="external:$engine"; target=$file; off=$region_l ;;
    kernel_psync) eng=psync; target=$file; off=$region_l ;;
    raw_psync) eng=psync; target=$dev; off=$region_p ;;
  esac
  printf '%s\0' env FILE="$target" JOBS="$jobs" RUNTIME="$runtime" ENGINE="$eng" \
    OFFSET="$off" SIZE="$region_s" fio --output-format=json "$work/case1.fio"
}
capi_args() {  # capi_args ROW QD [IOS] -> qd_bench or uring_loop
  local row=$1 qd=$2 n=${3:-}
  local lim=(--seconds "$runtime")
  [ -z "$n" ] || lim=(--seconds 100000 --ios "$n")
  # shellcheck disable=SC2086  # qd_bench_args is a list of options
  case $row in
    qd_bench) printf '%s\0' "$qd_bench" --file "$file" --region-offset "$region_l" \
                --region-size "$region_s" --qd "$qd" --seed 42 "${lim[@]}" $qd_bench_args ;;
    uring_loop) printf '%s\0' "$uring_loop" --device "$dev" --offset "$region_p" \
                  --size "$region_s" --qd "$qd" --seed 42 "${lim[@]}" ;;
  esac
}

total_runs=0
count_runs() {  # count_runs ROWS... (one point)
  total_runs=$(( total_runs + reps * $# ))
}
if want fio; then for j in $fio_jobs; do for q in $fio_qds; do
  if [ "$q" = 1 ]; then count_runs a b c d; else count_runs a b c; fi; done; done; fi
if want case1; then for j in $case1_jobs; do count_runs a b c; done; fi
if want fixed; then count_runs a b; fi
if want capi; then for q in $capi_qds; do count_runs a b; done; fi
echo "$prog: $total_runs timed runs of ${runtime} s, about $(( total_runs * (runtime + 1) / 60 + 1 )) min" >&2

done_runs=0
# point SECTION POINT INFLIGHT BUILDER BUILDER_ARGS -- ROWS...: the rounds of
# one point, rows in a rotating order per round.
point() {
  local s=$1 p=$2 inflight=$3 builder=$4; shift 4
  local bargs=()
  while [ "$1" != -- ]; do bargs+=("$1"); shift; done
  shift
  local rows=("$@") n=$# rep k row cmd
  for ((rep = 1; rep <= reps; rep++)); do
    for ((k = 0; k < n; k++)); do
      row=${rows[$(( (rep - 1 + k) % n ))]}
      mapfile -d '' -t cmd < <("$builder" "$row" "${bargs[@]}")
      local kind=fio
      [ "$s" = capi ] && kind=json
      run_cmd "$s $p $row round $rep" "$kind" "$inflight" "${cmd[@]}"
      done_runs=$(( done_runs + 1 ))
      printf '%s: [%d/%d] %s %s %-16s round %d: %.0f IOPS\n' "$prog" "$done_runs" \
        "$total_runs" "$s" "$p" "$row" "$rep" "$r_iops" >&2
      echo "$s,$p,$row,$rep,$k,$r_iops,$r_bytes,$r_ios,$r_dev,$r_usr,1" >> "$runs_csv"
    done
  done
}

libso=$(readlink -f "$build/lib/libext4dio.so.0" 2>/dev/null || true)
bin_sums() { bl_sums "$engine" ${libso:+"$libso"} "$qd_bench" "$uring_loop"; }
sums_before=$(bin_sums)
start=$(date +%s)

if want fio; then
  for j in $fio_jobs; do
    for q in $fio_qds; do
      rows=(ext4dio raw_uring kernel_uring)
      [ "$q" = 1 ] && rows+=(raw_psync)
      point fio "qd=$q jobs=$j" $(( q * j )) fio_args "$q" "$j" -- "${rows[@]}"
    done
  done
fi
if want case1; then
  for j in $case1_jobs; do
    point case1 "jobs=$j" "$j" case1_args "$j" -- ext4dio raw_psync kernel_psync
  done
fi
if want fixed; then
  point fixed "qd=32 jobs=1" 32 fio_args 32 1 -- ext4dio_fixed raw_uring_fixed
fi
if want capi; then
  for q in $capi_qds; do
    point capi "qd=$q" "$q" capi_args "$q" -- qd_bench uring_loop
  done
fi

# --- 5. instructions per I/O ---------------------------------------------------
# read_count FILE -> the instruction count perf or callgrind wrote there.
read_count() {
  case $counter in
    perf) awk -F, '$3 ~ /^instructions/ { print $1 }' "$1" ;;
    callgrind) awk '$1 == "summary:" || $1 == "totals:" { print $2; exit }' "$1" ;;
  esac
}
# counted CMD... -> CMD under the counter, writing $work/out/count.
counted() {
  rm -f "$work/out/count"
  case $counter in
    perf) printf '%s\0' perf stat -x, -e instructions:u -o "$work/out/count" -- "$@" ;;
    callgrind) printf '%s\0' valgrind --tool=callgrind -q --callgrind-out-file="$work/out/count" -- "$@" ;;
  esac
}
fio_count_args() {  # fio_count_args ROW N: fio_args at QD32, N I/Os instead of a time
  local row=$1 n=$2 a x b=()
  mapfile -d '' -t a < <(fio_args "$row" 32 1)
  for x in "${a[@]}"; do
    case $x in --time_based=*|--runtime=*) ;; *) b+=("$x") ;; esac
  done
  printf '%s\0' "${b[@]}" --number_ios="$n" --io_size=$(( n * 4096 ))
}
# instr_row ROW QD KIND ZERO_IOS BUILDER ARGS...: instructions of a run of
# $ios I/Os (BUILDER ARGS... $ios) minus those of a run of ZERO_IOS I/Os
# (BUILDER ARGS... ZERO_IOS), per I/O. Both runs are checked as any other
# (the zero-I/O run only for a clean exit and no I/O).
declare -A instr_bytes
instr_row() {
  local row=$1 qd=$2 kind=$3 zero_ios=$4; shift 4
  local what="instr $row qd=$qd" inner cmd i_n i_0 per
  mapfile -d '' -t inner < <("$@" "$ios")
  mapfile -d '' -t cmd < <(counted "${inner[@]}")
  run_cmd "$what" "$kind" "$qd" "${cmd[@]}"
  [ "$r_ios" = "$ios" ] || run_failed "$what" "$r_ios I/Os, not $ios"
  instr_bytes[$row,$qd]=$r_bytes
  i_n=$(read_count "$work/out/count")
  mapfile -d '' -t inner < <("$@" "$zero_ios")
  mapfile -d '' -t cmd < <(counted "${inner[@]}")
  if [ "$zero_ios" = 0 ]; then
    # No I/O at all: run_cmd would refuse the output (ios 0).
    "${cmd[@]}" > "$work/out/run.json" 2> "$work/out/run.json.err" \
      || run_failed "$what startup" "exit status $? from: ${cmd[*]}"
    grep -q '"ios": 0,' "$work/out/run.json" || run_failed "$what startup" "the zero-I/O run did I/O"
  else
    run_cmd "$what startup" "$kind" "$qd" "${cmd[@]}"
    [ "$r_ios" = "$zero_ios" ] || run_failed "$what startup" "$r_ios I/Os, not $zero_ios"
  fi
  i_0=$(read_count "$work/out/count")
  [[ $i_n =~ ^[0-9]+$ && $i_0 =~ ^[0-9]+$ ]] || run_failed "$what" "no instruction count ('$i_n', '$i_0')"
  per=$(awk -v a="$i_n" -v b="$i_0" -v n="$ios" -v z="$zero_ios" 'BEGIN { printf "%.0f", (a - b) / (n - z) }')
  echo "$prog: $what: ($i_n - $i_0) / $(( ios - zero_ios )) I/Os = $per per I/O" >&2
  echo "$row,$qd,$ios,$i_n,$i_0,$per,$counter" >> "$instr_csv"
}
same_bytes() {  # same_bytes OURS REF QD: both wrote the same bytes
  [ "${instr_bytes[$1,$3]}" = "${instr_bytes[$2,$3]}" ] \
    || die "instr qd=$3: $1 wrote ${instr_bytes[$1,$3]} bytes, $2 ${instr_bytes[$2,$3]}"
}
if want instr && [ "$counter" != none ]; then
  echo "$prog: instructions per I/O ($counter, $ios I/Os per run)" >&2
  for q in $instr_qds; do
    instr_row qd_bench "$q" json 0 capi_args qd_bench "$q"
    instr_row uring_loop "$q" json 0 capi_args uring_loop "$q"
    same_bytes qd_bench uring_loop "$q"
  done
  instr_row fio_ext4dio 32 fio 1 fio_count_args ext4dio
  instr_row fio_raw_uring 32 fio 1 fio_count_args raw_uring
  same_bytes fio_ext4dio fio_raw_uring 32
  want_counts=$(( 2 * $(echo "$instr_qds" | wc -w) + 2 ))
  [ "$(( $(wc -l < "$instr_csv") - 1 ))" = "$want_counts" ] \
    || die "only $(( $(wc -l < "$instr_csv") - 1 )) of $want_counts instruction counts were made"
fi

# Every planned run ran (a failure that did not stop the script would show here).
[ "$done_runs" = "$total_runs" ] || die "only $done_runs of $total_runs timed runs ran"
elapsed=$(( $(date +%s) - start ))
sums_after=$(bin_sums)
binaries=$(bl_binaries "ext4dio.so, libext4dio.so, qd_bench, uring_loop" "$sums_before" "$sums_after")
cat > "$outdir/meta.txt" <<EOF
command	$cmdline
date	$(date -u '+%Y-%m-%d %H:%M UTC')
machine	$(bl_machine)
storage	ext4 (4 KiB blocks, mkfs.ext4 $mkfs_opts) on $backing
file	${file_mib} MiB, written with dd from /dev/urandom (oflag=direct), $nextents extents
region	$region_desc
build	$binaries
runs	$reps interleaved round(s) of ${runtime} s per point, medians; $(fio --version); qd_bench $qd_bench_args; total ${elapsed} s
counter	$counter$([ "$counter" != none ] && echo ", $ios I/Os per count")
EOF

# --- the report ----------------------------------------------------------------
bl_report "$outdir" <<'PY' | tee "$outdir/report.md"
import csv, os, sys
from bench_report import header, med, points, f0, f2, rat, target, targets_md
out = sys.argv[1]
meta, md = header(out, ("date", "machine", "storage", "file", "region", "build", "runs", "counter"))
vals, usr, targets = {}, {}, []  # targets: (description, goal, [(point, ratio)])
for r in csv.DictReader(open(os.path.join(out, "runs.csv"))):
    vals.setdefault((r["section"], r["point"], r["row"]), []).append(float(r["iops"]))
    if r["usr_us_per_io"] != "-":
        usr.setdefault((r["section"], r["point"], r["row"]), []).append(float(r["usr_us_per_io"]))

ps = points(vals, "fio")
if ps:
    md += ["### 1. fio, 4 KiB random overwrite: the ext4dio engine vs io_uring on the raw device and on the kernel's ext4 file (write IOPS)", ""]
    jobs = []
    for p in ps:
        j = p.split("jobs=")[1]
        if j not in jobs: jobs.append(j)
    gr, gk, gp = [], [], []
    for j in jobs:
        md += [f"numjobs {j}:", "",
               "| QD | ext4dio | raw io_uring | kernel io_uring | raw psync | **ext4dio/raw** | **ext4dio/kernel** | ext4dio/raw psync | user µs/I/O: ext4dio | raw io_uring |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in ps:
            if not p.endswith("jobs=" + j): continue
            q = p.split()[0][3:]
            e, r, k, s = (med(vals, ("fio", p, x)) for x in ("ext4dio", "raw_uring", "kernel_uring", "raw_psync"))
            rr, rk, rs = rat(e, r), rat(e, k), rat(e, s)
            gr.append((p, rs if q == "1" else rr)); gk.append((p, rk))
            md.append(f"| {q} | {f0(e)} | {f0(r)} | {f0(k)} | {f0(s)} | {f2(rr)} | {f2(rk)} | {f2(rs)} | "
                      f"{f2(med(usr, ('fio', p, 'ext4dio')))} | {f2(med(usr, ('fio', p, 'raw_uring')))} |")
        md.append("")
    target(targets, "fio engine / raw (psync at QD1, else io_uring), every point", 0.97, gr)
    target(targets, "fio engine / kernel ext4 file (io_uring), every point", 1.0, gk)

ps = points(vals, "case1")
if ps:
    md += ["### 2. The seed's case 1 (tools/fio/seed-case1.fio: psync, QD1): write IOPS", "",
           "| numjobs | ext4dio | raw psync | kernel psync | **ext4dio/raw** | **ext4dio/kernel** |",
           "|---:|---:|---:|---:|---:|---:|"]
    gr, gk = [], []
    for p in ps:
        e, r, k = (med(vals, ("case1", p, x)) for x in ("ext4dio", "raw_psync", "kernel_psync"))
        gr.append((p, rat(e, r))); gk.append((p, rat(e, k)))
        md.append(f"| {p[5:]} | {f0(e)} | {f0(r)} | {f0(k)} | {f2(rat(e, r))} | {f2(rat(e, k))} |")
    md.append("")
    target(targets, "case 1 / raw psync, every numjobs", 0.97, gr)
    target(targets, "case 1 / kernel psync, every numjobs", 1.0, gk)

ps = points(vals, "fixed")
if ps:
    md += ["### 3. Fixed buffers, QD32, 1 job: engine ext4dio_fixed_buffers=1 vs fio io_uring fixedbufs=1 registerfiles=1 on the raw device", "",
           "| ext4dio (fixed buffers) | raw io_uring (fixedbufs, registerfiles) | **ratio** |", "|---:|---:|---:|"]
    for p in ps:
        e, r = med(vals, ("fixed", p, "ext4dio_fixed")), med(vals, ("fixed", p, "raw_uring_fixed"))
        md.append(f"| {f0(e)} | {f0(r)} | {f2(rat(e, r))} |")
        target(targets, "fixed buffers: engine / raw io_uring fixedbufs", 0.97, [(p, rat(e, r))])
    md.append("")

ps = points(vals, "capi")
if ps:
    md += ["### 4. The C API (bench/qd_bench) vs a bare liburing loop (bench/uring_loop), same device bytes and offsets", "",
           "| QD | qd_bench | uring_loop | **ratio** |", "|---:|---:|---:|---:|"]
    g = []
    for p in ps:
        e, r = med(vals, ("capi", p, "qd_bench")), med(vals, ("capi", p, "uring_loop"))
        g.append((p, rat(e, r)))
        md.append(f"| {p[3:]} | {f0(e)} | {f0(r)} | {f2(rat(e, r))} |")
    md.append("")
    target(targets, "C API / bare liburing loop, every QD", 0.95, g)

irows = list(csv.DictReader(open(os.path.join(out, "instr.csv"))))
if irows:
    c = irows[0]["counter"]
    how = "perf stat -e instructions:u" if c == "perf" else "valgrind --tool=callgrind (the CPU has no counters here)"
    md += [f"### 5. User-space instructions per 4 KiB write ({how}; {irows[0]['ios']} I/Os, minus startup)", "",
           "| what | QD | instructions per I/O |", "|---|---:|---:|"]
    names = {"qd_bench": "C API (qd_bench)", "uring_loop": "bare liburing loop (uring_loop)",
             "fio_ext4dio": "fio, ext4dio engine (whole fio)", "fio_raw_uring": "fio, io_uring on raw (whole fio)"}
    for r in irows:
        md.append(f"| {names.get(r['row'], r['row'])} | {r['qd']} | {int(r['per_io'])} |")
    md.append("")
    d = {(r["row"], r["qd"]): int(r["per_io"]) for r in irows}
    target(targets, "instructions per I/O, C API (at most)", -400,
           [(f"qd={q}", float(v)) for (row, q), v in d.items() if row == "qd_bench"])
    if ("fio_ext4dio", "32") in d and ("fio_raw_uring", "32") in d:
        md.append(f"fio engine minus fio io_uring: {d[('fio_ext4dio', '32')] - d[('fio_raw_uring', '32')]} instructions per I/O.")
        md.append("")

md += targets_md("issue 10", targets, na_goal=lambda goal: f"{abs(goal)}")
print("\n".join(md))
PY
echo "$prog: results in $outdir (report.md, runs.csv, instr.csv, meta.txt)" >&2
