/*
 * A cvisor-vmm started with --api-sock and no kernel or snapshot: like a fresh Firecracker
 * process, it has no VM until a request makes one. The API is served on the socket from the
 * start; GET / reports "Not started" and PUT /snapshot/load (load.h) builds the VM from a
 * snapshot, after which the same socket serves the VM's routes (api.h) and the process runs
 * the VM until it ends.
 */
#ifndef CVISOR_VMM_PREBOOT_H
#define CVISOR_VMM_PREBOOT_H

#include "error.h"

struct vm_config;

/*
 * Serves the API on base->api_sock until a VM is loaded, then runs it; returns the VM's exit
 * status (vm.h), or 128+N if signal N ended the wait. base gives the console and sandbox.
 */
int vmm_preboot_run(const struct vm_config *base, struct cv_error *err);

#endif
