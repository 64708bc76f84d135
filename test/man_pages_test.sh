#!/usr/bin/env bash
# The hand-written man pages (docs/man/*.in, configured into BUILD/docs/man)
# cannot drift from what they describe, and render cleanly:
#  - each CLI: every long option in `CLI --help` is an item of its page's
#    OPTIONS, and every item there is in --help;
#  - ext4dio-fio(7): its OPTIONS are exactly the engine's option table;
#  - ext4dio(3): it names exactly the functions ext4dio.h declares, and its
#    EXAMPLES program compiles against the build and does what it says;
#  - every page: the sections its kind needs, a .TH line with this version,
#    SEE ALSO pages that exist, no warnings from `groff -man -ww -z` or
#    `man --warnings=w -l`.
#   man_pages_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
pages=$build/docs/man
export LC_ALL=C.UTF-8 MANWIDTH=80

if ! command -v groff >/dev/null || ! command -v man >/dev/null; then
  echo "SKIP: groff or man is not installed (scripts/setup.sh installs groff-base and man-db)"
  exit 77
fi

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# The section names of a page, one per line (quotes dropped).
sections() {
  awk '/^\.SH/ { s = $0; sub(/^\.SH[ \t]+/, "", s); gsub(/"/, "", s); print s }' "$1"
}
# The body of section $2 of page $1.
section() {
  awk -v want="$2" '
    /^\.SH/ { s = $0; sub(/^\.SH[ \t]+/, "", s); gsub(/"/, "", s); on = (s == want); next }
    on { print }' "$1"
}
# The tag lines (the line after each .TP) of section $2 of page $1, with
# roff's \- as -.
tags() {
  section "$1" "$2" | awk 'prev ~ /^\.TP/ { print } { prev = $0 }' | sed 's/\\-/-/g'
}
# Lines of $1 that are not in $2 (both: one item per line, sorted, unique).
missing() { comm -23 <(printf '%s\n' "$1" | sed '/^$/d') <(printf '%s\n' "$2" | sed '/^$/d'); }

version=$(meson introspect "$build" --projectinfo |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')

# ---- every page ----------------------------------------------------------
declare -A required=(
  [1]="NAME|SYNOPSIS|DESCRIPTION|OPTIONS|IMAGE MODE|MOUNTED MODE|EXIT STATUS|EXAMPLES|SEE ALSO"
  [3]="NAME|LIBRARY|SYNOPSIS|DESCRIPTION|RETURN VALUE|ERRORS|THREAD SAFETY|EXAMPLES|SEE ALSO"
  [7]="NAME|SYNOPSIS|DESCRIPTION|OPTIONS|MOUNTED JOBS|IMAGE JOBS|STATISTICS|FILES|EXAMPLES|SEE ALSO"
)
all_pages=(ext4dio-map.1 ext4dio-write.1 ext4dio-read.1 ext4dio.3 ext4dio-fio.7)
for p in "${all_pages[@]}"; do
  page=$pages/$p
  [ -s "$page" ] || { fail "$p: not generated in $pages"; continue; }
  name=${p%.*} sec=${p##*.}
  th=$(grep -v -m1 '^\.\\"' "$page")
  case $th in
    ".TH ${name^^} \"$sec\" \""*"\" \"ext4dio $version\""*) ;;
    *) fail "$p: first request is not '.TH ${name^^} \"$sec\" \"DATE\" \"ext4dio $version\"': $th" ;;
  esac
  if grep -n '@[A-Z_]*@' "$page" >&2; then fail "$p: unsubstituted @VARIABLE@ (above)"; fi
  have=$(sections "$page")
  IFS='|' read -r -a want <<<"${required[$sec]}"
  for s in "${want[@]}"; do
    grep -qxF "$s" <<<"$have" || fail "$p: no $s section"
  done
  # SEE ALSO: our own pages it names exist, and it names no page twice.
  refs=$(section "$page" "SEE ALSO" | sed -n 's/\\-/-/g; s/^\.BR \([^ ]*\) (\([0-9]\)).*/\1.\2/p')
  [ -n "$refs" ] || fail "$p: SEE ALSO names no page as '.BR name (section)'"
  dups=$(sort <<<"$refs" | uniq -d)
  [ -z "$dups" ] || fail "$p: SEE ALSO names twice: $dups"
  for r in $refs; do
    case $r in
      ext4dio*) [ -s "$pages/$r" ] || fail "$p: SEE ALSO names $r, which is not one of ours" ;;
    esac
    [ "$r" != "$p" ] || fail "$p: SEE ALSO names itself"
  done
  # Renders without a warning.
  out=$(groff -man -ww -z "$page" 2>&1) || fail "$p: groff failed"
  [ -z "$out" ] || fail "$p: groff -man -ww -z warns:"$'\n'"$out"
  out=$(man --warnings=w -l "$page" 2>&1 >/dev/null) || fail "$p: man -l failed"
  [ -z "$out" ] || fail "$p: man --warnings=w -l warns:"$'\n'"$out"
done

# ---- the CLIs: OPTIONS == --help ---------------------------------------
for t in ext4dio-map ext4dio-write ext4dio-read; do
  page=$pages/$t.1
  [ -s "$page" ] || continue
  help=$(ASAN_OPTIONS=detect_leaks=0 "$build/tools/$t" --help) || fail "$t --help failed"
  in_help=$(grep -oE -- '--[a-z][a-z0-9-]*' <<<"$help" | sort -u)
  in_page=$(tags "$page" OPTIONS | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u || true)
  for o in $(missing "$in_help" "$in_page"); do
    fail "$t.1: OPTIONS does not describe $o (it is in $t --help)"
  done
  for o in $(missing "$in_page" "$in_help"); do
    fail "$t.1: OPTIONS describes $o, which $t --help does not have"
  done
  for o in 0 1 2; do
    tags "$page" "EXIT STATUS" | grep -qE "^\.BR? $o( |\$)" ||
      fail "$t.1: EXIT STATUS does not list $o"
  done
  see=$(section "$page" "SEE ALSO" | sed 's/\\-/-/g')
  for r in "filefrag (8)" "debugfs (8)" "e2fsck (8)" "fio (1)" "ext4dio (3)" "ext4dio-fio (7)"; do
    grep -qF ".BR $r" <<<"$see" || fail "$t.1: SEE ALSO does not name ${r/ /}"
  done
done

# ---- ext4dio-fio(7): OPTIONS == the engine's option table ---------------
page=$pages/ext4dio-fio.7
if [ -s "$page" ]; then
  in_engine=$(grep -E '^ *\.name = "' "$src/tools/fio/ext4dio_engine.cc" |
    sed 's/[^"]*"\([^"]*\)".*/\1/' | sort -u)
  [ -n "$in_engine" ] || fail "no option table found in tools/fio/ext4dio_engine.cc"
  in_page=$(tags "$page" OPTIONS | grep -oE '^\.[A-Z]+ ext4dio_[a-z0-9_]+' |
    sed 's/.* //' | sort -u || true)
  for o in $(missing "$in_engine" "$in_page"); do
    fail "ext4dio-fio.7: OPTIONS does not describe $o= (in the engine's option table)"
  done
  for o in $(missing "$in_page" "$in_engine"); do
    fail "ext4dio-fio.7: OPTIONS describes $o=, which the engine does not have"
  done
  # Every installed job file is described under FILES.
  for j in "$src"/tools/fio/*.fio; do
    j=$(basename "$j")
    tags "$page" FILES | grep -qF "/${j}" || fail "ext4dio-fio.7: FILES does not describe $j"
  done
fi

# ---- ext4dio(3): the functions of ext4dio.h, and a working example ------
page=$pages/ext4dio.3
if [ -s "$page" ]; then
  header=$src/lib/include/ext4dio/ext4dio.h
  # Declarations: "type name(" at the start of a line, possibly "*name(".
  in_header=$(grep -oE '^[a-z0-9_ ]+[ *]+ext4dio_[a-z0-9_]+\(' "$header" |
    grep -oE 'ext4dio_[a-z0-9_]+\(' | tr -d '(' | sort -u)
  [ -n "$in_header" ] || fail "no function declarations found in $header"
  in_page=$(sed 's/\\-/-/g; s/\\f[BIRP]//g' "$page" | grep -oE 'ext4dio_[a-z0-9_]+ ?\(' |
    grep -oE 'ext4dio_[a-z0-9_]+' | sort -u)
  in_synopsis=$(section "$page" SYNOPSIS | sed 's/\\f[BIRP]//g' | grep -oE 'ext4dio_[a-z0-9_]+\(' |
    grep -oE 'ext4dio_[a-z0-9_]+' | sort -u)
  for f in $(missing "$in_header" "$in_synopsis"); do
    fail "ext4dio.3: SYNOPSIS does not declare $f() (ext4dio.h does)"
  done
  for f in $(missing "$in_page" "$in_header"); do
    fail "ext4dio.3: names $f(), which ext4dio.h does not declare"
  done

  # EXAMPLES: the first .EX block is the program, the second the commands
  # that build and run it; run them as written, against this build.
  work=$(mktemp -d /tmp/ext4dio-man-XXXXXX)
  trap 'rm -rf "$work"' EXIT
  section "$page" EXAMPLES | awk -v dir="$work" '
    /^\.EX/ { n++; on = 1; next }
    /^\.EE/ { on = 0; next }
    on { print > (dir "/block" n) }'
  unroff() { sed 's/\\e/\\/g; s/\\-/-/g; s/\\(aq/'"'"'/g; s/\\&//g' "$1"; }
  if [ ! -s "$work/block1" ] || [ ! -s "$work/block2" ]; then
    fail "ext4dio.3: EXAMPLES needs a program and the commands that build and run it"
  else
    unroff "$work/block1" > "$work/example.c"
    unroff "$work/block2" > "$work/run.sh"
    # A sanitizer build's library needs the same runtime in the program.
    sanitize=$(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
print({o["name"]: o["value"] for o in json.load(sys.stdin)}["b_sanitize"])')
    # This build's C compiler (meson 1.0 has no introspect --compilers).
    cc=$(meson introspect "$build" --targets | python3 -c '
import json, sys
for t in json.load(sys.stdin):
    for s in t["target_sources"]:
        if s["language"] == "c":
            print(" ".join(s["compiler"]))
            sys.exit(0)
sys.exit(1)') || cc=cc
    # The wrapper below is named cc: call the real one by its full path.
    read -r cc0 cc_rest <<<"$cc"
    cc="$(command -v "$cc0") $cc_rest"
    cflags="-Wall -Wextra -Werror"
    if [ "$sanitize" != none ]; then
      cflags+=" -fsanitize=$sanitize"
      # The library is C++: its UBSan checks (vptr) need the C++ sanitizer
      # runtime, which only the C++ driver links. Compile the C as C.
      case "$cc0" in
        *clang*) cc="$(command -v "${cc0/clang/clang++}") -x c $cc_rest" ;;
        *gcc*) cc="$(command -v "${cc0/gcc/g++}") -x c $cc_rest" ;;
      esac
    fi
    # `cc` in the commands is this build's compiler; pkg-config finds the
    # build's ext4dio-uninstalled.pc.
    mkdir "$work/bin"
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$cc" "$cflags" > "$work/bin/cc"
    chmod +x "$work/bin/cc"
    if ! (cd "$work" && PATH=$work/bin:$PATH PKG_CONFIG_PATH=$build/meson-uninstalled \
          LD_LIBRARY_PATH=$build/lib ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
          bash -eo pipefail run.sh > out.txt 2>&1); then
      fail "ext4dio.3: the EXAMPLES commands failed:"$'\n'"$(cat "$work/out.txt")"
    else
      # It printed what it did, and the image holds it (read by debugfs).
      grep -q '^/f: 4096 bytes written, fast path on$' "$work/out.txt" ||
        fail "ext4dio.3: the example printed: $(cat "$work/out.txt")"
      head -c 4096 /dev/zero | tr '\0' x > "$work/want"
      debugfs -R "cat /f" "$work/fs.img" > "$work/got" 2>/dev/null
      head -c 4096 "$work/got" | cmp -s - "$work/want" ||
        fail "ext4dio.3: after the example, /f in fs.img does not start with 4096 'x'"
      e2fsck -fn "$work/fs.img" >/dev/null 2>&1 || fail "ext4dio.3: e2fsck -fn fails after the example"
    fi
  fi
fi

if [ "$failures" -gt 0 ]; then
  echo "man_pages_test: $failures failure(s)" >&2
  exit 1
fi
echo "ok: ${#all_pages[@]} man pages agree with --help, the engine, ext4dio.h and render cleanly"
