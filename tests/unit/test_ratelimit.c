/*
 * The token bucket arithmetic of src/vmm/ratelimit.c on an injected clock (no sleeping): full
 * start, one-time burst spent first and never refilled, proportional refill capped at the size,
 * all-or-nothing charging of the two buckets, the retry time a refused request is given,
 * requests larger than the bucket, live reconfiguration, and the option syntax of --disk/--net.
 * The timerfd wrapper is checked against a real evloop thread at the end.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "devopts.h"
#include "evloop.h"
#include "ratelimit.h"

#define MS 1000000ULL
#define SEC 1000000000ULL

static uint64_t fake_now;

static uint64_t fake_clock(void *ctx)
{
	(void)ctx;
	return fake_now;
}

static struct rate_limiter rl;

static void setup(void)
{
	fake_now = 1000 * SEC;
	rate_limiter_init(&rl, fake_clock, NULL);
}

static struct rate_limiter_config bw(uint64_t size, uint64_t burst, uint64_t ms)
{
	struct rate_limiter_config c = { 0 };
	c.bandwidth = (struct token_bucket_config){ size, burst, ms, true };
	return c;
}

/* Consumes and asserts the outcome; returns the retry time of a refusal. */
static uint64_t take(uint64_t bytes, uint64_t ops, bool want)
{
	uint64_t retry = 0;
	bool ok = rate_limiter_consume(&rl, bytes, ops, &retry);
	cr_assert_eq(ok, want, "consume(%llu bytes, %llu ops) at t=%llu ns: %s", (unsigned long long)bytes,
		     (unsigned long long)ops, (unsigned long long)(fake_now - 1000 * SEC),
		     ok ? "passed" : "refused");
	if (!ok)
		cr_assert_gt(retry, fake_now, "a refused request must be told a later time");
	return retry;
}

TestSuite(bucket, .init = setup);

Test(bucket, inactive_limiter_lets_everything_through)
{
	cr_assert(!rate_limiter_active(&rl));
	for (int i = 0; i < 1000; i++)
		take(UINT64_MAX, UINT64_MAX, true);
	/* Enabled with size or refill time 0 means no limit, as in Firecracker. */
	struct rate_limiter_config c = bw(0, 0, 1000);
	c.ops = (struct token_bucket_config){ 100, 0, 0, true };
	rate_limiter_configure(&rl, &c);
	cr_assert(!rate_limiter_active(&rl));
	take(1 << 30, 1 << 20, true);
	/* Not enabled: the numbers are ignored. */
	c = bw(10, 0, 1000);
	c.bandwidth.enabled = false;
	rate_limiter_configure(&rl, &c);
	cr_assert(!rate_limiter_active(&rl));
	take(1 << 30, 1, true);
}

Test(bucket, starts_full_then_refills_proportionally)
{
	struct rate_limiter_config c = bw(1000, 0, 1000);   /* 1000 bytes/s */
	rate_limiter_configure(&rl, &c);
	take(1000, 1, true);
	uint64_t retry = take(1, 1, false);
	/* One byte takes 1 ms at 1000 bytes/s. */
	cr_assert_eq(retry, fake_now + 1 * MS);
	fake_now += MS - 1;
	take(1, 1, false);
	fake_now += 1;
	take(1, 1, true);
	/* 250 ms earn 250 bytes: 250 pass, the 251st does not. */
	fake_now += 250 * MS;
	take(250, 1, true);
	take(1, 1, false);
	cr_assert_eq(token_bucket_available(&rl.bw, fake_now), 0);
}

Test(bucket, fractions_of_a_token_are_not_lost)
{
	/* 3 bytes per second, looked at every 100 ms: 0.3 bytes each time. */
	struct rate_limiter_config c = bw(3, 0, 1000);
	rate_limiter_configure(&rl, &c);
	take(3, 0, true);
	int passed = 0;
	for (int i = 0; i < 100; i++) {
		fake_now += 100 * MS;
		uint64_t retry;
		if (rate_limiter_consume(&rl, 1, 0, &retry))
			passed++;
	}
	/* 10 s at 3 bytes/s: 30 bytes exactly, whatever the sampling. */
	cr_assert_eq(passed, 30);
}

Test(bucket, refill_stops_at_the_size)
{
	struct rate_limiter_config c = bw(1000, 0, 1000);
	rate_limiter_configure(&rl, &c);
	take(600, 0, true);
	fake_now += 3600 * SEC;
	cr_assert_eq(token_bucket_available(&rl.bw, fake_now), 1000);
	take(1000, 0, true);
	take(1, 0, false);
}

Test(bucket, one_time_burst_is_spent_first_and_never_refills)
{
	struct rate_limiter_config c = bw(1000, 5000, 1000);
	rate_limiter_configure(&rl, &c);
	cr_assert_eq(token_bucket_available(&rl.bw, fake_now), 6000);
	/* The burst pays first: the bucket stays full meanwhile. */
	take(4000, 0, true);
	cr_assert_eq(rl.bw.burst, 1000);
	cr_assert_eq(rl.bw.budget, 1000);
	/* Straddling: 1000 from the burst, 500 from the bucket. */
	take(1500, 0, true);
	cr_assert_eq(rl.bw.burst, 0);
	cr_assert_eq(rl.bw.budget, 500);
	/* A long wait refills the bucket only. */
	fake_now += 100 * SEC;
	cr_assert_eq(token_bucket_available(&rl.bw, fake_now), 1000);
	take(1000, 0, true);
	take(1, 0, false);
}

Test(bucket, both_buckets_must_agree_and_a_refusal_charges_neither)
{
	struct rate_limiter_config c = bw(1000, 0, 10000);            /* 100 bytes/s */
	c.ops = (struct token_bucket_config){ 2, 0, 1000, true };    /* 2 ops/s */
	rate_limiter_configure(&rl, &c);
	take(100, 1, true);
	take(100, 1, true);
	/* Bytes are there, ops are not: refused, and the bytes stay. */
	uint64_t retry = take(100, 1, false);
	cr_assert_eq(retry, fake_now + 500 * MS, "one op takes 500 ms at 2 ops/s");
	cr_assert_eq(token_bucket_available(&rl.bw, fake_now), 800);
	/* Ops are there (one), bytes are not (850): the retry time is the later of the two. */
	fake_now = retry;
	retry = take(900, 1, false);
	cr_assert_eq(retry, fake_now + 500 * MS, "50 missing bytes take 500 ms");
	cr_assert_eq(token_bucket_available(&rl.ops, fake_now), 1);
	fake_now = retry;
	take(900, 1, true);
}

Test(bucket, the_retry_time_is_exact)
{
	/* 1 MiB per 7 ms: awkward numbers, the retry time must be neither early nor late. */
	struct rate_limiter_config c = bw(1 << 20, 0, 7);
	rate_limiter_configure(&rl, &c);
	take(1 << 20, 0, true);
	for (uint64_t want = 1; want < (1 << 20); want = want * 3 + 1) {
		uint64_t retry = take(want, 0, false);
		fake_now = retry - 1;
		take(want, 0, false);
		fake_now = retry;
		take(want, 0, true);
	}
}

Test(bucket, oversize_request_waits_for_a_full_bucket_then_leaves_debt)
{
	struct rate_limiter_config c = bw(1000, 0, 1000);
	rate_limiter_configure(&rl, &c);
	take(500, 0, true);
	/* 3000 > size: needs the whole bucket first (500 missing: 500 ms). */
	uint64_t retry = take(3000, 0, false);
	cr_assert_eq(retry, fake_now + 500 * MS);
	fake_now = retry;
	take(3000, 0, true);
	cr_assert_eq(rl.bw.budget, -2000);
	/* The debt is paid back first: a 1-byte request waits 2001 ms. */
	retry = take(1, 0, false);
	cr_assert_eq(retry, fake_now + 2001 * MS);
	/* A stream of oversize requests still progresses at the configured rate. */
	fake_now = retry;
	take(1, 0, true);
	uint64_t start = fake_now;
	int done = 0;
	while (done < 10) {
		uint64_t r;
		if (rate_limiter_consume(&rl, 4000, 0, &r))
			done++;
		else
			fake_now = r;
	}
	/* Empty bucket: 1 s to fill for the first, then 4 s of debt before each of the 9 others. */
	uint64_t took = fake_now - start;
	cr_assert(took >= 37 * SEC && took <= 37 * SEC + MS, "took %llu ms",
		  (unsigned long long)(took / MS));
}

Test(bucket, oversize_request_covered_by_the_burst_passes_at_once)
{
	struct rate_limiter_config c = bw(1000, 10000, 1000);
	rate_limiter_configure(&rl, &c);
	take(8000, 0, true);
	cr_assert_eq(rl.bw.budget, 1000);
	/* 2000 left of the burst, 3000 asked: 1000 more from a full bucket, fine. */
	take(3000, 0, true);
	cr_assert_eq(rl.bw.budget, 0);
}

Test(bucket, undo_gives_back_exactly_what_was_taken)
{
	struct rate_limiter_config c = bw(1000, 300, 1000);
	c.ops = (struct token_bucket_config){ 5, 0, 1000, true };
	rate_limiter_configure(&rl, &c);
	take(500, 1, true);
	cr_assert_eq(rl.bw.burst, 0);
	cr_assert_eq(rl.bw.budget, 800);
	rate_limiter_undo(&rl);
	cr_assert_eq(rl.bw.burst, 300);
	cr_assert_eq(rl.bw.budget, 1000);
	cr_assert_eq(rl.ops.budget, 5);
}

Test(bucket, reconfigure_live)
{
	struct rate_limiter_config slow = bw(100, 0, 1000);
	rate_limiter_configure(&rl, &slow);
	take(100, 0, true);
	take(50, 0, false);
	/* The same settings again change nothing: no free refill. */
	rate_limiter_configure(&rl, &slow);
	take(50, 0, false);
	/* New settings start full, with their burst. */
	struct rate_limiter_config fast = bw(1 << 20, 4096, 1000);
	rate_limiter_configure(&rl, &fast);
	cr_assert_eq(token_bucket_available(&rl.bw, fake_now), (1 << 20) + 4096);
	take(1 << 20, 0, true);
	take(4096, 0, true);
	take(1, 0, false);
	/* Only the bucket that changed is reset. */
	fast.ops = (struct token_bucket_config){ 1, 0, 1000, true };
	rate_limiter_configure(&rl, &fast);
	take(1, 0, false);
	cr_assert_eq(token_bucket_available(&rl.ops, fake_now), 1);
	/* Disabling lifts the limit at once. */
	struct rate_limiter_config off = { 0 };
	rate_limiter_configure(&rl, &off);
	cr_assert(!rate_limiter_active(&rl));
	take(1 << 30, 1000, true);
}

Test(bucket, saved_levels_come_back_without_the_time_between)
{
	struct rate_limiter_config c = bw(1000, 300, 1000);
	c.ops = (struct token_bucket_config){ 10, 0, 1000, true };
	rate_limiter_configure(&rl, &c);
	take(1200, 4, true);                      /* the burst, then 900 of the bucket */
	fake_now += 250 * MS;                     /* +250 bytes, +2.5 ops */
	struct rate_limiter_config saved;
	struct token_bucket_level lb, lo;
	rate_limiter_save(&rl, &saved, &lb, &lo);
	cr_assert_eq(saved.bandwidth.size, 1000);
	cr_assert_eq(lb.burst, 0);
	cr_assert_eq(lb.budget, 350);
	cr_assert_eq(lo.budget, 8);
	cr_assert_gt(lo.frac, 0, "half an op earned");

	/* Another limiter, an hour later: same levels, nothing earned while saved. */
	struct rate_limiter other;
	rate_limiter_init(&other, fake_clock, NULL);
	fake_now += 3600 * SEC;
	rate_limiter_restore(&other, &saved, &lb, &lo);
	cr_assert_eq(token_bucket_available(&other.bw, fake_now), 350);
	cr_assert_eq(token_bucket_available(&other.ops, fake_now), 8);
	fake_now += 50 * MS;                      /* the saved half op completes a token */
	cr_assert_eq(token_bucket_available(&other.ops, fake_now), 9);

	/* Levels from a file are clamped to what the settings can hold. */
	struct token_bucket_level wild = { .burst = 1 << 20, .budget = INT64_MAX,
					   .frac = UINT64_MAX };
	rate_limiter_restore(&other, &saved, &wild, &wild);
	cr_assert_eq(token_bucket_available(&other.bw, fake_now), 1000 + 300, "size + burst");
	cr_assert_eq(token_bucket_available(&other.ops, fake_now), 10);
	wild.budget = INT64_MIN;
	rate_limiter_restore(&other, &saved, &wild, &wild);
	cr_assert_eq(other.bw.budget, -(int64_t)RL_MAX_TOKENS);
}

Test(bucket, extreme_settings_do_not_overflow)
{
	struct rate_limiter_config c = bw(RL_MAX_SIZE, UINT64_MAX, RL_MAX_REFILL_MS);
	struct cv_error err = { 0 };
	cr_assert_eq(rate_limiter_config_check(&c, "test", &err), 0);
	rate_limiter_configure(&rl, &c);
	take(UINT64_MAX, 1, true);
	fake_now += 365ULL * 24 * 3600 * SEC;    /* a year */
	take(RL_MAX_SIZE, 0, true);
	/* Smallest rate: 1 token per 2^40 ms; the retry time saturates instead of wrapping. */
	c = bw(1, 0, RL_MAX_REFILL_MS);
	rate_limiter_configure(&rl, &c);
	take(1, 0, true);
	uint64_t retry = take(UINT64_MAX, 0, false);
	cr_assert_gt(retry, fake_now);
	/* Beyond the limits: refused with a message. */
	c = bw(RL_MAX_SIZE + 1, 0, 1000);
	cr_assert_eq(rate_limiter_config_check(&c, "test", &err), -1);
	cr_assert(strstr(err.msg, "bandwidth bucket"), "%s", err.msg);
	c = bw(1000, 0, RL_MAX_REFILL_MS + 1);
	cr_assert_eq(rate_limiter_config_check(&c, "test", &err), -1);
}

/* ---- option syntax ---- */

Test(options, disk_rate_limits)
{
	char spec[] = "path=/img,ro,bw=2M/1000,bw_burst=4M,ops=500/250,ops_burst=100";
	struct disk_config d;
	struct cv_error err = { 0 };
	cr_assert_eq(devopts_disk(spec, &d, &err), 0, "%s", err.msg);
	cr_assert_str_eq(d.path, "/img");
	cr_assert(d.read_only);
	const struct rate_limiter_config *r = &d.rate_limiter;
	cr_assert(r->bandwidth.enabled && r->ops.enabled);
	cr_assert_eq(r->bandwidth.size, 2u << 20);
	cr_assert_eq(r->bandwidth.refill_time_ms, 1000);
	cr_assert_eq(r->bandwidth.one_time_burst, 4u << 20);
	cr_assert_eq(r->ops.size, 500);
	cr_assert_eq(r->ops.refill_time_ms, 250);
	cr_assert_eq(r->ops.one_time_burst, 100);

	char plain[] = "/img";
	cr_assert_eq(devopts_disk(plain, &d, &err), 0);
	cr_assert(!d.rate_limiter.bandwidth.enabled && !d.rate_limiter.ops.enabled);
	cr_assert_eq(d.cache, DISK_CACHE_WRITEBACK, "the command line honours flushes by default");
	char unsafe[] = "/img,cache=unsafe";
	cr_assert_eq(devopts_disk(unsafe, &d, &err), 0, "%s", err.msg);
	cr_assert_eq(d.cache, DISK_CACHE_UNSAFE);
	char other[] = "/img,cache=none";
	cr_assert_eq(devopts_disk(other, &d, &err), -1);

	const char *bad[] = { "/i,bw=2M", "/i,bw=0/1000", "/i,bw=1/0", "/i,bw=/10", "/i,bw=1X/10",
			      "/i,ops=-1/10", "/i,bw=99999999999G/1", "/i,bw_burst=", "/i,ops=5/",
			      "/i,bw=1/2/3", "/i,bw=1K/1099511627777" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char s[64];
		snprintf(s, sizeof(s), "%s", bad[i]);
		cr_assert_eq(devopts_disk(s, &d, &err), -1, "'%s' accepted", bad[i]);
		cr_assert_eq(err.code, CV_EXIT_USAGE);
	}
}

Test(options, net_rate_limits_per_direction)
{
	char spec[] = "tap=t0,rx_bw=10M/100,tx_ops=1000/1000,tx_ops_burst=50,mac=52:54:00:00:00:01";
	struct net_config n;
	struct cv_error err = { 0 };
	cr_assert_eq(devopts_net(spec, &n, &err), 0, "%s", err.msg);
	cr_assert(n.rx_rate_limiter.bandwidth.enabled);
	cr_assert_eq(n.rx_rate_limiter.bandwidth.size, 10u << 20);
	cr_assert_eq(n.rx_rate_limiter.bandwidth.refill_time_ms, 100);
	cr_assert(!n.rx_rate_limiter.ops.enabled);
	cr_assert(!n.tx_rate_limiter.bandwidth.enabled);
	cr_assert_eq(n.tx_rate_limiter.ops.size, 1000);
	cr_assert_eq(n.tx_rate_limiter.ops.one_time_burst, 50);
	char bad[] = "tap=t0,rx_bandwidth=1/1";
	cr_assert_eq(devopts_net(bad, &n, &err), -1);
	char bad2[] = "tap=t0,tx_bw=5";
	cr_assert_eq(devopts_net(bad2, &n, &err), -1);
}

/* ---- the timer on a real loop ---- */

static struct {
	pthread_mutex_t lock;        /* the "device lock" the timer takes */
	bool waiting;                /* the "device waits for tokens" flag */
	int fired;
	int wrong;                   /* calls with the wrong opaque, flag still set or lock free */
	uint64_t at;
	struct rl_timer t;
} W = { .lock = PTHREAD_MUTEX_INITIALIZER };

/*
 * Called by the timer on the loop's thread, W.lock held, only while W.waiting was set (and now
 * cleared). Violations are counted, for the test's thread to assert.
 */
static void on_resume(void *opaque)
{
	W.wrong += opaque != &W || W.waiting || pthread_mutex_trylock(&W.lock) != EBUSY;
	W.fired++;
	W.at = rl_clock_monotonic(NULL);
}

static void set_waiting(void)
{
	pthread_mutex_lock(&W.lock);
	W.waiting = true;
	pthread_mutex_unlock(&W.lock);
}

static int fired(void)
{
	pthread_mutex_lock(&W.lock);
	int n = W.fired;
	pthread_mutex_unlock(&W.lock);
	return n;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

Test(timer, fires_once_after_the_delay_and_can_be_cancelled)
{
	struct evloop loop;
	struct cv_error err = { 0 };
	cr_assert_eq(evloop_init(&loop, &err), 0);
	cr_assert_eq(rl_timer_init(&W.t, &loop, &W.lock, &W.waiting, on_resume, &W, &err), 0, "%s",
		     err.msg);
	cr_assert_eq(evloop_start(&loop, "rl-test", &err), 0);
	uint64_t t0 = rl_clock_monotonic(NULL);
	set_waiting();
	rl_timer_arm(&W.t, 50 * MS);
	for (int i = 0; i < 400 && fired() == 0; i++)
		sleep_ms(5);
	cr_assert_eq(fired(), 1);
	cr_assert_geq(W.at - t0, 50 * MS, "fired after %llu ns", (unsigned long long)(W.at - t0));
	sleep_ms(100);
	cr_assert_eq(fired(), 1, "a one-shot timer fired again");
	/* Cancelled before it expires: never fires. */
	set_waiting();
	rl_timer_arm(&W.t, 30 * MS);
	rl_timer_cancel(&W.t);
	sleep_ms(100);
	cr_assert_eq(fired(), 1);
	/* Delay 0 still fires (an all-zero itimerspec would disarm). */
	rl_timer_arm(&W.t, 0);
	for (int i = 0; i < 400 && fired() == 1; i++)
		sleep_ms(5);
	cr_assert_eq(fired(), 2);
	/* A device that no longer waits (it was reset, or processed on its own) is left alone. */
	rl_timer_arm(&W.t, 0);
	sleep_ms(100);
	cr_assert_eq(fired(), 2);
	cr_assert_eq(W.wrong, 0, "resume ran without the lock, with the flag set or a wrong opaque");
	evloop_stop(&loop);
	rl_timer_destroy(&W.t);
	evloop_destroy(&loop);
}
