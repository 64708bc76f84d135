# Sourced by fio-source.sh and e2fsprogs-source.sh: fetches a Debian source
# package without touching /etc/apt or /var/lib/apt.
#
#   debian_source PACKAGE VERSION TMPDIR
#
# Fetches PACKAGE=VERSION through a temporary deb-src entry (the same mirrors
# and suites as /etc/apt/sources.list.d/debian.sources) with apt state in
# TMPDIR (made by the caller, removed by the caller's trap), unpacks it
# there, and sets `tree` to the unpacked source directory. On any failure it
# calls the caller's `warn` (which prints one line and exits 0).
debian_source() {
  local package=$1 version=$2 tmp=$3
  command -v dpkg-source >/dev/null 2>&1 || warn "dpkg-source missing (install dpkg-dev)"
  local sources=/etc/apt/sources.list.d/debian.sources
  [ -r "$sources" ] || warn "$sources not found (no mirror to fetch $package's source from)"
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

  local apt_opts=(
    -o Dir::Etc::SourceList=/dev/null
    -o Dir::Etc::SourceParts="$tmp/parts"
    -o Dir::State::Lists="$tmp/lists"
    -o Dir::Cache="$tmp/cache"
    -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
    -o Acquire::Retries=0 -o Acquire::http::Timeout=30
    -o Acquire::Languages=none
  )
  local log=$tmp/log
  # apt-get update exits 0 even when an index fails to download (it only
  # warns); the failure shows in apt-get source, reported with the first
  # warning or error of either step.
  apt-get "${apt_opts[@]}" -q update >"$log" 2>&1 || true
  if ! (cd "$tmp/src" && apt-get "${apt_opts[@]}" -q source "$package=$version") >>"$log" 2>&1; then
    warn "could not fetch the source of $package=$version ($(grep -m1 '^[WE]: ' "$log" || echo 'apt-get failed'))"
  fi
  tree=$(find "$tmp/src" -mindepth 1 -maxdepth 1 -type d -name "$package-*" | head -1)
  [ -n "$tree" ] || warn "apt-get source $package=$version left no source tree"
}
