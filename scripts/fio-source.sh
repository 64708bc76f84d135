#!/usr/bin/env bash
# Makes the source of the INSTALLED fio version available, configured, in
# .cache/fio-<upstream version> of this checkout (ignored by git). The fio
# external ioengine (tools/fio/) is compiled against it: fio installs no
# headers, and fio refuses an engine built for another release.
#
# Idempotent: when .cache/fio-<v>/config-host.h exists it does nothing (no
# network). Otherwise it fetches the Debian source package fio=<installed
# version> through a temporary deb-src entry (same mirrors and suites as
# /etc/apt/sources.list.d/debian.sources) with apt state in a temporary
# directory, so /etc/apt and /var/lib/apt are left untouched; then runs only
# fio's ./configure. Failing to fetch (no network) prints one warning and
# exits 0: the build then simply skips the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

warn() { echo "fio-source: warning: $*; the fio engine will not be built" >&2; exit 0; }

version=$(dpkg-query -W -f='${Version}' fio 2>/dev/null) || version=
[ -n "$version" ] || warn "fio is not installed"
upstream=${version#*:}       # drop an epoch
upstream=${upstream%-*}      # drop the Debian revision
dest=$root/.cache/fio-$upstream
if [ -f "$dest/config-host.h" ]; then
  exit 0
fi
command -v dpkg-source >/dev/null 2>&1 || warn "dpkg-source missing (install dpkg-dev)"

sources=/etc/apt/sources.list.d/debian.sources
[ -r "$sources" ] || warn "$sources not found (no mirror to fetch fio's source from)"

tmp=$(mktemp -d /tmp/ext4dio-fio-src-XXXXXX)
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
# warns); the failure shows in apt-get source, reported with the first
# warning or error of either step.
apt-get "${apt_opts[@]}" -q update >"$log" 2>&1 || true
if ! (cd "$tmp/src" && apt-get "${apt_opts[@]}" -q source "fio=$version") >>"$log" 2>&1; then
  warn "could not fetch the source of fio=$version ($(grep -m1 '^[WE]: ' "$log" || echo 'apt-get failed'))"
fi
tree=$(find "$tmp/src" -mindepth 1 -maxdepth 1 -type d -name 'fio-*' | head -1)
[ -n "$tree" ] && [ -f "$tree/configure" ] || warn "apt-get source fio=$version left no source tree"

# Debian's fio is configured with "--disable-native --prefix=/usr --enable-gfio
# --enable-libnbd" (debian/rules); the last two need GTK and libnbd headers
# and change nothing an engine sees. Debian's build also has libaio, libnuma
# and rdma headers: they only add members to the trailing union of struct
# io_u, whose size the POSIX aiocb already sets.
# Configure under a temporary name beside the destination; the final name
# appears only when config-host.h exists (an interrupted run is redone).
mkdir -p "$root/.cache"
partial=$root/.cache/.fio-$upstream.partial
rm -rf "$partial"
mv "$tree" "$partial"
if ! (cd "$partial" && ./configure --disable-native --prefix=/usr) >"$log" 2>&1 || [ ! -f "$partial/config-host.h" ]; then
  warn "fio's ./configure failed in the source of fio=$version ($(tail -1 "$log"))"
fi
rm -rf "$dest"
mv "$partial" "$dest"
partial=
echo "fio-source: fio $version source configured in .cache/fio-$upstream" >&2
