/*
 * The console marker filter of `cvisor run`: output between the markers must come out byte for
 * byte whatever the chunking, including bytes that look like the start of a marker.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "markers.h"

struct capture {
	char buf[8192];
	size_t len;
};

static void collect(void *ctx, const uint8_t *b, size_t n)
{
	struct capture *c = ctx;
	cr_assert_leq(c->len + n, sizeof(c->buf));
	memcpy(c->buf + c->len, b, n);
	c->len += n;
}

/* Feeds `in` in pieces of `chunk` bytes; returns the status or -1 if no exit marker. */
static int run_filter(const char *in, size_t len, size_t chunk, struct capture *out,
		      struct marker_filter *f)
{
	memset(out, 0, sizeof(*out));
	marker_filter_init(f, "0123abcd", collect, out);
	for (size_t off = 0; off < len; off += chunk)
		marker_filter_feed(f, (const uint8_t *)in + off, len - off < chunk ? len - off : chunk);
	int status;
	return marker_filter_finished(f, &status) ? status : -1;
}

static struct marker_filter f;

Test(markers, output_between_markers_any_chunking)
{
	static const char in[] =
		"Linux version 6.1\r\nboot noise [cvisor-start 0123abcc]\n"
		"[cvisor-start 0123abcd]\n"
		"line one\n\n[cvisor-exit 0123abcc 5]\n[cvis\n\n[cvisor-exit 0123abc\n"
		"tail without newline"
		"\n[cvisor-exit 0123abcd 7]\nreboot: Power down\n";
	static const char want[] =
		"line one\n\n[cvisor-exit 0123abcc 5]\n[cvis\n\n[cvisor-exit 0123abc\n"
		"tail without newline";
	for (size_t chunk = 1; chunk <= sizeof(in); chunk++) {
		struct capture out;
		cr_assert_eq(run_filter(in, sizeof(in) - 1, chunk, &out, &f), 7, "chunk %zu", chunk);
		cr_assert_eq(out.len, sizeof(want) - 1, "chunk %zu: got '%.*s'", chunk, (int)out.len,
			     out.buf);
		cr_assert_arr_eq(out.buf, want, sizeof(want) - 1, "chunk %zu", chunk);
		cr_assert(memmem(f.prelude, f.prelude_len, "Linux version", 13), "prelude kept");
	}
}

Test(markers, binary_bytes_pass_through)
{
	char in[600];
	size_t n = (size_t)sprintf(in, "[cvisor-start 0123abcd]\n");
	for (int i = 0; i < 256; i++)
		in[n++] = (char)i;
	n += (size_t)sprintf(in + n, "\n[cvisor-exit 0123abcd 0]\n");
	struct capture out;
	cr_assert_eq(run_filter(in, n, 3, &out, &f), 0);
	cr_assert_eq(out.len, 256);
	for (int i = 0; i < 256; i++)
		cr_assert_eq((uint8_t)out.buf[i], i);
}

Test(markers, missing_or_malformed_exit)
{
	struct capture out;
	const char *in = "[cvisor-start 0123abcd]\npartial output";
	cr_assert_eq(run_filter(in, strlen(in), 4, &out, &f), -1);
	cr_assert(marker_filter_started(&f));
	cr_assert_eq(out.len, strlen("partial output"));
	in = "kernel panic, no start";
	cr_assert_eq(run_filter(in, strlen(in), 4, &out, &f), -1);
	cr_assert_not(marker_filter_started(&f));
	cr_assert_eq(out.len, 0);
	cr_assert_eq(f.prelude_len, strlen(in));
	in = "[cvisor-start 0123abcd]\n\n[cvisor-exit 0123abcd 12x]\n";
	cr_assert_eq(run_filter(in, strlen(in), 1, &out, &f), -1);
	in = "[cvisor-start 0123abcd]\n\n[cvisor-exit 0123abcd 300]\n";
	cr_assert_eq(run_filter(in, strlen(in), 1, &out, &f), 255, "clamped to a byte");
}

Test(markers, prelude_keeps_the_latest_bytes)
{
	static char in[MARKER_PRELUDE_MAX * 2 + 10];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (char)('a' + i % 26);
	struct capture out;
	run_filter(in, sizeof(in), 1000, &out, &f);
	cr_assert_eq(f.prelude_len, MARKER_PRELUDE_MAX);
	cr_assert_arr_eq(f.prelude, in + sizeof(in) - MARKER_PRELUDE_MAX, MARKER_PRELUDE_MAX);
}
