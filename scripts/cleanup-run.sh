#!/usr/bin/env bash
# cleanup-run.sh RUN_DIR: tears down exactly what one test run recorded and
# removes RUN_DIR. Nothing is found by name pattern: a shared machine runs
# other suites (and other people's loop devices) at the same time.
#
# Every file named `record` under RUN_DIR (nested run directories of child
# scripts included) holds one line per object, tab-separated, written by
# test/testutil.cc and scripts/run-record.sh as soon as the object exists:
#   image MAJ:MIN INO PATH   a loop device's backing file (before losetup)
#   loop  DEV MAJ:MIN INO    a loop device attached to that file
#   mount DEV PATH           a mount of that device (informational)
#   dir   MAJ:MIN INO PATH   a scratch directory this run made
# A loop device is detached only while it is still backed by a recorded file
# (the kernel's backing device and inode, not the name: a device number
# reused by another run is left alone), after unmounting every mount of its
# filesystem; a directory is removed only while it is still the recorded
# inode, never across a mount (--one-file-system, and skipped while
# anything is mounted inside it).
set -u
dir=${1:?usage: cleanup-run.sh RUN_DIR}
[ -d "$dir" ] || exit 0
status=0

mapfile -t records < <(find "$dir" -name record -type f -print0 2>/dev/null |
  xargs -0r cat 2>/dev/null)
declare -A backing=()   # "MAJ:MIN INO" of recorded backing files
dirs=()
for line in "${records[@]}"; do
  IFS=$'\t' read -r kind a b c d <<<"$line"
  case "$kind" in
    image) backing["$a $b"]=1 ;;
    loop) backing["$b $c"]=1 ;;
    dir) dirs+=("$a"$'\t'"$b"$'\t'"$c") ;;
  esac
done

# Mount points (mountinfo order) of the filesystem on device MAJ:MIN.
mounts_of() {
  awk -v dev="$1" '$3 == dev { print $5 }' /proc/self/mountinfo |
    sed 's/\\040/ /g; s/\\011/\t/g; s/\\012/\n/g; s/\\134/\\/g'
}

if [ "${#backing[@]}" -gt 0 ] && command -v losetup >/dev/null 2>&1; then
  while read -r name majmin ino; do
    [ -n "${backing["$majmin $ino"]:-}" ] || continue
    rdev=$(stat -L -c '%Hr:%Lr' "$name" 2>/dev/null) || continue
    mapfile -t points < <(mounts_of "$rdev")
    for ((i = ${#points[@]} - 1; i >= 0; i--)); do
      m=${points[i]}
      umount "$m" 2>/dev/null || { sync; sleep 0.2; umount "$m" 2>/dev/null; } ||
        umount -l "$m" 2>/dev/null || { echo "cleanup-run: cannot unmount $m" >&2; status=1; }
    done
    if losetup -d "$name" 2>/dev/null; then
      echo "cleanup-run: detached $name (left by this run)" >&2
    else
      echo "cleanup-run: cannot detach $name" >&2; status=1
    fi
  done < <(losetup -l -n -O NAME,BACK-MAJ:MIN,BACK-INO 2>/dev/null)
fi

# Directories: innermost (last made) first.
mounted_inside() {  # PATH: is anything mounted at or below it?
  awk '{ print $5 }' /proc/self/mountinfo | sed 's/\\040/ /g' |
    awk -v p="$1" 'index($0, p) == 1 && (length($0) == length(p) || substr($0, length(p) + 1, 1) == "/") { f = 1 } END { exit !f }'
}
for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
  IFS=$'\t' read -r majmin ino path <<<"${dirs[i]}"
  [ -d "$path" ] || continue
  [ "$(stat -c '%Hd:%Ld %i' "$path" 2>/dev/null)" = "$majmin $ino" ] || continue
  if mounted_inside "$path"; then
    echo "cleanup-run: leaving $path: something is mounted inside it" >&2; status=1; continue
  fi
  rm -rf --one-file-system "$path"
done

if mounted_inside "$dir"; then
  echo "cleanup-run: leaving $dir: something is mounted inside it" >&2; exit 1
fi
rm -rf --one-file-system "$dir"
exit "$status"
