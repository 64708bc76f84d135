#!/bin/bash
# run.sh MINUTES: a libFuzzer session on fuzz_map.
#
#   - sets up (once) a clang build dir build-fuzz with -Dfuzz=true and
#     ASan+UBSan, and builds fuzz_map;
#   - makes the seed corpus (make_seeds.sh) into .fuzz/corpus, which also
#     keeps what libFuzzer finds between sessions (.fuzz/ is gitignored);
#   - fuzzes for MINUTES minutes with 2 worker processes (fork mode, going on
#     after a crash so that one session can find several);
#   - copies every crash-*/leak-*/timeout-*/oom-* input into
#     test/fuzz/regressions/ (gzipped when 300 KB or more), where the
#     fuzz_regressions test replays them.
#
# Environment: JOBS (default 2), FUZZ_BUILD_DIR (default build-fuzz),
# CC/CXX (default clang-14/clang++-14).
set -euo pipefail

# All in a function, parsed before it runs: editing this file during a
# session (which lasts minutes) cannot change what the session does.
main() {
if [ $# -ne 1 ] || ! [[ $1 =~ ^[0-9]+$ ]] || [ "$1" -eq 0 ]; then
  echo "usage: $0 MINUTES" >&2
  exit 2
fi
minutes=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

build=${FUZZ_BUILD_DIR:-build-fuzz}
jobs=${JOBS:-2}
[ "$jobs" -gt 2 ] && jobs=2
export CC=${CC:-clang-14} CXX=${CXX:-clang++-14}

fuzz_options=(-Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false)
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "${fuzz_options[@]}" -Dbenchmarks=false
else
  # An existing directory: make sure it is a fuzzing one (a no-op if so).
  meson configure "$build" "${fuzz_options[@]}" >/dev/null
fi
ninja -C "$build" test/fuzz/fuzz_map
exe=$build/test/fuzz/fuzz_map

corpus=.fuzz/corpus
artifacts=.fuzz/artifacts
mkdir -p "$corpus" "$artifacts"
seeds=$(mktemp -d "${TMPDIR:-/tmp}/ext4dio-seeds-out-XXXXXX")
trap 'rm -rf "$seeds"' EXIT
bash "$here/make_seeds.sh" "$seeds" 2>/dev/null
# Seeds are named by content so that re-running adds no duplicates.
for f in "$seeds"/*; do
  cp "$f" "$corpus/seed-$(sha1sum < "$f" | cut -c1-40)"
done

# UBSan reports are failures, not warnings; leaks are checked too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

echo "fuzzing for $minutes minute(s) with $jobs worker(s); log: .fuzz/fuzz.log" >&2
set +e
"$exe" -fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
  -max_total_time=$((minutes * 60)) -max_len=1048576 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$corpus" 2>&1 | tee .fuzz/fuzz.log
status=${PIPESTATUS[0]}
set -e

mkdir -p "$here/regressions"
found=0
for f in "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* \
         "$artifacts"/oom-*; do
  [ -f "$f" ] || continue
  name=$(basename "$f")
  if [ "$(stat -c %s "$f")" -ge 300000 ]; then
    gzip -9 -c "$f" > "$here/regressions/$name.gz"
  else
    cp "$f" "$here/regressions/$name"
  fi
  found=$((found + 1))
done
echo "libFuzzer exit status $status; $found artifact(s) copied to test/fuzz/regressions/" >&2
grep -E '^#[0-9]+: cov:|stat::' .fuzz/fuzz.log | tail -3 >&2 || true
}

main "$@"
exit
