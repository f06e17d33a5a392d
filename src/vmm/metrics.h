/*
 * VMM metrics: per-vCPU exits by reason and time inside KVM_RUN, per-device operations, bytes
 * and errors, the VMM's resident memory, API request counts. Served as one JSON object on
 * GET /cvisor/metrics, and - once PUT /metrics {"metrics_path"} (or "metrics" in
 * --config-file) named a file or FIFO - appended there as one JSON line per flush: every
 * 60 s while the VM runs and on PUT /actions {"action_type": "FlushMetrics"}, as Firecracker
 * does. Counters are totals since the VMM started (a reader diffs successive lines).
 * The document is described in docs/api/README.md.
 */
#ifndef CVISOR_VMM_METRICS_H
#define CVISOR_VMM_METRICS_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "error.h"

#define METRICS_FLUSH_MS 60000u

struct vm;

struct vmm_metrics {
	pthread_mutex_t lock;        /* serialises flushes (main thread tick, API FlushMetrics) */
	int fd;                      /* metrics file, -1: none */
	int statm_fd;                /* /proc/self/statm, opened before the sandbox */
	uint64_t flushes;
	atomic_uint_fast64_t api_requests, api_errors;
};

void vmm_metrics_init(struct vmm_metrics *m);
int vmm_metrics_open(struct vmm_metrics *m, const char *path, struct cv_error *err);
void vmm_metrics_destroy(struct vmm_metrics *m);

/* The metrics document; vm may be NULL (not started: no vCPUs or devices yet). */
json_t *vmm_metrics_json(struct vmm_metrics *m, struct vm *vm);
/* Appends one line to the metrics file; fails when none is configured. */
int vmm_metrics_flush(struct vmm_metrics *m, struct vm *vm, struct cv_error *err);

#endif
