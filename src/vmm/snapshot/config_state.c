/*
 * The device configuration section (SNAP_SEC_CONFIG, see state.h): how the snapshotted VM's
 * devices were configured - image paths, TAP names, MACs, the vsock socket - so that a
 * cvisor-vmm started with nothing but --api-sock can rebuild the same machine for
 * PUT /snapshot/load, as Firecracker does. A restore from the command line (--restore) gets the
 * device options there instead and ignores this section.
 *
 * Payload: u32 transport | u8 rng | u32 disks, each: str id | str path | u8 read-only | str
 * serial ("" none) | u32 NICs, each: str id | str TAP name ("" if given as an fd) | 6 bytes
 * MAC | u8 vsock | u32 CID | str socket path | u8 balloon | u32 target MiB | u8 deflate on
 * OOM | u32 statistics interval s | u8 free page reporting.
 */
#include <stdio.h>
#include <string.h>

#include "snapshot/state.h"
#include "vm.h"

static void put_id(struct snap_buf *out, const char *id, const char *prefix, unsigned i)
{
	char dflt[SNAP_CONFIG_ID_MAX];
	if (!id) {
		snprintf(dflt, sizeof(dflt), "%s%u", prefix, i);
		id = dflt;
	}
	snap_put_str(out, id);
}

void config_save(const struct device_config *dc, struct snap_buf *out)
{
	snap_put_u32(out, dc->transport);
	snap_put_u8(out, dc->rng);
	snap_put_u32(out, dc->n_disks);
	for (unsigned i = 0; i < dc->n_disks; i++) {
		const struct disk_config *d = &dc->disks[i];
		put_id(out, d->id, "drive", i);
		snap_put_str(out, d->path);
		snap_put_u8(out, d->read_only);
		snap_put_str(out, d->serial);
	}
	snap_put_u32(out, dc->n_nets);
	for (unsigned i = 0; i < dc->n_nets; i++) {
		const struct net_config *n = &dc->nets[i];
		put_id(out, n->id, "eth", i);
		snap_put_str(out, n->tap);
		snap_put_bytes(out, n->mac, 6);
	}
	snap_put_u8(out, dc->vsock.enabled);
	snap_put_u32(out, dc->vsock.cid);
	snap_put_str(out, dc->vsock.enabled ? dc->vsock.uds_path : NULL);
	snap_put_u8(out, dc->balloon.enabled);
	snap_put_u32(out, dc->balloon.target_mib);
	snap_put_u8(out, dc->balloon.deflate_on_oom);
	snap_put_u32(out, dc->balloon.stats_interval_s);
	snap_put_u8(out, dc->balloon.free_page_reporting);
}

static bool sane_string(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20)
			return false;
	return true;
}

int config_decode(struct snap_cur *in, struct snap_config *c, struct cv_error *err)
{
	memset(c, 0, sizeof(*c));
	struct device_config *dc = &c->dev;
	dc->transport = (enum virtio_transport)snap_get_u32(in);
	dc->rng = snap_get_u8(in) != 0;
	uint32_t n = snap_get_u32(in);
	if (n > VM_MAX_DISKS)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %u disks (at most %d)", n,
			       VM_MAX_DISKS);
	for (uint32_t i = 0; i < n && !in->bad; i++) {
		struct disk_config *d = &dc->disks[i];
		snap_get_str(in, c->disk_id[i], sizeof(c->disk_id[i]));
		snap_get_str(in, c->disk_path[i], sizeof(c->disk_path[i]));
		d->read_only = snap_get_u8(in) != 0;
		snap_get_str(in, c->disk_serial[i], sizeof(c->disk_serial[i]));
		d->id = c->disk_id[i];
		d->path = c->disk_path[i];
		d->serial = c->disk_serial[i][0] ? c->disk_serial[i] : NULL;
		if (!in->bad && (!*d->path || !sane_string(d->path) || !sane_string(d->id)))
			in->bad = true;
	}
	dc->n_disks = n;
	n = snap_get_u32(in);
	if (!in->bad && n > VM_MAX_NETS)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: %u NICs (at most %d)", n,
			       VM_MAX_NETS);
	for (uint32_t i = 0; i < n && !in->bad; i++) {
		struct net_config *nc = &dc->nets[i];
		snap_get_str(in, c->net_id[i], sizeof(c->net_id[i]));
		snap_get_str(in, c->net_tap[i], sizeof(c->net_tap[i]));
		snap_get_bytes(in, nc->mac, 6);
		nc->id = c->net_id[i];
		nc->tap = c->net_tap[i][0] ? c->net_tap[i] : NULL;
		nc->tap_fd = -1;
		nc->has_mac = true;
		if (!in->bad && ((nc->mac[0] & 1) || !sane_string(nc->id) ||
				 !sane_string(c->net_tap[i])))
			in->bad = true;
	}
	dc->n_nets = n;
	dc->vsock.enabled = snap_get_u8(in) != 0;
	dc->vsock.cid = snap_get_u32(in);
	snap_get_str(in, c->vsock_path, sizeof(c->vsock_path));
	dc->vsock.uds_path = c->vsock_path;
	dc->balloon.enabled = snap_get_u8(in) != 0;
	dc->balloon.target_mib = snap_get_u32(in);
	dc->balloon.deflate_on_oom = snap_get_u8(in) != 0;
	dc->balloon.stats_interval_s = snap_get_u32(in);
	dc->balloon.free_page_reporting = snap_get_u8(in) != 0;
	if (!snap_cur_done(in))
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: device configuration section is "
			       "malformed");
	if (dc->transport != VIRTIO_TRANSPORT_PCI && dc->transport != VIRTIO_TRANSPORT_MMIO)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: unknown virtio transport %u",
			       dc->transport);
	if (dc->vsock.enabled &&
	    (dc->vsock.cid < 3 || !c->vsock_path[0] || !sane_string(c->vsock_path)))
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: vsock configuration is malformed");
	return 0;
}
