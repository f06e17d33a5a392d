/*
 * One vCPU's state for snapshots (see state.h). Payload, in this order:
 *   u32 TSC kHz | blob CPUID entries (struct kvm_cpuid_entry2[]) | u32 MP state |
 *   blob struct kvm_regs | blob struct kvm_sregs | u32 FPU kind (0 kvm_fpu, 1 XSAVE area) + blob |
 *   blob struct kvm_xcrs (empty without KVM_CAP_XCRS) | blob struct kvm_debugregs |
 *   blob struct kvm_lapic_state | u32 n + n * (u32 index, u64 value) MSRs |
 *   blob struct kvm_vcpu_events
 * The KVM structures are the x86-64 KVM ABI layouts, stable across kernels; a blob whose size
 * differs from this build's structure is refused.
 *
 * Restore order matters (KVM API and what other VMMs learned): CPUID before anything that
 * depends on features; sregs (EFER, CR4) before MSRs; the LAPIC before the MSRs because setting
 * it restarts the LAPIC timer, which MSR_IA32_TSC_DEADLINE then re-arms; events last.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "snapshot/state.h"
#include "util.h"
#include "vcpu.h"
#include "vm.h"

#define FPU_KIND_LEGACY 0
#define FPU_KIND_XSAVE 1
#define MAX_CPUID_ENTRIES 512
#define MAX_MSRS 4096

static bool has_cap(struct vcpu *v, long cap)
{
	return ioctl(v->vm->kvm.fd, KVM_CHECK_EXTENSION, cap) > 0;
}

/* Size of the XSAVE area KVM_GET_XSAVE2 fills, or 0 if only KVM_GET_XSAVE (or none) exists. */
static size_t xsave2_size(struct vcpu *v)
{
	int n = ioctl(v->vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	return n > (int)sizeof(struct kvm_xsave) ? (size_t)n : 0;
}

/*
 * Older kernels (6.1) update nent only when the buffer is too small, so ask with room for none
 * first: the E2BIG answer carries the exact count, then the second call fills exactly that.
 */
static int save_cpuid(struct vcpu *v, struct snap_buf *out, struct cv_error *err)
{
	struct kvm_cpuid2 probe = { .nent = 0 };
	if (ioctl(v->fd, KVM_GET_CPUID2, &probe) < 0 && errno != E2BIG)
		return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_GET_CPUID2", v->id);
	uint32_t n = probe.nent;
	if (n > MAX_CPUID_ENTRIES)
		return cv_fail(err, CV_EXIT_OSERR, "vCPU %u: %u CPUID entries", v->id, n);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (n ? n : 1) * sizeof(struct kvm_cpuid_entry2));
	if (!c)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	c->nent = n;
	if (n && ioctl(v->fd, KVM_GET_CPUID2, c) < 0) {
		free(c);
		return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_GET_CPUID2", v->id);
	}
	snap_put_blob(out, c->entries, n * sizeof(c->entries[0]));
	free(c);
	return 0;
}

/*
 * Reads every MSR KVM listed. KVM_GET_MSRS stops at the first index it cannot read (one the
 * guest's CPUID does not have), so that one is skipped and the rest read on.
 */
static int save_msrs(struct vcpu *v, struct snap_buf *out, struct cv_error *err)
{
	const struct kvm_system *k = &v->vm->kvm;
	unsigned n = CV_MIN(k->n_msrs, (unsigned)MAX_MSRS);
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
	uint32_t *idx = calloc(n ? n : 1, sizeof(*idx));
	uint64_t *val = calloc(n ? n : 1, sizeof(*val));
	if (!m || !idx || !val) {
		free(m);
		free(idx);
		free(val);
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	}
	unsigned got = 0;
	for (unsigned start = 0; start < n;) {
		unsigned count = n - start;
		m->nmsrs = count;
		for (unsigned i = 0; i < count; i++) {
			m->entries[i].index = k->msrs[start + i];
			m->entries[i].data = 0;
		}
		int r = ioctl(v->fd, KVM_GET_MSRS, m);
		if (r < 0) {
			free(m);
			free(idx);
			free(val);
			return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_GET_MSRS", v->id);
		}
		for (int i = 0; i < r; i++) {
			idx[got] = m->entries[i].index;
			val[got] = m->entries[i].data;
			got++;
		}
		start += (unsigned)r + ((unsigned)r < count ? 1 : 0);
	}
	snap_put_u32(out, got);
	for (unsigned i = 0; i < got; i++) {
		snap_put_u32(out, idx[i]);
		snap_put_u64(out, val[i]);
	}
	free(m);
	free(idx);
	free(val);
	return 0;
}

#define GET(ioc, what, var)                                                          \
	do {                                                                         \
		if (ioctl(v->fd, ioc, &(var)) < 0)                                   \
			return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: %s", v->id, what); \
	} while (0)

int vcpu_state_save(struct vcpu *v, struct snap_buf *out, struct cv_error *err)
{
	int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	snap_put_u32(out, khz > 0 ? (uint32_t)khz : 0);
	if (save_cpuid(v, out, err) < 0)
		return -1;

	struct kvm_mp_state mp;
	GET(KVM_GET_MP_STATE, "KVM_GET_MP_STATE", mp);
	snap_put_u32(out, mp.mp_state);
	struct kvm_regs regs;
	GET(KVM_GET_REGS, "KVM_GET_REGS", regs);
	snap_put_blob(out, &regs, sizeof(regs));
	struct kvm_sregs sregs;
	GET(KVM_GET_SREGS, "KVM_GET_SREGS", sregs);
	snap_put_blob(out, &sregs, sizeof(sregs));

	size_t x2 = xsave2_size(v);
	if (x2) {
		void *x = calloc(1, x2);
		if (!x)
			return cv_fail(err, CV_EXIT_OSERR, "out of memory");
		if (ioctl(v->fd, KVM_GET_XSAVE2, x) < 0) {
			free(x);
			return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_GET_XSAVE2", v->id);
		}
		snap_put_u32(out, FPU_KIND_XSAVE);
		snap_put_blob(out, x, x2);
		free(x);
	} else if (has_cap(v, KVM_CAP_XSAVE)) {
		struct kvm_xsave x;
		GET(KVM_GET_XSAVE, "KVM_GET_XSAVE", x);
		snap_put_u32(out, FPU_KIND_XSAVE);
		snap_put_blob(out, &x, sizeof(x));
	} else {
		struct kvm_fpu fpu;
		GET(KVM_GET_FPU, "KVM_GET_FPU", fpu);
		snap_put_u32(out, FPU_KIND_LEGACY);
		snap_put_blob(out, &fpu, sizeof(fpu));
	}
	if (has_cap(v, KVM_CAP_XCRS)) {
		struct kvm_xcrs xcrs;
		GET(KVM_GET_XCRS, "KVM_GET_XCRS", xcrs);
		snap_put_blob(out, &xcrs, sizeof(xcrs));
	} else {
		snap_put_blob(out, NULL, 0);
	}
	struct kvm_debugregs dbg;
	GET(KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", dbg);
	snap_put_blob(out, &dbg, sizeof(dbg));
	struct kvm_lapic_state lapic;
	GET(KVM_GET_LAPIC, "KVM_GET_LAPIC", lapic);
	snap_put_blob(out, &lapic, sizeof(lapic));
	if (save_msrs(v, out, err) < 0)
		return -1;
	struct kvm_vcpu_events ev;
	GET(KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", ev);
	snap_put_blob(out, &ev, sizeof(ev));
	return 0;
}

#define SET(ioc, what, var)                                                          \
	do {                                                                         \
		if (ioctl(v->fd, ioc, &(var)) < 0)                                   \
			return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: %s", v->id, what); \
	} while (0)

static int load_cpuid(struct vcpu *v, struct snap_cur *in, struct cv_error *err)
{
	size_t n;
	const uint8_t *p = snap_get_blob(in, &n);
	size_t esz = sizeof(struct kvm_cpuid_entry2);
	if (!p || n % esz || n / esz > MAX_CPUID_ENTRIES)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: vCPU %u: bad CPUID table", v->id);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n);
	if (!c)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	c->nent = (uint32_t)(n / esz);
	memcpy(c->entries, p, n);
	int rc = ioctl(v->fd, KVM_SET_CPUID2, c);
	unsigned nent = c->nent;
	free(c);
	if (rc < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_SET_CPUID2 (the snapshot's "
				     "%u CPU feature leaves)", v->id, nent);
	return 0;
}

static int load_fpu(struct vcpu *v, struct snap_cur *in, struct cv_error *err)
{
	uint32_t kind = snap_get_u32(in);
	size_t n;
	const uint8_t *p = snap_get_blob(in, &n);
	if (!p)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: vCPU %u: FPU state missing", v->id);
	if (kind == FPU_KIND_LEGACY) {
		struct kvm_fpu fpu;
		if (n != sizeof(fpu))
			return cv_fail(err, CV_EXIT_DATAERR, "snapshot: vCPU %u: bad FPU state", v->id);
		memcpy(&fpu, p, n);
		SET(KVM_SET_FPU, "KVM_SET_FPU", fpu);
		return 0;
	}
	if (kind != FPU_KIND_XSAVE || n < sizeof(struct kvm_xsave))
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: vCPU %u: bad XSAVE state", v->id);
	size_t here = xsave2_size(v);
	if (!here)
		here = sizeof(struct kvm_xsave);
	if (n > here)
		return cv_fail(err, CV_EXIT_UNAVAILABLE, "snapshot: vCPU %u: XSAVE area of %zu "
			       "bytes, this host's KVM handles %zu (CPU features missing here)",
			       v->id, n, here);
	void *x = calloc(1, here);
	if (!x)
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	memcpy(x, p, n);
	int rc = ioctl(v->fd, KVM_SET_XSAVE, x);
	free(x);
	if (rc < 0)
		return cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_SET_XSAVE", v->id);
	return 0;
}

/*
 * Writes the MSRs back. KVM_SET_MSRS stops at the first one it refuses; that one is reported
 * and skipped (a snapshot from a host with more MSRs should still resume), the rest go on.
 */
static int load_msrs(struct vcpu *v, struct snap_cur *in, struct cv_error *err)
{
	uint32_t n = snap_get_u32(in);
	if (n > MAX_MSRS || (uint64_t)n * 12 > in->len - in->off)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: vCPU %u: bad MSR list", v->id);
	/* One buffer, refilled from `start` for each try: header then entries. */
	struct kvm_msrs *batch = calloc(1, sizeof(*batch) + (n ? n : 1) * sizeof(batch->entries[0]));
	struct kvm_msr_entry *all = calloc(n ? n : 1, sizeof(*all));
	if (!batch || !all) {
		free(batch);
		free(all);
		return cv_fail(err, CV_EXIT_OSERR, "out of memory");
	}
	for (uint32_t i = 0; i < n; i++) {
		all[i].index = snap_get_u32(in);
		all[i].data = snap_get_u64(in);
	}
	unsigned skipped = 0;
	int rc = 0;
	for (uint32_t start = 0; start < n;) {
		uint32_t count = n - start;
		batch->nmsrs = count;
		memcpy(batch->entries, all + start, count * sizeof(all[0]));
		int r = ioctl(v->fd, KVM_SET_MSRS, batch);
		if (r < 0) {
			rc = cv_fail_errno(err, CV_EXIT_OSERR, "vCPU %u: KVM_SET_MSRS", v->id);
			break;
		}
		if ((uint32_t)r >= count)
			break;
		if (skipped++ < 4)
			fprintf(stderr, "cvisor-vmm: vCPU %u: KVM refused to restore MSR 0x%x; "
				"skipped\n", v->id, all[start + (uint32_t)r].index);
		start += (uint32_t)r + 1;
	}
	free(batch);
	free(all);
	return rc;
}

int vcpu_state_load(struct vcpu *v, struct snap_cur *in, struct cv_error *err)
{
	uint32_t khz = snap_get_u32(in);
	int here = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	if (khz && here > 0 && (uint32_t)here != khz &&
	    ioctl(v->fd, KVM_SET_TSC_KHZ, (unsigned long)khz) < 0)
		fprintf(stderr, "cvisor-vmm: vCPU %u: TSC runs at %d kHz here, %u kHz in the "
			"snapshot, and KVM cannot scale it: guest time may drift\n", v->id, here, khz);
	if (load_cpuid(v, in, err) < 0)
		return -1;

	struct kvm_mp_state mp = { .mp_state = snap_get_u32(in) };
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	if (snap_get_struct(in, &regs, sizeof(regs), "regs", err) < 0 ||
	    snap_get_struct(in, &sregs, sizeof(sregs), "sregs", err) < 0)
		return -1;
	SET(KVM_SET_SREGS, "KVM_SET_SREGS", sregs);
	SET(KVM_SET_REGS, "KVM_SET_REGS", regs);
	if (load_fpu(v, in, err) < 0)
		return -1;
	size_t n;
	const uint8_t *p = snap_get_blob(in, &n);
	if (!p)
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: vCPU %u: XCRs missing", v->id);
	if (n) {
		struct kvm_xcrs xcrs;
		if (n != sizeof(xcrs))
			return cv_fail(err, CV_EXIT_DATAERR, "snapshot: vCPU %u: bad XCRs", v->id);
		memcpy(&xcrs, p, n);
		SET(KVM_SET_XCRS, "KVM_SET_XCRS", xcrs);
	}
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	if (snap_get_struct(in, &dbg, sizeof(dbg), "debug registers", err) < 0 ||
	    snap_get_struct(in, &lapic, sizeof(lapic), "LAPIC", err) < 0)
		return -1;
	SET(KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", dbg);
	SET(KVM_SET_LAPIC, "KVM_SET_LAPIC", lapic);
	if (load_msrs(v, in, err) < 0)
		return -1;
	struct kvm_vcpu_events ev;
	if (snap_get_struct(in, &ev, sizeof(ev), "vCPU events", err) < 0)
		return -1;
	/* GET reports these fields without flagging them; SET only takes flagged ones. */
	ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
	SET(KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", ev);
	SET(KVM_SET_MP_STATE, "KVM_SET_MP_STATE", mp);
	if (!snap_cur_done(in))
		return cv_fail(err, CV_EXIT_DATAERR, "snapshot: vCPU %u: state section is malformed",
			       v->id);
	return 0;
}
