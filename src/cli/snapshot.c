/*
 * `cvisor snapshot`: offline work on snapshot files. For now one request, merge: applies a
 * diff snapshot's memory file (PUT /snapshot/create {"snapshot_type": "Diff"}) onto the memory
 * file of the snapshot it was taken after, in place, as Firecracker's rebase-snap does. The
 * result goes with the diff's state file (docs/snapshot-format.md, "Diff snapshots").
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "exitcodes.h"
#include "sparse_merge.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: cvisor snapshot merge BASE DIFF\n"
		"\n"
		"Applies the diff snapshot memory file DIFF onto the memory file BASE, in place: every\n"
		"page DIFF holds (its data extents) is copied over BASE; its holes leave BASE as it\n"
		"was. BASE then goes with DIFF's state file. Apply diffs in the order they were taken,\n"
		"and never onto a memory file a running VM was restored from (copy it first:\n"
		"cp --sparse=always BASE NEW).\n");
}

int cmd_snapshot(int argc, char **argv)
{
	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc != 4 || strcmp(argv[1], "merge") != 0) {
		usage(stderr);
		return CV_EXIT_USAGE;
	}
	struct cv_error err = { 0 };
	uint64_t copied;
	if (sparse_merge(argv[2], argv[3], &copied, &err) < 0) {
		cv_error_print(&err, "cvisor snapshot merge");
		return err.code;
	}
	fprintf(stderr, "cvisor snapshot merge: %llu KiB from '%s' applied onto '%s'\n",
		(unsigned long long)(copied >> 10), argv[3], argv[2]);
	return 0;
}
