/*
 * The control API's top-level routes (see instance.h): Firecracker's pre-boot configuration
 * requests, the instance requests (GET /, /version, /vm/config, /machine-config, PUT /actions),
 * live device changes (PATCH /drives/ID, /network-interfaces/ID), and cvisor's extensions under
 * /cvisor/. Requests on the running VM's devices and run state go on to vmm_api_route (api.c).
 *
 * As in Firecracker: success is 204 without a body (PUT, PATCH) or 200 with JSON (GET); a
 * request the VM's state does not allow, and any invalid one, is 400 with {"fault_message"}.
 */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "fcjson.h"
#include "instance.h"
#include "ratelimit.h"
#include "virtio/blk.h"
#include "virtio/net.h"

#define NOT_AFTER_START "The requested operation is not supported after starting the microVM."
#define NOT_BEFORE_START "The requested operation is not supported before starting the microVM."

static bool method_is(const struct api_request *r, const char *m)
{
	return strcmp(r->method, m) == 0;
}

/* "/drives/ID" with prefix "/drives/": ID, or NULL when the path is something else. */
static const char *path_id(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	return strncmp(path, prefix, n) == 0 ? path + n : NULL;
}

static const char *state_name(struct vmm_instance *in)
{
	struct vm *vm = atomic_load(&in->running);
	if (!vm)
		return "Not started";
	return vm_is_paused(vm) ? "Paused" : "Running";
}

/* A pre-boot PUT: parse into the setup, or refuse once the VM runs. */
typedef int (*setup_put_fn)(struct vmm_setup *s, json_t *body, struct cv_error *err);

static void pre_boot_put(struct vmm_instance *in, const struct api_request *req,
			 struct api_response *resp, setup_put_fn put, bool body_optional)
{
	struct cv_error err = { 0 };
	if (in->vm) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, NOT_AFTER_START);
		return;
	}
	if (!req->body && !body_optional) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "this request needs a JSON body");
		return;
	}
	if (put(&in->setup, req->body, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	api_no_content(resp);
}

static int put_machine_config(struct vmm_setup *s, json_t *body, struct cv_error *err)
{
	return fc_put_machine_config(s, body, false, err);
}

static int patch_machine_config(struct vmm_setup *s, json_t *body, struct cv_error *err)
{
	return fc_put_machine_config(s, body, true, err);
}

/* PUT /logger and /metrics open their file at once, so that a bad path is the request's 400. */
static void put_logger(struct vmm_instance *in, const struct api_request *req,
		       struct api_response *resp)
{
	pre_boot_put(in, req, resp, fc_put_logger, false);
	struct cv_error err = { 0 };
	if (resp->status == MHD_HTTP_NO_CONTENT &&
	    vmm_logger_open(&in->log, &in->setup.logger, &err) < 0) {
		str_pool_release(&in->setup.pool, in->setup.logger.path);
		memset(&in->setup.logger, 0, sizeof(in->setup.logger));
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
	}
}

static void put_metrics(struct vmm_instance *in, const struct api_request *req,
			struct api_response *resp)
{
	pre_boot_put(in, req, resp, fc_put_metrics, false);
	struct cv_error err = { 0 };
	if (resp->status == MHD_HTTP_NO_CONTENT &&
	    vmm_metrics_open(&in->metrics, in->setup.metrics.path, &err) < 0) {
		str_pool_release(&in->setup.pool, in->setup.metrics.path);
		in->setup.metrics.path = NULL;
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
	}
}

static void put_device(struct vmm_instance *in, const struct api_request *req,
		       struct api_response *resp, const char *id, bool net)
{
	struct cv_error err = { 0 };
	if (in->vm) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, NOT_AFTER_START);
		return;
	}
	if (!req->body) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "this request needs a JSON body");
		return;
	}
	int rc = net ? fc_put_net(&in->setup, id, req->body, &err)
		     : fc_put_drive(&in->setup, id, req->body, &err);
	if (rc < 0)
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
	else
		api_no_content(resp);
}

/* The owner (struct virtio_blk / virtio_net) of the index-th device of that type, or NULL. */
static void *nth_device(struct vm *vm, uint32_t device_id, unsigned index)
{
	unsigned seen = 0;
	for (unsigned i = 0; i < vm->n_virtio; i++)
		if (vm->virtio[i]->dev->ops->device_id == device_id && seen++ == index)
			return vm->virtio[i]->owner;
	return NULL;
}

int vm_apply_rate_limiter(struct vm *vm, bool is_net, unsigned index,
			  const struct rate_limiter_config *a, const struct rate_limiter_config *b,
			  struct cv_error *err)
{
	void *dev = nth_device(vm, is_net ? VIRTIO_ID_NET : VIRTIO_ID_BLOCK, index);
	if (!dev)
		return cv_fail(err, CV_EXIT_SOFTWARE, "%s %u has no device",
			       is_net ? "network interface" : "drive", index);
	return is_net ? net_set_rate_limiter(dev, a, b, err) : blk_set_rate_limiter(dev, a, err);
}

int vm_replace_drive(struct vm *vm, unsigned disk, const char *path, const char *serial,
		     struct cv_error *err)
{
	struct virtio_blk *blk = nth_device(vm, VIRTIO_ID_BLOCK, disk);
	if (!blk)
		return cv_fail(err, CV_EXIT_SOFTWARE, "drive %u has no device", disk);
	/* No request may be in flight on the old image: pause unless the client did. */
	bool was_paused = vm_is_paused(vm);
	if (!was_paused && vm_pause(vm, err) < 0)
		return -1;
	int rc = virtio_blk_replace_image(blk, path, serial, err);
	if (!was_paused)
		vm_resume(vm);
	return rc;
}

static void patch_drive(struct vmm_instance *in, const struct api_request *req,
			struct api_response *resp, const char *id)
{
	struct cv_error err = { 0 };
	struct fc_drive_patch p;
	if (!in->vm) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, NOT_BEFORE_START);
		return;
	}
	if (fc_parse_drive_patch(req->body, id, &p, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	int at = vmm_setup_find_disk(&in->setup, id);
	if (at < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "no drive '%s'", id);
		return;
	}
	struct disk_config *d = &in->setup.vm.devices.disks[at];
	/* Refuse what cannot be done before changing anything. */
	if (p.has_rate_limiter && rate_limiter_config_check(&p.rate_limiter, "rate_limiter", &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "drive %s: %s", id, err.msg);
		return;
	}
	if (p.path) {
		const char *copy = str_pool_dup(&in->setup.pool, p.path);
		if (!copy || vm_replace_drive(in->vm, (unsigned)at, p.path, d->serial, &err) < 0) {
			str_pool_release(&in->setup.pool, copy);
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "drive %s: %s", id,
				  copy ? err.msg : "out of memory");
			return;
		}
		str_pool_release(&in->setup.pool, d->path);
		d->path = copy;
	}
	if (p.has_rate_limiter) {
		if (vm_apply_rate_limiter(in->vm, false, (unsigned)at, &p.rate_limiter, NULL,
					  &err) < 0) {
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "drive %s: %s", id, err.msg);
			return;
		}
		d->rate_limiter = p.rate_limiter;
	}
	api_no_content(resp);
}

static void patch_net(struct vmm_instance *in, const struct api_request *req,
		      struct api_response *resp, const char *id)
{
	struct cv_error err = { 0 };
	struct fc_net_patch p;
	if (!in->vm) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, NOT_BEFORE_START);
		return;
	}
	if (fc_parse_net_patch(req->body, id, &p, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	int at = vmm_setup_find_net(&in->setup, id);
	if (at < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "no network interface '%s'", id);
		return;
	}
	if (!p.has_rx && !p.has_tx) {
		api_no_content(resp);
		return;
	}
	if (vm_apply_rate_limiter(in->vm, true, (unsigned)at, p.has_rx ? &p.rx : NULL,
				  p.has_tx ? &p.tx : NULL, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "network interface %s: %s", id, err.msg);
		return;
	}
	struct net_config *n = &in->setup.vm.devices.nets[at];
	if (p.has_rx)
		n->rx_rate_limiter = p.rx;
	if (p.has_tx)
		n->tx_rate_limiter = p.tx;
	api_no_content(resp);
}

/*
 * As Firecracker: Ctrl-Alt-Del typed on the i8042 keyboard. A guest whose i8042 driver runs
 * reboots (reboot=k: the VMM then exits) or tells init; one without the driver ignores it.
 */
static void vm_send_ctrl_alt_del(struct vm *vm, struct api_response *resp)
{
	if (!i8042_send_ctrl_alt_del(&vm->i8042))
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "SendCtrlAltDel: the guest has disabled its "
			  "keyboard, or has not read the keys sent before");
	else
		api_no_content(resp);
}

static void put_actions(struct vmm_instance *in, const struct api_request *req,
			struct api_response *resp)
{
	static const char *const keys[] = { "action_type", NULL };
	struct cv_error err = { 0 };
	const char *action;
	if (!api_check_body(req, resp, keys))
		return;
	if (api_get_string(req->body, "action_type", true, &action, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	if (strcmp(action, "InstanceStart") == 0) {
		if (in->vm) {
			api_fault(resp, MHD_HTTP_BAD_REQUEST, NOT_AFTER_START);
			return;
		}
		if (instance_request_start(in, &err) < 0) {
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "Start microvm error: %s", err.msg);
			return;
		}
		api_no_content(resp);
	} else if (strcmp(action, "FlushMetrics") == 0) {
		if (vmm_metrics_flush(&in->metrics, in->vm, &err) < 0)
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		else
			api_no_content(resp);
	} else if (strcmp(action, "SendCtrlAltDel") == 0) {
		if (!in->vm)
			api_fault(resp, MHD_HTTP_BAD_REQUEST, NOT_BEFORE_START);
		else
			vm_send_ctrl_alt_del(in->vm, resp);
	} else {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "action_type must be \"InstanceStart\", "
			  "\"SendCtrlAltDel\" or \"FlushMetrics\", not \"%s\"", action);
	}
}

/*
 * PUT /snapshot/load (load.h): like InstanceStart, but the machine and its devices come from
 * the snapshot. Only before the VM exists, as in Firecracker.
 */
static void load_snapshot(struct vmm_instance *in, const struct api_request *req,
			  struct api_response *resp)
{
	struct cv_error err = { 0 };
	struct load_request r;
	if (in->vm) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "Loading a microVM snapshot not allowed after "
			  "configuring boot-specific resources: the VM already exists");
		return;
	}
	if (!req->body) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "this request needs a JSON body");
		return;
	}
	if (load_request_parse(req->body, &r, &err) < 0) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "%s", err.msg);
		return;
	}
	/* The body (which r points into) lives until we answer; the start is synchronous. */
	in->load = &r;
	int rc = instance_request_start(in, &err);
	in->load = NULL;
	if (rc < 0)
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "cannot load the snapshot: %s", err.msg);
	else
		api_no_content(resp);
}

static void get_balloon_config(struct vmm_instance *in, struct api_response *resp)
{
	const struct balloon_config *b = &in->setup.vm.devices.balloon;
	if (!b->enabled) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "no balloon device is configured");
		return;
	}
	api_ok(resp, json_pack("{s:I, s:b, s:I}", "amount_mib", (json_int_t)b->target_mib,
			       "deflate_on_oom", b->deflate_on_oom, "stats_polling_interval_s",
			       (json_int_t)b->stats_interval_s));
}

static void route(struct vmm_instance *in, const struct api_request *req,
		  struct api_response *resp)
{
	const char *p = req->path, *id;
	bool get = method_is(req, "GET"), put = method_is(req, "PUT");
	bool patch = method_is(req, "PATCH");
	if (get && strcmp(p, "/") == 0) {
		api_ok(resp, json_pack("{s:s, s:s, s:s, s:s}", "id", in->id, "state", state_name(in),
				       "vmm_version", CVISOR_VERSION, "app_name", "cvisor"));
	} else if (get && strcmp(p, "/version") == 0) {
		api_ok(resp, json_pack("{s:s, s:s}", "firecracker_version", FC_API_VERSION,
				       "cvisor_version", CVISOR_VERSION));
	} else if (get && strcmp(p, "/vm/config") == 0) {
		api_ok(resp, fc_config_json(&in->setup));
	} else if (get && strcmp(p, "/machine-config") == 0) {
		api_ok(resp, fc_machine_config_json(&in->setup));
	} else if (get && strcmp(p, "/cvisor/metrics") == 0) {
		api_ok(resp, vmm_metrics_json(&in->metrics, in->vm));
	} else if (put && strcmp(p, "/actions") == 0) {
		put_actions(in, req, resp);
	} else if (put && strcmp(p, "/boot-source") == 0) {
		pre_boot_put(in, req, resp, fc_put_boot_source, false);
	} else if ((put || patch) && strcmp(p, "/machine-config") == 0) {
		pre_boot_put(in, req, resp, put ? put_machine_config : patch_machine_config, false);
	} else if (put && strcmp(p, "/vsock") == 0) {
		pre_boot_put(in, req, resp, fc_put_vsock, false);
	} else if (put && strcmp(p, "/entropy") == 0) {
		pre_boot_put(in, req, resp, fc_put_entropy, true);
	} else if (put && strcmp(p, "/balloon") == 0) {
		pre_boot_put(in, req, resp, fc_put_balloon, false);
	} else if (put && strcmp(p, "/logger") == 0) {
		put_logger(in, req, resp);
	} else if (put && strcmp(p, "/metrics") == 0) {
		put_metrics(in, req, resp);
	} else if ((id = path_id(p, "/drives/")) && (put || patch)) {
		if (!fc_valid_id(id))
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "invalid drive_id in the path");
		else if (put)
			put_device(in, req, resp, id, false);
		else
			patch_drive(in, req, resp, id);
	} else if ((id = path_id(p, "/network-interfaces/")) && (put || patch)) {
		if (!fc_valid_id(id))
			api_fault(resp, MHD_HTTP_BAD_REQUEST, "invalid iface_id in the path");
		else if (put)
			put_device(in, req, resp, id, true);
		else
			patch_net(in, req, resp, id);
	} else if (put && strcmp(p, "/snapshot/load") == 0) {
		load_snapshot(in, req, resp);
	} else if (!in->vm && get && strcmp(p, "/balloon") == 0) {
		get_balloon_config(in, resp);
	} else if (!in->vm && (strncmp(p, "/balloon", 8) == 0 || strcmp(p, "/vm") == 0 ||
			       strncmp(p, "/snapshot/", 10) == 0)) {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, NOT_BEFORE_START);
	} else if (in->vm) {
		vmm_api_route(in->vm, req, resp);
	} else {
		api_fault(resp, MHD_HTTP_BAD_REQUEST, "invalid request method and/or path: %s %s",
			  req->method, req->path);
	}
}

void instance_api_route(void *ctx, const struct api_request *req, struct api_response *resp)
{
	struct vmm_instance *in = ctx;
	pthread_mutex_lock(&in->lock);
	route(in, req, resp);
	pthread_mutex_unlock(&in->lock);
	atomic_fetch_add(&in->metrics.api_requests, 1);
	if (resp->status >= 400) {
		atomic_fetch_add(&in->metrics.api_errors, 1);
		json_t *m = resp->body ? json_object_get(resp->body, "fault_message") : NULL;
		vmm_log(&in->log, LOG_LEVEL_WARNING, "API %s %s: %u %s", req->method, req->path,
			resp->status, m ? json_string_value(m) : "");
	} else {
		vmm_log(&in->log, LOG_LEVEL_INFO, "API %s %s: %u", req->method, req->path,
			resp->status);
	}
}
