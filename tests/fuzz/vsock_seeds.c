/*
 * Writes the seed corpus of the virtio-vsock fuzz target (vsock_input.h): both connection
 * directions carried through handshake, data both ways with credit updates, half-close and
 * close from either side, a guest that resets, timeouts, connections to ports nobody listens on,
 * and host programs with malformed CONNECT lines. The fuzzer derives the hostile variants.
 * Usage: fuzz-vsock-seeds DIR
 */
#include "seed_writer.h"
#include "vsock/packet.h"
#include "vsock_input.h"

#define ALL 0xffffffffu
#define BUF (256u * 1024)

static void preamble(struct seed *s, uint8_t flags)
{
	seed_reset(s);
	seed_u8(s, flags);
	seed_u32(s, ALL);
}

static void tx(struct seed *s, uint8_t slot, uint8_t op, uint32_t flags, uint32_t fwd,
	       uint16_t len, uint8_t shape)
{
	seed_u8(s, VSF_OP_TX);
	seed_u8(s, slot);
	seed_u8(s, op);
	seed_u32(s, flags);
	seed_u32(s, BUF);
	seed_u32(s, fwd);
	seed_u16(s, len);
	seed_u8(s, shape);
}

static void rxbuf(struct seed *s, uint8_t count, uint8_t shape)
{
	seed_u8(s, VSF_OP_RXBUF);
	seed_u8(s, count);
	seed_u8(s, shape);
}

static void host(struct seed *s, uint8_t op, uint8_t sock, uint16_t arg)
{
	seed_u8(s, op);
	seed_u8(s, sock);
	if (op == VSF_OP_HOST_WRITE)
		seed_u16(s, arg);
	if (op == VSF_OP_HOST_SHUT)
		seed_u8(s, (uint8_t)arg);
}

static void raw_line(struct seed *s, const char *line)
{
	seed_u8(s, VSF_OP_CONNECT);
	seed_u8(s, 0x80);
	seed_u8(s, (uint8_t)strlen(line));
	seed_str(s, line);
}

int main(int argc, char **argv)
{
	const char *dir = seed_dir(argc, argv);
	struct seed s = { 0 };
	int rc = 0;

	/* Guest connects to port 5000, data both ways, the guest shuts down, then RST. */
	preamble(&s, 0);
	rxbuf(&s, 8, VSF_RX_LINUX);
	tx(&s, 0, VSOCK_OP_REQUEST, 0, 0, 0, 0);
	seed_u8(&s, VSF_OP_ACCEPT);
	tx(&s, 0, VSOCK_OP_RW, 0, 0, 100, VSF_TX_SPLIT);
	host(&s, VSF_OP_HOST_READ, 0, 0);
	host(&s, VSF_OP_HOST_WRITE, 0, 3000);
	tx(&s, 0, VSOCK_OP_CREDIT_UPDATE, 0, 3000, 0, 0);
	rxbuf(&s, 4, VSF_RX_FLAT);
	host(&s, VSF_OP_HOST_WRITE, 0, 5000);
	tx(&s, 0, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, 8000, 0, 0);
	host(&s, VSF_OP_HOST_READ, 0, 0);
	tx(&s, 0, VSOCK_OP_RST, 0, 8000, 0, 0);
	rc |= seed_save(dir, "guest-connect", &s);

	/* A host program connects to guest port 1000; the guest accepts; the host closes. */
	preamble(&s, 0);
	rxbuf(&s, 8, VSF_RX_LINUX);
	seed_u8(&s, VSF_OP_CONNECT);
	seed_u8(&s, 0);
	tx(&s, 0x80, VSOCK_OP_RESPONSE, 0, 0, 0, 0);
	host(&s, VSF_OP_HOST_READ, 0, 0);
	host(&s, VSF_OP_HOST_WRITE, 0, 200);
	tx(&s, 0x80, VSOCK_OP_RW, 0, 200, 300, VSF_TX_HDR_SPLIT);
	host(&s, VSF_OP_HOST_READ, 0, 0);
	host(&s, VSF_OP_HOST_SHUT, 0, 0);
	host(&s, VSF_OP_HOST_SHUT, 0, 2);
	tx(&s, 0x80, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, 200, 0, 0);
	rc |= seed_save(dir, "host-connect", &s);

	/* No credit: the device asks for it; a guest that sends beyond ours is reset. */
	preamble(&s, 0);
	rxbuf(&s, 4, VSF_RX_HEADER_ONLY);
	seed_u8(&s, VSF_OP_TX);
	seed_u8(&s, 4);
	seed_u8(&s, VSOCK_OP_REQUEST);
	seed_u32(&s, 0);
	seed_u32(&s, 0);          /* buf_alloc 0: no credit */
	seed_u32(&s, 0);
	seed_u16(&s, 0);
	seed_u8(&s, 0);
	seed_u8(&s, VSF_OP_ACCEPT);
	host(&s, VSF_OP_HOST_WRITE, 0, 100);
	rxbuf(&s, 2, VSF_RX_LINUX);
	tx(&s, 4, VSOCK_OP_RW, 0, 0, 60000, 0);
	tx(&s, 4, VSOCK_OP_RW, 0, 0, 60000, 0);
	tx(&s, 4, VSOCK_OP_RW, 0, 0, 60000, 0);
	tx(&s, 4, VSOCK_OP_RW, 0, 0, 60000, 0);
	tx(&s, 4, VSOCK_OP_RW, 0, 0, 60000, 0);
	host(&s, VSF_OP_HOST_READ, 0, 0);
	rc |= seed_save(dir, "credit", &s);

	/* Port 6000 has no listener; bad CIDs, types and ops; a short header; a length lie. */
	preamble(&s, 0);
	rxbuf(&s, 16, VSF_RX_HEADER_ONLY);
	tx(&s, 8, VSOCK_OP_REQUEST, 0, 0, 0, 0);
	tx(&s, 1, VSOCK_OP_RW, 0, 0, 10, VSF_TX_LEN_LIE);
	tx(&s, 1, 0xf9, 0, 0, 0, 0);
	{
		uint8_t raw[VSOCK_HDR_SIZE] = { 0 };
		struct vsock_hdr h = { .src_cid = 43, .dst_cid = 2, .src_port = 1, .dst_port = 5000,
				       .type = 1, .op = VSOCK_OP_REQUEST };
		vsock_hdr_encode(&h, raw);
		tx(&s, 0, 0, 0, 0, 0, VSF_TX_RAW);
		seed_bytes(&s, raw, sizeof(raw));
		h.src_cid = 42;
		h.type = 2;
		vsock_hdr_encode(&h, raw);
		tx(&s, 0, 0, 0, 0, 0, VSF_TX_RAW);
		seed_bytes(&s, raw, sizeof(raw));
		h.type = 1;
		h.dst_cid = 3;
		vsock_hdr_encode(&h, raw);
		tx(&s, 0, 0, 0, 0, 0, VSF_TX_RAW);
		seed_bytes(&s, raw, sizeof(raw));
	}
	rc |= seed_save(dir, "hostile", &s);

	/* Host programs with lines the mux must refuse, and one with data after its line. */
	preamble(&s, 0);
	raw_line(&s, "CONNECT 1000");
	raw_line(&s, "CONNECT\n");
	raw_line(&s, "CONNECT 4294967295\n");
	raw_line(&s, "CONNECT 99999999999\n");
	raw_line(&s, "connect 1000\n");
	raw_line(&s, "CONNECT 1000\r\n");
	raw_line(&s, "CONNECT 1001\nHELLO");
	rxbuf(&s, 8, VSF_RX_LINUX);
	tx(&s, 0x80, VSOCK_OP_RESPONSE, 0, 0, 0, 0);
	tx(&s, 0x81, VSOCK_OP_RESPONSE, 0, 0, 0, 0);
	host(&s, VSF_OP_HOST_READ, 5, 0);
	host(&s, VSF_OP_HOST_READ, 6, 0);
	rc |= seed_save(dir, "lines", &s);

	/* Timeouts: a silent host program, a REQUEST the guest never answers, a lingering close. */
	preamble(&s, VSF_SHORT_TIMEOUTS);
	seed_u8(&s, VSF_OP_CONNECT);
	seed_u8(&s, 0x80);
	seed_u8(&s, 3);
	seed_str(&s, "CON");
	seed_u8(&s, VSF_OP_CONNECT);
	seed_u8(&s, 1);
	rxbuf(&s, 4, VSF_RX_LINUX);
	tx(&s, 5, VSOCK_OP_REQUEST, 0, 0, 0, 0);
	seed_u8(&s, VSF_OP_ACCEPT);
	tx(&s, 5, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, 0, 0, 0);
	seed_u8(&s, VSF_OP_TICK);
	rc |= seed_save(dir, "timeouts", &s);

	/* The host program reads slowly: the guest's data waits in the mux's ring, which wraps. */
	preamble(&s, 0);
	rxbuf(&s, 16, VSF_RX_HEADER_ONLY);
	tx(&s, 0, VSOCK_OP_REQUEST, 0, 0, 0, 0);
	seed_u8(&s, VSF_OP_ACCEPT);
	for (unsigned round = 0; round < 3; round++) {
		for (unsigned i = 0; i < 4; i++)
			tx(&s, 0, VSOCK_OP_RW, 0, 0, 60000, VSF_TX_SPLIT);
		host(&s, VSF_OP_HOST_READ, 0, 0);
		rxbuf(&s, 8, VSF_RX_HEADER_ONLY);
	}
	tx(&s, 0, VSOCK_OP_RW, 0, 0, 60000, 0);
	tx(&s, 0, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND, 0, 0, 0);
	host(&s, VSF_OP_HOST_READ, 0, 0);
	rc |= seed_save(dir, "buffered", &s);

	/* A reset with connections both ways, and a receive buffer too small for a header. */
	preamble(&s, 0);
	rxbuf(&s, 4, VSF_RX_LINUX);
	tx(&s, 0, VSOCK_OP_REQUEST, 0, 0, 0, 0);
	seed_u8(&s, VSF_OP_CONNECT);
	seed_u8(&s, 2);
	seed_u8(&s, VSF_OP_ACCEPT);
	seed_u8(&s, VSF_OP_RESET);
	host(&s, VSF_OP_HOST_READ, 0, 0);
	rxbuf(&s, 1, 0xff);
	tx(&s, 0, VSOCK_OP_REQUEST, 0, 0, 0, 0);
	rc |= seed_save(dir, "reset", &s);

	free(s.b);
	return rc ? 1 : 0;
}
