/*
 * i8042 controller and keyboard (see i8042.h). Registered as one range covering ports
 * 0x60-0x64: offset 0 is the data port, offset 4 the status/command port.
 */
#include "i8042.h"

#include <string.h>

#define STS_OBF 0x01                 /* output buffer full: a byte for the guest at 0x60 */
#define STS_SYS 0x04                 /* system flag: self test passed */
#define STS_CMD 0x08                 /* the last write was to the command port */
#define STS_AUXDATA 0x20             /* the byte at 0x60 comes from the aux port */
#define CTR_KBDINT 0x01
#define CTR_SYS 0x04
#define CTR_KBDDIS 0x10
#define CTR_XLATE 0x40

#define KBD_ACK 0xfa

void i8042_init(struct i8042 *k, const struct power_hook *power,
		void (*set_irq)(void *ctx, int level), void *irq_ctx)
{
	memset(k, 0, sizeof(*k));
	k->power = *power;
	k->set_irq = set_irq;
	k->irq_ctx = irq_ctx;
	k->ctr = CTR_KBDINT | CTR_SYS | CTR_XLATE;
	pthread_mutex_init(&k->lock, NULL);
}

void i8042_destroy(struct i8042 *k)
{
	pthread_mutex_destroy(&k->lock);
}

/* An edge on IRQ 1 if the byte now at the head came from the keyboard. Lock held. */
static void head_irq(struct i8042 *k)
{
	if (k->len && k->queue_src[k->head] == I8042_SRC_KEYBOARD && (k->ctr & CTR_KBDINT) &&
	    k->set_irq) {
		k->set_irq(k->irq_ctx, 1);
		k->set_irq(k->irq_ctx, 0);
	}
}

static bool push(struct i8042 *k, uint8_t byte, uint8_t src)
{
	if (k->len == I8042_QUEUE)
		return false;
	unsigned at = (k->head + k->len) % I8042_QUEUE;
	k->queue[at] = byte;
	k->queue_src[at] = src;
	k->len++;
	if (k->len == 1)
		head_irq(k);
	return true;
}

static void i8042_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t size)
{
	struct i8042 *k = opaque;
	memset(data, 0, size);
	pthread_mutex_lock(&k->lock);
	if (offset == 4) {
		data[0] = (uint8_t)(STS_SYS | (k->len ? STS_OBF : 0) | (k->pending ? STS_CMD : 0) |
				    (k->len && k->queue_src[k->head] == I8042_SRC_AUX ? STS_AUXDATA : 0));
	} else if (offset == 0 && k->len) {
		data[0] = k->queue[k->head];
		k->head = (k->head + 1) % I8042_QUEUE;
		k->len--;
		head_irq(k);
	}
	pthread_mutex_unlock(&k->lock);
}

/* A byte the guest sends to the keyboard (port 0x60 with no controller command pending). */
static void keyboard_command(struct i8042 *k, uint8_t v)
{
	if (k->kbd_pending) {          /* the data byte of LEDs, typematic, scan set */
		k->kbd_pending = 0;
		push(k, KBD_ACK, I8042_SRC_KEYBOARD);
		return;
	}
	switch (v) {
	case 0xed: case 0xf3: case 0xf0:       /* set LEDs, typematic rate, scan code set */
		k->kbd_pending = v;
		push(k, KBD_ACK, I8042_SRC_KEYBOARD);
		break;
	case 0xf2:                             /* identify: an MF2 keyboard */
		push(k, KBD_ACK, I8042_SRC_KEYBOARD);
		push(k, 0xab, I8042_SRC_KEYBOARD);
		push(k, 0x83, I8042_SRC_KEYBOARD);
		break;
	case 0xff:                             /* reset: passed its self test */
		push(k, KBD_ACK, I8042_SRC_KEYBOARD);
		push(k, 0xaa, I8042_SRC_KEYBOARD);
		break;
	case 0xee:                             /* echo */
		push(k, 0xee, I8042_SRC_KEYBOARD);
		break;
	default:                               /* enable, disable, defaults, ... */
		push(k, KBD_ACK, I8042_SRC_KEYBOARD);
	}
}

static void controller_command(struct i8042 *k, uint8_t cmd)
{
	switch (cmd) {
	case 0x20:                             /* read the command byte */
		push(k, k->ctr, I8042_SRC_CONTROLLER);
		break;
	case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4:
		k->pending = cmd;                  /* the data byte follows on port 0x60 */
		break;
	case 0xa7: k->ctr |= 0x20; break;      /* disable the (absent) aux port */
	case 0xa8: k->ctr &= (uint8_t)~0x20; break;
	case 0xa9: push(k, 0x01, I8042_SRC_CONTROLLER); break;  /* aux test: clock stuck */
	case 0xaa: push(k, 0x55, I8042_SRC_CONTROLLER); break;  /* self test passed */
	case 0xab: push(k, 0x00, I8042_SRC_CONTROLLER); break;  /* keyboard test passed */
	case 0xad: k->ctr |= CTR_KBDDIS; break;
	case 0xae: k->ctr &= (uint8_t)~CTR_KBDDIS; break;
	case I8042_CMD_RESET:
		if (k->power.event) {
			pthread_mutex_unlock(&k->lock);
			k->power.event(k->power.ctx, GUEST_RESET, "i8042 reset line");
			pthread_mutex_lock(&k->lock);
		}
		break;
	default:
		break;                         /* other pulses and vendor commands: ignored */
	}
}

static void i8042_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t size)
{
	struct i8042 *k = opaque;
	(void)size;
	pthread_mutex_lock(&k->lock);
	if (offset == 4) {
		k->pending = 0;
		controller_command(k, data[0]);
	} else if (offset == 0) {
		uint8_t cmd = k->pending;
		k->pending = 0;
		if (cmd == 0x60)
			k->ctr = data[0];
		else if (cmd == 0xd2)              /* write the keyboard output buffer */
			push(k, data[0], I8042_SRC_KEYBOARD);
		else if (cmd == 0xd3)              /* aux loopback: no aux port, a wrong echo */
			push(k, (uint8_t)~data[0], I8042_SRC_AUX);
		else if (cmd == 0xd1 || cmd == 0xd4)
			;                              /* output port, aux device: none */
		else
			keyboard_command(k, data[0]);
	}
	pthread_mutex_unlock(&k->lock);
}

bool i8042_send_ctrl_alt_del(struct i8042 *k)
{
	/* Set 1: Ctrl, Alt, Delete (extended) down, then up in reverse order. */
	static const uint8_t seq[] = { 0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d };
	pthread_mutex_lock(&k->lock);
	bool ok = !(k->ctr & CTR_KBDDIS) && k->len + sizeof(seq) <= I8042_QUEUE;
	for (size_t i = 0; ok && i < sizeof(seq); i++)
		push(k, seq[i], I8042_SRC_KEYBOARD);
	pthread_mutex_unlock(&k->lock);
	return ok;
}

const struct io_ops i8042_io_ops = { .read = i8042_read, .write = i8042_write };
