/*
 * Bad input to cvisor-vmm and cvisor run: each must end with one clear line on stderr and a
 * distinct non-zero status, never a crash. Run on this host with CVISOR_KVM=direct, so the VMM
 * validates its input instead of stopping at the "this /dev/kvm is PVM" check.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "exitcodes.h"
#include "sys.h"

#define VMM "CVISOR_KVM=direct '%s/cvisor-vmm'"

static void expect_one_line_error(struct sys_result *r, int status, const char *needle)
{
	cr_assert_eq(r->status, status, "status %d, stderr: %s", r->status, r->err);
	cr_assert_eq(sys_lines(r->err), 1, "want one line, got: %s", r->err);
	cr_assert(strstr(r->err, needle), "'%s' not in: %s", needle, r->err);
	cr_assert_eq(r->out[0], 0, "nothing on stdout: %s", r->out);
}

Test(badinput, missing_kernel)
{
	struct sys_result r = sys_host(VMM " --kernel /nonexistent/vmlinux", sys_build());
	expect_one_line_error(&r, CV_EXIT_NOINPUT,
			      "kernel: open '/nonexistent/vmlinux': No such file or directory");
	sys_free(&r);
}

Test(badinput, truncated_vmlinux)
{
	struct sys_result r = sys_host("t=$(mktemp) && head -c 3000000 '%s/vmlinux' > $t && "
				       VMM " --kernel $t; s=$?; rm -f $t; exit $s",
				       sys_kernel_dir(), sys_build());
	expect_one_line_error(&r, CV_EXIT_DATAERR, "truncated");
	sys_free(&r);
}

Test(badinput, truncated_bzimage)
{
	struct sys_result r = sys_host("t=$(mktemp) && head -c 1000000 '%s/bzImage' > $t && "
				       VMM " --kernel $t; s=$?; rm -f $t; exit $s",
				       sys_kernel_dir(), sys_build());
	expect_one_line_error(&r, CV_EXIT_DATAERR, "truncated");
	sys_free(&r);
}

Test(badinput, garbage_kernel)
{
	struct sys_result r = sys_host("t=$(mktemp) && head -c 4194304 /dev/urandom > $t && "
				       VMM " --kernel $t; s=$?; rm -f $t; exit $s", sys_build());
	expect_one_line_error(&r, CV_EXIT_DATAERR, "not a kernel image");
	sys_free(&r);
	r = sys_host(VMM " --kernel /dev/null", sys_build());
	cr_assert_eq(r.status, CV_EXIT_DATAERR, "empty file: %d %s", r.status, r.err);
	sys_free(&r);
	r = sys_host(VMM " --kernel /", sys_build());
	expect_one_line_error(&r, CV_EXIT_NOINPUT, "directory");
	sys_free(&r);
}

Test(badinput, initrd_larger_than_memory)
{
	struct sys_result r = sys_host("t=$(mktemp) && truncate -s 100M $t && "
				       VMM " --kernel '%s/vmlinux' --memory 64 --initrd $t; s=$?; "
				       "rm -f $t; exit $s", sys_build(), sys_kernel_dir());
	expect_one_line_error(&r, CV_EXIT_USAGE, "larger than guest memory");
	sys_free(&r);
	r = sys_host(VMM " --kernel '%s/vmlinux' --initrd /nonexistent.cpio", sys_build(),
		     sys_kernel_dir());
	expect_one_line_error(&r, CV_EXIT_NOINPUT, "/nonexistent.cpio");
	sys_free(&r);
}

Test(badinput, bad_cpus_and_memory)
{
	static const struct {
		const char *args;
		const char *needle;
	} cases[] = {
		{ "--memory 0", "--memory '0'" },
		{ "--memory 31", "--memory '31'" },
		{ "--memory 99999999", "this host's RAM" },
		{ "--memory -5", "--memory '-5'" },
		{ "--memory 1G", "--memory '1G'" },
		{ "--cpus 0", "--cpus '0'" },
		{ "--cpus 255", "--cpus '255'" },
		{ "--cpus 100000", "--cpus '100000'" },
		{ "--cpus", "incomplete option" },
		{ "--console tty", "--console 'tty'" },
		{ "--bogus", "unknown" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sys_result r = sys_host(VMM " --kernel '%s/vmlinux' %s", sys_build(),
					       sys_kernel_dir(), cases[i].args);
		expect_one_line_error(&r, CV_EXIT_USAGE, cases[i].needle);
		sys_free(&r);
	}
}

Test(badinput, bad_incoming_migration)
{
	static const struct {
		const char *args;
		const char *needle;
	} cases[] = {
		{ "--incoming tcp:example.com:7000", "must be an IP address" },
		{ "--incoming tcp:127.0.0.1", "expected tcp:HOST:PORT" },
		{ "--incoming 127.0.0.1:7000", "expected tcp:HOST:PORT" },
		{ "--incoming tcp:127.0.0.1:99999", "port" },
		{ "--incoming tcp:127.0.0.1:7000 --kernel /x", "--incoming receives a running VM" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sys_result r = sys_host(VMM " %s", sys_build(), cases[i].args);
		expect_one_line_error(&r, CV_EXIT_USAGE, cases[i].needle);
		sys_free(&r);
	}
	/* A peer that does not speak the stream: refused at its first bytes, nothing built. */
	struct sys_result r = sys_host(
		"exec 2>&1; P=$((20000 + $$ %% 20000)); " VMM " --incoming tcp:127.0.0.1:$P "
		"--console none & v=$!; sleep 1; curl -s -m 5 http://127.0.0.1:$P/ >/dev/null; "
		"wait $v; echo \"status $?\"", sys_build());
	cr_assert(strstr(r.out, "not a cvisor migration stream (bad magic)"), "%s", r.out);
	cr_assert(strstr(r.out, "status 65"), "%s", r.out);
	sys_free(&r);
}

Test(badinput, too_long_cmdline)
{
	struct sys_result r = sys_host(VMM " --kernel '%s/vmlinux' --cmdline \"$(head -c 3000 "
				       "/dev/zero | tr '\\0' a)\"", sys_build(), sys_kernel_dir());
	expect_one_line_error(&r, CV_EXIT_USAGE, "command line is 3000 bytes");
	sys_free(&r);
}

Test(badinput, pvm_host_is_refused_with_a_reason)
{
	/* Forcing the emulated-host verdict exercises the refusal path on any machine. */
	struct sys_result r = sys_host("CVISOR_KVM=emulated '%s/cvisor-vmm' --kernel '%s/vmlinux'",
				       sys_build(), sys_kernel_dir());
	expect_one_line_error(&r, CV_EXIT_UNAVAILABLE, "--emulated-host");
	sys_free(&r);
}

Test(badinput, cvisor_run_usage)
{
	struct sys_result r = sys_host("'%s/cvisor' run", sys_build());
	expect_one_line_error(&r, CV_EXIT_USAGE, "no command given");
	sys_free(&r);
	r = sys_host("'%s/cvisor' run --env NOEQUALS -- true", sys_build());
	expect_one_line_error(&r, CV_EXIT_USAGE, "NAME=VALUE");
	sys_free(&r);
	r = sys_host("'%s/cvisor' frobnicate", sys_build());
	expect_one_line_error(&r, CV_EXIT_USAGE, "unknown command");
	sys_free(&r);
}
