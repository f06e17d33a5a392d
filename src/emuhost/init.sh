#!/bin/busybox sh
# /init of the emulated host (PID 1, busybox sh). Mounts the kernel filesystems, loads the modules
# prepare.sh listed in /lib/modules/load.order (kvm-amd, virtio, 9p, virtio-net...), mounts this
# machine's root (shared by QEMU over 9p) at /host with /dev, /proc and /sys bound into it,
# configures QEMU's user network, then keeps cvisor-agent running; commands run chrooted in /host.
# Embedded into the cvisor binary at build time; emuhost_start appends it to the initramfs.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "emuhost-init: $*" >/dev/console; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

# Order matters (dependencies first); prepare.sh resolved it from modules.dep.
while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/lib/modules/$mod.ko" || log "insmod $mod failed"
done </lib/modules/load.order

# Commands run chrooted in the shared root; in the initramfs itself only if 9p failed.
root=/host
mkdir -p /host
# cache=mmap: without it shared writable mmap fails with EINVAL; it caches nothing else, so
# changes made on either side stay immediately visible to the other.
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap hostroot /host; then
    for d in dev proc sys; do
        mount -o rbind "/$d" "/host/$d" || log "bind /$d into /host failed"
    done
else
    log "mounting the host's root over 9p failed; commands will run in the initramfs"
    root=/
fi

# QEMU user networking: fixed guest address, gateway and DNS at 10.0.2.2/.3.
hostname emuhost
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

# PID 1 must not exit (that panics the kernel), so the agent is a child that comes back if it dies.
# Running it in the foreground also makes this shell reap orphans reparented to PID 1.
while :; do
    /bin/cvisor-agent --listen tcp:1024 --root "$root" --token-file /etc/cvisor-agent.token \
        --allow-poweroff --hold-kvm
    log "cvisor-agent exited with status $?; restarting"
    sleep 1
done
