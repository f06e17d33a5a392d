/*
 * Firecracker-shaped JSON <-> struct vmm_setup: the bodies of the pre-boot API requests
 * (PUT /boot-source, /machine-config, /drives/ID, /network-interfaces/ID, /vsock, /entropy,
 * /balloon, /logger, /metrics) and the --config-file document, which has the same objects
 * under the same names ("boot-source", "drives": [...], ...). Field names, required fields
 * and defaults are Firecracker's v1 API; unknown fields, wrong types and out-of-range values
 * are refused with a usage error naming the field. A refused request leaves the setup as it
 * was. Nothing here touches a VM: the API routes (api_setup.c) decide when a request is allowed.
 */
#ifndef CVISOR_VMM_FCJSON_H
#define CVISOR_VMM_FCJSON_H

#include <jansson.h>
#include <stdbool.h>

#include "error.h"
#include "ratelimit_config.h"
#include "setup.h"

/* Longest drive_id / iface_id (Firecracker: alphanumerics and '_'). */
#define FC_MAX_ID 64
#define FC_MAX_BOOT_ARGS 2048    /* x86 COMMAND_LINE_SIZE */
/* Longest refill_time we take: one day. */
#define FC_MAX_REFILL_MS (24ULL * 3600 * 1000)

/* {"bandwidth": {size, one_time_burst?, refill_time}, "ops": {...}}; both parts optional. */
int fc_parse_rate_limiter(json_t *v, const char *what, struct rate_limiter_config *out,
			  struct cv_error *err);
json_t *fc_rate_limiter_json(const struct rate_limiter_config *rl);

int fc_put_boot_source(struct vmm_setup *s, json_t *body, struct cv_error *err);
/* PUT (patch false): vcpu_count and mem_size_mib required, others back to defaults. */
int fc_put_machine_config(struct vmm_setup *s, json_t *body, bool patch, struct cv_error *err);
/* path_id: the {drive_id} of the URL, which must match the body's; NULL (config file): none. */
int fc_put_drive(struct vmm_setup *s, const char *path_id, json_t *body, struct cv_error *err);
int fc_put_net(struct vmm_setup *s, const char *path_id, json_t *body, struct cv_error *err);
int fc_put_vsock(struct vmm_setup *s, json_t *body, struct cv_error *err);
int fc_put_entropy(struct vmm_setup *s, json_t *body, struct cv_error *err);
int fc_put_balloon(struct vmm_setup *s, json_t *body, struct cv_error *err);
int fc_put_logger(struct vmm_setup *s, json_t *body, struct cv_error *err);
int fc_put_metrics(struct vmm_setup *s, json_t *body, struct cv_error *err);

/* A whole configuration document (the --config-file object). */
int fc_load_config(struct vmm_setup *s, json_t *doc, struct cv_error *err);
int fc_load_config_file(struct vmm_setup *s, const char *path, struct cv_error *err);

/* GET /vm/config: the setup in the --config-file shape (loadable again). */
json_t *fc_config_json(const struct vmm_setup *s);
json_t *fc_machine_config_json(const struct vmm_setup *s);

/* PATCH /drives/ID after boot: a new backing file and/or rate limiter. */
struct fc_drive_patch {
	const char *path;            /* NULL: unchanged (points into the request body) */
	bool has_rate_limiter;
	struct rate_limiter_config rate_limiter;
};
int fc_parse_drive_patch(json_t *body, const char *path_id, struct fc_drive_patch *out,
			 struct cv_error *err);

/* PATCH /network-interfaces/ID after boot: new rate limiters. */
struct fc_net_patch {
	bool has_rx, has_tx;
	struct rate_limiter_config rx, tx;
};
int fc_parse_net_patch(json_t *body, const char *path_id, struct fc_net_patch *out,
		       struct cv_error *err);

/* An id as Firecracker takes them: 1..FC_MAX_ID of [A-Za-z0-9_]. */
bool fc_valid_id(const char *id);

#endif
