/*
 * Where the guest's serial console goes: output to stdout or a file, input from stdin. When stdin
 * is a terminal it is put in raw mode for the VM's lifetime (the guest's line discipline does the
 * editing) and Ctrl-A x ends the VM, as in other emulators.
 */
#ifndef CVISOR_VMM_CONSOLE_H
#define CVISOR_VMM_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <termios.h>

#include "error.h"

enum console_kind { CONSOLE_STDIO, CONSOLE_FILE, CONSOLE_NONE };

struct console_config {
	enum console_kind kind;
	const char *path;          /* CONSOLE_FILE */
};

struct console {
	int out_fd;                /* -1: output discarded */
	bool close_out;
	int in_fd;                 /* -1: no input */
	bool tty_raw;              /* stdin was switched to raw mode and must be restored */
	struct termios saved_tty;
	bool escape_pending;       /* saw Ctrl-A */
	bool output_broken;        /* the reader went away; drop further output */
};

/* Parses "stdio", "file:PATH" or "none". */
int console_parse(const char *spec, struct console_config *out, struct cv_error *err);

int console_open(struct console *c, const struct console_config *cfg, struct cv_error *err);
void console_close(struct console *c);

/* Writes guest output; never fails the guest (a vanished reader only stops the copying). */
void console_write(struct console *c, const uint8_t *buf, size_t len);

/*
 * Filters input read from the terminal: strips the Ctrl-A escape sequences and returns the
 * number of bytes left for the guest in buf; sets *quit when the user typed Ctrl-A x.
 */
size_t console_filter_input(struct console *c, uint8_t *buf, size_t len, bool *quit);

#endif
