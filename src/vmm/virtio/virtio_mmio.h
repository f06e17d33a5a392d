/*
 * The virtio-mmio transport, version 2 ("modern", virtio 1.2 section 4.2): each device is a 4 KiB
 * register window in guest physical memory plus one interrupt line, declared to Linux on the
 * kernel command line (virtio_mmio.device=4K@BASE:IRQ), which is what Firecracker's guests
 * (booted with pci=off) expect. An alternative to virtio-pci, chosen per VM; the devices
 * themselves (struct virtio_dev) are the same under both.
 *
 * Notifications: a KVM ioeventfd per queue on the QueueNotify register (datamatch = queue
 * index), so a kick reaches the I/O thread without a trip through the vCPU loop; a write the
 * ioeventfds do not match falls back to the register handler.
 *
 * Interrupts: virtio-mmio's line is level-triggered by definition - it stays asserted while
 * InterruptStatus is non-zero, and the driver's InterruptACK write lowers it. There are only a
 * few free ISA lines (the kernel cannot use IOAPIC pins above 15 for command-line devices when
 * ACPI describes the machine), so devices share lines round-robin, which the Linux driver
 * allows (IRQF_SHARED); a shared line is the OR of its devices' levels, kept in struct
 * virtio_mmio_bus and driven with KVM_IRQ_LINE only when that OR changes. The ACPI MADT and the
 * MP table declare these lines level-triggered, active high.
 */
#ifndef CVISOR_VMM_VIRTIO_VIRTIO_MMIO_H
#define CVISOR_VMM_VIRTIO_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "devices/bus.h"
#include "error.h"
#include "evloop.h"
#include "virtio/device.h"

#define VIRTIO_MMIO_WINDOW 0x1000         /* bytes of register space per device */
#define VIRTIO_MMIO_MAGIC 0x74726976      /* "virt" */
#define VIRTIO_MMIO_VERSION 2
#define VIRTIO_MMIO_VENDOR 0x1af4         /* the virtio vendor ID virtio-pci uses too */
#define VIRTIO_MMIO_MAX_DEVICES 32
#define VIRTIO_MMIO_MAX_LINES 16

/* Register offsets (virtio 1.2, table 4.1). Control registers are 32 bits wide. */
enum {
	VIRTIO_MMIO_MAGIC_VALUE = 0x000,
	VIRTIO_MMIO_VERSION_REG = 0x004,
	VIRTIO_MMIO_DEVICE_ID = 0x008,
	VIRTIO_MMIO_VENDOR_ID = 0x00c,
	VIRTIO_MMIO_DEVICE_FEATURES = 0x010,
	VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014,
	VIRTIO_MMIO_DRIVER_FEATURES = 0x020,
	VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024,
	VIRTIO_MMIO_QUEUE_SEL = 0x030,
	VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034,
	VIRTIO_MMIO_QUEUE_NUM = 0x038,
	VIRTIO_MMIO_QUEUE_READY = 0x044,
	VIRTIO_MMIO_QUEUE_NOTIFY = 0x050,
	VIRTIO_MMIO_INTERRUPT_STATUS = 0x060,
	VIRTIO_MMIO_INTERRUPT_ACK = 0x064,
	VIRTIO_MMIO_STATUS = 0x070,
	VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080,
	VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084,
	VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090,
	VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094,
	VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0a0,
	VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0a4,
	VIRTIO_MMIO_SHM_SEL = 0x0ac,
	VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0,
	VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4,
	VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8,
	VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc,
	VIRTIO_MMIO_QUEUE_RESET = 0x0c0,
	VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc,
	VIRTIO_MMIO_CONFIG = 0x100,
};

/* InterruptStatus bits */
#define VIRTIO_MMIO_INT_VRING 1u
#define VIRTIO_MMIO_INT_CONFIG 2u

/* What the transport needs from the VM; tests fill it with their own bus and line hook. */
struct virtio_mmio_env {
	struct io_bus *mmio;             /* where the register windows are claimed */
	struct evloop *loop;             /* the I/O thread that runs queue notifications */
	int vm_fd;                       /* for KVM_IOEVENTFD; -1: kicks go through the handler */
	uint64_t base;                   /* first window; window i at base + i * VIRTIO_MMIO_WINDOW */
	unsigned max_devices;            /* windows reserved from base */
	const uint8_t *lines;            /* interrupt lines (GSIs) to hand out round-robin */
	unsigned n_lines;
	/* Drives a line (KVM_IRQ_LINE in the VM). Called with the bus lock held. */
	void (*set_line)(void *ctx, unsigned gsi, int level);
	void *line_ctx;
};

/* The VM-wide part: window and line allocation, and the shared lines' levels. */
struct virtio_mmio_bus {
	struct virtio_mmio_env env;
	pthread_mutex_t lock;            /* guards asserted[]; taken inside a device's lock */
	unsigned n_devices;
	uint64_t asserted[VIRTIO_MMIO_MAX_LINES];   /* per line: bit i = device i wants it high */
};

struct virtio_mmio;

struct virtio_mmio_notify {
	struct virtio_kick kick;
	bool ioeventfd;                  /* KVM_IOEVENTFD registered for it */
};

/*
 * The transport's own register state, apart from what struct virtio_dev holds (features,
 * status, queue addresses, InterruptStatus): plain values, so a snapshot can copy it as is.
 */
struct virtio_mmio_regs {
	uint32_t device_features_sel;
	uint32_t driver_features_sel;
	uint32_t queue_sel;
	uint32_t shm_sel;
};

struct virtio_mmio {
	struct virtio_dev *dev;
	struct virtio_mmio_bus *bus;
	unsigned index;                  /* device number on the bus: window and bit in asserted[] */
	uint64_t base;                   /* guest physical address of the window */
	unsigned line;                   /* index into env.lines */
	unsigned gsi;
	struct virtio_mmio_regs regs;
	struct virtio_mmio_notify notify[VIRTIO_MAX_QUEUES];
};

int virtio_mmio_bus_init(struct virtio_mmio_bus *bus, const struct virtio_mmio_env *env,
			 struct cv_error *err);
void virtio_mmio_bus_destroy(struct virtio_mmio_bus *bus);

/* Gives dev the next window and line and claims the window on env.mmio. */
int virtio_mmio_init(struct virtio_mmio *m, struct virtio_dev *dev, struct virtio_mmio_bus *bus,
		     struct cv_error *err);
void virtio_mmio_destroy(struct virtio_mmio *m);

/*
 * Re-derives the device's contribution to its line from InterruptStatus and drives the line to
 * the result even if our record says it is there already (d->lock held): after a snapshot
 * restored struct virtio_dev and KVM's interrupt controller, or anything else that changed isr
 * or the line behind our back.
 */
void virtio_mmio_sync_irq(struct virtio_mmio *m);

/* The register handler (offsets relative to the window), for the bus and for tests. */
extern const struct io_ops virtio_mmio_io_ops;

/* "virtio_mmio.device=4K@0xd0000000:5": how the guest kernel learns about the device. */
int virtio_mmio_cmdline_param(const struct virtio_mmio *m, char *buf, size_t len);

/*
 * True if the kernel command line turns PCI off ("pci=off", also inside a list such as
 * "pci=nomsi,off"), looking only at kernel parameters: words after a bare "--" go to init.
 */
bool virtio_mmio_cmdline_disables_pci(const char *cmdline);

#endif
