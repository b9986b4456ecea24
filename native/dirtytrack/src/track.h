#ifndef FERRY_DT_TRACK_H
#define FERRY_DT_TRACK_H

#include <stdint.h>
#include <sys/types.h>

#include "common.h"
#include "inject.h"

enum { VMA_TRACKED = 1, VMA_UNTRACKABLE = 2 };

struct dt_vma {
	uint64_t start, end;
	int state;     /* VMA_TRACKED or VMA_UNTRACKABLE */
	int reg_errno; /* why UFFDIO_REGISTER failed (untrackable) */
};

/* One tracked address space (mm). Threads share it; so may CLONE_VM processes. */
struct dt_mm {
	pid_t pid;     /* thread-group id: the name used in every reply */
	pid_t *pids;   /* every pid/tid the agent passed that maps to this mm */
	size_t npids;
	int procfd;    /* /proc/PID (O_PATH): pins the task, immune to pid reuse */
	int pidfd;     /* exit notification */
	int uffd;      /* our userfaultfd for the mm; closing it unregisters everything */
	int pagemapfd; /* /proc/PID/pagemap, bound to this mm at open time */
	int memfd;     /* /proc/PID/mem, bound to this mm at open time */
	struct dt_vma *vmas;
	size_t nvmas;
	uint64_t tracked_pages;
	size_t untrackable;
	struct dt_inject_info inj;
	uint64_t scans;
	uint64_t last_pages;
	uint64_t total_pages;
};

enum { DT_ALIVE = 0, DT_GONE_EXITED = 1, DT_GONE_EXECED = 2 };

/* Open the per-mm descriptors for tgid. */
int dt_mm_open(struct dt_mm *mm, pid_t tgid, struct dt_err *e);
/* Inject (trying each pid in mm->pids until one works), UFFDIO_API, register
 * every trackable VMA. *gone is set instead of an error when the process
 * exited or exec'd meanwhile. */
int dt_mm_attach(struct dt_mm *mm, int *gone, struct dt_err *e);
/* One scan round; appends the sorted, merged ranges to out. */
int dt_mm_scan(struct dt_mm *mm, int first, struct dt_rangevec *out, int *gone, struct dt_err *e);
int dt_mm_alive(struct dt_mm *mm);
void dt_mm_close(struct dt_mm *mm); /* closes the uffd: tracking ends, WP bits are cleared */

/* Parse /proc/PID/status: Tgid and State letter. 0 or -errno. */
int dt_proc_status(pid_t pid, pid_t *tgid, char *state);

#endif
