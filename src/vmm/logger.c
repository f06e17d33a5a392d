/*
 * The VMM's log file (see logger.h). The line is formatted in full and written with one
 * write(), so lines from different threads never interleave and a FIFO reader sees whole lines.
 */
#include "logger.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const names[] = { "Off", "Error", "Warning", "Info", "Debug", "Trace" };

const char *vmm_log_level_name(enum log_level level)
{
	return (unsigned)level < sizeof(names) / sizeof(names[0]) ? names[level] : "?";
}

void vmm_logger_init(struct vmm_logger *l, const char *instance_id)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->lock, NULL);
	l->fd = -1;
	l->instance_id = instance_id;
}

int vmm_logger_open(struct vmm_logger *l, const struct logger_config *cfg, struct cv_error *err)
{
	int fd = -1;
	if (cfg->path) {
		fd = open(cfg->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return cv_fail_errno(err, CV_EXIT_IOERR, "logger: open '%s'", cfg->path);
	} else {
		fd = dup(STDERR_FILENO);
		if (fd < 0)
			return cv_fail_errno(err, CV_EXIT_OSERR, "logger: stderr");
	}
	pthread_mutex_lock(&l->lock);
	if (l->fd >= 0)
		close(l->fd);
	l->fd = fd;
	l->level = cfg->level;
	l->show_level = cfg->show_level;
	l->show_origin = cfg->show_origin;
	pthread_mutex_unlock(&l->lock);
	return 0;
}

void vmm_logger_close(struct vmm_logger *l)
{
	pthread_mutex_lock(&l->lock);
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	pthread_mutex_unlock(&l->lock);
	pthread_mutex_destroy(&l->lock);
}

void vmm_log_at(struct vmm_logger *l, enum log_level level, const char *file, int line,
		const char *fmt, ...)
{
	if (!l || level == LOG_LEVEL_OFF)
		return;
	pthread_mutex_lock(&l->lock);
	if (l->fd < 0 || level > l->level) {
		pthread_mutex_unlock(&l->lock);
		return;
	}
	char buf[1536];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000L, l->instance_id);
	if (l->show_level)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "[%s] ", vmm_log_level_name(level));
	if (l->show_origin) {
		const char *base = strrchr(file, '/');
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "[%s:%d] ", base ? base + 1 : file,
			      line);
	}
	va_list ap;
	va_start(ap, fmt);
	if ((size_t)n < sizeof(buf) - 1)
		n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(l->fd, buf, (size_t)n) < 0) {
		/* a log that cannot be written cannot report that either */
	}
	pthread_mutex_unlock(&l->lock);
}
