#!/bin/sh
# End-to-end virtio-vsock checks with a real guest; run inside the emulated host (Unix sockets
# must live on its own /dev/shm):
#   cvisor emuhost exec -- guest/tools/vsock-check.sh BUILD_DIR
# 1. host-initiated: guest listens (cvisor-vsock-test echo), host CONNECTs, 16 MiB round trip
#    must match (SHA-256); a port nobody listens on must be refused cleanly; host->guest MB/s.
# 2. guest-initiated: host listens on SOCK_5000 (echo) and SOCK_5001 (sink); the guest's 16 MiB
#    must come back intact; a port without a listener fails with ECONNRESET; guest->host MB/s.
# 3. cvisor-agent --listen vsock:1024 in the guest answers ping/exec through the Unix socket.
set -u
B=$(cd "${1:?usage: vsock-check.sh BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
K=$("$HERE/../kernel/build.sh" --print-dir)
PY="/usr/bin/python3 $HERE/vsock-host.py"
W=$(mktemp -d /dev/shm/vsock-check.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail=0

mkcpio() {   # mkcpio NAME: packs $W/NAME.sh as /t.sh into $W/NAME.cpio
	mkdir -p "$W/$1.d" && cp "$W/$1.sh" "$W/$1.d/t.sh" && chmod 755 "$W/$1.d/t.sh"
	(cd "$W/$1.d" && echo t.sh | busybox cpio -o -H newc 2>/dev/null) > "$W/$1.cpio"
}
vmm() {      # vmm CPIO SOCK [ARGS...]: boots the default guest running /t.sh (or ARGS)
	cpio=$1 sock=$2
	shift 2
	cmd=${*:-/t.sh}
	"$B/cvisor-vmm" --kernel "$K/vmlinux" --initrd "$B/initramfs.cpio" ${cpio:+--initrd "$cpio"} \
		--vsock "cid=3,uds=$sock" --cmdline "console=ttyS0 quiet -- $cmd"
}

echo "== 1. guest listens, host connects"
cat > "$W/a.sh" <<'G'
#!/bin/sh
cvisor-vsock-test listen 1234
echo "guest: echo rc=$?"
cvisor-vsock-test -v listen -o 1235 > /dev/null
echo "guest: sink rc=$?"
G
mkcpio a
vmm "$W/a.cpio" "$W/a.sock" > "$W/a.log" 2>&1 &
pid=$!
$PY echo "$W/a.sock" 1234 16777216 || fail=1
$PY refused "$W/a.sock" 999 || fail=1
$PY send "$W/a.sock" 1235 67108864 || fail=1
wait $pid || fail=1
grep -q "guest: echo rc=0" "$W/a.log" && grep -q "guest: sink rc=0" "$W/a.log" || fail=1
grep "guest:\|cvisor-vsock-test" "$W/a.log"
[ ! -e "$W/a.sock" ] || { echo "listener path left behind"; fail=1; }

echo "== 2. guest connects, host listens on SOCK_PORT"
cat > "$W/b.sh" <<'G'
#!/bin/sh
dd if=/dev/urandom of=/tmp/data bs=65536 count=256 2>/dev/null
a=$(sha256sum < /tmp/data)
b=$(cvisor-vsock-test connect 2 5000 < /tmp/data | sha256sum)
echo "guest: sent $a"
echo "guest: back $b"
[ "$a" = "$b" ] && echo "guest: round trip MATCH"
dd if=/dev/zero bs=65536 count=1024 2>/dev/null | cvisor-vsock-test -v connect 2 5001 > /dev/null
echo "guest: bulk rc=$?"
cvisor-vsock-test connect 2 5999 < /dev/null
echo "guest: refused rc=$?"
G
mkcpio b
$PY serve "$W/b.sock_5000" echo > "$W/s0.log" 2>&1 &
s0=$!
$PY serve "$W/b.sock_5001" sink > "$W/s1.log" 2>&1 &
s1=$!
while [ ! -S "$W/b.sock_5000" ] || [ ! -S "$W/b.sock_5001" ]; do sleep 0.2; done
vmm "$W/b.cpio" "$W/b.sock" > "$W/b.log" 2>&1 || fail=1
wait $s0 $s1
grep "guest:\|cvisor-vsock-test" "$W/b.log"
cat "$W/s0.log" "$W/s1.log" | grep -v listening
grep -q "round trip MATCH" "$W/b.log" && grep -q "guest: bulk rc=0" "$W/b.log" &&
	grep -q "guest: refused rc=1" "$W/b.log" && grep -q "Connection reset" "$W/b.log" || fail=1

echo "== 3. cvisor-agent over vsock"
vmm "" "$W/d.sock" /bin/cvisor-agent --listen vsock:1024 --allow-poweroff > "$W/d.log" 2>&1 &
pid=$!
$PY agent "$W/d.sock" 1024 || fail=1
wait $pid || fail=1

[ $fail = 0 ] && echo "vsock-check: all passed" || echo "vsock-check: FAILED"
exit $fail
