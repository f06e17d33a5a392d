/*
 * The part of the i8042 keyboard controller a guest uses to reboot the machine: command 0xFE on
 * port 0x64 pulses the CPU reset line (Linux `reboot=k`, and its fallback when ACPI reset fails).
 * There is no keyboard; the controller reports an empty buffer so drivers give up quickly.
 */
#ifndef CVISOR_VMM_DEVICES_I8042_H
#define CVISOR_VMM_DEVICES_I8042_H

#include "bus.h"
#include "power.h"

struct i8042 {
	struct power_hook power;
};

#define I8042_CMD_RESET 0xfe

extern const struct io_ops i8042_io_ops;

#endif
