/*
 * How power devices tell the VMM that the guest wants to stop: a single callback carrying what
 * happened and which device saw it. The VMM decides the exit status.
 */
#ifndef CVISOR_VMM_DEVICES_POWER_H
#define CVISOR_VMM_DEVICES_POWER_H

enum guest_power_event {
	GUEST_POWER_OFF,
	GUEST_RESET,
};

struct power_hook {
	void *ctx;
	void (*event)(void *ctx, enum guest_power_event ev, const char *source);
};

#endif
