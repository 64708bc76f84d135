#!/usr/bin/env bash
# The main job on a self-made demo image (no root needed): installs what is
# missing, builds, makes an ext4 image holding a fragmented sparse file with
# mkfs.ext4 -d, and prints that file's extent map with ext4dio-map. Then
# writes a recognisable payload into the file with ext4dio-write (direct I/O
# at the device offsets of its extents), reads it back with ext4dio-read,
# lets debugfs confirm it, and shows a write into a hole being refused.
# As root (loop devices): the same on a mounted ext4, where the write into a
# hole goes through the kernel while overwrites go to the device, and a
# short fio run with verify=crc32c through the ext4dio engine (when it was
# built: scripts/setup.sh fetches the fio source it needs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build --buildtype=debugoptimized

# Everything made here is recorded as it is made and torn down by the trap
# (scripts/run-record.sh): only what this demo created is ever touched.
. scripts/run-record.sh
rr_begin
trap rr_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
work=$(rr_mkdtemp /dev/shm/ext4dio-demo-XXXXXX 2>/dev/null || rr_mkdtemp /tmp/ext4dio-demo-XXXXXX)
loop=""
mkdir -p "$work/src"
# 64 islands of 64 KiB, 256 KiB apart: a sparse, fragmented file.
for i in $(seq 0 63); do
  dd if=/dev/urandom of="$work/src/data.bin" bs=64K count=1 seek=$((i * 4)) conv=notrunc status=none
done
# ... and 4 MiB of written data after them, at 16 MiB.
dd if=/dev/urandom of="$work/src/data.bin" bs=1M count=4 seek=16 conv=notrunc status=none
truncate -s 64M "$work/demo.img"
mkfs.ext4 -q -F -b 4096 -d "$work/src" "$work/demo.img"
echo "== ext4dio-map --image demo.img /data.bin"
build/tools/ext4dio-map --image "$work/demo.img" /data.bin
echo "== the same as JSON (first 300 bytes)"
# (Captured first: with pipefail, a writer killed by SIGPIPE when head exits
# early would fail the script.)
map_json=$(build/tools/ext4dio-map --image "$work/demo.img" --json /data.bin)
echo "${map_json:0:300} ..."
echo "== debugfs agrees (first leaf extents)"
ex=$(debugfs -R "ex /data.bin" "$work/demo.img" 2>/dev/null)
head -5 <<<"$ex"

# A payload anyone can recognise: a numbered line of text, repeated, just
# under 4 MiB, to go at an unaligned offset inside the written 4 MiB.
offset=$((16 * 1024 * 1024 + 1234))
length=$((4 * 1024 * 1024 - 10000))
seq -f "ext4dio demo payload line %08g: written straight to the device" 1 70000 \
  > "$work/lines"
head -c "$length" "$work/lines" > "$work/payload"
echo
echo "== ext4dio-write --json --offset $offset ($length bytes of text) into /data.bin"
build/tools/ext4dio-write --image "$work/demo.img" --input "$work/payload" \
  --offset "$offset" --verify --sync --json /data.bin
echo "== ext4dio-read the range back, cmp with the payload"
build/tools/ext4dio-read --image "$work/demo.img" --offset "$offset" --length "$length" \
  --output "$work/readback" /data.bin
cmp "$work/payload" "$work/readback"
echo "identical: $length bytes"
echo "== debugfs agrees (dump /data.bin, compare the range, show a few lines)"
debugfs -R "dump /data.bin $work/dump" "$work/demo.img" 2>/dev/null
cmp -n "$length" -i "0:$offset" "$work/payload" "$work/dump"
echo "identical in debugfs's dump"
dd if="$work/dump" bs=1 skip="$offset" count=300 status=none; echo " ..."
e2fsck -fn "$work/demo.img" >/dev/null
echo "e2fsck -fn: clean"

echo
echo "== the plan of a write that runs off island 0 into the hole after it (--dry-run)"
set +e
build/tools/ext4dio-write --image "$work/demo.img" --dry-run --offset 60K --length 8K /data.bin
echo "(exit $?: a plan with a refused piece fails; nothing was written)"
echo "== a write into that hole: refused before any byte is written"
head -c 8192 "$work/payload" > "$work/small"
build/tools/ext4dio-write --image "$work/demo.img" --input "$work/small" --offset 100K /data.bin
rc=$?
set -e
if [ "$rc" -ne 1 ]; then
  echo "demo: expected exit 1 from the refused write, got $rc" >&2
  exit 1
fi
echo "(exit $rc, as expected)"

if [ "$(id -u)" != 0 ] || ! losetup -f >/dev/null 2>&1; then
  echo
  echo "(mounted mode and the fio engine need root and loop devices: skipped)"
  exit 0
fi
echo
echo "== mounted mode: the same image on a loop device, mounted"
loop=$(rr_losetup "$work/demo.img")
mkdir -p "$work/mnt"
rr_mount "$loop" "$work/mnt"
# 1 MiB from 15.5 MiB: half in the hole before the written 4 MiB (kernel
# path, allocates), half over written data (fast path, straight to $loop).
head -c 1048576 "$work/lines" > "$work/mib"
echo "== ext4dio-write --dry-run --offset 15.5M (1 MiB) $work/mnt/data.bin"
build/tools/ext4dio-write --dry-run --offset $((31 * 512 * 1024)) --input "$work/mib" \
  "$work/mnt/data.bin"
echo "== ext4dio-write --json: fast_path_bytes went to the device, kernel_path_bytes through ext4"
build/tools/ext4dio-write --json --verify --sync --offset $((31 * 512 * 1024)) \
  --input "$work/mib" "$work/mnt/data.bin"
cmp -n 1048576 -i "0:$((31 * 512 * 1024))" "$work/mib" "$work/mnt/data.bin"
echo "a buffered read through the kernel agrees"
if [ -f build/tools/fio/ext4dio.so ] && command -v fio >/dev/null; then
  echo
  echo "== fio through the ext4dio engine: 4 KiB random overwrites, iodepth 32, verify=crc32c"
  fio --ioengine=external:"$PWD/build/tools/fio/ext4dio.so" --thread=1 --direct=1 \
    --name=demo --filename="$work/mnt/data.bin" --offset=16M --size=4M --rw=randwrite \
    --bs=4k --iodepth=32 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    | grep -E "IOPS|err=|READ:|WRITE:"
else
  echo "(the fio engine was not built: no fio source; see scripts/fio-source.sh)"
fi
umount "$work/mnt"
e2fsck -fn "$loop" >/dev/null && echo "e2fsck -fn after unmount: clean"
