/*
 * Rate limiters in snapshots and migration (SNAP_SEC_LIMITS, one section per virtio device that
 * has limiters; see state.h). A limiter's settings may have been changed live (PATCH /drives,
 * PATCH /network-interfaces) since the VM was configured, and its buckets may be part spent:
 * both travel, so a restored or migrated guest gets neither a fresh burst nor its old limits
 * back. The levels are what the buckets hold; refilling restarts at the restore, so the time a
 * snapshot sat on disk earns no tokens.
 *
 * Payload: u32 limiters (the device's order: virtio-blk its one, virtio-net rx then tx) | per
 * limiter, bandwidth bucket then ops bucket: u8 enabled | u64 size | u64 one_time_burst | u64
 * refill_time_ms | u64 burst left | u64 budget (two's complement; negative is debt) | u64
 * refill progress.
 */
#include "snapshot/state.h"
#include "ratelimit.h"
#include "virtio/device.h"

static void put_bucket(struct snap_buf *out, const struct token_bucket_config *c,
		       const struct token_bucket_level *l)
{
	snap_put_u8(out, c->enabled);
	snap_put_u64(out, c->size);
	snap_put_u64(out, c->one_time_burst);
	snap_put_u64(out, c->refill_time_ms);
	snap_put_u64(out, l->burst);
	snap_put_u64(out, (uint64_t)l->budget);
	snap_put_u64(out, l->frac);
}

static void get_bucket(struct snap_cur *in, struct token_bucket_config *c,
		       struct token_bucket_level *l)
{
	c->enabled = snap_get_u8(in) != 0;
	c->size = snap_get_u64(in);
	c->one_time_burst = snap_get_u64(in);
	c->refill_time_ms = snap_get_u64(in);
	l->burst = snap_get_u64(in);
	l->budget = (int64_t)snap_get_u64(in);
	l->frac = snap_get_u64(in);
}

bool limits_state_save(struct virtio_dev *d, struct snap_buf *out)
{
	struct rate_limiter *rl[VIRTIO_MAX_LIMITERS];
	if (!d->ops->limiters)
		return false;
	unsigned n = d->ops->limiters(d, rl);
	snap_put_u32(out, n);
	for (unsigned i = 0; i < n; i++) {
		struct rate_limiter_config cfg;
		struct token_bucket_level bw, ops;
		rate_limiter_save(rl[i], &cfg, &bw, &ops);
		put_bucket(out, &cfg.bandwidth, &bw);
		put_bucket(out, &cfg.ops, &ops);
	}
	return true;
}

int limits_state_load(struct virtio_dev *d, struct snap_cur *in, struct cv_error *err)
{
	struct rate_limiter *rl[VIRTIO_MAX_LIMITERS];
	unsigned have = d->ops->limiters ? d->ops->limiters(d, rl) : 0;
	uint32_t n = snap_get_u32(in);
	if (!in->bad && n != have)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s has %u rate limiters here, the "
			       "snapshot %u", d->name, have, n);
	struct rate_limiter_config cfg[VIRTIO_MAX_LIMITERS];
	struct token_bucket_level bw[VIRTIO_MAX_LIMITERS], ops[VIRTIO_MAX_LIMITERS];
	for (unsigned i = 0; i < have && !in->bad; i++) {
		get_bucket(in, &cfg[i].bandwidth, &bw[i]);
		get_bucket(in, &cfg[i].ops, &ops[i]);
	}
	if (!snap_cur_done(in))
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %s: rate limiter section is "
			       "malformed", d->name);
	for (unsigned i = 0; i < have; i++)
		if (rate_limiter_config_check(&cfg[i], d->name, err) < 0)
			return cv_error_wrap(err, "snapshot");
	/* All checked before any is applied: a refused section changes nothing. */
	for (unsigned i = 0; i < have; i++)
		rate_limiter_restore(rl[i], &cfg[i], &bw[i], &ops[i]);
	return 0;
}
