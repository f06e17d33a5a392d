/*
 * Console marker filter (see markers.h). Both patterns start with a byte that occurs nowhere else
 * in them ('[' and '\n'), so a failed partial match restarts at most at the current byte and the
 * bytes held back can be released as ordinary output.
 */
#include "markers.h"

#include <stdio.h>
#include <string.h>

#include "request.h"

void marker_filter_init(struct marker_filter *f, const char *token, marker_output_fn out,
			void *ctx)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->start, sizeof(f->start), MARKER_START_FMT, token);
	f->start_len = strlen(f->start);
	snprintf(f->exit, sizeof(f->exit), MARKER_EXIT_PREFIX "%s ", token);
	f->exit_len = strlen(f->exit);
	f->out = out;
	f->ctx = ctx;
}

static void remember(struct marker_filter *f, const uint8_t *p, size_t n)
{
	if (n >= MARKER_PRELUDE_MAX) {
		p += n - MARKER_PRELUDE_MAX;
		n = MARKER_PRELUDE_MAX;
	}
	if (f->prelude_len + n > MARKER_PRELUDE_MAX) {
		size_t drop = f->prelude_len + n - MARKER_PRELUDE_MAX;
		memmove(f->prelude, f->prelude + drop, f->prelude_len - drop);
		f->prelude_len -= drop;
	}
	memcpy(f->prelude + f->prelude_len, p, n);
	f->prelude_len += n;
}

static void emit(struct marker_filter *f, const uint8_t *p, size_t n)
{
	if (!n)
		return;
	if (f->state == MARKER_BEFORE_START) {
		remember(f, p, n);
		if (f->prelude_out)
			f->prelude_out(f->ctx, p, n);
	} else if (f->out)
		f->out(f->ctx, p, n);
}

/* Matches one byte against pattern; returns true when the whole pattern has been seen. */
static bool match(struct marker_filter *f, const char *pat, size_t len, uint8_t b)
{
	if ((char)b == pat[f->matched]) {
		if (++f->matched == len) {
			f->matched = 0;
			return true;
		}
		return false;
	}
	/* Release what was held back as data, then see whether b starts a new match. */
	emit(f, (const uint8_t *)pat, f->matched);
	f->matched = 0;
	if ((char)b == pat[0])
		f->matched = 1;
	else
		emit(f, &b, 1);
	return false;
}

void marker_filter_feed(struct marker_filter *f, const uint8_t *buf, size_t len)
{
	size_t run = 0;   /* start of bytes not yet emitted in this buffer */
	for (size_t i = 0; i < len; i++) {
		uint8_t b = buf[i];
		switch (f->state) {
		case MARKER_BEFORE_START:
		case MARKER_OUTPUT: {
			const char *pat = f->state == MARKER_OUTPUT ? f->exit : f->start;
			size_t plen = f->state == MARKER_OUTPUT ? f->exit_len : f->start_len;
			/* Fast path: plain data outside any partial match is emitted in bulk. */
			if (f->matched == 0 && (char)b != pat[0])
				continue;
			emit(f, buf + run, i - run);
			run = i + 1;
			if (match(f, pat, plen, b))
				f->state = f->state == MARKER_OUTPUT ? MARKER_STATUS : MARKER_OUTPUT;
			break;
		}
		case MARKER_STATUS:
			run = i + 1;
			if (b >= '0' && b <= '9' && f->status_len < sizeof(f->status_text) - 1) {
				f->status_text[f->status_len++] = (char)b;
			} else if (b == ']' && f->status_len > 0) {
				f->status_text[f->status_len] = 0;
				f->status = 0;
				for (size_t k = 0; k < f->status_len; k++)
					f->status = f->status * 10 + (f->status_text[k] - '0');
				if (f->status > 255)
					f->status = 255;
				f->state = MARKER_DONE;
			} else {
				f->state = MARKER_BAD;
			}
			break;
		case MARKER_DONE:
		case MARKER_BAD:
			return;   /* whatever follows (shutdown messages) is not the command's */
		}
	}
	if (f->state == MARKER_BEFORE_START || f->state == MARKER_OUTPUT)
		emit(f, buf + run, len - run);
}

bool marker_filter_finished(const struct marker_filter *f, int *status)
{
	if (f->state != MARKER_DONE)
		return false;
	*status = f->status;
	return true;
}

bool marker_filter_started(const struct marker_filter *f)
{
	return f->state != MARKER_BEFORE_START;
}
