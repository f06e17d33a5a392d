/*
 * Small helpers every component needs: bounded whole-file reads, strict number parsing, full
 * reads/writes that survive EINTR and short transfers, and locating files relative to the running
 * executable (so a build tree works without installing).
 */
#ifndef CVISOR_COMMON_UTIL_H
#define CVISOR_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

#define CV_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define CV_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CV_MAX(a, b) ((a) > (b) ? (a) : (b))
#define CV_ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define CV_ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define CV_KiB(x) ((uint64_t)(x) << 10)
#define CV_MiB(x) ((uint64_t)(x) << 20)
#define CV_GiB(x) ((uint64_t)(x) << 30)

/* A file's contents in memory. */
struct cv_buf {
	uint8_t *data;
	size_t len;
};

/*
 * Reads all of `path` into `out` (NUL-terminated one past len, for text callers). Files larger
 * than max_len are refused with CV_EXIT_DATAERR rather than read.
 */
int cv_read_file(const char *path, size_t max_len, struct cv_buf *out, struct cv_error *err);
void cv_buf_free(struct cv_buf *buf);

/* write()/read() until done; return 0, or -1 with errno set. read_full returns bytes read (short only at EOF). */
int cv_write_full(int fd, const void *buf, size_t len);
ssize_t cv_read_full(int fd, void *buf, size_t len);

/* Parses a whole decimal string into [min, max]; anything else (sign, junk, overflow) fails. */
bool cv_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Directory of the running executable, e.g. "/src/cvisor/build/src/cli". */
int cv_self_dir(char *out, size_t len, struct cv_error *err);

/* The per-user cache root: $CVISOR_CACHE, else $XDG_CACHE_HOME/cvisor, else ~/.cache/cvisor. */
int cv_cache_dir(char *out, size_t len, struct cv_error *err);

/* Host RAM in bytes from /proc/meminfo (MemTotal), or 0 if it cannot be read. */
uint64_t cv_host_memory_bytes(void);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t cv_monotonic_ns(void);

/* snprintf that reports truncation as an error instead of silently cutting paths. */
int cv_format(char *out, size_t len, struct cv_error *err, const char *fmt, ...) CV_PRINTF(4, 5);

#endif
