/*
 * What a rate limiter is asked to do, as the control API and --config-file describe it
 * (Firecracker's RateLimiter object: {"bandwidth": TokenBucket, "ops": TokenBucket}), shared
 * between the configuration parser (fcjson.c) and the token-bucket implementation in
 * ratelimit.c. A bucket holds `size` tokens (bytes or operations), refilled completely every
 * refill_time_ms; one_time_burst extra tokens are granted once at start. A bucket with size or
 * refill time 0 does not limit (enabled is false).
 * Live changes (PATCH /drives, PATCH /network-interfaces) reach the devices through
 * vm_apply_rate_limiter (instance.h).
 */
#ifndef CVISOR_VMM_RATELIMIT_CONFIG_H
#define CVISOR_VMM_RATELIMIT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

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

#endif
