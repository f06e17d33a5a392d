/*
 * PUT /snapshot/load, diff snapshots and clones with a real Linux guest, where guests boot (the
 * session's emulated host if there is one). One guest boots with dirty page tracking, a NIC, and
 * vsock serving cvisor-agent (cvisor.agent=1024); through the agent it fills two files in its
 * tmpfs (guest RAM) between a full snapshot and a diff snapshot, with an agent session open
 * across the diff. The diff is merged onto a copy of the base memory file (cvisor snapshot
 * merge) and loaded into bare `cvisor-vmm --api-sock` processes, as clones with their own TAP,
 * MAC, vsock socket and CID. What is checked is what the guests and the API show:
 *   - the diff file holds only what changed (far less than guest RAM on disk);
 *   - a clone loaded paused says Paused in GET / and answers nothing until PATCH /vm Resumed,
 *     then `cvisor agent ping` works on its new socket (the session open at the snapshot was
 *     reset, the agent listens again) and the guest's files have exactly the bytes they had at
 *     the diff; a second clone of the same files, resumed at load, runs at the same time;
 *   - a clone keeps the snapshot's MAC in the guest until the guest applies the new one
 *     (`ip link set ... address`), which then shows;
 *   - the base alone restores the earlier state (the second file did not exist yet);
 *   - every clone powers off normally (agent shutdown, exit status 0).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <string.h>

#include "script.h"

const struct script_suite script_suite = { .tag = "snapload" };

TestSuite(snapload, .fini = remove_work, .timeout = 900);

#define expect_val(r, key, want) expect((r), (key), (want), "snapload")

/* Runs inside the VMM host; prints KEY value lines. Sockets and files live in its /dev/shm. */
static const char snapload_script[] =
	"set -u\n"
	"export PATH=$PATH:/usr/sbin:/sbin\n"
	"S=$(mktemp -d /dev/shm/cvisor-snapload.XXXXXX) || exit 99\n"
	"T=cvsl$$\n"
	"cleanup() { kill -9 $(jobs -p) 2>/dev/null; sleep 0.5; for t in 0 1 2 3; do ip link del ${T}$t 2>/dev/null; done; rm -rf \"$S\"; }\n"
	"trap cleanup EXIT\n"
	"for t in 0 1 2 3; do ip tuntap add ${T}$t mode tap || exit 98; done\n"
	"api() {   # api SOCK METHOD PATH [BODY]: prints the status code; the body is in $S/resp\n"
	"  rm -f \"$S/resp\"; curl -s -m 120 -o \"$S/resp\" -w '%{http_code}' --unix-socket \"$1\" -X \"$2\" \"http://localhost$3\" ${4:+-d \"$4\"}\n"
	"}\n"
	"ag() { sock=$1; shift; \"$B/cvisor\" agent --vsock \"$sock\" --timeout 20 \"$@\"; }\n"
	"waitping() {   # waitping SOCK: up to ~120 s\n"
	"  for i in $(seq 600); do ag \"$1\" ping >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1\n"
	"}\n"
	"now() { date +%s%N; }\n"
	"state() { api \"$1\" GET / >/dev/null; sed 's/.*\"state\": *\"\\([^\"]*\\)\".*/\\1/' \"$S/resp\"; }\n"
	"\"$B/cvisor-vmm\" --kernel \"$K/vmlinux\" --initrd \"$B/initramfs.cpio\" --memory 256 "
	"--vsock cid=3,uds=$S/v.sock --net tap=${T}0,mac=02:00:00:00:00:10 --track-dirty-pages "
	"--api-sock \"$S/api.sock\" --console \"file:$S/console\" "
	"--cmdline 'console=ttyS0 quiet cvisor.agent=1024' 2>\"$S/err0\" &\n"
	"vmm=$!\n"
	"waitping \"$S/v.sock\" || { echo BOOT-TIMEOUT; tail -n 20 \"$S/console\" \"$S/err0\"; exit 1; }\n"
	"ag \"$S/v.sock\" exec -- sh -c 'dd if=/dev/urandom of=/dev/shm/a bs=1M count=8 2>/dev/null; sync' || echo EXEC-A-FAILED\n"
	"echo \"PAUSE $(api \"$S/api.sock\" PATCH /vm '{\"state\": \"Paused\"}')\"\n"
	"echo \"FULL $(api \"$S/api.sock\" PUT /snapshot/create \"{\\\"snapshot_type\\\": \\\"Full\\\", \\\"snapshot_path\\\": \\\"$S/base.state\\\", \\\"mem_file_path\\\": \\\"$S/base.mem\\\"}\")\"\n"
	"echo \"RESUME $(api \"$S/api.sock\" PATCH /vm '{\"state\": \"Resumed\"}')\"\n"
	"ag \"$S/v.sock\" exec -- sh -c 'sha256sum < /dev/shm/a' | cut -c1-64 | sed 's/^/SUM-A0 /'\n"
	"ag \"$S/v.sock\" exec -- sh -c 'for i in 0 1 2 3 4 5 6 7; do dd if=/dev/shm/a bs=1M skip=$i count=1 2>/dev/null | md5sum | cut -c1-8; done' | tr '\\n' ' ' | sed 's/^/MB-A0 /'; echo\n"
	"echo \"BASE-MD5-0 $(md5sum < \"$S/base.mem\" | cut -c1-32)\"\n"
	"ag \"$S/v.sock\" exec -- sh -c 'dd if=/dev/urandom of=/dev/shm/a bs=1M count=1 conv=notrunc 2>/dev/null; dd if=/dev/urandom of=/dev/shm/b bs=1M count=3 2>/dev/null; sync'\n"
	"ag \"$S/v.sock\" exec -- sh -c 'sha256sum < /dev/shm/a' | cut -c1-64 | sed 's/^/SUM-A /'\n"
	"ag \"$S/v.sock\" exec -- sh -c 'sha256sum < /dev/shm/b' | cut -c1-64 | sed 's/^/SUM-B /'\n"
	/* A session left open across the diff snapshot. */
	"ag \"$S/v.sock\" exec -- sleep 1000 >/dev/null 2>&1 &\n"
	"sleep 1\n"
	"echo \"PAUSE2 $(api \"$S/api.sock\" PATCH /vm '{\"state\": \"Paused\"}')\"\n"
	"t0=$(now)\n"
	"echo \"DIFF $(api \"$S/api.sock\" PUT /snapshot/create \"{\\\"snapshot_type\\\": \\\"Diff\\\", \\\"snapshot_path\\\": \\\"$S/d1.state\\\", \\\"mem_file_path\\\": \\\"$S/d1.mem\\\"}\")\"\n"
	"echo \"DIFF-MS $(( ($(now) - t0) / 1000000 ))\"\n"
	"cat \"$S/resp\" 2>/dev/null | sed 's/^/DIFF-RESP /'\n"
	"echo \"DIFF-KIB $(du -k \"$S/d1.mem\" | cut -f1)\"\n"
	"echo \"BASE-KIB $(du -k \"$S/base.mem\" | cut -f1)\"\n"
	"kill -9 $vmm; wait $vmm 2>/dev/null\n"
	"cp --sparse=always \"$S/base.mem\" \"$S/merged.mem\"\n"
	"\"$B/cvisor\" snapshot merge \"$S/merged.mem\" \"$S/d1.mem\" 2>\"$S/merge.err\"; echo \"MERGE $?\"\n"
	"echo \"MERGED-MD5-0 $(md5sum < \"$S/merged.mem\" | cut -c1-32)\"\n"
	/* Clone 1: loaded paused, resumed by PATCH /vm. */
	"\"$B/cvisor-vmm\" --api-sock \"$S/c1.sock\" --console \"file:$S/c1.con\" 2>\"$S/c1.err\" &\n"
	"c1=$!\n"
	"for i in $(seq 100); do [ -S \"$S/c1.sock\" ] && break; sleep 0.1; done\n"
	"echo \"C1-STATE0 $(state \"$S/c1.sock\")\"\n"
	"t0=$(now)\n"
	"echo \"C1-LOAD $(api \"$S/c1.sock\" PUT /snapshot/load \"{\\\"snapshot_path\\\": \\\"$S/d1.state\\\", \\\"mem_backend\\\": {\\\"backend_type\\\": \\\"File\\\", \\\"backend_path\\\": \\\"$S/merged.mem\\\"}, \\\"resume_vm\\\": false, \\\"vsock_override\\\": {\\\"uds_path\\\": \\\"$S/c1.v\\\"}, \\\"network_overrides\\\": [{\\\"iface_id\\\": \\\"eth0\\\", \\\"host_dev_name\\\": \\\"${T}1\\\"}], \\\"cvisor\\\": {\\\"vsock_cid\\\": 11, \\\"network_overrides\\\": [{\\\"iface_id\\\": \\\"eth0\\\", \\\"guest_mac\\\": \\\"02:00:00:00:00:11\\\"}]}}\")\"\n"
	"echo \"C1-LOAD-MS $(( ($(now) - t0) / 1000000 ))\"\n"
	"cat \"$S/resp\" 2>/dev/null | sed 's/^/C1-LOAD-RESP /'\n"
	"echo \"C1-STATE1 $(state \"$S/c1.sock\")\"\n"
	"ag \"$S/c1.v\" --timeout 3 ping >/dev/null 2>&1; echo \"C1-PAUSED-PING $?\"\n"
	"echo \"C1-RESUME $(api \"$S/c1.sock\" PATCH /vm '{\"state\": \"Resumed\"}')\"\n"
	"t0=$(now)\n"
	"waitping \"$S/c1.v\" && echo \"C1-PING-MS $(( ($(now) - t0) / 1000000 ))\"\n"
	"echo \"C1-STATE2 $(state \"$S/c1.sock\")\"\n"
	"ag \"$S/c1.v\" exec -- sh -c 'sha256sum < /dev/shm/a' | cut -c1-64 | sed 's/^/C1-SUM-A /'\n"
	"ag \"$S/c1.v\" exec -- sh -c 'sha256sum < /dev/shm/b' | cut -c1-64 | sed 's/^/C1-SUM-B /'\n"
	"ag \"$S/c1.v\" exec -- cat /sys/class/net/eth0/address | sed 's/^/C1-MAC-BEFORE /'\n"
	"ag \"$S/c1.v\" exec -- sh -c 'ip link set dev eth0 address 02:00:00:00:00:11 && cat /sys/class/net/eth0/address' | sed 's/^/C1-MAC-AFTER /'\n"
	/* Clone 2: same files, resumed at load, alongside clone 1. */
	"t0=$(now)\n"
	"\"$B/cvisor-vmm\" --api-sock \"$S/c2.sock\" --console \"file:$S/c2.con\" 2>\"$S/c2.err\" &\n"
	"c2=$!\n"
	"for i in $(seq 100); do [ -S \"$S/c2.sock\" ] && break; sleep 0.1; done\n"
	"echo \"C2-LOAD $(api \"$S/c2.sock\" PUT /snapshot/load \"{\\\"snapshot_path\\\": \\\"$S/d1.state\\\", \\\"mem_file_path\\\": \\\"$S/merged.mem\\\", \\\"resume_vm\\\": true, \\\"vsock_override\\\": {\\\"uds_path\\\": \\\"$S/c2.v\\\"}, \\\"network_overrides\\\": [{\\\"iface_id\\\": \\\"eth0\\\", \\\"host_dev_name\\\": \\\"${T}2\\\"}], \\\"cvisor\\\": {\\\"vsock_cid\\\": 12}}\")\"\n"
	"waitping \"$S/c2.v\" && echo \"C2-START-TO-PING-MS $(( ($(now) - t0) / 1000000 ))\"\n"
	"echo \"C2-STATE $(state \"$S/c2.sock\")\"\n"
	"ag \"$S/c2.v\" exec -- sh -c 'sha256sum < /dev/shm/b' | cut -c1-64 | sed 's/^/C2-SUM-B /'\n"
	"ag \"$S/c1.v\" ping >/dev/null 2>&1; echo \"C1-STILL $?\"\n"
	/* Clone 3: the base alone is the earlier state. */
	"\"$B/cvisor-vmm\" --api-sock \"$S/c3.sock\" --console \"file:$S/c3.con\" 2>\"$S/c3.err\" &\n"
	"c3=$!\n"
	"for i in $(seq 100); do [ -S \"$S/c3.sock\" ] && break; sleep 0.1; done\n"
	"echo \"C3-LOAD $(api \"$S/c3.sock\" PUT /snapshot/load \"{\\\"snapshot_path\\\": \\\"$S/base.state\\\", \\\"mem_file_path\\\": \\\"$S/base.mem\\\", \\\"resume_vm\\\": true, \\\"vsock_override\\\": {\\\"uds_path\\\": \\\"$S/c3.v\\\"}, \\\"network_overrides\\\": [{\\\"iface_id\\\": \\\"eth0\\\", \\\"host_dev_name\\\": \\\"${T}3\\\"}]}\")\"\n"
	"waitping \"$S/c3.v\" || echo C3-NO-PING\n"
	"ag \"$S/c3.v\" exec -- sh -c 'sha256sum < /dev/shm/a' | cut -c1-64 | sed 's/^/C3-SUM-A /'\n"
	"ag \"$S/c3.v\" exec -- sh -c 'for i in 0 1 2 3 4 5 6 7; do dd if=/dev/shm/a bs=1M skip=$i count=1 2>/dev/null | md5sum | cut -c1-8; done' | tr '\\n' ' ' | sed 's/^/MB-C3 /'; echo\n"
	"ag \"$S/c3.v\" exec -- sh -c 'test -e /dev/shm/b; echo $?' | sed 's/^/C3-HAS-B /'\n"
	"echo \"BASE-MD5-1 $(md5sum < \"$S/base.mem\" | cut -c1-32)\"\n"
	"echo \"MERGED-MD5-1 $(md5sum < \"$S/merged.mem\" | cut -c1-32)\"\n"
	"for c in 1 2 3; do ag \"$S/c$c.v\" shutdown >/dev/null 2>&1; done\n"
	"for c in c1 c2 c3; do eval p=\\$$c; for i in $(seq 300); do kill -0 $p 2>/dev/null || break; sleep 0.1; done; kill -9 $p 2>/dev/null; wait $p; echo \"EXIT-$c $?\"; done\n"
	"for c in c1 c2 c3; do sed \"s/^/ERR-$c /\" \"$S/$c.err\"; done\n";

Test(snapload, diff_clones_loaded_through_the_api)
{
	put("host.sh", snapload_script, 0755);
	struct sys_result r = sys_guest_host("B='%s' K='%s' sh '%s/host.sh'", sys_build(),
					     sys_kernel_dir(), work());
	expect_val(&r, "PAUSE", "204");
	expect_val(&r, "FULL", "204");
	expect_val(&r, "RESUME", "204");
	expect_val(&r, "PAUSE2", "204");
	expect_val(&r, "DIFF", "204");
	expect_val(&r, "MERGE", "0");
	/* Each val() has a buffer of its own, valid to the end of the function. */
	const char *a0 = val(&r, "SUM-A0"), *a = val(&r, "SUM-A"), *b = val(&r, "SUM-B");
	cr_assert_eq(strlen(a), 64, "%s\n%s", r.out, r.err);
	cr_assert_eq(strlen(b), 64);
	cr_assert_str_neq(a0, a, "the file changed between the snapshots");
	long long diff_kib = num(&r, "DIFF-KIB");
	cr_assert_lt(diff_kib, 64 * 1024, "the diff holds what changed, not all 256 MiB");
	cr_assert_geq(diff_kib, 4 * 1024, "at least the 4 MiB the guest wrote");

	expect_val(&r, "C1-STATE0", "Not started");
	expect_val(&r, "C1-LOAD", "204");
	expect_val(&r, "C1-STATE1", "Paused");
	cr_assert_neq(num(&r, "C1-PAUSED-PING"), 0, "a paused clone answered");
	expect_val(&r, "C1-RESUME", "204");
	expect_val(&r, "C1-STATE2", "Running");
	expect_val(&r, "C1-SUM-A", a);
	expect_val(&r, "C1-SUM-B", b);
	expect_val(&r, "C1-MAC-BEFORE", "02:00:00:00:00:10");
	expect_val(&r, "C1-MAC-AFTER", "02:00:00:00:00:11");
	expect_val(&r, "C2-LOAD", "204");
	expect_val(&r, "C2-STATE", "Running");
	expect_val(&r, "C2-SUM-B", b);
	expect_val(&r, "C1-STILL", "0");
	expect_val(&r, "C3-LOAD", "204");
	cr_expect_str_eq(val(&r, "C3-SUM-A"), a0, "the clone of the full base reads file a "
			 "differently; MD5 per MiB:\n  original %s\n  clone    %s",
			 val(&r, "MB-A0"), val(&r, "MB-C3"));
	/* MAP_PRIVATE: running clones never write into the files they were loaded from. */
	expect_val(&r, "BASE-MD5-1", val(&r, "BASE-MD5-0"));
	expect_val(&r, "MERGED-MD5-1", val(&r, "MERGED-MD5-0"));
	expect_val(&r, "C3-HAS-B", "1");
	expect_val(&r, "EXIT-c1", "0");
	expect_val(&r, "EXIT-c2", "0");
	expect_val(&r, "EXIT-c3", "0");
	cr_log_info("256 MiB guest: diff snapshot %lld ms, %lld KiB on disk (base %lld KiB); clone "
		    "load request %lld ms, resume to agent answer %lld ms; clone process start to "
		    "agent answer %lld ms", num(&r, "DIFF-MS"), diff_kib, num(&r, "BASE-KIB"),
		    num(&r, "C1-LOAD-MS"), num(&r, "C1-PING-MS"), num(&r, "C2-START-TO-PING-MS"));
	sys_free(&r);
}
