/*
 * Everything a VM is built from, before it exists: machine shape, boot source, devices, and the
 * VMM's own logger and metrics sinks. The command line (main.c), --config-file and the control
 * API's pre-boot requests (fcjson.c) all fill this one struct; vmm_setup_finalize turns it into
 * what vm_init and vm_load_kernel take, so every way of configuring a VM builds it the same way.
 *
 * Strings set from JSON are copied into the setup's pool and live as long as the setup;
 * strings from the command line point into argv.
 */
#ifndef CVISOR_VMM_SETUP_H
#define CVISOR_VMM_SETUP_H

#include <stdbool.h>
#include <stddef.h>

#include "boot/boot.h"
#include "error.h"
#include "vm.h"

/* Firecracker's defaults for what the API leaves out. */
#define SETUP_FC_MEMORY_MIB 128
#define SETUP_FC_BOOT_ARGS                                                                   \
	"reboot=k panic=1 pci=off nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.nopnp " \
	"i8042.dumbkbd"
/* Firecracker's vcpu_count limit; KVM and VM_MAX_VCPUS may allow fewer or more. */
#define SETUP_MAX_VCPUS 32

/* Copies owned by a setup; a replaced string can be given back. */
struct str_pool {
	char **items;
	size_t n, cap;
};

const char *str_pool_dup(struct str_pool *p, const char *s);
/* Frees s if the pool owns it (a no-op for argv strings and NULL). */
void str_pool_release(struct str_pool *p, const char *s);
void str_pool_free(struct str_pool *p);

enum log_level { LOG_LEVEL_OFF, LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO,
		 LOG_LEVEL_DEBUG, LOG_LEVEL_TRACE };

struct logger_config {
	bool set;
	const char *path;            /* file or named pipe, opened for appending */
	enum log_level level;
	bool show_level, show_origin;
};

struct metrics_config {
	const char *path;            /* NULL: no metrics file */
};

struct vmm_setup {
	struct vm_config vm;
	struct boot_config boot;
	bool smt;
	struct logger_config logger;
	struct metrics_config metrics;
	struct str_pool pool;
	/* Filled by vmm_setup_finalize: the command line the kernel gets. */
	const char *final_cmdline;
};

/* Firecracker's defaults: 1 vCPU, 128 MiB, its default boot arguments, no devices. */
void vmm_setup_init(struct vmm_setup *s);
void vmm_setup_destroy(struct vmm_setup *s);

/*
 * Checks that the setup can boot and completes it: a kernel is required; the root drive, if
 * any, becomes the first disk (/dev/vda) and root=... ro|rw goes on the command line, as
 * Firecracker does; the virtio transport is resolved (mmio when the command line has pci=off).
 */
int vmm_setup_finalize(struct vmm_setup *s, struct cv_error *err);
/* The part of finalize's checks that needs no change: is there a kernel to boot? */
int vmm_setup_check_boot(const struct vmm_setup *s, struct cv_error *err);

/* Index of the drive / NIC with this id (NULL ids answer to "drive<i>" / "net<i>"), or -1. */
int vmm_setup_find_disk(const struct vmm_setup *s, const char *id);
int vmm_setup_find_net(const struct vmm_setup *s, const char *id);

#endif
