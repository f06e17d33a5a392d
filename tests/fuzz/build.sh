#!/usr/bin/env bash
# Builds the libFuzzer targets, which need clang, and prints the build directory on stdout.
#   tests/fuzz/build.sh [BUILD_DIR]
# BUILD_DIR defaults to $FUZZ_BUILD, else <repo>/build-clang (the clang tree scripts/test keeps);
# a missing directory is set up with CC=clang. Meson builds the targets only when the compiler
# is clang with libFuzzer (tests/meson.build), so gcc trees are never affected.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-${FUZZ_BUILD:-$root/build-clang}}
targets=(tests/fuzz-virtq tests/fuzz-virtq-seeds)

if [ ! -f "$dir/build.ninja" ]; then
  CC=clang meson setup "$dir" "$root" >&2
fi
if ! ninja -C "$dir" -t targets all 2>/dev/null | grep -q '^tests/fuzz-virtq:'; then
  echo "build.sh: $dir has no fuzz targets: it was not set up with clang (CC=clang meson setup ...)" >&2
  exit 1
fi
out=$(ninja -C "$dir" "${targets[@]}" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
echo "$dir"
