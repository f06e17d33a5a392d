/*
 * Applying a diff snapshot's memory file onto its base (`cvisor snapshot merge`): the diff is a
 * sparse file of the base's size whose data extents are the pages that changed, everything
 * else a hole. Copying its data extents (SEEK_DATA/SEEK_HOLE) over the base, in place, gives
 * the memory file the diff's state file goes with. Kept free of KVM so the CLI and tests use it.
 */
#ifndef CVISOR_COMMON_SPARSE_MERGE_H
#define CVISOR_COMMON_SPARSE_MERGE_H

#include <stdint.h>

#include "error.h"

/*
 * Copies every data extent of diff_path into base_path at the same offset. Both must be regular
 * files of the same size and not the same file. Refuses a diff whose file system hides its
 * holes (it reports the whole file as data while fewer blocks are allocated), since that would
 * overwrite the base with zeroes. *copied (may be NULL) gets the bytes copied.
 */
int sparse_merge(const char *base_path, const char *diff_path, uint64_t *copied,
		 struct cv_error *err);

#endif
