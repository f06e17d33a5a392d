/*
 * `cvisor run --no-agent`: cvisor-init runs the command itself and its output comes back on the
 * serial console between markers (markers.h). Needs no vsock and no agent in the guest, so it
 * works with any initramfs built on cvisor-init; the price is no stdin, and stderr merged into
 * stdout.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "markers.h"
#include "run.h"
#include "util.h"

static void write_stdout(void *ctx, const uint8_t *buf, size_t len)
{
	(void)ctx;
	cv_write_full(STDOUT_FILENO, buf, len);
}

static void write_stderr(void *ctx, const uint8_t *buf, size_t len)
{
	(void)ctx;
	cv_write_full(STDERR_FILENO, buf, len);
}

int run_with_console(const struct run_options *o, struct cv_error *err)
{
	char token[17];
	if (run_random_token(token, err) < 0)
		return -1;
	struct run_request rq = { .token = token };
	struct run_vm vm;
	if (run_vm_start(&vm, o, &rq, NULL, err) < 0)
		return -1;
	struct marker_filter f;
	marker_filter_init(&f, token, write_stdout, NULL);
	if (o->verbose)
		f.prelude_out = write_stderr;
	uint8_t buf[65536];
	for (;;) {
		ssize_t n = read(vm.console_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		marker_filter_feed(&f, buf, (size_t)n);
	}
	run_vm_wait(&vm, -1);
	int status;
	if (marker_filter_finished(&f, &status))
		return status;
	if (!marker_filter_started(&f)) {
		size_t n = f.prelude_len < sizeof(vm.prelude) ? f.prelude_len : sizeof(vm.prelude);
		memcpy(vm.prelude, f.prelude + f.prelude_len - n, n);
		vm.prelude_len = n;
	}
	return run_vm_failed(&vm, err);
}
