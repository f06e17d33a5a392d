/*
 * `cvisor check`: says whether this host's /dev/kvm can run guests directly or whether cvisor
 * will use the emulated host, and where the default guest files are. Exit 0 when KVM is usable
 * directly, 69 (unavailable) otherwise, so scripts can branch on it.
 */
#include <limits.h>
#include <stdio.h>

#include "commands.h"
#include "exitcodes.h"
#include "guest_files.h"
#include "kvm_probe.h"

int cmd_check(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	struct kvm_host_probe probe;
	kvm_probe_host(&probe);
	printf("kvm: %s: %s\n", probe.kind == KVM_HOST_USABLE ? "usable" : "not usable directly",
	       probe.reason);
	if (probe.kind != KVM_HOST_USABLE)
		printf("     cvisor run will use the emulated host (QEMU TCG with nested AMD-V)\n");
	char path[PATH_MAX];
	struct cv_error err = { 0 };
	if (guest_default_kernel("vmlinux", path, sizeof(path), &err) == 0)
		printf("guest kernel: %s\n", path);
	else
		printf("guest kernel: %s\n", err.msg);
	if (guest_default_initramfs(path, sizeof(path), &err) == 0)
		printf("guest initramfs: %s\n", path);
	else
		printf("guest initramfs: %s\n", err.msg);
	return probe.kind == KVM_HOST_USABLE ? 0 : CV_EXIT_UNAVAILABLE;
}
