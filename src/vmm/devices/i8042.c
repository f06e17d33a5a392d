/*
 * i8042 reset line (see i8042.h). Registered as one range covering ports 0x60-0x64; offset 0 is
 * the data port and offset 4 the command/status port.
 */
#include "i8042.h"

#include <string.h>

static void i8042_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t size)
{
	(void)opaque;
	(void)offset;
	/* Status 0: output buffer empty, input buffer empty, so kb_wait() never spins. */
	memset(data, 0, size);
}

static void i8042_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t size)
{
	struct i8042 *k = opaque;
	(void)size;
	if (offset == 4 && data[0] == I8042_CMD_RESET && k->power.event)
		k->power.event(k->power.ctx, GUEST_RESET, "i8042 reset line");
}

const struct io_ops i8042_io_ops = { .read = i8042_read, .write = i8042_write };
