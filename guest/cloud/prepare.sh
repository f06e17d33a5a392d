#!/usr/bin/env bash
# Prepares Debian's stock cloud kernel (linux-image-cloud-amd64) as a cvisor guest, for the tests
# that show cvisor works with a distribution kernel whose virtio drivers are modules: unpacks
# the package into the cache (never installs it) and packs the virtio modules, with their
# dependencies in load order, into modules.cpio with /lib/modules/cvisor.load, which cvisor-init
# reads at boot. Prints the directory holding vmlinuz, modules.cpio and kernel.release.
#
# usage: guest/cloud/prepare.sh [--print-dir]
set -euo pipefail

cache=${CVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cvisor}/cloud-kernel
MODULES="virtio_pci virtio_blk virtio_net virtio_rng virtio_balloon vmw_vsock_virtio_transport"

die() { echo "cloud kernel: $*" >&2; exit 1; }

pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
      sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1) || true
[ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64 (run apt-get update)"
release=${pkg#linux-image-}
out=$cache/$release
if [ "${1:-}" = "--print-dir" ]; then echo "$out"; exit 0; fi
if [ -f "$out/vmlinuz" ] && [ -f "$out/modules.cpio" ]; then echo "$out"; exit 0; fi

export PATH=$PATH:/sbin:/usr/sbin
for tool in apt-get dpkg-deb depmod modprobe cpio; do
  command -v "$tool" >/dev/null || die "missing '$tool'"
done
tmp=$(mktemp -d "$cache.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$cache"; mktemp -d "$cache/tmp.XXXXXX"; })
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
dpkg-deb -x "$tmp"/*.deb "$tmp/pkg"
depmod -b "$tmp/pkg" "$release"

mkdir -p "$tmp/root/lib/modules"
: > "$tmp/root/lib/modules/cvisor.load"
for m in $MODULES; do
  # --show-depends lists dependencies first: exactly the load order.
  modprobe -d "$tmp/pkg" -S "$release" --show-depends "$m" | while read -r kw path _; do
    [ "$kw" = "insmod" ] || continue
    name=$(basename "$path")
    name=${name%.ko}
    grep -qx "/lib/modules/$name.ko" "$tmp/root/lib/modules/cvisor.load" && continue
    cp "$path" "$tmp/root/lib/modules/$name.ko"
    echo "/lib/modules/$name.ko" >> "$tmp/root/lib/modules/cvisor.load"
  done
done
(cd "$tmp/root" && find lib | sort | cpio -o -H newc --quiet -R 0:0) > "$tmp/modules.cpio"

mkdir -p "$tmp/out"
cp "$tmp/pkg/boot/vmlinuz-$release" "$tmp/out/vmlinuz"
mv "$tmp/modules.cpio" "$tmp/out/"
echo "$release" > "$tmp/out/kernel.release"
cp "$tmp/root/lib/modules/cvisor.load" "$tmp/out/modules.load"
mkdir -p "$cache"
rm -rf "$out"
mv "$tmp/out" "$out"
echo "$out"
