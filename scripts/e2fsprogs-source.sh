#!/usr/bin/env bash
# Makes the test images of the INSTALLED e2fsprogs version available in
# .cache/e2fsprogs-<upstream version>/tests of this checkout (ignored by
# git): e2fsprogs' own regression corpus, mostly corrupt filesystems
# (tests/*/image.gz), which test/e2fsprogs_corpus_test.sh runs the CLIs over.
#
# Idempotent: when .cache/e2fsprogs-<v>/tests/f_dup/image.gz exists it does
# nothing (no network). Otherwise it fetches the Debian source package
# e2fsprogs=<installed source version> through a temporary deb-src entry
# (same mirrors and suites as /etc/apt/sources.list.d/debian.sources) with
# apt state in a temporary directory, so /etc/apt and /var/lib/apt are left
# untouched, and keeps only its tests/ directory. Failing to fetch (no
# network) prints one warning and exits 0: the corpus test then skips.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

warn() { echo "e2fsprogs-source: warning: $*; the e2fsprogs corpus test will be skipped" >&2; exit 0; }

# The binary package may be a binNMU (1.47.0-2+b2): the source is 1.47.0-2.
version=$(dpkg-query -W -f='${source:Version}' e2fsprogs 2>/dev/null) || version=
[ -n "$version" ] || warn "e2fsprogs is not installed"
upstream=${version#*:}       # drop an epoch
upstream=${upstream%-*}      # drop the Debian revision
dest=$root/.cache/e2fsprogs-$upstream
if [ -f "$dest/tests/f_dup/image.gz" ]; then
  exit 0
fi
command -v dpkg-source >/dev/null 2>&1 || warn "dpkg-source missing (install dpkg-dev)"

sources=/etc/apt/sources.list.d/debian.sources
[ -r "$sources" ] || warn "$sources not found (no mirror to fetch e2fsprogs' source from)"

tmp=$(mktemp -d /tmp/ext4dio-e2fsprogs-src-XXXXXX)
partial=
cleanup() { rm -rf "$tmp"; if [ -n "$partial" ]; then rm -rf "$partial"; fi; }
trap cleanup EXIT
trap 'exit 1' INT TERM
# apt downloads as the unprivileged _apt user: it must reach the directories.
chmod 755 "$tmp"
mkdir -p "$tmp/parts" "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/src"

# The Debian stanzas of debian.sources (deb822), as deb-src stanzas.
awk 'BEGIN { RS = ""; ORS = "\n\n" }
  {
    n = split($0, lines, "\n"); out = ""; deb = 0
    for (i = 1; i <= n; i++) {
      if (lines[i] ~ /^#/) continue
      if (lines[i] ~ /^Types:/) {
        if (lines[i] ~ /[: ]deb( |$)/) deb = 1
        lines[i] = "Types: deb-src"
      }
      out = out lines[i] "\n"
    }
    if (deb) printf "%s\n", out
  }' "$sources" > "$tmp/parts/ext4dio-src.sources"
[ -s "$tmp/parts/ext4dio-src.sources" ] || warn "no 'Types: deb' stanza in $sources"
chmod 644 "$tmp/parts/ext4dio-src.sources"

apt_opts=(
  -o Dir::Etc::SourceList=/dev/null
  -o Dir::Etc::SourceParts="$tmp/parts"
  -o Dir::State::Lists="$tmp/lists"
  -o Dir::Cache="$tmp/cache"
  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
  -o Acquire::Retries=0 -o Acquire::http::Timeout=30
  -o Acquire::Languages=none
)
log=$tmp/log
# apt-get update exits 0 even when an index fails to download (it only
# warns); the failure shows in apt-get source.
apt-get "${apt_opts[@]}" -q update >"$log" 2>&1 || true
if ! (cd "$tmp/src" && apt-get "${apt_opts[@]}" -q source "e2fsprogs=$version") >>"$log" 2>&1; then
  warn "could not fetch the source of e2fsprogs=$version ($(grep -m1 '^[WE]: ' "$log" || echo 'apt-get failed'))"
fi
tree=$(find "$tmp/src" -mindepth 1 -maxdepth 1 -type d -name 'e2fsprogs-*' | head -1)
[ -n "$tree" ] && [ -f "$tree/tests/f_dup/image.gz" ] ||
  warn "apt-get source e2fsprogs=$version left no tests/f_dup/image.gz"

# Only tests/ is kept, under a temporary name beside the destination; the
# final name appears only when complete (an interrupted run is redone).
mkdir -p "$root/.cache"
partial=$root/.cache/.e2fsprogs-$upstream.partial
rm -rf "$partial"
mkdir -p "$partial"
mv "$tree/tests" "$partial/tests"
rm -rf "$dest"
mv "$partial" "$dest"
partial=
echo "e2fsprogs-source: e2fsprogs $version test images in .cache/e2fsprogs-$upstream/tests" >&2
