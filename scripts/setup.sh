#!/usr/bin/env bash
# Installs the Debian 12 packages ext4dio needs to build, test and benchmark,
# then makes the installed fio's source available for the fio engine
# (scripts/fio-source.sh: .cache/fio-<version>, fetched once) and e2fsprogs'
# test images for the corpus test (scripts/e2fsprogs-source.sh).
# Idempotent: when everything is present it touches no network and changes
# nothing. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential dpkg-dev pkg-config meson ninja-build
  liburing-dev libext2fs-dev comerr-dev libabsl-dev
  libcli11-dev nlohmann-json3-dev
  libblkid-dev  # ext4dio-map/-read/-write: partition tables (--partition)
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev
  e2fsprogs e2tools util-linux fdisk fio gnuplot-nox bc python3
  groff-base man-db  # test/man_pages_test.sh renders the man pages
  strace  # test/fio_engine_test.sh counts io_uring_enter calls per batch
  debhelper lintian  # debian/ and test/debian_package_test.sh
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

fio_source() {  # never fails: without fio's source the engine is skipped
  bash "$(dirname "$0")/fio-source.sh" || true
  # Never fails either: without the images the corpus test skips.
  bash "$(dirname "$0")/e2fsprogs-source.sh" || true
}

if [ ${#missing[@]} -eq 0 ]; then
  fio_source
  exit 0
fi

echo "setup: installing missing packages: ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "setup: missing packages and not root (no sudo): ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fio_source
