/*
 * Token buckets and the throttle timer (see ratelimit.h). Integer arithmetic only: refilling
 * multiplies elapsed nanoseconds by the size in 128 bits and keeps the remainder, so no token
 * is lost to rounding however often the bucket is looked at.
 */
#include "ratelimit.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define NS_PER_MS 1000000ULL
/* Farther than any real wait; keeps sums with the clock from overflowing. */
#define FAR_NS (1ULL << 62)

uint64_t rl_clock_monotonic(void *ctx)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t now_of(const struct rate_limiter *rl)
{
	return rl->clock(rl->clock_ctx);
}

/* ---- one bucket ---- */

static void bucket_setup(struct token_bucket *b, const struct token_bucket_config *cfg,
			 uint64_t now)
{
	memset(b, 0, sizeof(*b));
	b->cfg = *cfg;
	b->active = cfg->enabled && cfg->size && cfg->refill_time_ms;
	if (!b->active)
		return;
	b->size = cfg->size;
	b->refill_ns = cfg->refill_time_ms * NS_PER_MS;
	b->burst = cfg->one_time_burst;
	b->budget = (int64_t)cfg->size;
	b->last = now;
}

static bool same_config(const struct token_bucket_config *a, const struct token_bucket_config *b)
{
	return a->enabled == b->enabled && a->size == b->size &&
	       a->one_time_burst == b->one_time_burst && a->refill_time_ms == b->refill_time_ms;
}

/* Adds what the time since the last refill earned, up to the size. */
static void refill(struct token_bucket *b, uint64_t now)
{
	if (now <= b->last)
		return;              /* a clock that did not move (or an injected one going back) */
	uint64_t dt = now - b->last;
	b->last = now;
	if (b->budget >= (int64_t)b->size) {
		b->frac = 0;
		return;
	}
	unsigned __int128 acc = (unsigned __int128)dt * b->size + b->frac;
	unsigned __int128 earned = acc / b->refill_ns;
	uint64_t missing = (uint64_t)((int64_t)b->size - b->budget);
	if (earned >= missing) {
		b->budget = (int64_t)b->size;
		b->frac = 0;
	} else {
		b->budget += (int64_t)earned;
		b->frac = (uint64_t)(acc % b->refill_ns);
	}
}

/* Nanoseconds until the budget has grown by `deficit` tokens (> 0). */
static uint64_t time_for(const struct token_bucket *b, uint64_t deficit)
{
	unsigned __int128 need = (unsigned __int128)deficit * b->refill_ns;
	need = need > b->frac ? need - b->frac : 0;
	unsigned __int128 t = (need + b->size - 1) / b->size;
	return t > FAR_NS ? FAR_NS : (uint64_t)t;
}

/* 0 if the bucket can pay `tokens` now, else how long until it can. */
static uint64_t bucket_wait(const struct token_bucket *b, uint64_t tokens)
{
	if (!b->active || tokens <= b->burst)
		return 0;
	uint64_t rest = tokens - b->burst;
	/* An oversize request needs a full bucket, then runs it into debt. */
	int64_t need = (int64_t)(rest < b->size ? rest : b->size);
	if (b->budget >= need)
		return 0;
	return time_for(b, (uint64_t)(need - b->budget));
}

static void bucket_take(struct token_bucket *b, uint64_t tokens)
{
	if (!b->active) {
		b->undo_burst = b->undo_budget = 0;
		return;
	}
	uint64_t from_burst = tokens < b->burst ? tokens : b->burst;
	b->burst -= from_burst;
	b->budget -= (int64_t)(tokens - from_burst);
	b->undo_burst = from_burst;
	b->undo_budget = tokens - from_burst;
}

int64_t token_bucket_available(struct token_bucket *b, uint64_t now)
{
	if (!b->active)
		return INT64_MAX;
	refill(b, now);
	return b->budget + (int64_t)(b->burst > RL_MAX_TOKENS ? RL_MAX_TOKENS : b->burst);
}

/* ---- the pair ---- */

void rate_limiter_init(struct rate_limiter *rl, rl_clock_fn clock, void *clock_ctx)
{
	memset(rl, 0, sizeof(*rl));
	rl->clock = clock ? clock : rl_clock_monotonic;
	rl->clock_ctx = clock_ctx;
}

static int bucket_check(const struct token_bucket_config *c, const char *what,
			const char *which, struct cv_error *err)
{
	if (!c->enabled)
		return 0;
	if (c->size > RL_MAX_SIZE)
		return cv_fail(err, CV_EXIT_USAGE, "%s: %s bucket: size %llu is larger than %llu",
			       what, which, (unsigned long long)c->size,
			       (unsigned long long)RL_MAX_SIZE);
	if (c->refill_time_ms > RL_MAX_REFILL_MS)
		return cv_fail(err, CV_EXIT_USAGE,
			       "%s: %s bucket: refill time %llu ms is longer than %llu ms", what,
			       which, (unsigned long long)c->refill_time_ms,
			       (unsigned long long)RL_MAX_REFILL_MS);
	return 0;
}

int rate_limiter_config_check(const struct rate_limiter_config *cfg, const char *what,
			      struct cv_error *err)
{
	if (bucket_check(&cfg->bandwidth, what, "bandwidth", err) < 0 ||
	    bucket_check(&cfg->ops, what, "ops", err) < 0)
		return -1;
	return 0;
}

void rate_limiter_configure(struct rate_limiter *rl, const struct rate_limiter_config *cfg)
{
	uint64_t now = now_of(rl);
	if (!same_config(&rl->bw.cfg, &cfg->bandwidth))
		bucket_setup(&rl->bw, &cfg->bandwidth, now);
	if (!same_config(&rl->ops.cfg, &cfg->ops))
		bucket_setup(&rl->ops, &cfg->ops, now);
}

static void level_of(struct token_bucket *b, uint64_t now, struct token_bucket_level *out)
{
	*out = (struct token_bucket_level){ 0 };
	if (!b->active)
		return;
	refill(b, now);
	*out = (struct token_bucket_level){ .burst = b->burst, .budget = b->budget,
					    .frac = b->frac };
}

void rate_limiter_save(struct rate_limiter *rl, struct rate_limiter_config *cfg,
		       struct token_bucket_level *bw, struct token_bucket_level *ops)
{
	uint64_t now = now_of(rl);
	cfg->bandwidth = rl->bw.cfg;
	cfg->ops = rl->ops.cfg;
	level_of(&rl->bw, now, bw);
	level_of(&rl->ops, now, ops);
}

/* Saved levels come from a file or a peer: keep them within what the settings can produce. */
static void set_level(struct token_bucket *b, const struct token_bucket_level *l)
{
	if (!b->active)
		return;
	b->burst = CV_MIN(l->burst, b->cfg.one_time_burst);
	int64_t floor = -(int64_t)RL_MAX_TOKENS;
	b->budget = l->budget < floor ? floor : CV_MIN(l->budget, (int64_t)b->size);
	b->frac = l->frac < b->refill_ns && b->budget < (int64_t)b->size ? l->frac : 0;
}

void rate_limiter_restore(struct rate_limiter *rl, const struct rate_limiter_config *cfg,
			  const struct token_bucket_level *bw, const struct token_bucket_level *ops)
{
	uint64_t now = now_of(rl);
	bucket_setup(&rl->bw, &cfg->bandwidth, now);
	bucket_setup(&rl->ops, &cfg->ops, now);
	set_level(&rl->bw, bw);
	set_level(&rl->ops, ops);
}

bool rate_limiter_active(const struct rate_limiter *rl)
{
	return rl->bw.active || rl->ops.active;
}

bool rate_limiter_consume(struct rate_limiter *rl, uint64_t bytes, uint64_t ops,
			  uint64_t *retry_at)
{
	if (!rate_limiter_active(rl)) {
		rl->bw.undo_burst = rl->bw.undo_budget = 0;
		rl->ops.undo_burst = rl->ops.undo_budget = 0;
		return true;
	}
	if (bytes > RL_MAX_TOKENS)
		bytes = RL_MAX_TOKENS;
	if (ops > RL_MAX_TOKENS)
		ops = RL_MAX_TOKENS;
	uint64_t now = now_of(rl);
	if (rl->bw.active)
		refill(&rl->bw, now);
	if (rl->ops.active)
		refill(&rl->ops, now);
	uint64_t wb = bytes ? bucket_wait(&rl->bw, bytes) : 0;
	uint64_t wo = ops ? bucket_wait(&rl->ops, ops) : 0;
	if (wb || wo) {
		uint64_t w = wb > wo ? wb : wo;
		*retry_at = now + w;
		rl->throttled++;
		return false;
	}
	bucket_take(&rl->bw, bytes);
	bucket_take(&rl->ops, ops);
	return true;
}

void rate_limiter_undo(struct rate_limiter *rl)
{
	struct token_bucket *bs[2] = { &rl->bw, &rl->ops };
	for (int i = 0; i < 2; i++) {
		struct token_bucket *b = bs[i];
		b->burst += b->undo_burst;
		b->budget += (int64_t)b->undo_budget;
		b->undo_burst = b->undo_budget = 0;
	}
}

/* ---- the timer ---- */

static void timer_ack(struct rl_timer *t)
{
	uint64_t n;
	if (t->fd >= 0 && read(t->fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: nothing expired (cancelled, or re-armed in between) */
	}
}

/* I/O thread: what waited for tokens may pass now, if the device still waits at all. */
static void on_timer(void *opaque, uint32_t events)
{
	struct rl_timer *t = opaque;
	(void)events;
	timer_ack(t);
	pthread_mutex_lock(t->lock);
	if (*t->waiting) {
		*t->waiting = false;
		t->resume(t->opaque);
	}
	pthread_mutex_unlock(t->lock);
}

int rl_timer_init(struct rl_timer *t, struct evloop *loop, pthread_mutex_t *lock, bool *waiting,
		  rl_resume_fn resume, void *opaque, struct cv_error *err)
{
	memset(t, 0, sizeof(*t));
	t->loop = loop;
	t->lock = lock;
	t->waiting = waiting;
	t->resume = resume;
	t->opaque = opaque;
	t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (t->fd < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "timerfd_create");
	t->handler = (struct evloop_handler){ t->fd, on_timer, t };
	if (evloop_add(loop, &t->handler, EPOLLIN, err) < 0) {
		close(t->fd);
		t->fd = -1;
		return -1;
	}
	t->registered = true;
	return 0;
}

static void timer_set(struct rl_timer *t, uint64_t ns)
{
	if (t->fd < 0)
		return;
	struct itimerspec its = { 0 };
	its.it_value.tv_sec = (time_t)(ns / 1000000000ULL);
	its.it_value.tv_nsec = (long)(ns % 1000000000ULL);
	/* Cannot fail with a valid fd and in-range values; a lost arm would stall the device. */
	timerfd_settime(t->fd, 0, &its, NULL);
}

void rl_timer_arm(struct rl_timer *t, uint64_t delay_ns)
{
	/* An all-zero it_value would disarm the timer instead. */
	timer_set(t, delay_ns ? delay_ns : 1);
}

void rl_timer_arm_at(struct rl_timer *t, const struct rate_limiter *rl, uint64_t retry_at)
{
	uint64_t now = now_of(rl);
	rl_timer_arm(t, retry_at > now ? retry_at - now : 0);
}

void rl_timer_cancel(struct rl_timer *t)
{
	timer_set(t, 0);
	timer_ack(t);
}

void rl_timer_destroy(struct rl_timer *t)
{
	if (t->registered)
		evloop_remove(t->loop, &t->handler);
	t->registered = false;
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}
