/*
 * Control API routes of live migration, under cvisor's own prefix (Firecracker has no such
 * operation):
 *   PUT /cvisor/migrate {"destination": "tcp:HOST:PORT"[, "downtime_ms": N]
 *                        [, "max_bandwidth": BYTES_PER_S][, "max_rounds": N]}   -> 204
 *   GET /cvisor/migrate                                          -> 200 progress (below)
 *   DELETE /cvisor/migrate, PUT /cvisor/migrate/cancel           -> 204
 * The PUT returns once the migration thread has the job; progress and the outcome are read
 * with GET: state (none, setup, active, stop-copy, completed, failed, cancelled, unknown),
 * error, rounds, bytes_sent, pages_sent, zero_pages, dirty_pages (left after the last round),
 * dirty_rate_pages_s, bandwidth_bytes_s, expected_downtime_ms, total_ms, setup_ms and, once
 * completed, downtime_ms. See docs/migration-stream.md.
 */
#include "api.h"

#include <microhttpd.h>
#include <string.h>

#include "migrate/migrate.h"
#include "vm.h"

static void migrate_put(struct vm *vm, const struct api_request *req, struct api_response *resp)
{
	static const char *const keys[] = { "destination", "downtime_ms", "max_bandwidth",
					    "max_rounds", NULL };
	if (!api_check_body(req, resp, keys))
		return;
	struct cv_error err = { 0 };
	struct migrate_params p = { 0 };
	const char *dest;
	uint64_t rounds = 0;
	if (api_get_string(req->body, "destination", true, &dest, &err) < 0 ||
	    api_get_u64(req->body, "downtime_ms", false, 1, 60000, &p.downtime_ms, &err) < 0 ||
	    api_get_u64(req->body, "max_bandwidth", false, 0, UINT64_MAX / 2, &p.max_bandwidth,
			&err) < 0 ||
	    api_get_u64(req->body, "max_rounds", false, 1, 1000, &rounds, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	if (strlen(dest) >= sizeof(p.destination)) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "destination is too long");
		return;
	}
	strcpy(p.destination, dest);
	p.max_rounds = (uint32_t)rounds;
	if (migrate_start(vm, &p, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "cannot migrate: %s", err.msg);
		return;
	}
	api_no_content(resp);
}

static void migrate_show(struct vm *vm, struct api_response *resp)
{
	struct migrate_stats s;
	migrate_get(vm, &s);
	json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f}",
			      "state", migrate_state_name(s.state),
			      "rounds", (json_int_t)s.rounds,
			      "bytes_sent", (json_int_t)s.bytes_sent,
			      "pages_sent", (json_int_t)s.pages_sent,
			      "zero_pages", (json_int_t)s.zero_pages,
			      "dirty_pages", (json_int_t)s.dirty_pages,
			      "dirty_rate_pages_s", s.dirty_rate,
			      "bandwidth_bytes_s", s.bandwidth,
			      "expected_downtime_ms", s.expected_downtime_ms,
			      "total_ms", s.total_ms,
			      "setup_ms", s.setup_ms);
	if (o && s.state == MIGRATE_COMPLETED)
		json_object_set_new(o, "downtime_ms", json_real(s.downtime_ms));
	if (o && s.switch_reason)
		json_object_set_new(o, "switch_reason", json_string(s.switch_reason));
	if (o && s.error[0])
		json_object_set_new(o, "error", json_string(s.error));
	api_ok(resp, o);
}

static void migrate_stop(struct vm *vm, struct api_response *resp)
{
	struct cv_error err = { 0 };
	if (migrate_cancel(vm, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	api_no_content(resp);
}

bool vmm_api_migrate_route(struct vm *vm, const struct api_request *req,
			   struct api_response *resp)
{
	if (strcmp(req->path, "/cvisor/migrate") == 0) {
		if (strcmp(req->method, "PUT") == 0)
			migrate_put(vm, req, resp);
		else if (strcmp(req->method, "GET") == 0)
			migrate_show(vm, resp);
		else if (strcmp(req->method, "DELETE") == 0)
			migrate_stop(vm, resp);
		else
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "invalid request method and/or path: %s "
				  "%s", req->method, req->path);
		return true;
	}
	if (strcmp(req->path, "/cvisor/migrate/cancel") == 0) {
		if (strcmp(req->method, "PUT") == 0)
			migrate_stop(vm, resp);
		else
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "invalid request method and/or path: %s "
				  "%s", req->method, req->path);
		return true;
	}
	return false;
}
