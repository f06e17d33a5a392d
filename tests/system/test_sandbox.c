/*
 * cvisor-vmm's sandbox and cvisor-jailer with real guests, where guests boot (the emulated
 * host when the run uses one):
 *   - every device working at once under the default seccomp mode (kill): a guest command run
 *     through the agent over vsock with disk I/O, a TAP network transfer both ways and
 *     hwrng; then cvisor-vmm directly with the control API, vsock echo, balloon inflate and
 *     deflate through the API, disk and rng. Meanwhile, from outside, every thread of the VMM
 *     must be in seccomp filter mode with no capabilities left.
 *   - a VM booted through cvisor-jailer as an unprivileged uid: the VMM process's uid, its
 *     own PID namespace (it is PID 1 there), mount/IPC/UTS namespaces, a root holding only
 *     what was put in, its cgroup with the limits given; the guest still does disk I/O, vsock
 *     and the API work from inside the jail, and the cgroup is gone afterwards.
 * A syscall outside the lists kills the VMM with SIGSYS, so any missing entry fails these
 * tests (tests/unit/test_sandbox.c shows the kill itself).
 *
 * Shape (as in test_devices.c): a host script written to a work directory runs where guests
 * boot and prints "KEY value" lines that the test checks.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "script.h"

/*
 * Work files are shared: the jailed VMM (another uid) reads its bound files through them.
 * Beyond the common head, host scripts get VSOCK_PY (guest/tools/vsock-host.py); `threads PID`,
 * which prints per-thread "name seccomp-mode" lines and the process's capability and
 * no_new_privs state as the kernel reports them; and `await FILE WORD`.
 */
const struct script_suite script_suite = {
	.tag = "sbxtest", .peer = "sandbox_peer.py", .vm_seconds = 300, .shared = true,
	.head_extra =
		"VSOCK_PY=\"$SRC/guest/tools/vsock-host.py\"\n"
		"threads() {\n"
		"  for t in /proc/$1/task/*; do\n"
		"    echo \"THREAD $(cat $t/comm) $(awk '/^Seccomp:/ {print $2}' $t/status)\"\n"
		"  done\n"
		"  echo \"CAPEFF $(awk '/^CapEff:/ {print $2}' /proc/$1/status)\"\n"
		"  echo \"CAPPRM $(awk '/^CapPrm:/ {print $2}' /proc/$1/status)\"\n"
		"  echo \"NONEWPRIVS $(awk '/^NoNewPrivs:/ {print $2}' /proc/$1/status)\"\n"
		"}\n"
		"await() {   # await FILE WORD: until FILE has a line starting with WORD, at most 200 s\n"
		"  i=0; until grep -q \"^$2\" \"$1\" 2>/dev/null || [ $i -ge 2000 ]; do\n"
		"    i=$((i + 1)); sleep 0.1; done\n"
		"}\n",
};

TestSuite(sandbox, .fini = remove_work, .timeout = 600);

/*
 * Every "THREAD name mode" line has mode 2 (SECCOMP_MODE_FILTER); returns how many there were
 * and checks that the thread names of all four roles are present where expected.
 */
static int expect_all_threads_filtered(const struct sys_result *r, bool with_api)
{
	int n = 0;
	bool vcpu = false, io = false, api = false, main_thread = false;
	for (const char *p = r->out; p && (p = strstr(p, "THREAD ")); p++) {
		if (p != r->out && p[-1] != '\n')
			continue;
		char name[32], mode[8];
		cr_assert_eq(sscanf(p, "THREAD %31s %7s", name, mode), 2, "%s", r->out);
		cr_assert_str_eq(mode, "2", "thread '%s' is not in seccomp filter mode (mode %s)\n%s",
				 name, mode, r->out);
		vcpu |= strncmp(name, "vcpu", 4) == 0;
		io |= strcmp(name, "io") == 0;
		api |= strcmp(name, "api") == 0;
		main_thread |= strcmp(name, "cvisor-vmm") == 0;
		n++;
	}
	cr_assert(vcpu && io && main_thread, "vCPU, I/O and main threads expected:\n%s", r->out);
	if (with_api)
		cr_assert(api, "the API thread (named after its first connection) expected:\n%s",
			  r->out);
	return n;
}

/* ------------------------------------------------------------------------------------------ */

static const char vm_guest[] =
	"#!/bin/sh\n"
	"mem() { awk '/^MemTotal:/ {print $2}' /proc/meminfo; }\n"
	"t0=$(mem)\n"
	"echo \"BEFORE $t0\"\n"
	"cvisor-vsock-test listen 1234; echo \"GUEST-ECHO $?\"\n"
	"dd if=/dev/urandom of=/tmp/d bs=65536 count=32 2>/dev/null\n"
	"dd if=/tmp/d of=/dev/vda bs=65536 conv=fsync 2>/dev/null && echo \"DISK-WROTE $(sha256sum < /tmp/d | cut -d' ' -f1)\"\n"
	"echo \"RNG $(head -c 4096 /dev/hwrng | wc -c)\"\n"
	"echo READY\n"
	"i=0; while [ $((t0 - $(mem))) -lt 60000 ] && [ $i -lt 100000 ]; do i=$((i + 1)); sleep 0.1; done\n"
	"echo \"INFLATED $(mem)\"\n"
	"i=0; while [ $((t0 - $(mem))) -gt 1024 ] && [ $i -lt 100000 ]; do i=$((i + 1)); sleep 0.1; done\n"
	"echo \"DEFLATED $(mem)\"\n";

Test(sandbox, every_device_works_under_the_default_filter)
{
	guest_cpio("g", vm_guest);
	put("net-guest.sh",
	    "mount -t ext4 /dev/vda /mnt && dd if=/dev/urandom of=/mnt/f bs=1048576 count=8 2>/dev/null && "
	    "echo \"DISK $(sha256sum < /mnt/f | cut -d' ' -f1)\" && umount /mnt\n"
	    "ip link set eth0 up && ip addr add \"$G/24\" dev eth0 && ping -c 2 \"$H\" >/dev/null && echo PING-OK\n"
	    "dd if=/dev/urandom of=/tmp/n bs=1048576 count=8 2>/dev/null\n"
	    "echo \"SENT $(sha256sum < /tmp/n | cut -d' ' -f1)\"\n"
	    "nc \"$H\" 7001 < /tmp/n; echo \"NC-OUT $?\"\n"
	    "echo \"RECEIVED $(nc \"$H\" 7002 | sha256sum | cut -d' ' -f1)\"\n"
	    "echo \"HWRNG $(head -c 65536 /dev/hwrng | wc -c)\"\n", 0644);
	struct sys_result r = host_script("all.sh",
		"tap cvsb 10.215\n"
		"truncate -s 64M \"$S/disk.img\" && mkfs.ext4 -q -F \"$S/disk.img\" || exit 1\n"
		"tcp_peer 7001 7002 8388608\n"
		"# 1: cvisor run (default seccomp: kill): the agent over vsock, disk, net, balloon, rng\n"
		"vm \"$B/cvisor\" run --memory 512 --disk \"$S/disk.img\" --net \"tap=$T\" "
		"--balloon=stats=1 -e \"H=$H\" -e \"G=$G\" -- sh -c \"$(cat \"$W/net-guest.sh\")\"\n"
		"echo \"RUN $?\"\n"
		"wait $peer; echo \"PEER $?\"\n"
		"echo \"HOST-IN $(cat \"$S/in\")\"\n"
		"echo \"HOST-OUT $(cat \"$S/out\")\"\n"
		"# 2: cvisor-vmm with the control API, vsock, balloon, disk, rng, net\n"
		"vm \"$B/cvisor-vmm\" --kernel \"$K/vmlinux\" --initrd \"$B/initramfs.cpio\" "
		"--initrd \"$W/g.cpio\" --memory 512 --disk \"$S/disk.img\" --net \"tap=$T\" --rng "
		"--vsock \"cid=3,uds=$S/v.sock\" --balloon=stats=1 --api-sock \"$S/api.sock\" "
		"--console \"file:$S/console\" --cmdline \"console=ttyS0 quiet -- /bin/sh /t.sh\" &\n"
		"vmm=$!\n"
		"/usr/bin/python3 \"$VSOCK_PY\" echo \"$S/v.sock\" 1234 1048576; echo \"ECHO $?\"\n"
		"await \"$S/console\" READY\n"
		"# the guest waits for the balloon: look at the VMM's threads while it runs\n"
		"/usr/bin/python3 \"$PEER\" api \"$S/api.sock\" GET / > /dev/null\n"
		"# $vmm is the shell running the vm function; the VMM is the one serving our socket\n"
		"for p in $(pgrep -x cvisor-vmm); do\n"
		"  tr '\\0' ' ' < /proc/$p/cmdline | grep -q \"$S/api.sock\" && vpid=$p\n"
		"done\n"
		"threads ${vpid:-none}\n"
		"/usr/bin/python3 \"$PEER\" balloon \"$S/api.sock\" 64 \"$S/console\"\n"
		"wait $vmm; echo \"VMM $?\"\n"
		"echo \"IMAGE $(head -c 2097152 \"$S/disk.img\" | sha256sum | cut -d' ' -f1)\"\n"
		"cat \"$S/console\"\n");

	/* 1 */
	expect(&r, "RUN", "0", "cvisor run under the default filter");
	char a[128], b[160];
	field(&r, "DISK", a);
	cr_assert_eq(strlen(a), 64, "%s", r.out);
	cr_assert(strstr(r.out, "\nPING-OK\n"), "the guest pings the host:\n%s", r.out);
	expect(&r, "NC-OUT", "0", "guest -> host transfer");
	expect(&r, "PEER", "0", "host-side peer");
	field(&r, "SENT", a);
	snprintf(b, sizeof(b), "8388608 %s", a);
	expect(&r, "HOST-IN", b, "8 MiB guest -> host arrive intact");
	field(&r, "RECEIVED", a);
	snprintf(b, sizeof(b), "8388608 %s", a);
	expect(&r, "HOST-OUT", b, "8 MiB host -> guest arrive intact");
	expect(&r, "HWRNG", "65536", "virtio-rng");

	/* 2 */
	expect(&r, "VMM", "0", "cvisor-vmm under the default filter");
	cr_assert(strstr(r.out, "MATCH") && !strstr(r.out, "MISMATCH"), "vsock echo:\n%s", r.out);
	expect(&r, "ECHO", "0", "vsock echo");
	expect(&r, "GUEST-ECHO", "0", "vsock echo in the guest");
	expect(&r, "ROOT-STATUS", "200", "GET /");
	expect(&r, "PATCH-INFLATE", "204", "balloon inflate");
	expect(&r, "ACTUAL-MIB", "64", "the driver gave 64 MiB back");
	expect(&r, "GUEST-SAW", "yes", "the guest saw its memory shrink");
	expect(&r, "PATCH-DEFLATE", "204", "balloon deflate");
	field(&r, "INFLATED", a);
	field(&r, "DEFLATED", a);
	expect(&r, "RNG", "4096", "virtio-rng");
	field(&r, "DISK-WROTE", a);
	expect(&r, "IMAGE", a, "the guest's disk write is in the image");
	int n = expect_all_threads_filtered(&r, true);
	cr_assert_geq(n, 4, "%s", r.out);
	expect(&r, "CAPEFF", "0000000000000000", "no effective capabilities after setup");
	expect(&r, "CAPPRM", "0000000000000000", "no permitted capabilities after setup");
	expect(&r, "NONEWPRIVS", "1", "no_new_privs");
	sys_free(&r);
}

/* ------------------------------------------------------------------------------------------ */

Test(sandbox, jailer_runs_the_vmm_unprivileged_in_its_own_namespaces_and_cgroup)
{
	guest_cpio("g", vm_guest);
	struct sys_result r = host_script("jail.sh",
		"id=sbx$$; U=4321\n"
		"J=\"$S/jails\"; R=\"$J/cvisor-vmm/$id/root\"\n"
		"truncate -s 16M \"$S/disk.img\" && chown $U:$U \"$S/disk.img\" || exit 1\n"
		"vm \"$B/cvisor-jailer\" --id \"$id\" --exec-file \"$B/cvisor-vmm\" --uid $U --gid $U "
		"--chroot-base-dir \"$J\" --bind \"$K/vmlinux:/vmlinux:ro\" "
		"--bind \"$B/initramfs.cpio:/initramfs.cpio:ro\" --bind \"$W/g.cpio:/g.cpio:ro\" "
		"--bind \"$S/disk.img:/disk.img\" --cgroup memory.max=1073741824 --cgroup pids.max=64 "
		"-- --kernel /vmlinux --initrd /initramfs.cpio --initrd /g.cpio --memory 512 "
		"--disk /disk.img --rng --vsock cid=3,uds=/v.sock --balloon=stats=1 "
		"--api-sock /api.sock --console file:/console "
		"--cmdline \"console=ttyS0 quiet -- /bin/sh /t.sh\" &\n"
		"jail=$!\n"
		"i=0; while [ ! -s \"$R/cvisor-vmm.pid\" ] && [ $i -lt 600 ]; do i=$((i + 1)); sleep 0.1; done\n"
		"pid=$(cat \"$R/cvisor-vmm.pid\")\n"
		"/usr/bin/python3 \"$VSOCK_PY\" echo \"$R/v.sock\" 1234 1048576; echo \"ECHO $?\"\n"
		"await \"$R/console\" READY\n"
		"/usr/bin/python3 \"$PEER\" api \"$R/api.sock\" GET / > /dev/null\n"
		"# the guest waits for the balloon: look at the VMM while it runs\n"
		"echo \"UID $(awk '/^Uid:/ {print $2, $3}' /proc/$pid/status)\"\n"
		"echo \"GID $(awk '/^Gid:/ {print $2, $3}' /proc/$pid/status)\"\n"
		"echo \"NSPID $(awk '/^NSpid:/ {print $NF}' /proc/$pid/status)\"\n"
		"for ns in pid mnt ipc uts net; do\n"
		"  [ \"$(readlink /proc/$pid/ns/$ns)\" = \"$(readlink /proc/self/ns/$ns)\" ] && s=same || s=new\n"
		"  echo \"NS-$ns $s\"\n"
		"done\n"
		"echo \"ROOT $(ls -A /proc/$pid/root | sort | tr '\\n' ' ')\"\n"
		"echo \"DEV $(ls -A /proc/$pid/root/dev | sort | tr '\\n' ' ')\"\n"
		"echo \"HOSTNAME $(nsenter -t $pid -u hostname)\"\n"
		"cg=$(awk -F: '$1 == \"0\" {print $3}' /proc/$pid/cgroup)\n"
		"echo \"CGROUP $cg\"\n"
		"echo \"MEMMAX $(cat /sys/fs/cgroup$cg/memory.max)\"\n"
		"echo \"PIDSMAX $(cat /sys/fs/cgroup$cg/pids.max)\"\n"
		"threads $pid\n"
		"/usr/bin/python3 \"$PEER\" balloon \"$R/api.sock\" 64 \"$R/console\"\n"
		"wait $jail; echo \"JAILER $?\"\n"
		"[ -d \"/sys/fs/cgroup$cg\" ] && echo \"CGROUP-LEFT yes\" || echo \"CGROUP-LEFT no\"\n"
		"echo \"IMAGE $(head -c 2097152 \"$S/disk.img\" | sha256sum | cut -d' ' -f1)\"\n"
		"cat \"$R/console\"\n");
	expect(&r, "JAILER", "0", "the jailed VMM's exit status comes back through the jailer");
	expect(&r, "UID", "4321 4321", "real and effective uid of the VMM");
	expect(&r, "GID", "4321 4321", "real and effective gid of the VMM");
	expect(&r, "NSPID", "1", "the VMM is PID 1 of its own PID namespace");
	expect(&r, "NS-pid", "new", "PID namespace");
	expect(&r, "NS-mnt", "new", "mount namespace");
	expect(&r, "NS-ipc", "new", "IPC namespace");
	expect(&r, "NS-uts", "new", "UTS namespace");
	expect(&r, "NS-net", "same", "no --netns: the host's network namespace");
	/* What was put in (and what the VMM created), none of the host's own directories. */
	char root[1024];
	field(&r, "ROOT", root);
	static const char *const present[] = { "cvisor-vmm", "cvisor-vmm.pid", "dev", "vmlinux",
					       "initramfs.cpio", "g.cpio", "disk.img", "api.sock",
					       "v.sock", "console" };
	static const char *const absent[] = { "etc", "proc", "sys", "tmp", "home", "root", "bin",
					      "sbin", "var", "run", "boot", "srv" };
	char padded[1100];
	snprintf(padded, sizeof(padded), " %s ", root);
	for (size_t i = 0; i < sizeof(present) / sizeof(present[0]); i++) {
		char w[64];
		snprintf(w, sizeof(w), " %s ", present[i]);
		cr_assert(strstr(padded, w), "'%s' missing from the jail's root: %s", present[i], root);
	}
	for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
		char w[64];
		snprintf(w, sizeof(w), " %s ", absent[i]);
		cr_assert(!strstr(padded, w), "the host's '%s' is in the jail's root: %s", absent[i],
			  root);
	}
	expect(&r, "DEV", "kvm net null urandom", "the jail's /dev");
	char host[80], cg[256];
	field(&r, "HOSTNAME", host);
	cr_assert_eq(strncmp(host, "sbx", 3), 0, "the jail's hostname is its id: %s", host);
	field(&r, "CGROUP", cg);
	char want[128];
	snprintf(want, sizeof(want), "/cvisor/%s", host);
	cr_assert(strlen(cg) >= strlen(want) && strcmp(cg + strlen(cg) - strlen(want), want) == 0,
		  "the VMM's cgroup '%s' ends in '%s'", cg, want);
	expect(&r, "MEMMAX", "1073741824", "memory.max of the jail's cgroup");
	expect(&r, "PIDSMAX", "64", "pids.max of the jail's cgroup");
	expect(&r, "CGROUP-LEFT", "no", "the jailer removes the cgroup when the VMM is gone");
	/* The VM worked from inside the jail. */
	cr_assert(strstr(r.out, "MATCH") && !strstr(r.out, "MISMATCH"), "vsock echo:\n%s", r.out);
	expect(&r, "ECHO", "0", "vsock echo through the jail's socket");
	expect(&r, "PATCH-INFLATE", "204", "balloon inflate through the jail's API socket");
	expect(&r, "ACTUAL-MIB", "64", "the driver gave 64 MiB back");
	expect(&r, "GUEST-SAW", "yes", "the guest saw its memory shrink");
	char a[128];
	field(&r, "DISK-WROTE", a);
	expect(&r, "IMAGE", a, "the guest's disk write is in the image bound into the jail");
	expect_all_threads_filtered(&r, true);
	expect(&r, "CAPEFF", "0000000000000000", "no capabilities in the jail");
	expect(&r, "NONEWPRIVS", "1", "no_new_privs in the jail");
	sys_free(&r);
}
