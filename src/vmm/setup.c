/*
 * The VM's configuration before it is built (see setup.h): defaults, the string pool, and the
 * last checks and derivations before vm_init.
 */
#include "setup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

const char *str_pool_dup(struct str_pool *p, const char *s)
{
	if (!s)
		return NULL;
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		char **items = realloc(p->items, cap * sizeof(*items));
		if (!items)
			return NULL;
		p->items = items;
		p->cap = cap;
	}
	char *copy = strdup(s);
	if (copy)
		p->items[p->n++] = copy;
	return copy;
}

void str_pool_release(struct str_pool *p, const char *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < p->n; i++) {
		if (p->items[i] == s) {
			free(p->items[i]);
			p->items[i] = p->items[--p->n];
			return;
		}
	}
}

void str_pool_free(struct str_pool *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->items[i]);
	free(p->items);
	memset(p, 0, sizeof(*p));
}

void vmm_setup_init(struct vmm_setup *s)
{
	memset(s, 0, sizeof(*s));
	s->vm.cpus = 1;
	s->vm.memory_bytes = CV_MiB(SETUP_FC_MEMORY_MIB);
	s->vm.console.kind = CONSOLE_STDIO;
	s->vm.sandbox = VMM_SANDBOX_KILL;
	s->boot.cmdline = SETUP_FC_BOOT_ARGS;
	s->logger.level = LOG_LEVEL_INFO;
}

void vmm_setup_destroy(struct vmm_setup *s)
{
	str_pool_free(&s->pool);
}

static bool id_matches(const char *have, const char *prefix, unsigned index, const char *id)
{
	if (have)
		return strcmp(have, id) == 0;
	char name[32];
	snprintf(name, sizeof(name), "%s%u", prefix, index);
	return strcmp(name, id) == 0;
}

int vmm_setup_find_disk(const struct vmm_setup *s, const char *id)
{
	const struct device_config *dc = &s->vm.devices;
	for (unsigned i = 0; i < dc->n_disks; i++)
		if (id_matches(dc->disks[i].id, "drive", i, id))
			return (int)i;
	return -1;
}

int vmm_setup_find_net(const struct vmm_setup *s, const char *id)
{
	const struct device_config *dc = &s->vm.devices;
	for (unsigned i = 0; i < dc->n_nets; i++)
		if (id_matches(dc->nets[i].id, "net", i, id))
			return (int)i;
	return -1;
}

int vmm_setup_check_boot(const struct vmm_setup *s, struct cv_error *err)
{
	if (!s->boot.kernel)
		return cv_fail(err, CV_EXIT_USAGE, "no kernel: set the boot source first "
			       "(PUT /boot-source, or --kernel)");
	return 0;
}

int vmm_setup_finalize(struct vmm_setup *s, struct cv_error *err)
{
	struct device_config *dc = &s->vm.devices;
	if (vmm_setup_check_boot(s, err) < 0)
		return -1;
	int root = -1;
	for (unsigned i = 0; i < dc->n_disks; i++) {
		if (!dc->disks[i].is_root)
			continue;
		if (root >= 0)
			return cv_fail(err, CV_EXIT_USAGE, "more than one root device");
		root = (int)i;
	}
	const char *cmdline = s->boot.cmdline ? s->boot.cmdline : "";
	if (root > 0) {
		/* The root drive is the first virtio-blk device, so the guest names it vda. */
		struct disk_config r = dc->disks[root];
		memmove(&dc->disks[1], &dc->disks[0], (size_t)root * sizeof(dc->disks[0]));
		dc->disks[0] = r;
	}
	if (root >= 0) {
		const struct disk_config *r = &dc->disks[0];
		size_t cap = strlen(cmdline) + 64 + (r->partuuid ? strlen(r->partuuid) : 0);
		char *line = malloc(cap);
		if (!line)
			return cv_fail(err, CV_EXIT_OSERR, "out of memory");
		snprintf(line, cap, "%s%sroot=%s%s %s", cmdline, *cmdline ? " " : "",
			 r->partuuid ? "PARTUUID=" : "/dev/vda", r->partuuid ? r->partuuid : "",
			 r->read_only ? "ro" : "rw");
		s->final_cmdline = str_pool_dup(&s->pool, line);
		free(line);
		if (!s->final_cmdline)
			return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	} else {
		s->final_cmdline = cmdline;
	}
	if (dc->transport == VIRTIO_TRANSPORT_PCI &&
	    virtio_mmio_cmdline_disables_pci(s->final_cmdline))
		fprintf(stderr, "cvisor-vmm: warning: --transport pci with pci=off on the kernel "
				"command line: the guest will not see the virtio devices\n");
	dc->transport = virtio_transport_resolve(dc->transport, s->final_cmdline);
	return 0;
}
