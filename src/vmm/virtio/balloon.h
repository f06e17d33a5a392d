/*
 * virtio-balloon (virtio 1.2 section 5.5): the host asks the guest to give back memory (the
 * target, num_pages) and the guest reports pages it handed over (inflate) or took back (deflate);
 * handed-over pages are released on the host with MADV_DONTNEED. Optional: the guest's memory
 * statistics at an interval, deflate-on-OOM, and free page reporting (free pages the guest
 * reports are released too, without changing the balloon size).
 */
#ifndef CVISOR_VMM_VIRTIO_BALLOON_H
#define CVISOR_VMM_VIRTIO_BALLOON_H

#include <stdbool.h>
#include <stdint.h>

#include "devices.h"
#include "error.h"
#include "evloop.h"
#include "virtio/device.h"

/* Statistics tags (section 5.5.6.3). */
#define BALLOON_STAT_SWAP_IN 0
#define BALLOON_STAT_SWAP_OUT 1
#define BALLOON_STAT_MAJFLT 2
#define BALLOON_STAT_MINFLT 3
#define BALLOON_STAT_MEMFREE 4
#define BALLOON_STAT_MEMTOT 5
#define BALLOON_STAT_AVAIL 6
#define BALLOON_STAT_CACHES 7
#define BALLOON_STAT_HTLB_PGALLOC 8
#define BALLOON_STAT_HTLB_PGFAIL 9
#define BALLOON_STAT_COUNT 10

struct balloon_stats {
	bool valid[BALLOON_STAT_COUNT];
	uint64_t value[BALLOON_STAT_COUNT];
	uint64_t updates;                 /* how many reports the guest sent */
};

struct virtio_balloon {
	struct virtio_dev dev;
	struct balloon_config cfg;
	uint32_t target_pages;            /* config num_pages */
	uint32_t actual_pages;            /* config actual, as the guest reports it */
	uint64_t inflated_pages;          /* pages released through inflate, net of deflate */
	uint64_t reported_bytes;          /* released through free page reporting */
	int role[VIRTIO_MAX_QUEUES];      /* queue index -> role, fixed at activation */
	struct balloon_stats stats;
	bool stats_held;                  /* we hold the guest's stats buffer */
	int timer_fd;                     /* asks for fresh statistics every interval */
	struct evloop_handler timer;
	struct virtq_elem elem;
	struct virtq_elem stats_elem;
};

struct vm;

int virtio_balloon_add(struct vm *vm, const struct balloon_config *cfg, struct cv_error *err);

/* Sets the balloon's target size; the guest adjusts in the background. Takes the device lock. */
void virtio_balloon_set_target(struct virtio_balloon *b, uint64_t mib);
/* Copies the current sizes and last statistics. Takes the device lock. */
void virtio_balloon_get(struct virtio_balloon *b, uint64_t *target_mib, uint64_t *actual_mib,
			struct balloon_stats *stats);

#endif
