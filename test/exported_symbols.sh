#!/usr/bin/env bash
# The ABI is the C API, pinned: libext4dio.so exports exactly the symbols of
# lib/ext4dio.symbols ("symbol@NODE" a line), each under its version node of
# lib/ext4dio.map, nothing else; the map lists the same symbols in the same
# nodes; every function ext4dio.h declares is exported and every export is
# declared there; the library has a soname.
# Usage: exported_symbols.sh LIBRARY SOURCE_ROOT
set -euo pipefail
lib=$1
src=$2
list=$src/lib/ext4dio.symbols
map=$src/lib/ext4dio.map
fail() { echo "FAIL: $*"; exit 1; }

# 1. The exports, as "symbol@NODE", against the list: any difference fails.
exported=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^EXT4DIO_[0-9.]*$' |
  sed 's/@@/@/' | LC_ALL=C sort)
pinned=$(grep -v '^$' "$list" | LC_ALL=C sort)
if [ "$exported" != "$pinned" ]; then
  echo "exports differ from lib/ext4dio.symbols (< exported only, > listed only):"
  diff <(echo "$exported") <(echo "$pinned") | grep '^[<>]' || true
  fail "a symbol was added or removed: update lib/ext4dio.map and lib/ext4dio.symbols"
fi
# The list is sorted and free of duplicates, so a diff of it reads well.
[ "$(grep -v '^$' "$list")" = "$(grep -v '^$' "$list" | LC_ALL=C sort -u)" ] ||
  fail "lib/ext4dio.symbols is not sorted (LC_ALL=C sort -u)"
# Version nodes defined by the library are the list's.
nodes=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep '^EXT4DIO_[0-9.]*$' | LC_ALL=C sort)
[ "$nodes" = "$(sed 's/.*@//' "$list" | LC_ALL=C sort -u)" ] ||
  fail "version nodes $(echo $nodes) are not those of lib/ext4dio.symbols"

# 2. The map names every symbol explicitly, in the list's node (no wildcard
# but the local one).
from_map=$(awk '
  /^[A-Z0-9_.]+ *\{/ { node = $1; next }
  node != "" && /^ *ext4dio_[a-z0-9_]+;/ { s = $1; sub(/;$/, "", s); print s "@" node }
' "$map" | LC_ALL=C sort)
[ "$from_map" = "$pinned" ] || {
  diff <(echo "$from_map") <(echo "$pinned") | grep '^[<>]' || true
  fail "lib/ext4dio.map and lib/ext4dio.symbols disagree (< map only, > list only)"
}
# Comments stripped, the only '*' left is each node's "local: *;".
stars=$(perl -0pe 's{/\*.*?\*/}{}gs' "$map" | grep -c '\*' || true)
locals=$(perl -0pe 's{/\*.*?\*/}{}gs' "$map" | grep -cE '^ *\*; *$' || true)
[ "$stars" = "$locals" ] || fail "a wildcard in lib/ext4dio.map other than local: *;"

# 3. ext4dio.h's functions (declarations after the preprocessor: comments
# gone) are the exports.
inc_build=$(dirname "$(readlink -f "$lib")")/include
declared=$(cc -E -P -I "$src/lib/include" -I "$inc_build" "$src/lib/include/ext4dio/ext4dio.h" |
  grep -oE '\bext4dio_[a-z0-9_]+ *\(' | sed 's/ *($//' | LC_ALL=C sort -u)
[ -n "$declared" ] || fail "no function found in ext4dio.h"
names=$(echo "$pinned" | sed 's/@.*//' | LC_ALL=C sort -u)
if [ "$declared" != "$names" ]; then
  diff <(echo "$declared") <(echo "$names") | grep '^[<>]' || true
  fail "ext4dio.h's functions and the exports differ (< declared only, > exported only)"
fi

readelf -d "$lib" | grep -q 'SONAME.*libext4dio\.so\.[0-9]' || fail "no soname"
echo "ok: $(echo "$pinned" | wc -l) symbols exported exactly as lib/ext4dio.symbols lists them"
