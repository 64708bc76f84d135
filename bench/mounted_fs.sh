# shellcheck shell=bash disable=SC2154,SC2034  # prog, work: the caller's; img, dio, backing: for it
# Sourced by the root benchmarks that compare ext4dio with the raw device
# writing the same blocks (seed_tables.sh, hotpath_bench.sh), after
# bench/scratch.sh (which owns the trap): the ext4 they run on and the
# region of the test file that fio's raw rows can be given as device bytes.
#
#   mf_loop_fs IMAGE_MIB "MKFS_OPTS"
#       $work/ext4.img of IMAGE_MIB MiB, mkfs.ext4 -b 4096 MKFS_OPTS (no lazy
#       init: ext4lazyinit would zero inode tables under the benchmark), a
#       loop device over it (rr_losetup: direct I/O when it can, recorded
#       before and after it exists, so the trap detaches exactly it). Sets
#       img, loop, dev (= loop), dio (0/1/?) and backing (a description).
#   mf_write_file FILE MIB
#       FILE fully written with random data (O_DIRECT, so every later
#       4 KiB write of it is an overwrite of a written extent), then sync.
#   mf_region MAPPER FILE
#       "L P S RUNS NEXTENTS BLOCKSIZE": the largest run of FILE's extents
#       that is contiguous both in the file and on the device (file bytes
#       L..L+S = device bytes P..P+S), from `MAPPER --json FILE`
#       (tools/ext4dio-map). Fails when FILE has unwritten extents.
#
# Needs `prog` (for messages) and `work` (a directory of the run's own).

mf_loop_fs() {
  local image_mib=$1 mkfs_opts=$2
  img=$work/ext4.img
  truncate -s "${image_mib}M" "$img" || return 1
  # shellcheck disable=SC2086  # mkfs_opts is a list of options
  mkfs.ext4 -q -F -b 4096 $mkfs_opts -E lazy_itable_init=0,lazy_journal_init=0 "$img" \
    || { echo "$prog: mkfs.ext4 failed" >&2; return 1; }
  loop=$(rr_losetup "$img" 2>"$work/losetup.err") \
    || { echo "$prog: losetup failed: $(cat "$work/losetup.err")" >&2; return 1; }
  dev=$loop
  [ -b "$dev" ] || { echo "$prog: losetup gave no block device ($dev)" >&2; return 1; }
  dio=$(cat "/sys/block/$(basename "$loop")/loop/dio" 2>/dev/null || echo "?")
  backing="$loop (loop, direct-io=$([ "$dio" = 1 ] && echo on || echo off)) over a ${image_mib} MiB file on /dev/shm (tmpfs)"
}

mf_write_file() {
  local file=$1 mib=$2
  dd if=/dev/urandom of="$file" bs=1M count="$mib" oflag=direct iflag=fullblock status=none \
    || { echo "$prog: writing $file failed" >&2; return 1; }
  sync
}

mf_region() {
  local mapper=$1 file=$2
  "$mapper" --json "$file" > "$work/map.json" \
    || { echo "$prog: ext4dio-map $file failed" >&2; return 1; }
  python3 - "$work/map.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
bs = m["block_size"]
if m.get("unwritten_blocks") or any(e["unwritten"] for e in m["extents"]):
    sys.exit("the test file has unwritten extents")
runs = []
for e in m["extents"]:
    if runs and runs[-1][0] + runs[-1][2] == e["logical_block"] \
            and runs[-1][1] + runs[-1][2] == e["physical_block"]:
        runs[-1][2] += e["blocks"]; runs[-1][3] += 1
    else:
        runs.append([e["logical_block"], e["physical_block"], e["blocks"], 1])
if not runs:
    sys.exit("the test file has no extents")
best = max(runs, key=lambda r: r[2])
print(best[0] * bs, best[1] * bs + m.get("device_offset", 0), best[2] * bs, best[3],
      len(m["extents"]), bs)
PY
}
