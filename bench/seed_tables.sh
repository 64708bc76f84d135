#!/usr/bin/env bash
# The seed's two fio tables (linux-ext4 "dio overwrite nolock"), re-run on
# this machine with ext4dio and the raw device beside the kernel's ext4:
#
#   case 1     4 KiB random overwrite, numjobs 1/4/8/16, iodepth 1
#   case 2     N randread jobs + N randwrite jobs in one fio run, N = 1/2/4/8
#   QD sweep   4 KiB random overwrite, 1 job, iodepth 1/8/32/128 (io_uring)
#   sub-block  1 KiB random overwrite on the 4 KiB-block fs, 1 job, iodepth 32
#   O_DSYNC    4 KiB random overwrite with O_DSYNC (ext4dio: RWF_DSYNC), 1/4 jobs
#
# Rows: "kernel ext4, dioread_lock" and "kernel ext4, dioread_nolock" (the
# default) — fio's psync engine at iodepth 1, io_uring in the QD sweep and
# sub-block —, "ext4dio" (the fio engine, ext4dio_backend=auto) and "raw
# device" (the same blocks through the block device; O_DSYNC also shows raw
# io_uring at iodepth 1, whose async O_DSYNC writes need no separate cache
# flush per write as synchronous ones do). Ratios: ext4dio / raw and
# ext4dio / kernel (dioread_nolock), both of the same engine kind (psync
# at iodepth 1, io_uring in the QD sweep and sub-block). Every row writes the
# same physically contiguous region of a fully written 1 GiB file: kernel
# and ext4dio rows filename=FILE offset=L size=S, the raw row
# filename=DEV offset=P size=S with P the device byte of L.
#
# Noise: for each point, each repetition runs every row once in a rotating
# order; tables show medians. All runs: direct=1, thread=1, random offsets
# (norandommap, randrepeat=0), ramp_time 1 s.
#
#   bench/seed_tables.sh [--reps R] [--runtime T] [--quick] [--out DIR]
#                        [--build DIR] [--update-docs] [--only LIST]
#                        [--qd1-uring] [--image-size MIB] [--file-size MIB]
#                        [--mkfs-opts "OPTS"] [--keep-json]
#                        [--device DEV --i-know-this-overwrites-NAME]
#   bench/seed_tables.sh --replot DIR [--update-docs]
#
#   --reps R         repetitions per point (default 3)
#   --runtime T      seconds per run (default 5; plus 1 s ramp)
#   --quick          smoke run: 1 repetition of 2 s
#   --out DIR        results directory (default bench/results/<date>)
#   --build DIR      build directory with tools/fio/ext4dio.so and
#                    tools/ext4dio-map (default: build/ in the repository)
#   --update-docs    also copy the plot to docs/seed_tables.png
#   --only LIST      comma-separated subset of case1,case2,qd,sub,dsync
#   --qd1-uring      add io_uring kernel and raw rows to cases 1 and 2
#   --image-size MIB ext4 image on /dev/shm (default 2048)
#   --file-size MIB  the test file (default 1024)
#   --mkfs-opts S    extra mkfs.ext4 options (default "-O sparse_super2":
#                    backups only in groups 1 and last, so the file gets a
#                    physically contiguous run of several hundred MiB)
#   --keep-json      keep every run's fio JSON in DIR/json (default: only
#                    those of failed runs)
#   --device DEV     run on a real disk instead of a loop device over
#                    /dev/shm: mkfs.ext4 ON DEV (everything on it is lost).
#                    Needs --i-know-this-overwrites-NAME, NAME being DEV
#                    (/dev/nvme0n1) or its basename (nvme0n1). Refused when
#                    DEV or anything on it is mounted or in use, for vda
#                    and for loop devices (this script makes its own).
#   --replot DIR     run nothing: rebuild DIR's tables, CSV and plot from
#                    its runs.csv, plan.tsv and meta.txt (no root needed)
#
# Writes DIR/tables.md (setup, tables, ratios, targets), DIR/medians.csv,
# DIR/runs.csv (every run, with fio's CPU figures and wall time),
# DIR/seed_tables.png (gnuplot), DIR/plan.tsv and DIR/meta.txt (for
# --replot) and prints the markdown. The tree's commit and the sha256 of
# the engine and library are recorded, and a run during which they were
# rebuilt says so. On a device whose logical block size is above 1 KiB
# (4Kn disks, zram) the sub-block section is skipped. Targets (informational, PASS/MISS in the summary): ext4dio/raw
# >= 0.95 at QD32 and >= 0.97 in the seed matrices (cases 1 and 2);
# ext4dio/kernel >= 1.15 at QD32. Exit 0 when every run worked, 1 when a
# run or the setup failed, 2 for usage errors, 77 (skip) when not root or
# no loop device is free.
#
# Root only. All it makes (/dev/shm/ext4dio-seedtab-*, one loop device, one
# mount under /tmp/ext4dio-seedtab-mnt-*) is removed on exit, failure or
# Ctrl-C; it never touches another device (with --device: only DEV, left
# unmounted with the benchmark's filesystem on it).
set -euo pipefail

prog=seed_tables.sh
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cmdline="bench/seed_tables.sh${*:+ $*}"

reps=3; runtime=5; ramp=1; quick=0; outdir=""; build="$repo/build"; update_docs=0
only="case1,case2,qd,sub,dsync"; qd1_uring=0; image_mib=2048; file_mib=1024
mkfs_opts="-O sparse_super2"; keep_json=0; device=""; ack=""; replot=""
# shellcheck source=bench/bench_lib.sh
. "$here/bench_lib.sh"  # usage, die, posint, bl_*
while [ $# -gt 0 ]; do
  case $1 in
    --reps) reps=${2:?}; shift 2 ;;
    --runtime) runtime=${2:?}; shift 2 ;;
    --quick) quick=1; shift ;;
    --out) outdir=${2:?}; shift 2 ;;
    --build) build=${2:?}; shift 2 ;;
    --update-docs) update_docs=1; shift ;;
    --only) only=${2:?}; shift 2 ;;
    --qd1-uring) qd1_uring=1; shift ;;
    --image-size) image_mib=${2:?}; shift 2 ;;
    --file-size) file_mib=${2:?}; shift 2 ;;
    --mkfs-opts) mkfs_opts=${2?}; shift 2 ;;
    --keep-json) keep_json=1; shift ;;
    --replot) replot=${2:?}; shift 2 ;;
    --device) device=${2:?}; shift 2 ;;
    --i-know-this-overwrites-*) ack=${1#--i-know-this-overwrites-}; shift ;;
    -h|--help) usage ;;
    *) echo "$prog: unknown option $1" >&2; usage ;;
  esac
done
if [ "$quick" = 1 ]; then reps=1; runtime=2; fi
posint --reps "$reps"; posint --runtime "$runtime"; posint --image-size "$image_mib"
posint --file-size "$file_mib"
[ "$image_mib" -ge $(( file_mib + file_mib / 4 + 128 )) ] \
  || { echo "$prog: --image-size $image_mib MiB is too small for a $file_mib MiB file" >&2; exit 2; }
sections=()
IFS=, read -r -a wanted <<< "$only"
for s in case1 case2 qd sub dsync; do  # the tables' order, whatever the list's
  for w in "${wanted[@]}"; do [ "$w" = "$s" ] && sections+=("$s"); done
done
for w in "${wanted[@]}"; do
  case $w in case1|case2|qd|sub|dsync) ;; *) echo "$prog: --only: unknown section '$w'" >&2; exit 2 ;; esac
done
[ ${#sections[@]} -gt 0 ] || { echo "$prog: --only: no section" >&2; exit 2; }
if [ -n "$ack" ] && [ -z "$device" ]; then
  echo "$prog: --i-know-this-overwrites-$ack without --device" >&2; exit 2
fi

have_gnuplot=1; command -v gnuplot >/dev/null 2>&1 || have_gnuplot=0
# report DIR: tables.md, medians.csv and the plot from DIR/runs.csv,
# DIR/plan.tsv and DIR/meta.txt (prints the markdown).
report() {
  python3 - "$1" "$have_gnuplot" <<'PY'
import csv, os, shutil, statistics, subprocess, sys
outdir, have_gnuplot = sys.argv[1:3]
runs_csv, plan_tsv, meta_txt = (os.path.join(outdir, n) for n in ("runs.csv", "plan.tsv", "meta.txt"))

meta = dict(l.rstrip("\n").split("\t", 1) for l in open(meta_txt) if "\t" in l)
plan = [l.rstrip("\n").split("\t") for l in open(plan_tsv) if l.strip()]
sections, points, rows, label = [], {}, {}, {}
for s, p, r, lab in plan:
    if s not in sections:
        sections.append(s); points[s] = []; rows[s] = []
    if p not in points[s]: points[s].append(p)
    if r not in rows[s]: rows[s].append(r)
    label[r] = lab
vals = {}  # (s, p, r, dir) -> [iops]
failed = []
for row in csv.DictReader(open(runs_csv)):
    if row["ok"] != "1":
        failed.append(row); continue
    for d in ("read", "write"):
        vals.setdefault((row["section"], row["point"], row["row"], d), []).append(float(row[d + "_iops"]))

def med(s, p, r, d):
    v = vals.get((s, p, r, d))
    return statistics.median(v) if v else None

TITLE = {
    "case1": "Case 1: 4 KiB random overwrite, numjobs N, iodepth 1 (write IOPS)",
    "case2": "Case 2: N randread + N randwrite jobs in one run, iodepth 1 (read/write IOPS)",
    "qd": "QD sweep: 4 KiB random overwrite, 1 job, io_uring, iodepth N (write IOPS)",
    "sub": "Sub-block: 1 KiB random overwrite on the 4 KiB-block fs, 1 job, iodepth 32 (write IOPS)",
    "dsync": "O_DSYNC: 4 KiB random overwrite, O_DSYNC (ext4dio: RWF_DSYNC), iodepth 1 (write IOPS)",
}
XNAME = {"case1": "numjobs", "case2": "N", "qd": "iodepth", "sub": "iodepth", "dsync": "numjobs"}
def refs(s):  # the raw and kernel rows ext4dio is compared with
    if s in ("qd", "sub"):
        return "raw_uring", "k_nolock_uring"
    return "raw_psync", "k_nolock_psync"

dirs = lambda s: ("read", "write") if s == "case2" else ("write",)

def fmt(x):
    return "–" if x is None else f"{x:.0f}"
def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b
def fr(x):
    return "–" if x is None else f"{x:.2f}"

md = []
md.append("Command: `" + meta["command"] + "`\n")
for k in ("date", "machine", "storage", "file", "region", "build", "runs"):
    if k in meta:
        md.append(f"* {k}: {meta[k]}")
md.append("")
ratios = {}  # (s, p, d, "raw"|"kernel") -> value
medians_rows = []
for s in sections:
    raw, ker = refs(s)
    md.append(f"### {TITLE[s]}\n")
    md.append(f"| {XNAME[s]} | " + " | ".join(points[s]) + " |")
    md.append("|---|" + "---:|" * len(points[s]))
    for r in rows[s]:
        cells = []
        for p in points[s]:
            cells.append("/".join(fmt(med(s, p, r, d)) for d in dirs(s)))
            for d in dirs(s):
                v = vals.get((s, p, r, d), [])
                medians_rows.append([s, p, r, label[r], d, fmt(med(s, p, r, d)),
                                     fmt(min(v)) if v else "", fmt(max(v)) if v else "", len(v)])
        md.append(f"| {label[r]} | " + " | ".join(cells) + " |")
    other = "raw_uring" if raw == "raw_psync" else "raw_psync"
    for name, ref in (("raw", raw), ("kernel", ker), ("raw_other", other)):
        if ref not in rows[s] or "ext4dio" not in rows[s]:
            continue
        cells = []
        for p in points[s]:
            parts = []
            for d in dirs(s):
                x = ratio(med(s, p, "ext4dio", d), med(s, p, ref, d))
                ratios[(s, p, d, name)] = x
                parts.append(fr(x))
            cells.append("/".join(parts))
        what = ("ext4dio / raw" if name == "raw" else
                "ext4dio / kernel (dioread_nolock)" if name == "kernel" else
                "ext4dio / " + label[other])
        md.append(f"| **{what}** | " + " | ".join(cells) + " |")
    md.append("")

# Targets.
def target(desc, keys, goal):
    got = [(k, ratios.get(k)) for k in keys]
    if not got or any(v is None for _, v in got):
        return f"| {desc} | ≥ {goal:.2f} | – | n/a (not run) |"
    worst = min(got, key=lambda kv: kv[1])
    misses = [f"{k[0]} {k[1]}{'' if k[0] != 'case2' else ' ' + k[2]}" for k, v in got if v < goal]
    verdict = "PASS" if not misses else "MISS (" + ", ".join(misses) + ")"
    return f"| {desc} | ≥ {goal:.2f} | {worst[1]:.2f} | {verdict} |"
summ = ["### Targets (informational)\n", "| target | goal | worst | verdict |", "|---|---:|---:|---|"]
summ.append(target("ext4dio / raw, QD32 (io_uring)", [("qd", "32", "write", "raw")] if "qd" in sections else [], 0.95))
seed_keys = [(s, p, d, "raw") for s in ("case1", "case2") if s in sections for p in points[s] for d in dirs(s)]
summ.append(target("ext4dio / raw, seed matrices (cases 1 and 2, every cell)", seed_keys, 0.97))
summ.append(target("ext4dio / kernel, QD32 (io_uring)", [("qd", "32", "write", "kernel")] if "qd" in sections else [], 1.15))
md += summ
md.append("")
if failed:
    md.append(f"**{len(failed)} run(s) failed**: " + "; ".join(
        f"{f['section']} {f['point']} {f['row']} rep {f['rep']}" for f in failed) + "\n")

open(os.path.join(outdir, "tables.md"), "w").write("\n".join(md) + "\n")
with open(os.path.join(outdir, "medians.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["section", "point", "row", "label", "direction", "median_iops", "min_iops", "max_iops", "runs"])
    w.writerows(medians_rows)
    for (s, p, d, name), x in ratios.items():
        if name == "raw_other":
            name = {"raw_uring": "raw (io_uring)", "raw_psync": "raw (psync)"}[
                "raw_uring" if refs(s)[0] == "raw_psync" else "raw_psync"]
        w.writerow([s, p, "ext4dio/" + name, "ext4dio / " + name, d, fr(x), "", "", ""])
print("\n".join(md))

# Plot: case 1, case 2, QD sweep (IOPS per row), and every ratio.
if have_gnuplot != "1":
    print("(gnuplot not installed: no plot)", file=sys.stderr); sys.exit(0)
pdir = os.path.join(outdir, ".plot"); os.makedirs(pdir, exist_ok=True)
COLOR = {"k_lock_psync": "#999999", "k_lock_uring": "#999999", "k_nolock_psync": "#1f77b4",
         "k_nolock_uring": "#1f77b4", "ext4dio": "#d62728", "raw_psync": "#000000", "raw_uring": "#000000"}
DASH = lambda r: "dt 2" if r.endswith("_uring") and r.startswith(("k_", "raw")) else "dt 1"
g = ['set terminal pngcairo size 1800,1000 font "Sans,11"',
     f'set output "{os.path.join(outdir, "seed_tables.png")}"',
     'set multiplot layout 2,2 title "ext4dio vs kernel ext4 vs raw device: ' +
     meta["machine"].replace('"', "'") + '"',
     "set termoption noenhanced", "set grid", "set key bottom right font ',9'", "set ylabel 'IOPS'", "set yrange [0:*]",
     "set format y '%.0s%c'"]
def line_plot(s, title, xlabel, logx, d_list):
    if s not in sections: return
    fn = os.path.join(pdir, s + ".dat")
    with open(fn, "w") as f:
        for p in points[s]:
            f.write(p + " " + " ".join(
                (lambda x: "NaN" if x is None else f"{x:.0f}")(med(s, p, r, d))
                for r in rows[s] for d in d_list) + "\n")
    g.append(f"set title '{title}'"); g.append(f"set xlabel '{xlabel}'")
    g.append("set logscale x 2" if logx else "unset logscale x")
    lo, hi = float(points[s][0]), float(points[s][-1])
    g.append(f"set xrange [{lo / 1.25}:{hi * 1.25}]" if logx else f"set xrange [{lo}:{hi}]")
    g.append("set xtics (" + ", ".join(f"'{p}' {p}" for p in points[s]) + ")")
    plots, col = [], 2
    for r in rows[s]:
        for d in d_list:
            t = label[r] + (f" {d}" if len(d_list) > 1 else "")
            dt = "dt 3" if d == "read" else DASH(r)
            plots.append(f"'{fn}' using 1:{col} with linespoints lw 2 pt 7 {dt} lc rgb '{COLOR[r]}' title '{t}'")
            col += 1
    g.append("plot " + ", ".join(plots))
line_plot("case1", "Case 1: 4 KiB randwrite, iodepth 1", "numjobs", True, ("write",))
line_plot("case2", "Case 2: N randread + N randwrite jobs (dotted: read)", "N", True, ("write", "read"))
line_plot("qd", "QD sweep: 4 KiB randwrite, 1 job, io_uring", "iodepth", True, ("write",))
# Ratios as bars, with the targets as lines.
keys = [(s, p, d) for s in sections for p in points[s] for d in dirs(s) if (s, p, d, "raw") in ratios]
if keys:
    fn = os.path.join(pdir, "ratios.dat")
    short = {"case1": "c1 j", "case2": "c2 N", "qd": "QD", "sub": "1k QD", "dsync": "dsync j"}
    with open(fn, "w") as f:
        for s, p, d in keys:
            tag = short[s] + p + ({"read": " r", "write": " w"}[d] if s == "case2" else "")
            f.write('"%s" %s %s\n' % (tag, *[(lambda x: "NaN" if x is None else f"{x:.3f}")(
                ratios.get((s, p, d, n))) for n in ("raw", "kernel")]))
    top = max([v for v in ratios.values() if v is not None] + [1.2]) * 1.35
    g += ["unset logscale x", "set xrange [*:*]", "set key top left opaque box", "unset xtics", "set xtics rotate by 45 right font ',9'", "set bmargin 5", "set xlabel ''",
          "set ylabel 'ratio'", "set format y '%.2f'", f"set yrange [0:{top:.2f}]",
          "set title 'ext4dio / raw and ext4dio / kernel (dioread_nolock, same engine kind)'",
          "set style data histogram", "set style histogram clustered gap 1",
          "set style fill solid 0.8 border -1", "set boxwidth 0.9",
          f"plot '{fn}' using 2:xtic(1) lc rgb '#000000' title 'ext4dio / raw', "
          f"'' using 3 lc rgb '#1f77b4' title 'ext4dio / kernel', "
          "0.95 with lines dt 2 lc rgb '#d62728' title '0.95', "
          "1.15 with lines dt 2 lc rgb '#2ca02c' title '1.15'"]
g.append("unset multiplot")
open(os.path.join(pdir, "plot.gp"), "w").write("\n".join(g) + "\n")
rc = subprocess.call(["gnuplot", os.path.join(pdir, "plot.gp")])
if rc != 0:
    print("gnuplot failed; script kept in " + pdir, file=sys.stderr); sys.exit(1)
shutil.rmtree(pdir)
PY
}

update_docs_plot() {  # update_docs_plot DIR
  [ "$update_docs" = 1 ] || return 0
  if [ -f "$1/seed_tables.png" ]; then
    cp "$1/seed_tables.png" "$repo/docs/seed_tables.png"
    echo "$prog: plot copied to docs/seed_tables.png" >&2
  else
    echo "$prog: --update-docs: no plot (install gnuplot-nox)" >&2
  fi
}
if [ -n "$replot" ]; then
  for f in runs.csv plan.tsv meta.txt; do
    [ -f "$replot/$f" ] || { echo "$prog: --replot: no $replot/$f" >&2; exit 2; }
  done
  report "$replot" || die "the report failed"
  update_docs_plot "$replot"
  exit 0
fi

bl_need_root fio mkfs.ext4 losetup mount umount dd python3 timeout findmnt lsblk
build=$(cd "$build" 2>/dev/null && pwd) || die "--build: no directory $build"
engine=$build/tools/fio/ext4dio.so
mapper=$build/tools/ext4dio-map
[ -f "$engine" ] || die "no fio engine $engine (build it: ninja -C $build; needs the fio source, see README)"
[ -x "$mapper" ] || die "no $mapper (ninja -C $build)"

# --- the target: a loop device over /dev/shm, or --device ------------------
dev=""
if [ -n "$device" ]; then
  dev=$(readlink -f -- "$device")
  name=$(basename -- "$dev")
  refuse() { echo "$prog: refusing --device $device: $*" >&2; exit 2; }
  [ -b "$dev" ] || refuse "not a block device"
  [ "$ack" = "$device" ] || [ "$ack" = "$dev" ] || [ "$ack" = "$name" ] \
    || refuse "it will be overwritten (mkfs.ext4); say so with --i-know-this-overwrites-$name"
  case $name in
    vda|vda[0-9]*) refuse "vda is this machine's system disk" ;;
    loop*) refuse "a loop device this script did not create (without --device it makes its own)" ;;
  esac
  mp=$(lsblk -nro MOUNTPOINT -- "$dev" 2>/dev/null | grep -v '^$' || true)
  [ -z "$mp" ] || refuse "it (or a partition on it) is mounted or swap: $(echo "$mp" | tr '\n' ' ')"
  grep -q "^$dev " /proc/mounts && refuse "it is mounted"
  for h in /sys/class/block/"$name"/holders/* /sys/class/block/"$name"/*/holders/*; do
    [ -e "$h" ] && refuse "it is in use by $(basename "$h") (device-mapper, md, ...)"
  done
  rootsrc=$(findmnt -no SOURCE / 2>/dev/null || true)
  if [ -n "$rootsrc" ]; then
    rootdisk=$(lsblk -nro PKNAME -- "$rootsrc" 2>/dev/null | head -1 || true)
    if [ "$(readlink -f -- "$rootsrc")" = "$dev" ] || [ "$rootdisk" = "$name" ]; then
      refuse "it holds the root filesystem"
    fi
  fi
else
  bl_need_loop
  bl_need_shm "$image_mib"
fi

bl_outdir ""  # bench/results/<date>

# shellcheck source=bench/scratch.sh
. "$(dirname "$0")/scratch.sh"  # cleanup trap for work/mnt/loop
# shellcheck source=bench/mounted_fs.sh
. "$(dirname "$0")/mounted_fs.sh"  # mf_loop_fs, mf_write_file, mf_region

work=$(rr_mkdtemp /dev/shm/ext4dio-seedtab-XXXXXX) || exit 1
mnt=$(rr_mkdtemp /tmp/ext4dio-seedtab-mnt-XXXXXX) || exit 1
# No lazy init: ext4lazyinit would zero inode tables under the benchmark.
# shellcheck disable=SC2086  # mkfs_opts is a list of options
if [ -n "$dev" ]; then
  echo "$prog: mkfs.ext4 on $dev" >&2
  mkfs.ext4 -q -F -b 4096 $mkfs_opts -E lazy_itable_init=0,lazy_journal_init=0 "$dev" \
    || die "mkfs.ext4 on $dev failed"
  backing="$dev ($(lsblk -dno MODEL,SIZE -- "$dev" 2>/dev/null | xargs || true))"
else
  mf_loop_fs "$image_mib" "$mkfs_opts" || exit 1
fi
[ -b "$dev" ] || die "no block device ($dev)"
# 1 KiB O_DIRECT needs a logical block size of at most 1 KiB (4Kn disks,
# zram: no), else the kernel and raw sub-block rows could not run at all.
sector=$(blockdev --getss "$dev" 2>/dev/null || echo 512)
if [ "$sector" -gt 1024 ]; then
  keep=()
  for s in "${sections[@]}"; do [ "$s" = sub ] || keep+=("$s"); done
  if [ ${#keep[@]} -ne ${#sections[@]} ]; then
    echo "$prog: skipping sub-block: $dev has $sector-byte logical blocks, 1 KiB O_DIRECT is refused there" >&2
  fi
  [ ${#keep[@]} -gt 0 ] || die "nothing left to run"
  sections=("${keep[@]}")
fi
mount -t ext4 "$dev" "$mnt" || die "mount $dev failed"
mounted=1
file=$mnt/testfile

# --- dioread_lock / dioread_nolock ------------------------------------------
mode_now() {  # lock or nolock, from /proc/mounts
  awk -v m="$mnt" '$2 == m { n = split($4, o, ","); for (i = 1; i <= n; i++)
    if (o[i] == "nodioread_nolock" || o[i] == "dioread_lock") l = 1 }
    END { print l ? "lock" : "nolock" }' /proc/mounts
}
set_mode() {  # set_mode lock|nolock
  local want=$1 opt
  [ "$(mode_now)" = "$want" ] && return 0
  [ "$want" = lock ] && opt=dioread_lock || opt=dioread_nolock
  mount -o "remount,$opt" "$mnt" 2>/dev/null || true
  if [ "$(mode_now)" != "$want" ]; then  # remount could not switch it
    umount "$mnt" || die "umount $mnt failed"
    mounted=0
    mount -t ext4 -o "$opt" "$dev" "$mnt" || die "mount -o $opt $dev failed"
    mounted=1
  fi
  [ "$(mode_now)" = "$want" ] || die "could not mount with $opt"
}
set_mode nolock

# --- the test file: fully written, then its largest contiguous run -----------
echo "$prog: writing ${file_mib} MiB of random data into $file" >&2
mf_write_file "$file" "$file_mib" || exit 1
# The largest run of extents contiguous both in the file and on the device.
read -r region_l region_p region_s region_n nextents fs_bs < <(mf_region "$mapper" "$file") \
  || die "no region from $file's map"
[ "$fs_bs" = 4096 ] || die "block size $fs_bs, expected 4096"
if [ "$region_s" -lt $(( 256 << 20 )) ]; then
  echo "$prog: warning: the largest physically contiguous run is only $(( region_s >> 20 )) MiB" >&2
fi
region_desc="file bytes $region_l..$(( region_l + region_s )) ($(( region_s >> 20 )) MiB, $region_n of the file's $nextents extents) = device bytes $region_p..$(( region_p + region_s ))"
echo "$prog: region: $region_desc" >&2

# --- rows, sections, one fio run ---------------------------------------------
declare -A R_LABEL R_KIND R_ENGINE R_MODE
defrow() { R_LABEL[$1]=$2; R_KIND[$1]=$3; R_ENGINE[$1]=$4; R_MODE[$1]=$5; }
defrow k_lock_psync  "kernel ext4, dioread_lock (psync)"     kernel psync    lock
defrow k_nolock_psync "kernel ext4, dioread_nolock (psync)"  kernel psync    nolock
defrow k_lock_uring  "kernel ext4, dioread_lock (io_uring)"  kernel io_uring lock
defrow k_nolock_uring "kernel ext4, dioread_nolock (io_uring)" kernel io_uring nolock
defrow ext4dio       "ext4dio"                               ext4dio ext4dio nolock
defrow raw_psync     "raw device (psync)"                    raw    psync    nolock
defrow raw_uring     "raw device (io_uring)"                 raw    io_uring nolock

section_rows() {
  case $1 in
    case1|case2)
      if [ "$qd1_uring" = 1 ]; then
        echo k_lock_psync k_nolock_psync k_lock_uring k_nolock_uring ext4dio raw_psync raw_uring
      else
        echo k_lock_psync k_nolock_psync ext4dio raw_psync
      fi ;;
    qd|sub) echo k_lock_uring k_nolock_uring ext4dio raw_uring ;;
    dsync) echo k_lock_psync k_nolock_psync ext4dio raw_psync raw_uring ;;
  esac
}
section_points() {
  case $1 in
    case1) echo 1 4 8 16 ;;
    case2) echo 1 2 4 8 ;;
    qd) echo 1 8 32 128 ;;
    sub) echo 32 ;;
    dsync) echo 1 4 ;;
  esac
}

json_dir=$work/json
mkdir -p "$json_dir" "$outdir"
runs_csv=$outdir/runs.csv
plan=$outdir/plan.tsv
echo "section,point,row,label,rep,order,read_iops,write_iops,usr_cpu_pct,sys_cpu_pct,wall_s,ok" > "$runs_csv"
: > "$plan"
for s in "${sections[@]}"; do
  for p in $(section_points "$s"); do
    for r in $(section_rows "$s"); do printf '%s\t%s\t%s\t%s\n' "$s" "$p" "$r" "${R_LABEL[$r]}" >> "$plan"; done
  done
done
total_runs=$(( $(wc -l < "$plan") * reps ))
est=$(( total_runs * (runtime + ramp + 1) ))
echo "$prog: $total_runs runs of ${runtime}+${ramp} s, about $(( est / 60 )) min" >&2

failures=0; done_runs=0
run_one() {  # run_one SECTION POINT ROW REP ORDER
  local s=$1 p=$2 row=$3 rep=$4 order=$5
  local kind=${R_KIND[$row]} eng=${R_ENGINE[$row]} bs=4k qd=1 jobs=1
  case $s in
    case1|case2|dsync) jobs=$p ;;
    qd) qd=$p ;;
    sub) qd=$p; bs=1k ;;
  esac
  set_mode "${R_MODE[$row]}"
  local args=(--output-format=json --thread=1 --direct=1 --bs="$bs" --iodepth="$qd"
              --time_based=1 --runtime="$runtime" --ramp_time="$ramp"
              --norandommap=1 --randrepeat=0)
  case $kind in
    kernel) args+=(--ioengine="$eng" --filename="$file" --offset="$region_l" --size="$region_s") ;;
    raw) args+=(--ioengine="$eng" --filename="$dev" --offset="$region_p" --size="$region_s"
                --allow_mounted_write=1) ;;
    ext4dio) args+=(--ioengine="external:$engine" --filename="$file" --offset="$region_l"
                    --size="$region_s") ;;
  esac
  if [ "$s" = dsync ]; then
    if [ "$kind" = ext4dio ]; then args+=(--ext4dio_dsync=1); else args+=(--sync=dsync); fi
  fi
  if [ "$s" = case2 ]; then
    args+=(--name=randread --rw=randread --numjobs="$jobs" --name=randwrite --rw=randwrite --numjobs="$jobs")
  else
    args+=(--name=randwrite --rw=randwrite --numjobs="$jobs")
  fi
  local out=$json_dir/$s-$p-$row-rep$rep.json res ok=1 t0
  t0=$(date +%s.%N)
  timeout --kill-after=10 $(( runtime + ramp + 60 )) fio "${args[@]}" > "$out" 2>&1 || ok=0
  if [ "$ok" = 1 ] && res=$(bl_parse_out fio-rw "$out" 2>"$out.err"); then
    [ "${res##* }" = 0 ] || ok=0
  else
    ok=0; res="0 0 0 0 1"
  fi
  read -r ri wi uc sc _ <<< "$res"
  local wall; wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  done_runs=$(( done_runs + 1 ))
  if [ "$ok" = 1 ]; then
    [ "$keep_json" = 1 ] && cp "$out" "$outdir/json/" 2>/dev/null
    printf '%s: [%d/%d] %s %s %-16s rep %d: read %.0f write %.0f IOPS\n' "$prog" "$done_runs" \
      "$total_runs" "$s" "$p" "$row" "$rep" "$ri" "$wi" >&2
  else
    failures=$(( failures + 1 ))
    mkdir -p "$outdir/failed"
    if [ -s "$out.err" ]; then cat "$out.err" >> "$out"; fi
    cp "$out" "$outdir/failed/" || true
    echo "$prog: [$done_runs/$total_runs] $s $p $row rep $rep FAILED: fio ${args[*]}" >&2
    # fio's own messages, not the JSON around them.
    grep -vE '^[[:space:]]|^[{}]' "$out" | head -n 5 | sed 's/^/    /' >&2
  fi
  rm -f "$out" "$out.err"
  echo "$s,$p,$row,\"${R_LABEL[$row]}\",$rep,$order,$ri,$wi,$uc,$sc,$wall,$ok" >> "$runs_csv"
}

[ "$keep_json" = 1 ] && mkdir -p "$outdir/json"
# What was measured: the tree's commit and the exact binaries (bl_sums,
# bl_commit).
libso=$(readlink -f "$build/lib/libext4dio.so.0" 2>/dev/null || true)
bin_sums() { bl_sums "$engine" ${libso:+"$libso"}; }
sums_before=$(bin_sums)
commit=$(bl_commit)
start=$(date +%s)
for s in "${sections[@]}"; do
  read -r -a rows <<< "$(section_rows "$s")"
  n=${#rows[@]}
  for p in $(section_points "$s"); do
    for ((rep = 1; rep <= reps; rep++)); do
      for ((k = 0; k < n; k++)); do
        run_one "$s" "$p" "${rows[$(( (rep - 1 + k) % n ))]}" "$rep" "$k"
      done
    done
  done
done
set_mode nolock
elapsed=$(( $(date +%s) - start ))
sums_after=$(bin_sums)
binaries="tree $commit, $build: ext4dio.so + libext4dio.so sha256 ${sums_before% }"
if [ "$sums_before" != "$sums_after" ]; then
  binaries+=" — REBUILT DURING THE RUN (now ${sums_after% }): the numbers mix two versions"
  echo "$prog: warning: the engine or library was rebuilt during the run" >&2
fi

# --- tables, ratios, targets, plot --------------------------------------------
cat > "$outdir/meta.txt" <<EOF
command	$cmdline
date	$(date -u '+%Y-%m-%d %H:%M UTC')
machine	$(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)
storage	ext4 (4 KiB blocks, mkfs.ext4 ${mkfs_opts:-(defaults)}) on $backing
file	${file_mib} MiB, written with dd from /dev/urandom (oflag=direct), $nextents extents
region	$region_desc
build	$binaries
runs	$reps interleaved repetition(s) of ${runtime} s (+${ramp} s ramp) per point and row, medians; $(fio --version), total ${elapsed} s
EOF
report "$outdir" || die "the report failed"
update_docs_plot "$outdir"
echo "$prog: results in $outdir (tables.md, medians.csv, runs.csv$([ "$have_gnuplot" = 1 ] && echo ", seed_tables.png"))" >&2
if [ "$failures" -gt 0 ]; then
  echo "$prog: $failures run(s) failed; their fio output is in $outdir/failed" >&2
  exit 1
fi
exit 0
