#!/usr/bin/env bash
# An offline wheelhouse of the collector's dependencies for a Pi's architecture, built on this
# machine, for the collector role's hwpc_wheelhouse_dir (pip on the Pi then installs with
# --no-index --find-links, no package index needed, nothing compiled on the Pi).
#
#   wheelhouse.sh --arch arm64|amd64 --dest DIR [--python 3.11] [--pure-cassandra-driver] [--refresh]
#
# Binary wheels are downloaded for the target (manylinux, glibc <= 2.36 as on bookworm and
# Raspberry Pi OS bookworm, CPython --python). When the index has no wheel of cassandra-driver
# for the target (or with --pure-cassandra-driver), a pure-Python wheel of it is built here
# instead: its C extensions (murmur3, libev, Cython) are optional and the driver is fully
# functional without them. Compiling them on an emulated arm64 host takes many minutes.
# cassandra-driver >= 3.30 reads the switches from [tool.cassandra-driver] in its pyproject.toml
# (build-*-extension(s) = false); older releases from CASS_DRIVER_NO_CYTHON=1 and
# CASS_DRIVER_NO_EXTENSIONS=1; both are set.
#
# Idempotent: DIR/.wheelhouse records what was asked for; the same request again is a no-op
# (--refresh downloads again, e.g. for newer releases).
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$HARNESS_DIR/../.." && pwd)"
PYPROJECT="$REPO_DIR/collector/pyproject.toml"
GLIBC_MAX=36   # bookworm

die() { printf 'wheelhouse: ERROR: %s\n' "$*" >&2; exit 1; }
say() { printf 'wheelhouse: %s\n' "$*"; }

arch="" dest="" pyver=3.11 pure=0 refresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="${2:?}"; shift 2 ;;
    --dest) dest="${2:?}"; shift 2 ;;
    --python) pyver="${2:?}"; shift 2 ;;
    --pure-cassandra-driver) pure=1; shift ;;
    --refresh) refresh=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
case "$arch" in
  arm64) machine=aarch64 ;;
  amd64) machine=x86_64 ;;
  *) die "--arch arm64 or amd64 is required" ;;
esac
[ -n "$dest" ] || die "--dest DIR is required"
[[ "$pyver" =~ ^3\.[0-9]+$ ]] || die "--python must look like 3.11"

# The controller's Python with pip (the project's venv when there is one).
PY="${HWPC_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO_DIR/.venv/bin/python" ]; then PY="$REPO_DIR/.venv/bin/python"; else PY=python3; fi
fi
mapfile -t reqs < <("$PY" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$PYPROJECT")
[ "${#reqs[@]}" -gt 0 ] || die "no dependencies in $PYPROJECT"

platforms=(--platform "manylinux2014_$machine")
for i in $(seq 17 "$GLIBC_MAX"); do platforms+=(--platform "manylinux_2_${i}_$machine"); done
abi="cp${pyver/./}"
request="$(printf 'arch=%s\npython=%s\npure-cassandra-driver=%s\n' "$arch" "$pyver" "$pure"; printf '%s\n' "${reqs[@]}")"

mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
if [ "$refresh" -eq 0 ] && [ -f "$dest/.wheelhouse" ] && [ "$(cat "$dest/.wheelhouse")" = "$request" ]; then
  say "$dest is complete for $arch ($(find "$dest" -name '*.whl' | wc -l) wheels)"
  exit 0
fi
# A new request starts from an empty directory: no wheel of an earlier one is left for pip to pick.
rm -f "$dest/.wheelhouse" "$dest"/*.whl
t0=$EPOCHSECONDS

download() { # requirement...
  "$PY" -m pip download --disable-pip-version-check --quiet --dest "$dest" \
    "${platforms[@]}" --python-version "$pyver" --implementation cp --abi "$abi" \
    --only-binary=:all: "$@"
}

# The requirements with cassandra-driver replaced by the pure-Python wheel built here (pip
# would otherwise prefer a binary wheel of the same release from the index).
download_with_pure_driver() {
  local others
  mapfile -t others < <(printf '%s\n' "${reqs[@]}" | grep -viE '^cassandra[-_]driver')
  download "$(ls "$dest"/cassandra_driver-*-py3-none-any.whl)" "${others[@]}"
}

# A pure-Python wheel of cassandra-driver (the newest release that meets the requirement).
build_pure_driver() {
  local spec work src
  spec="$(printf '%s\n' "${reqs[@]}" | grep -iE '^cassandra[-_]driver' | head -n 1)"
  [ -n "$spec" ] || die "cassandra-driver is not a dependency in $PYPROJECT"
  work="$(mktemp -d)"
  trap 'rm -rf "'"$work"'"' EXIT
  say "building a pure-Python wheel of $spec (no C extensions)"
  "$PY" -m pip download --disable-pip-version-check --quiet --no-deps --no-binary :all: \
    --dest "$work" "$spec"
  tar -xzf "$work"/cassandra[-_]driver-*.tar.gz -C "$work"
  src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'cassandra*driver-*' | head -n 1)"
  [ -n "$src" ] || die "unexpected sdist layout in $work"
  if [ -f "$src/pyproject.toml" ]; then
    sed -i -E 's/^(build-(murmur3|libev)-extension|build-cython-extensions)[[:space:]]*=.*/\1 = false/' \
      "$src/pyproject.toml"
  fi
  rm -f "$dest"/cassandra_driver-*.whl
  CASS_DRIVER_NO_CYTHON=1 CASS_DRIVER_NO_EXTENSIONS=1 \
    "$PY" -m pip wheel --disable-pip-version-check --quiet --no-deps --wheel-dir "$dest" "$src"
  ls "$dest"/cassandra_driver-*-py3-none-any.whl >/dev/null 2>&1 \
    || die "the cassandra-driver wheel built is not pure Python: $(ls "$dest"/cassandra_driver-*.whl)"
  rm -rf "$work"
  trap - EXIT
}

if [ "$pure" -eq 1 ]; then
  build_pure_driver
  download_with_pure_driver
elif ! download "${reqs[@]}" 2>"$dest/.download-error"; then
  if grep -qiE 'cassandra[-_]driver' "$dest/.download-error"; then
    say "no cassandra-driver wheel for $arch on the index"
    build_pure_driver
    download_with_pure_driver
  else
    cat "$dest/.download-error" >&2
    die "pip download failed"
  fi
fi
rm -f "$dest/.download-error"
printf '%s\n' "$request" >"$dest/.wheelhouse"
say "$dest: $(find "$dest" -name '*.whl' | wc -l) wheels for $arch, CPython $pyver in $((EPOCHSECONDS - t0)) s"
find "$dest" -name '*.whl' -printf '  %f\n' | sort
