/*
 * Device models driven register by register, as a guest driver would: the 16550 UART (probe
 * sequence of Linux's 8250 driver, interrupts, FIFO), the bus decoder, and the power devices.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "devices/acpi_pm.h"
#include "devices/bus.h"
#include "devices/i8042.h"
#include "devices/uart.h"
#include "layout.h"

struct sink {
	uint8_t out[256];
	size_t out_len;
	int irq;
	int irq_edges;
	int drained;
};

static void set_irq(void *ctx, int level)
{
	struct sink *s = ctx;
	if (level && !s->irq)
		s->irq_edges++;
	s->irq = level;
}

static void transmit(void *ctx, const uint8_t *buf, size_t len)
{
	struct sink *s = ctx;
	memcpy(s->out + s->out_len, buf, len);
	s->out_len += len;
}

static void drained(void *ctx)
{
	((struct sink *)ctx)->drained++;
}

static struct uart u;
static struct sink s;

static void uart_setup(void)
{
	memset(&s, 0, sizeof(s));
	struct uart_hooks h = { &s, set_irq, transmit, drained };
	uart_init(&u, &h);
}

static void uart_teardown(void)
{
	uart_destroy(&u);
}

static uint8_t rd(unsigned reg)
{
	uint8_t v;
	uart_io_ops.read(&u, reg, &v, 1);
	return v;
}

static void wr(unsigned reg, uint8_t v)
{
	uart_io_ops.write(&u, reg, &v, 1);
}

TestSuite(uart, .init = uart_setup, .fini = uart_teardown);

Test(uart, linux_8250_probe_sequence)
{
	/* Scratch register and IER read back (autoconfig). */
	wr(7, 0xa5);
	cr_assert_eq(rd(7), 0xa5);
	wr(1, 0);
	cr_assert_eq(rd(1), 0);
	wr(1, 0x0f);
	cr_assert_eq(rd(1), 0x0f);
	wr(1, 0);
	/* Loopback: MSR mirrors MCR (RTS->CTS, OUT2->DCD) as the driver checks for 0x90. */
	wr(4, 0x10 | 0x0a);
	cr_assert_eq(rd(6) & 0xf0, 0x90);
	wr(4, 0);
	/* FIFO enabled: IIR bits 7:6 identify a 16550A. */
	wr(2, 0x01);
	cr_assert_eq(rd(2) & 0xc0, 0xc0);
	/* Divisor latch. */
	wr(3, 0x80);
	wr(0, 0x01);
	wr(1, 0x00);
	cr_assert_eq(rd(0), 0x01);
	wr(3, 0x03);
	cr_assert_eq(rd(3), 0x03);
	cr_assert_eq(s.out_len, 0, "DLAB writes must not transmit");
	/* Transmitter always empty. */
	cr_assert_eq(rd(5) & 0x60, 0x60);
}

Test(uart, transmit_and_thr_empty_interrupt)
{
	wr(3, 0x03);
	wr(1, 0x02);                 /* enable THRI: raised at once, THR is empty */
	cr_assert_eq(s.irq, 1);
	cr_assert_eq(rd(2) & 0x0f, 0x02, "IIR reports THR empty");
	cr_assert_eq(s.irq, 0, "reading IIR acknowledges THRI");
	cr_assert_eq(rd(2) & 0x01, 0x01, "no interrupt pending");
	wr(0, 'h');
	wr(0, 'i');
	cr_assert_eq(s.out_len, 2);
	cr_assert_arr_eq(s.out, "hi", 2);
	cr_assert_eq(s.irq, 1, "THR empty again after each byte");
	wr(1, 0);
	cr_assert_eq(s.irq, 0, "disabling THRI drops the line");
}

Test(uart, receive_fifo_and_interrupts)
{
	wr(3, 0x03);
	wr(1, 0x01);                 /* RDI */
	cr_assert_eq(s.irq, 0);
	cr_assert_eq(uart_receive(&u, (const uint8_t *)"ab", 2), 2);
	cr_assert_eq(s.irq, 1);
	cr_assert_eq(rd(5) & 0x01, 0x01, "data ready");
	cr_assert_eq(rd(2) & 0x0f, 0x04, "IIR: received data");
	cr_assert_eq(rd(0), 'a');
	cr_assert_eq(s.drained, 0);
	cr_assert_eq(rd(0), 'b');
	cr_assert_eq(s.drained, 1, "host told the FIFO drained");
	cr_assert_eq(rd(5) & 0x01, 0);
	cr_assert_eq(s.irq, 0);
	/* A full FIFO refuses the rest instead of overrunning. */
	uint8_t big[UART_RX_FIFO_SIZE + 10];
	memset(big, 'x', sizeof(big));
	cr_assert_eq(uart_receive(&u, big, sizeof(big)), UART_RX_FIFO_SIZE);
	cr_assert_eq(uart_rx_room(&u), 0);
	cr_assert_eq(rd(5) & 0x02, 0, "no overrun reported");
	wr(2, 0x03);                 /* clear RX FIFO */
	cr_assert_eq(uart_rx_room(&u), UART_RX_FIFO_SIZE);
}

Test(uart, loopback_routes_tx_to_rx)
{
	wr(4, 0x10);
	wr(0, 'z');
	cr_assert_eq(s.out_len, 0, "nothing leaves in loopback");
	cr_assert_eq(rd(0), 'z');
	cr_assert_eq(uart_receive(&u, (const uint8_t *)"q", 1), 0, "host input ignored in loopback");
}

static int reads, writes;
static void t_read(void *o, uint64_t off, uint8_t *d, uint32_t n)
{
	(void)o;
	reads++;
	memset(d, (int)off, n);
}
static void t_write(void *o, uint64_t off, const uint8_t *d, uint32_t n)
{
	(void)o;
	(void)off;
	(void)d;
	(void)n;
	writes++;
}
static const struct io_ops t_ops = { t_read, t_write };

Test(bus, dispatch_and_overlap)
{
	struct io_bus b;
	struct cv_error err = { 0 };
	io_bus_init(&b, "test");
	cr_assert_eq(io_bus_register(&b, 0x100, 8, &t_ops, NULL, "a", &err), 0);
	cr_assert_eq(io_bus_register(&b, 0x200, 8, &t_ops, NULL, "b", &err), 0);
	cr_assert_eq(io_bus_register(&b, 0x10, 8, &t_ops, NULL, "c", &err), 0);
	cr_assert_eq(io_bus_register(&b, 0x104, 8, &t_ops, NULL, "d", &err), -1);
	cr_assert(strstr(err.msg, "overlaps a"), "%s", err.msg);
	cr_assert_eq(io_bus_register(&b, 0x1fc, 8, &t_ops, NULL, "e", &err), -1);
	cr_assert_eq(io_bus_register(&b, 0x0, 0, &t_ops, NULL, "f", &err), -1);
	uint8_t d[8];
	cr_assert(io_bus_access(&b, 0x203, d, 1, false));
	cr_assert_eq(d[0], 3, "offset relative to base");
	cr_assert_not(io_bus_access(&b, 0x208, d, 4, false));
	cr_assert_eq(d[0], 0xff, "unclaimed reads float high");
	cr_assert(io_bus_access(&b, 0x106, d, 4, false), "straddling access truncated");
	cr_assert_eq(d[2], 0xff);
	cr_assert(io_bus_access(&b, 0x10, d, 1, true));
	cr_assert_eq(writes, 1);
	io_bus_free(&b);
}

struct power_log {
	int off, reset;
};
static void on_power(void *ctx, enum guest_power_event ev, const char *src)
{
	struct power_log *l = ctx;
	cr_assert_not_null(src);
	if (ev == GUEST_POWER_OFF)
		l->off++;
	else
		l->reset++;
}

static void pm_write16(struct acpi_pm *pm, uint16_t port, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	acpi_pm_io_ops.write(pm, port - PORT_ACPI_PM_BASE, b, 2);
}

static uint16_t pm_read16(struct acpi_pm *pm, uint16_t port)
{
	uint8_t b[2];
	acpi_pm_io_ops.read(pm, port - PORT_ACPI_PM_BASE, b, 2);
	return (uint16_t)(b[0] | b[1] << 8);
}

Test(power, acpi_pm1_control_and_reset)
{
	struct power_log log = { 0 };
	struct acpi_pm pm;
	struct power_hook hook = { &log, on_power };
	acpi_pm_init(&pm, &hook);
	cr_assert(pm_read16(&pm, PORT_ACPI_PM1A_CNT) & ACPI_PM1_SCI_EN, "always in ACPI mode");
	/* Linux writes SLP_TYP first, then SLP_TYP|SLP_EN. */
	uint16_t s5 = ACPI_S5_SLEEP_TYPE << ACPI_PM1_SLP_TYP_SHIFT;
	pm_write16(&pm, PORT_ACPI_PM1A_CNT, (uint16_t)(1 << ACPI_PM1_SLP_TYP_SHIFT | ACPI_PM1_SLP_EN));
	cr_assert_eq(log.off, 0, "S1 is not power-off");
	pm_write16(&pm, PORT_ACPI_PM1A_CNT, s5);
	cr_assert_eq(log.off, 0, "no SLP_EN yet");
	cr_assert_eq(pm_read16(&pm, PORT_ACPI_PM1A_CNT) & ACPI_PM1_SLP_TYP_MASK, s5);
	pm_write16(&pm, PORT_ACPI_PM1A_CNT, s5 | ACPI_PM1_SLP_EN);
	cr_assert_eq(log.off, 1);
	cr_assert_eq(pm_read16(&pm, PORT_ACPI_PM1A_CNT) & ACPI_PM1_SLP_EN, 0, "SLP_EN reads 0");
	/* Byte-wise writes of the high byte work the same. */
	uint8_t hi = (uint8_t)((s5 | ACPI_PM1_SLP_EN) >> 8);
	acpi_pm_io_ops.write(&pm, PORT_ACPI_PM1A_CNT + 1 - PORT_ACPI_PM_BASE, &hi, 1);
	cr_assert_eq(log.off, 2);
	/* PM1 enable is read/write, status always reads 0. */
	pm_write16(&pm, PORT_ACPI_PM1A_EVT + 2, 0x0120);
	cr_assert_eq(pm_read16(&pm, PORT_ACPI_PM1A_EVT + 2), 0x0120);
	pm_write16(&pm, PORT_ACPI_PM1A_EVT, 0xffff);
	cr_assert_eq(pm_read16(&pm, PORT_ACPI_PM1A_EVT), 0);
	uint8_t v = 2;
	acpi_pm_io_ops.write(&pm, PORT_ACPI_RESET - PORT_ACPI_PM_BASE, &v, 1);
	cr_assert_eq(log.reset, 0, "only the FADT's reset value resets");
	v = ACPI_RESET_VALUE;
	acpi_pm_io_ops.write(&pm, PORT_ACPI_RESET - PORT_ACPI_PM_BASE, &v, 1);
	cr_assert_eq(log.reset, 1);
	pthread_mutex_destroy(&pm.lock);
}

Test(power, i8042_reset_command)
{
	struct power_log log = { 0 };
	struct power_hook hook = { &log, on_power };
	struct i8042 k;
	i8042_init(&k, &hook, NULL, NULL);
	uint8_t status;
	i8042_io_ops.read(&k, 4, &status, 1);
	cr_assert_eq(status & 0x02, 0, "input buffer empty, so kb_wait() returns");
	uint8_t v = 0xd1;
	i8042_io_ops.write(&k, 4, &v, 1);
	v = I8042_CMD_RESET;
	i8042_io_ops.write(&k, 0, &v, 1);
	cr_assert_eq(log.reset, 0, "0xfe on the data port is not a command");
	i8042_io_ops.write(&k, 4, &v, 1);
	cr_assert_eq(log.reset, 1);
	i8042_destroy(&k);
}

struct irq_log {
	int rises, level;
};

static void on_irq(void *ctx, int level)
{
	struct irq_log *l = ctx;
	if (level && !l->level)
		l->rises++;
	l->level = level;
}

static uint8_t kbd_in(struct i8042 *k, unsigned port)
{
	uint8_t v = 0xcc;
	i8042_io_ops.read(k, port, &v, 1);
	return v;
}

static void kbd_out(struct i8042 *k, unsigned port, uint8_t v)
{
	i8042_io_ops.write(k, port, &v, 1);
}

/* What Linux's i8042 driver and atkbd do at probe, then SendCtrlAltDel. */
Test(power, i8042_keyboard_probe_and_ctrl_alt_del)
{
	struct power_log log = { 0 };
	struct power_hook hook = { &log, on_power };
	struct irq_log irq = { 0 };
	struct i8042 k;
	i8042_init(&k, &hook, on_irq, &irq);
	cr_assert_eq(kbd_in(&k, 4) & 1, 0, "nothing to read at first");
	kbd_out(&k, 4, 0xaa);
	cr_assert_eq(kbd_in(&k, 4) & 1, 1);
	cr_assert_eq(kbd_in(&k, 0), 0x55, "controller self test passes");
	kbd_out(&k, 4, 0x20);
	uint8_t ctr = kbd_in(&k, 0);
	cr_assert(ctr & 0x40, "translation on: set 1 scancodes");
	kbd_out(&k, 4, 0x60);
	kbd_out(&k, 0, (uint8_t)(ctr | 0x01));
	kbd_out(&k, 4, 0x20);
	cr_assert_eq(kbd_in(&k, 0), ctr | 0x01, "the command byte written is read back");
	cr_assert_eq(irq.rises, 0, "controller replies raise no interrupt");
	/* No aux port, and the probe must learn it without waiting for a timeout. */
	kbd_out(&k, 4, 0xd3);
	kbd_out(&k, 0, 0x5a);
	cr_assert_eq(kbd_in(&k, 4) & 0x21, 0x21, "loopback byte present, from aux");
	cr_assert_neq(kbd_in(&k, 0), 0x5a, "the loopback fails");
	kbd_out(&k, 4, 0xa9);
	uint8_t aux = kbd_in(&k, 0);
	cr_assert(aux != 0 && aux != 0xfa && aux != 0xff, "aux interface test fails: %#x", aux);
	cr_assert_eq(irq.rises, 0);

	kbd_out(&k, 0, 0xf2);                 /* atkbd: identify */
	cr_assert_eq(irq.rises, 1);
	cr_assert_eq(kbd_in(&k, 0), 0xfa);
	cr_assert_eq(irq.rises, 2, "each keyboard byte is an edge");
	cr_assert_eq(kbd_in(&k, 0), 0xab);
	cr_assert_eq(kbd_in(&k, 0), 0x83);
	cr_assert_eq(kbd_in(&k, 4) & 1, 0);
	kbd_out(&k, 0, 0xed);                 /* LEDs + their data byte: two ACKs */
	cr_assert_eq(kbd_in(&k, 0), 0xfa);
	kbd_out(&k, 0, 0x00);
	cr_assert_eq(kbd_in(&k, 0), 0xfa);

	irq.rises = 0;
	cr_assert(i8042_send_ctrl_alt_del(&k));
	const uint8_t want[] = { 0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d };
	for (size_t i = 0; i < sizeof(want); i++) {
		cr_assert_eq(kbd_in(&k, 4) & 1, 1);
		cr_assert_eq(kbd_in(&k, 0), want[i], "byte %zu", i);
	}
	cr_assert_eq(irq.rises, 8);
	cr_assert_eq(log.reset, 0);

	kbd_out(&k, 4, 0xad);                 /* keyboard disabled: nothing can be typed */
	cr_assert_not(i8042_send_ctrl_alt_del(&k));
	kbd_out(&k, 4, 0xae);
	for (int i = 0; i < 4; i++)
		cr_assert(i8042_send_ctrl_alt_del(&k), "4 x 8 bytes fit the queue");
	cr_assert_not(i8042_send_ctrl_alt_del(&k), "the queue is full until the guest reads");
	i8042_destroy(&k);
}
