/*
 * Host KVM suitability probe (see kvm_probe.h). PVM is recognised the way its documentation
 * describes it: the kvm_pvm module is loaded and the CPU advertises neither vmx nor svm.
 */
#include "kvm_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* True if a "flags" line of /proc/cpuinfo lists vmx or svm. */
static bool cpu_has_hw_virt(void)
{
	FILE *f = fopen("/proc/cpuinfo", "re");
	if (!f)
		return false;
	char *line = NULL;
	size_t cap = 0;
	bool found = false;
	while (!found && getline(&line, &cap, f) > 0) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		found = strstr(line, " vmx") || strstr(line, " svm");
		break;
	}
	free(line);
	fclose(f);
	return found;
}

void kvm_probe_host(struct kvm_host_probe *out)
{
	const char *force = getenv("CVISOR_KVM");
	if (force && strcmp(force, "direct") == 0) {
		out->kind = KVM_HOST_USABLE;
		snprintf(out->reason, sizeof(out->reason), "CVISOR_KVM=direct");
		return;
	}
	if (force && strcmp(force, "emulated") == 0) {
		out->kind = KVM_HOST_PVM;
		snprintf(out->reason, sizeof(out->reason), "CVISOR_KVM=emulated asks for the emulated host");
		return;
	}
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		out->kind = KVM_HOST_MISSING;
		snprintf(out->reason, sizeof(out->reason), "cannot open /dev/kvm: %s", strerror(errno));
		return;
	}
	close(fd);
	bool pvm = access("/sys/module/kvm_pvm", F_OK) == 0;
	if (pvm && !cpu_has_hw_virt()) {
		out->kind = KVM_HOST_PVM;
		snprintf(out->reason, sizeof(out->reason),
			 "/dev/kvm is PVM (kvm_pvm loaded, no vmx/svm CPU flag): it cannot run an "
			 "unmodified guest kernel");
		return;
	}
	out->kind = KVM_HOST_USABLE;
	snprintf(out->reason, sizeof(out->reason), "/dev/kvm with hardware virtualization");
}
