/*
 * ferry-lazyd: a lazy-pages daemon for `criu restore --lazy-pages` (CRIU 4.2.x), a drop-in for
 * `criu lazy-pages`. One thread, one epoll: faults are served first, and between faults the rest of
 * every lazy range is copied in large batches, so the fill does not stall under a task that faults
 * continuously (criu/uffd.c shrinks its background transfer on every fault and waits in epoll).
 *
 *   ferry-lazyd lazy-pages [--page-server --address A --port P] --images-dir D --work-dir W
 *               [-o LOG] [-vN] [--status-fd FD]
 *
 * Tuning (environment): FERRY_LAZYD_BATCH_KIB (background request, default 1024, at most 4096),
 * FERRY_LAZYD_DEPTH (background requests in flight to the page server, default 2),
 * FERRY_LAZYD_WINDOW_KIB (pages fetched around a fault, default 64).
 */
#define _GNU_SOURCE
#include "lazyd.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/userfaultfd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

#define LAZY_SOCK_NAME "lazy-pages.socket"
#define RESTORE_FINISHED 0x52535446u /* "RSTF", criu/uffd.c LAZY_PAGES_RESTORE_FINISHED */
#define PS_IOV_ADD_F 6u
#define PS_IOV_GET 7u
#define PS_IOV_CLOSE 0x1023u
#define PS_HDR 32
#define MAX_REQ_PAGES 1024u /* 4 MiB: criu/uffd.c MAX_XFER_LEN, the page server's pipe chunk */

enum ev_kind { EV_LISTEN, EV_LAZY_SK, EV_UFFD, EV_PS };
struct evsrc {
	enum ev_kind kind;
	void *p;
};

/* A contiguous part of a task's lazy memory: runtime address (follows mremap), dump-time address
 * (what the page server is asked for), and two bitmaps: pages still missing, pages requested. */
struct area {
	uint64_t rt, img, npages;
	int64_t off; /* pages file offset of page 0 (local mode) */
	uint64_t *miss, *infl;
	uint64_t nmiss, ninfl;
};

struct task {
	int pid; /* the task's pid in the images (pagemap-<pid>.img), GET's dst_id; a forked child keeps its parent's */
	int uffd, exited, id;
	struct lz_image *img;
	struct area *a;
	size_t na, capa;
	uint64_t nmiss, ninfl;
	size_t cur;
	uint64_t curpg;
	uint64_t *pf; /* faults waiting for a page that is in flight (runtime addresses) */
	size_t npf, cappf;
	struct evsrc ev;
	uint64_t faults, fault_pages, bg_pages, eexist, zeropages;
};

struct req {
	struct task *t;
	uint64_t img, n;
	int bg;
};

static struct {
	bool page_server;
	const char *address, *port;
	int imgdir, epfd, listen_fd, lazy_sk, ps;
	bool restore_finished, pf_retry;
	struct task **tasks;
	size_t ntasks, captasks, rr;
	uint64_t batch, depth, window;
	uint64_t t_first, t_rstf;
	/* page-server connection */
	struct req *q;
	size_t qcap, qhead, qlen, qbg;
	unsigned char *ob;
	size_t olen, ocap;
	bool want_out;
	unsigned char hdr[PS_HDR];
	size_t hgot;
	bool in_data;
	uint64_t dnr;
	size_t dgot;
	unsigned char *dbuf;
	struct evsrc ps_ev, listen_ev, lazy_ev;
	uint64_t requests, short_replies, pages_in;
} g = {.imgdir = -1, .epfd = -1, .listen_fd = -1, .lazy_sk = -1, .ps = -1};

static void die(void) __attribute__((noreturn));
static void die(void)
{
	LERR("ferry-lazyd failed; the restored tasks will see zero pages where lazy pages were missing");
	exit(1);
}

/* ---- bitmaps ---- */
static inline bool bt(const uint64_t *b, uint64_t i) { return b[i >> 6] >> (i & 63) & 1; }
static inline void bs(uint64_t *b, uint64_t i) { b[i >> 6] |= 1ULL << (i & 63); }
static inline void bc(uint64_t *b, uint64_t i) { b[i >> 6] &= ~(1ULL << (i & 63)); }
static inline bool avail(const struct area *a, uint64_t i) { return bt(a->miss, i) && !bt(a->infl, i); }

static uint64_t *bm_alloc(uint64_t n, bool ones)
{
	size_t words = (size_t)((n + 63) / 64) + 1;
	uint64_t *b = calloc(words, 8);
	if (!b) {
		LERR("out of memory");
		die();
	}
	if (ones) {
		for (uint64_t i = 0; i < n / 64; i++)
			b[i] = ~0ULL;
		for (uint64_t i = n / 64 * 64; i < n; i++)
			bs(b, i);
	}
	return b;
}

/* First page >= from that is missing and not requested, or a->npages. */
static uint64_t next_avail(const struct area *a, uint64_t from)
{
	while (from < a->npages) {
		uint64_t w = a->miss[from >> 6] & ~a->infl[from >> 6];
		w &= ~0ULL << (from & 63);
		if (w) {
			uint64_t i = (from & ~63ULL) + (uint64_t)__builtin_ctzll(w);
			return i < a->npages ? i : a->npages;
		}
		from = (from | 63) + 1;
	}
	return a->npages;
}

static void mark_infl(struct task *t, struct area *a, uint64_t s, uint64_t n)
{
	for (uint64_t i = s; i < s + n; i++)
		bs(a->infl, i);
	a->ninfl += n;
	t->ninfl += n;
}

/* The pages are in the task (copied, or there already): never touch them again. */
static void mark_done(struct task *t, struct area *a, uint64_t s, uint64_t n)
{
	for (uint64_t i = s; i < s + n; i++) {
		if (bt(a->infl, i)) {
			bc(a->infl, i);
			a->ninfl--, t->ninfl--;
		}
		if (bt(a->miss, i)) {
			bc(a->miss, i);
			a->nmiss--, t->nmiss--;
		}
	}
}

static void unmark_infl(struct task *t, struct area *a, uint64_t s, uint64_t n)
{
	for (uint64_t i = s; i < s + n; i++)
		if (bt(a->infl, i)) {
			bc(a->infl, i);
			a->ninfl--, t->ninfl--;
		}
}

/* ---- tasks and areas ---- */
static struct area *find_rt(struct task *t, uint64_t addr)
{
	size_t lo = 0, hi = t->na;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		struct area *a = &t->a[mid];
		if (addr < a->rt)
			hi = mid;
		else if (addr >= a->rt + a->npages * LZ_PAGE)
			lo = mid + 1;
		else
			return a;
	}
	return NULL;
}

static void area_push(struct task *t, struct area a)
{
	if (t->na == t->capa) {
		t->capa = t->capa ? t->capa * 2 : 64;
		struct area *na = realloc(t->a, t->capa * sizeof *na);
		if (!na) {
			LERR("out of memory");
			die();
		}
		t->a = na;
	}
	t->a[t->na++] = a;
}

/* Splits area i at page k (0 < k < npages) into two areas. */
static void area_split(struct task *t, size_t i, uint64_t k)
{
	struct area *a = &t->a[i];
	struct area b = {a->rt + k * LZ_PAGE, a->img + k * LZ_PAGE, a->npages - k, a->off < 0 ? -1 : a->off + (int64_t)(k * LZ_PAGE),
			 bm_alloc(a->npages - k, false), bm_alloc(a->npages - k, false), 0, 0};
	for (uint64_t j = 0; j < b.npages; j++) {
		if (bt(a->miss, k + j))
			bs(b.miss, j), b.nmiss++;
		if (bt(a->infl, k + j))
			bs(b.infl, j), b.ninfl++;
	}
	a->npages = k;
	a->nmiss -= b.nmiss;
	a->ninfl -= b.ninfl;
	area_push(t, b); /* may move t->a */
	memmove(&t->a[i + 2], &t->a[i + 1], (t->na - i - 2) * sizeof *t->a);
	t->a[i + 1] = b;
}

static int cmp_area(const void *x, const void *y)
{
	const struct area *a = x, *b = y;
	return a->rt < b->rt ? -1 : a->rt > b->rt;
}

static void task_add_pf(struct task *t, uint64_t addr)
{
	for (size_t i = 0; i < t->npf; i++)
		if (t->pf[i] == addr)
			return;
	if (t->npf == t->cappf) {
		t->cappf = t->cappf ? t->cappf * 2 : 16;
		uint64_t *n = realloc(t->pf, t->cappf * sizeof *n);
		if (!n) {
			LERR("out of memory");
			die();
		}
		t->pf = n;
	}
	t->pf[t->npf++] = addr;
}

static void epoll_add(int fd, uint32_t events, struct evsrc *ev)
{
	struct epoll_event e = {.events = events, .data.ptr = ev};
	if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
		LERR("epoll_ctl add %d: %s", fd, strerror(errno));
		die();
	}
}

static struct task *task_new(int pid, int uffd, struct lz_image *img)
{
	struct task *t = calloc(1, sizeof *t);
	if (!t) {
		LERR("out of memory");
		die();
	}
	t->pid = pid;
	t->uffd = uffd;
	t->img = img;
	t->ev = (struct evsrc){EV_UFFD, t};
	if (g.ntasks == g.captasks) {
		g.captasks = g.captasks ? g.captasks * 2 : 8;
		struct task **n = realloc(g.tasks, g.captasks * sizeof *n);
		if (!n) {
			LERR("out of memory");
			die();
		}
		g.tasks = n;
	}
	t->id = (int)g.ntasks;
	g.tasks[g.ntasks++] = t;
	fcntl(uffd, F_SETFL, fcntl(uffd, F_GETFL) | O_NONBLOCK);
	fcntl(uffd, F_SETFD, FD_CLOEXEC);
	epoll_add(uffd, EPOLLIN, &t->ev);
	return t;
}

static void task_exited(struct task *t, const char *why)
{
	if (t->exited)
		return;
	LINFO("task %d (uffd %d) is gone (%s): %llu pages it no longer needs", t->pid, t->uffd, why,
	      (unsigned long long)t->nmiss);
	epoll_ctl(g.epfd, EPOLL_CTL_DEL, t->uffd, NULL);
	close(t->uffd);
	t->exited = 1;
	t->nmiss = t->ninfl = 0;
	t->npf = 0;
}

/* ---- userfaultfd operations ---- */
enum { CP_OK = 0, CP_AGAIN = 1, CP_GONE = 2 };

/* Copies pages [s, s+n) of area a from src. Pages already present (EEXIST) are left alone: the kernel never
 * overwrites a present page, so a page the task wrote itself can't be replaced by stale data. */
static int copy_run(struct task *t, struct area *a, uint64_t s, uint64_t n, const unsigned char *src, uint64_t *copied)
{
	while (n) {
		struct uffdio_copy c = {.dst = a->rt + s * LZ_PAGE, .src = (uint64_t)(uintptr_t)src, .len = n * LZ_PAGE, .mode = 0};
		int r = ioctl(t->uffd, UFFDIO_COPY, &c);
		if (!r) {
			mark_done(t, a, s, n);
			*copied += n;
			return CP_OK;
		}
		int e = errno;
		if (c.copy > 0) { /* partial: retry the rest, which tells why it stopped */
			uint64_t k = (uint64_t)c.copy / LZ_PAGE;
			mark_done(t, a, s, k);
			*copied += k;
			s += k, n -= k, src += k * LZ_PAGE;
			continue;
		}
		if (e == EEXIST || c.copy == -EEXIST) {
			struct uffdio_range w = {a->rt + s * LZ_PAGE, LZ_PAGE};
			ioctl(t->uffd, UFFDIO_WAKE, &w);
			mark_done(t, a, s, 1);
			t->eexist++;
			s++, n--, src += LZ_PAGE;
			continue;
		}
		if (e == ENOENT) { /* the range went away (unmap/remove event still queued) */
			LDBG("copy %d at %llx: ENOENT", t->pid, (unsigned long long)(a->rt + s * LZ_PAGE));
			mark_done(t, a, s, 1);
			s++, n--, src += LZ_PAGE;
			continue;
		}
		if (e == EAGAIN) /* mm changing (fork, mremap, madvise): read the event first */
			return CP_AGAIN;
		if (e == ESRCH || e == ENOSPC) {
			task_exited(t, "copy: ESRCH");
			return CP_GONE;
		}
		LERR("UFFDIO_COPY pid %d at %llx (%llu pages): %s", t->pid, (unsigned long long)(a->rt + s * LZ_PAGE),
		     (unsigned long long)n, strerror(e));
		die();
	}
	return CP_OK;
}

static void zero_page(struct task *t, uint64_t addr)
{
	struct uffdio_zeropage z = {.range = {addr, LZ_PAGE}, .mode = 0};
	if (!ioctl(t->uffd, UFFDIO_ZEROPAGE, &z)) {
		t->zeropages++;
		return;
	}
	int e = errno;
	if (e == EEXIST || z.zeropage == -EEXIST) {
		struct uffdio_range w = {addr, LZ_PAGE};
		ioctl(t->uffd, UFFDIO_WAKE, &w);
	} else if (e == EAGAIN) {
		task_add_pf(t, addr);
		g.pf_retry = true;
	} else if (e == ESRCH || e == ENOSPC) {
		task_exited(t, "zeropage: ESRCH");
	} else if (e != ENOENT) {
		LERR("UFFDIO_ZEROPAGE pid %d at %llx: %s", t->pid, (unsigned long long)addr, strerror(e));
		die();
	}
}

/* ---- page server ---- */
static void ps_out(const void *p, size_t n)
{
	if (g.olen + n > g.ocap) {
		g.ocap = (g.olen + n) * 2;
		unsigned char *nb = realloc(g.ob, g.ocap);
		if (!nb) {
			LERR("out of memory");
			die();
		}
		g.ob = nb;
	}
	memcpy(g.ob + g.olen, p, n);
	g.olen += n;
}

static void ps_flush(void)
{
	while (g.olen) {
		ssize_t w = send(g.ps, g.ob, g.olen, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			LERR("page server: send: %s", strerror(errno));
			die();
		}
		memmove(g.ob, g.ob + w, g.olen - (size_t)w);
		g.olen -= (size_t)w;
	}
	bool want = g.olen > 0;
	if (want != g.want_out) {
		struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0), .data.ptr = &g.ps_ev};
		epoll_ctl(g.epfd, EPOLL_CTL_MOD, g.ps, &e);
		g.want_out = want;
	}
}

static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); } /* x86_64: little endian */
static uint64_t get64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static void ps_connect(void)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
	int r = getaddrinfo(g.address, g.port, &hints, &ai);
	if (r) {
		LERR("page server %s:%s: %s", g.address, g.port, gai_strerror(r));
		die();
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		LERR("Can't connect to page server %s:%s: %s", g.address, g.port, strerror(errno));
		die();
	}
	freeaddrinfo(ai);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	g.ps = fd;
	g.ps_ev = (struct evsrc){EV_PS, NULL};
	epoll_add(fd, EPOLLIN | EPOLLRDHUP, &g.ps_ev);
	g.dbuf = mmap(NULL, MAX_REQ_PAGES * LZ_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g.dbuf == MAP_FAILED) {
		LERR("mmap: %s", strerror(errno));
		die();
	}
	LINFO("connected to page server %s:%s", g.address, g.port);
}

static void ps_get(struct task *t, struct area *a, uint64_t s, uint64_t n, int bg)
{
	if (g.qlen == g.qcap) {
		size_t nc = g.qcap ? g.qcap * 2 : 256;
		struct req *nq = malloc(nc * sizeof *nq);
		if (!nq) {
			LERR("out of memory");
			die();
		}
		for (size_t i = 0; i < g.qlen; i++)
			nq[i] = g.q[(g.qhead + i) % g.qcap];
		free(g.q);
		g.q = nq, g.qcap = nc, g.qhead = 0;
	}
	struct req r = {t, a->img + s * LZ_PAGE, n, bg};
	g.q[(g.qhead + g.qlen++) % g.qcap] = r;
	g.qbg += (size_t)bg;
	mark_infl(t, a, s, n);
	unsigned char h[PS_HDR] = {0};
	uint32_t cmd = PS_IOV_GET;
	memcpy(h, &cmd, 4);
	put64(h + 8, n);
	put64(h + 16, r.img);
	put64(h + 24, (uint64_t)t->pid);
	ps_out(h, sizeof h);
	g.requests++;
	LDBG("GET %d %llx %llu%s", t->pid, (unsigned long long)r.img, (unsigned long long)n, bg ? " bg" : "");
}

/* The answer to r: nr pages at data. Pages that went away meanwhile (unmap, remove, task exit) are skipped;
 * pages the answer is short of stay missing and are asked for again. */
static void ps_apply(const struct req *r, uint64_t nr, const unsigned char *data)
{
	struct task *t = r->t;
	uint64_t rs = r->img, re = r->img + r->n * LZ_PAGE;
	for (size_t i = 0; i < t->na && !t->exited; i++) {
		struct area *a = &t->a[i];
		uint64_t as = a->img, ae = a->img + a->npages * LZ_PAGE;
		if (ae <= rs || as >= re || !a->ninfl)
			continue;
		uint64_t s = (as > rs ? as : rs), e = (ae < re ? ae : re);
		uint64_t p0 = (s - as) / LZ_PAGE, np = (e - s) / LZ_PAGE, k0 = (s - rs) / LZ_PAGE;
		uint64_t j = 0;
		while (j < np) {
			if (!bt(a->infl, p0 + j)) {
				j++;
				continue;
			}
			uint64_t k = j;
			while (k < np && bt(a->infl, p0 + k) && k0 + k < nr)
				k++;
			if (k == j) { /* beyond the answer: still missing */
				unmark_infl(t, a, p0 + j, 1);
				g.pf_retry = true;
				j++;
				continue;
			}
			uint64_t got = 0;
			int cr = copy_run(t, a, p0 + j, k - j, data + (k0 + j) * LZ_PAGE, &got);
			if (cr == CP_GONE)
				return;
			t->bg_pages += r->bg ? got : 0;
			t->fault_pages += r->bg ? 0 : got;
			if (cr == CP_AGAIN) {
				unmark_infl(t, a, p0 + j, np - j);
				g.pf_retry = true;
				break;
			}
			j = k;
		}
	}
}

static void ps_fail_report(const char *why)
{
	LERR("page server %s:%s %s with %zu requests unanswered:", g.address, g.port, why, g.qlen);
	for (size_t i = 0; i < g.qlen && i < 16; i++) {
		struct req *r = &g.q[(g.qhead + i) % g.qcap];
		LERR("  pid %d vaddr %llx, %llu pages: not provided", r->t->pid, (unsigned long long)r->img,
		     (unsigned long long)r->n);
	}
	die();
}

static void ps_readable(void)
{
	for (;;) {
		ssize_t r;
		if (!g.in_data) {
			r = recv(g.ps, g.hdr + g.hgot, PS_HDR - g.hgot, MSG_DONTWAIT);
			if (r > 0 && (g.hgot += (size_t)r) == PS_HDR) {
				if (!g.qlen) {
					LERR("page server sent an answer nobody asked for");
					die();
				}
				struct req *q = &g.q[g.qhead];
				uint32_t cmd;
				memcpy(&cmd, g.hdr, 4);
				uint64_t nr = get64(g.hdr + 8), va = get64(g.hdr + 16), dst = get64(g.hdr + 24);
				if (nr == 0) {
					LERR("page server has no pages for pid %d at %llx (%llu asked): not zero-filling", q->t->pid,
					     (unsigned long long)q->img, (unsigned long long)q->n);
					die();
				}
				if ((cmd & 0xffff) != PS_IOV_ADD_F || nr > q->n || va != q->img || dst != (uint64_t)q->t->pid) {
					LERR("page server answer out of order: cmd %#x nr %llu vaddr %llx id %llu for GET pid %d %llx %llu",
					     cmd, (unsigned long long)nr, (unsigned long long)va, (unsigned long long)dst, q->t->pid,
					     (unsigned long long)q->img, (unsigned long long)q->n);
					die();
				}
				g.in_data = true;
				g.dnr = nr;
				g.dgot = 0;
			}
		} else {
			size_t need = (size_t)(g.dnr * LZ_PAGE);
			r = recv(g.ps, g.dbuf + g.dgot, need - g.dgot, MSG_DONTWAIT);
			if (r > 0 && (g.dgot += (size_t)r) == need) {
				struct req q = g.q[g.qhead];
				g.qhead = (g.qhead + 1) % g.qcap;
				g.qlen--;
				g.qbg -= (size_t)q.bg;
				g.pages_in += g.dnr;
				if (g.dnr < q.n)
					g.short_replies++;
				if (!q.t->exited)
					ps_apply(&q, g.dnr, g.dbuf);
				g.in_data = false;
				g.hgot = 0;
				if (!q.bg)
					g.pf_retry = true;
			}
		}
		if (r == 0)
			ps_fail_report("closed the connection");
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR)
				continue;
			LERR("page server: recv: %s", strerror(errno));
			ps_fail_report("failed");
		}
	}
}

/* ---- faults and events ---- */
static uint64_t fill_now(struct task *t, struct area *a, uint64_t s, uint64_t n, int bg)
{
	if (g.page_server) {
		ps_get(t, a, s, n, bg);
		return 0;
	}
	uint64_t got = 0;
	int r = copy_run(t, a, s, n, t->img->pages + a->off + (int64_t)(s * LZ_PAGE), &got);
	if (bg)
		t->bg_pages += got;
	else
		t->fault_pages += got;
	return r == CP_AGAIN ? 1 : 0;
}

static void handle_fault(struct task *t, uint64_t addr, bool counted)
{
	addr &= ~(LZ_PAGE - 1);
	struct area *a = find_rt(t, addr);
	if (!counted)
		t->faults++;
	if (!a) { /* not a lazy page: it was not there at dump time (criu/uffd.c handle_page_fault) */
		zero_page(t, addr);
		return;
	}
	uint64_t p = (addr - a->rt) / LZ_PAGE;
	if (!bt(a->miss, p)) { /* filled meanwhile; the copy woke the thread */
		struct uffdio_range w = {addr, LZ_PAGE};
		ioctl(t->uffd, UFFDIO_WAKE, &w);
		return;
	}
	if (bt(a->infl, p)) {
		task_add_pf(t, addr);
		return;
	}
	uint64_t ws = p & ~(g.window - 1), we = ws + g.window, s = p, e = p + 1;
	if (we > a->npages)
		we = a->npages;
	while (s > ws && avail(a, s - 1))
		s--;
	while (e < we && avail(a, e))
		e++;
	LDBG("#PF %d at %llx: %llu pages from %llx", t->pid, (unsigned long long)addr, (unsigned long long)(e - s),
	     (unsigned long long)(a->rt + s * LZ_PAGE));
	if (fill_now(t, a, s, e - s, 0) || g.page_server) {
		task_add_pf(t, addr);
		if (!g.page_server)
			g.pf_retry = true;
	}
}

static void retry_faults(void)
{
	g.pf_retry = false;
	for (size_t i = 0; i < g.ntasks; i++) {
		struct task *t = g.tasks[i];
		size_t n = t->npf;
		uint64_t *pf = t->pf;
		if (!n || t->exited)
			continue;
		t->pf = NULL, t->npf = t->cappf = 0;
		for (size_t k = 0; k < n && !t->exited; k++) {
			struct area *a = find_rt(t, pf[k]);
			uint64_t p = a ? (pf[k] - a->rt) / LZ_PAGE : 0;
			if (a && !bt(a->miss, p))
				continue;
			if (a && bt(a->infl, p)) {
				task_add_pf(t, pf[k]);
				continue;
			}
			handle_fault(t, pf[k], true);
		}
		free(pf);
	}
}

static void drop_range(struct task *t, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < t->na; i++) {
		struct area *a = &t->a[i];
		uint64_t as = a->rt, ae = a->rt + a->npages * LZ_PAGE;
		if (ae <= start || as >= end)
			continue;
		uint64_t s = as > start ? as : start, e = ae < end ? ae : end;
		mark_done(t, a, (s - as) / LZ_PAGE, (e - s) / LZ_PAGE);
	}
	for (size_t k = 0; k < t->npf;)
		if (t->pf[k] >= start && t->pf[k] < end)
			t->pf[k] = t->pf[--t->npf];
		else
			k++;
}

static void handle_remap(struct task *t, uint64_t from, uint64_t to, uint64_t len)
{
	uint64_t end = from + len;
	LINFO("REMAP %d: %llx -> %llx (%llu)", t->pid, (unsigned long long)from, (unsigned long long)to, (unsigned long long)len);
	for (size_t i = 0; i < t->na; i++) {
		struct area *a = &t->a[i];
		uint64_t as = a->rt, ae = a->rt + a->npages * LZ_PAGE;
		if (ae <= from || as >= end)
			continue;
		if (as < from) {
			area_split(t, i, (from - as) / LZ_PAGE);
			continue; /* the next loop step sees the part that starts at from */
		}
		if (ae > end)
			area_split(t, i, (end - as) / LZ_PAGE);
		t->a[i].rt += to - from;
	}
	qsort(t->a, t->na, sizeof *t->a, cmp_area);
	for (size_t i = 1; i < t->na; i++)
		if (t->a[i - 1].rt + t->a[i - 1].npages * LZ_PAGE > t->a[i].rt) {
			LERR("REMAP %d: lazy ranges overlap after the move", t->pid);
			die();
		}
	for (size_t k = 0; k < t->npf; k++)
		if (t->pf[k] >= from && t->pf[k] < end)
			t->pf[k] += to - from;
	t->cur = 0, t->curpg = 0;
}

static void handle_fork(struct task *parent, int ufd)
{
	struct task *c = task_new(parent->pid, ufd, parent->img);
	/* The child has what the parent had at fork time: pages still missing, and pages in flight that will be
	 * copied into the parent only (criu/uffd.c copy_iovs merges the in-flight requests back). */
	for (size_t i = 0; i < parent->na; i++) {
		struct area *a = &parent->a[i], b = *a;
		b.miss = bm_alloc(a->npages, false);
		b.infl = bm_alloc(a->npages, false);
		b.nmiss = 0, b.ninfl = 0;
		for (size_t w = 0; w < (a->npages + 63) / 64; w++) {
			b.miss[w] = a->miss[w] | a->infl[w];
			b.nmiss += (uint64_t)__builtin_popcountll(b.miss[w]);
		}
		area_push(c, b);
		c->nmiss += b.nmiss;
	}
	LINFO("FORK: task %d forked (uffd %d -> %d), the child misses %llu pages", parent->pid, parent->uffd, ufd,
	      (unsigned long long)c->nmiss);
}

static void uffd_readable(struct task *t)
{
	struct uffd_msg m[32];
	while (!t->exited) {
		ssize_t r = read(t->uffd, m, sizeof m);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			LERR("read uffd %d of %d: %s", t->uffd, t->pid, strerror(errno));
			die();
		}
		if (r == 0) {
			task_exited(t, "EOF");
			return;
		}
		for (size_t i = 0; i < (size_t)r / sizeof m[0] && !t->exited; i++) {
			switch (m[i].event) {
			case UFFD_EVENT_PAGEFAULT:
				handle_fault(t, m[i].arg.pagefault.address, false);
				break;
			case UFFD_EVENT_FORK:
				handle_fork(t, (int)m[i].arg.fork.ufd);
				break;
			case UFFD_EVENT_REMAP:
				handle_remap(t, m[i].arg.remap.from, m[i].arg.remap.to, m[i].arg.remap.len);
				break;
			case UFFD_EVENT_REMOVE:
			case UFFD_EVENT_UNMAP: {
				uint64_t s = m[i].arg.remove.start, e = m[i].arg.remove.end;
				LINFO("%s %d: %llx-%llx", m[i].event == UFFD_EVENT_REMOVE ? "REMOVE" : "UNMAP", t->pid,
				      (unsigned long long)s, (unsigned long long)e);
				/* REMOVE keeps the VMA: unregister so later faults there get the kernel's zero pages. */
				struct uffdio_range ur = {s, e - s};
				if (m[i].event == UFFD_EVENT_REMOVE && ioctl(t->uffd, UFFDIO_UNREGISTER, &ur)) {
					if (errno == ENOMEM) {
						task_exited(t, "unregister: ENOMEM");
						break;
					}
					LERR("UFFDIO_UNREGISTER %llx-%llx: %s", (unsigned long long)s, (unsigned long long)e,
					     strerror(errno));
					die();
				}
				drop_range(t, s, e);
				break;
			}
			default:
				LERR("unexpected uffd event %u", m[i].event);
				die();
			}
		}
	}
}

/* ---- the restore's socket ---- */
static int recv_fd(int sk)
{
	char c;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&c, 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	ssize_t r = recvmsg(sk, &mh, MSG_CMSG_CLOEXEC);
	if (r <= 0)
		return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof fd);
	return fd;
}

static void add_task(int pid, int uffd)
{
	struct lz_image *img = calloc(1, sizeof *img);
	if (!img || lz_image_load(g.imgdir, pid, !g.page_server, img))
		die();
	if (!g.t_first)
		g.t_first = lz_now_us();
	struct task *t = task_new(pid, uffd, img);
	for (size_t i = 0; i < img->nr; i++) {
		struct lz_lazy_range *r = &img->r[i];
		if (!g.page_server && (r->file_off < 0 || (uint64_t)r->file_off + r->npages * LZ_PAGE > img->pages_len)) {
			LERR("pid %d: lazy pages at %llx (%llu) are not in pages-%u.img and there is no page server", pid,
			     (unsigned long long)r->vaddr, (unsigned long long)r->npages, img->pages_id);
			die();
		}
		area_push(t, (struct area){r->vaddr, r->vaddr, r->npages, r->file_off, bm_alloc(r->npages, true),
					   bm_alloc(r->npages, false), r->npages, 0});
		t->nmiss += r->npages;
	}
	LINFO("Received PID: %d, uffd: %d, %llu lazy pages", pid, uffd, (unsigned long long)t->nmiss);
	if (g.page_server && g.ps < 0)
		ps_connect();
}

static void lazy_sk_readable(void)
{
	for (;;) {
		int32_t v;
		ssize_t r = recv(g.lazy_sk, &v, sizeof v, MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r == 0) {
			if (!g.restore_finished) {
				LERR("Restorer unexpectedly closed the connection");
				die();
			}
			epoll_ctl(g.epfd, EPOLL_CTL_DEL, g.lazy_sk, NULL);
			close(g.lazy_sk);
			g.lazy_sk = -1;
			return;
		}
		if (r > 0 && r < (ssize_t)sizeof v) {
			ssize_t r2 = recv(g.lazy_sk, (char *)&v + r, sizeof v - (size_t)r, MSG_WAITALL);
			r = r2 < 0 ? r2 : r + r2;
		}
		if (r != (ssize_t)sizeof v) {
			LERR("lazy-pages socket: recv: %s", r < 0 ? strerror(errno) : "short read");
			die();
		}
		if ((uint32_t)v == RESTORE_FINISHED) {
			g.restore_finished = true;
			g.t_rstf = lz_now_us();
			LINFO("restore finished (%zu tasks)", g.ntasks);
			continue;
		}
		if (v < 0) { /* zombie: nothing to serve (criu/uffd.c lazy_pages_setup_zombie) */
			LINFO("Zombie PID: %d", v);
			continue;
		}
		int fd = recv_fd(g.lazy_sk);
		if (fd < 0) {
			LERR("recv_fd for pid %d failed", v);
			die();
		}
		add_task(v, fd);
	}
}

/* ---- background ---- */
static bool pick_bg(struct task **tp, struct area **ap, uint64_t *sp, uint64_t *np, uint64_t maxn)
{
	for (size_t k = 0; k < g.ntasks; k++) {
		struct task *t = g.tasks[(g.rr + k) % g.ntasks];
		if (t->exited || t->nmiss == t->ninfl)
			continue;
		for (size_t pass = 0; pass <= t->na; pass++) {
			if (t->cur >= t->na)
				t->cur = 0, t->curpg = 0;
			struct area *a = &t->a[t->cur];
			uint64_t s = a->nmiss > a->ninfl ? next_avail(a, t->curpg) : a->npages;
			if (s == a->npages) {
				t->cur++, t->curpg = 0;
				continue;
			}
			uint64_t e = s + 1;
			while (e < a->npages && e - s < maxn && avail(a, e))
				e++;
			t->curpg = e;
			*tp = t, *ap = a, *sp = s, *np = e - s;
			g.rr = (g.rr + k + 1) % g.ntasks;
			return true;
		}
		/* a page before the cursor of the first area: rescan from the start next time */
		t->cur = 0, t->curpg = 0;
	}
	return false;
}

static bool bg_work(void)
{
	for (size_t i = 0; i < g.ntasks; i++)
		if (!g.tasks[i]->exited && g.tasks[i]->nmiss > g.tasks[i]->ninfl)
			return true;
	return false;
}

static void background(void)
{
	struct task *t;
	struct area *a;
	uint64_t s, n;
	if (g.page_server) {
		while (g.qbg < g.depth && pick_bg(&t, &a, &s, &n, g.batch))
			ps_get(t, a, s, n, 1);
		return;
	}
	if (pick_bg(&t, &a, &s, &n, g.batch) && fill_now(t, a, s, n, 1))
		g.pf_retry = true;
}

static bool all_done(void)
{
	if (!g.restore_finished || g.qlen)
		return false;
	for (size_t i = 0; i < g.ntasks; i++)
		if (!g.tasks[i]->exited && g.tasks[i]->nmiss)
			return false;
	return true;
}

static void finish(void)
{
	uint64_t now = lz_now_us(), faults = 0, fp = 0, bp = 0, ee = 0, zp = 0, total = 0;
	for (size_t i = 0; i < g.ntasks; i++) {
		struct task *t = g.tasks[i];
		faults += t->faults, fp += t->fault_pages, bp += t->bg_pages, ee += t->eexist, zp += t->zeropages;
		total += t->img->lazy_pages;
		lz_log(3, "task %d (uffd %d%s): faults %llu, pages by fault %llu, in background %llu, already there %llu, zero %llu",
		       t->pid, t->uffd, t->exited ? ", exited" : "", (unsigned long long)t->faults,
		       (unsigned long long)t->fault_pages, (unsigned long long)t->bg_pages, (unsigned long long)t->eexist,
		       (unsigned long long)t->zeropages);
		if (!t->exited)
			close(t->uffd);
	}
	lz_log(0, "ferry-lazyd: filled %zu tasks, %llu pages copied (%llu by fault, %llu background, %llu already there), "
		  "%llu faults, %llu requests (%llu short), %.3f s since the first uffd, %.3f s since restore finished",
	       g.ntasks, (unsigned long long)(fp + bp), (unsigned long long)fp, (unsigned long long)bp, (unsigned long long)ee,
	       (unsigned long long)faults, (unsigned long long)g.requests, (unsigned long long)g.short_replies,
	       g.t_first ? (double)(now - g.t_first) / 1e6 : 0.0, g.t_rstf ? (double)(now - g.t_rstf) / 1e6 : 0.0);
	(void)total, (void)zp;
	if (g.page_server) {
		if (g.ps < 0)
			ps_connect();
		/* CLOSE, then the int32 status (criu/page-xfer.c disconnect_from_page_server). CRIU's own server corks its
		 * socket, so the status may take ~200 ms; its value does not change our exit code, as in CRIU. */
		unsigned char h[PS_HDR] = {0};
		uint32_t cmd = PS_IOV_CLOSE;
		memcpy(h, &cmd, 4);
		ps_out(h, sizeof h);
		int fl = fcntl(g.ps, F_GETFL);
		fcntl(g.ps, F_SETFL, fl & ~O_NONBLOCK);
		while (g.olen) {
			ssize_t w = send(g.ps, g.ob, g.olen, MSG_NOSIGNAL);
			if (w <= 0) {
				LWARN("page server: CLOSE not sent: %s", strerror(errno));
				break;
			}
			memmove(g.ob, g.ob + w, g.olen - (size_t)w);
			g.olen -= (size_t)w;
		}
		int32_t st = -1;
		size_t got = 0;
		struct pollfd pfd = {g.ps, POLLIN, 0};
		while (got < sizeof st && poll(&pfd, 1, 10000) > 0) {
			ssize_t r = recv(g.ps, (char *)&st + got, sizeof st - got, 0);
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		if (got == sizeof st)
			LINFO("page server CLOSE status %d", st);
		else
			LWARN("page server closed without a CLOSE status");
		close(g.ps);
	}
	exit(0);
}

static void usage(void)
{
	fprintf(stderr, "usage: ferry-lazyd lazy-pages [--page-server --address A --port P] --images-dir D --work-dir W "
			"[-o LOG] [-vN] [--status-fd FD] [--setsid]\n");
	exit(2);
}

static uint64_t env_u64(const char *name, uint64_t def, uint64_t lo, uint64_t hi)
{
	const char *s = getenv(name);
	if (!s || !*s)
		return def;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end || v < lo || v > hi) {
		fprintf(stderr, "ferry-lazyd: %s=%s: expected %llu..%llu\n", name, s, (unsigned long long)lo,
			(unsigned long long)hi);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"page-server", 0, 0, 'S'}, {"address", 1, 0, 'a'}, {"port", 1, 0, 'p'}, {"images-dir", 1, 0, 'D'},
		{"work-dir", 1, 0, 'W'},    {"log-file", 1, 0, 'o'}, {"status-fd", 1, 0, 's'}, {"verbosity", 2, 0, 'v'},
		{"setsid", 0, 0, 'L'},      {"help", 0, 0, 'h'},        {0, 0, 0, 0}};
	const char *imgs = NULL, *work = NULL, *logf = NULL;
	int status_fd = -1, o;
	bool own_session = false;
	while ((o = getopt_long(argc, argv, "D:W:o:v::", opts, NULL)) != -1) {
		switch (o) {
		case 'S': g.page_server = true; break;
		case 'a': g.address = optarg; break;
		case 'p': g.port = optarg; break;
		case 'D': imgs = optarg; break;
		case 'W': work = optarg; break;
		case 'o': logf = optarg; break;
		case 's': status_fd = atoi(optarg); break;
		case 'L': own_session = true; break;
		case 'v':
			if (optarg)
				lz_loglevel = *optarg == 'v' ? 4 : atoi(optarg);
			else
				lz_loglevel = 4;
			break;
		default: usage();
		}
	}
	if (optind != argc - 1 || strcmp(argv[optind], "lazy-pages") || !imgs)
		usage();
	if (g.page_server && (!g.port || !g.address)) {
		if (!g.port)
			usage();
		if (!g.address)
			g.address = "127.0.0.1";
	}
	g.batch = env_u64("FERRY_LAZYD_BATCH_KIB", 1024, 4, 4096) / 4;
	g.depth = env_u64("FERRY_LAZYD_DEPTH", 2, 1, 64);
	uint64_t w = env_u64("FERRY_LAZYD_WINDOW_KIB", 64, 4, 4096) / 4, p2 = 1;
	while (p2 * 2 <= w)
		p2 *= 2;
	g.window = p2;
	signal(SIGPIPE, SIG_IGN);

	g.imgdir = open(imgs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (g.imgdir < 0) {
		fprintf(stderr, "ferry-lazyd: images dir %s: %s\n", imgs, strerror(errno));
		return 1;
	}
	/* The restored task depends on this process until the last page is in: a signal to the group of the runc
	 * that started it must not reach it. (ferry-runc used to exec setsid(1) for this, inside the freeze.) */
	if (own_session && setsid() < 0 && errno != EPERM) {
		fprintf(stderr, "ferry-lazyd: setsid: %s\n", strerror(errno));
		return 1;
	}
	/* Like CRIU: the socket and a relative log live in the work dir (which defaults to the images dir). Unlike
	 * CRIU, the work dir is made here if missing, which saves the caller a mkdir(1) inside the freeze. */
	if (work && mkdir(work, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "ferry-lazyd: work dir %s: %s\n", work, strerror(errno));
		return 1;
	}
	if (chdir(work ? work : imgs) < 0) {
		fprintf(stderr, "ferry-lazyd: work dir %s: %s\n", work ? work : imgs, strerror(errno));
		return 1;
	}
	lz_log_open(logf);
	lz_log(0, "ferry-lazyd: images %s, work %s, %s%s%s%s, batch %llu KiB, depth %llu, fault window %llu KiB", imgs,
	       work ? work : imgs, g.page_server ? "page server " : "local pages files", g.page_server ? g.address : "",
	       g.page_server ? ":" : "", g.page_server ? g.port : "", (unsigned long long)g.batch * 4,
	       (unsigned long long)g.depth, (unsigned long long)g.window * 4);

	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	strcpy(sun.sun_path, LAZY_SOCK_NAME);
	g.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unlink(LAZY_SOCK_NAME);
	if (g.listen_fd < 0 || bind(g.listen_fd, (struct sockaddr *)&sun, sizeof sun) < 0 || listen(g.listen_fd, 10) < 0) {
		LERR("can't listen on %s: %s", LAZY_SOCK_NAME, strerror(errno));
		return 1;
	}
	g.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (g.epfd < 0) {
		LERR("epoll_create1: %s", strerror(errno));
		return 1;
	}
	g.listen_ev = (struct evsrc){EV_LISTEN, NULL};
	g.lazy_ev = (struct evsrc){EV_LAZY_SK, NULL};
	epoll_add(g.listen_fd, EPOLLIN, &g.listen_ev);
	LINFO("Waiting for incoming connections on %s", LAZY_SOCK_NAME);
	if (status_fd >= 0) {
		char z = 0;
		if (write(status_fd, &z, 1) != 1)
			LWARN("status-fd %d: %s", status_fd, strerror(errno));
		close(status_fd);
	}

	for (;;) {
		struct epoll_event ev[64];
		bool bg = g.restore_finished && !g.page_server && bg_work();
		int n = epoll_wait(g.epfd, ev, 64, bg || g.pf_retry ? 0 : -1);
		if (n < 0 && errno != EINTR) {
			LERR("epoll_wait: %s", strerror(errno));
			die();
		}
		/* Faults and mm events first, then the restore's socket, then the page server. */
		for (int pass = 0; pass < 2; pass++)
			for (int i = 0; i < n; i++) {
				struct evsrc *s = ev[i].data.ptr;
				if ((s->kind == EV_UFFD) != (pass == 0))
					continue;
				switch (s->kind) {
				case EV_UFFD:
					uffd_readable(s->p);
					break;
				case EV_LISTEN: {
					int c = accept4(g.listen_fd, NULL, NULL, SOCK_CLOEXEC);
					if (c < 0)
						break;
					if (g.lazy_sk >= 0) { /* criu/uffd.c accepts one restore */
						LWARN("second connection on %s refused", LAZY_SOCK_NAME);
						close(c);
						break;
					}
					g.lazy_sk = c;
					epoll_add(c, EPOLLIN | EPOLLRDHUP, &g.lazy_ev);
					epoll_ctl(g.epfd, EPOLL_CTL_DEL, g.listen_fd, NULL);
					close(g.listen_fd);
					g.listen_fd = -1;
					break;
				}
				case EV_LAZY_SK:
					if (g.lazy_sk >= 0)
						lazy_sk_readable();
					break;
				case EV_PS:
					if (ev[i].events & EPOLLOUT)
						ps_flush();
					if (ev[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
						ps_readable();
					break;
				}
			}
		if (g.pf_retry)
			retry_faults();
		/* Background only once the restore is done: before that the restorer is still moving VMAs into place. */
		if (g.restore_finished)
			background();
		if (g.page_server && g.ps >= 0)
			ps_flush();
		if (all_done())
			finish();
	}
}
