/*
 * PUT /snapshot/load: turning a cvisor-vmm that has no VM yet (started with only --api-sock)
 * into the VM of a snapshot, with Firecracker's request body:
 *   {"snapshot_path": STATE,
 *    "mem_backend": {"backend_type": "File", "backend_path": MEM} | "mem_file_path": MEM,
 *    "track_dirty_pages" | "enable_diff_snapshots": BOOL, "resume_vm": BOOL,
 *    "network_overrides": [{"iface_id": ID, "host_dev_name": TAP}],
 *    "vsock_override": {"uds_path": PATH},
 *    "cvisor": {"vsock_cid": N,
 *               "network_overrides": [{"iface_id": ID, "host_dev_name": TAP,
 *                                       "guest_mac": MAC}]}}
 * The machine - vCPUs, memory, devices and their backends - comes from the state file (its
 * SHAPE and CONFIG sections); the overrides give a clone its own TAP, vsock socket, CID and MAC.
 * "cvisor" holds what Firecracker has no field for. The request is parsed apart from the load
 * so that the parser can be unit-tested and fuzzed.
 */
#ifndef CVISOR_VMM_LOAD_H
#define CVISOR_VMM_LOAD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices.h"
#include "error.h"

struct load_net_override {
	const char *iface_id;
	const char *host_dev_name;   /* NULL: keep the snapshot's TAP */
	bool has_mac;
	uint8_t mac[6];
};

/* Strings point into the request's JSON body, which must outlive the struct's use. */
struct load_request {
	const char *snapshot_path;
	const char *mem_path;
	bool track_dirty_pages;
	bool resume_vm;
	const char *vsock_uds;       /* NULL: the snapshot's */
	bool has_vsock_cid;
	uint32_t vsock_cid;
	unsigned n_nets;
	struct load_net_override nets[VM_MAX_NETS];
};

/* Strict: unknown fields, wrong types, both or neither memory field are usage errors. */
int load_request_parse(json_t *body, struct load_request *out, struct cv_error *err);

struct vm;
struct vm_config;
struct snap_config;

/*
 * Builds the snapshot's machine in vm (vm_init with base's console and sandbox settings) and
 * restores it. cfg receives the device configuration the VM keeps pointing into: it must
 * outlive vm. Paused unless r->resume_vm: vm_run then starts with every thread parked until
 * vm_resume (PATCH /vm). On failure vm is destroyed and may be loaded again.
 */
int vm_load_snapshot(struct vm *vm, struct snap_config *cfg, const struct load_request *r,
		     const struct vm_config *base, struct cv_error *err);

#endif
