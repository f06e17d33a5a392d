/*
 * The VM's configurable devices: what the user asked for (struct device_config, filled from
 * the command line) and their instances, each on the VM's virtio transport: virtio-pci (the
 * default) or virtio-mmio (--transport mmio, or a kernel command line with pci=off). Fixed
 * platform devices (UART, power, PCI host bridge) are not configurable and live in vm.c.
 */
#ifndef CVISOR_VMM_DEVICES_H
#define CVISOR_VMM_DEVICES_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "ratelimit_config.h"
#include "virtio/virtio_mmio.h"
#include "virtio/virtio_pci.h"

#define VM_MAX_DISKS 16
#define VM_MAX_NETS 8
#define VM_MAX_VIRTIO 32

/*
 * Firecracker's cache_type: Writeback honours the guest's flushes (fdatasync), Unsafe
 * acknowledges them without touching the host file (data reaches the disk when the host's page
 * cache writes it back; a host crash can lose what the guest thought was flushed). Zero is
 * Writeback, so only who asks for Unsafe gets it; the API's default is Unsafe, as Firecracker's.
 */
enum disk_cache { DISK_CACHE_WRITEBACK = 0, DISK_CACHE_UNSAFE };
/* Firecracker's io_engine; cvisor always submits through io_uring (Async). */
enum disk_io_engine { DISK_IO_SYNC = 0, DISK_IO_ASYNC };

struct disk_config {
	const char *path;
	bool read_only;
	const char *serial;          /* NULL: derived from the image path */
	const char *id;              /* drive_id; NULL (from --disk): "drive<index>" */
	bool is_root;                /* root=/dev/vda (or PARTUUID) goes on the command line */
	const char *partuuid;        /* with is_root: root=PARTUUID=... instead of /dev/vda */
	enum disk_cache cache;
	enum disk_io_engine io_engine;
	struct rate_limiter_config rate_limiter;
	/*
	 * Open without taking the image lock (an incoming live migration: the source holds it
	 * until it hands the guest over; virtio_blk_lock_images takes it then).
	 */
	bool defer_lock;
};

struct net_config {
	const char *tap;             /* TAP interface name to open (or create) */
	int tap_fd;                  /* or an already open TAP fd (-1: none) */
	uint8_t mac[6];
	bool has_mac;
	const char *id;              /* iface_id; NULL (from --net): "eth<index>" */
	struct rate_limiter_config rx_rate_limiter, tx_rate_limiter;
	/*
	 * Restore only: mac replaces the snapshot's (a clone's new address). The device shows it
	 * in its configuration space; the guest keeps its old address until it applies the new.
	 */
	bool mac_override;
};

struct vsock_config {
	bool enabled;
	uint32_t cid;
	const char *uds_path;
};

struct balloon_config {
	bool enabled;
	uint32_t target_mib;         /* initial balloon size the guest is asked to give back */
	bool deflate_on_oom;
	unsigned stats_interval_s;   /* 0: no statistics queue */
	bool free_page_reporting;
};

/* How virtio devices reach the guest; AUTO is resolved before the VM is built. */
enum virtio_transport {
	VIRTIO_TRANSPORT_AUTO = 0,   /* mmio if the kernel command line has pci=off, else pci */
	VIRTIO_TRANSPORT_PCI,
	VIRTIO_TRANSPORT_MMIO,
};

struct device_config {
	enum virtio_transport transport;
	bool rng;
	struct rate_limiter_config rng_rate_limiter;
	struct disk_config disks[VM_MAX_DISKS];
	unsigned n_disks;
	struct net_config nets[VM_MAX_NETS];
	unsigned n_nets;
	struct vsock_config vsock;
	struct balloon_config balloon;
};

/* One virtio device on its transport, with whatever owns its backend. */
struct vm_virtio {
	enum virtio_transport kind;  /* PCI or MMIO */
	union {
		struct virtio_pci pci;
		struct virtio_mmio mmio;
	} transport;
	struct virtio_dev *dev;
	void *owner;                 /* the device object (struct virtio_rng ...) */
	void (*destroy)(void *owner);
};

struct vm;

/*
 * Puts a ready virtio device on the VM's transport (a PCI function, or a virtio-mmio window and
 * line) and records it for teardown; on failure the owner is destroyed. Device constructors
 * (virtio_*_add) end with this.
 */
int vm_virtio_plug(struct vm *vm, struct virtio_dev *dev, void *owner, void (*destroy)(void *),
		   struct cv_error *err);

/* Creates every configured device and plugs it into the VM's transport. */
int vm_devices_create(struct vm *vm, const struct device_config *cfg, struct cv_error *err);

/* The ISA lines virtio-mmio devices may use (bit n = IRQ n), for the ACPI and MP tables. */
uint16_t vm_devices_level_irqs(const struct device_config *cfg);

/* PCI or MMIO: the explicit choice, else MMIO exactly when cmdline turns PCI off. */
enum virtio_transport virtio_transport_resolve(enum virtio_transport requested,
					       const char *cmdline);

/*
 * The kernel command line the guest gets: `cmdline` with the virtio-mmio devices declared in
 * front (virtio_mmio.device=...; in front, so that nothing lands after a "--" that hands the
 * rest to init). *out is malloc'ed; NULL when there is nothing to add (PCI).
 */
int vm_devices_cmdline(const struct vm *vm, const char *cmdline, char **out, struct cv_error *err);

/* Resets and frees them (after the vCPUs and the I/O thread stopped). */
void vm_devices_destroy(struct vm *vm);

#endif
