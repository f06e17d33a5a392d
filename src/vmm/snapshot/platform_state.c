/*
 * Fixed platform devices for snapshots (see state.h).
 *   PLATFORM payload: UART u8 ier lcr mcr lsr msr scr dll dlm fcr | u8 thr_interrupt |
 *     u8 irq_level | blob RX FIFO contents (oldest first, at most 64) | ACPI PM u16 enable |
 *     u16 control
 *   KEYBOARD payload: i8042 u8 command byte | u8 controller command awaiting its data byte |
 *     u8 keyboard command awaiting its data byte | blob bytes queued for the guest (oldest
 *     first, at most 32) | blob their sources (I8042_SRC_*), as many
 *   PCI payload (per slot): blob of the 256-byte configuration space
 * The UART's interrupt line level is restored without driving the line: the IOAPIC's own
 * state (vm_state.c) already holds what the line did.
 */
#include <string.h>

#include "snapshot/state.h"
#include "vm.h"

void platform_state_save(struct vm *vm, struct snap_buf *out)
{
	struct uart *u = &vm->uart;
	pthread_mutex_lock(&u->lock);
	uint8_t regs[] = { u->ier, u->lcr, u->mcr, u->lsr, u->msr, u->scr, u->dll, u->dlm, u->fcr,
			   u->thr_interrupt, (uint8_t)u->irq_level };
	snap_put_bytes(out, regs, sizeof(regs));
	uint8_t fifo[UART_RX_FIFO_SIZE];
	for (unsigned i = 0; i < u->rx_count; i++)
		fifo[i] = u->rx[(u->rx_head + i) % UART_RX_FIFO_SIZE];
	snap_put_blob(out, fifo, u->rx_count);
	pthread_mutex_unlock(&u->lock);

	pthread_mutex_lock(&vm->acpi_pm.lock);
	snap_put_u16(out, vm->acpi_pm.pm1_enable);
	snap_put_u16(out, vm->acpi_pm.pm1_control);
	pthread_mutex_unlock(&vm->acpi_pm.lock);
}

int platform_state_load(struct vm *vm, struct snap_cur *in, struct cv_error *err)
{
	uint8_t r[11];
	snap_get_bytes(in, r, sizeof(r));
	size_t n;
	const uint8_t *fifo = snap_get_blob(in, &n);
	uint16_t enable = snap_get_u16(in), control = snap_get_u16(in);
	if (!snap_cur_done(in) || !fifo || n > UART_RX_FIFO_SIZE)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: platform device section is malformed");

	struct uart *u = &vm->uart;
	pthread_mutex_lock(&u->lock);
	u->ier = r[0] & 0x0f;
	u->lcr = r[1];
	u->mcr = r[2] & 0x1f;
	u->lsr = r[3];
	u->msr = r[4];
	u->scr = r[5];
	u->dll = r[6];
	u->dlm = r[7];
	u->fcr = r[8];
	u->thr_interrupt = r[9] != 0;
	u->irq_level = r[10] != 0;
	memcpy(u->rx, fifo, n);
	u->rx_head = 0;
	u->rx_count = (unsigned)n;
	pthread_mutex_unlock(&u->lock);

	pthread_mutex_lock(&vm->acpi_pm.lock);
	vm->acpi_pm.pm1_enable = enable;
	vm->acpi_pm.pm1_control = control | ACPI_PM1_SCI_EN;
	pthread_mutex_unlock(&vm->acpi_pm.lock);
	return 0;
}

void keyboard_state_save(struct i8042 *k, struct snap_buf *out)
{
	pthread_mutex_lock(&k->lock);
	uint8_t bytes[I8042_QUEUE], src[I8042_QUEUE];
	for (unsigned i = 0; i < k->len; i++) {
		bytes[i] = k->queue[(k->head + i) % I8042_QUEUE];
		src[i] = k->queue_src[(k->head + i) % I8042_QUEUE];
	}
	snap_put_u8(out, k->ctr);
	snap_put_u8(out, k->pending);
	snap_put_u8(out, k->kbd_pending);
	snap_put_blob(out, bytes, k->len);
	snap_put_blob(out, src, k->len);
	pthread_mutex_unlock(&k->lock);
}

int keyboard_state_load(struct i8042 *k, struct snap_cur *in, struct cv_error *err)
{
	uint8_t ctr = snap_get_u8(in), pending = snap_get_u8(in), kbd_pending = snap_get_u8(in);
	size_t n, ns;
	const uint8_t *bytes = snap_get_blob(in, &n), *src = snap_get_blob(in, &ns);
	bool ok = snap_cur_done(in) && bytes && src && n == ns && n <= I8042_QUEUE;
	for (size_t i = 0; ok && i < n; i++)
		ok = src[i] <= I8042_SRC_AUX;
	if (!ok)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: keyboard section is malformed");
	/* No interrupt now: the interrupt controllers' saved state holds any the queue raised. */
	pthread_mutex_lock(&k->lock);
	k->ctr = ctr;
	k->pending = pending;
	k->kbd_pending = kbd_pending;
	memcpy(k->queue, bytes, n);
	memcpy(k->queue_src, src, n);
	k->head = 0;
	k->len = (unsigned)n;
	pthread_mutex_unlock(&k->lock);
	return 0;
}

void pci_state_save(struct pci_device *d, struct snap_buf *out)
{
	snap_put_blob(out, d->config, PCI_CONFIG_SIZE);
}

int pci_state_load(struct pci_bus *bus, struct pci_device *d, struct snap_cur *in,
		   struct cv_error *err)
{
	size_t n;
	const uint8_t *cfg = snap_get_blob(in, &n);
	if (!cfg || n != PCI_CONFIG_SIZE || !snap_cur_done(in))
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: PCI slot %u: malformed configuration "
			       "space", d->slot);
	/* Identity (vendor, device, class) and capabilities are ours, not the guest's: they must match. */
	if (memcmp(cfg, d->config, 4) != 0 || memcmp(cfg + PCI_REVISION, d->config + PCI_REVISION, 4))
		return cv_fail(err, CV_EXIT_USAGE, "snapshot: PCI slot %u holds a different device "
			       "(%02x%02x:%02x%02x) than %s here", d->slot, cfg[1], cfg[0], cfg[3],
			       cfg[2], d->name);
	/* Writable bits and BARs come from the snapshot; read-only bytes stay as built here. */
	uint8_t merged[PCI_CONFIG_SIZE];
	memcpy(merged, d->config, PCI_CONFIG_SIZE);
	for (unsigned i = 0; i < PCI_CONFIG_SIZE; i++)
		merged[i] = (uint8_t)((d->config[i] & ~d->wmask[i]) | (cfg[i] & d->wmask[i]));
	memcpy(merged + PCI_BAR0, cfg + PCI_BAR0, 4 * PCI_BARS);
	pci_device_load_config(bus, d, merged);
	return 0;
}
