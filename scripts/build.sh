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
fi
if [ "$build" = 1 ]; then ninja -C "$dir" >/dev/null; fi
