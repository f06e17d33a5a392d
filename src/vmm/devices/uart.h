/*
 * 16550A UART, the guest's serial console (Linux `console=ttyS0`). Emulated closely enough for
 * the 8250 driver's probing (scratch, loopback, FIFO identification) and its interrupt-driven
 * transmit; bytes the guest sends go straight to a sink, bytes from the host wait in the RX FIFO.
 * Thread-safe: vCPU threads access registers while the main loop delivers input.
 */
#ifndef CVISOR_VMM_DEVICES_UART_H
#define CVISOR_VMM_DEVICES_UART_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"

#define UART_RX_FIFO_SIZE 64
#define UART_REGISTERS 8

struct uart_hooks {
	void *ctx;
	void (*set_irq)(void *ctx, int level);           /* level of the interrupt line */
	void (*transmit)(void *ctx, const uint8_t *buf, size_t len);
	void (*rx_drained)(void *ctx);                   /* FIFO emptied: more input may be sent */
};

struct uart {
	pthread_mutex_t lock;
	struct uart_hooks hooks;
	uint8_t ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
	bool thr_interrupt;      /* "THR empty" interrupt pending until IIR read or THR write */
	int irq_level;
	uint8_t rx[UART_RX_FIFO_SIZE];
	unsigned rx_head, rx_count;
};

extern const struct io_ops uart_io_ops;

void uart_init(struct uart *u, const struct uart_hooks *hooks);
void uart_destroy(struct uart *u);

/* Queues host input; returns how many bytes fitted in the FIFO. */
size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len);

/* Free space in the RX FIFO. */
size_t uart_rx_room(struct uart *u);

#endif
