/*
 * libFuzzer target for the snapshot state file reader (src/vmm/snapshot/format.c) and the
 * decoders that need no KVM: the machine shape (shape.c), the device configuration
 * (config_state.c), the platform devices (platform_state.c, into a stand-in VM holding a
 * UART, the ACPI PM registers and an i8042) and rate limiters (limits_state.c, into a
 * stand-in device with two limiters).
 *
 * Input: u8 flags | state file bytes. Flag 1 repairs every checksum the file's structure lets
 * one find before parsing, so mutations reach the decoders instead of dying at the CRC check.
 *
 * These invariants abort on violation:
 *   - a file that parses re-encodes, section by section with the writer, to exactly its bytes
 *     (so the parser accepted nothing the format does not describe), starts with SHAPE and
 *     every section lies inside the input;
 *   - a refusal is CV_EXIT_DATAERR (or out of memory) with a one-line message;
 *   - decoders either accept or refuse; accepted values respect their limits (devices, FIFO,
 *     keyboard queue, bucket levels within their settings), and a restored limiter answers;
 *   - no memory error or leak (ASan, libFuzzer's leak check).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../snap_frames.h"
#include "snapshot/format.h"
#include "snapshot/state.h"
#include "ratelimit.h"
#include "virtio/device.h"
#include "vm.h"

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

_Static_assert(SNAP_SECTION_HDR_SIZE == SNAP_FRAMES_HDR_SIZE, "sections as snap_frames.h has them");

static _Noreturn void fail(int line, const char *what)
{
	fprintf(stderr, "fuzz_snapshot.c:%d: invariant broken: %s\n", line, what);
	abort();
}

static struct vm *V;
/* A stand-in virtio device with two rate limiters, as virtio-net has. */
static struct rate_limiter L[2];
static struct virtio_dev D;

static unsigned two_limiters(struct virtio_dev *d, struct rate_limiter **out)
{
	(void)d;
	out[0] = &L[0];
	out[1] = &L[1];
	return 2;
}

static const struct virtio_dev_ops limited_ops = { .limiters = two_limiters };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	V = calloc(1, sizeof(*V));
	struct uart_hooks hooks = { 0 };
	uart_init(&V->uart, &hooks);
	struct power_hook power = { 0 };
	acpi_pm_init(&V->acpi_pm, &power);
	i8042_init(&V->i8042, &power, NULL, NULL);
	D.name = "stand-in";
	D.ops = &limited_ops;
	rate_limiter_init(&L[0], NULL, NULL);
	rate_limiter_init(&L[1], NULL, NULL);
	return 0;
}

static void check_error(const struct cv_error *err)
{
	CHECK(err->code == CV_EXIT_DATAERR || err->code == CV_EXIT_OSERR);
	CHECK(err->msg[0] != 0);
	CHECK(strchr(err->msg, '\n') == NULL);
}

/* Reads fields of every kind until the cursor runs out: must stop cleanly. */
static void walk(const struct snap_section *s)
{
	struct snap_cur c;
	snap_cur_init(&c, s->data, s->len);
	char str[16];
	for (unsigned i = 0; !c.bad && i < 64; i++) {
		size_t n;
		switch (i % 5) {
		case 0: (void)snap_get_u64(&c); break;
		case 1: (void)snap_get_blob(&c, &n); CHECK(n <= s->len); break;
		case 2: snap_get_str(&c, str, sizeof(str)); CHECK(strlen(str) < sizeof(str)); break;
		case 3: (void)snap_get_u16(&c); break;
		default: (void)snap_get_u8(&c); break;
		}
		CHECK(c.off <= c.len);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t flags;
	size_t len;
	/* An exact-size copy: ASan catches any read past the end. */
	uint8_t *b = snap_frames_input(data, size, SNAP_PREAMBLE_SIZE, &flags, &len);
	if (!b)
		return 0;

	struct snap_file f;
	struct cv_error err = { 0 };
	if (snap_file_parse(b, len, &f, &err) < 0) {
		check_error(&err);
		CHECK(f.sec == NULL && f.n == 0);
		free(b);
		return 0;
	}
	CHECK(f.n >= 1 && f.sec[0].type == SNAP_SEC_SHAPE);

	/* Re-encode: must give back the input byte for byte. */
	struct snap_buf out = { 0 };
	snap_begin(&out);
	for (unsigned i = 0; i < f.n; i++) {
		const struct snap_section *s = &f.sec[i];
		CHECK(s->data >= b && s->len <= len && (size_t)(s->data - b) <= len - s->len);
		CHECK(s->type != SNAP_SEC_END);
		snap_add_section(&out, s->type, s->instance, s->data, s->len);
	}
	snap_finish(&out);
	CHECK(!out.oom && out.len == len && memcmp(out.b, b, len) == 0);
	snap_buf_free(&out);

	struct snap_cur c;
	snap_cur_init(&c, f.sec[0].data, f.sec[0].len);
	struct snap_shape shape;
	memset(&err, 0, sizeof(err));
	if (shape_decode(&c, &shape, &err) == 0) {
		CHECK(shape.n_devices <= SNAP_SHAPE_MAX_DEVICES);
		CHECK(shape.snapshot_type <= 1 && shape.memory_file_size == shape.memory_bytes);
	} else {
		check_error(&err);
	}
	const struct snap_section *p = snap_file_find(&f, SNAP_SEC_PLATFORM, 0);
	if (p) {
		snap_cur_init(&c, p->data, p->len);
		memset(&err, 0, sizeof(err));
		if (platform_state_load(V, &c, &err) == 0)
			CHECK(V->uart.rx_count <= UART_RX_FIFO_SIZE && V->uart.rx_head == 0);
		else
			check_error(&err);
	}
	const struct snap_section *ks = snap_file_find(&f, SNAP_SEC_KEYBOARD, 0);
	if (ks) {
		snap_cur_init(&c, ks->data, ks->len);
		memset(&err, 0, sizeof(err));
		if (keyboard_state_load(&V->i8042, &c, &err) == 0) {
			CHECK(V->i8042.len <= I8042_QUEUE && V->i8042.head == 0);
			for (unsigned i = 0; i < V->i8042.len; i++)
				CHECK(V->i8042.queue_src[i] <= I8042_SRC_AUX);
		} else {
			check_error(&err);
		}
	}
	const struct snap_section *ls = snap_file_find(&f, SNAP_SEC_LIMITS, 0);
	if (ls) {
		snap_cur_init(&c, ls->data, ls->len);
		memset(&err, 0, sizeof(err));
		if (limits_state_load(&D, &c, &err) == 0) {
			for (unsigned i = 0; i < 2; i++) {
				const struct token_bucket *bk[2] = { &L[i].bw, &L[i].ops };
				for (unsigned j = 0; j < 2; j++) {
					const struct token_bucket *t = bk[j];
					CHECK(!t->active || (t->budget <= (int64_t)t->size &&
							     t->burst <= t->cfg.one_time_burst &&
							     t->frac < t->refill_ns));
				}
				uint64_t retry;
				(void)rate_limiter_consume(&L[i], 4096, 1, &retry);
			}
		} else {
			CHECK(err.code == CV_EXIT_DATAERR || err.code == CV_EXIT_USAGE);
			CHECK(err.msg[0] != 0 && strchr(err.msg, '\n') == NULL);
		}
	}
	const struct snap_section *cs = snap_file_find(&f, SNAP_SEC_CONFIG, 0);
	if (cs) {
		static struct snap_config cfg;
		snap_cur_init(&c, cs->data, cs->len);
		memset(&err, 0, sizeof(err));
		if (config_decode(&c, &cfg, &err) == 0) {
			const struct device_config *dc = &cfg.dev;
			CHECK(dc->n_disks <= VM_MAX_DISKS && dc->n_nets <= VM_MAX_NETS);
			for (unsigned i = 0; i < dc->n_disks; i++)
				CHECK(dc->disks[i].path && *dc->disks[i].path && dc->disks[i].id);
			for (unsigned i = 0; i < dc->n_nets; i++)
				CHECK(dc->nets[i].id && !(dc->nets[i].mac[0] & 1));
			CHECK(!dc->vsock.enabled || (dc->vsock.cid >= 3 && *dc->vsock.uds_path));
		} else {
			check_error(&err);
		}
	}
	for (unsigned i = 0; i < f.n; i++)
		walk(&f.sec[i]);
	snap_file_free(&f);
	free(b);
	return 0;
}
