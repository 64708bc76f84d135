#!/usr/bin/env bash
# Configures (once) and builds a meson build directory.
#   scripts/build.sh DIR [meson setup options...]
set -euo pipefail
dir=$1; shift
# --no-build: configure only (the caller builds selected targets).
build=1
args=()
for a in "$@"; do
  if [ "$a" = "--no-build" ]; then build=0; else args+=("$a"); fi
done
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "${args[@]}" >/dev/null
else
  # The fio engine is looked for at configure time: a fio source fetched (or
  # an engine source added) since then needs a reconfigure.
  for f in .cache/fio-*/config-host.h tools/fio/ext4dio_engine.cc; do
    if [ -e "$f" ] && [ "$f" -nt "$dir/build.ninja" ]; then
      meson setup --reconfigure "$dir" >/dev/null
      break
    fi
  done
fi
if [ "$build" = 1 ]; then ninja -C "$dir" >/dev/null; fi
