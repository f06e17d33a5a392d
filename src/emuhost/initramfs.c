/*
 * The emulated host's initramfs, composed at every start: the cached base archive (busybox and
 * kernel modules, built by prepare.sh) followed by a small archive with the parts that change
 * with each build or boot: /init, cvisor-agent and the agent's token. The kernel unpacks
 * concatenated archives in order, so the second one adds to (and overrides) the first.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cpio.h"
#include "internal.h"
#include "util.h"

/* The base is a few MiB (busybox, kvm, 9p, virtio); anything near this is not ours. */
#define BASE_CPIO_MAX CV_MiB(512)
#define AGENT_MAX CV_MiB(64)

static int build_appendix(struct cpio *c, const char *agent_path, const char *token,
			  struct cv_error *err)
{
	struct cv_buf agent;
	if (cv_read_file(agent_path, AGENT_MAX, &agent, err) < 0)
		return cv_error_wrap(err, "cvisor-agent");
	/* /dev/console is here too: prepare.sh can only mknod it when run as root. */
	int rc = -1;
	if (cpio_add_dir(c, "dev", 0755, err) < 0 ||
	    cpio_add_chardev(c, "dev/console", 0600, 5, 1, err) < 0 ||
	    cpio_add_dir(c, "bin", 0755, err) < 0 ||
	    cpio_add_file(c, "bin/cvisor-agent", 0755, agent.data, agent.len, err) < 0 ||
	    cpio_add_dir(c, "etc", 0755, err) < 0 ||
	    cpio_add_file(c, "etc/cvisor-agent.token", 0600, token, strlen(token), err) < 0 ||
	    cpio_add_file(c, "init", 0755, emuhost_init_sh, emuhost_init_sh_len, err) < 0 ||
	    cpio_finish(c, err) < 0)
		goto out;
	rc = 0;
out:
	cv_buf_free(&agent);
	return rc;
}

int initramfs_compose(const char *base_cpio, const char *agent_path, const char *token,
		      const char *out_path, struct cv_error *err)
{
	struct cv_buf base = { 0 };
	struct cpio extra;
	cpio_init(&extra);
	int fd = -1, rc = -1;
	if (cv_read_file(base_cpio, BASE_CPIO_MAX, &base, err) < 0) {
		cv_error_wrap(err, "emulated host base initramfs");
		goto out;
	}
	if (build_appendix(&extra, agent_path, token, err) < 0)
		goto out;
	/* 0600: the archive holds the agent's token. */
	fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		cv_fail_errno(err, CV_EXIT_OSERR, "create '%s'", out_path);
		goto out;
	}
	/* The kernel expects each archive to start 4-byte aligned after the previous one. */
	static const uint8_t zeros[4];
	size_t pad = (4 - (base.len & 3)) & 3;
	if (cv_write_full(fd, base.data, base.len) < 0 || cv_write_full(fd, zeros, pad) < 0 ||
	    cv_write_full(fd, extra.data, extra.len) < 0) {
		cv_fail_errno(err, CV_EXIT_IOERR, "write '%s'", out_path);
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	cv_buf_free(&base);
	cpio_free(&extra);
	return rc;
}
