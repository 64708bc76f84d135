#!/usr/bin/env bash
# Builds the Debian packages (debian/) with `dpkg-buildpackage -b -us -uc`
# from a copy of the source tree in a temporary directory, runs lintian on
# the .changes (fails on errors), inspects the .debs with dpkg-deb (files,
# Depends), extracts libext4dio0 + libext4dio-dev (+ tools, fio engine) into
# a temporary root and builds a C and a C++ consumer through the extracted
# pkg-config files, and runs them, the CLIs and `fio --enghelp`.
# Exits 77 only when dpkg-buildpackage or debhelper is missing.
#   test/debian_package_test.sh
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
for t in dpkg-buildpackage dh dpkg-deb; do
  command -v "$t" >/dev/null ||
    { echo "skip: $t is not installed (scripts/setup.sh installs dpkg-dev and debhelper)"; exit 77; }
done
fail() { echo "debian_package_test: $*" >&2; exit 1; }
command -v lintian >/dev/null || fail "lintian is not installed (scripts/setup.sh installs it)"
start=$SECONDS
tmp=$(mktemp -d /tmp/ext4dio-deb-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# The source as a fresh clone (plus uncommitted changes) would have it: no
# build directories, no .cache except the configured fio source the engine
# is compiled against (a symlink; debian/rules fetches it when it is absent).
mkdir -p "$tmp/src/.cache"
if git -C "$src" rev-parse --show-toplevel >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$src" && while IFS= read -r -d '' f; do
      case $f in .cache | .cache/*) continue ;; esac
      if [ -e "$f" ] || [ -L "$f" ]; then cp -a --parents "$f" "$tmp/src/"; fi
    done)
else
  tar -C "$src" --exclude='./build*' --exclude=./.cache --exclude=./.git -cf - . | tar -C "$tmp/src" -xf -
fi
[ -x "$tmp/src/debian/rules" ] || fail "no executable debian/rules in the copy of $src"
fio_version=$(dpkg-query -W -f='${Version}' fio 2>/dev/null) || fail "fio is not installed"
fio_upstream=${fio_version#*:}
fio_upstream=${fio_upstream%-*}
if [ -f "$src/.cache/fio-$fio_upstream/config-host.h" ]; then
  ln -s "$(readlink -f "$src/.cache/fio-$fio_upstream")" "$tmp/src/.cache/fio-$fio_upstream"
fi

# nocheck (option and profile: the test dependencies are left out too),
# noopt: -O0 compiles in half the time and changes nothing packaged.
log=$tmp/build.log
if ! (cd "$tmp/src" && DEB_BUILD_OPTIONS="nocheck noopt parallel=2" DEB_BUILD_PROFILES=nocheck \
      dpkg-buildpackage -b -us -uc) >"$log" 2>&1; then
  tail -40 "$log" >&2
  fail "dpkg-buildpackage -b -us -uc failed (log above)"
fi
build_s=$((SECONDS - start))
# dh_makeshlibs runs dpkg-gensymbols -c4 (a difference already failed the
# build); nothing else of dpkg's tools may complain either.
if grep -E '^(dpkg-gensymbols|dpkg-shlibdeps|dh_[a-z_]+): warning' "$log" >&2; then
  fail "warnings from the package tools (above)"
fi
echo "ok: packages built in ${build_s}s"

changes=("$tmp"/ext4dio_*.changes)
[ -f "${changes[0]}" ] || fail "no .changes file"
if ! lintian --fail-on error \
     "${changes[0]}" >"$tmp/lintian.log" 2>&1; then
  cat "$tmp/lintian.log" >&2
  fail "lintian reports errors (above)"
fi
sed 's/^/lintian: /' "$tmp/lintian.log"
echo "ok: lintian without errors"

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
version=$(cd "$tmp/src" && dpkg-parsechangelog -S Version)
upstream=${version%-*}
libdir=usr/lib/$triplet
deb() {  # deb PACKAGE: its .deb, which must exist
  local f=$tmp/${1}_${version}_$arch.deb
  [ -f "$f" ] || fail "package $1 was not built ($f)"
  echo "$f"
}
has() {  # has PACKAGE PATH...: dpkg-deb -c lists every PATH
  local p=$1 list; shift
  list=$(dpkg-deb -c "$(deb "$p")" | awk '{print $6}')
  for f in "$@"; do
    grep -qxF "./$f" <<<"$list" || fail "$p does not contain /$f"
  done
}
lacks() {  # lacks PACKAGE REGEX: no path of PACKAGE matches
  if dpkg-deb -c "$(deb "$1")" | awk '{print $6}' | grep -E "$2" >&2; then
    fail "$1 contains paths matching $2 (above)"
  fi
}
depends() {  # depends PACKAGE REGEX: the Depends field matches
  local d
  d=$(dpkg-deb -f "$(deb "$1")" Depends)
  grep -qE "$2" <<<"$d" || fail "$1 Depends '$d' does not match $2"
}
has libext4dio0 "$libdir/libext4dio.so.$upstream" "$libdir/libext4dio.so.0"
lacks libext4dio0 '^\./usr/(include|bin)|\.so$|pkgconfig'
[ "$(dpkg-deb -f "$(deb libext4dio0)" Multi-Arch)" = same ] || fail "libext4dio0 is not Multi-Arch: same"
dpkg-deb -e "$(deb libext4dio0)" "$tmp/control"
[ -f "$tmp/control/symbols" ] || fail "libext4dio0 has no symbols control file"
# Every symbol of the pinned ABI (lib/ext4dio.symbols), with its version node.
while read -r sym; do
  grep -q "^ ${sym//./\\.} " "$tmp/control/symbols" || fail "symbols file lacks $sym (lib/ext4dio.symbols)"
done < "$src/lib/ext4dio.symbols"
[ "$(grep -c '^ ext4dio_' "$tmp/control/symbols")" -eq "$(wc -l < "$src/lib/ext4dio.symbols")" ] ||
  fail "the symbols file and lib/ext4dio.symbols list different symbols"
has libext4dio-dev usr/include/ext4dio/ext4dio.h usr/include/ext4dio/ext4dio.hpp \
  usr/include/ext4dio/version.h usr/include/ext4dio/status.hpp "$libdir/libext4dio.so" \
  "$libdir/pkgconfig/ext4dio.pc" "$libdir/pkgconfig/ext4dio-cpp.pc"
depends libext4dio-dev "(^|, )libext4dio0 \(= ${version//./\\.}\)"
depends libext4dio-dev '(^|, )libabsl-dev(,|$)'
tools=(ext4dio-map ext4dio-read ext4dio-write)
for t in "${tools[@]}"; do has ext4dio-tools "usr/bin/$t" "usr/share/man/man1/$t.1.gz"; done
depends ext4dio-tools '(^|, )libext4dio0 \(>= '
has ext4dio-fio "$libdir/ext4dio/ext4dio.so" usr/share/ext4dio/fio/verify.fio
# fio refuses an engine of another release: exactly the fio built against.
depends ext4dio-fio "(^|, )fio \(= ${fio_version//./\\.}\)(,|$)"
depends ext4dio-fio '(^|, )libext4dio0 \(>= '
# The debug info went to -dbgsym packages (meson's strip=true is off there).
for p in libext4dio0 ext4dio-tools ext4dio-fio; do
  list=$(dpkg-deb -c "$(deb "$p-dbgsym")")
  grep -q '/usr/lib/debug/\.build-id/.*\.debug$' <<<"$list" || fail "$p-dbgsym holds no debug info"
done
echo "ok: dpkg-deb: files, Depends (fio (= $fio_version)), symbols, -dbgsym"

root=$tmp/root
for p in libext4dio0 libext4dio-dev ext4dio-tools ext4dio-fio; do dpkg-deb -x "$(deb "$p")" "$root"; done
lib=$root/$libdir
sections=$(readelf -S -W "$lib/libext4dio.so.$upstream")
if grep -q ' \.debug_' <<<"$sections"; then
  fail "the packaged library carries debug info"
fi
for t in "${tools[@]}"; do
  out=$(LD_LIBRARY_PATH=$lib "$root/usr/bin/$t" --version) || fail "$t --version failed"
  [ "$out" = "$t $upstream" ] || fail "$t --version printed '$out'"
done
LD_LIBRARY_PATH=$lib fio --enghelp="$lib/ext4dio/ext4dio.so" >/dev/null ||
  fail "fio --enghelp=/$libdir/ext4dio/ext4dio.so failed"

# Consumers through the extracted pkg-config files (their prefix is /usr:
# the sysroot moves -I/-L into the extracted root).
export PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_PATH=$lib/pkgconfig
[ "$(pkg-config --modversion ext4dio)" = "$upstream" ] || fail "ext4dio.pc version is not $upstream"
case " $(pkg-config --cflags ext4dio) " in
  *" -I$root/usr/include"*) ;;
  *) fail "pkg-config --cflags ext4dio does not point into the extracted root: $(pkg-config --cflags ext4dio)" ;;
esac
"$src/test/consumer/build_consumers.sh" "$lib" "$upstream" "$tmp" || fail "consumers of the packages"
echo "ok: C and C++ consumers built against the packaged pkg-config files; $((SECONDS - start))s in all"
