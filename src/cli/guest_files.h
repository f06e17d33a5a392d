/*
 * Where the default guest lives: the kernel in the per-machine cache under the key of the config
 * this tree was built with, the initramfs next to the binaries (build tree) or in the installed
 * data directory.
 */
#ifndef CVISOR_CLI_GUEST_FILES_H
#define CVISOR_CLI_GUEST_FILES_H

#include <stddef.h>

#include "error.h"

/* Path of the default kernel image; `name` is "vmlinux" or "bzImage". */
int guest_default_kernel(const char *name, char *out, size_t len, struct cv_error *err);
int guest_default_initramfs(char *out, size_t len, struct cv_error *err);

/* Path of a program shipped with cvisor (cvisor-vmm, cvisor-agent...). */
int guest_find_program(const char *name, char *out, size_t len, struct cv_error *err);

#endif
