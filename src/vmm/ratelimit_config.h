/*
 * What a rate limiter is asked to do, as the control API and --config-file describe it
 * (Firecracker's RateLimiter object: {"bandwidth": TokenBucket, "ops": TokenBucket}), shared
 * between the configuration parser (fcjson.c) and the token-bucket implementation in
 * ratelimit.c. A bucket holds `size` tokens (bytes or operations), refilled completely every
 * refill_time_ms; one_time_burst extra tokens are granted once at start. A bucket with size or
 * refill time 0 does not limit (enabled is false).
 *
 * Live changes (PATCH /drives, PATCH /network-interfaces) go through struct rate_limit_hooks,
 * which the rate limiter implementation installs in struct vm (vm->rate_limit); without it the
 * API answers 400 "rate limiting not built".
 */
#ifndef CVISOR_VMM_RATELIMIT_CONFIG_H
#define CVISOR_VMM_RATELIMIT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

struct token_bucket_config {
	uint64_t size, one_time_burst, refill_time_ms;
	bool enabled;
};

struct rate_limiter_config {
	struct token_bucket_config bandwidth, ops;
};

static inline bool rate_limiter_enabled(const struct rate_limiter_config *rl)
{
	return rl->bandwidth.enabled || rl->ops.enabled;
}

struct vm;

/*
 * Applies new limits to a running device, given by its index in struct device_config (disks[],
 * nets[]). A NULL rl/rx/tx leaves that limiter as it is. Called on the API thread with the VM's
 * control lock held; returns 0 or -1 with err filled.
 */
struct rate_limit_hooks {
	int (*blk)(struct vm *vm, unsigned disk, const struct rate_limiter_config *rl,
		   struct cv_error *err);
	int (*net)(struct vm *vm, unsigned nic, const struct rate_limiter_config *rx,
		   const struct rate_limiter_config *tx, struct cv_error *err);
};

#endif
