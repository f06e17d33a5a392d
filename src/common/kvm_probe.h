/*
 * Can this host run an unmodified guest on /dev/kvm? Answers "usable", "PVM" (a paravirtual KVM
 * that runs CPL0 code through the instruction emulator) or "missing", with a one-line reason.
 * Both cvisor-vmm and cvisor consult it before deciding to use the emulated host.
 */
#ifndef CVISOR_COMMON_KVM_PROBE_H
#define CVISOR_COMMON_KVM_PROBE_H

enum kvm_host_kind {
	KVM_HOST_USABLE,
	KVM_HOST_PVM,
	KVM_HOST_MISSING,
};

struct kvm_host_probe {
	enum kvm_host_kind kind;
	char reason[256];
};

/*
 * Fills *out. CVISOR_KVM=direct forces "usable" and CVISOR_KVM=emulated forces "PVM" (for tests
 * and for hosts the heuristics misjudge); the reason then says so.
 */
void kvm_probe_host(struct kvm_host_probe *out);

#endif
