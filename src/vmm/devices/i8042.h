/*
 * The i8042 keyboard controller, as much of it as a Linux guest uses: command 0xFE on port 0x64
 * pulses the CPU reset line (Linux `reboot=k`), and a keyboard that sends nothing but what the
 * VMM types - Ctrl-Alt-Del for the control API's SendCtrlAltDel, which Linux answers with a
 * reboot (or by signalling init). The controller answers the commands Linux's i8042 driver
 * probes with (read/write the command byte, self tests, port enable/disable) and the keyboard
 * acknowledges the commands atkbd sends (identify, reset, LEDs, typematic rate, scan set).
 * There is no aux (mouse) port, and the probe learns so at once: the loopback returns a
 * wrong byte and the interface test reports a stuck clock line, rather than timing out.
 * Bytes for the guest wait in a small queue; each keyboard byte raises IRQ 1 (an edge) when
 * it reaches the output buffer and the command byte enables keyboard interrupts.
 * Scancodes are set 1, as the controller translates by default (command byte bit 6).
 * Snapshots and migration carry the command byte, pending commands and the queue
 * (snapshot/platform_state.c).
 */
#ifndef CVISOR_VMM_DEVICES_I8042_H
#define CVISOR_VMM_DEVICES_I8042_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "bus.h"
#include "power.h"

#define I8042_CMD_RESET 0xfe
#define I8042_QUEUE 32
#define I8042_SRC_CONTROLLER 0       /* a reply to a controller command: no interrupt */
#define I8042_SRC_KEYBOARD 1         /* raises IRQ 1 */
#define I8042_SRC_AUX 2              /* flagged in the status register (aux loopback) */

struct i8042 {
	struct power_hook power;
	void (*set_irq)(void *ctx, int level);   /* IRQ 1; NULL: none */
	void *irq_ctx;
	pthread_mutex_t lock;
	uint8_t ctr;                 /* the controller's command byte */
	uint8_t pending;             /* controller command waiting for its data byte, or 0 */
	uint8_t kbd_pending;         /* keyboard command waiting for its data byte, or 0 */
	uint8_t queue[I8042_QUEUE];
	uint8_t queue_src[I8042_QUEUE];  /* I8042_SRC_*: who the byte comes from */
	unsigned head, len;
};

void i8042_init(struct i8042 *k, const struct power_hook *power,
		void (*set_irq)(void *ctx, int level), void *irq_ctx);
void i8042_destroy(struct i8042 *k);

/*
 * Types Ctrl-Alt-Del (make and break codes). Returns false when the keyboard cannot take it
 * now (queue full, or the guest has disabled the keyboard).
 */
bool i8042_send_ctrl_alt_del(struct i8042 *k);

extern const struct io_ops i8042_io_ops;

#endif
