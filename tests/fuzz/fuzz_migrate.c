/*
 * libFuzzer target for the live-migration stream parser (src/vmm/migrate/stream.c): what a
 * destination reads from the network - the preamble, HELLO with its machine shape
 * (snapshot/shape.c), memory rounds applied to a guest RAM of 1 MiB, the snapshot state file
 * (snapshot/format.c), GO - or, with flag 2, what a source reads (ACCEPT, READY, RESUMED).
 *
 * Input: u8 flags | stream bytes. Flag 1 repairs every frame checksum the structure lets one
 * find, so mutations reach the decoders instead of dying at the CRC check.
 *
 * These invariants abort on violation:
 *   - a refusal is CV_EXIT_DATAERR (malformed), CV_EXIT_IOERR (stream ended, peer's ERROR) or
 *     out of memory, with a one-line message;
 *   - memory frames never touch outside the 1 MiB guest RAM (ASan: it is an exact allocation)
 *     and the pages counted never exceed what was applied;
 *   - a stream that is accepted up to GO consumed exactly the input;
 *   - no memory error or leak.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../snap_frames.h"
#include "migrate/stream.h"
#include "snapshot/state.h"

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)
#define SOURCE_SIDE 0x02
#define MEM_SIZE (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

_Static_assert(MIG_HDR_SIZE == SNAP_FRAMES_HDR_SIZE, "frames as snap_frames.h has them");

static _Noreturn void fail(int line, const char *what)
{
	fprintf(stderr, "fuzz_migrate.c:%d: invariant broken: %s\n", line, what);
	abort();
}

static void check_error(const struct cv_error *err)
{
	CHECK(err->code == CV_EXIT_DATAERR || err->code == CV_EXIT_IOERR ||
	      err->code == CV_EXIT_OSERR);
	CHECK(err->msg[0] != 0);
	CHECK(strchr(err->msg, '\n') == NULL);
}

static void destination(struct mig_reader *rd, struct mem_input *in, uint8_t *mem)
{
	struct cv_error err = { 0 };
	struct mig_frame f;
	struct snap_cur c;
	struct snap_shape shape;
	if (mig_read_preamble(rd, &err) < 0 || mig_expect(rd, MIG_HELLO, &f, &err) < 0 ||
	    mig_decode_hello(&f, &c, &err) < 0 || shape_decode(&c, &shape, &err) < 0) {
		check_error(&err);
		return;
	}
	CHECK(shape.n_devices <= SNAP_SHAPE_MAX_DEVICES);
	struct mig_rx_stats st;
	if (mig_receive_memory(rd, mem, MEM_SIZE, &f, &st, &err) < 0) {
		check_error(&err);
		return;
	}
	CHECK(f.type == MIG_STATE && st.rounds >= 1);
	/* Every page counted was in a frame of the input: */
	CHECK(st.pages <= in->len / 16);
	struct snap_file sf;
	if (snap_file_parse(f.payload, f.len, &sf, &err) < 0) {
		check_error(&err);
		return;
	}
	snap_file_free(&sf);
	if (mig_expect(rd, MIG_GO, &f, &err) < 0) {
		check_error(&err);
		return;
	}
	CHECK(in->off <= in->len);
	if (in->off == in->len)
		CHECK(rd->bytes == in->len);
}

static void source(struct mig_reader *rd)
{
	struct cv_error err = { 0 };
	struct mig_frame f;
	if (mig_read_preamble(rd, &err) < 0 || mig_expect(rd, MIG_ACCEPT, &f, &err) < 0 ||
	    mig_expect(rd, MIG_READY, &f, &err) < 0 || mig_expect(rd, MIG_RESUMED, &f, &err) < 0) {
		check_error(&err);
		return;
	}
	CHECK(f.len == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t flags;
	size_t len;
	uint8_t *b = snap_frames_input(data, size, MIG_PREAMBLE_SIZE, &flags, &len);
	if (!b)
		return 0;
	static uint8_t *mem;
	if (!mem)
		mem = malloc(MEM_SIZE);
	struct mem_input in = { b, len, 0 };
	struct mig_reader rd;
	mig_reader_init(&rd, mem_input_read, &in);
	if (flags & SOURCE_SIDE)
		source(&rd);
	else
		destination(&rd, &in, mem);
	CHECK(rd.bytes == in.off);
	mig_reader_free(&rd);
	free(b);
	return 0;
}
