/*
 * ACPI tables checked by an independent reader: iasl (acpica-tools) disassembles a table the
 * VMM built, and any error or checksum complaint fails the test. Shared by the unit suites that
 * build tables (tables, mmio); the .dsl it leaves lets a test look for what iasl understood.
 */
#ifndef CVISOR_TESTS_IASL_H
#define CVISOR_TESTS_IASL_H

#include <stdbool.h>
#include <stdint.h>

/* iasl is installed. */
bool iasl_available(void);

/*
 * Writes TABLE (its length from its header) to DIR/NAME.dat and disassembles it into
 * DIR/NAME.dsl; fails the test if iasl reports an error or a bad checksum.
 */
void iasl_check_table(const char *dir, const char *name, const uint8_t *table);

#endif
