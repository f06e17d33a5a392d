/*
 * Exit statuses shared by every cvisor program. Setup failures follow sysexits(3) so scripts can
 * tell bad input from a missing resource; guest outcomes of cvisor-vmm have their own range.
 * docs/exit-status.md is the user-facing copy of this table.
 */
#ifndef CVISOR_COMMON_EXITCODES_H
#define CVISOR_COMMON_EXITCODES_H

enum cv_exit {
	CV_EXIT_OK = 0,             /* cvisor-vmm: the guest powered off */
	CV_EXIT_GUEST_REBOOT = 80,  /* the guest asked for a reset (reboot) */
	CV_EXIT_GUEST_CRASH = 81,   /* triple fault: KVM reported a shutdown of a vCPU */
	CV_EXIT_KVM_ERROR = 82,     /* KVM internal error, failed entry or an exit we cannot handle */
	CV_EXIT_MIGRATED = 83,      /* the guest moved to another cvisor-vmm (live migration) */
	CV_EXIT_USAGE = 64,         /* bad command line or configuration value */
	CV_EXIT_DATAERR = 65,       /* an input file is malformed (kernel, initrd) */
	CV_EXIT_NOINPUT = 66,       /* an input file cannot be opened */
	CV_EXIT_UNAVAILABLE = 69,   /* no usable /dev/kvm (missing, or PVM) and no emulated host */
	CV_EXIT_SOFTWARE = 70,      /* internal error: a bug in cvisor */
	CV_EXIT_OSERR = 71,         /* the host refused a resource (memory, threads, ioctl) */
	CV_EXIT_IOERR = 74,         /* reading or writing a file or stream failed */
	CV_EXIT_RUN_FAILED = 125,   /* cvisor run: the VM failed before the command reported */
	CV_EXIT_CANNOT_EXEC = 126,  /* cvisor run: the command exists but could not be executed */
	CV_EXIT_NOT_FOUND = 127,    /* cvisor run: the command was not found in the guest */
};

#endif
