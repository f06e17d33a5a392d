/*
 * Separates a command's output from the rest of a guest's serial console. cvisor-init prints a
 * start line and an exit marker carrying a per-run token (guest/init/request.h); this filter
 * passes through exactly the bytes between them, remembers what came before (kernel messages,
 * shown when the run fails) and extracts the exit status. Input may arrive in any chunking.
 */
#ifndef CVISOR_CLI_MARKERS_H
#define CVISOR_CLI_MARKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MARKER_PATTERN_MAX 96
#define MARKER_PRELUDE_MAX 16384

typedef void (*marker_output_fn)(void *ctx, const uint8_t *buf, size_t len);

struct marker_filter {
	enum { MARKER_BEFORE_START, MARKER_OUTPUT, MARKER_STATUS, MARKER_DONE, MARKER_BAD } state;
	char start[MARKER_PATTERN_MAX];
	size_t start_len;
	char exit[MARKER_PATTERN_MAX];
	size_t exit_len;
	size_t matched;                 /* bytes of the current pattern matched so far */
	char status_text[16];
	size_t status_len;
	int status;
	char prelude[MARKER_PRELUDE_MAX];   /* the last bytes seen before the start line */
	size_t prelude_len;
	marker_output_fn out;
	marker_output_fn prelude_out;   /* optional: also stream pre-start bytes (verbose runs) */
	void *ctx;
};

void marker_filter_init(struct marker_filter *f, const char *token, marker_output_fn out,
			void *ctx);
void marker_filter_feed(struct marker_filter *f, const uint8_t *buf, size_t len);

/* True once the exit marker was parsed; *status is the command's exit status. */
bool marker_filter_finished(const struct marker_filter *f, int *status);
bool marker_filter_started(const struct marker_filter *f);

#endif
