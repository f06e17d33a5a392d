/*
 * Control API routes for the VM's run state and snapshots, Firecracker-compatible:
 *   PATCH /vm {"state": "Paused" | "Resumed"}                                  -> 204
 *   PUT /snapshot/create {"snapshot_type": "Full" | "Diff", "snapshot_path": PATH,
 *                         "mem_file_path": PATH[, "version": STRING]}           -> 204
 * A snapshot needs a paused VM, as in Firecracker; every refusal is a 400 with a
 * fault_message. A diff needs dirty page tracking (track_dirty_pages). PUT /snapshot/load
 * belongs to a cvisor-vmm with no VM yet (load.c). CVISOR_VMM_TRACE=snapshot logs the time
 * each snapshot and restore took.
 */
#include "api.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/snapshot.h"
#include "vm.h"

static void patch_vm(struct vm *vm, const struct api_request *req, struct api_response *resp)
{
	static const char *const keys[] = { "state", NULL };
	if (!api_check_body(req, resp, keys))
		return;
	struct cv_error err = { 0 };
	const char *state;
	if (api_get_string(req->body, "state", true, &state, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	if (strcmp(state, "Paused") == 0) {
		if (vm_pause(vm, &err) < 0) {
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "cannot pause the VM: %s", err.msg);
			return;
		}
	} else if (strcmp(state, "Resumed") == 0) {
		if (!vm_resume(vm)) {
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "a live migration holds the VM paused "
				  "(GET /cvisor/migrate)");
			return;
		}
	} else {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "state must be \"Paused\" or \"Resumed\", not "
			  "\"%s\"", state);
		return;
	}
	api_no_content(resp);
}

static void snapshot_create(struct vm *vm, const struct api_request *req,
			    struct api_response *resp)
{
	static const char *const keys[] = { "snapshot_type", "snapshot_path", "mem_file_path",
					    "version", NULL };
	if (!api_check_body(req, resp, keys))
		return;
	struct cv_error err = { 0 };
	const char *type = "Full", *state_path, *mem_path, *version;
	if (api_get_string(req->body, "snapshot_type", false, &type, &err) < 0 ||
	    api_get_string(req->body, "snapshot_path", true, &state_path, &err) < 0 ||
	    api_get_string(req->body, "mem_file_path", true, &mem_path, &err) < 0 ||
	    api_get_string(req->body, "version", false, &version, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	bool diff = strcmp(type, "Diff") == 0;
	if (!diff && strcmp(type, "Full") != 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "snapshot_type must be \"Full\" or \"Diff\", "
			  "not \"%s\"", type);
		return;
	}
	if (!*state_path || !*mem_path) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "snapshot_path and mem_file_path must not be "
			  "empty");
		return;
	}
	if (!vm_is_paused(vm)) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "the VM must be paused to create a snapshot "
			  "(PATCH /vm {\"state\": \"Paused\"})");
		return;
	}
	struct snapshot_times t;
	if (vm_snapshot_create(vm, state_path, mem_path, diff, &t, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "snapshot failed: %s", err.msg);
		return;
	}
	const char *trace = getenv("CVISOR_VMM_TRACE");
	if (trace && strstr(trace, "snapshot"))
		fprintf(stderr, "cvisor-vmm: snapshot (%s): memory file %.1f ms, state file "
			"%.1f ms (%llu bytes)\n", type, t.memory_ms, t.state_ms,
			(unsigned long long)t.state_bytes);
	if (diff && trace && strstr(trace, "snapshot"))
		fprintf(stderr, "cvisor-vmm: snapshot: diff holds %llu dirty pages\n",
			(unsigned long long)t.memory_pages_written);
	api_no_content(resp);
}

bool vmm_api_vm_route(struct vm *vm, const struct api_request *req, struct api_response *resp)
{
	if (strcmp(req->path, "/vm") == 0) {
		if (strcmp(req->method, "PATCH") == 0)
			patch_vm(vm, req, resp);
		else
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "invalid request method and/or path: %s "
				  "%s", req->method, req->path);
		return true;
	}
	if (strcmp(req->path, "/snapshot/create") == 0) {
		if (strcmp(req->method, "PUT") == 0)
			snapshot_create(vm, req, resp);
		else
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "invalid request method and/or path: %s "
				  "%s", req->method, req->path);
		return true;
	}
	return false;
}
