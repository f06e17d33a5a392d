/*
 * I/O rate limiter settings as the API and the command line give them (Firecracker's
 * RateLimiter object): a bandwidth bucket (bytes) and an operations bucket, each with a size,
 * a one-time burst and the time in milliseconds to refill the whole size. A bucket with enabled
 * false, size 0 or refill_time_ms 0 does not limit. The limiter itself is ratelimit.h.
 */
#ifndef CVISOR_VMM_RATELIMIT_CONFIG_H
#define CVISOR_VMM_RATELIMIT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

struct token_bucket_config { uint64_t size, one_time_burst, refill_time_ms; bool enabled; };
struct rate_limiter_config { struct token_bucket_config bandwidth, ops; };

#endif
