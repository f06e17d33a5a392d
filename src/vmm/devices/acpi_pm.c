/*
 * ACPI PM1 and reset registers (see acpi_pm.h). Registers are kept as 16-bit values updated per
 * byte lane, so byte and word accesses behave alike. Only S5 is a sleep state we implement;
 * requests for S1-S4 are ignored, which the guest sees as an immediate wake-up.
 */
#include "acpi_pm.h"

#include <string.h>

#include "layout.h"

void acpi_pm_init(struct acpi_pm *pm, const struct power_hook *power)
{
	memset(pm, 0, sizeof(*pm));
	pthread_mutex_init(&pm->lock, NULL);
	pm->power = *power;
	pm->pm1_control = ACPI_PM1_SCI_EN;
}

/* The 16-bit register a port offset falls in, or NULL; *lane is the byte within it. */
static uint16_t *reg16(struct acpi_pm *pm, uint64_t port, unsigned *lane, uint16_t *zero)
{
	if (port >= PORT_ACPI_PM1A_EVT && port < PORT_ACPI_PM1A_EVT + 2) {
		*lane = (unsigned)(port - PORT_ACPI_PM1A_EVT);
		*zero = 0;                 /* status: no event is ever pending */
		return zero;
	}
	if (port >= PORT_ACPI_PM1A_EVT + 2 && port < PORT_ACPI_PM1A_EVT + 4) {
		*lane = (unsigned)(port - PORT_ACPI_PM1A_EVT - 2);
		return &pm->pm1_enable;
	}
	if (port >= PORT_ACPI_PM1A_CNT && port < PORT_ACPI_PM1A_CNT + 2) {
		*lane = (unsigned)(port - PORT_ACPI_PM1A_CNT);
		return &pm->pm1_control;
	}
	return NULL;
}

static void acpi_pm_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t size)
{
	struct acpi_pm *pm = opaque;
	pthread_mutex_lock(&pm->lock);
	for (uint32_t i = 0; i < size; i++) {
		unsigned lane;
		uint16_t zero;
		uint16_t *r = reg16(pm, PORT_ACPI_PM_BASE + offset + i, &lane, &zero);
		data[i] = r ? (uint8_t)(*r >> (8 * lane)) : 0;
	}
	pthread_mutex_unlock(&pm->lock);
}

static void acpi_pm_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t size)
{
	struct acpi_pm *pm = opaque;
	enum { NONE, OFF, RESET } event = NONE;
	pthread_mutex_lock(&pm->lock);
	for (uint32_t i = 0; i < size; i++) {
		uint64_t port = PORT_ACPI_PM_BASE + offset + i;
		if (port == PORT_ACPI_RESET) {
			if (data[i] == ACPI_RESET_VALUE)
				event = RESET;
			continue;
		}
		unsigned lane;
		uint16_t zero;
		uint16_t *r = reg16(pm, port, &lane, &zero);
		if (!r || r == &zero)
			continue;          /* status bits are write-1-to-clear and never set */
		*r = (uint16_t)((*r & ~(0xffu << (8 * lane))) | ((unsigned)data[i] << (8 * lane)));
	}
	uint16_t cnt = pm->pm1_control;
	if ((cnt & ACPI_PM1_SLP_EN) &&
	    ((cnt & ACPI_PM1_SLP_TYP_MASK) >> ACPI_PM1_SLP_TYP_SHIFT) == ACPI_S5_SLEEP_TYPE)
		event = OFF;
	/* SLP_EN is write-only: it reads as zero, and the SCI_EN bit stays set. */
	pm->pm1_control = (uint16_t)((cnt & ~ACPI_PM1_SLP_EN) | ACPI_PM1_SCI_EN);
	pthread_mutex_unlock(&pm->lock);

	if (event == OFF && pm->power.event)
		pm->power.event(pm->power.ctx, GUEST_POWER_OFF, "ACPI S5");
	else if (event == RESET && pm->power.event)
		pm->power.event(pm->power.ctx, GUEST_RESET, "ACPI reset register");
}

const struct io_ops acpi_pm_io_ops = { .read = acpi_pm_read, .write = acpi_pm_write };
