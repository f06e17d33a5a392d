/*
 * Holds one idle KVM VM open for the agent's lifetime, on hosts that ask for it (the emulated
 * host does). While any VM exists, KVM's static keys (preempt notifiers, LAPIC enable state)
 * keep a non-zero count, so creating and destroying the VMs cvisor runs no longer live-patches
 * the host kernel's text each time. Under QEMU's multi-threaded TCG that patching occasionally
 * left both host vCPUs looping between __schedule and the int3 handler (measured: 3 of 4 fresh
 * emulated hosts hung within 10 guest boots; 0 of 5 with a VM held, over 12 boots each).
 */
#ifndef CVISOR_AGENT_KVM_HOLD_H
#define CVISOR_AGENT_KVM_HOLD_H

#include "error.h"

/* Creates the VM (with irqchip and one never-run vCPU); its fds stay open until exit. */
int kvm_hold_open(struct cv_error *err);

#endif
