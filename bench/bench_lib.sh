# shellcheck shell=bash disable=SC2154,SC2034  # prog, repo, work, outdir, dev: the caller's; the rest: for it
# Sourced first (before the options are read) by the root benchmarks that
# run fio and friends on a mounted ext4 and check every run
# (hotpath_bench.sh, firstwrite_bench.sh; seed_tables.sh for the set-up
# parts): what they do alike. Only functions; bench/scratch.sh (the trap)
# and bench/mounted_fs.sh (the ext4) are sourced later, as before.
#
#   usage                  the script's header comment (up to `set -euo`), exit 2
#   die MSG                "$prog: MSG" on stderr, exit 1
#   posint OPTION VALUE    exit 2 unless VALUE is a positive integer
#   bl_option ARGS...      one of the options the benchmarks share (--quick,
#                          --reps, --ios, --only, --build, --out,
#                          --image-size, --file-size: quick reps ios only
#                          build outdir image_mib file_mib; -h/--help), or
#                          usage for an unknown one; bl_shift: its words
#   bl_sections "ALL" LIST sections=(): the comma-separated --only LIST, in
#                          ALL's order (each once); exit 2 for an unknown or
#                          no section. want SECTION: is it in sections?
#   bl_need_root TOOL...   exit 77 (skip) unless root and every TOOL installed
#   bl_need_loop           exit 77 (skip) unless a loop device is free
#   bl_need_shm IMAGE_MIB  die unless /dev/shm has room for the image + 64 MiB
#   bl_build_tools         build (made absolute), engine, mapper: the fio
#                          engine and tools/ext4dio-map of --build, or die
#   bl_outdir [SUFFIX]     outdir (default bench/results/<date>[-SUFFIX]),
#                          made and absolute, or die
#   bl_devstat             devstat: $dev's /sys stat file, or die;
#                          dev_written: bytes written to $dev so far
#   bl_parse_out KIND FILE fio (checked writes: "iops bytes ios usr_us_per_io"),
#                          json (qd_bench/uring_loop: "iops bytes ios -") or
#                          fio-rw (unchecked: "read_iops write_iops usr sys
#                          errors"); the reason on stderr when it fails
#   bl_run_cmd WHAT KIND INFLIGHT WANT FIRST TIMEOUT SYNC CMD...
#                          one checked run (see bl_run_cmd below)
#   run_failed WHAT WHY    keep the run's output in DIR/failed, say so, exit 1
#   bl_sums FILE...        the files' sha256, 12 digits each, a space after each
#   bl_commit              the build's source tree: `git describe` [in DIR]
#   bl_binaries NAMES BEFORE AFTER
#                          meta.txt's build line (warns when BEFORE != AFTER)
#   bl_machine             meta.txt's machine line
#   bl_report ARGS... <<'PY'
#                          python3 on the script on stdin, which can import
#                          bench/bench_report.py (the report's helpers)
#
# Needs `prog` (for messages) and `repo`; the run helpers also `work`,
# `outdir` and `dev`.

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "$prog: $*" >&2; exit 1; }
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$prog: $1: a positive integer, not '$2'" >&2; exit 2; }; }

bl_option() {
  bl_shift=2
  case $1 in
    --quick) quick=1; bl_shift=1 ;;
    --reps) reps=${2:?} ;;
    --ios) ios=${2:?} ;;
    --only) only=${2:?} ;;
    --build) build=${2:?} ;;
    --out) outdir=${2:?} ;;
    --image-size) image_mib=${2:?} ;;
    --file-size) file_mib=${2:?} ;;
    -h|--help) usage ;;
    *) echo "$prog: unknown option $1" >&2; usage ;;
  esac
}

bl_sections() {
  local all=$1 s w wanted
  sections=()
  IFS=, read -r -a wanted <<< "$2"
  for w in "${wanted[@]}"; do
    [[ " $all " == *" $w "* ]] || { echo "$prog: --only: unknown section '$w'" >&2; exit 2; }
  done
  for s in $all; do  # the report's order, whatever the list's
    for w in "${wanted[@]}"; do [ "$w" = "$s" ] && { sections+=("$s"); break; }; done
  done
  [ ${#sections[@]} -gt 0 ] || { echo "$prog: --only: no section" >&2; exit 2; }
}
want() { [[ " ${sections[*]} " == *" $1 "* ]]; }

bl_need_root() {
  if [ "$(id -u)" -ne 0 ]; then echo "$prog: skipped: needs root (mkfs, loop device, mount)" >&2; exit 77; fi
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || { echo "$prog: skipped: $t not installed" >&2; exit 77; }
  done
}
bl_need_loop() {
  if ! losetup -f >/dev/null 2>&1; then
    echo "$prog: skipped: no free loop device (losetup -f failed; modprobe loop?)" >&2; exit 77
  fi
}
bl_need_shm() {
  local avail_kib
  avail_kib=$(df -Pk /dev/shm | awk 'NR==2 {print $4}')
  [ "$avail_kib" -ge $(( $1 * 1024 + 65536 )) ] \
    || die "/dev/shm has $((avail_kib / 1024)) MiB free, needs $(($1 + 64)) MiB"
}

bl_build_tools() {
  build=$(cd "$build" 2>/dev/null && pwd) || die "--build: no directory $build"
  engine=$build/tools/fio/ext4dio.so
  mapper=$build/tools/ext4dio-map
  [ -f "$engine" ] || die "no fio engine $engine (ninja -C $build tools/fio/ext4dio.so; needs the fio source, scripts/setup.sh)"
  [ -x "$mapper" ] || die "no $mapper (ninja -C $build tools/ext4dio-map)"
}

bl_outdir() {
  [ -n "$outdir" ] || outdir=$repo/bench/results/$(date +%Y-%m-%d_%H%M%S)${1:+-$1}
  mkdir -p "$outdir" || die "cannot create $outdir"
  outdir=$(cd "$outdir" && pwd)
}

bl_devstat() {
  devstat=/sys/block/$(basename "$dev")/stat
  [ -r "$devstat" ] || die "no $devstat"
}
dev_written() {  # bytes written to $dev so far
  local sectors
  sectors=$(awk '{ print $7 }' "$devstat")
  [[ $sectors =~ ^[0-9]+$ ]] || die "$devstat: no sector count ('$sectors')"
  echo $(( sectors * 512 ))
}

bl_parse_out() {
  python3 - "$1" "$2" <<'PY'
import json, sys
kind, path = sys.argv[1:3]
s = open(path, errors="replace").read()
i = s.find("{")
if i < 0:
    sys.exit("no JSON in fio output" if kind == "fio-rw" else "no JSON in the output")
d, _ = json.JSONDecoder().raw_decode(s[i:])
if kind == "fio":
    # fio's write direction, summed over jobs; any error, short or dropped
    # I/O or read fails the run.
    jobs = d["jobs"]
    bad = [j["jobname"] for j in jobs if j.get("error", 0)]
    if bad:
        sys.exit("fio reported errors in " + ", ".join(bad))
    w = [j["write"] for j in jobs]
    if any(x.get("short_ios", 0) or x.get("drop_ios", 0) for x in w):
        sys.exit("short or dropped I/Os")
    if any(j["read"]["io_bytes"] for j in jobs):
        sys.exit("reads in a write benchmark")
    iops = sum(x["iops"] for x in w)
    nbytes = sum(x["io_bytes"] for x in w)
    nios = sum(x["total_ios"] for x in w)
    # usr_cpu is each job thread's share of its runtime (thread=1).
    usr = sum(j["usr_cpu"] / 100 * x["runtime"] * 1000 for j, x in zip(jobs, w))
    print(f"{iops:.1f} {nbytes} {nios} {usr / nios if nios else 0:.3f}")
elif kind == "fio-rw":
    # Both directions and the CPU, summed over jobs; errors counted, not fatal.
    jobs = d["jobs"]
    r = sum(j["read"]["iops"] for j in jobs)
    w = sum(j["write"]["iops"] for j in jobs)
    u = sum(j["usr_cpu"] for j in jobs)
    k = sum(j["sys_cpu"] for j in jobs)
    e = sum(1 for j in jobs if j.get("error", 0))
    print(f"{r:.1f} {w:.1f} {u:.2f} {k:.2f} {e}")
else:
    print(f"{d['iops']:.1f} {d['bytes']} {d['ios']} -")
PY
}

# bl_check_bytes BYTES IOS DEVICE_BYTES INFLIGHT WANT FIRST: whole 4 KiB
# I/Os (exactly WANT of them, or at least one when WANT is empty), and the
# device saw them written within the I/Os in flight + 8 MiB + 2 % for the
# journal + 1 KiB per first write (FIRST of them); else prints why.
bl_check_bytes() {
  local b=$1 n=$2 db=$3 inflight=$4 want=$5 first=$6
  if [ -z "$want" ]; then
    [ "$n" -gt 0 ] || { echo "no I/O done"; return 1; }
  else
    [ "$n" = "$want" ] || { echo "$n I/Os done, $want planned"; return 1; }
  fi
  [ "$b" = $(( n * 4096 )) ] || { echo "$b bytes reported for $n I/Os of 4096 bytes"; return 1; }
  local slack=$(( inflight * 4096 + (8 << 20) + b / 50 + first * 1024 )) diff=$(( db - b ))
  [ "${diff#-}" -le "$slack" ] || {
    echo "reported $b bytes written, the device $dev saw $db written (more than $slack apart)"
    return 1
  }
}

# bl_run_cmd WHAT KIND INFLIGHT WANT FIRST TIMEOUT SYNC CMD... -> sets
# r_iops r_bytes r_ios r_usr r_dev, or stops the script: CMD failed (or ran
# over TIMEOUT seconds), its output (bl_parse_out KIND) is wrong, or the
# device disagrees (bl_check_bytes ... INFLIGHT WANT FIRST). SYNC=1: sync
# before and after, so the journal's share of the run is inside the window.
bl_run_cmd() {
  local what=$1 kind=$2 inflight=$3 want=$4 first=$5 limit=$6 sync=$7; shift 7
  local out=$work/out/run.json before after res
  [ "$sync" = 1 ] && sync
  before=$(dev_written)
  timeout --kill-after=10 "$limit" "$@" > "$out" 2> "$out.err" \
    || run_failed "$what" "exit status $? from: $*"
  [ "$sync" = 1 ] && sync
  after=$(dev_written)
  res=$(bl_parse_out "$kind" "$out" 2>>"$out.err") || run_failed "$what" "bad output ($(tail -n1 "$out.err"))"
  read -r r_iops r_bytes r_ios r_usr <<< "$res"
  # (A bad number in $(( )) would abort only the enclosing top-level command
  # and let the script go on: check first.)
  [[ $r_bytes =~ ^[0-9]+$ && $r_ios =~ ^[0-9]+$ && $before =~ ^[0-9]+$ && $after =~ ^[0-9]+$ ]] \
    || run_failed "$what" "not a count: bytes '$r_bytes', I/Os '$r_ios', device '$before'..'$after'"
  r_dev=$(( after - before ))
  local why
  why=$(bl_check_bytes "$r_bytes" "$r_ios" "$r_dev" "$inflight" "$want" "$first") || run_failed "$what" "$why"
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

# What was measured: the tree's commit and the exact binaries. Another build
# replacing them during the run is reported (the numbers then mix two
# versions).
bl_sums() { sha256sum "$@" 2>/dev/null | awk '{ printf "%s ", substr($1, 1, 12) }'; }
bl_commit() {
  # The source tree the build directory was configured from (meson records it).
  local srcdir commit
  srcdir=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["directories"]["source"])' \
    "$build/meson-info/meson-info.json" 2>/dev/null || echo "$repo")
  commit=$(git -C "$srcdir" describe --always --dirty 2>/dev/null || echo unknown)
  [ "$srcdir" = "$repo" ] || commit="$commit in $srcdir"
  echo "$commit"
}
bl_binaries() {  # bl_binaries NAMES SUMS_BEFORE SUMS_AFTER
  local s
  s="tree $(bl_commit), $build: $1 sha256 ${2% }"
  if [ "$2" != "$3" ]; then
    s+=" — REBUILT DURING THE RUN (now ${3% }): the numbers mix two versions"
    echo "$prog: warning: a measured binary was rebuilt during the run" >&2
  fi
  echo "$s"
}
bl_machine() {
  echo "$(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
}

bl_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bl_report() {
  PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$bl_dir${PYTHONPATH:+:$PYTHONPATH}" python3 - "$@"
}
