/*
 * The VMM's log (PUT /logger, "logger" in --config-file): human-readable lines appended to a
 * file or named pipe, one per event - API requests and their outcome, VM start and stop.
 * Lines at or below the configured level are written as
 *   2026-11-22T09:30:00.123Z [ID] [Level] [origin] message
 * (no thread name: asking for it is a syscall the sandboxed threads may not make)
 * ([Level] with show_level, [origin] = file:line with show_log_origin). Without a logger nothing
 * is written here; errors still go to stderr as before. Safe from any thread.
 */
#ifndef CVISOR_VMM_LOGGER_H
#define CVISOR_VMM_LOGGER_H

#include <pthread.h>
#include <stdbool.h>

#include "error.h"
#include "setup.h"

struct vmm_logger {
	pthread_mutex_t lock;
	int fd;                      /* -1: off */
	enum log_level level;
	bool show_level, show_origin;
	const char *instance_id;
};

void vmm_logger_init(struct vmm_logger *l, const char *instance_id);
/* Opens cfg->path (O_APPEND; a FIFO waits for its reader as Firecracker's does). */
int vmm_logger_open(struct vmm_logger *l, const struct logger_config *cfg, struct cv_error *err);
void vmm_logger_close(struct vmm_logger *l);

void vmm_log_at(struct vmm_logger *l, enum log_level level, const char *file, int line,
		const char *fmt, ...) __attribute__((format(printf, 5, 6)));
#define vmm_log(l, level, ...) vmm_log_at((l), (level), __FILE__, __LINE__, __VA_ARGS__)

const char *vmm_log_level_name(enum log_level level);

#endif
