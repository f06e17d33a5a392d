#!/bin/sh
# Prepares the emulated host's kernel: downloads Debian's stock kernel package (the one
# linux-image-amd64 currently depends on; never installed into /boot), and builds in
#   ${CVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cvisor}/emuhost/<kernel release>/
# vmlinuz, kernel.release and base.cpio (static busybox with its applet links, the modules in
# load order, /dev/console). Points emuhost/current at that directory, so cvisor finds it offline
# without knowing the version. Idempotent and atomic (built in a temporary directory, renamed into
# place). Prints the directory on stdout; progress and errors go to stderr.
# Embedded into the cvisor binary at build time ('cvisor emuhost prepare' runs it).
set -eu

# Modules the host needs, one per line; dependencies are added and ordered from modules.dep.
MODULES='
kvm_amd
virtio_pci
virtio_net
9pnet_virtio
9p
tun
veth
bridge
'

say() { echo "emuhost prepare: $*" >&2; }
die() { say "$*"; exit 1; }

cache=${CVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cvisor}/emuhost
mkdir -p "$cache"

# Offline with a prepared kernel: keep using it rather than fail on apt.
current_dir() {
    [ -f "$cache/current/vmlinuz" ] && [ -f "$cache/current/base.cpio" ] &&
        (cd "$cache/current" && pwd -P)
}

pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
      sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1) || pkg=
if [ -z "$pkg" ]; then
    if dir=$(current_dir); then
        say "cannot resolve linux-image-amd64 (apt lists missing?); keeping $dir"
        echo "$dir"
        exit 0
    fi
    die "cannot resolve the kernel package behind linux-image-amd64 (run 'apt-get update' first)"
fi
release=${pkg#linux-image-}
# The module list is part of the key: changing it prepares a fresh copy.
modkey=$(printf '%s' "$MODULES" | sha256sum | cut -c1-8)
out=$cache/$release-$modkey

point_current() {
    ln -sfn "$release-$modkey" "$cache/current.$$"
    mv -T "$cache/current.$$" "$cache/current"
}

if [ -f "$out/vmlinuz" ] && [ -f "$out/base.cpio" ]; then
    [ "$(readlink "$cache/current" 2>/dev/null || true)" = "$release" ] || point_current
    echo "$out"
    exit 0
fi

for tool in apt-get dpkg-deb cpio; do
    command -v "$tool" >/dev/null || die "missing '$tool'"
done
# kmod's tools live in /sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
for tool in depmod modprobe; do
    command -v "$tool" >/dev/null || die "missing '$tool' (apt-get install kmod)"
done

tmp=$(mktemp -d "$cache/.prepare.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
mkdir "$tmp/deb" "$tmp/pkg" "$tmp/root" "$tmp/out"

# apt's download sandbox user cannot write into root's cache; as root, download as root.
sandbox=
[ "$(id -u)" = 0 ] && sandbox='-o APT::Sandbox::User=root'
say "downloading $pkg"
# shellcheck disable=SC2086
(cd "$tmp/deb" && apt-get -q download $sandbox "$pkg" >&2) || die "apt-get download $pkg failed"
dpkg-deb -x "$tmp"/deb/*.deb "$tmp/pkg"
[ -f "$tmp/pkg/boot/vmlinuz-$release" ] || die "$pkg has no /boot/vmlinuz-$release"

# The package ships no modules.dep (depmod runs at install time); build it for the copy.
moddir=$tmp/pkg/lib/modules/$release
[ -d "$moddir" ] || moddir=$tmp/pkg/usr/lib/modules/$release
[ -d "$moddir" ] || die "$pkg has no modules directory for $release"
base=${moddir%/lib/modules/$release}
depmod -b "$base" "$release"

# busybox must be static: the initramfs has no libc. Use the host's if it is, else download one.
busybox=/bin/busybox
if ! { [ -x "$busybox" ] && LC_ALL=C ldd "$busybox" 2>&1 | grep -q 'not a dynamic executable'; }; then
    say "downloading busybox-static (the host has no static busybox)"
    # shellcheck disable=SC2086
    (cd "$tmp/deb" && apt-get -q download $sandbox busybox-static >&2) ||
        die "apt-get download busybox-static failed"
    dpkg-deb -x "$tmp"/deb/busybox-static_*.deb "$tmp/bb"
    busybox=$tmp/bb/bin/busybox
fi

root=$tmp/root
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/lib/modules" \
    "$root/dev" "$root/proc" "$root/sys" "$root/host" "$root/tmp" "$root/run" "$root/etc"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

# Modules in dependency order, each once; compressed ones are unpacked here because busybox
# insmod may not read them.
: >"$root/lib/modules/load.order"
for want in $MODULES; do
    deps=$(modprobe -d "$base" -S "$release" --show-depends "$want") ||
        die "module $want not found in $pkg"
    echo "$deps" | while read -r kind path _; do
        [ "$kind" = insmod ] || continue   # "builtin NAME": compiled into the kernel
        file=${path##*/}
        case $file in
            *.ko) name=${file%.ko} ;;
            *.ko.xz) name=${file%.ko.xz} ;;
            *.ko.zst) name=${file%.ko.zst} ;;
            *.ko.gz) name=${file%.ko.gz} ;;
            *) die "unexpected module file $file" ;;
        esac
        grep -qx "$name" "$root/lib/modules/load.order" && continue
        case $file in
            *.ko) cp "$path" "$root/lib/modules/$name.ko" ;;
            *.xz) xz -dc "$path" >"$root/lib/modules/$name.ko" ;;
            *.zst) zstd -qdc "$path" >"$root/lib/modules/$name.ko" ;;
            *.gz) gzip -dc "$path" >"$root/lib/modules/$name.ko" ;;
        esac
        echo "$name" >>"$root/lib/modules/load.order"
    done
done
# cvisor adds /dev/console itself at start; creating it here needs root.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$tmp/out/base.cpio"
cp "$tmp/pkg/boot/vmlinuz-$release" "$tmp/out/vmlinuz"
echo "$release" >"$tmp/out/kernel.release"
cp "$root/lib/modules/load.order" "$tmp/out/modules.load"

# Another prepare may have won the race; its result is as good as ours.
if ! mv -T "$tmp/out" "$out" 2>/dev/null; then
    [ -f "$out/base.cpio" ] || die "cannot move the result into $out"
fi
point_current
say "prepared $release in $out ($(wc -l <"$out/modules.load") modules)"
echo "$out"
