/*
 * Real Linux guests through `cvisor run` and cvisor-vmm: our kernel boots (vmlinux via PVH and
 * bzImage via the 64-bit boot protocol), sees the vCPUs and memory it was given, runs the command
 * and reports its exit status; guest power-off and reboot map to the VMM's documented statuses.
 * Runs wherever /dev/kvm can run Linux: directly, or inside the session's emulated host.
 */
#include <criterion/criterion.h>
#include <elf.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exitcodes.h"
#include "sys.h"

static char *kernel_release(void)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/kernel.release", sys_kernel_dir());
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	static char rel[128];
	cr_assert_not_null(fgets(rel, sizeof(rel), f));
	fclose(f);
	return rel;   /* with its newline, as uname prints it */
}

#define RUN "'%s/cvisor' run"

Test(guest, uname_r_prints_our_kernel_release, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " -- uname -r", sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, kernel_release());
	sys_free(&r);
}

Test(guest, uname_a_is_the_demo, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " -- uname -a", sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	char want[256];
	snprintf(want, sizeof(want), "Linux cvisor %.*s", (int)strcspn(kernel_release(), "\n"),
		 kernel_release());
	cr_assert(strncmp(r.out, want, strlen(want)) == 0, "got: %s", r.out);
	cr_assert_eq(sys_lines(r.out), 1, "only the command's output: %s", r.out);
	sys_free(&r);
}

Test(guest, two_cpus_are_seen, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " --cpus 2 -- sh -c 'nproc; grep -c ^processor "
					     "/proc/cpuinfo'", sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, "2\n2\n");
	sys_free(&r);
}

Test(guest, memory_1024_is_seen, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " --memory 1024 -- grep MemTotal /proc/meminfo",
					     sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	unsigned long kib = 0;
	cr_assert_eq(sscanf(r.out, "MemTotal: %lu kB", &kib), 1, "%s", r.out);
	/* The kernel keeps its own image and reserved areas out of MemTotal: ~1 GiB minus a bit. */
	cr_assert(kib > 950UL * 1024 && kib <= 1024UL * 1024, "MemTotal %lu kB", kib);
	sys_free(&r);
}

Test(guest, exit_status_is_the_commands, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " -- sh -c 'echo out; echo err >&2; exit 7'",
					     sys_build());
	cr_assert_eq(r.status, 7, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, "out\n");
	cr_assert_str_eq(r.err, "err\n");
	sys_free(&r);
	r = sys_guest_host(RUN " -- no-such-command", sys_build());
	cr_assert_eq(r.status, CV_EXIT_NOT_FOUND, "status %d: %s", r.status, r.err);
	cr_assert(strstr(r.err, "no-such-command"), "%s", r.err);
	sys_free(&r);
}

/* Settings cvisor-vmm refuses come back as its status with its one line, nothing more. */
Test(guest, run_passes_on_vmm_setup_errors, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " --memory 0 -- true", sys_build());
	cr_assert_eq(r.status, CV_EXIT_USAGE, "status %d: %s", r.status, r.err);
	cr_assert_eq(sys_lines(r.err), 1, "%s", r.err);
	cr_assert(strstr(r.err, "--memory '0'"), "%s", r.err);
	sys_free(&r);
	r = sys_guest_host(RUN " --kernel /nonexistent -- true", sys_build());
	cr_assert_eq(r.status, CV_EXIT_NOINPUT, "status %d: %s", r.status, r.err);
	cr_assert_eq(sys_lines(r.err), 1, "%s", r.err);
	sys_free(&r);
}

Test(guest, output_is_byte_exact_and_env_workdir_apply, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " -e GREETING=hi -w /proc -- sh -c "
					     "'printf \"%%s|a\\nb\\tc\" \"$GREETING\"; pwd >&2'",
					     sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, "hi|a\nb\tc");
	cr_assert_str_eq(r.err, "/proc\n");
	sys_free(&r);
}

/* The command's stdin is ours with -i, and what it writes comes back byte for byte. */
Test(guest, stdin_is_forwarded_and_output_is_binary_safe, .timeout = 300)
{
	char dir[] = "/tmp/cvisor-test-stdin-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	struct sys_result r = sys_host("head -c 3000000 /dev/urandom > %s/in", dir);
	cr_assert_eq(r.status, 0);
	sys_free(&r);
	r = sys_guest_host(RUN " -i -- sh -c 'cat; sha256sum >&2 < /dev/null; echo done >&2' "
			   "< %s/in > %s/out", sys_build(), dir, dir);
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert(strstr(r.err, "done\n"), "%s", r.err);
	sys_free(&r);
	r = sys_host("cmp %s/in %s/out && echo same; rm -rf %s", dir, dir, dir);
	cr_assert_str_eq(r.out, "same\n", "%s %s", r.out, r.err);
	sys_free(&r);
	/* Without -i the command reads nothing, at once. */
	r = sys_guest_host("echo data | " RUN " -- sh -c 'wc -c'", sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, "0\n");
	sys_free(&r);
}

/* Ctrl-C (SIGINT) to `cvisor run` reaches the command in the guest, which decides what to do. */
Test(guest, sigint_is_forwarded_to_the_command, .timeout = 300)
{
	struct sys_result r = sys_guest_host(
		"out=$(mktemp /dev/shm/cvisor-sigint.XXXXXX); "
		RUN " -- sh -c 'trap \"echo got INT; exit 42\" INT; echo ready; "
		"while :; do sleep 0.1; done' > $out 2>&1 & p=$!; "
		"for i in $(seq 300); do grep -q ready $out && break; sleep 0.1; done; "
		"kill -INT $p; wait $p; echo status=$?; cat $out; rm -f $out", sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, "status=42\nready\ngot INT\n", "%s", r.err);
	sys_free(&r);
}

/* -i on a terminal gives the command a terminal of the same size: an interactive shell works. */
Test(guest, interactive_shell_gets_a_terminal, .timeout = 300)
{
	struct sys_result r = sys_guest_host(
		"(sleep 1; echo 'tty; stty size; echo \"term=$TERM\"; exit 3') | "
		"TERM=vt100 script -qfec 'stty rows 33 cols 101; " RUN " -i -- sh' /dev/null; "
		"echo status=$?", sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert(strstr(r.out, "/dev/pts/"), "%s", r.out);
	cr_assert(strstr(r.out, "33 101"), "%s", r.out);
	cr_assert(strstr(r.out, "term=vt100"), "%s", r.out);
	cr_assert(strstr(r.out, "status=3"), "%s", r.out);
	sys_free(&r);
}

/* --no-agent: the command runs from cvisor-init, its output read off the serial console. */
Test(guest, no_agent_runs_through_the_console, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " --no-agent -- sh -c 'echo out; echo err >&2; exit 3'",
					     sys_build());
	cr_assert_eq(r.status, 3, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, "out\nerr\n");
	sys_free(&r);
}

/* After the command, the guest is powered off cleanly: a write nobody synced is on the disk. */
Test(guest, unsynced_disk_writes_survive_the_run, .timeout = 300)
{
	char dir[] = "/tmp/cvisor-test-disk-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	struct sys_result r = sys_host("truncate -s 32M %s/d.img && mkfs.ext4 -qF %s/d.img", dir, dir);
	cr_assert_eq(r.status, 0, "%s", r.err);
	sys_free(&r);
	r = sys_guest_host(RUN " --disk %s/d.img -- sh -c 'mkdir -p /mnt && mount /dev/vda /mnt && "
			   "echo persisted > /mnt/f'", sys_build(), dir);
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	sys_free(&r);
	r = sys_host("debugfs -R 'cat /f' %s/d.img 2>/dev/null; rm -rf %s", dir, dir);
	cr_assert_str_eq(r.out, "persisted\n", "%s", r.err);
	sys_free(&r);
}

Test(guest, bzimage_boots_through_the_64bit_protocol, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " --kernel '%s/bzImage' -- uname -r", sys_build(),
					     sys_kernel_dir());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, kernel_release());
	sys_free(&r);
}

Test(guest, vmlinux_boots_through_pvh, .timeout = 300)
{
	struct sys_result r = sys_guest_host(RUN " --kernel '%s/vmlinux' -- uname -r", sys_build(),
					     sys_kernel_dir());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, kernel_release());
	sys_free(&r);
}

/*
 * A copy of our vmlinux with its Xen PVH note renamed, so the loader must fall back to the
 * 64-bit boot protocol at the ELF entry point (the Firecracker-style vmlinux boot).
 */
static char *vmlinux_without_pvh_note(void)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/vmlinux", sys_kernel_dir());
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	rewind(f);
	unsigned char *img = malloc((size_t)len);
	cr_assert_eq(fread(img, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
	int patched = 0;
	for (int i = 0; i < eh->e_phnum; i++) {
		Elf64_Phdr *ph = (Elf64_Phdr *)(img + eh->e_phoff + (size_t)i * sizeof(*ph));
		if (ph->p_type != PT_NOTE)
			continue;
		for (size_t off = 0; off + 12 <= ph->p_filesz;) {
			Elf64_Nhdr *nh = (Elf64_Nhdr *)(img + ph->p_offset + off);
			char *name = (char *)(nh + 1);
			if (nh->n_type == 18 && nh->n_namesz == 4 && memcmp(name, "Xen", 4) == 0) {
				memcpy(name, "Nop", 4);
				patched++;
			}
			off += 12 + ((nh->n_namesz + 3) & ~3u) + ((nh->n_descsz + 3) & ~3u);
		}
	}
	cr_assert_eq(patched, 1, "our vmlinux has exactly one PVH note");
	static char out[] = "/tmp/cvisor-test-vmlinux-nopvh-XXXXXX";
	int fd = mkstemp(out);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, img, (size_t)len), len);
	close(fd);
	free(img);
	return out;
}

Test(guest, vmlinux_without_pvh_boots_through_the_64bit_protocol, .timeout = 300)
{
	char *k = vmlinux_without_pvh_note();
	struct sys_result r = sys_guest_host(RUN " --kernel '%s' -- uname -r", sys_build(), k);
	unlink(k);
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, kernel_release());
	sys_free(&r);
}

/* cvisor-vmm on its own: guest power-off exits 0, guest reboot exits 80. */
#define VMM_RUN "CVISOR_KVM=direct '%s/cvisor-vmm' --kernel '%s/vmlinux' --initrd " \
		"'%s/initramfs.cpio' --console none --cmdline 'console=ttyS0 quiet -- %s'"

Test(guest, vmm_exit_status_follows_the_guest, .timeout = 300)
{
	struct sys_result r = sys_guest_host(VMM_RUN, sys_build(), sys_kernel_dir(), sys_build(),
					     "poweroff -f");
	cr_assert_eq(r.status, CV_EXIT_OK, "poweroff: status %d: %s", r.status, r.err);
	sys_free(&r);
	r = sys_guest_host(VMM_RUN, sys_build(), sys_kernel_dir(), sys_build(), "reboot -f");
	cr_assert_eq(r.status, CV_EXIT_GUEST_REBOOT, "reboot: status %d: %s", r.status, r.err);
	cr_assert(strstr(r.err, "reset"), "%s", r.err);
	sys_free(&r);
}

static void require_emulated_host_mode(void)
{
	const char *emu = getenv("CVISOR_TEST_EMUHOST");
	if (!emu || strcmp(emu, "1") != 0)
		cr_skip_test("this host's /dev/kvm runs guests directly");
}

/* On this host itself: cvisor run notices the PVM /dev/kvm and uses the session's host. */
Test(guest, cvisor_run_falls_back_to_the_emulated_host, .timeout = 300)
{
	require_emulated_host_mode();
	struct sys_result r = sys_host(RUN " -- uname -r", sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert_str_eq(r.out, kernel_release());
	cr_assert(strstr(r.err, "running in the emulated host") && strstr(r.err, "slow"), "%s",
		  r.err);
	cr_assert_eq(sys_lines(r.err), 1, "one line says why: %s", r.err);
	sys_free(&r);
}

Test(guest, vmm_emulated_host_flag_runs_it_there, .timeout = 300)
{
	require_emulated_host_mode();
	struct sys_result r = sys_host("'%s/cvisor-vmm' --emulated-host --kernel '%s/bzImage' "
				       "--initrd '%s/initramfs.cpio' --cmdline 'console=ttyS0 quiet "
				       "-- uname -r'", sys_build(), sys_kernel_dir(), sys_build());
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	cr_assert(strstr(r.out, kernel_release()), "%s", r.out);
	cr_assert(strstr(r.out, "[cvisor-exit - 0]"), "%s", r.out);
	cr_assert(strstr(r.err, "running inside the emulated host"), "%s", r.err);
	sys_free(&r);
}

/*
 * A guest started by cvisor-vmm with cvisor.agent=PORT is driven through `cvisor agent`: state,
 * exec, a freeze that really holds writes on a virtio disk until thawed, and a clean shutdown.
 */
Test(guest, agent_drives_a_running_guest, .timeout = 300)
{
	char dir[] = "/tmp/cvisor-test-agent-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	struct sys_result r = sys_host("truncate -s 32M %s/d.img && mkfs.ext4 -qF %s/d.img", dir, dir);
	cr_assert_eq(r.status, 0, "%s", r.err);
	sys_free(&r);
	r = sys_guest_host(
		"B='%s'; S=$(mktemp -d /dev/shm/cvisor-agent.XXXXXX); A=\"$B/cvisor agent --vsock $S/v.sock\"; "
		"$B/cvisor-vmm --kernel '%s/vmlinux' --initrd $B/initramfs.cpio --disk %s/d.img "
		"--vsock cid=3,uds=$S/v.sock --console file:$S/console --memory 256 "
		"--cmdline 'console=ttyS0 cvisor.agent=1024' & P=$!; "
		"trap 'kill -9 $P 2>/dev/null; tail -n 30 $S/console >&2; rm -rf $S' EXIT; "
		"for i in $(seq 600); do $A --timeout 5 ping >/dev/null 2>&1 && break; sleep 0.05; done; "
		"$A info > $S/info; grep -o '\"kernel\":\"[^\"]*\"' $S/info; "
		"$A exec -- sh -c 'mkdir -p /mnt && mount /dev/vda /mnt && echo ok'; "
		"mkfifo $S/hold; ($A freeze /mnt < $S/hold > $S/frozen &); exec 7> $S/hold; "
		"for i in $(seq 200); do grep -q frozen $S/frozen && break; sleep 0.05; done; cat $S/frozen; "
		"timeout -s KILL 3 $A exec -- sh -c 'echo during > /mnt/f; sync'; echo frozen_write=$?; "
		"exec 7>&-; sleep 0.5; "
		"$A exec -- sh -c 'echo after > /mnt/g; sync; cat /mnt/g'; "
		"$A shutdown; for i in $(seq 300); do kill -0 $P 2>/dev/null || break; sleep 0.1; done; "
		"kill -9 $P 2>/dev/null; wait $P; echo vmm=$?",
		sys_build(), sys_kernel_dir(), dir);
	cr_assert_eq(r.status, 0, "status %d: %s", r.status, r.err);
	char want[512];
	snprintf(want, sizeof(want),
		 "\"kernel\":\"%.*s\"\nok\n{\"event\":\"frozen\",\"paths\":[\"/mnt\"],\"errors\":[]}\n"
		 "frozen_write=137\nafter\nvmm=0\n",
		 (int)strcspn(kernel_release(), "\n"), kernel_release());
	cr_assert_str_eq(r.out, want, "stderr: %s", r.err);
	sys_free(&r);
	r = sys_host("debugfs -R 'cat /g' %s/d.img 2>/dev/null; rm -rf %s", dir, dir);
	cr_assert_str_eq(r.out, "after\n", "%s", r.err);
	sys_free(&r);
}
