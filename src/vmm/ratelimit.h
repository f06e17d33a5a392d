/*
 * I/O rate limiting for virtio devices: a pair of token buckets (bytes and operations) with
 * Firecracker's semantics, and the timer that wakes a throttled device on the I/O thread.
 *
 * A bucket holds up to `size` tokens and starts full. It refills continuously at size tokens
 * per refill_time_ms (proportionally to the time elapsed, fractions of a token carried over),
 * never above size. `one_time_burst` tokens come on top once: they are spent first and never
 * refill. A request passes only if both buckets can pay for it; then both are charged, else
 * neither is, and the caller learns when it may retry (it leaves the request in its ring and
 * arms its timer for then: nothing sleeps or spins).
 *
 * Requests larger than the bucket: Firecracker lets such a request through at once, takes what
 * the bucket holds and blocks the limiter for the time the rest takes to refill (its
 * "over-consumption"). Here such a request waits until the bucket is full, then passes and
 * leaves the bucket in debt (a negative budget) that refilling pays back before anything else
 * passes. Both keep the long-run rate at size/refill_time; waiting for a full bucket keeps the
 * rule monotone (a request never passes sooner than a smaller one would) and a stream of
 * oversize requests still progresses, one per (request / size) refill times.
 *
 * Reconfiguring: a bucket whose settings do not change keeps its state; a changed one starts
 * afresh, full and with its one-time burst, as Firecracker's update does.
 *
 * The clock is injectable (nanoseconds, monotonic) so the arithmetic is testable without
 * sleeping; devices use rl_clock_monotonic. Not thread-safe: the owning device's lock guards it.
 */
#ifndef CVISOR_VMM_RATELIMIT_H
#define CVISOR_VMM_RATELIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "evloop.h"
#include "ratelimit_config.h"

/* Limits of the settings (beyond them the arithmetic could overflow; no real use needs more). */
#define RL_MAX_SIZE (1ULL << 60)
#define RL_MAX_REFILL_MS (1ULL << 40)      /* about 35 years */
/* Tokens one request may ask for; larger counts are charged as this many. */
#define RL_MAX_TOKENS (1ULL << 60)

typedef uint64_t (*rl_clock_fn)(void *ctx);

struct token_bucket {
	struct token_bucket_config cfg;   /* as given, to tell a change from a repeat */
	bool active;
	uint64_t size;
	uint64_t refill_ns;
	uint64_t burst;                   /* one-time burst left */
	int64_t budget;                   /* tokens; negative: debt of an oversize request */
	uint64_t frac;                    /* refill progress toward the next token, [0, refill_ns) */
	uint64_t last;                    /* clock at the last refill */
	/* What the last successful charge took, for rate_limiter_undo. */
	uint64_t undo_burst;
	uint64_t undo_budget;
};

struct rate_limiter {
	struct token_bucket bw;           /* bytes */
	struct token_bucket ops;          /* requests */
	rl_clock_fn clock;
	void *clock_ctx;
	uint64_t throttled;               /* times a request had to wait (statistics) */
};

uint64_t rl_clock_monotonic(void *ctx);

/* An inactive limiter on `clock` (NULL: rl_clock_monotonic). */
void rate_limiter_init(struct rate_limiter *rl, rl_clock_fn clock, void *clock_ctx);

/* Checks settings against the limits above; errors name `what` ("--disk x", "drive rootfs"). */
int rate_limiter_config_check(const struct rate_limiter_config *cfg, const char *what,
			      struct cv_error *err);

/* Applies checked settings (see "Reconfiguring" above). */
void rate_limiter_configure(struct rate_limiter *rl, const struct rate_limiter_config *cfg);

/* True if some bucket limits. */
bool rate_limiter_active(const struct rate_limiter *rl);

/*
 * Charges `bytes` and `ops` if both buckets can pay now and returns true. Otherwise charges
 * nothing, returns false and sets *retry_at to the clock time from which the same request will
 * pass (if nothing else is charged meanwhile).
 */
bool rate_limiter_consume(struct rate_limiter *rl, uint64_t bytes, uint64_t ops,
			  uint64_t *retry_at);

/* Gives back exactly what the last successful consume took (the request could not start). */
void rate_limiter_undo(struct rate_limiter *rl);

/*
 * A bucket's level, for snapshots and migration: what it holds, not when it last refilled
 * (clock readings mean nothing in another process or on another host).
 */
struct token_bucket_level {
	uint64_t burst;                   /* one-time burst left */
	int64_t budget;                   /* negative: debt */
	uint64_t frac;                    /* refill progress toward the next token */
};

/* The settings in force and the levels of both buckets, refilled up to now. */
void rate_limiter_save(struct rate_limiter *rl, struct rate_limiter_config *cfg,
		       struct token_bucket_level *bw, struct token_bucket_level *ops);

/*
 * Applies checked settings afresh and then the saved levels, each clamped to what the
 * settings allow; refilling starts now, so the time the state spent saved earns nothing.
 */
void rate_limiter_restore(struct rate_limiter *rl, const struct rate_limiter_config *cfg,
			  const struct token_bucket_level *bw, const struct token_bucket_level *ops);

/* Tokens a bucket could give right now (one-time burst included), for tests and metrics. */
int64_t token_bucket_available(struct token_bucket *b, uint64_t now);

/*
 * The wake-up of a throttled device: a timerfd on the I/O loop. When it fires, and the device
 * still waits (*waiting, under *lock), the wait flag is cleared and resume(opaque) is called
 * with the lock held, to process what was left in the ring. Arm and cancel may be called from
 * any thread (they are single syscalls).
 */
typedef void (*rl_resume_fn)(void *opaque);

struct rl_timer {
	int fd;
	struct evloop *loop;
	struct evloop_handler handler;
	bool registered;
	pthread_mutex_t *lock;
	bool *waiting;
	rl_resume_fn resume;
	void *opaque;
};

int rl_timer_init(struct rl_timer *t, struct evloop *loop, pthread_mutex_t *lock, bool *waiting,
		  rl_resume_fn resume, void *opaque, struct cv_error *err);
/* Fires once, `delay_ns` from now (0: as soon as the loop runs). Replaces any earlier arming. */
void rl_timer_arm(struct rl_timer *t, uint64_t delay_ns);
void rl_timer_cancel(struct rl_timer *t);
void rl_timer_destroy(struct rl_timer *t);

/*
 * For a device that found its limiter blocking at `now`: arms t for retry_at. Shared by the
 * devices so they all compute the delay the same way.
 */
void rl_timer_arm_at(struct rl_timer *t, const struct rate_limiter *rl, uint64_t retry_at);

#endif
