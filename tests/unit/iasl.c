/*
 * ACPI tables through iasl (see iasl.h).
 */
#include "iasl.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "bytes.h"

bool iasl_available(void)
{
	return system("command -v iasl >/dev/null 2>&1") == 0;
}

void iasl_check_table(const char *dir, const char *name, const uint8_t *table)
{
	char path[256], cmd[1024];
	snprintf(path, sizeof(path), "%s/%s.dat", dir, name);
	FILE *f = fopen(path, "wb");
	cr_assert(f, "create %s", path);
	size_t len = get_le32(table + 4);
	bool ok = fwrite(table, 1, len, f) == len;
	ok = fclose(f) == 0 && ok;
	cr_assert(ok, "write %s", path);
	snprintf(cmd, sizeof(cmd), "cd %s && iasl -d %s.dat > %s.log 2>&1 && "
		 "! grep -Eiq 'error|invalid checksum|incorrect checksum' %s.log %s.dsl",
		 dir, name, name, name, name);
	cr_assert_eq(system(cmd), 0, "iasl rejected %s (see %s)", name, dir);
}
