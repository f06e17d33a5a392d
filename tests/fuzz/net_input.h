/*
 * Input format of the virtio-net fuzz target (fuzz_net.c), shared with its seed generator
 * (net_seeds.c). A preamble and a stream of operations, read with the fuzz_driver.h helpers:
 *
 *   preamble: u8 NETF_* flags | u32 feature mask (bits 0-31 of what the guest accepts)
 *   ops: u8 NETF_OP_* (modulo NETF_OPS), then
 *   NETF_OP_TX      post one transmit chain: u8 n_seg (modulo NETF_MAX_SPLIT + 1), u8 NETF_TX_*,
 *                   the 12-byte virtio-net header, le16 frame length (header excluded),
 *                   n_seg - 1 le16 segment lengths (the last segment takes the rest)
 *   NETF_OP_TX_KICK kick the transmit queue and check what reached the TAP
 *   NETF_OP_CTRL    one control command: u8 class, u8 command, le16 payload length (modulo
 *                   NETF_MAX_CTRL + 1) and the payload, u8 NETF_CTRL_* shape
 *   NETF_OP_RXBUF   post receive chains and kick: u8 count (modulo 17), per chain u8 segments
 *                   (modulo 4, plus 1) and a le16 length for each
 *   NETF_OP_RX      the host sends one frame: the 12-byte header (vnet-header TAP only), 6 bytes
 *                   of destination MAC, le16 frame length; then the I/O thread runs
 *   NETF_OP_RESET   the driver resets the device and brings it up again
 */
#ifndef CVISOR_TESTS_FUZZ_NET_INPUT_H
#define CVISOR_TESTS_FUZZ_NET_INPUT_H

/* Preamble flags. */
#define NETF_PLAIN_TAP 0x01      /* the backend has no virtio header (IFF_VNET_HDR off) */

enum {
	NETF_OP_TX,
	NETF_OP_TX_KICK,
	NETF_OP_CTRL,
	NETF_OP_RXBUF,
	NETF_OP_RX,
	NETF_OP_RESET,
	NETF_OPS,
};

#define NETF_MAX_SPLIT 8
#define NETF_TX_INDIRECT 0x01    /* through an indirect table (if negotiated) */
#define NETF_TX_MANY 0x02        /* instead of the split: as many segments as a chain can hold */
#define NETF_TX_SHORT 0x04       /* only frame length % 12 bytes: a chain shorter than a header */

#define NETF_MAX_CTRL 1024
#define NETF_CTRL_SPLIT 0x01     /* class, command and payload in three segments */
#define NETF_CTRL_NO_ACK 0x02    /* no writable byte for the ack */
#define NETF_CTRL_BIG_ACK 0x04   /* 16 writable bytes instead of 1 */

/* The NIC's configured address. */
#define NETF_MAC { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 }

#endif
