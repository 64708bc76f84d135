#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds a release-like build
# and an ASan+UBSan build (clang, with the fuzzer regression corpus), runs
# every test, and ends with "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# This run's record (scripts/run-record.sh): every loop device, mount and
# scratch directory the tests make is noted in $EXT4DIO_TEST_RUN_DIR as it is
# made, and the trap tears down exactly those, also after a test crashed
# (abort, sanitizer report). Other runs on the machine are never touched.
. scripts/run-record.sh
rr_begin || { echo "cannot make a run directory"; echo "0 passed, 1 failed"; exit 1; }
trap rr_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash scripts/build.sh build --buildtype=debugoptimized || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

# The sanitizer trees build in the background, at the lowest CPU priority,
# while the release tree's tests run (many of them wait on I/O and leave a
# core idle): the suite's wall time, not its CPU time, is what CI limits.
#  - ASan+UBSan (clang, with the fuzzer regression corpus); no fio engine
#    (fio cannot load an instrumented module, so no test uses it there);
#  - ThreadSanitizer: only what the concurrency tests need.
san_log=$(mktemp -d)
sanitizer_builds() {
  if ! CC=clang-14 CXX=clang++-14 bash scripts/build.sh build-asan --buildtype=debug \
      -Db_sanitize=address,undefined -Db_lundef=false -Dfuzz=true -Dbenchmarks=false \
      -Dfio_source=disabled > "$san_log/asan" 2>&1; then
    echo asan > "$san_log/failed"
  fi
  CC=clang-14 CXX=clang++-14 bash scripts/build.sh build-tsan --buildtype=debugoptimized \
    -Db_sanitize=thread -Db_lundef=false -Dbenchmarks=false --no-build >/dev/null 2>&1 || true
  ninja -C build-tsan test/concurrency_test test/async_queue_test test/write_ranges_test \
    test/mounted_io_test test/mounted_contract_test test/session_state_test test/io_gate_test \
    test/pending_remap_test tools/ext4dio-write tools/ext4dio-read tools/ext4dio-map \
    > "$san_log/tsan" 2>&1 || echo tsan >> "$san_log/failed"
}
# Its own process group (setsid), so an interrupted run stops all of it.
setsid nice -n 19 bash -c "$(declare -f sanitizer_builds); san_log=$san_log; sanitizer_builds" &
san_pid=$!
trap 'kill -- -"$san_pid" 2>/dev/null; rm -rf "$san_log"; rr_cleanup' EXIT

passed=0; failed=0; skipped=0
run() {  # run DIR [meson test args...]
  local dir=$1; shift
  local log; log=$(mktemp)
  meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" 2>&1 | tee "$log"
  local ok fail skip xfail xpass timeout
  ok=$(awk '/^Ok:/ {print $2}' "$log"); fail=$(awk '/^Fail:/ {print $2}' "$log")
  skip=$(awk '/^Skipped:/ {print $2}' "$log"); xfail=$(awk '/^Expected Fail:/ {print $3}' "$log")
  xpass=$(awk '/^Unexpected Pass:/ {print $3}' "$log"); timeout=$(awk '/^Timeout:/ {print $2}' "$log")
  if [ -z "$ok" ]; then fail=$((${fail:-0} + 1)); fi  # meson itself failed
  passed=$((passed + ${ok:-0} + ${xfail:-0}))
  failed=$((failed + ${fail:-0} + ${xpass:-0} + ${timeout:-0}))
  skipped=$((skipped + ${skip:-0}))
  rm -f "$log"
}
run build
wait "$san_pid"
if grep -qx asan "$san_log/failed" 2>/dev/null; then
  tail -30 "$san_log/asan"; echo "sanitizer build failed"
  echo "$passed passed, $((failed + 1)) failed, $skipped skipped"; exit 1
fi
tsan_ok=1
if grep -qx tsan "$san_log/failed" 2>/dev/null; then tail -30 "$san_log/tsan"; tsan_ok=0; fi
# Under the sanitizers: everything that runs our parser on hostile input,
# and mounted mode (lease monitor, gate, re-map).
# The model-based tests run on a shorter budget there (seeds are 3-5x
# slower under ASan; the release run above gives them the full one).
EXT4DIO_MODEL_SECONDS=8 run build-asan --suite unit --suite hostile --suite image --suite mounted
if [ "$tsan_ok" = 1 ]; then
  TSAN_OPTIONS=halt_on_error=1 run build-tsan --no-rebuild concurrency_test async_queue_test write_ranges_test \
    mounted_io_test session_state_test io_gate_test pending_remap_test
  # The mounted torture run: threads, the kernel path and the lease monitor.
  TSAN_OPTIONS=halt_on_error=1 run build-tsan --no-rebuild mounted_contract_test \
    --test-args=--gtest_filter='*Torture*:*Async*:*Share*'

else
  echo "TSan build failed"; failed=$((failed + 1))
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
