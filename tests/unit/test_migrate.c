/*
 * The live-migration stream (src/vmm/migrate/stream.c) without KVM: what the writer produces
 * the reader accepts and applies page for page; damage of every kind is refused with a
 * one-line error naming it (checksums, lengths, offsets outside guest RAM, miscounted rounds,
 * versions); the peer's ERROR frame arrives as its message; addresses parse strictly. And the
 * part of dirty tracking KVM cannot do: a virtqueue push marks the pages the device wrote
 * (the buffer and the used ring) in the VMM's bitmap, and nothing else.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../snap_frames.h"
#include "bytes.h"
#include "memory.h"
#include "migrate/stream.h"
#include "virtio/virtq.h"

#define MEM (1u << 20)

static void state_file(struct snap_buf *st)
{
	snap_begin(st);
	uint8_t shape[4] = { 1, 2, 3, 4 };
	snap_add_section(st, SNAP_SEC_SHAPE, 0, shape, sizeof(shape));
	snap_finish(st);
}

/* A stream as a source writes it: two rounds, then the state and GO. */
static void good_stream(struct snap_buf *s, uint8_t *pages)
{
	mig_put_preamble(s);
	struct snap_buf hello = { 0 };
	snap_put_u32(&hello, MIG_PAGE);
	snap_put_blob(&hello, "shape", 5);
	mig_put_frame(s, MIG_HELLO, 0, hello.b, hello.len);
	snap_buf_free(&hello);
	for (unsigned i = 0; i < 3 * MIG_PAGE; i++)
		pages[i] = (uint8_t)(i * 7 + 1);
	mig_put_pages(s, 0x4000, pages, 3);
	mig_put_round(s, 1, 3);
	mig_put_zero(s, 0x5000, 1);
	mig_put_pages(s, MEM - MIG_PAGE, pages, 1);
	mig_put_round(s, 2, 2);
	struct snap_buf st = { 0 };
	state_file(&st);
	mig_put_frame(s, MIG_STATE, 0, st.b, st.len);
	snap_buf_free(&st);
	mig_put_frame(s, MIG_GO, 0, NULL, 0);
	cr_assert_not(s->oom);
}

/* Starts reading s with rd (over in): the preamble must be accepted. */
static void read_preamble(struct mig_reader *rd, struct mem_input *in, const struct snap_buf *s)
{
	*in = (struct mem_input){ s->b, s->len, 0 };
	mig_reader_init(rd, mem_input_read, in);
	struct cv_error err = { 0 };
	cr_assert_eq(mig_read_preamble(rd, &err), 0, "%s", err.msg);
}

/* Runs the destination's reading over buf; returns 0 or -1 with err. */
static int receive(const uint8_t *buf, size_t len, uint8_t *mem, struct cv_error *err)
{
	struct mem_input in = { buf, len, 0 };
	struct mig_reader rd;
	mig_reader_init(&rd, mem_input_read, &in);
	struct mig_frame f;
	struct snap_cur c;
	struct mig_rx_stats st;
	int rc = mig_read_preamble(&rd, err);
	if (rc == 0)
		rc = mig_expect(&rd, MIG_HELLO, &f, err);
	if (rc == 0)
		rc = mig_decode_hello(&f, &c, err);
	if (rc == 0)
		rc = mig_receive_memory(&rd, mem, MEM, &f, &st, err);
	if (rc == 0) {
		struct snap_file sf;
		rc = snap_file_parse(f.payload, f.len, &sf, err);
		if (rc == 0)
			snap_file_free(&sf);
	}
	if (rc == 0)
		rc = mig_expect(&rd, MIG_GO, &f, err);
	if (rc == 0)
		cr_assert_eq(st.rounds, 2);
	mig_reader_free(&rd);
	return rc;
}

Test(stream, round_trip_applies_every_page)
{
	static uint8_t pages[3 * MIG_PAGE], mem[MEM];
	struct snap_buf s = { 0 };
	good_stream(&s, pages);
	memset(mem, 0xee, sizeof(mem));
	struct cv_error err = { 0 };
	cr_assert_eq(receive(s.b, s.len, mem, &err), 0, "%s", err.msg);
	cr_assert_eq(memcmp(mem + 0x4000, pages, MIG_PAGE), 0);
	for (unsigned i = 0; i < MIG_PAGE; i++)
		cr_assert_eq(mem[0x5000 + i], 0, "the ZERO frame cleared the page");
	cr_assert_eq(memcmp(mem + 0x6000, pages + 2 * MIG_PAGE, MIG_PAGE), 0);
	cr_assert_eq(memcmp(mem + MEM - MIG_PAGE, pages, MIG_PAGE), 0, "last page of RAM");
	cr_assert_eq(mem[0x3fff], 0xee, "nothing outside the frames is touched");
	cr_assert_eq(mem[0x7000], 0xee);
	snap_buf_free(&s);
}

/* Flips one byte of a good stream and expects a refusal mentioning `what`. */
static void refuse_damage(size_t at, uint8_t xor_with, const char *what)
{
	static uint8_t pages[3 * MIG_PAGE], mem[MEM];
	struct snap_buf s = { 0 };
	good_stream(&s, pages);
	cr_assert_lt(at, s.len);
	s.b[at] ^= xor_with;
	struct cv_error err = { 0 };
	cr_assert_eq(receive(s.b, s.len, mem, &err), -1, "damage at %zu accepted", at);
	cr_assert(strstr(err.msg, what) != NULL, "'%s' does not say %s", err.msg, what);
	cr_assert_null(strchr(err.msg, '\n'));
	snap_buf_free(&s);
}

Test(stream, damage_is_refused)
{
	refuse_damage(0, 1, "magic");
	refuse_damage(8, 1, "version 0 is not supported");
	refuse_damage(16 + 8, 1, "corrupt");            /* HELLO length: header CRC */
	refuse_damage(16 + 24 + 2, 1, "corrupt");       /* HELLO payload: payload CRC */
	/* PAGES data lands in guest RAM before its CRC is checked; a bad frame still fails. */
	size_t pages_at = 16 + 24 + 13;                 /* after the preamble and HELLO */
	refuse_damage(pages_at + 24 + 12 + 100, 1, "corrupt");
	refuse_damage(pages_at + 24 + 12 + 3 * MIG_PAGE - 1, 0x80, "corrupt");
	refuse_damage(pages_at + 24 + 8, 1, "malformed PAGES");   /* page count 3 -> 2 */
	/* truncated anywhere */
	static uint8_t pages[3 * MIG_PAGE], mem[MEM];
	struct snap_buf s = { 0 };
	good_stream(&s, pages);
	struct cv_error err = { 0 };
	for (size_t cut = 0; cut < s.len; cut += 997)
		cr_assert_eq(receive(s.b, cut, mem, &err), -1, "cut at %zu", cut);
	snap_buf_free(&s);
}

/* A frame with a valid header and payload CRC but content out of range. */
static void refuse_frame(uint32_t type, const void *payload, size_t len, const char *what)
{
	static uint8_t pages[MIG_PAGE], mem[MEM];
	struct snap_buf s = { 0 };
	mig_put_preamble(&s);
	struct snap_buf hello = { 0 };
	snap_put_u32(&hello, MIG_PAGE);
	snap_put_blob(&hello, "x", 1);
	mig_put_frame(&s, MIG_HELLO, 0, hello.b, hello.len);
	snap_buf_free(&hello);
	(void)pages;
	mig_put_frame(&s, type, 0, payload, len);
	struct cv_error err = { 0 };
	cr_assert_eq(receive(s.b, s.len, mem, &err), -1);
	cr_assert(strstr(err.msg, what) != NULL, "'%s' does not say %s", err.msg, what);
	snap_buf_free(&s);
}

Test(stream, out_of_range_values_are_refused)
{
	uint8_t z[16];
	put_le64(z, MEM - MIG_PAGE);
	put_le64(z + 8, 2);                              /* one page past the end */
	refuse_frame(MIG_ZERO, z, sizeof(z), "outside");
	put_le64(z, UINT64_MAX - 4095);
	put_le64(z + 8, 1);
	refuse_frame(MIG_ZERO, z, sizeof(z), "outside");
	put_le64(z, 0x1001);                             /* not page aligned */
	refuse_frame(MIG_ZERO, z, sizeof(z), "outside");
	uint8_t r[12];
	put_le32(r, 1);
	put_le64(r + 4, 5);
	refuse_frame(MIG_ROUND, r, sizeof(r), "round 1 ended with 5 pages, 0 received");
	uint8_t p[12 + MIG_PAGE] = { 0 };
	put_le32(p + 8, 2);                              /* says 2 pages, carries 1 */
	refuse_frame(MIG_PAGES, p, sizeof(p), "malformed PAGES");
	put_le64(p, MEM);                                /* one page, just past the end */
	put_le32(p + 8, 1);
	refuse_frame(MIG_PAGES, p, sizeof(p), "outside");
	put_le64(p, 0x1800);                             /* not page aligned */
	refuse_frame(MIG_PAGES, p, sizeof(p), "outside");
	refuse_frame(MIG_GO, NULL, 0, "unexpected GO");
	struct snap_buf st = { 0 };
	state_file(&st);
	refuse_frame(MIG_STATE, st.b, st.len, "state before the end of a memory round");
	snap_buf_free(&st);
}

Test(stream, oversized_frames_are_refused_unread)
{
	struct snap_buf s = { 0 };
	mig_put_preamble(&s);
	uint8_t h[MIG_HDR_SIZE];
	put_le32(h, MIG_PAGES);
	put_le32(h + 4, 0);
	put_le64(h + 8, UINT64_MAX);
	put_le32(h + 16, 0);
	put_le32(h + 20, snap_crc32(0, h, 20));
	snap_put_bytes(&s, h, sizeof(h));
	struct mem_input in;
	struct mig_reader rd;
	read_preamble(&rd, &in, &s);
	struct cv_error err = { 0 };
	struct mig_frame f;
	cr_assert_eq(mig_read_frame(&rd, &f, &err), -1);
	cr_assert(strstr(err.msg, "at most") != NULL, "%s", err.msg);
	cr_assert_null(rd.buf, "nothing was allocated for it");
	snap_buf_free(&s);
}

Test(stream, the_peers_error_arrives_as_its_message)
{
	struct snap_buf s = { 0 };
	mig_put_preamble(&s);
	mig_put_error(&s, "--cpus 2: the migrating VM\nhas 1 vCPUs");
	struct mem_input in;
	struct mig_reader rd;
	read_preamble(&rd, &in, &s);
	struct cv_error err = { 0 };
	struct mig_frame f;
	cr_assert_eq(mig_expect(&rd, MIG_ACCEPT, &f, &err), -1);
	cr_assert_eq(err.code, CV_EXIT_IOERR);
	cr_assert_str_eq(err.msg, "the peer gave up: --cpus 2: the migrating VM has 1 vCPUs");
	mig_reader_free(&rd);
	snap_buf_free(&s);
}

Test(stream, addresses)
{
	struct sockaddr_storage sa;
	unsigned len;
	struct cv_error err = { 0 };
	cr_assert_eq(mig_parse_address("tcp:127.0.0.1:4444", false, &sa, &len, &err), 0, "%s", err.msg);
	cr_assert_eq(sa.ss_family, AF_INET);
	cr_assert_eq(ntohs(((struct sockaddr_in *)&sa)->sin_port), 4444);
	cr_assert_eq(mig_parse_address("tcp:[::1]:80", false, &sa, &len, &err), 0, "%s", err.msg);
	cr_assert_eq(sa.ss_family, AF_INET6);
	cr_assert_eq(mig_parse_address("tcp:localhost:80", false, &sa, &len, &err), 0);
	const char *bad[] = { "127.0.0.1:80", "tcp:127.0.0.1", "tcp:127.0.0.1:0",
			      "tcp:127.0.0.1:65536", "tcp:example.com:80", "tcp::80",
			      "tcp:[::1:80", "tcp:1.2.3.4:8x", "unix:/tmp/x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(mig_parse_address(bad[i], false, &sa, &len, &err), -1, "%s accepted", bad[i]);
		cr_assert_eq(err.code, CV_EXIT_USAGE);
	}
	cr_assert_eq(mig_parse_address("tcp:0.0.0.0:0", true, &sa, &len, &err), 0, "%s", err.msg);
	cr_assert_eq(ntohs(((struct sockaddr_in *)&sa)->sin_port), 0, "listening: any port");
}

/* ---- device writes into guest RAM are marked dirty ---- */

Test(dirty, virtq_push_marks_the_buffer_and_the_used_ring)
{
	struct guest_memory mem;
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&mem, 4u << 20, &err), 0, "%s", err.msg);
	uint8_t *g = mem.host;
	/* One device-writable descriptor across pages 0x10 and 0x11. */
	put_le64(g + 0x1000, 0x10800);
	put_le32(g + 0x1008, 0x1000);
	put_le16(g + 0x100c, VIRTQ_DESC_F_WRITE);
	put_le16(g + 0x2002, 1);                         /* avail idx */
	struct virtq vq = { .size = 8, .desc_gpa = 0x1000, .avail_gpa = 0x2000,
			    .used_gpa = 0x3000 };
	cr_assert_eq(virtq_start(&vq, &mem), 0);
	static struct virtq_elem e;
	cr_assert_eq(virtq_pop(&vq, &e), 1);
	memset(e.iov[0].iov_base, 0xab, 16);
	uint64_t bits[(4u << 20) / 4096 / 64] = { 0 };
	/* Not tracking: nothing to mark, nothing breaks. */
	virtq_push(&vq, &e, 16);
	mem.dirty_words = sizeof(bits) / 8;
	__atomic_store_n(&mem.dirty, bits, __ATOMIC_RELEASE);
	put_le16(g + 0x2002, 2);
	put_le16(g + 0x2006, 0);
	cr_assert_eq(virtq_pop(&vq, &e), 1);
	virtq_push(&vq, &e, 16);
	for (unsigned pg = 0; pg < (4u << 20) / 4096; pg++) {
		bool set = bits[pg / 64] & (1ULL << (pg % 64));
		bool want = pg == 0x3 || pg == 0x10 || pg == 0x11;
		cr_assert_eq(set, want, "page 0x%x: dirty %d, expected %d", pg, set, want);
	}
	/* Outside RAM or empty: ignored. */
	guest_memory_mark_dirty(&mem, g + (4u << 20), 4096);
	guest_memory_mark_dirty(&mem, g - 4096, 4096);
	guest_memory_mark_dirty(&mem, g, 0);
	cr_assert_eq(bits[0], (1ULL << 3) | (1ULL << 0x10) | (1ULL << 0x11));
	for (size_t w = 1; w < sizeof(bits) / 8; w++)
		cr_assert_eq(bits[w], 0);
	__atomic_store_n(&mem.dirty, NULL, __ATOMIC_RELEASE);   /* not ours to free */
	guest_memory_free(&mem);
}
