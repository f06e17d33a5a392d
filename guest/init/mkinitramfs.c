/*
 * cvisor-mkinitramfs: builds the default guest initramfs at build time - cvisor-init as /init,
 * cvisor-agent as /bin/cvisor-agent (for guests the host drives over vsock), Debian's static
 * busybox with a symlink per applet, the device nodes the kernel needs before devtmpfs is
 * mounted, and a minimal /etc. Output is an uncompressed newc cpio: the guest unpacks it without
 * spending instructions on decompression, which matters under emulation.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpio.h"
#include "util.h"

static const char *const dirs[] = {
	"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root",
	"etc", "mnt", "var", "cvisor",
	/* Empty, so an archive appended later (kernel modules, cvisor.load) can add files here. */
	"lib", "lib/modules",
};

static int add_applets(struct cpio *c, const char *busybox, struct cv_error *err)
{
	char cmd[4200];
	if (cv_format(cmd, sizeof(cmd), err, "'%s' --list-full", busybox) < 0)
		return -1;
	FILE *p = popen(cmd, "r");
	if (!p)
		return cv_fail_errno(err, CV_EXIT_OSERR, "run '%s'", cmd);
	char line[512];
	int n = 0, rc = 0;
	while (rc == 0 && fgets(line, sizeof(line), p)) {
		line[strcspn(line, "\n")] = 0;
		if (!line[0] || strcmp(line, "bin/busybox") == 0)
			continue;
		rc = cpio_add_symlink(c, line, "/bin/busybox", err);
		n++;
	}
	int status = pclose(p);
	if (rc == 0 && (status != 0 || n == 0))
		rc = cv_fail(err, CV_EXIT_DATAERR, "'%s' listed no applets", cmd);
	return rc;
}

static int add_file_from(struct cpio *c, const char *name, const char *path, struct cv_error *err)
{
	struct cv_buf b;
	if (cv_read_file(path, 256u << 20, &b, err) < 0)
		return -1;
	int rc = cpio_add_file(c, name, 0755, b.data, b.len, err);
	cv_buf_free(&b);
	return rc;
}

#define MAX_EXTRAS 16

/* --extra SRC:DEST: one more file (mode 0755) at DEST inside the archive. */
static int add_extra(struct cpio *c, const char *spec, struct cv_error *err)
{
	const char *colon = strrchr(spec, ':');
	if (!colon || colon == spec || !colon[1])
		return cv_fail(err, CV_EXIT_USAGE, "--extra '%s': expected SRC:DEST", spec);
	char src[4096];
	if (cv_format(src, sizeof(src), err, "%.*s", (int)(colon - spec), spec) < 0)
		return -1;
	const char *dest = colon + 1;
	while (*dest == '/')
		dest++;
	return add_file_from(c, dest, src, err);
}

static int build(const char *init, const char *agent, const char *const *extras, int n_extras,
		 const char *busybox, const char *out, struct cv_error *err)
{
	static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n";
	static const char group[] = "root:x:0:\n";
	struct cpio c;
	cpio_init(&c);
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < CV_ARRAY_SIZE(dirs); i++)
		rc = cpio_add_dir(&c, dirs[i], 0755, err);
	if (rc == 0)
		rc = cpio_add_chardev(&c, "dev/console", 0600, 5, 1, err);
	if (rc == 0)
		rc = cpio_add_chardev(&c, "dev/null", 0666, 1, 3, err);
	if (rc == 0)
		rc = add_file_from(&c, "init", init, err);
	if (rc == 0 && agent)
		rc = add_file_from(&c, "bin/cvisor-agent", agent, err);
	for (int i = 0; rc == 0 && i < n_extras; i++)
		rc = add_extra(&c, extras[i], err);
	if (rc == 0)
		rc = add_file_from(&c, "bin/busybox", busybox, err);
	if (rc == 0)
		rc = add_applets(&c, busybox, err);
	if (rc == 0)
		rc = cpio_add_file(&c, "etc/passwd", 0644, passwd, sizeof(passwd) - 1, err);
	if (rc == 0)
		rc = cpio_add_file(&c, "etc/group", 0644, group, sizeof(group) - 1, err);
	if (rc == 0)
		rc = cpio_finish(&c, err);
	if (rc == 0) {
		char tmp[4200];
		FILE *f = NULL;
		rc = cv_format(tmp, sizeof(tmp), err, "%s.tmp", out);
		if (rc == 0 && !(f = fopen(tmp, "wb")))
			rc = cv_fail_errno(err, CV_EXIT_IOERR, "create '%s'", tmp);
		if (rc == 0 && (fwrite(c.data, 1, c.len, f) != c.len || fclose(f) != 0))
			rc = cv_fail_errno(err, CV_EXIT_IOERR, "write '%s'", tmp);
		if (rc == 0 && rename(tmp, out) < 0)
			rc = cv_fail_errno(err, CV_EXIT_IOERR, "rename to '%s'", out);
	}
	cpio_free(&c);
	return rc;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: cvisor-mkinitramfs --init PATH [--agent PATH] [--extra SRC:DEST]...\n"
		"                          [--busybox PATH] -o OUT\n");
}

int main(int argc, char **argv)
{
	const char *init = NULL, *agent = NULL, *busybox = "/bin/busybox", *out = NULL;
	const char *extras[MAX_EXTRAS];
	int n_extras = 0;
	for (int i = 1; i < argc; i += 2) {
		const char **slot = NULL;
		if (strcmp(argv[i], "--init") == 0)
			slot = &init;
		else if (strcmp(argv[i], "--agent") == 0)
			slot = &agent;
		else if (strcmp(argv[i], "--extra") == 0 && n_extras < MAX_EXTRAS)
			slot = &extras[n_extras++];
		else if (strcmp(argv[i], "--busybox") == 0)
			slot = &busybox;
		else if (strcmp(argv[i], "-o") == 0)
			slot = &out;
		/* A typo must not silently produce an initramfs without a component. */
		if (!slot || i + 1 >= argc) {
			fprintf(stderr, "cvisor-mkinitramfs: %s '%s'\n",
				slot ? "missing value for" : "unknown argument", argv[i]);
			usage();
			return CV_EXIT_USAGE;
		}
		*slot = argv[i + 1];
	}
	if (!init || !out) {
		usage();
		return CV_EXIT_USAGE;
	}
	struct cv_error err = { 0 };
	if (build(init, agent, extras, n_extras, busybox, out, &err) < 0) {
		cv_error_print(&err, "cvisor-mkinitramfs");
		return err.code;
	}
	return 0;
}
