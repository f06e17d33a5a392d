/*
 * Console backend (see console.h).
 */
#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define CTRL_A 0x01

int console_parse(const char *spec, struct console_config *out, struct cv_error *err)
{
	memset(out, 0, sizeof(*out));
	if (strcmp(spec, "stdio") == 0) {
		out->kind = CONSOLE_STDIO;
	} else if (strcmp(spec, "none") == 0) {
		out->kind = CONSOLE_NONE;
	} else if (strncmp(spec, "file:", 5) == 0 && spec[5]) {
		out->kind = CONSOLE_FILE;
		out->path = spec + 5;
	} else {
		return cv_fail(err, CV_EXIT_USAGE,
			       "--console '%s': expected stdio, file:PATH or none", spec);
	}
	return 0;
}

int console_open(struct console *c, const struct console_config *cfg, struct cv_error *err)
{
	memset(c, 0, sizeof(*c));
	c->out_fd = c->in_fd = -1;
	switch (cfg->kind) {
	case CONSOLE_NONE:
		return 0;
	case CONSOLE_FILE:
		c->out_fd = open(cfg->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (c->out_fd < 0)
			return cv_fail_errno(err, CV_EXIT_IOERR, "console: open '%s'", cfg->path);
		c->close_out = true;
		return 0;
	case CONSOLE_STDIO:
		c->out_fd = STDOUT_FILENO;
		c->in_fd = STDIN_FILENO;
		if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &c->saved_tty) == 0) {
			struct termios raw = c->saved_tty;
			cfmakeraw(&raw);
			raw.c_oflag |= OPOST | ONLCR;   /* keep our own messages readable */
			if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
				c->tty_raw = true;
		}
		return 0;
	}
	return 0;
}

void console_close(struct console *c)
{
	if (c->tty_raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &c->saved_tty);
	if (c->close_out && c->out_fd >= 0)
		close(c->out_fd);
	c->out_fd = c->in_fd = -1;
	c->tty_raw = false;
}

void console_write(struct console *c, const uint8_t *buf, size_t len)
{
	if (c->out_fd < 0 || c->output_broken)
		return;
	if (cv_write_full(c->out_fd, buf, len) < 0 && (errno == EPIPE || errno == EBADF))
		c->output_broken = true;
}

size_t console_filter_input(struct console *c, uint8_t *buf, size_t len, bool *quit)
{
	*quit = false;
	if (!c->tty_raw)
		return len;
	size_t out = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t b = buf[i];
		if (c->escape_pending) {
			c->escape_pending = false;
			if (b == 'x') {
				*quit = true;
				return out;
			}
			if (b != CTRL_A)        /* Ctrl-A Ctrl-A sends one Ctrl-A */
				buf[out++] = CTRL_A;
			buf[out++] = b;
		} else if (b == CTRL_A) {
			c->escape_pending = true;
		} else {
			buf[out++] = b;
		}
	}
	return out;
}
