#!/usr/bin/env bash
# Builds cvisor's default guest kernel from Debian's linux-source-6.1 package: tinyconfig plus
# cvisor.config. The result is cached outside the repository, keyed by a hash of everything that
# decides its contents (fragment, this script, source package version), so each machine builds it
# once (~4 min on 2 cores). Prints the directory holding bzImage, vmlinux and kernel.release.
# The key covers the fragment and this script; the source package version used is recorded in
# the output directory (source-version) rather than keyed, so a Debian point release of
# linux-source does not silently invalidate every machine's cache.
#
# usage: guest/kernel/build.sh [--key | --print-dir]
#   --key        print the cache key only (used by meson at configure time)
#   --print-dir  print where the kernel is or would be, without building
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/cvisor.config
tarball=/usr/src/linux-source-6.1.tar.xz
cache=${CVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cvisor}

die() { echo "guest kernel: $*" >&2; exit 1; }

key=$(cat "$fragment" "$here/build.sh" | sha256sum | cut -c1-16)
out=$cache/kernel/$key

case "${1:-}" in
    --key) echo "$key"; exit 0 ;;
    --print-dir) echo "$out"; exit 0 ;;
    "") ;;
    *) die "unknown option '$1'" ;;
esac
if [ -f "$out/bzImage" ] && [ -f "$out/vmlinux" ] && [ -f "$out/kernel.release" ]; then
    echo "$out"; exit 0
fi

[ -r "$tarball" ] || die "missing $tarball (apt-get install linux-source-6.1)"
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) || die "linux-source-6.1 not installed"

src=$cache/kernel/src-$srcver
if [ ! -f "$src/.unpacked" ]; then
    echo "guest kernel: unpacking linux-source $srcver" >&2
    rm -rf "$src"; mkdir -p "$src"
    tar -xf "$tarball" -C "$src" --strip-components=1
    touch "$src/.unpacked"
fi

obj=$cache/kernel/obj-$key
rm -rf "$obj"; mkdir -p "$obj"
echo "guest kernel: configuring (tinyconfig + $(basename "$fragment"))" >&2
make -s -C "$src" O="$obj" ARCH=x86_64 tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$fragment" >/dev/null
make -s -C "$src" O="$obj" ARCH=x86_64 olddefconfig >/dev/null

# A fragment line that did not survive olddefconfig means a dependency is missing: fail loudly.
missing=0
while IFS= read -r line; do
    case "$line" in CONFIG_*=*) ;; *) continue ;; esac
    grep -qxF -- "$line" "$obj/.config" || { echo "guest kernel: not set after olddefconfig: $line" >&2; missing=1; }
done < "$fragment"
[ $missing -eq 0 ] || die "config fragment did not apply"

echo "guest kernel: building with $(nproc) jobs (about 4 minutes on 2 cores)" >&2
make -s -C "$src" O="$obj" ARCH=x86_64 -j"$(nproc)" bzImage vmlinux >/dev/null

tmp=$out.tmp.$$
rm -rf "$tmp"; mkdir -p "$tmp"
cp "$obj/arch/x86/boot/bzImage" "$obj/vmlinux" "$obj/.config" "$tmp/"
mv "$tmp/.config" "$tmp/config"
make -s -C "$src" O="$obj" ARCH=x86_64 kernelrelease > "$tmp/kernel.release"
echo "$srcver" > "$tmp/source-version"
rm -rf "$out"; mv "$tmp" "$out"
rm -rf "$obj"
echo "$out"
