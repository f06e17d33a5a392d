/*
 * 16550A emulation (see uart.h). Transmission is instantaneous: THR is always empty again by the
 * time the guest looks, so LSR always reports THRE|TEMT and each write re-arms the THR-empty
 * interrupt. The interrupt line is driven as a level recomputed after every register access; the
 * in-kernel IOAPIC turns each rise into one edge-triggered interrupt.
 */
#include "uart.h"

#include <string.h>

/* Register offsets and bits, named as in the 16550 data sheet. */
enum {
	REG_RBR_THR_DLL = 0, REG_IER_DLM = 1, REG_IIR_FCR = 2, REG_LCR = 3,
	REG_MCR = 4, REG_LSR = 5, REG_MSR = 6, REG_SCR = 7,
};
#define IER_RDI  0x01   /* received data available */
#define IER_THRI 0x02   /* THR empty */
#define IER_RLSI 0x04   /* receiver line status */
#define IER_MSI  0x08   /* modem status */
#define IIR_NONE 0x01
#define IIR_MSI  0x00
#define IIR_THRI 0x02
#define IIR_RDI  0x04
#define IIR_RLSI 0x06
#define IIR_FIFO_ENABLED 0xc0
#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define LCR_DLAB 0x80
#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define LSR_DR   0x01
#define LSR_OE   0x02
#define LSR_BI   0x10
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define LSR_ERRORS 0x1e
#define MSR_DELTAS 0x0f
#define MSR_CTS  0x10
#define MSR_DSR  0x20
#define MSR_RI   0x40
#define MSR_DCD  0x80

void uart_init(struct uart *u, const struct uart_hooks *hooks)
{
	memset(u, 0, sizeof(*u));
	pthread_mutex_init(&u->lock, NULL);
	u->hooks = *hooks;
	u->lsr = LSR_THRE | LSR_TEMT;
	u->msr = MSR_DCD | MSR_DSR | MSR_CTS;   /* a cable is plugged in and the peer is ready */
	u->mcr = MCR_OUT2;
}

void uart_destroy(struct uart *u)
{
	pthread_mutex_destroy(&u->lock);
}

/* Highest-priority pending interrupt, as IIR reports it. */
static uint8_t pending_iir(const struct uart *u)
{
	if ((u->ier & IER_RLSI) && (u->lsr & LSR_ERRORS))
		return IIR_RLSI;
	if ((u->ier & IER_RDI) && u->rx_count)
		return IIR_RDI;
	if ((u->ier & IER_THRI) && u->thr_interrupt)
		return IIR_THRI;
	if ((u->ier & IER_MSI) && (u->msr & MSR_DELTAS))
		return IIR_MSI;
	return IIR_NONE;
}

static void update_irq(struct uart *u)
{
	int level = pending_iir(u) != IIR_NONE;
	if (level != u->irq_level) {
		u->irq_level = level;
		if (u->hooks.set_irq)
			u->hooks.set_irq(u->hooks.ctx, level);
	}
}

static void rx_push(struct uart *u, uint8_t byte)
{
	if (u->rx_count == UART_RX_FIFO_SIZE) {
		u->lsr |= LSR_OE;
		return;
	}
	u->rx[(u->rx_head + u->rx_count) % UART_RX_FIFO_SIZE] = byte;
	u->rx_count++;
	u->lsr |= LSR_DR;
}

static uint8_t rx_pop(struct uart *u, bool *drained)
{
	if (!u->rx_count)
		return 0;
	uint8_t b = u->rx[u->rx_head];
	u->rx_head = (u->rx_head + 1) % UART_RX_FIFO_SIZE;
	if (--u->rx_count == 0) {
		u->lsr &= (uint8_t)~LSR_DR;
		*drained = true;
	}
	return b;
}

/* In loopback mode the modem inputs mirror the modem outputs (the 8250 driver probes this). */
static uint8_t loopback_msr(uint8_t mcr)
{
	uint8_t msr = 0;
	if (mcr & MCR_RTS)
		msr |= MSR_CTS;
	if (mcr & MCR_DTR)
		msr |= MSR_DSR;
	if (mcr & MCR_OUT1)
		msr |= MSR_RI;
	if (mcr & MCR_OUT2)
		msr |= MSR_DCD;
	return msr;
}

static uint8_t read_reg(struct uart *u, uint64_t reg, bool *drained)
{
	bool dlab = u->lcr & LCR_DLAB;
	switch (reg) {
	case REG_RBR_THR_DLL:
		return dlab ? u->dll : rx_pop(u, drained);
	case REG_IER_DLM:
		return dlab ? u->dlm : u->ier;
	case REG_IIR_FCR: {
		uint8_t iir = pending_iir(u);
		if (iir == IIR_THRI)
			u->thr_interrupt = false;   /* reading IIR acknowledges THR empty */
		return iir | ((u->fcr & FCR_ENABLE) ? IIR_FIFO_ENABLED : 0);
	}
	case REG_LCR:
		return u->lcr;
	case REG_MCR:
		return u->mcr;
	case REG_LSR: {
		uint8_t lsr = u->lsr;
		u->lsr &= (uint8_t)~LSR_ERRORS;
		return lsr;
	}
	case REG_MSR: {
		uint8_t msr = (u->mcr & MCR_LOOP) ? loopback_msr(u->mcr) : u->msr;
		u->msr &= (uint8_t)~MSR_DELTAS;
		return msr;
	}
	case REG_SCR:
		return u->scr;
	}
	return 0xff;
}

static void write_reg(struct uart *u, uint64_t reg, uint8_t v)
{
	bool dlab = u->lcr & LCR_DLAB;
	switch (reg) {
	case REG_RBR_THR_DLL:
		if (dlab) {
			u->dll = v;
		} else if (u->mcr & MCR_LOOP) {
			rx_push(u, v);
			u->thr_interrupt = true;
		} else {
			if (u->hooks.transmit)
				u->hooks.transmit(u->hooks.ctx, &v, 1);
			u->thr_interrupt = true;
		}
		break;
	case REG_IER_DLM:
		if (dlab) {
			u->dlm = v;
		} else {
			/* Enabling THRI while THR is empty raises it at once, like the real part. */
			if ((v & IER_THRI) && !(u->ier & IER_THRI))
				u->thr_interrupt = true;
			u->ier = v & 0x0f;
		}
		break;
	case REG_IIR_FCR:
		u->fcr = v & 0xc9;   /* keep enable, DMA mode and trigger level; clear bits self-reset */
		if (v & FCR_CLEAR_RX) {
			u->rx_head = u->rx_count = 0;
			u->lsr &= (uint8_t)~LSR_DR;
		}
		break;
	case REG_LCR:
		u->lcr = v;
		break;
	case REG_MCR:
		u->mcr = v & 0x1f;
		break;
	case REG_LSR:   /* factory test register: writes ignored */
	case REG_MSR:
		break;
	case REG_SCR:
		u->scr = v;
		break;
	}
}

static void uart_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t size)
{
	struct uart *u = opaque;
	bool drained = false;
	pthread_mutex_lock(&u->lock);
	data[0] = read_reg(u, offset, &drained);
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	memset(data + 1, 0, size - 1);
	if (drained && u->hooks.rx_drained)
		u->hooks.rx_drained(u->hooks.ctx);
}

static void uart_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t size)
{
	struct uart *u = opaque;
	(void)size;   /* the 8250 registers are bytes; wider writes carry the byte in the low lane */
	pthread_mutex_lock(&u->lock);
	write_reg(u, offset, data[0]);
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
}

const struct io_ops uart_io_ops = { .read = uart_read, .write = uart_write };

size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len)
{
	pthread_mutex_lock(&u->lock);
	size_t n = 0;
	/* Input while the guest has loopback on would be discarded by real hardware too. */
	if (!(u->mcr & MCR_LOOP))
		for (; n < len && u->rx_count < UART_RX_FIFO_SIZE; n++)
			rx_push(u, buf[n]);
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return n;
}

size_t uart_rx_room(struct uart *u)
{
	pthread_mutex_lock(&u->lock);
	size_t room = UART_RX_FIFO_SIZE - u->rx_count;
	pthread_mutex_unlock(&u->lock);
	return room;
}
