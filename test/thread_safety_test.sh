#!/usr/bin/env bash
# The locking the headers declare is checked by clang: the project's clang
# builds pass -Wthread-safety -Werror=thread-safety (meson.build), and this
# test shows that the annotations bite. With clang++ and the library's own
# headers it compiles
#   - code that honours them (must compile), and
#   - the same code with one violation each: an IoGate-guarded member
#     written outside an IoGate::Exclusive, a *Locked-style function called
#     without the gate, a PendingRemap-style member read without its mutex
#     (each must fail with a -Wthread-safety diagnostic).
# Usage: thread_safety_test.sh SOURCE_ROOT
set -euo pipefail
src=$1
cxx=$(command -v clang++-14 || command -v clang++ || true)
if [ -z "$cxx" ]; then
  echo "SKIP: no clang++ (scripts/setup.sh installs clang-14)"; exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags=(-std=c++20 -fsyntax-only -Wthread-safety -Werror=thread-safety -D_GNU_SOURCE
       -I"$src/lib" $(pkg-config --cflags absl_time))

cat > "$tmp/case.cc" <<'CC'
#include "io_gate.h"
#include "absl/base/thread_annotations.h"
#include "mutex.h"

namespace {
struct Guarded {
  ext4dio::IoGate gate_;
  int map_ ABSL_GUARDED_BY(gate_) = 0;
  ext4dio::Mutex mu_ ABSL_ACQUIRED_AFTER(gate_);
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  void ChangeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(gate_) { ++map_; }
  void Good() {
    ext4dio::IoGate::Exclusive exclusive(gate_);
    ChangeLocked();
    map_ = 1;
    ext4dio::MutexLock lock(&mu_);
    ++pending_;
  }
  void Bad() {
#if defined(CASE_WRITE)
    map_ = 2;
#elif defined(CASE_CALL)
    ChangeLocked();
#elif defined(CASE_READ)
    int x = pending_;
    (void)x;
#endif
  }
};
}  // namespace
void Use() { Guarded g; g.Good(); g.Bad(); }
CC

"$cxx" "${flags[@]}" "$tmp/case.cc" || { echo "FAIL: the annotated code does not compile"; exit 1; }
fail=0
for c in CASE_WRITE CASE_CALL CASE_READ; do
  if "$cxx" "${flags[@]}" -D"$c" "$tmp/case.cc" 2>"$tmp/$c.err"; then
    echo "FAIL: $c compiled: -Wthread-safety does not catch it"; fail=1
  elif ! grep -q 'thread-safety' "$tmp/$c.err"; then
    echo "FAIL: $c failed for another reason:"; cat "$tmp/$c.err"; fail=1
  else
    echo "ok: $c rejected: $(grep -m1 'error:' "$tmp/$c.err" | sed 's/.*error: //')"
  fi
done
[ "$fail" -eq 0 ] && echo "ok: annotations enforced (lib/ itself is compiled with them by every clang build)"
exit "$fail"
