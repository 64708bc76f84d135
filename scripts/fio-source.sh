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
tmp=$(mktemp -d /tmp/ext4dio-fio-src-XXXXXX)
partial=
cleanup() { rm -rf "$tmp"; if [ -n "$partial" ]; then rm -rf "$partial"; fi; }
trap cleanup EXIT
trap 'exit 1' INT TERM
. "$root/scripts/debian-source.sh"
debian_source fio "$version" "$tmp"
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
log=$tmp/log
if ! (cd "$partial" && ./configure --disable-native --prefix=/usr) >"$log" 2>&1 || [ ! -f "$partial/config-host.h" ]; then
  warn "fio's ./configure failed in the source of fio=$version ($(tail -1 "$log"))"
fi
rm -rf "$dest"
mv "$partial" "$dest"
partial=
echo "fio-source: fio $version source configured in .cache/fio-$upstream" >&2
