#!/usr/bin/env bash
# Builds the libFuzzer targets, which need clang, and prints the build directory on stdout.
#   tests/fuzz/build.sh [BUILD_DIR]
# BUILD_DIR defaults to $FUZZ_BUILD, else <repo>/build-clang (the clang tree scripts/test keeps);
# a missing directory is set up with CC=clang. Meson builds the targets (tests/fuzz-NAME and
# tests/fuzz-NAME-seeds) only when the compiler is clang with libFuzzer (tests/meson.build), so gcc
# trees are never affected.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-${FUZZ_BUILD:-$root/build-clang}}

if [ ! -f "$dir/build.ninja" ]; then
  CC=clang meson setup "$dir" "$root" >&2
fi
mapfile -t targets < <(ninja -C "$dir" -t targets all 2>/dev/null |
  sed -nE 's/^(tests\/fuzz-[a-z0-9-]+): .*/\1/p' | sort -u)
if [ ${#targets[@]} -eq 0 ]; then
  probe=$(mktemp -d)
  printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\n%s\n' \
    'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
    >"$probe/t.c"
  if ! clang -fsanitize=fuzzer "$probe/t.c" -o "$probe/t" >/dev/null 2>&1; then
    echo "build.sh: libFuzzer is not available: clang cannot link -fsanitize=fuzzer" \
      "(Debian: apt-get install clang libclang-rt-14-dev, as scripts/setup does)" >&2
  else
    echo "build.sh: $dir has no fuzz targets: it was not set up with clang" \
      "(CC=clang meson setup ...), or was set up before libFuzzer was installed" \
      "(meson setup --wipe it)" >&2
  fi
  rm -rf "$probe"
  exit 1
fi
out=$(ninja -C "$dir" "${targets[@]}" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
echo "$dir"
