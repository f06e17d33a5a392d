/*
 * The snapshot state file format (src/vmm/snapshot/format.c) and the state encodings that need
 * no KVM: a file written section by section parses back to the same sections and bytes; every
 * single corrupt byte is caught (CRC), as is every truncation, a foreign magic, another format
 * version and data after END; field readers never read past a payload; the machine shape round
 * trips and refuses what it must; a virtio device's core and virtio-pci transport state saves,
 * loads into a fresh device and saves again to the same bytes, and damaged state is refused.
 * (vCPU and VM state against a real KVM: tests/kvm/test_snapshot.c.)
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "devices.h"
#include "evloop.h"
#include "irq.h"
#include "layout.h"
#include "snapshot/format.h"
#include "snapshot/state.h"
#include "virtio/rng.h"

/* A file with SHAPE, two payload sections and END; the shape bytes come from shape_put(). */
static void shape_put(struct snap_buf *s, uint32_t vcpus, uint64_t mem, uint32_t type)
{
	snap_put_str(s, "0.1.0");
	snap_put_u32(s, vcpus);
	snap_put_u64(s, mem);
	snap_put_u64(s, mem);
	snap_put_u32(s, type);
	snap_put_u32(s, 1);      /* transport: PCI */
	snap_put_u32(s, 2);      /* devices */
	snap_put_u32(s, 2);
	snap_put_u32(s, 1);
	snap_put_str(s, "virtio-blk0");
	snap_put_u32(s, 4);
	snap_put_u32(s, 1);
	snap_put_str(s, "virtio-rng");
}

static struct snap_buf sample(void)
{
	struct snap_buf f = { 0 }, p = { 0 };
	snap_begin(&f);
	shape_put(&p, 2, 256ULL << 20, 0);
	snap_add_section(&f, SNAP_SEC_SHAPE, 0, p.b, p.len);
	snap_buf_free(&p);
	uint8_t a[300];
	for (unsigned i = 0; i < sizeof(a); i++)
		a[i] = (uint8_t)(i * 7 + 3);
	snap_add_section(&f, SNAP_SEC_VCPU, 1, a, sizeof(a));
	snap_add_section(&f, SNAP_SEC_PLATFORM, 0, NULL, 0);
	snap_finish(&f);
	cr_assert(!f.oom);
	return f;
}

Test(format, round_trip_keeps_every_section)
{
	struct snap_buf f = sample();
	struct snap_file pf;
	struct cv_error err = { 0 };
	cr_assert_eq(snap_file_parse(f.b, f.len, &pf, &err), 0, "%s", err.msg);
	cr_assert_eq(pf.version, SNAP_FORMAT_VERSION);
	cr_assert_eq(pf.n, 3, "END is not listed as a section");
	const struct snap_section *v = snap_file_find(&pf, SNAP_SEC_VCPU, 1);
	cr_assert_not_null(v);
	cr_assert_eq(v->len, 300);
	for (unsigned i = 0; i < 300; i++)
		cr_assert_eq(v->data[i], (uint8_t)(i * 7 + 3));
	cr_assert_null(snap_file_find(&pf, SNAP_SEC_VCPU, 0), "instances are told apart");
	const struct snap_section *p = snap_file_find(&pf, SNAP_SEC_PLATFORM, 0);
	cr_assert_not_null(p);
	cr_assert_eq(p->len, 0);

	struct snap_cur c;
	snap_cur_init(&c, pf.sec[0].data, pf.sec[0].len);
	struct snap_shape s;
	cr_assert_eq(shape_decode(&c, &s, &err), 0, "%s", err.msg);
	cr_assert_str_eq(s.version, "0.1.0");
	cr_assert_eq(s.n_vcpus, 2);
	cr_assert_eq(s.memory_bytes, 256ULL << 20);
	cr_assert_eq(s.n_devices, 2);
	cr_assert_str_eq(s.dev[0].name, "virtio-blk0");
	cr_assert_eq(s.dev[1].device_id, 4);
	snap_file_free(&pf);
	snap_buf_free(&f);
}

Test(format, every_corrupt_byte_is_caught)
{
	struct snap_buf f = sample();
	struct cv_error err;
	struct snap_file pf;
	for (size_t i = 0; i < f.len; i++) {
		f.b[i] ^= 0x20;
		memset(&err, 0, sizeof(err));
		int rc = snap_file_parse(f.b, f.len, &pf, &err);
		cr_assert_eq(rc, -1, "flipping byte %zu went unnoticed", i);
		cr_assert_eq(err.code, CV_EXIT_DATAERR, "byte %zu: %s", i, err.msg);
		cr_assert_null(strchr(err.msg, '\n'), "one line: %s", err.msg);
		if (i >= SNAP_PREAMBLE_SIZE)
			cr_assert(strstr(err.msg, "CRC") || strstr(err.msg, "truncated"),
				  "byte %zu: %s", i, err.msg);
		f.b[i] ^= 0x20;
	}
	cr_assert_eq(snap_file_parse(f.b, f.len, &pf, &err), 0, "restored file parses again");
	snap_file_free(&pf);
	snap_buf_free(&f);
}

Test(format, every_truncation_is_refused)
{
	struct snap_buf f = sample();
	struct cv_error err;
	struct snap_file pf;
	for (size_t len = 0; len < f.len; len++) {
		/* An exact copy, so ASan sees any read past the shortened end. */
		uint8_t *cut = malloc(len ? len : 1);
		memcpy(cut, f.b, len);
		memset(&err, 0, sizeof(err));
		cr_assert_eq(snap_file_parse(cut, len, &pf, &err), -1, "truncated to %zu bytes", len);
		cr_assert_eq(err.code, CV_EXIT_DATAERR);
		free(cut);
	}
	snap_buf_free(&f);
}

Test(format, wrong_version_and_magic_are_named)
{
	struct snap_buf f = sample();
	struct cv_error err = { 0 };
	struct snap_file pf;
	put_le32(f.b + 8, SNAP_FORMAT_VERSION + 1);
	cr_assert_eq(snap_file_parse(f.b, f.len, &pf, &err), -1);
	cr_assert(strstr(err.msg, "version 2 is not supported") != NULL, "%s", err.msg);
	put_le32(f.b + 8, SNAP_FORMAT_VERSION);
	f.b[0] = 'X';
	cr_assert_eq(snap_file_parse(f.b, f.len, &pf, &err), -1);
	cr_assert(strstr(err.msg, "magic") != NULL, "%s", err.msg);
	snap_buf_free(&f);
}

Test(format, data_after_end_and_missing_shape_are_refused)
{
	struct snap_buf f = sample();
	struct cv_error err = { 0 };
	struct snap_file pf;
	snap_add_section(&f, SNAP_SEC_VM, 0, "x", 1);
	cr_assert_eq(snap_file_parse(f.b, f.len, &pf, &err), -1);
	cr_assert(strstr(err.msg, "after its END") != NULL, "%s", err.msg);
	snap_buf_free(&f);

	struct snap_buf g = { 0 };
	snap_begin(&g);
	snap_add_section(&g, SNAP_SEC_VM, 0, "x", 1);
	snap_finish(&g);
	cr_assert_eq(snap_file_parse(g.b, g.len, &pf, &err), -1);
	cr_assert(strstr(err.msg, "machine shape") != NULL, "%s", err.msg);
	snap_buf_free(&g);
}

Test(format, field_reader_stops_at_the_end)
{
	uint8_t b[6] = { 1, 2, 3, 4, 5, 6 };
	struct snap_cur c;
	snap_cur_init(&c, b, sizeof(b));
	cr_assert_eq(snap_get_u32(&c), 0x04030201u);
	cr_assert_eq(snap_get_u32(&c), 0, "overrun reads as zero");
	cr_assert(c.bad);
	cr_assert_eq(snap_get_u16(&c), 0, "and stays bad");
	cr_assert(!snap_cur_done(&c));

	/* A blob whose length runs past the payload. */
	uint8_t blob[8];
	put_le32(blob, 100);
	snap_cur_init(&c, blob, sizeof(blob));
	size_t n;
	cr_assert_null(snap_get_blob(&c, &n));
	cr_assert_eq(n, 0);
	cr_assert(c.bad);

	/* Strings: too long for the buffer, or with a NUL inside, are refused. */
	struct snap_buf s = { 0 };
	snap_put_str(&s, "abcdef");
	char out[4];
	snap_cur_init(&c, s.b, s.len);
	snap_get_str(&c, out, sizeof(out));
	cr_assert(c.bad);
	cr_assert_eq(out[0], 0);
	snap_buf_free(&s);
	snap_put_blob(&s, "a\0b", 3);
	char out2[8];
	snap_cur_init(&c, s.b, s.len);
	snap_get_str(&c, out2, sizeof(out2));
	cr_assert(c.bad);
	snap_buf_free(&s);

	/* Leftover bytes mean the payload is not what the reader expects. */
	snap_cur_init(&c, b, sizeof(b));
	snap_get_u32(&c);
	cr_assert(!snap_cur_done(&c));
	snap_get_u16(&c);
	cr_assert(snap_cur_done(&c));
}

Test(format, shape_takes_diff_snapshots_refuses_unknown_types_and_bad_device_counts)
{
	struct snap_buf p = { 0 };
	shape_put(&p, 1, 64ULL << 20, SNAP_TYPE_DIFF);
	struct snap_cur c;
	snap_cur_init(&c, p.b, p.len);
	struct snap_shape s;
	struct cv_error err = { 0 };
	cr_assert_eq(shape_decode(&c, &s, &err), 0, "%s", err.msg);
	cr_assert_eq(s.snapshot_type, SNAP_TYPE_DIFF);
	snap_buf_free(&p);

	shape_put(&p, 1, 64ULL << 20, 2);
	snap_cur_init(&c, p.b, p.len);
	cr_assert_eq(shape_decode(&c, &s, &err), -1);
	cr_assert(strstr(err.msg, "unknown snapshot type 2") != NULL, "%s", err.msg);
	snap_buf_free(&p);

	snap_put_str(&p, "0.1.0");
	snap_put_u32(&p, 1);
	snap_put_u64(&p, 64ULL << 20);
	snap_put_u64(&p, 64ULL << 20);
	snap_put_u32(&p, 0);
	snap_put_u32(&p, 1);
	snap_put_u32(&p, 100000);      /* devices: far more than any VM has */
	snap_cur_init(&c, p.b, p.len);
	cr_assert_eq(shape_decode(&c, &s, &err), -1);
	cr_assert(strstr(err.msg, "devices") != NULL, "%s", err.msg);
	snap_buf_free(&p);
}

Test(format, crc32_matches_the_standard_check_value)
{
	/* The CRC-32 (IEEE) check value of "123456789", as zlib computes it. */
	cr_assert_eq(snap_crc32(0, "123456789", 9), 0xcbf43926u);
	uint32_t part = snap_crc32(0, "12345", 5);
	cr_assert_eq(snap_crc32(part, "6789", 4), 0xcbf43926u, "continues across calls");
}

/* ------------------------------------------------------------------------------------------ */
/* virtio core + virtio-pci transport state (virtio_state.c), on host memory without KVM */

struct rig {
	struct guest_memory mem;
	struct evloop loop;
	struct io_bus pio, mmio;
	struct pci_bus bus;
	struct irq_routing irq;
	struct virtio_rng rng;
	struct vm_virtio v;
};

static void rig_init(struct rig *r)
{
	memset(r, 0, sizeof(*r));
	struct cv_error err = { 0 };
	cr_assert_eq(guest_memory_init(&r->mem, 4ULL << 20, &err), 0, "%s", err.msg);
	cr_assert_eq(evloop_init(&r->loop, &err), 0, "%s", err.msg);
	io_bus_init(&r->pio, "pio");
	io_bus_init(&r->mmio, "mmio");
	cr_assert_eq(pci_bus_init(&r->bus, &r->pio, &r->mmio, LAYOUT_PCI_WINDOW,
				  LAYOUT_PCI_WINDOW_SIZE, &err), 0, "%s", err.msg);
	r->irq.vm_fd = -1;
	cr_assert_eq(virtio_rng_init(&r->rng, &r->mem, &r->loop, NULL, &err), 0, "%s", err.msg);
	r->v.kind = VIRTIO_TRANSPORT_PCI;
	r->v.dev = &r->rng.dev;
	struct virtio_pci_env env = { .bus = &r->bus, .irq = &r->irq, .loop = &r->loop,
				      .vm_fd = -1 };
	cr_assert_eq(virtio_pci_init(&r->v.transport.pci, &r->rng.dev, &env, &err), 0, "%s",
		     err.msg);
}

static void rig_free(struct rig *r)
{
	virtio_pci_destroy(&r->v.transport.pci);
	virtio_rng_destroy(&r->rng);
	pci_bus_destroy(&r->bus);
	io_bus_free(&r->pio);
	io_bus_free(&r->mmio);
	evloop_destroy(&r->loop);
	guest_memory_free(&r->mem);
}

/* Drives the device as a driver would have: features, one queue, DRIVER_OK, MSI-X vectors. */
static void rig_drive(struct rig *r)
{
	struct virtio_dev *d = &r->rng.dev;
	struct virtio_pci *vp = &r->v.transport.pci;
	pthread_mutex_lock(&d->lock);
	d->guest_features = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_EVENT_IDX);
	d->vq[0].size = 32;
	d->vq[0].desc_gpa = 0x10000;
	d->vq[0].avail_gpa = 0x11000;
	d->vq[0].used_gpa = 0x12000;
	d->queue_enabled[0] = true;
	virtio_dev_write_status(d, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
				   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	cr_assert(d->vq[0].started, "queue started");
	d->vq[0].last_avail = 1234;
	d->vq[0].used_idx = 1230;
	d->vq[0].signalled_used = 1229;
	d->vq[0].signalled_valid = true;
	d->config_generation = 7;
	pthread_mutex_unlock(&d->lock);
	vp->queue_msix[0] = 1;
	vp->msix_config = 0;
	vp->queue_select = 0;
	vp->device_feature_select = 1;
	for (unsigned i = 0; i < 16; i++)
		vp->msix.table[16 + i] = (uint8_t)(0xa0 + i);
	vp->msix.table[16 + 12] = 0;          /* vector 1 unmasked */
	vp->msix.pending = 1;                  /* vector 0 pending */
}

static struct snap_buf rig_save(struct rig *r)
{
	struct snap_buf b = { 0 };
	virtio_state_save(&r->v, &b);
	cr_assert(!b.oom);
	return b;
}

Test(virtio_state, round_trip_restores_queues_features_and_msix)
{
	struct rig *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	rig_init(a);
	rig_init(b);
	rig_drive(a);
	struct snap_buf s = rig_save(a);
	struct snap_cur c;
	snap_cur_init(&c, s.b, s.len);
	struct cv_error err = { 0 };
	cr_assert_eq(virtio_state_load(&b->v, &c, &err), 0, "%s", err.msg);

	struct virtio_dev *d = &b->rng.dev;
	cr_assert_eq(d->guest_features, a->rng.dev.guest_features);
	cr_assert_eq(d->status, a->rng.dev.status);
	cr_assert_eq(d->config_generation, 7);
	cr_assert(d->vq[0].started, "the restored queue runs");
	cr_assert(d->vq[0].event_idx, "with the negotiated ring features");
	cr_assert_eq(d->vq[0].size, 32);
	cr_assert_eq(d->vq[0].desc_gpa, 0x10000);
	cr_assert_eq(d->vq[0].last_avail, 1234);
	cr_assert_eq(d->vq[0].used_idx, 1230);
	cr_assert_eq(d->vq[0].signalled_used, 1229);
	cr_assert(d->vq[0].signalled_valid);
	struct virtio_pci *vp = &b->v.transport.pci;
	cr_assert_eq(vp->queue_msix[0], 1);
	cr_assert_eq(vp->msix_config, 0);
	cr_assert_eq(vp->device_feature_select, 1);
	cr_assert_eq(memcmp(vp->msix.table, a->v.transport.pci.msix.table, 32), 0);
	cr_assert_eq(vp->msix.pending, 1);
	/* The queue was kicked once, so the device looks at the ring when the VM runs. */
	uint64_t kicks = 0;
	cr_assert_eq(read(vp->notify[0].kick.fd, &kicks, sizeof(kicks)), (ssize_t)sizeof(kicks));
	cr_assert_eq(kicks, 1);

	/* And the restored device saves to the same bytes. */
	struct snap_buf s2 = rig_save(b);
	cr_assert_eq(s2.len, s.len);
	cr_assert_eq(memcmp(s2.b, s.b, s.len), 0);
	snap_buf_free(&s2);
	snap_buf_free(&s);
	rig_free(a);
	rig_free(b);
	free(a);
	free(b);
}

Test(virtio_state, load_refuses_what_does_not_fit)
{
	struct rig *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	rig_init(a);
	rig_drive(a);
	struct snap_buf s = rig_save(a);
	struct cv_error err;
	struct snap_cur c;

	/* Every truncation is refused, with the device left unstarted. */
	for (size_t len = 0; len < s.len; len += 3) {
		rig_init(b);
		snap_cur_init(&c, s.b, len);
		memset(&err, 0, sizeof(err));
		cr_assert_eq(virtio_state_load(&b->v, &c, &err), -1, "truncated to %zu", len);
		cr_assert_null(strchr(err.msg, '\n'));
		rig_free(b);
	}
	/* Features the device does not offer. */
	uint8_t *copy = malloc(s.len);
	memcpy(copy, s.b, s.len);
	put_le64(copy + 16, get_le64(copy + 16) | (1ULL << 40));
	rig_init(b);
	snap_cur_init(&c, copy, s.len);
	cr_assert_eq(virtio_state_load(&b->v, &c, &err), -1);
	cr_assert(strstr(err.msg, "features") != NULL, "%s", err.msg);
	rig_free(b);
	/* A queue size that is not a power of two. */
	memcpy(copy, s.b, s.len);
	put_le16(copy + 27, 33);     /* queue 0 size: after the 27-byte device header */
	rig_init(b);
	snap_cur_init(&c, copy, s.len);
	cr_assert_eq(virtio_state_load(&b->v, &c, &err), -1);
	cr_assert(strstr(err.msg, "size") != NULL, "%s", err.msg);
	rig_free(b);
	/* Rings outside guest RAM. */
	memcpy(copy, s.b, s.len);
	put_le64(copy + 38, 1ULL << 40);   /* queue 0 avail ring address */
	rig_init(b);
	snap_cur_init(&c, copy, s.len);
	cr_assert_eq(virtio_state_load(&b->v, &c, &err), -1);
	cr_assert(strstr(err.msg, "queue 0") != NULL, "%s", err.msg);
	rig_free(b);
	free(copy);
	snap_buf_free(&s);
	rig_free(a);
	free(a);
	free(b);
}
