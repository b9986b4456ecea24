#ifndef FERRY_DT_INJECT_H
#define FERRY_DT_INJECT_H

#include <stdint.h>
#include <sys/types.h>

#include "common.h"

struct dt_inject_info {
	pid_t tid;              /* thread that executed the injected syscalls */
	uint64_t stop_us;       /* time the thread spent ptrace-stopped */
	int via_vdso;           /* 1: "syscall" gadget in [vdso]; 0: 2 bytes poked at RIP and restored */
	int seccomp_suspended;  /* PTRACE_O_SUSPEND_SECCOMP was in effect */
	int user_mode_only;     /* uffd created with UFFD_USER_MODE_ONLY */
	int rseq_abort;         /* thread was inside an rseq critical section: resumed at its abort_ip */
	int signals_redelivered;
};

/* chld_sigfd: a signalfd for SIGCHLD (blocked), used to wait for ptrace stops
 * without polling; may be -1. */
void dt_inject_init(int chld_sigfd);

/* Get a userfaultfd bound to tid's mm into this process (O_CLOEXEC).
 * tgid_pidfd: pidfd of the thread group leader.
 * vdso_start/vdso_end: the target's [vdso] mapping, 0/0 if unknown.
 * Returns the fd, or -1 with *e set. The thread is never left stopped or with
 * modified registers/text on any path that returns. */
int dt_grab_uffd(pid_t tid, pid_t tgid, int tgid_pidfd, uint64_t vdso_start, uint64_t vdso_end,
		 struct dt_inject_info *info, struct dt_err *e);

/* Threads seized but never stopped (timeout): detach them once they stop. */
void dt_inject_service_pending(void);
size_t dt_inject_pending_count(void);

/* Stop-wait limits (ms). */
#define DT_STOP_TIMEOUT_MS 2000

#endif
