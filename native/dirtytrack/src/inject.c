/*
 * Run userfaultfd() and close() inside a target thread with ptrace, and copy
 * the new fd into this process with pidfd_getfd().
 *
 *   PTRACE_SEIZE (+PTRACE_O_SUSPEND_SECCOMP so a container's seccomp profile
 *   cannot refuse the syscall) -> PTRACE_INTERRUPT -> wait for the stop ->
 *   save registers -> point RIP at a "syscall" instruction -> single-step ->
 *   read RAX -> pidfd_getfd -> same for close(fd) -> restore registers (and
 *   the text word if one had to be poked) -> PTRACE_DETACH.
 *
 * The syscall instruction is taken from the target's [vdso] (same image as
 * ours, verified byte by byte), so normally no memory of the target is
 * written. Only if that fails are 2 bytes at RIP replaced and restored.
 */
#define _GNU_SOURCE
#include "inject.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "uapi.h"

#define X86_64_USER_CS 0x33
#define INJECT_WARN_MS 5000 /* a single-stepped syscall that takes this long is logged */

static int chld_fd = -1;
static int64_t own_gadget_off = -1; /* offset of 0f 05 in our vdso */
static uint64_t own_vdso_size;

#define MAX_PENDING 256
static pid_t pending[MAX_PENDING];
static size_t npending;

static void find_own_gadget(void)
{
	uint64_t base = getauxval(AT_SYSINFO_EHDR);
	if (!base)
		return;
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return;
	char line[512];
	uint64_t s = 0, e = 0;
	while (fgets(line, sizeof line, f)) {
		if (!strstr(line, "[vdso]"))
			continue;
		unsigned long long a, b;
		if (sscanf(line, "%llx-%llx", &a, &b) == 2 && a == base) {
			s = a;
			e = b;
		}
		break;
	}
	fclose(f);
	if (!s)
		return;
	const unsigned char *p = (const unsigned char *)(uintptr_t)s;
	for (uint64_t i = 0; i + 1 < e - s; i++) {
		if (p[i] == 0x0f && p[i + 1] == 0x05) {
			own_gadget_off = (int64_t)i;
			own_vdso_size = e - s;
			return;
		}
	}
}

void dt_inject_init(int chld_sigfd)
{
	chld_fd = chld_sigfd;
	find_own_gadget();
	DBG("vdso syscall gadget offset %lld (vdso %llu bytes)", (long long)own_gadget_off,
		 (unsigned long long)own_vdso_size);
}

static void drain_chld(void)
{
	if (chld_fd < 0)
		return;
	struct signalfd_siginfo si[16];
	while (read(chld_fd, si, sizeof si) > 0)
		;
}

/* Wait for a state change of tid. timeout_ms < 0 waits forever.
 * 0 + *status, -ETIMEDOUT, or -errno. */
static int wait_tid(pid_t tid, int *status, int timeout_ms)
{
	uint64_t deadline = timeout_ms >= 0 ? dt_now_us() + (uint64_t)timeout_ms * 1000ULL : 0;
	for (;;) {
		pid_t r = waitpid(tid, status, __WALL | WNOHANG);
		if (r == tid)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		int wait_ms = 10;
		if (timeout_ms >= 0) {
			uint64_t now = dt_now_us();
			if (now >= deadline)
				return -ETIMEDOUT;
			uint64_t left = (deadline - now + 999) / 1000;
			if (left < (uint64_t)wait_ms)
				wait_ms = (int)left;
		}
		if (chld_fd >= 0) {
			struct pollfd p = {.fd = chld_fd, .events = POLLIN};
			if (poll(&p, 1, wait_ms) > 0)
				drain_chld();
		} else {
			usleep(50);
		}
	}
}

static void pending_add(pid_t tid)
{
	if (npending < MAX_PENDING)
		pending[npending++] = tid;
	else
		dt_log("pending-detach list full; thread %d stays seized until this helper exits", (int)tid);
}

size_t dt_inject_pending_count(void)
{
	return npending;
}

void dt_inject_service_pending(void)
{
	for (size_t i = 0; i < npending;) {
		int st;
		pid_t tid = pending[i];
		pid_t r = waitpid(tid, &st, __WALL | WNOHANG);
		int done = 0;
		if (r == tid) {
			if (WIFSTOPPED(st)) {
				int sig = ((st >> 16) == PTRACE_EVENT_STOP) ? 0 : WSTOPSIG(st);
				if (ptrace(PTRACE_DETACH, tid, 0, (void *)(long)sig) == 0 || errno == ESRCH)
					done = 1;
				DBG("late stop of thread %d: detached", (int)tid);
			} else {
				done = 1; /* exited */
			}
		} else if (r < 0 && errno == ECHILD) {
			done = 1;
		}
		if (done)
			pending[i] = pending[--npending];
		else
			i++;
	}
}

/* Signals that arrived while the thread executed injected code: held back and
 * delivered again at detach. */
struct sigq {
	int sig[8];
	int n;
};

static void sigq_add(struct sigq *q, int sig)
{
	for (int i = 0; i < q->n; i++)
		if (q->sig[i] == sig)
			return; /* standard signals do not queue twice anyway */
	if (q->n < 8)
		q->sig[q->n++] = sig;
}

/* Execute one syscall in the stopped thread. Returns 0 and *ret (raw RAX) or
 * -1 with *e set when ptrace itself failed (thread gone). */
static int inject_syscall(pid_t tid, const struct user_regs_struct *saved, uint64_t gadget, long nr, long a1, long a2,
			  long a3, struct sigq *q, long *ret, struct dt_err *e)
{
	struct user_regs_struct r = *saved;
	r.rip = gadget;
	r.rax = (unsigned long long)nr;
	r.orig_rax = (unsigned long long)-1; /* no syscall-restart processing for this resume */
	r.rdi = (unsigned long long)a1;
	r.rsi = (unsigned long long)a2;
	r.rdx = (unsigned long long)a3;
	r.r10 = r.r8 = r.r9 = 0;
	if (ptrace(PTRACE_SETREGS, tid, 0, &r) < 0) {
		dt_seterr(e, E_PTRACE, errno, "PTRACE_SETREGS(%d): %s", (int)tid, strerror(errno));
		return -1;
	}
	if (ptrace(PTRACE_SINGLESTEP, tid, 0, 0) < 0) {
		dt_seterr(e, E_PTRACE, errno, "PTRACE_SINGLESTEP(%d): %s", (int)tid, strerror(errno));
		return -1;
	}
	uint64_t t0 = dt_now_us();
	int warned = 0;
	for (;;) {
		int st;
		int w = wait_tid(tid, &st, INJECT_WARN_MS);
		if (w == -ETIMEDOUT) {
			/* Never abandon a thread whose registers are modified. */
			if (!warned)
				dt_log("thread %d has not completed an injected syscall after %llu ms; still waiting",
				       (int)tid, (unsigned long long)((dt_now_us() - t0) / 1000));
			warned = 1;
			continue;
		}
		if (w < 0) {
			dt_seterr(e, E_PTRACE, -w, "waitpid(%d): %s", (int)tid, strerror(-w));
			return -1;
		}
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			dt_seterr(e, E_PTRACE, ESRCH, "thread %d exited during injection", (int)tid);
			return -1;
		}
		if (!WIFSTOPPED(st))
			continue;
		int sig = WSTOPSIG(st);
		int ev = st >> 16;
		if (ev == 0 && sig == SIGTRAP) {
			struct user_regs_struct now;
			if (ptrace(PTRACE_GETREGS, tid, 0, &now) < 0) {
				dt_seterr(e, E_PTRACE, errno, "PTRACE_GETREGS(%d): %s", (int)tid, strerror(errno));
				return -1;
			}
			if (now.rip == gadget + 2) {
				*ret = (long)now.rax;
				return 0;
			}
			sigq_add(q, SIGTRAP); /* a real SIGTRAP, not our step */
		} else if (ev == 0) {
			sigq_add(q, sig); /* signal-delivery-stop: hold it back */
		}
		/* group-stop / other event stops: just keep stepping */
		if (ptrace(PTRACE_SINGLESTEP, tid, 0, 0) < 0) {
			dt_seterr(e, E_PTRACE, errno, "PTRACE_SINGLESTEP(%d): %s", (int)tid, strerror(errno));
			return -1;
		}
	}
}

static int peek(pid_t tid, uint64_t addr, uint64_t *out)
{
	errno = 0;
	long v = ptrace(PTRACE_PEEKDATA, tid, (void *)(uintptr_t)addr, 0);
	if (errno)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* If the thread stopped inside an rseq critical section, the kernel would
 * have moved it to the abort handler on preemption. Our resumes run with a
 * different RIP, so the kernel clears rseq_cs without aborting; emulate the
 * abort ourselves. Returns the RIP to restore. */
static uint64_t rseq_fixup(pid_t tid, uint64_t rip, int *aborted)
{
	struct dt_ptrace_rseq_configuration conf;
	memset(&conf, 0, sizeof conf);
	long n = ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, (void *)sizeof conf, &conf);
	if (n < (long)sizeof conf || !conf.rseq_abi_pointer)
		return rip;
	uint64_t cs_ptr;
	if (peek(tid, conf.rseq_abi_pointer + 8, &cs_ptr) < 0 || !cs_ptr)
		return rip;
	/* struct rseq_cs { u32 version; u32 flags; u64 start_ip; u64 post_commit_offset; u64 abort_ip; } */
	uint64_t start_ip, post_commit, abort_ip, sigword;
	if (peek(tid, cs_ptr + 8, &start_ip) < 0 || peek(tid, cs_ptr + 16, &post_commit) < 0 ||
	    peek(tid, cs_ptr + 24, &abort_ip) < 0)
		return rip;
	if (rip - start_ip >= post_commit)
		return rip;
	if (abort_ip < 4 || peek(tid, abort_ip - 4, &sigword) < 0 || (uint32_t)sigword != conf.signature)
		return rip; /* the kernel would kill it; leave it alone */
	*aborted = 1;
	return abort_ip;
}

static int find_gadget(pid_t tid, uint64_t vdso_start, uint64_t vdso_end, uint64_t *gadget)
{
	if (own_gadget_off < 0 || !vdso_start || vdso_end - vdso_start != own_vdso_size)
		return -1;
	uint64_t addr = vdso_start + (uint64_t)own_gadget_off;
	uint64_t word;
	if (peek(tid, addr, &word) < 0)
		return -1;
	if ((word & 0xffff) != 0x050f)
		return -1;
	*gadget = addr;
	return 0;
}

int dt_grab_uffd(pid_t tid, pid_t tgid, int tgid_pidfd, uint64_t vdso_start, uint64_t vdso_end,
		 struct dt_inject_info *info, struct dt_err *e)
{
	memset(info, 0, sizeof *info);
	info->tid = tid;

	long opts = PTRACE_O_SUSPEND_SECCOMP;
	if (ptrace(PTRACE_SEIZE, tid, 0, (void *)opts) < 0) {
		int err = errno;
		opts = 0;
		if ((err != EPERM && err != EINVAL) || ptrace(PTRACE_SEIZE, tid, 0, 0) < 0) {
			if (err == EPERM || err == EINVAL)
				err = errno;
			dt_seterr(e, E_PTRACE, err, "PTRACE_SEIZE(%d): %s%s", (int)tid, strerror(err),
				  err == EPERM ? " (already traced, or not permitted)" : "");
			return -1;
		}
	}
	info->seccomp_suspended = (opts != 0);

	if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) < 0) {
		int err = errno;
		pending_add(tid); /* reap/detach whenever possible */
		dt_seterr(e, E_PTRACE, err, "PTRACE_INTERRUPT(%d): %s", (int)tid, strerror(err));
		return -1;
	}

	int st;
	for (;;) {
		int w = wait_tid(tid, &st, DT_STOP_TIMEOUT_MS);
		if (w == -ETIMEDOUT) {
			pending_add(tid);
			dt_seterr(e, E_PTRACE, ETIMEDOUT,
				  "thread %d did not stop within %d ms (frozen cgroup or uninterruptible sleep?); "
				  "it will be detached as soon as it stops",
				  (int)tid, DT_STOP_TIMEOUT_MS);
			return -1;
		}
		if (w < 0) {
			dt_seterr(e, E_PTRACE, -w, "waitpid(%d): %s", (int)tid, strerror(-w));
			return -1;
		}
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			dt_seterr(e, E_PTRACE, ESRCH, "thread %d exited", (int)tid);
			return -1;
		}
		if (!WIFSTOPPED(st))
			continue;
		if ((st >> 16) == PTRACE_EVENT_STOP)
			break;
		/* A signal-delivery-stop that won the race against PTRACE_INTERRUPT:
		 * deliver the signal unchanged and wait for the interrupt stop. */
		if (ptrace(PTRACE_CONT, tid, 0, (void *)(long)WSTOPSIG(st)) < 0 && errno != ESRCH) {
			int err = errno;
			pending_add(tid);
			dt_seterr(e, E_PTRACE, err, "PTRACE_CONT(%d): %s", (int)tid, strerror(err));
			return -1;
		}
	}

	/* ---- the thread is stopped: from here on every path restores + detaches ---- */
	uint64_t t_stop = dt_now_us();
	struct user_regs_struct saved;
	struct sigq q = {.n = 0};
	int poked = 0, uffd = -1, alive = 1;
	long orig_word = 0;
	uint64_t gadget = 0, restore_rip;
	long tfd = -1;

	if (ptrace(PTRACE_GETREGS, tid, 0, &saved) < 0) {
		dt_seterr(e, E_PTRACE, errno, "PTRACE_GETREGS(%d): %s", (int)tid, strerror(errno));
		goto detach;
	}
	restore_rip = saved.rip;
	if (saved.cs != X86_64_USER_CS) {
		dt_seterr(e, E_PTRACE, EINVAL, "thread %d is not running 64-bit code (cs=%#llx); unsupported", (int)tid,
			  (unsigned long long)saved.cs);
		goto detach;
	}
	if (find_gadget(tid, vdso_start, vdso_end, &gadget) == 0) {
		info->via_vdso = 1;
	} else {
		errno = 0;
		orig_word = ptrace(PTRACE_PEEKTEXT, tid, (void *)(uintptr_t)saved.rip, 0);
		if (errno) {
			dt_seterr(e, E_PTRACE, errno, "PTRACE_PEEKTEXT(%d): %s", (int)tid, strerror(errno));
			goto detach;
		}
		long patched = (long)(((unsigned long)orig_word & ~0xffffUL) | 0x050fUL);
		if (ptrace(PTRACE_POKETEXT, tid, (void *)(uintptr_t)saved.rip, (void *)patched) < 0) {
			dt_seterr(e, E_PTRACE, errno, "PTRACE_POKETEXT(%d): %s", (int)tid, strerror(errno));
			goto detach;
		}
		poked = 1;
		gadget = saved.rip;
	}
	restore_rip = rseq_fixup(tid, saved.rip, &info->rseq_abort);

	long ret;
	long flags = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;
	info->user_mode_only = 1;
	if (inject_syscall(tid, &saved, gadget, DT_NR_userfaultfd_x86_64, flags, 0, 0, &q, &ret, e) < 0) {
		alive = 0;
		goto restore;
	}
	if (ret == -EINVAL) { /* kernel < 5.11: no UFFD_USER_MODE_ONLY */
		info->user_mode_only = 0;
		flags &= ~(long)UFFD_USER_MODE_ONLY;
		if (inject_syscall(tid, &saved, gadget, DT_NR_userfaultfd_x86_64, flags, 0, 0, &q, &ret, e) < 0) {
			alive = 0;
			goto restore;
		}
	}
	if (ret < 0 && ret > -4096) {
		int err = (int)-ret;
		dt_seterr(e, E_UFFD, err, "userfaultfd() inside pid %d failed: %s%s", (int)tid, strerror(err),
			  (err == EPERM || err == ENOSYS) && !info->seccomp_suspended
				  ? " (seccomp filter? PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN)"
				  : "");
		goto restore;
	}
	tfd = ret;

	{
		int pfd = tgid_pidfd, own_pfd = -1;
		if (tid != tgid) {
			own_pfd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
			if (own_pfd >= 0)
				pfd = own_pfd;
		}
		uffd = (int)syscall(SYS_pidfd_getfd, pfd, (int)tfd, 0);
		int gerr = errno;
		if (own_pfd >= 0)
			close(own_pfd);
		if (uffd < 0)
			dt_seterr(e, E_UFFD, gerr, "pidfd_getfd(%d, fd %ld): %s", (int)tid, tfd, strerror(gerr));
	}

	/* Always close the target's copy, whether or not we got ours. */
	{
		struct dt_err e2 = {0};
		long cret;
		if (inject_syscall(tid, &saved, gadget, DT_NR_close_x86_64, tfd, 0, 0, &q, &cret, &e2) < 0) {
			alive = 0;
			if (!e->code)
				*e = e2;
		} else if (cret != 0) {
			dt_log("close(%ld) inside pid %d returned %ld", tfd, (int)tid, cret);
		}
	}

restore:
	if (alive) {
		struct user_regs_struct r = saved;
		r.rip = restore_rip;
		if (ptrace(PTRACE_SETREGS, tid, 0, &r) < 0 && errno != ESRCH)
			dt_log("PTRACE_SETREGS(%d) restore failed: %s", (int)tid, strerror(errno));
	}
	if (poked && alive) {
		if (ptrace(PTRACE_POKETEXT, tid, (void *)(uintptr_t)saved.rip, (void *)orig_word) < 0 && errno != ESRCH)
			dt_log("PTRACE_POKETEXT(%d) restore failed: %s", (int)tid, strerror(errno));
	}
detach: {
	int sig = q.n ? q.sig[0] : 0;
	if (ptrace(PTRACE_DETACH, tid, 0, (void *)(long)sig) < 0) {
		/* ESRCH: the thread died (its exit must still be reaped by us as
		 * the tracer) or is not stopped; either way finish it later. */
		if (errno != ESRCH)
			dt_log("PTRACE_DETACH(%d): %s", (int)tid, strerror(errno));
		pending_add(tid);
	}
	for (int i = 1; i < q.n; i++)
		syscall(SYS_tgkill, tgid, tid, q.sig[i]);
	info->signals_redelivered = q.n;
}
	info->stop_us = dt_now_us() - t_stop;
	if (e->code) {
		if (uffd >= 0)
			close(uffd);
		return -1;
	}
	return uffd;
}
