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
tmp=$(mktemp -d /tmp/ext4dio-e2fsprogs-src-XXXXXX)
partial=
cleanup() { rm -rf "$tmp"; if [ -n "$partial" ]; then rm -rf "$partial"; fi; }
trap cleanup EXIT
trap 'exit 1' INT TERM
. "$root/scripts/debian-source.sh"
debian_source e2fsprogs "$version" "$tmp"
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
