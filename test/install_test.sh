#!/usr/bin/env bash
# meson install into a DESTDIR; check that it holds the library, headers,
# pkg-config files, CLIs, man pages and, when built, the fio engine and its
# job files; then build a C and a C++ consumer against the installed headers
# through the installed pkg-config files, and run them.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
dest=$(mktemp -d /tmp/ext4dio-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
fail() { echo "install_test: $*" >&2; exit 1; }

# `meson test` rebuilds only what a test depends on: build everything that is
# installed (man pages, the fio engine...); a no-op after a full build.
mapfile -t targets < <(meson introspect "$build" --targets | python3 -c '
import json, os, sys
for t in json.load(sys.stdin):
    if t["installed"]:
        for f in t["filename"]:
            print(os.path.relpath(f, sys.argv[1]))' "$build")
ninja -C "$build" "${targets[@]}" >/dev/null
meson install -C "$build" --destdir "$dest" --no-rebuild >/dev/null

# Install directories and version as this build configured them.
version='' sanitize='' bindir='' libdir='' includedir='' mandir='' datadir=''
eval "$(meson introspect "$build" --buildoptions --projectinfo | python3 -c '
import json, os, shlex, sys
d = json.load(sys.stdin)
opts = {o["name"]: o["value"] for o in d["buildoptions"]}
print("version=" + shlex.quote(d["projectinfo"]["version"]))
print("sanitize=" + shlex.quote(opts["b_sanitize"]))
for k in ("bindir", "libdir", "includedir", "mandir", "datadir"):
    print(k + "=" + shlex.quote(os.path.join(opts["prefix"], opts[k])))')"

# Everything meson says it installs is there.
while IFS= read -r f; do
  [ -e "$dest$f" ] || [ -L "$dest$f" ] || fail "not installed: $f"
done < <(meson introspect "$build" --installed | python3 -c '
import json, sys
for v in json.load(sys.stdin).values(): print(v)')

lib=$dest$libdir
for f in libext4dio.so libext4dio.so.0 "libext4dio.so.$version"; do
  [ -e "$lib/$f" ] || fail "missing $libdir/$f"
done
[ -L "$lib/libext4dio.so" ] && [ -L "$lib/libext4dio.so.0" ] || fail "libext4dio.so{,.0} are not symlinks"
for f in ext4dio.h ext4dio.hpp status.hpp version.h; do
  [ -f "$dest$includedir/ext4dio/$f" ] || fail "missing header $includedir/ext4dio/$f"
done
for f in ext4dio.pc ext4dio-cpp.pc; do
  [ -f "$lib/pkgconfig/$f" ] || fail "missing $libdir/pkgconfig/$f"
done
for t in ext4dio-map ext4dio-write ext4dio-read; do
  [ -x "$dest$bindir/$t" ] || fail "missing $bindir/$t"
  out=$(LD_LIBRARY_PATH=$lib "$dest$bindir/$t" --version) || fail "$t --version failed"
  [ "$out" = "$t $version" ] || fail "$t --version printed '$out', not '$t $version'"
  man=$dest$mandir/man1/$t.1
  [ -s "$man" ] || fail "missing man page $mandir/man1/$t.1"
  # help2man starts with a comment line; the first request must be .TH.
  first=$(grep -v -m1 '^\.\\"' "$man")
  case $first in
    ".TH ${t^^} \"1\""*) ;;
    *) fail "$t.1 does not start with .TH (first line: $first)" ;;
  esac
  grep -q '^\.SH NAME' "$man" || fail "$t.1 has no NAME section"
done

# No debug info in what a default `meson install` installs (issue 12: the
# library alone carried 7.9 MB of DWARF): the project defaults to strip=true,
# and with it every installed ELF file has no .debug_* section. A build
# configured with -Dstrip=false (distro packaging, which splits the debug
# info off itself) only gets the first check.
default_strip=$(meson introspect --buildoptions "$src/meson.build" | python3 -c '
import json, sys
print([o["value"] for o in json.load(sys.stdin) if o["name"] == "strip"][0])')
[ "$default_strip" = True ] || fail "meson.build does not default to strip=true: a plain meson install ships debug info"
strip=$(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
print([o["value"] for o in json.load(sys.stdin) if o["name"] == "strip"][0])')
if [ "$strip" = True ]; then
  n=0
  while IFS= read -r -d '' f; do
    [ -L "$f" ] && continue
    [ "$(head -c4 "$f" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || continue
    # Not `readelf | grep -q`: with pipefail readelf's SIGPIPE would pass it.
    sections=$(readelf -S -W "$f")
    if grep -q ' \.debug_' <<<"$sections"; then
      fail "installed ${f#"$dest"} carries debug info ($(stat -c %s "$f") bytes)"
    fi
    n=$((n + 1))
  done < <(find "$dest" -type f -print0)
  [ "$n" -ge 4 ] || fail "found only $n installed ELF files"
  # Stripped it is ~0.5 MB (with its DWARF 7.9 MB); sanitizers make it larger.
  size=$(stat -c %s "$lib/libext4dio.so.$version")
  if [ "$sanitize" = none ] && [ "$size" -gt $((2 << 20)) ]; then
    fail "installed libext4dio.so.$version is $size bytes (over 2 MiB)"
  fi
  echo "ok: $n installed ELF files without debug info; libext4dio.so.$version is $size bytes"
else
  echo "ok: strip=false in this build: installed debug info not checked"
fi

# The fio engine and its job files, when this build has the engine.
engine_built=$(meson introspect "$build" --targets | python3 -c '
import json, sys
print(int(any(t["type"] == "shared module" and t["name"] == "ext4dio"
              for t in json.load(sys.stdin))))')
engine=$lib/ext4dio/ext4dio.so
jobs=$dest$datadir/ext4dio/fio
if [ "$engine_built" = 1 ]; then
  [ -f "$engine" ] || fail "fio engine built but not installed as $libdir/ext4dio/ext4dio.so"
  for j in seed-case1.fio seed-case2.fio verify.fio image.fio; do
    if [ -f "$src/tools/fio/$j" ]; then
      [ -f "$jobs/$j" ] || fail "job file $j not installed in $datadir/ext4dio/fio"
    fi
  done
  # The engine finds the installed library by itself (fio dlopen()s it by
  # path; no ldconfig, no LD_LIBRARY_PATH): RUNPATH $ORIGIN/.., the libdir
  # it is installed under, and nothing else (no build directory).
  runpath=$(readelf -d "$engine" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]$/\2/p')
  [ "$runpath" = '$ORIGIN/..' ] ||
    fail "$libdir/ext4dio/ext4dio.so has RUNPATH '$runpath', not '\$ORIGIN/..' (its libdir)"
  resolved=$(env -u LD_LIBRARY_PATH ldd "$engine" | sed -n 's/^\s*libext4dio\.so\.0 => \(\S*\).*/\1/p')
  [ -n "$resolved" ] && [ "$(realpath "$resolved")" = "$(realpath "$lib/libext4dio.so.0")" ] ||
    fail "ext4dio.so resolves libext4dio.so.0 to '$resolved', not the installed $libdir/libext4dio.so.0"
  # fio loads it (an instrumented module cannot load into an uninstrumented fio).
  if [ "$sanitize" = none ] && command -v fio >/dev/null; then
    env -u LD_LIBRARY_PATH fio --enghelp="$engine" >"$dest/enghelp.txt" 2>&1 &&
      grep -q ext4dio_image "$dest/enghelp.txt" ||
      fail "fio --enghelp=$libdir/ext4dio/ext4dio.so (no LD_LIBRARY_PATH) failed: $(cat "$dest/enghelp.txt")"
  fi
  echo "ok: fio engine and $(find "$jobs" -name '*.fio' 2>/dev/null | wc -l) job file(s) installed"
else
  [ ! -e "$engine" ] && [ ! -e "$jobs" ] || fail "fio engine not built, but engine files installed"
  echo "ok: fio engine not built (nothing of it installed)"
fi

pcdir=$lib/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_PATH=$pcdir
[ "$(pkg-config --modversion ext4dio)" = "$version" ] || fail "ext4dio.pc version is not $version"
case " $(pkg-config --cflags ext4dio) " in
  *" -I$dest"*) ;;
  *) fail "pkg-config --cflags ext4dio does not point into DESTDIR: $(pkg-config --cflags ext4dio)" ;;
esac

"$(dirname "$0")/consumer/build_consumers.sh" "$lib" "$version" "$dest" || fail "consumers of the install"
echo "ok: installed library usable from C and C++ via pkg-config"
