/*
 * Default guest file lookup (see guest_files.h).
 */
#include "guest_files.h"

#include <limits.h>
#include <unistd.h>

#include "build_config.h"
#include "util.h"

int guest_default_kernel(const char *name, char *out, size_t len, struct cv_error *err)
{
	char cache[PATH_MAX];
	if (cv_cache_dir(cache, sizeof(cache), err) < 0 ||
	    cv_format(out, len, err, "%s/kernel/%s/%s", cache, CVISOR_KERNEL_KEY, name) < 0)
		return -1;
	if (access(out, R_OK) != 0)
		return cv_fail(err, CV_EXIT_NOINPUT,
			       "the default guest kernel is not built yet (no %s); build it with "
			       "%s/guest/kernel/build.sh (about 5 minutes) or pass --kernel",
			       out, CVISOR_SOURCE_ROOT);
	return 0;
}

static int find_beside_or_installed(const char *name, const char *installed_dir, char *out,
				    size_t len, struct cv_error *err)
{
	char dir[PATH_MAX];
	if (cv_self_dir(dir, sizeof(dir), err) < 0)
		return -1;
	if (cv_format(out, len, err, "%s/%s", dir, name) < 0)
		return -1;
	if (access(out, R_OK) == 0)
		return 0;
	if (cv_format(out, len, err, "%s/%s", installed_dir, name) < 0)
		return -1;
	if (access(out, R_OK) == 0)
		return 0;
	return cv_fail(err, CV_EXIT_NOINPUT, "cannot find %s next to %s or in %s", name, dir,
		       installed_dir);
}

int guest_default_initramfs(char *out, size_t len, struct cv_error *err)
{
	return find_beside_or_installed("initramfs.cpio", CVISOR_DATADIR, out, len, err);
}

int guest_find_program(const char *name, char *out, size_t len, struct cv_error *err)
{
	char dir[PATH_MAX];
	if (cv_self_dir(dir, sizeof(dir), err) < 0)
		return -1;
	if (cv_format(out, len, err, "%s/%s", dir, name) < 0)
		return -1;
	if (access(out, X_OK) == 0)
		return 0;
	return find_beside_or_installed(name, CVISOR_LIBEXECDIR, out, len, err);
}
