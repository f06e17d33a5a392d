/*
 * Input format of the virtio-vsock fuzz target (fuzz_vsock.c), shared with its seed generator
 * (vsock_seeds.c). A preamble and a stream of operations, read with the fuzz_driver.h helpers:
 *
 *   preamble: u8 VSF_* flags | u32 feature mask
 *   ops: u8 VSF_OP_* (modulo VSF_OPS), then
 *   VSF_OP_TX        the guest sends one packet and kicks: u8 slot, u8 op, le32 flags,
 *                    le32 buf_alloc, le32 fwd_cnt, le16 payload length, u8 VSF_TX_* shape.
 *                    slot < 0x80: guest port VSF_GUEST_PORT0 + (slot & 3) to host port
 *                    VSF_HOST_PORTS[(slot >> 2) % 3]; slot >= 0x80: the (slot & 7)th
 *                    connection the host opened to the guest. The header is completed as a
 *                    driver would (CIDs, type, len); with VSF_TX_RAW 44 raw header bytes follow
 *                    instead and are sent as they are.
 *   VSF_OP_RXBUF     post receive buffers and kick: u8 count (modulo 17), u8 shape:
 *                    VSF_RX_SMALL if 0xff, else the VSF_RX_* modulo VSF_RX_SMALL
 *   VSF_OP_CONNECT   a host program connects to the socket and writes its line: u8 kind;
 *                    kind < 0x80: "CONNECT <VSF_LINE_PORTS[kind % 5]>\n"; else u8 length
 *                    (modulo VSF_LINE_MAX + 1) and that many raw bytes
 *   VSF_OP_HOST_WRITE  u8 socket, le16 length: a host socket writes that many stream bytes
 *   VSF_OP_HOST_READ   u8 socket: it reads what arrived and checks it
 *   VSF_OP_HOST_SHUT   u8 socket, u8 how: shutdown(SHUT_WR), shutdown(SHUT_RD) or close
 *   VSF_OP_ACCEPT    the host programs behind the listening ports accept their connections
 *   VSF_OP_TICK      the mux's timer fires (with VSF_SHORT_TIMEOUTS every deadline passed)
 *   VSF_OP_RESET     the driver resets the device and brings it up again
 */
#ifndef CVISOR_TESTS_FUZZ_VSOCK_INPUT_H
#define CVISOR_TESTS_FUZZ_VSOCK_INPUT_H

#include <stdint.h>

#define VSF_SHORT_TIMEOUTS 0x01  /* every mux timeout 0 ms: VSF_OP_TICK expires them all */

enum {
	VSF_OP_TX,
	VSF_OP_RXBUF,
	VSF_OP_CONNECT,
	VSF_OP_HOST_WRITE,
	VSF_OP_HOST_READ,
	VSF_OP_HOST_SHUT,
	VSF_OP_ACCEPT,
	VSF_OP_TICK,
	VSF_OP_RESET,
	VSF_OPS,
};

#define VSF_GUEST_CID 42
#define VSF_GUEST_PORT0 1000
/* Ports 5000 and 5001 have a host program listening on PATH_<port>; 6000 has none. */
static const uint32_t VSF_HOST_PORTS[3] = { 5000, 5001, 6000 };
#define VSF_LISTENERS 2
/* Guest ports host programs ask for (the fuzzed guest never listens: it answers as it likes). */
static const uint32_t VSF_LINE_PORTS[5] = { 1000, 1001, 1002, 2000, 4294967294u };
#define VSF_LINE_MAX 40

/* VSF_OP_TX shape. */
#define VSF_TX_RAW 0x01          /* 44 raw header bytes follow the fields */
#define VSF_TX_SPLIT 0x02        /* header and payload in separate descriptors */
#define VSF_TX_HDR_SPLIT 0x04    /* the header itself cut in two */
#define VSF_TX_LEN_LIE 0x08      /* header len one more than the payload carried */

/* VSF_OP_RXBUF shape (low 2 bits). */
enum {
	VSF_RX_LINUX,            /* 44-byte header descriptor + 4 KiB data descriptor */
	VSF_RX_FLAT,             /* one descriptor of 44 + 64 KiB */
	VSF_RX_HEADER_ONLY,      /* exactly 44 bytes: control packets only */
	VSF_RX_SMALL,            /* 20 bytes: a driver error (the device needs a reset) */
};

#define VSF_HOST_SOCKETS 16

#endif
