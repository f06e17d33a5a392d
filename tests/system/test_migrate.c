/*
 * Live migration of a real Linux guest between two "hosts": two network namespaces joined by
 * a veth pair, where guests boot (the session's emulated host if there is one). The source
 * cvisor-vmm runs in one namespace, `cvisor-vmm --incoming` in the other; the migration goes
 * over the veth link, driven through the source's control API. In the guest, memsweep
 * rewrites 32 MiB continuously, checking every page and a checksum of the whole region on
 * every sweep, so memory a migration lost or delivered stale shows as "memsweep CORRUPT".
 *
 * Both VMs have virtio-rng and a read-write virtio-blk disk (the same image: shared storage),
 * so device state crosses as well and the image lock must move from one VMM to the other.
 *
 * Checked: the guest finishes on the destination with "memsweep ok", its sweep count goes on
 * from where the source stopped (no restart), the destination powers off normally (0), the
 * source ends with status 83 and reports the figures. Faults: the link goes down mid-migration
 * (no reset: the source times out), then the destination is killed mid-migration (reset);
 * each time the source reports "failed" with a reason and its guest runs on unharmed; then a
 * third migration of the same guest succeeds.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <string.h>

#include "script.h"

const struct script_suite script_suite = { .tag = "migtest" };

TestSuite(migrate, .fini = remove_work, .timeout = 900);

/*
 * The host side, common part: two namespaces A (source) and B (destination) joined by a veth
 * pair, helpers, cleanup. Sockets and consoles live in the VMM host's /dev/shm. Prints KEY
 * value lines; every wait is bounded.
 */
static const char host_common[] =
	"set -u\n"
	"export PATH=$PATH:/usr/sbin:/sbin\n"
	"S=$(mktemp -d /dev/shm/cvisor-migtest.XXXXXX) || exit 99\n"
	"NA=cvmiga$$ NB=cvmigb$$ LA=cvma$$ LB=cvmb$$\n"
	"cleanup() { kill -9 $(jobs -p) 2>/dev/null; sleep 1; ip netns del $NA 2>/dev/null;"
	" ip netns del $NB 2>/dev/null; rm -rf \"$S\"; }\n"
	"trap cleanup EXIT\n"
	"ip netns add $NA && ip netns add $NB || { echo NETNS-FAILED; exit 1; }\n"
	"ip link add $LA netns $NA type veth peer name $LB netns $NB || { echo VETH-FAILED; exit 1; }\n"
	"ip -n $NA addr add 10.231.0.1/24 dev $LA; ip -n $NB addr add 10.231.0.2/24 dev $LB\n"
	"for n in $NA $NB; do ip -n $n link set lo up; done\n"
	"ip -n $NA link set $LA up; ip -n $NB link set $LB up\n"
	"api() {   # api SOCK METHOD PATH [BODY]: prints the status code, the body goes to $S/resp\n"
	"  rm -f \"$S/resp\"\n"
	"  if [ -n \"${4:-}\" ]; then\n"
	"    curl -s -m 30 -o \"$S/resp\" -w '%{http_code}' --unix-socket \"$1\" -X \"$2\""
	" \"http://localhost$3\" -d \"$4\"\n"
	"  else\n"
	"    curl -s -m 30 -o \"$S/resp\" -w '%{http_code}' --unix-socket \"$1\" -X \"$2\""
	" \"http://localhost$3\"\n"
	"  fi\n"
	"}\n"
	"jfield() { sed -n \"s/.*\\\"$1\\\": *\\\"\\{0,1\\}\\([^,\\\"}]*\\).*/\\1/p\" \"$2\" | head -n 1; }\n"
	"waitfor() {   # waitfor FILE PATTERN [PID]: up to ~300 s, or until PID is gone\n"
	"  w=0; while ! grep -q \"$2\" \"$1\" 2>/dev/null; do\n"
	"    w=$((w + 1)); [ $w -ge 600 ] && return 1\n"
	"    [ -n \"${3:-}\" ] && ! kill -0 \"$3\" 2>/dev/null && return 1\n"
	"    sleep 0.5\n"
	"  done\n"
	"}\n"
	"lastsweep() { grep -o 'memsweep sweep [0-9]*' \"$1\" | tail -n 1 | awk '{print $3}'; }\n"
	"firstsweep() { grep -o 'memsweep sweep [0-9]*' \"$1\" | head -n 1 | awk '{print $3}'; }\n"
	"source_vm() {   # the source VMM in namespace A, guest running memsweep for $1 s\n"
	"  ip netns exec $NA \"$B/cvisor-vmm\" --kernel \"$K/vmlinux\" --initrd \"$B/initramfs.cpio\""
	" --initrd \"$W/g.cpio\" --memory 256 --rng --disk \"$W/disk.img\" --api-sock \"$S/a.sock\" --console \"file:$S/c0\""
	" --cmdline \"console=ttyS0 quiet -- /bin/sh /t.sh $1\" 2>\"$S/ea\" &\n"
	"  src=$!\n"
	"}\n"
	"dest_vm() {   # dest_vm N: `cvisor-vmm --incoming` in namespace B, console $S/cN\n"
	"  ip netns exec $NB \"$B/cvisor-vmm\" --incoming tcp:10.231.0.2:7000 --rng"
	" --disk \"$W/disk.img\""
	" --api-sock \"$S/b$1.sock\" --console \"file:$S/c$1\" 2>\"$S/eb$1\" &\n"
	"  dst=$!\n"
	"  waitfor \"$S/eb$1\" 'waiting on' $dst || echo \"DEST$1-NOT-LISTENING\"\n"
	"}\n"
	"migrate() {   # migrate BODY: PUT /cvisor/migrate on the source\n"
	"  api \"$S/a.sock\" PUT /cvisor/migrate \"$1\"\n"
	"}\n"
	"outcome() {   # waits until the source's migration left its running states; prints it\n"
	"  w=0; while :; do\n"
	"    c=$(api \"$S/a.sock\" GET /cvisor/migrate); st=$(jfield state \"$S/resp\")\n"
	"    if [ \"$c\" != 200 ]; then echo gone; return; fi\n"
	"    case $st in setup|active|stop-copy) ;; *) echo \"$st\"; return ;; esac\n"
	"    w=$((w + 1)); [ $w -ge 600 ] && { echo timeout; return; }\n"
	"    sleep 0.5\n"
	"  done\n"
	"}\n";

/* memsweep over 32 MiB for SECONDS of guest time, then the VM powers off. */
static const char guest_script[] =
	"#!/bin/sh\n"
	"/memsweep 32 \"$1\" 500\n"
	"echo \"GUEST-EXIT $?\"\n";

static void prepare(void)
{
	/* A disk both sides open (shared storage): its state and its lock move too. */
	host_ok("truncate -s 16M '%s/disk.img'", work());
	host_ok("mkdir -p '%s/g.d' && cp '%s/tests/memsweep' '%s/g.d/memsweep'", work(), sys_build(),
		work());
	put("g.d/t.sh", guest_script, 0755);
	host_ok("cd '%s/g.d' && printf 't.sh\\nmemsweep\\n' | cpio -o -H newc --quiet -R 0:0 > "
		"'%s/g.cpio'", work(), work());
}

static struct sys_result run_host(const char *name, const char *script)
{
	char full[16384];
	int n = snprintf(full, sizeof(full), "%s%s", host_common, script);
	cr_assert(n > 0 && (size_t)n < sizeof(full), "host script too long");
	put(name, full, 0755);
	return sys_guest_host("B='%s' K='%s' W='%s' sh '%s/%s'", sys_build(), sys_kernel_dir(),
			      work(), work(), name);
}

/*
 * The guest sweeps for 60 s of its own time, which must outlast boot and the whole migration
 * (15 s for this 256 MiB guest in a one-vCPU emulated host) with room for sweeps on the
 * destination.
 */
static const char migrate_script[] =
	"dest_vm 1\n"
	"source_vm 60\n"
	"waitfor \"$S/c0\" 'memsweep sweep 4' $src || { echo BOOT-TIMEOUT; cat \"$S/c0\" \"$S/ea\"; exit 1; }\n"
	"echo \"PUT $(migrate '{\"destination\": \"tcp:10.231.0.2:7000\", \"downtime_ms\": 50}')\"\n"
	"echo \"OUTCOME $(outcome)\"\n"
	"timeout 120 sh -c \"while kill -0 $src 2>/dev/null; do sleep 0.2; done\"\n"
	"wait $src; echo \"SRC-STATUS $?\"\n"
	"echo \"SRC-LAST $(lastsweep \"$S/c0\")\"\n"
	"grep -q CORRUPT \"$S/c0\" && echo SRC-CORRUPT 1\n"
	"j=$(grep -o '{\"state\": \"completed\".*}' \"$S/ea\")\n"
	"echo \"$j\" > \"$S/j\"\n"
	"for f in total_ms downtime_ms rounds bytes_sent switch_reason; do echo \"FIG-$f $(jfield $f \"$S/j\")\"; done\n"
	"waitfor \"$S/c1\" 'GUEST-EXIT' $dst\n"
	"wait $dst; echo \"DST-STATUS $?\"\n"
	"echo \"DST-FIRST $(firstsweep \"$S/c1\")\"\n"
	"grep -o 'memsweep ok [0-9]*' \"$S/c1\" | sed 's/memsweep ok/DST-OK/'\n"
	"grep -o 'GUEST-EXIT [0-9]*' \"$S/c1\"\n"
	"grep -q CORRUPT \"$S/c1\" && grep CORRUPT \"$S/c1\" | sed 's/^/DST-CORRUPT /'\n"
	"grep -q 'memsweep start' \"$S/c1\" && echo DST-RESTARTED 1\n"
	"sed 's/^/SRC-ERR /' \"$S/ea\" | head -n 5\n"
	"sed 's/^/DST-ERR /' \"$S/eb1\" | head -n 5\n"
	"tail -n 5 \"$S/c1\" | sed 's/^/DST-CONSOLE /'\n";

Test(migrate, guest_moves_to_the_other_namespace_and_verifies_its_memory)
{
	prepare();
	struct sys_result r = run_host("migrate.sh", migrate_script);
	expect_num(&r, "PUT", "==", 204, "PUT /cvisor/migrate");
	char s[1024];
	field(&r, "OUTCOME", s);
	/* The source exits once the destination runs the guest: the API may already be gone. */
	cr_assert(strcmp(s, "completed") == 0 || strcmp(s, "gone") == 0, "outcome %s\n%s\n%s", s,
		  r.out, r.err);
	expect_num(&r, "SRC-STATUS", "==", 83, "the source ends with 'migrated'");
	cr_assert(!field_opt(&r, "SRC-CORRUPT", s, sizeof(s)), "%s", r.out);
	cr_assert(!field_opt(&r, "DST-CORRUPT", s, sizeof(s)), "the guest found bad memory: %s", s);
	cr_assert(!field_opt(&r, "DST-RESTARTED", s, sizeof(s)), "memsweep started over\n%s", r.out);
	expect_num(&r, "DST-STATUS", "==", 0, "the destination's guest powers off normally");
	expect_num(&r, "GUEST-EXIT", "==", 0, "memsweep verified every sweep to the end");
	long long last = num(&r, "SRC-LAST"), first = num(&r, "DST-FIRST");
	cr_assert(first >= last && first <= last + 50,
		  "the sweeps continue on the destination: source last %lld, destination first "
		  "%lld", last, first);
	expect_num(&r, "DST-OK", ">", first, "sweeps went on");
	char total[64] = "?", down[64] = "?", rounds[64] = "?", bytes[64] = "?", why[64] = "?";
	field_opt(&r, "FIG-total_ms", total, sizeof(total));
	field_opt(&r, "FIG-downtime_ms", down, sizeof(down));
	field_opt(&r, "FIG-rounds", rounds, sizeof(rounds));
	field_opt(&r, "FIG-bytes_sent", bytes, sizeof(bytes));
	field_opt(&r, "FIG-switch_reason", why, sizeof(why));
	cr_assert(strcmp(down, "?") != 0 && strcmp(down, "") != 0, "figures line:\n%s", r.out);
	cr_log_info("256 MiB guest sweeping 32 MiB, over veth between namespaces: total %s ms, "
		    "downtime %s ms, %s rounds (%s), %s bytes", total, down, rounds, why, bytes);
	sys_free(&r);
}

static const char faults_script[] =
	"source_vm 90\n"
	"waitfor \"$S/c0\" 'memsweep sweep 4' $src || { echo BOOT-TIMEOUT; cat \"$S/c0\" \"$S/ea\"; exit 1; }\n"
	/* 1: the link goes down mid-migration (no reset: only a timeout tells). */
	"dest_vm 1\n"
	"echo \"PUT1 $(migrate '{\"destination\": \"tcp:10.231.0.2:7000\", \"max_bandwidth\": 4000000}')\"\n"
	"sleep 2; ip -n $NA link set $LA down\n"
	"echo \"OUTCOME1 $(outcome)\"\n"
	"api \"$S/a.sock\" GET /cvisor/migrate >/dev/null; echo \"ERROR1 $(jfield error \"$S/resp\")\"\n"
	"ip -n $NA link set $LA up\n"
	"timeout 60 sh -c \"while kill -0 $dst 2>/dev/null; do sleep 0.5; done\"\n"
	"kill -0 $dst 2>/dev/null && echo DEST1-STILL-THERE 1\n"
	"wait $dst; echo \"DST1-STATUS $?\"\n"
	"grep -q 'GUEST-EXIT\\|memsweep' \"$S/c1\" 2>/dev/null && echo DEST1-RAN 1\n"
	"a=$(lastsweep \"$S/c0\"); sleep 3; b=$(lastsweep \"$S/c0\")\n"
	"echo \"AFTER1-GROWTH $((b - a))\"\n"
	"echo \"SRC-ALIVE1 $(kill -0 $src 2>/dev/null && echo 1 || echo 0)\"\n"
	/* 2: the destination is killed mid-migration (the connection is reset). */
	"dest_vm 2\n"
	"echo \"PUT2 $(migrate '{\"destination\": \"tcp:10.231.0.2:7000\", \"max_bandwidth\": 4000000}')\"\n"
	"sleep 2; kill -9 $dst; wait $dst 2>/dev/null\n"
	"echo \"OUTCOME2 $(outcome)\"\n"
	"api \"$S/a.sock\" GET /cvisor/migrate >/dev/null; echo \"ERROR2 $(jfield error \"$S/resp\")\"\n"
	"a=$(lastsweep \"$S/c0\"); sleep 3; b=$(lastsweep \"$S/c0\")\n"
	"echo \"AFTER2-GROWTH $((b - a))\"\n"
	/* 3: the same guest then migrates for real. */
	"dest_vm 3\n"
	"echo \"PUT3 $(migrate '{\"destination\": \"tcp:10.231.0.2:7000\"}')\"\n"
	"echo \"OUTCOME3 $(outcome)\"\n"
	"timeout 120 sh -c \"while kill -0 $src 2>/dev/null; do sleep 0.2; done\"\n"
	"wait $src; echo \"SRC-STATUS $?\"\n"
	"grep -q CORRUPT \"$S/c0\" && echo SRC-CORRUPT 1\n"
	"waitfor \"$S/c3\" 'GUEST-EXIT' $dst\n"
	"wait $dst; echo \"DST3-STATUS $?\"\n"
	"grep -o 'GUEST-EXIT [0-9]*' \"$S/c3\"\n"
	"grep -q CORRUPT \"$S/c3\" && grep CORRUPT \"$S/c3\" | sed 's/^/DST-CORRUPT /'\n"
	"sed 's/^/SRC-ERR /' \"$S/ea\" | head -n 8\n";

Test(migrate, cut_connections_leave_the_source_running_then_it_migrates)
{
	prepare();
	struct sys_result r = run_host("faults.sh", faults_script);
	char s[1024];
	expect_num(&r, "PUT1", "==", 204, "PUT /cvisor/migrate");
	field(&r, "OUTCOME1", s);
	cr_assert_str_eq(s, "failed", "link down: %s\n%s", r.out, r.err);
	field(&r, "ERROR1", s);
	cr_assert(s[0], "a failure says why");
	cr_assert(!field_opt(&r, "DEST1-STILL-THERE", s, sizeof(s)),
		  "the destination gives up by itself");
	expect_num(&r, "DST1-STATUS", "!=", 0, "the destination fails, never having run the guest");
	cr_assert(!field_opt(&r, "DEST1-RAN", s, sizeof(s)), "the guest never ran there");
	expect_num(&r, "AFTER1-GROWTH", ">", 0, "the source guest goes on sweeping");
	expect_num(&r, "SRC-ALIVE1", "==", 1, "the source runs");
	expect_num(&r, "PUT2", "==", 204, "PUT /cvisor/migrate again");
	field(&r, "OUTCOME2", s);
	cr_assert_str_eq(s, "failed", "destination killed: %s\n%s", r.out, r.err);
	expect_num(&r, "AFTER2-GROWTH", ">", 0, "the source guest goes on sweeping");
	expect_num(&r, "PUT3", "==", 204, "a third attempt");
	field(&r, "OUTCOME3", s);
	cr_assert(strcmp(s, "completed") == 0 || strcmp(s, "gone") == 0, "%s\n%s", s, r.out);
	expect_num(&r, "SRC-STATUS", "==", 83, "the source ends with 'migrated'");
	cr_assert(!field_opt(&r, "SRC-CORRUPT", s, sizeof(s)), "%s", r.out);
	cr_assert(!field_opt(&r, "DST-CORRUPT", s, sizeof(s)), "the guest found bad memory: %s", s);
	expect_num(&r, "DST3-STATUS", "==", 0, "the guest powers off normally on the destination");
	expect_num(&r, "GUEST-EXIT", "==", 0, "memsweep verified every sweep to the end");
	char e1[1024] = "", e2[1024] = "";
	field_opt(&r, "ERROR1", e1, sizeof(e1));
	field_opt(&r, "ERROR2", e2, sizeof(e2));
	cr_log_info("link down: \"%s\"; destination killed: \"%s\"", e1, e2);
	sys_free(&r);
}
