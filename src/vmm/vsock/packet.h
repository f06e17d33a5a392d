/*
 * virtio-vsock packet header (virtio 1.2, section 5.10.6): 44 little-endian bytes in front of
 * every packet on the rx and tx queues. The header is decoded once into host byte order from a
 * private copy, because the guest can change its buffers while the device reads them.
 */
#ifndef CVISOR_VMM_VSOCK_PACKET_H
#define CVISOR_VMM_VSOCK_PACKET_H

#include <stdint.h>

#include "bytes.h"

#define VSOCK_HDR_SIZE 44
#define VSOCK_HOST_CID 2u
#define VSOCK_TYPE_STREAM 1

enum vsock_op {
	VSOCK_OP_INVALID = 0,
	VSOCK_OP_REQUEST = 1,
	VSOCK_OP_RESPONSE = 2,
	VSOCK_OP_RST = 3,
	VSOCK_OP_SHUTDOWN = 4,
	VSOCK_OP_RW = 5,
	VSOCK_OP_CREDIT_UPDATE = 6,
	VSOCK_OP_CREDIT_REQUEST = 7,
};

/* SHUTDOWN flags: the sender will receive / send no more data. */
#define VSOCK_SHUTDOWN_RCV 1u
#define VSOCK_SHUTDOWN_SEND 2u

struct vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
};

static inline void vsock_hdr_decode(struct vsock_hdr *h, const uint8_t *p)
{
	h->src_cid = get_le64(p);
	h->dst_cid = get_le64(p + 8);
	h->src_port = get_le32(p + 16);
	h->dst_port = get_le32(p + 20);
	h->len = get_le32(p + 24);
	h->type = get_le16(p + 28);
	h->op = get_le16(p + 30);
	h->flags = get_le32(p + 32);
	h->buf_alloc = get_le32(p + 36);
	h->fwd_cnt = get_le32(p + 40);
}

static inline void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t *p)
{
	put_le64(p, h->src_cid);
	put_le64(p + 8, h->dst_cid);
	put_le32(p + 16, h->src_port);
	put_le32(p + 20, h->dst_port);
	put_le32(p + 24, h->len);
	put_le16(p + 28, h->type);
	put_le16(p + 30, h->op);
	put_le32(p + 32, h->flags);
	put_le32(p + 36, h->buf_alloc);
	put_le32(p + 40, h->fwd_cnt);
}

/*
 * Credit the peer has left for us: its buffer minus what we sent that it has not consumed.
 * Counters wrap at 2^32 (the spec's arithmetic); a peer that shrank its buffer below what is in
 * flight, or reports consuming more than we sent, leaves us no credit rather than a huge one.
 */
static inline uint32_t vsock_peer_credit(uint32_t peer_buf_alloc, uint32_t peer_fwd_cnt,
					 uint32_t tx_cnt)
{
	uint32_t in_flight = tx_cnt - peer_fwd_cnt;
	return in_flight >= peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
}

#endif
