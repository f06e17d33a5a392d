/*
 * The ACPI power-management registers our FADT points at: the PM1a event block (status and
 * enable), the PM1a control register the guest writes SLP_TYP|SLP_EN to for S5 (power off), and
 * the reset register. This is how `poweroff` and `reboot` in the guest end the VM. No event ever
 * fires, so the SCI stays quiet; SCI_EN reads as set because the machine is always in ACPI mode.
 */
#ifndef CVISOR_VMM_DEVICES_ACPI_PM_H
#define CVISOR_VMM_DEVICES_ACPI_PM_H

#include "bus.h"
#include "power.h"

#include <pthread.h>
#include <stdint.h>

struct acpi_pm {
	struct power_hook power;
	pthread_mutex_t lock;
	uint16_t pm1_enable;
	uint16_t pm1_control;
};

/* Registered over PORT_ACPI_PM_BASE .. +ACPI_PM_PORTS. */
extern const struct io_ops acpi_pm_io_ops;

void acpi_pm_init(struct acpi_pm *pm, const struct power_hook *power);

/* PM1 control register bits (ACPI 6.x, 4.8.3.2.1). */
#define ACPI_PM1_SCI_EN       0x0001
#define ACPI_PM1_SLP_TYP_SHIFT 10
#define ACPI_PM1_SLP_TYP_MASK 0x1c00
#define ACPI_PM1_SLP_EN       0x2000

#endif
