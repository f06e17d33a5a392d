/*
 * MAC receive filter (see rxfilter.h).
 */
#include "rxfilter.h"

#include <string.h>

#include "bytes.h"
#include "virtio/virtq.h"

void rxfilter_reset(struct rxfilter *f, const uint8_t mac[6])
{
	memset(f, 0, sizeof(*f));
	f->promisc = true;
	memcpy(f->mac, mac, 6);
}

static bool in_table(const uint8_t (*t)[6], unsigned n, const uint8_t dst[6])
{
	for (unsigned i = 0; i < n; i++)
		if (memcmp(t[i], dst, 6) == 0)
			return true;
	return false;
}

bool rxfilter_accept(const struct rxfilter *f, const uint8_t dst[6])
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	if (f->promisc)
		return true;
	if (dst[0] & 1) {
		/* Broadcast is always wanted: without CTRL_RX_EXTRA the driver cannot refuse it. */
		if (memcmp(dst, bcast, 6) == 0)
			return true;
		return f->allmulti || f->multi_overflow || in_table(f->multi, f->n_multi, dst);
	}
	return memcmp(dst, f->mac, 6) == 0 || f->uni_overflow || in_table(f->uni, f->n_uni, dst);
}

/* Reads one table at *off; stores up to RXFILTER_MAX_MACS entries. */
static int read_table(const struct iovec *iov, unsigned n, size_t *off, size_t end,
		      uint8_t (*t)[6], unsigned *count, bool *overflow)
{
	uint8_t raw[4];
	if (end - *off < 4 || iov_to_buf(iov, n, *off, raw, 4) != 4)
		return -1;
	uint32_t entries = get_le32(raw);
	*off += 4;
	if (entries > (end - *off) / 6)
		return -1;
	*count = 0;
	*overflow = entries > RXFILTER_MAX_MACS;
	for (uint32_t i = 0; i < entries && i < RXFILTER_MAX_MACS; i++) {
		iov_to_buf(iov, n, *off + 6 * (size_t)i, t[i], 6);
		(*count)++;
	}
	*off += 6 * (size_t)entries;
	return 0;
}

int rxfilter_set_tables(struct rxfilter *f, const struct iovec *iov, unsigned n, size_t offset,
			size_t len)
{
	struct rxfilter nf = *f;
	size_t off = offset, end = offset + len;
	if (read_table(iov, n, &off, end, nf.uni, &nf.n_uni, &nf.uni_overflow) < 0 ||
	    read_table(iov, n, &off, end, nf.multi, &nf.n_multi, &nf.multi_overflow) < 0)
		return -1;
	*f = nf;
	return 0;
}
