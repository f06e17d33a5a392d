/*
 * PUT /snapshot/load (see load.h): request parsing, then the machine rebuilt from the state
 * file's own description with the request's overrides applied, then vm_restore.
 */
#include "load.h"

#include <stdio.h>
#include <string.h>

#include "devopts.h"
#include "snapshot/snapshot.h"
#include "util.h"
#include "vm.h"

/* A request string fit for a one-line error: control characters become '?', long ones cut. */
struct shown {
	char s[80];
};

static struct shown show(const char *in)
{
	struct shown o;
	size_t i = 0;
	for (; in[i] && i < sizeof(o.s) - 1; i++)
		o.s[i] = (unsigned char)in[i] < 0x20 || in[i] == 0x7f ? '?' : in[i];
	o.s[i] = 0;
	return o;
}

static int get_nonempty(json_t *o, const char *key, bool required, const char **out,
			struct cv_error *err)
{
	int r = api_get_string(o, key, required, out, err);
	if (r == 1 && !**out)
		return cv_fail(err, CV_EXIT_USAGE, "field '%s' must not be empty", key);
	return r;
}

/* One "network_overrides" array; cvisor_fields: guest_mac allowed, host_dev_name optional. */
static int parse_nets(json_t *arr, bool cvisor_fields, struct load_request *r,
		      struct cv_error *err)
{
	const char *where = cvisor_fields ? "cvisor.network_overrides" : "network_overrides";
	if (!json_is_array(arr))
		return cv_fail(err, CV_EXIT_USAGE, "'%s' must be an array", where);
	static const char *const fc_keys[] = { "iface_id", "host_dev_name", NULL };
	static const char *const cv_keys[] = { "iface_id", "host_dev_name", "guest_mac", NULL };
	size_t i;
	json_t *item;
	json_array_foreach(arr, i, item) {
		const char *unknown, *id = NULL, *tap = NULL, *mac = NULL;
		if (!json_is_object(item))
			return cv_fail(err, CV_EXIT_USAGE, "%s[%zu] must be an object", where, i);
		if (!api_only_keys(item, cvisor_fields ? cv_keys : fc_keys, &unknown))
			return cv_fail(err, CV_EXIT_USAGE, "%s[%zu]: unknown field '%s'", where, i,
				       show(unknown).s);
		if (get_nonempty(item, "iface_id", true, &id, err) < 0 ||
		    get_nonempty(item, "host_dev_name", !cvisor_fields, &tap, err) < 0 ||
		    get_nonempty(item, "guest_mac", false, &mac, err) < 0)
			return cv_error_wrap(err, "%s[%zu]", where, i);
		if (tap && strcmp(show(tap).s, tap) != 0)
			return cv_fail(err, CV_EXIT_USAGE, "%s[%zu]: host_dev_name has control "
				       "characters", where, i);
		if (tap && strlen(tap) >= 16)
			return cv_fail(err, CV_EXIT_USAGE, "%s[%zu]: host_dev_name '%s' is longer than "
				       "an interface name can be (15)", where, i, show(tap).s);
		struct load_net_override *o = NULL;
		for (unsigned k = 0; k < r->n_nets; k++)
			if (strcmp(r->nets[k].iface_id, id) == 0)
				o = &r->nets[k];
		if (!o) {
			if (r->n_nets == VM_MAX_NETS)
				return cv_fail(err, CV_EXIT_USAGE, "more than %d network overrides",
					       VM_MAX_NETS);
			o = &r->nets[r->n_nets++];
			memset(o, 0, sizeof(*o));
			o->iface_id = id;
		} else if ((tap && o->host_dev_name) || (mac && o->has_mac)) {
			return cv_fail(err, CV_EXIT_USAGE, "%s[%zu]: interface '%s' is overridden "
				       "twice", where, i, show(id).s);
		}
		if (tap)
			o->host_dev_name = tap;
		if (mac) {
			if (devopts_mac(mac, o->mac) < 0)
				return cv_fail(err, CV_EXIT_USAGE, "%s[%zu]: guest_mac '%s' is not a "
					       "unicast MAC (aa:bb:cc:dd:ee:ff)", where, i, show(mac).s);
			o->has_mac = true;
		}
	}
	return 0;
}

int load_request_parse(json_t *body, struct load_request *r, struct cv_error *err)
{
	memset(r, 0, sizeof(*r));
	static const char *const keys[] = { "snapshot_path", "mem_backend", "mem_file_path",
					    "enable_diff_snapshots", "track_dirty_pages",
					    "resume_vm", "network_overrides", "vsock_override",
					    "cvisor", NULL };
	const char *unknown;
	if (!json_is_object(body))
		return cv_fail(err, CV_EXIT_USAGE, "this request needs a JSON object body");
	if (!api_only_keys(body, keys, &unknown))
		return cv_fail(err, CV_EXIT_USAGE, "unknown field '%s'", show(unknown).s);
	if (get_nonempty(body, "snapshot_path", true, &r->snapshot_path, err) < 0 ||
	    get_nonempty(body, "mem_file_path", false, &r->mem_path, err) < 0)
		return -1;
	json_t *mb = json_object_get(body, "mem_backend");
	if (mb && r->mem_path)
		return cv_fail(err, CV_EXIT_USAGE, "give mem_backend or mem_file_path, not both");
	if (mb) {
		static const char *const mb_keys[] = { "backend_type", "backend_path", NULL };
		const char *type;
		if (!json_is_object(mb))
			return cv_fail(err, CV_EXIT_USAGE, "'mem_backend' must be an object");
		if (!api_only_keys(mb, mb_keys, &unknown))
			return cv_fail(err, CV_EXIT_USAGE, "mem_backend: unknown field '%s'",
				       show(unknown).s);
		if (api_get_string(mb, "backend_type", true, &type, err) < 0 ||
		    get_nonempty(mb, "backend_path", true, &r->mem_path, err) < 0)
			return cv_error_wrap(err, "mem_backend");
		if (strcmp(type, "File") != 0)
			return cv_fail(err, CV_EXIT_USAGE, "mem_backend: backend_type \"%s\" is not "
				       "supported (only \"File\"; cvisor has no userfaultfd backend)",
				       show(type).s);
	}
	if (!r->mem_path)
		return cv_fail(err, CV_EXIT_USAGE, "missing field 'mem_backend' (or the older "
			       "'mem_file_path')");
	bool a = false, b = false;
	if (api_get_bool(body, "enable_diff_snapshots", false, &a, err) < 0 ||
	    api_get_bool(body, "track_dirty_pages", false, &b, err) < 0 ||
	    api_get_bool(body, "resume_vm", false, &r->resume_vm, err) < 0)
		return -1;
	r->track_dirty_pages = a || b;
	json_t *nets = json_object_get(body, "network_overrides");
	if (nets && parse_nets(nets, false, r, err) < 0)
		return -1;
	json_t *vo = json_object_get(body, "vsock_override");
	if (vo) {
		static const char *const vo_keys[] = { "uds_path", NULL };
		if (!json_is_object(vo))
			return cv_fail(err, CV_EXIT_USAGE, "'vsock_override' must be an object");
		if (!api_only_keys(vo, vo_keys, &unknown))
			return cv_fail(err, CV_EXIT_USAGE, "vsock_override: unknown field '%s'",
				       show(unknown).s);
		if (get_nonempty(vo, "uds_path", true, &r->vsock_uds, err) < 0)
			return cv_error_wrap(err, "vsock_override");
	}
	json_t *cv = json_object_get(body, "cvisor");
	if (cv) {
		static const char *const cv_keys[] = { "vsock_cid", "network_overrides", NULL };
		if (!json_is_object(cv))
			return cv_fail(err, CV_EXIT_USAGE, "'cvisor' must be an object");
		if (!api_only_keys(cv, cv_keys, &unknown))
			return cv_fail(err, CV_EXIT_USAGE, "cvisor: unknown field '%s'",
				       show(unknown).s);
		uint64_t cid;
		int got = api_get_u64(cv, "vsock_cid", false, 3, 0xfffffffeu, &cid, err);
		if (got < 0)
			return cv_error_wrap(err, "cvisor (CIDs 0-2 and 2^32-1 are reserved)");
		if (json_object_get(cv, "vsock_cid")) {
			r->has_vsock_cid = true;
			r->vsock_cid = (uint32_t)cid;
		}
		json_t *cnets = json_object_get(cv, "network_overrides");
		if (cnets && parse_nets(cnets, true, r, err) < 0)
			return -1;
	}
	return 0;
}

/*
 * The request's overrides applied to the snapshot's device configuration. Strings are copied
 * into cfg: the request body is gone once the VM runs, the configuration is not.
 */
static int apply_overrides(struct snap_config *cfg, const struct load_request *r,
			   struct cv_error *err)
{
	struct device_config *dc = &cfg->dev;
	for (unsigned k = 0; k < r->n_nets; k++) {
		const struct load_net_override *o = &r->nets[k];
		unsigned i = 0;
		while (i < dc->n_nets && strcmp(dc->nets[i].id, o->iface_id) != 0)
			i++;
		if (i == dc->n_nets) {
			char have[256] = "";
			for (unsigned j = 0; j < dc->n_nets; j++)
				snprintf(have + strlen(have), sizeof(have) - strlen(have), "%s%s",
					 j ? ", " : "", dc->nets[j].id);
			return cv_fail(err, CV_EXIT_USAGE, "network override: the snapshot has no "
				       "interface '%s' (it has: %s)", show(o->iface_id).s,
				       dc->n_nets ? have : "none");
		}
		struct net_config *n = &dc->nets[i];
		if (o->host_dev_name) {
			if (cv_format(cfg->net_tap[i], sizeof(cfg->net_tap[i]), err, "%s",
				      o->host_dev_name) < 0)
				return -1;
			n->tap = cfg->net_tap[i];
		}
		if (o->has_mac) {
			memcpy(n->mac, o->mac, 6);
			n->mac_override = true;
		}
	}
	for (unsigned i = 0; i < dc->n_nets; i++)
		if (!dc->nets[i].tap)
			return cv_fail(err, CV_EXIT_USAGE, "interface '%s' was an open file "
				       "descriptor in the snapshotted VM: name its TAP device with "
				       "network_overrides", dc->nets[i].id);
	if ((r->vsock_uds || r->has_vsock_cid) && !dc->vsock.enabled)
		return cv_fail(err, CV_EXIT_USAGE, "vsock override: the snapshot has no vsock "
			       "device");
	if (r->vsock_uds &&
	    cv_format(cfg->vsock_path, sizeof(cfg->vsock_path), err, "%s", r->vsock_uds) < 0)
		return -1;
	if (r->has_vsock_cid)
		dc->vsock.cid = r->vsock_cid;
	return 0;
}

int vm_load_snapshot(struct vm *vm, struct snap_config *cfg, const struct load_request *r,
		     const struct vm_config *base, struct cv_error *err)
{
	struct snap_shape shape;
	if (vm_snapshot_read_config(r->snapshot_path, &shape, cfg, err) < 0)
		return -1;
	cfg->dev.transport = (enum virtio_transport)shape.transport;
	if (apply_overrides(cfg, r, err) < 0)
		return -1;
	struct vm_config vc = {
		.cpus = shape.n_vcpus,
		.memory_bytes = shape.memory_bytes,
		.console = base->console,
		.devices = cfg->dev,
		.sandbox = base->sandbox,
		.track_dirty_pages = r->track_dirty_pages,
	};
	if (vm_init(vm, &vc, err) < 0 ||
	    vm_restore(vm, r->snapshot_path, r->mem_path, err) < 0) {
		vm_destroy(vm);
		return -1;
	}
	if (!r->resume_vm)
		vm_start_paused(vm);
	return 0;
}
