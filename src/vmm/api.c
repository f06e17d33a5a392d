/*
 * Control API routes of one VM (see api.h). Paths and JSON fields follow Firecracker's API where
 * both have the operation, so its clients work unchanged.
 */
#include "api.h"

#include <microhttpd.h>
#include <string.h>

#include "virtio/balloon.h"
#include "vm.h"

static bool is(const struct api_request *r, const char *method, const char *path)
{
	return strcmp(r->method, method) == 0 && strcmp(r->path, path) == 0;
}

static void balloon_get(struct vm *vm, struct api_response *resp)
{
	uint64_t target, actual;
	virtio_balloon_get(vm->balloon, &target, &actual, NULL);
	api_ok(resp, json_pack("{s:I, s:b, s:I}", "amount_mib", (json_int_t)target,
			       "deflate_on_oom", vm->balloon->cfg.deflate_on_oom,
			       "stats_polling_interval_s",
			       (json_int_t)vm->balloon->cfg.stats_interval_s));
}

static void balloon_patch(struct vm *vm, const struct api_request *req, struct api_response *resp)
{
	static const char *const keys[] = { "amount_mib", NULL };
	if (!api_check_body(req, resp, keys))
		return;
	struct cv_error err = { 0 };
	uint64_t mib;
	if (api_get_u64(req->body, "amount_mib", true, 0, vm->mem.size >> 20, &mib, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s (guest memory is %llu MiB)", err.msg,
			  (unsigned long long)(vm->mem.size >> 20));
		return;
	}
	virtio_balloon_set_target(vm->balloon, mib);
	api_no_content(resp);
}

static void balloon_stats(struct vm *vm, struct api_response *resp)
{
	if (!vm->balloon->cfg.stats_interval_s) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST,
			  "balloon statistics are not enabled (stats_polling_interval_s is 0)");
		return;
	}
	uint64_t target, actual;
	struct balloon_stats st;
	virtio_balloon_get(vm->balloon, &target, &actual, &st);
	json_t *o = json_pack("{s:I, s:I, s:I, s:I}", "target_pages", (json_int_t)(target << 8),
			      "actual_pages", (json_int_t)(actual << 8), "target_mib",
			      (json_int_t)target, "actual_mib", (json_int_t)actual);
	static const char *const names[BALLOON_STAT_COUNT] = {
		"swap_in", "swap_out", "major_faults", "minor_faults", "free_memory",
		"total_memory", "available_memory", "disk_caches", "hugetlb_allocations",
		"hugetlb_failures",
	};
	for (int i = 0; i < BALLOON_STAT_COUNT; i++)
		if (st.valid[i])
			json_object_set_new(o, names[i], json_integer((json_int_t)st.value[i]));
	api_ok(resp, o);
}

void vmm_api_route(void *ctx, const struct api_request *req, struct api_response *resp)
{
	struct vm *vm = ctx;
	if (vmm_api_vm_route(vm, req, resp) || vmm_api_migrate_route(vm, req, resp))
		return;
	if (is(req, "GET", "/")) {
		api_ok(resp, json_pack("{s:s, s:s, s:s, s:s}", "app_name", "cvisor", "id",
				       "anonymous-instance", "state",
				       vm_is_paused(vm) ? "Paused" : "Running",
				       "vmm_version", CVISOR_VERSION));
		return;
	}
	if (strncmp(req->path, "/balloon", 8) == 0) {
		if (!vm->balloon) {
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "no balloon device is configured");
			return;
		}
		if (is(req, "GET", "/balloon"))
			balloon_get(vm, resp);
		else if (is(req, "PATCH", "/balloon"))
			balloon_patch(vm, req, resp);
		else if (is(req, "GET", "/balloon/statistics"))
			balloon_stats(vm, resp);
		else
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "invalid request method and/or path: %s %s",
				  req->method, req->path);
		return;
	}
	api_fault(resp, MHD_HTTP_BAD_REQUEST, "invalid request method and/or path: %s %s",
		  req->method, req->path);
}
