/*
 * Firecracker-shaped configuration JSON (see fcjson.h). Every parser reads the whole body into
 * locals first and commits to the setup only when all of it is valid.
 */
#include "fcjson.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "devopts.h"
#include "http.h"
#include "util.h"

bool fc_valid_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > FC_MAX_ID)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)id[i]) && id[i] != '_')
			return false;
	return true;
}

static int need_object(json_t *v, const char *what, struct cv_error *err)
{
	if (!v || !json_is_object(v))
		return cv_fail(err, CV_EXIT_USAGE, "%s must be a JSON object", what);
	return 0;
}

static int only_keys(json_t *obj, const char *what, const char *const *keys, struct cv_error *err)
{
	const char *unknown;
	if (need_object(obj, what, err) < 0)
		return -1;
	if (!api_only_keys(obj, keys, &unknown))
		return cv_fail(err, CV_EXIT_USAGE, "%s: unknown field '%s'", what, unknown);
	return 0;
}

/* A string field that must not be empty. */
static int get_path(json_t *o, const char *key, bool required, const char **out,
		    struct cv_error *err)
{
	int rc = api_get_string(o, key, required, out, err);
	if (rc == 1 && (!**out || strlen(*out) >= 4096))
		return cv_fail(err, CV_EXIT_USAGE, "field '%s' must be a path of 1 to 4095 bytes", key);
	return rc;
}

static int get_enum(json_t *o, const char *key, const char *const *names, int *out,
		    struct cv_error *err)
{
	const char *v;
	int rc = api_get_string(o, key, false, &v, err);
	if (rc <= 0)
		return rc;
	for (int i = 0; names[i]; i++) {
		if (strcasecmp(names[i], v) == 0) {
			*out = i;
			return 1;
		}
	}
	char list[256] = "";
	for (int i = 0; names[i]; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"%s\"", i ? ", " : "",
			 names[i]);
	return cv_fail(err, CV_EXIT_USAGE, "field '%s' must be one of %s", key, list);
}

static int parse_bucket(json_t *v, const char *what, struct token_bucket_config *out,
			struct cv_error *err)
{
	static const char *const keys[] = { "size", "one_time_burst", "refill_time", NULL };
	memset(out, 0, sizeof(*out));
	if (!v || json_is_null(v))
		return 0;
	if (only_keys(v, what, keys, err) < 0)
		return -1;
	if (api_get_u64(v, "size", true, 0, INT64_MAX, &out->size, err) < 0 ||
	    api_get_u64(v, "one_time_burst", false, 0, INT64_MAX, &out->one_time_burst, err) < 0 ||
	    api_get_u64(v, "refill_time", true, 0, FC_MAX_REFILL_MS, &out->refill_time_ms, err) < 0)
		return cv_error_wrap(err, "%s", what);
	out->enabled = out->size && out->refill_time_ms;
	return 0;
}

int fc_parse_rate_limiter(json_t *v, const char *what, struct rate_limiter_config *out,
			  struct cv_error *err)
{
	static const char *const keys[] = { "bandwidth", "ops", NULL };
	memset(out, 0, sizeof(*out));
	if (!v || json_is_null(v))
		return 0;
	if (only_keys(v, what, keys, err) < 0)
		return -1;
	char sub[96];
	snprintf(sub, sizeof(sub), "%s.bandwidth", what);
	if (parse_bucket(json_object_get(v, "bandwidth"), sub, &out->bandwidth, err) < 0)
		return -1;
	snprintf(sub, sizeof(sub), "%s.ops", what);
	return parse_bucket(json_object_get(v, "ops"), sub, &out->ops, err);
}

static json_t *bucket_json(const struct token_bucket_config *b)
{
	json_t *o = json_pack("{s:I, s:I}", "size", (json_int_t)b->size, "refill_time",
			      (json_int_t)b->refill_time_ms);
	if (o && b->one_time_burst)
		json_object_set_new(o, "one_time_burst", json_integer((json_int_t)b->one_time_burst));
	return o;
}

json_t *fc_rate_limiter_json(const struct rate_limiter_config *rl)
{
	if (!rate_limiter_enabled(rl))
		return json_null();
	json_t *o = json_object();
	if (o && rl->bandwidth.enabled)
		json_object_set_new(o, "bandwidth", bucket_json(&rl->bandwidth));
	if (o && rl->ops.enabled)
		json_object_set_new(o, "ops", bucket_json(&rl->ops));
	return o;
}

/* The file must be there and readable (Firecracker opens it when configured). */
static int check_file(const char *what, const char *path, bool write, struct cv_error *err)
{
	if (access(path, R_OK | (write ? W_OK : 0)) < 0)
		return cv_fail_errno(err, CV_EXIT_NOINPUT, "%s '%s'", what, path);
	return 0;
}

/* A pool copy of value (NULL stays NULL). The old string is released after the commit. */
static int dup_str(struct vmm_setup *s, const char *value, const char **out, struct cv_error *err)
{
	*out = NULL;
	if (value && !(*out = str_pool_dup(&s->pool, value)))
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	return 0;
}

int fc_put_boot_source(struct vmm_setup *s, json_t *body, struct cv_error *err)
{
	static const char *const keys[] = { "kernel_image_path", "boot_args", "initrd_path", NULL };
	const char *kernel, *args = NULL, *initrd = NULL;
	if (only_keys(body, "boot-source", keys, err) < 0)
		return -1;
	if (get_path(body, "kernel_image_path", true, &kernel, err) < 0 ||
	    api_get_string(body, "boot_args", false, &args, err) < 0 ||
	    get_path(body, "initrd_path", false, &initrd, err) < 0)
		return cv_error_wrap(err, "boot-source");
	if (args && strlen(args) >= FC_MAX_BOOT_ARGS)
		return cv_fail(err, CV_EXIT_USAGE, "boot-source: boot_args is longer than %d bytes",
			       FC_MAX_BOOT_ARGS - 1);
	if (check_file("kernel_image_path", kernel, false, err) < 0 ||
	    (initrd && check_file("initrd_path", initrd, false, err) < 0))
		return cv_error_wrap(err, "boot-source");
	const char *k, *a, *i;
	if (dup_str(s, kernel, &k, err) < 0 || dup_str(s, args, &a, err) < 0 ||
	    dup_str(s, initrd, &i, err) < 0)
		return -1;
	/* The default boot args are a literal, which the pool does not own. */
	str_pool_release(&s->pool, s->boot.kernel);
	str_pool_release(&s->pool, s->boot.cmdline);
	str_pool_release(&s->pool, s->boot.n_initrds ? s->boot.initrds[0] : NULL);
	s->boot.kernel = k;
	s->boot.cmdline = args ? a : SETUP_FC_BOOT_ARGS;
	s->boot.initrds[0] = i;
	s->boot.n_initrds = i ? 1 : 0;
	return 0;
}

int fc_put_machine_config(struct vmm_setup *s, json_t *body, bool patch, struct cv_error *err)
{
	static const char *const keys[] = { "vcpu_count", "mem_size_mib", "smt",
					    "track_dirty_pages", "cpu_template", "huge_pages", NULL };
	static const char *const templates[] = { "None", NULL };
	static const char *const huge[] = { "None", NULL };
	if (only_keys(body, "machine-config", keys, err) < 0)
		return -1;
	uint64_t cpus = patch ? s->vm.cpus : 1, mib = patch ? s->vm.memory_bytes >> 20 : 0;
	bool smt = patch ? s->smt : false, dirty = patch ? s->vm.track_dirty_pages : false;
	uint64_t host_mib = cv_host_memory_bytes() >> 20;
	if (host_mib < VM_MIN_MEMORY_MIB)
		host_mib = 1ULL << 24;        /* unknown: 16 TiB, mmap decides */
	int tmpl = 0, hp = 0;
	if (api_get_u64(body, "vcpu_count", !patch, 1, SETUP_MAX_VCPUS, &cpus, err) < 0 ||
	    api_get_u64(body, "mem_size_mib", !patch, VM_MIN_MEMORY_MIB, host_mib, &mib, err) < 0 ||
	    api_get_bool(body, "smt", false, &smt, err) < 0 ||
	    api_get_bool(body, "track_dirty_pages", false, &dirty, err) < 0 ||
	    get_enum(body, "cpu_template", templates, &tmpl, err) < 0 ||
	    get_enum(body, "huge_pages", huge, &hp, err) < 0)
		return cv_error_wrap(err, "machine-config");
	if (smt && cpus > 1 && cpus % 2)
		return cv_fail(err, CV_EXIT_USAGE, "machine-config: with smt, vcpu_count must be 1 or "
			       "even (it is %llu)", (unsigned long long)cpus);
	s->vm.cpus = (unsigned)cpus;
	s->vm.memory_bytes = CV_MiB(mib);
	s->smt = smt;
	s->vm.track_dirty_pages = dirty;
	return 0;
}

/* In the API's order: index 0 is the default when the field is absent. */
static const char *const cache_names[] = { "Unsafe", "Writeback", NULL };
static const char *const engine_names[] = { "Sync", "Async", NULL };

static int check_path_id(const char *what, const char *path_id, const char *body_id,
			 struct cv_error *err)
{
	if (!fc_valid_id(body_id))
		return cv_fail(err, CV_EXIT_USAGE, "%s '%s' must be 1 to %d letters, digits or '_'",
			       what, body_id, FC_MAX_ID);
	if (path_id && strcmp(path_id, body_id) != 0)
		return cv_fail(err, CV_EXIT_USAGE, "the %s in the path ('%s') does not match the one "
			       "in the body ('%s')", what, path_id, body_id);
	return 0;
}

int fc_put_drive(struct vmm_setup *s, const char *path_id, json_t *body, struct cv_error *err)
{
	static const char *const keys[] = { "drive_id", "path_on_host", "is_root_device",
					    "is_read_only", "partuuid", "cache_type", "io_engine",
					    "rate_limiter", NULL };
	struct device_config *dc = &s->vm.devices;
	struct disk_config d = { 0 };
	const char *id, *path, *partuuid = NULL;
	int cache = 0, engine = 0;
	if (only_keys(body, "drive", keys, err) < 0)
		return -1;
	if (api_get_string(body, "drive_id", true, &id, err) < 0 ||
	    get_path(body, "path_on_host", true, &path, err) < 0 ||
	    api_get_bool(body, "is_root_device", true, &d.is_root, err) < 0 ||
	    api_get_bool(body, "is_read_only", false, &d.read_only, err) < 0 ||
	    api_get_string(body, "partuuid", false, &partuuid, err) < 0 ||
	    get_enum(body, "cache_type", cache_names, &cache, err) < 0 ||
	    get_enum(body, "io_engine", engine_names, &engine, err) < 0)
		return cv_error_wrap(err, "drive");
	if (check_path_id("drive_id", path_id, id, err) < 0)
		return -1;
	if (partuuid && (!*partuuid || strlen(partuuid) > 64 || strchr(partuuid, ' ')))
		return cv_fail(err, CV_EXIT_USAGE, "drive %s: partuuid must be 1 to 64 bytes without "
			       "spaces", id);
	if (fc_parse_rate_limiter(json_object_get(body, "rate_limiter"), "rate_limiter",
				  &d.rate_limiter, err) < 0)
		return cv_error_wrap(err, "drive %s", id);
	if (check_file("path_on_host", path, !d.read_only, err) < 0)
		return cv_error_wrap(err, "drive %s", id);
	int at = vmm_setup_find_disk(s, id);
	for (unsigned i = 0; d.is_root && i < dc->n_disks; i++)
		if (dc->disks[i].is_root && (int)i != at)
			return cv_fail(err, CV_EXIT_USAGE, "drive %s: a root device already exists", id);
	if (at < 0 && dc->n_disks == VM_MAX_DISKS)
		return cv_fail(err, CV_EXIT_USAGE, "drive %s: at most %d drives", id, VM_MAX_DISKS);
	d.cache = cache == 0 ? DISK_CACHE_UNSAFE : DISK_CACHE_WRITEBACK;
	d.io_engine = (enum disk_io_engine)engine;
	struct disk_config *slot = at < 0 ? &dc->disks[dc->n_disks] : &dc->disks[at];
	const char *p, *i, *u;
	if (dup_str(s, path, &p, err) < 0 || dup_str(s, id, &i, err) < 0 ||
	    dup_str(s, partuuid, &u, err) < 0)
		return -1;
	if (at >= 0) {
		str_pool_release(&s->pool, slot->path);
		str_pool_release(&s->pool, slot->id);
		str_pool_release(&s->pool, slot->partuuid);
	}
	d.path = p;
	d.id = i;
	d.partuuid = u;
	*slot = d;
	if (at < 0)
		dc->n_disks++;
	return 0;
}

int fc_put_net(struct vmm_setup *s, const char *path_id, json_t *body, struct cv_error *err)
{
	static const char *const keys[] = { "iface_id", "host_dev_name", "guest_mac",
					    "rx_rate_limiter", "tx_rate_limiter", NULL };
	struct device_config *dc = &s->vm.devices;
	struct net_config n = { .tap_fd = -1 };
	const char *id, *tap, *mac = NULL;
	if (only_keys(body, "network-interface", keys, err) < 0)
		return -1;
	if (api_get_string(body, "iface_id", true, &id, err) < 0 ||
	    api_get_string(body, "host_dev_name", true, &tap, err) < 0 ||
	    api_get_string(body, "guest_mac", false, &mac, err) < 0)
		return cv_error_wrap(err, "network-interface");
	if (check_path_id("iface_id", path_id, id, err) < 0)
		return -1;
	if (!*tap || strlen(tap) > 15 || strchr(tap, '/'))
		return cv_fail(err, CV_EXIT_USAGE, "network-interface %s: host_dev_name must be an "
			       "interface name of 1 to 15 bytes", id);
	if (mac) {
		if (devopts_mac(mac, n.mac) < 0)
			return cv_fail(err, CV_EXIT_USAGE, "network-interface %s: guest_mac '%s' is not "
				       "a unicast MAC address (aa:bb:cc:dd:ee:ff)", id, mac);
		n.has_mac = true;
	}
	if (fc_parse_rate_limiter(json_object_get(body, "rx_rate_limiter"), "rx_rate_limiter",
				  &n.rx_rate_limiter, err) < 0 ||
	    fc_parse_rate_limiter(json_object_get(body, "tx_rate_limiter"), "tx_rate_limiter",
				  &n.tx_rate_limiter, err) < 0)
		return cv_error_wrap(err, "network-interface %s", id);
	int at = vmm_setup_find_net(s, id);
	for (unsigned i = 0; i < dc->n_nets; i++) {
		if ((int)i == at)
			continue;
		if (dc->nets[i].tap && strcmp(dc->nets[i].tap, tap) == 0)
			return cv_fail(err, CV_EXIT_USAGE, "network-interface %s: host_dev_name '%s' is "
				       "already in use", id, tap);
		if (n.has_mac && dc->nets[i].has_mac && !memcmp(dc->nets[i].mac, n.mac, 6))
			return cv_fail(err, CV_EXIT_USAGE, "network-interface %s: guest_mac %s is "
				       "already in use", id, mac);
	}
	if (at < 0 && dc->n_nets == VM_MAX_NETS)
		return cv_fail(err, CV_EXIT_USAGE, "network-interface %s: at most %d interfaces", id,
			       VM_MAX_NETS);
	struct net_config *slot = at < 0 ? &dc->nets[dc->n_nets] : &dc->nets[at];
	const char *t, *i;
	if (dup_str(s, tap, &t, err) < 0 || dup_str(s, id, &i, err) < 0)
		return -1;
	if (at >= 0) {
		str_pool_release(&s->pool, slot->tap);
		str_pool_release(&s->pool, slot->id);
	}
	n.tap = t;
	n.id = i;
	*slot = n;
	if (at < 0)
		dc->n_nets++;
	return 0;
}

int fc_put_vsock(struct vmm_setup *s, json_t *body, struct cv_error *err)
{
	static const char *const keys[] = { "guest_cid", "uds_path", "vsock_id", NULL };
	uint64_t cid;
	const char *uds, *vid;
	if (only_keys(body, "vsock", keys, err) < 0)
		return -1;
	if (api_get_u64(body, "guest_cid", true, 3, UINT32_MAX - 1, &cid, err) < 0 ||
	    get_path(body, "uds_path", true, &uds, err) < 0 ||
	    api_get_string(body, "vsock_id", false, &vid, err) < 0)
		return cv_error_wrap(err, "vsock");
	if (strlen(uds) >= 100)
		return cv_fail(err, CV_EXIT_USAGE, "vsock: uds_path must be shorter than 100 bytes "
			       "(it names Unix sockets, with _PORT appended)");
	const char *u;
	if (dup_str(s, uds, &u, err) < 0)
		return -1;
	str_pool_release(&s->pool, s->vm.devices.vsock.uds_path);
	s->vm.devices.vsock = (struct vsock_config){ .enabled = true, .cid = (uint32_t)cid,
						     .uds_path = u };
	return 0;
}

int fc_put_entropy(struct vmm_setup *s, json_t *body, struct cv_error *err)
{
	static const char *const keys[] = { "rate_limiter", NULL };
	struct rate_limiter_config rl;
	if (body && only_keys(body, "entropy", keys, err) < 0)
		return -1;
	if (fc_parse_rate_limiter(body ? json_object_get(body, "rate_limiter") : NULL,
				  "rate_limiter", &rl, err) < 0)
		return cv_error_wrap(err, "entropy");
	s->vm.devices.rng = true;
	s->vm.devices.rng_rate_limiter = rl;
	return 0;
}

int fc_put_balloon(struct vmm_setup *s, json_t *body, struct cv_error *err)
{
	static const char *const keys[] = { "amount_mib", "deflate_on_oom",
					    "stats_polling_interval_s", "free_page_reporting", NULL };
	struct balloon_config b = { .enabled = true };
	uint64_t mib, stats = 0;
	if (only_keys(body, "balloon", keys, err) < 0)
		return -1;
	if (api_get_u64(body, "amount_mib", true, 0, 1 << 24, &mib, err) < 0 ||
	    api_get_bool(body, "deflate_on_oom", true, &b.deflate_on_oom, err) < 0 ||
	    api_get_u64(body, "stats_polling_interval_s", false, 0, 3600, &stats, err) < 0 ||
	    api_get_bool(body, "free_page_reporting", false, &b.free_page_reporting, err) < 0)
		return cv_error_wrap(err, "balloon");
	b.target_mib = (uint32_t)mib;
	b.stats_interval_s = (unsigned)stats;
	s->vm.devices.balloon = b;
	return 0;
}

static const char *const level_names[] = { "Off", "Error", "Warning", "Info", "Debug", "Trace",
					   NULL };

int fc_put_logger(struct vmm_setup *s, json_t *body, struct cv_error *err)
{
	static const char *const keys[] = { "log_path", "level", "show_level", "show_log_origin",
					    "module", NULL };
	struct logger_config l = { .set = true, .level = LOG_LEVEL_INFO };
	const char *path = NULL, *module;
	int level = (int)l.level;
	if (only_keys(body, "logger", keys, err) < 0)
		return -1;
	if (get_path(body, "log_path", false, &path, err) < 0 ||
	    get_enum(body, "level", level_names, &level, err) < 0 ||
	    api_get_bool(body, "show_level", false, &l.show_level, err) < 0 ||
	    api_get_bool(body, "show_log_origin", false, &l.show_origin, err) < 0 ||
	    api_get_string(body, "module", false, &module, err) < 0)
		return cv_error_wrap(err, "logger");
	l.level = (enum log_level)level;
	if (dup_str(s, path, &l.path, err) < 0)
		return -1;
	str_pool_release(&s->pool, s->logger.path);
	s->logger = l;
	return 0;
}

int fc_put_metrics(struct vmm_setup *s, json_t *body, struct cv_error *err)
{
	static const char *const keys[] = { "metrics_path", NULL };
	const char *path;
	if (only_keys(body, "metrics", keys, err) < 0)
		return -1;
	if (get_path(body, "metrics_path", true, &path, err) < 0)
		return cv_error_wrap(err, "metrics");
	const char *p;
	if (dup_str(s, path, &p, err) < 0)
		return -1;
	str_pool_release(&s->pool, s->metrics.path);
	s->metrics.path = p;
	return 0;
}

static int load_array(struct vmm_setup *s, json_t *arr, const char *what,
		      int (*put)(struct vmm_setup *, const char *, json_t *, struct cv_error *),
		      struct cv_error *err)
{
	if (!arr)
		return 0;
	if (!json_is_array(arr))
		return cv_fail(err, CV_EXIT_USAGE, "'%s' must be an array", what);
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v)
		if (put(s, NULL, v, err) < 0)
			return cv_error_wrap(err, "%s[%zu]", what, i);
	return 0;
}

int fc_load_config(struct vmm_setup *s, json_t *doc, struct cv_error *err)
{
	static const char *const keys[] = { "boot-source", "machine-config", "drives",
					    "network-interfaces", "vsock", "entropy", "balloon",
					    "logger", "metrics", NULL };
	if (only_keys(doc, "the configuration", keys, err) < 0)
		return -1;
	json_t *v;
	if (!(v = json_object_get(doc, "boot-source")))
		return cv_fail(err, CV_EXIT_USAGE, "the configuration has no 'boot-source'");
	if (fc_put_boot_source(s, v, err) < 0)
		return -1;
	if ((v = json_object_get(doc, "machine-config")) && fc_put_machine_config(s, v, false, err) < 0)
		return -1;
	if (load_array(s, json_object_get(doc, "drives"), "drives", fc_put_drive, err) < 0 ||
	    load_array(s, json_object_get(doc, "network-interfaces"), "network-interfaces",
		       fc_put_net, err) < 0)
		return -1;
	if ((v = json_object_get(doc, "vsock")) && !json_is_null(v) && fc_put_vsock(s, v, err) < 0)
		return -1;
	if ((v = json_object_get(doc, "entropy")) && !json_is_null(v) &&
	    fc_put_entropy(s, v, err) < 0)
		return -1;
	if ((v = json_object_get(doc, "balloon")) && !json_is_null(v) &&
	    fc_put_balloon(s, v, err) < 0)
		return -1;
	if ((v = json_object_get(doc, "logger")) && !json_is_null(v) && fc_put_logger(s, v, err) < 0)
		return -1;
	if ((v = json_object_get(doc, "metrics")) && !json_is_null(v) &&
	    fc_put_metrics(s, v, err) < 0)
		return -1;
	return 0;
}

int fc_load_config_file(struct vmm_setup *s, const char *path, struct cv_error *err)
{
	json_error_t jerr;
	json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc)
		return cv_fail(err, access(path, R_OK) < 0 ? CV_EXIT_NOINPUT : CV_EXIT_USAGE,
			       "--config-file %s: line %d column %d: %s", path, jerr.line, jerr.column,
			       jerr.text);
	int rc = fc_load_config(s, doc, err);
	json_decref(doc);
	if (rc < 0)
		return cv_error_wrap(err, "--config-file %s", path);
	return 0;
}

json_t *fc_machine_config_json(const struct vmm_setup *s)
{
	return json_pack("{s:i, s:I, s:b, s:b, s:s}", "vcpu_count", (int)s->vm.cpus, "mem_size_mib",
			 (json_int_t)(s->vm.memory_bytes >> 20), "smt", s->smt, "track_dirty_pages",
			 s->vm.track_dirty_pages, "huge_pages", "None");
}

static json_t *opt_string(const char *v)
{
	return v ? json_string(v) : json_null();
}

static json_t *mac_json(const struct net_config *n)
{
	if (!n->has_mac)
		return json_null();
	char mac[18];
	snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0], n->mac[1], n->mac[2],
		 n->mac[3], n->mac[4], n->mac[5]);
	return json_string(mac);
}

json_t *fc_config_json(const struct vmm_setup *s)
{
	const struct device_config *dc = &s->vm.devices;
	json_t *doc = json_object();
	if (!doc)
		return NULL;
	json_t *boot = json_pack("{s:o, s:o, s:o}", "kernel_image_path", opt_string(s->boot.kernel),
				 "boot_args", opt_string(s->boot.cmdline), "initrd_path",
				 opt_string(s->boot.n_initrds ? s->boot.initrds[0] : NULL));
	json_object_set_new(doc, "boot-source", boot);
	json_object_set_new(doc, "machine-config", fc_machine_config_json(s));
	json_t *drives = json_array();
	for (unsigned i = 0; i < dc->n_disks; i++) {
		const struct disk_config *d = &dc->disks[i];
		char id[32];
		snprintf(id, sizeof(id), "drive%u", i);
		json_array_append_new(drives, json_pack(
			"{s:s, s:s, s:b, s:b, s:o, s:s, s:s, s:o}", "drive_id", d->id ? d->id : id,
			"path_on_host", d->path, "is_root_device", d->is_root, "is_read_only",
			d->read_only, "partuuid", opt_string(d->partuuid), "cache_type",
			cache_names[d->cache == DISK_CACHE_UNSAFE ? 0 : 1], "io_engine", engine_names[d->io_engine], "rate_limiter",
			fc_rate_limiter_json(&d->rate_limiter)));
	}
	json_object_set_new(doc, "drives", drives);
	json_t *nets = json_array();
	for (unsigned i = 0; i < dc->n_nets; i++) {
		const struct net_config *n = &dc->nets[i];
		char id[32], fd[32];
		snprintf(id, sizeof(id), "eth%u", i);
		snprintf(fd, sizeof(fd), "fd:%d", n->tap_fd);
		json_array_append_new(nets, json_pack(
			"{s:s, s:s, s:o, s:o, s:o}", "iface_id", n->id ? n->id : id, "host_dev_name",
			n->tap ? n->tap : fd, "guest_mac", mac_json(n), "rx_rate_limiter",
			fc_rate_limiter_json(&n->rx_rate_limiter), "tx_rate_limiter",
			fc_rate_limiter_json(&n->tx_rate_limiter)));
	}
	json_object_set_new(doc, "network-interfaces", nets);
	json_object_set_new(doc, "vsock", dc->vsock.enabled ?
			    json_pack("{s:I, s:s}", "guest_cid", (json_int_t)dc->vsock.cid,
				      "uds_path", dc->vsock.uds_path) : json_null());
	json_object_set_new(doc, "entropy", dc->rng ?
			    json_pack("{s:o}", "rate_limiter",
				      fc_rate_limiter_json(&dc->rng_rate_limiter)) : json_null());
	json_object_set_new(doc, "balloon", dc->balloon.enabled ?
			    json_pack("{s:I, s:b, s:I, s:b}", "amount_mib",
				      (json_int_t)dc->balloon.target_mib, "deflate_on_oom",
				      dc->balloon.deflate_on_oom, "stats_polling_interval_s",
				      (json_int_t)dc->balloon.stats_interval_s, "free_page_reporting",
				      dc->balloon.free_page_reporting) : json_null());
	json_object_set_new(doc, "logger", s->logger.set ?
			    json_pack("{s:o, s:s, s:b, s:b}", "log_path", opt_string(s->logger.path),
				      "level", level_names[s->logger.level], "show_level",
				      s->logger.show_level, "show_log_origin", s->logger.show_origin)
			    : json_null());
	json_object_set_new(doc, "metrics", s->metrics.path ?
			    json_pack("{s:s}", "metrics_path", s->metrics.path) : json_null());
	return doc;
}

int fc_parse_drive_patch(json_t *body, const char *path_id, struct fc_drive_patch *out,
			 struct cv_error *err)
{
	static const char *const keys[] = { "drive_id", "path_on_host", "rate_limiter", NULL };
	const char *id;
	memset(out, 0, sizeof(*out));
	if (only_keys(body, "drive", keys, err) < 0)
		return -1;
	if (api_get_string(body, "drive_id", true, &id, err) < 0 ||
	    get_path(body, "path_on_host", false, &out->path, err) < 0)
		return cv_error_wrap(err, "drive");
	if (check_path_id("drive_id", path_id, id, err) < 0)
		return -1;
	json_t *rl = json_object_get(body, "rate_limiter");
	out->has_rate_limiter = rl != NULL;
	if (fc_parse_rate_limiter(rl, "rate_limiter", &out->rate_limiter, err) < 0)
		return cv_error_wrap(err, "drive %s", id);
	return 0;
}

int fc_parse_net_patch(json_t *body, const char *path_id, struct fc_net_patch *out,
		       struct cv_error *err)
{
	static const char *const keys[] = { "iface_id", "rx_rate_limiter", "tx_rate_limiter", NULL };
	const char *id;
	memset(out, 0, sizeof(*out));
	if (only_keys(body, "network-interface", keys, err) < 0)
		return -1;
	if (api_get_string(body, "iface_id", true, &id, err) < 0)
		return cv_error_wrap(err, "network-interface");
	if (check_path_id("iface_id", path_id, id, err) < 0)
		return -1;
	json_t *rx = json_object_get(body, "rx_rate_limiter"), *tx =
		json_object_get(body, "tx_rate_limiter");
	out->has_rx = rx != NULL;
	out->has_tx = tx != NULL;
	if (fc_parse_rate_limiter(rx, "rx_rate_limiter", &out->rx, err) < 0 ||
	    fc_parse_rate_limiter(tx, "tx_rate_limiter", &out->tx, err) < 0)
		return cv_error_wrap(err, "network-interface %s", id);
	return 0;
}
