/*
 * Per-mm dirty tracking: UFFD-WP (async mode) registration of every private
 * VMA, and PAGEMAP_SCAN to collect written pages and re-arm them atomically.
 */
#define _GNU_SOURCE
#include "track.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uapi.h"

#define VEC_LEN 8192
#define SCAN_ATTEMPTS 6

static struct dt_page_region *vec;

/* ---------------------------------------------------------------- maps */

struct mapent {
	uint64_t start, end;
	int candidate; /* private and not a special kernel mapping */
	int vdso;
};

struct maplist {
	struct mapent *v;
	size_t n, cap;
};

static const char *special_names[] = {"[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]", "[uprobes]", NULL};

static int read_all(int fd, char **buf, size_t *len)
{
	size_t cap = 65536, n = 0;
	char *b = malloc(cap);
	if (!b)
		return -ENOMEM;
	for (;;) {
		if (n + 4096 > cap) {
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				free(b);
				return -ENOMEM;
			}
			b = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, b + n, cap - n - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int err = errno;
			free(b);
			return -err;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

static uint64_t hex(const char **p)
{
	uint64_t v = 0;
	for (;;) {
		char c = **p;
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else
			break;
		v = (v << 4) | (uint64_t)d;
		(*p)++;
	}
	return v;
}

static int parse_maps(const char *buf, struct maplist *ml)
{
	ml->n = 0;
	const char *p = buf;
	while (*p) {
		const char *eol = strchr(p, '\n');
		if (!eol)
			eol = p + strlen(p);
		struct mapent me = {0};
		const char *q = p;
		me.start = hex(&q);
		if (*q == '-') {
			q++;
			me.end = hex(&q);
			if (*q == ' ' && eol - q > 5) {
				q++;
				int priv = (q[3] == 'p');
				/* path: 6th field. Skip perms, offset, dev, inode. */
				const char *f = q;
				for (int field = 0; field < 4 && f < eol; field++) {
					while (f < eol && *f != ' ')
						f++;
					while (f < eol && *f == ' ')
						f++;
				}
				size_t plen = (size_t)(eol - f);
				int special = 0;
				for (int i = 0; special_names[i]; i++) {
					size_t sl = strlen(special_names[i]);
					if (plen == sl && memcmp(f, special_names[i], sl) == 0) {
						special = 1;
						if (i == 2)
							me.vdso = 1;
					}
				}
				me.candidate = priv && !special && me.end > me.start;
				if (ml->n == ml->cap) {
					size_t nc = ml->cap ? ml->cap * 2 : 256;
					struct mapent *nv = realloc(ml->v, nc * sizeof *nv);
					if (!nv)
						return -ENOMEM;
					ml->v = nv;
					ml->cap = nc;
				}
				ml->v[ml->n++] = me;
			}
		}
		p = *eol ? eol + 1 : eol;
	}
	return 0;
}

/* Read the VMA list of the mm. /proc/PID/maps is empty when the leader thread
 * has exited while others live on: then use a live thread's view. */
static int read_maps(struct dt_mm *mm, struct maplist *ml)
{
	char *buf = NULL;
	size_t len = 0;
	int fd = openat(mm->procfd, "maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = read_all(fd, &buf, &len);
	close(fd);
	if (r < 0)
		return r;
	if (len == 0) {
		free(buf);
		buf = NULL;
		int tfd = openat(mm->procfd, "task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = tfd >= 0 ? fdopendir(tfd) : NULL;
		if (!d && tfd >= 0)
			close(tfd);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			if (de->d_name[0] < '0' || de->d_name[0] > '9')
				continue;
			char path[sizeof de->d_name + 8];
			snprintf(path, sizeof path, "%s/maps", de->d_name);
			int mfd = openat(dirfd(d), path, O_RDONLY | O_CLOEXEC);
			if (mfd < 0)
				continue;
			r = read_all(mfd, &buf, &len);
			close(mfd);
			if (r == 0 && len > 0)
				break;
			free(buf);
			buf = NULL;
			len = 0;
		}
		if (d)
			closedir(d);
		if (!buf) {
			ml->n = 0;
			return 0;
		}
	}
	r = parse_maps(buf, ml);
	free(buf);
	return r;
}

/* ---------------------------------------------------------------- liveness */

int dt_proc_status(pid_t pid, pid_t *tgid, char *state)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	int err = errno;
	close(fd);
	if (n < 0)
		return -err;
	buf[n] = '\0';
	const char *s = strstr(buf, "\nState:");
	const char *t = strstr(buf, "\nTgid:");
	if (!s || !t)
		return -EINVAL;
	s += 7;
	while (*s == ' ' || *s == '\t')
		s++;
	*state = *s;
	*tgid = (pid_t)strtol(t + 6, NULL, 10);
	return 0;
}

static int pidfd_exited(int pidfd)
{
	struct pollfd p = {.fd = pidfd, .events = POLLIN};
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

int dt_mm_alive(struct dt_mm *mm)
{
	if (pidfd_exited(mm->pidfd))
		return DT_GONE_EXITED;
	uint64_t x;
	if (pread(mm->pagemapfd, &x, sizeof x, 0) == (ssize_t)sizeof x)
		return DT_ALIVE;
	/* Our mm is gone. If the process still has an address space, it exec'd. */
	if (pidfd_exited(mm->pidfd))
		return DT_GONE_EXITED;
	struct maplist ml = {0};
	int r = read_maps(mm, &ml);
	size_t n = ml.n;
	free(ml.v);
	return (r == 0 && n > 0) ? DT_GONE_EXECED : DT_GONE_EXITED;
}

/* ---------------------------------------------------------------- open/close */

/* Live (non-zombie) thread ids of a thread group, leader first if alive. */
static size_t live_tids(int procfd, pid_t *out, size_t max)
{
	size_t n = 0;
	int tfd = openat(procfd, "task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = tfd >= 0 ? fdopendir(tfd) : NULL;
	if (!d) {
		if (tfd >= 0)
			close(tfd);
		return 0;
	}
	struct dirent *de;
	while (n < max && (de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		pid_t tid = (pid_t)strtol(de->d_name, NULL, 10);
		pid_t tg;
		char st;
		if (dt_proc_status(tid, &tg, &st) == 0 && st != 'Z' && st != 'X')
			out[n++] = tid;
	}
	closedir(d);
	return n;
}

/* Open pagemap and mem of the mm. Through /proc/TGID normally; through a live
 * thread when the leader is a zombie (it called pthread_exit) and so has no
 * mm of its own. The fds stay bound to the mm either way. */
static int open_mm_files(struct dt_mm *mm)
{
	char path[64];
	int fd_pm = openat(mm->procfd, "pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t x;
	if (fd_pm >= 0 && pread(fd_pm, &x, sizeof x, 0) == (ssize_t)sizeof x) {
		int fd_mem = openat(mm->procfd, "mem", O_RDONLY | O_CLOEXEC);
		if (fd_mem < 0) {
			int err = errno;
			close(fd_pm);
			return -err;
		}
		mm->pagemapfd = fd_pm;
		mm->memfd = fd_mem;
		return 0;
	}
	int err = fd_pm < 0 ? errno : ESRCH;
	if (fd_pm >= 0)
		close(fd_pm);
	pid_t t[64];
	size_t n = live_tids(mm->procfd, t, 64);
	for (size_t i = 0; i < n; i++) {
		if (t[i] == mm->pid)
			continue;
		snprintf(path, sizeof path, "task/%d/pagemap", (int)t[i]);
		fd_pm = openat(mm->procfd, path, O_RDONLY | O_CLOEXEC);
		if (fd_pm < 0)
			continue;
		if (pread(fd_pm, &x, sizeof x, 0) != (ssize_t)sizeof x) {
			close(fd_pm);
			continue;
		}
		snprintf(path, sizeof path, "task/%d/mem", (int)t[i]);
		int fd_mem = openat(mm->procfd, path, O_RDONLY | O_CLOEXEC);
		if (fd_mem < 0) {
			close(fd_pm);
			continue;
		}
		mm->pagemapfd = fd_pm;
		mm->memfd = fd_mem;
		return 0;
	}
	return -err;
}

int dt_mm_open(struct dt_mm *mm, pid_t tgid, struct dt_err *e)
{
	mm->pid = tgid;
	mm->procfd = mm->pidfd = mm->uffd = mm->pagemapfd = mm->memfd = -1;
	char path[64];
	snprintf(path, sizeof path, "/proc/%d", (int)tgid);
	mm->procfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (mm->procfd < 0) {
		dt_seterr(e, E_PTRACE, errno == ENOENT ? ESRCH : errno, "open %s: %s", path, strerror(errno));
		return -1;
	}
	mm->pidfd = (int)syscall(SYS_pidfd_open, tgid, 0);
	if (mm->pidfd < 0) {
		dt_seterr(e, E_PTRACE, errno, "pidfd_open(%d): %s", (int)tgid, strerror(errno));
		return -1;
	}
	int r = open_mm_files(mm);
	if (r < 0) {
		/* ESRCH: a zombie or exiting process has no address space */
		dt_seterr(e, E_PTRACE, -r, "process %d: cannot open its pagemap/mem: %s", (int)tgid, strerror(-r));
		return -1;
	}
	return 0;
}

void dt_mm_close(struct dt_mm *mm)
{
	int *fds[] = {&mm->uffd, &mm->pagemapfd, &mm->memfd, &mm->pidfd, &mm->procfd};
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
	free(mm->vmas);
	mm->vmas = NULL;
	mm->nvmas = 0;
	free(mm->pids);
	mm->pids = NULL;
	mm->npids = 0;
}

/* ---------------------------------------------------------------- scanning */

enum scan_mode {
	SCAN_WRITTEN, /* written since last armed; re-arm */
	SCAN_FULL,    /* every present/swapped anonymous page; arm */
	SCAN_REPORT,  /* every present/swapped anonymous page; no WP (untrackable VMA) */
};

static int ensure_vec(void)
{
	if (!vec)
		vec = malloc(sizeof(*vec) * VEC_LEN);
	return vec ? 0 : -ENOMEM;
}

/* Scan [s,e). Returns 0, or -errno with *fail_at = start of the failed call
 * (pages before it were reported and armed). */
static int scan_range(struct dt_mm *mm, uint64_t s, uint64_t e, enum scan_mode mode, struct dt_rangevec *out,
		      uint64_t *fail_at)
{
	if (ensure_vec() < 0)
		return -ENOMEM;
	uint64_t pos = s;
	while (pos < e) {
		struct dt_pm_scan_arg a;
		memset(&a, 0, sizeof a);
		a.size = sizeof a;
		a.start = pos;
		a.end = e;
		a.vec = (uint64_t)(uintptr_t)vec;
		a.vec_len = VEC_LEN;
		if (mode != SCAN_REPORT)
			a.flags = DT_PM_SCAN_WP_MATCHING | DT_PM_SCAN_CHECK_WPASYNC;
		/* Interesting: present or swapped, anonymous (not page cache), not the
		 * shared zero page; in SCAN_WRITTEN mode also not write-protected. */
		a.category_inverted = DT_PAGE_IS_FILE | DT_PAGE_IS_PFNZERO;
		a.category_mask = DT_PAGE_IS_FILE | DT_PAGE_IS_PFNZERO | (mode == SCAN_WRITTEN ? DT_PAGE_IS_WRITTEN : 0);
		a.category_anyof_mask = DT_PAGE_IS_PRESENT | DT_PAGE_IS_SWAPPED;
		a.return_mask = DT_PAGE_IS_WRITTEN; /* 1 bit keeps adjacent regions merged */
		long n = ioctl(mm->pagemapfd, DT_PAGEMAP_SCAN, &a);
		if (n < 0) {
			*fail_at = pos;
			return -errno;
		}
		for (long k = 0; k < n; k++)
			if (rv_push(out, vec[k].start, vec[k].end) < 0)
				return -ENOMEM;
		if (a.walk_end <= pos || a.walk_end >= e)
			break;
		pos = a.walk_end;
	}
	return 0;
}

static int uffd_register(int uffd, uint64_t s, uint64_t e)
{
	struct uffdio_register reg;
	memset(&reg, 0, sizeof reg);
	reg.range.start = s;
	reg.range.len = e - s;
	reg.mode = UFFDIO_REGISTER_MODE_WP;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	return 0;
}

static int overlaps(const struct dt_rangevec *rv, uint64_t s, uint64_t e)
{
	for (size_t i = 0; i < rv->n; i++)
		if (rv->v[i].start < e && s < rv->v[i].end)
			return 1;
	return 0;
}

/*
 * Bring the tracked VMA list in line with the current maps. Candidates fully
 * covered by previously tracked VMAs stay as they are. Anything else (new
 * mapping, growth, a range the last scan found unregistered, a previously
 * untrackable VMA) is registered again; the parts not tracked before are added
 * to *fresh so the caller reports all their pages.
 */
static int reconcile(struct dt_mm *mm, const struct maplist *ml, const struct dt_rangevec *reregister,
		     struct dt_rangevec *fresh)
{
	struct dt_vma *nv = malloc((ml->n ? ml->n : 1) * sizeof *nv);
	if (!nv)
		return -ENOMEM;
	size_t nn = 0, oi = 0;
	const struct dt_vma *old = mm->vmas;
	size_t nold = mm->nvmas;
	for (size_t i = 0; i < ml->n; i++) {
		const struct mapent *c = &ml->v[i];
		if (!c->candidate)
			continue;
		while (oi < nold && old[oi].end <= c->start)
			oi++;
		struct dt_range pieces[64];
		size_t np = 0;
		int overflow = 0;
		uint64_t pos = c->start;
		for (size_t k = oi; k < nold && old[k].start < c->end; k++) {
			if (old[k].state != VMA_TRACKED)
				continue;
			if (old[k].start > pos) {
				if (np < 64)
					pieces[np++] = (struct dt_range){pos, old[k].start < c->end ? old[k].start : c->end};
				else
					overflow = 1;
			}
			if (old[k].end > pos)
				pos = old[k].end;
		}
		if (pos < c->end) {
			if (np < 64)
				pieces[np++] = (struct dt_range){pos, c->end};
			else
				overflow = 1;
		}
		if (overflow) {
			np = 1;
			pieces[0] = (struct dt_range){c->start, c->end};
		}
		int must = np > 0 || overlaps(reregister, c->start, c->end);
		struct dt_vma v = {.start = c->start, .end = c->end, .state = VMA_TRACKED, .reg_errno = 0};
		if (must) {
			int r = uffd_register(mm->uffd, c->start, c->end);
			if (r < 0) {
				v.state = VMA_UNTRACKABLE;
				v.reg_errno = -r;
				DBG("pid %d: UFFDIO_REGISTER %#llx-%#llx: %s", (int)mm->pid,
					 (unsigned long long)c->start, (unsigned long long)c->end, strerror(-r));
			} else {
				for (size_t k = 0; k < np; k++)
					if (rv_push(fresh, pieces[k].start, pieces[k].end) < 0) {
						free(nv);
						return -ENOMEM;
					}
			}
		}
		nv[nn++] = v;
	}
	free(mm->vmas);
	mm->vmas = nv;
	mm->nvmas = nn;
	mm->tracked_pages = 0;
	mm->untrackable = 0;
	for (size_t i = 0; i < nn; i++) {
		if (nv[i].state == VMA_TRACKED)
			mm->tracked_pages += (nv[i].end - nv[i].start) / DT_PAGE_SIZE;
		else
			mm->untrackable++;
	}
	return 0;
}

static uint64_t find_vdso(const struct maplist *ml, uint64_t *end)
{
	for (size_t i = 0; i < ml->n; i++)
		if (ml->v[i].vdso) {
			*end = ml->v[i].end;
			return ml->v[i].start;
		}
	*end = 0;
	return 0;
}

int dt_mm_attach(struct dt_mm *mm, int *gone, struct dt_err *e)
{
	*gone = DT_ALIVE;
	struct maplist ml = {0};
	int r = read_maps(mm, &ml);
	if (r < 0 || ml.n == 0) {
		free(ml.v);
		if (dt_mm_alive(mm) != DT_ALIVE) {
			*gone = DT_GONE_EXITED;
			return 0;
		}
		dt_seterr(e, E_PTRACE, r < 0 ? -r : ESRCH, "cannot read /proc/%d/maps: %s", (int)mm->pid,
			  r < 0 ? strerror(-r) : "empty");
		return -1;
	}
	uint64_t vdso_end, vdso_start = find_vdso(&ml, &vdso_end);

	/* Injection candidates: the pids the agent named (in its order), then any
	 * other live thread of the group (e.g. when the leader is a zombie). */
	pid_t cand[128];
	size_t nc = 0;
	for (size_t i = 0; i < mm->npids && nc < 64; i++) {
		pid_t tg;
		char st;
		if (dt_proc_status(mm->pids[i], &tg, &st) == 0 && (st == 'Z' || st == 'X'))
			continue;
		cand[nc++] = mm->pids[i];
	}
	pid_t more[64];
	size_t nm = live_tids(mm->procfd, more, 64);
	for (size_t i = 0; i < nm; i++) {
		int dup = 0;
		for (size_t k = 0; k < nc; k++)
			dup |= (cand[k] == more[i]);
		if (!dup)
			cand[nc++] = more[i];
	}
	int uffd = -1;
	struct dt_err last = {0};
	dt_seterr(&last, E_PTRACE, ESRCH, "process %d has no live thread", (int)mm->pid);
	for (size_t i = 0; i < nc && uffd < 0; i++) {
		memset(&last, 0, sizeof last);
		uffd = dt_grab_uffd(cand[i], mm->pid, mm->pidfd, vdso_start, vdso_end, &mm->inj, &last);
		/* A thread that went away or cannot be stopped (killable sleep, e.g. a
		 * vfork parent): another task on the same mm may do. */
		if (uffd < 0 && !(last.code && !strcmp(last.code, E_PTRACE) && (last.err == ESRCH || last.err == ETIMEDOUT)))
			break;
	}
	if (uffd < 0) {
		free(ml.v);
		if (last.err == ESRCH && dt_mm_alive(mm) != DT_ALIVE) {
			*gone = DT_GONE_EXITED;
			return 0;
		}
		*e = last;
		return -1;
	}
	mm->uffd = uffd;

	struct uffdio_api api;
	memset(&api, 0, sizeof api);
	api.api = UFFD_API;
	api.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
	if (ioctl(uffd, UFFDIO_API, &api) < 0) {
		dt_seterr(e, E_UFFD, errno, "UFFDIO_API(WP_ASYNC|WP_UNPOPULATED): %s (kernel >= 6.7 needed)",
			  strerror(errno));
		free(ml.v);
		return -1;
	}
	if ((api.features & (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)) !=
	    (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)) {
		dt_seterr(e, E_UFFD, EOPNOTSUPP, "kernel lacks UFFD WP_ASYNC/WP_UNPOPULATED (features %#llx)",
			  (unsigned long long)api.features);
		free(ml.v);
		return -1;
	}

	/* Re-read maps now that the uffd exists (the process kept running). The
	 * pagemap fd was opened before the injection: if the process exec'd in
	 * between, the mm we hold is dead and the uffd belongs to another one. */
	if (dt_mm_alive(mm) != DT_ALIVE) {
		*gone = dt_mm_alive(mm);
		free(ml.v);
		return 0;
	}
	r = read_maps(mm, &ml);
	if (r < 0) {
		free(ml.v);
		dt_seterr(e, E_UFFD, -r, "cannot read /proc/%d/maps: %s", (int)mm->pid, strerror(-r));
		return -1;
	}
	struct dt_rangevec fresh = {0}, none = {0};
	r = reconcile(mm, &ml, &none, &fresh);
	free(ml.v);
	rv_free(&fresh); /* nothing is armed yet: the first scan reports everything */
	if (r < 0) {
		dt_seterr(e, E_UFFD, -r, "registering VMAs: %s", strerror(-r));
		return -1;
	}
	return 0;
}

int dt_mm_scan(struct dt_mm *mm, int first, struct dt_rangevec *out, int *gone, struct dt_err *e)
{
	*gone = dt_mm_alive(mm);
	if (*gone)
		return 0;
	struct maplist ml = {0};
	struct dt_rangevec reregister = {0}, fresh = {0};
	int rc = -1, r = 0, need_retry = 1;
	for (int attempt = 0; attempt < SCAN_ATTEMPTS && need_retry; attempt++) {
		need_retry = 0;
		r = read_maps(mm, &ml);
		if (r < 0 || ml.n == 0) {
			*gone = dt_mm_alive(mm);
			if (*gone) {
				rc = 0;
				goto out;
			}
			dt_seterr(e, E_SCAN, r < 0 ? -r : EIO, "cannot read /proc/%d/maps: %s", (int)mm->pid,
				  r < 0 ? strerror(-r) : "empty");
			goto out;
		}
		fresh.n = 0;
		r = reconcile(mm, &ml, &reregister, &fresh);
		if (r < 0) {
			dt_seterr(e, E_SCAN, -r, "reconcile: %s", strerror(-r));
			goto out;
		}
		/* A call that failed with EPERM had already armed pages before the
		 * failure point without handing us their report: rescan all of it. */
		for (size_t i = 0; i < reregister.n; i++)
			if (rv_push(&fresh, reregister.v[i].start, reregister.v[i].end) < 0) {
				dt_seterr(e, E_SCAN, ENOMEM, "out of memory");
				goto out;
			}
		reregister.n = 0;
		uint64_t fail_at = 0;

		/* New or re-registered ranges: all their pages. */
		for (size_t i = 0; i < fresh.n; i++) {
			r = scan_range(mm, fresh.v[i].start, fresh.v[i].end, SCAN_FULL, out, &fail_at);
			if (r == -EPERM) {
				rv_push(&reregister, fail_at, fresh.v[i].end);
				need_retry = 1;
			} else if (r < 0) {
				goto scan_err;
			}
		}
		/* Tracked VMAs, in runs of address-contiguous entries (one ioctl per run). */
		for (size_t i = 0; i < mm->nvmas;) {
			if (mm->vmas[i].state != VMA_TRACKED) {
				r = scan_range(mm, mm->vmas[i].start, mm->vmas[i].end, SCAN_REPORT, out, &fail_at);
				if (r < 0 && r != -EPERM)
					goto scan_err;
				i++;
				continue;
			}
			size_t j = i + 1;
			while (j < mm->nvmas && mm->vmas[j].state == VMA_TRACKED && mm->vmas[j].start == mm->vmas[j - 1].end)
				j++;
			uint64_t s = mm->vmas[i].start, end = mm->vmas[j - 1].end;
			r = scan_range(mm, s, end, first ? SCAN_FULL : SCAN_WRITTEN, out, &fail_at);
			if (r == -EPERM) {
				/* Part of the run is no longer registered (remapped behind our
				 * back). Pages before fail_at are reported; re-register the rest
				 * and report it in full. */
				rv_push(&reregister, fail_at, end);
				need_retry = 1;
			} else if (r < 0) {
				goto scan_err;
			}
			i = j;
		}
		if (need_retry)
			DBG("pid %d: scan attempt %d hit unregistered ranges; retrying", (int)mm->pid, attempt);
		continue;
	scan_err:
		*gone = dt_mm_alive(mm);
		if (*gone) {
			rc = 0;
			goto out;
		}
		dt_seterr(e, E_SCAN, -r, "PAGEMAP_SCAN on pid %d: %s", (int)mm->pid, strerror(-r));
		goto out;
	}
	if (need_retry) {
		dt_seterr(e, E_SCAN, EAGAIN, "pid %d: address space kept changing during %d scan attempts", (int)mm->pid,
			  SCAN_ATTEMPTS);
		goto out;
	}
	rv_sort_merge(out);
	mm->scans++;
	mm->last_pages = rv_pages(out);
	mm->total_pages += mm->last_pages;
	rc = 0;
out:
	free(ml.v);
	rv_free(&reregister);
	rv_free(&fresh);
	return rc;
}
