#!/usr/bin/env bash
# Regenerates debian/libext4dio0.symbols from the symbols a built library
# exports (lib/ext4dio.map decides which):
#   debian/gen-symbols.sh build/lib/libext4dio.so.0
# Symbols already listed keep their version; new ones get the library's
# version (from its file name, libext4dio.so.X.Y.Z); dropped ones vanish, which
# breaks the ABI (bump the soname instead). The package build runs
# dpkg-gensymbols -c4, so any difference between the file and the library
# fails it.
set -euo pipefail
lib=$1
out=$(dirname "$0")/libext4dio0.symbols
real=$(readlink -f "$lib")
version=${real##*/libext4dio.so.}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "cannot read X.Y.Z from $real" >&2; exit 2; }
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
  grep '^#' "$out" || true
  echo 'libext4dio.so.0 libext4dio0 #MINVER#'
  echo '* Build-Depends-Package: libext4dio-dev'
  # nm prints "ADDR T name@@NODE" for a symbol and "0 A NODE" for a node.
  nm -D --defined-only "$lib" | awk -v v="$version" -v old="$out" '
    BEGIN { while ((getline l < old) > 0) if (l ~ /^ /) { split(l, f, " "); have[f[1]] = f[2] } }
    { n = $3; sub(/@@?/, "@", n); if ($2 == "A") n = n "@" n
      print " " n " " ((n in have) ? have[n] : v) }' | LC_ALL=C sort
} > "$tmp"
cp "$tmp" "$out"
