/*
 * ferry-dirtytrack: dirty-page tracking helper for Ferry's pre-copy.
 *
 * Protocol (docs/dirtytrack.md): one JSON request per line on stdin, one JSON
 * reply per line on stdout, optionally followed by exactly "bytes" raw bytes.
 * Diagnostics go to stderr.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"
#include "inject.h"
#include "json.h"
#include "readmem.h"
#include "track.h"
#include "uapi.h"

#define DT_VERSION "1"
#define MAX_LINE (4u << 20)
#define MAX_NODES 262144
#define MAX_PIDS 65536

static struct dt_mm **mms;
static size_t nmms, capmms;

static struct {
	uint64_t requests, errors, attaches, scans, reads, read_bytes, read_missing_pages;
	uint64_t last_scan_us, last_scan_pages;
	uint64_t started_us;
} stats;

static struct sbuf reply, payload;
static struct jarena arena;
static char *readbuf; /* DT_READ_MAX_BYTES, mapped on first use */

/* ------------------------------------------------------------------ output */

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pf = {.fd = fd, .events = POLLOUT};
				poll(&pf, 1, -1);
				continue;
			}
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static void release_all(void);

static void send_reply(const void *data, size_t len)
{
	sb_putc(&reply, '\n');
	if (reply.oom) {
		static const char oom[] =
			"{\"ok\":false,\"code\":\"E_INTERNAL\",\"message\":\"out of memory building reply\",\"errno\":12}\n";
		if (write_all(1, oom, sizeof oom - 1) < 0)
			goto dead;
		return;
	}
	if (write_all(1, reply.p, reply.len) < 0)
		goto dead;
	if (len && write_all(1, data, len) < 0)
		goto dead;
	return;
dead:
	/* The agent is gone: nothing left to report to. */
	dt_log("stdout write failed (%s); releasing and exiting", strerror(errno));
	release_all();
	_exit(0);
}

static void begin_ok(const struct jval *id)
{
	sb_reset(&reply);
	sb_puts(&reply, "{\"ok\":true");
	if (id) {
		int64_t v;
		if (json_int_range(id, INT64_MIN + 1, INT64_MAX, &v) == 0)
			sb_printf(&reply, ",\"id\":%lld", (long long)v);
	}
}

static void send_error(const struct jval *id, const char *code, int err, const char *msg)
{
	stats.errors++;
	sb_reset(&reply);
	sb_puts(&reply, "{\"ok\":false");
	if (id) {
		int64_t v;
		if (json_int_range(id, INT64_MIN + 1, INT64_MAX, &v) == 0)
			sb_printf(&reply, ",\"id\":%lld", (long long)v);
	}
	sb_puts(&reply, ",\"code\":");
	sb_json_str(&reply, code);
	sb_puts(&reply, ",\"message\":");
	sb_json_str(&reply, msg);
	sb_printf(&reply, ",\"errno\":%d}", err);
	send_reply(NULL, 0);
}

static void send_err(const struct jval *id, const struct dt_err *e)
{
	send_error(id, e->code ? e->code : E_INTERNAL, e->err, e->msg);
}

/* ------------------------------------------------------------------ mm list */

static int mms_add(struct dt_mm *mm)
{
	if (nmms == capmms) {
		size_t nc = capmms ? capmms * 2 : 16;
		struct dt_mm **nv = realloc(mms, nc * sizeof *nv);
		if (!nv)
			return -1;
		mms = nv;
		capmms = nc;
	}
	mms[nmms++] = mm;
	return 0;
}

static void mm_free(struct dt_mm *mm)
{
	dt_mm_close(mm);
	free(mm);
}

static void mms_remove(size_t i)
{
	mm_free(mms[i]);
	memmove(&mms[i], &mms[i + 1], (nmms - i - 1) * sizeof mms[0]);
	nmms--;
}

static struct dt_mm *mm_by_pid(pid_t pid)
{
	for (size_t i = 0; i < nmms; i++) {
		if (mms[i]->pid == pid)
			return mms[i];
		for (size_t k = 0; k < mms[i]->npids; k++)
			if (mms[i]->pids[k] == pid)
				return mms[i];
	}
	return NULL;
}

static int mm_add_pid(struct dt_mm *mm, pid_t pid)
{
	for (size_t k = 0; k < mm->npids; k++)
		if (mm->pids[k] == pid)
			return 0;
	pid_t *np = realloc(mm->pids, (mm->npids + 1) * sizeof *np);
	if (!np)
		return -1;
	mm->pids = np;
	mm->pids[mm->npids++] = pid;
	return 0;
}

static void release_all(void)
{
	while (nmms)
		mms_remove(nmms - 1);
}

static void put_pids(struct sbuf *b, const struct dt_mm *mm)
{
	sb_putc(b, '[');
	for (size_t k = 0; k < mm->npids; k++)
		sb_printf(b, "%s%d", k ? "," : "", (int)mm->pids[k]);
	sb_putc(b, ']');
}

static void put_mm_info(struct sbuf *b, const struct dt_mm *mm)
{
	sb_printf(b, "{\"pid\":%d,\"pids\":", (int)mm->pid);
	put_pids(b, mm);
	sb_printf(b, ",\"vmas\":%zu,\"pages\":%llu,\"untrackable\":%zu", mm->nvmas - mm->untrackable,
		  (unsigned long long)mm->tracked_pages, mm->untrackable);
}

/* ------------------------------------------------------------------ attach */

/* A zombie leader (it called pthread_exit) whose other threads still run. */
static int group_has_live_threads(pid_t tgid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", (int)tgid);
	DIR *d = opendir(path);
	if (!d)
		return 0;
	int live = 0;
	struct dirent *de;
	while (!live && (de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		pid_t tid = (pid_t)strtol(de->d_name, NULL, 10), tg;
		char st;
		live = (tid != tgid && dt_proc_status(tid, &tg, &st) == 0 && st != 'Z' && st != 'X');
	}
	closedir(d);
	return live;
}

static void cmd_attach(const struct jval *root, const struct jval *id)
{
	const struct jval *pa = json_get(root, "pids");
	if (!pa || pa->t != J_ARR || pa->u.c.count == 0 || pa->u.c.count > MAX_PIDS) {
		send_error(id, E_BAD_REQUEST, EINVAL, "attach: \"pids\" must be a non-empty array of process ids");
		return;
	}
	size_t np = pa->u.c.count;
	pid_t *pids = calloc(np, sizeof *pids);
	struct dt_mm **fresh = calloc(np, sizeof *fresh);
	struct dt_mm **touched = calloc(np, sizeof *touched);
	pid_t *exited = calloc(np, sizeof *exited);
	size_t nfresh = 0, ntouched = 0, nexited = 0;
	struct dt_err e = {0};
	if (!pids || !fresh || !touched || !exited) {
		send_error(id, E_INTERNAL, ENOMEM, "out of memory");
		goto out;
	}
	size_t i = 0;
	for (const struct jval *v = pa->u.c.first; v; v = v->next, i++) {
		int64_t x;
		if (json_int_range(v, 1, 0x7fffffff, &x) < 0) {
			send_error(id, E_BAD_REQUEST, EINVAL, "attach: every pid must be a positive integer");
			goto out;
		}
		pids[i] = (pid_t)x;
	}

	for (i = 0; i < np; i++) {
		pid_t pid = pids[i], tgid;
		char state;
		struct dt_mm *mm = mm_by_pid(pid);
		if (!mm) {
			int r = dt_proc_status(pid, &tgid, &state);
			if (r == -ENOENT || r == -ESRCH) {
				dt_seterr(&e, E_PTRACE, ESRCH, "no such process: %d", (int)pid);
				goto fail;
			}
			if (r < 0) {
				dt_seterr(&e, E_PTRACE, -r, "reading /proc/%d/status: %s", (int)pid, strerror(-r));
				goto fail;
			}
			if ((state == 'Z' || state == 'X') && !(pid == tgid && group_has_live_threads(pid))) {
				exited[nexited++] = pid;
				continue;
			}
			mm = mm_by_pid(tgid);
			for (size_t k = 0; !mm && k < nfresh; k++)
				if (fresh[k]->pid == tgid)
					mm = fresh[k];
			/* CLONE_VM without CLONE_THREAD (vfork child, some runtimes):
			 * another thread group on the same mm. */
			for (size_t k = 0; !mm && k < nmms; k++)
				if (syscall(SYS_kcmp, pid, mms[k]->pid, KCMP_VM, 0, 0) == 0)
					mm = mms[k];
			for (size_t k = 0; !mm && k < nfresh; k++)
				if (syscall(SYS_kcmp, pid, fresh[k]->pid, KCMP_VM, 0, 0) == 0)
					mm = fresh[k];
			if (!mm) {
				mm = calloc(1, sizeof *mm);
				if (!mm) {
					dt_seterr(&e, E_INTERNAL, ENOMEM, "out of memory");
					goto fail;
				}
				mm->procfd = mm->pidfd = mm->uffd = mm->pagemapfd = mm->memfd = -1;
				mm->pid = tgid;
				fresh[nfresh++] = mm;
			}
		}
		if (mm_add_pid(mm, pid) < 0) {
			dt_seterr(&e, E_INTERNAL, ENOMEM, "out of memory");
			goto fail;
		}
		int seen = 0;
		for (size_t k = 0; k < ntouched; k++)
			seen |= (touched[k] == mm);
		if (!seen)
			touched[ntouched++] = mm;
	}

	for (size_t k = 0; k < nfresh; k++) {
		struct dt_mm *mm = fresh[k];
		pid_t tgid = mm->pid;
		int gone = DT_ALIVE;
		if (dt_mm_open(mm, tgid, &e) < 0) {
			if (e.err == ESRCH) {
				gone = DT_GONE_EXITED;
				memset(&e, 0, sizeof e);
			} else {
				goto fail;
			}
		} else if (dt_mm_attach(mm, &gone, &e) < 0) {
			goto fail;
		}
		if (gone) {
			for (size_t q = 0; q < mm->npids; q++)
				exited[nexited++] = mm->pids[q];
			mm->npids = 0; /* now only a placeholder; freed below */
		}
	}

	/* success: adopt the fresh mms that are alive (gone ones are freed after
	 * the reply is built) */
	for (size_t k = 0; k < nfresh; k++) {
		if (fresh[k]->npids != 0 && mms_add(fresh[k]) < 0) {
			/* mms[] could not grow: undo the adoption of this request */
			for (size_t q = 0; q < k; q++)
				if (fresh[q]->npids != 0)
					nmms--;
			dt_seterr(&e, E_INTERNAL, ENOMEM, "out of memory");
			goto fail;
		}
	}
	stats.attaches++;
	begin_ok(id);
	sb_puts(&reply, ",\"mms\":[");
	int first = 1;
	for (size_t k = 0; k < ntouched; k++) {
		struct dt_mm *mm = touched[k];
		if (mm->npids == 0)
			continue; /* its process went away during attach */
		int is_new = 0;
		for (size_t q = 0; q < nfresh; q++)
			is_new |= (fresh[q] == mm);
		if (!first)
			sb_putc(&reply, ',');
		first = 0;
		put_mm_info(&reply, mm);
		sb_printf(&reply, ",\"new\":%s", is_new ? "true" : "false");
		if (is_new)
			sb_printf(&reply,
				  ",\"tid\":%d,\"stop_us\":%llu,\"via_vdso\":%s,\"seccomp_suspended\":%s,\"user_mode_only\":%s",
				  (int)mm->inj.tid, (unsigned long long)mm->inj.stop_us, mm->inj.via_vdso ? "true" : "false",
				  mm->inj.seccomp_suspended ? "true" : "false", mm->inj.user_mode_only ? "true" : "false");
		sb_putc(&reply, '}');
	}
	sb_puts(&reply, "],\"exited\":[");
	for (size_t k = 0; k < nexited; k++)
		sb_printf(&reply, "%s%d", k ? "," : "", (int)exited[k]);
	sb_puts(&reply, "]}");
	for (size_t k = 0; k < nfresh; k++)
		if (fresh[k]->npids == 0)
			mm_free(fresh[k]);
	send_reply(NULL, 0);
	goto out;

fail:
	/* roll back: nothing of this request stays attached */
	for (size_t k = 0; k < nfresh; k++)
		mm_free(fresh[k]);
	/* pids added to already-tracked mms stay (they are the same mm) */
	send_err(id, &e);
out:
	free(pids);
	free(fresh);
	free(touched);
	free(exited);
}

/* ------------------------------------------------------------------ scan */

static void cmd_scan(const struct jval *root, const struct jval *id)
{
	const struct jval *f = json_get(root, "first");
	int first = 0;
	if (f) {
		if (f->t != J_BOOL) {
			send_error(id, E_BAD_REQUEST, EINVAL, "scan: \"first\" must be true or false");
			return;
		}
		first = f->u.b;
	}
	if (nmms == 0) {
		send_error(id, E_NOT_TRACKING, 0, "scan: no process is being tracked");
		return;
	}
	uint64_t t0 = dt_now_us();
	sb_reset(&payload);
	struct sbuf gone_exit = {0}, gone_exec = {0}, failed = {0};
	sb_puts(&gone_exit, "");
	sb_puts(&gone_exec, "");
	sb_puts(&failed, "");
	uint64_t total = 0;
	size_t nrec = 0;
	struct dt_rangevec rv = {0};
	for (size_t i = 0; i < nmms;) {
		struct dt_mm *mm = mms[i];
		struct dt_err e = {0};
		int gone = 0;
		rv.n = 0;
		int r = dt_mm_scan(mm, first, &rv, &gone, &e);
		if (r < 0 || gone) {
			if (r < 0) {
				sb_printf(&failed, "%s{\"pid\":%d,\"code\":", failed.len ? "," : "", (int)mm->pid);
				sb_json_str(&failed, e.code ? e.code : E_SCAN);
				sb_puts(&failed, ",\"message\":");
				sb_json_str(&failed, e.msg);
				sb_printf(&failed, ",\"errno\":%d}", e.err);
				dt_log("scan of pid %d failed, tracking dropped: %s", (int)mm->pid, e.msg);
			} else if (gone == DT_GONE_EXECED) {
				sb_printf(&gone_exec, "%s%d", gone_exec.len ? "," : "", (int)mm->pid);
			} else {
				sb_printf(&gone_exit, "%s%d", gone_exit.len ? "," : "", (int)mm->pid);
			}
			mms_remove(i);
			continue;
		}
		uint32_t hdr[2] = {(uint32_t)mm->pid, (uint32_t)rv.n};
		sb_mem(&payload, hdr, sizeof hdr);
		sb_mem(&payload, rv.v, rv.n * sizeof rv.v[0]); /* {u64 start, u64 end} little-endian on x86_64 */
		total += rv_pages(&rv);
		nrec++;
		i++;
	}
	rv_free(&rv);
	uint64_t us = dt_now_us() - t0;
	stats.scans++;
	stats.last_scan_us = us;
	stats.last_scan_pages = total;
	if (payload.oom || gone_exit.oom || gone_exec.oom || failed.oom) {
		send_error(id, E_INTERNAL, ENOMEM, "out of memory building scan result");
	} else {
		begin_ok(id);
		sb_printf(&reply, ",\"bytes\":%zu,\"pages\":%llu,\"scan_us\":%llu,\"mms\":%zu,\"exited\":[%s],\"execed\":[%s],\"failed\":[%s]}",
			  payload.len, (unsigned long long)total, (unsigned long long)us, nrec, gone_exit.p,
			  gone_exec.p, failed.p);
		send_reply(payload.p, payload.len);
	}
	sb_free(&gone_exit);
	sb_free(&gone_exec);
	sb_free(&failed);
	if (payload.cap > (16u << 20))
		sb_free(&payload); /* do not keep a huge buffer around */
}

/* ------------------------------------------------------------------ read */

static void cmd_read(const struct jval *root, const struct jval *id)
{
	int64_t pid;
	if (json_int_range(json_get(root, "pid"), 1, 0x7fffffff, &pid) < 0) {
		send_error(id, E_BAD_REQUEST, EINVAL, "read: \"pid\" must be a positive integer");
		return;
	}
	const struct jval *ra = json_get(root, "ranges");
	if (!ra || ra->t != J_ARR) {
		send_error(id, E_BAD_REQUEST, EINVAL, "read: \"ranges\" must be an array of [start,end] pairs");
		return;
	}
	if (ra->u.c.count > DT_READ_MAX_RANGES) {
		send_error(id, E_BAD_REQUEST, E2BIG, "read: too many ranges (max 65536 per request)");
		return;
	}
	size_t n = ra->u.c.count;
	struct dt_range *r = malloc((n ? n : 1) * sizeof *r);
	if (!r) {
		send_error(id, E_INTERNAL, ENOMEM, "out of memory");
		return;
	}
	uint64_t total = 0;
	size_t i = 0;
	for (const struct jval *v = ra->u.c.first; v; v = v->next, i++) {
		uint64_t s, e;
		if (v->t != J_ARR || v->u.c.count != 2 || json_u64(v->u.c.first, &s) < 0 ||
		    json_u64(v->u.c.first->next, &e) < 0) {
			free(r);
			send_error(id, E_BAD_REQUEST, EINVAL, "read: each range must be [start,end] (integers)");
			return;
		}
		if ((s | e) & (DT_PAGE_SIZE - 1) || s >= e || e > (1ULL << 57)) {
			free(r);
			send_error(id, E_BAD_REQUEST, EINVAL,
				   "read: ranges must be page-aligned, non-empty, start<end, inside user space");
			return;
		}
		total += e - s;
		if (total > DT_READ_MAX_BYTES) {
			free(r);
			send_error(id, E_BAD_REQUEST, E2BIG, "read: request exceeds 64 MiB (67108864 bytes)");
			return;
		}
		r[i] = (struct dt_range){s, e};
	}
	struct dt_mm *mm = mm_by_pid((pid_t)pid);
	if (!mm) {
		free(r);
		send_error(id, E_NOT_TRACKING, ESRCH, "read: pid is not tracked (attach it first)");
		return;
	}
	if (!readbuf) {
		/* One buffer of the maximum request size, reused: re-faulting a fresh
		 * 64 MiB buffer per request would halve the read throughput. THP
		 * keeps the faulting cost low; pages are only touched when used. */
		void *p = mmap(NULL, DT_READ_MAX_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			free(r);
			send_error(id, E_INTERNAL, errno, "mmap read buffer failed");
			return;
		}
		madvise(p, DT_READ_MAX_BYTES, MADV_HUGEPAGE);
		readbuf = p;
	}
	uint64_t t0 = dt_now_us();
	struct dt_rangevec missing = {0};
	struct dt_err e = {0};
	size_t got = 0;
	int rc = dt_read_ranges(mm, r, n, readbuf, &got, &missing, &e);
	free(r);
	if (rc < 0) {
		rv_free(&missing);
		send_err(id, &e);
		return;
	}
	uint64_t us = dt_now_us() - t0;
	rv_sort_merge(&missing);
	stats.reads++;
	stats.read_bytes += got;
	stats.read_missing_pages += rv_pages(&missing);
	begin_ok(id);
	sb_printf(&reply, ",\"bytes\":%zu,\"pid\":%d,\"read_us\":%llu,\"missing\":[", got, (int)mm->pid,
		  (unsigned long long)us);
	for (size_t k = 0; k < missing.n; k++)
		sb_printf(&reply, "%s[%llu,%llu]", k ? "," : "", (unsigned long long)missing.v[k].start,
			  (unsigned long long)missing.v[k].end);
	sb_puts(&reply, "]}");
	rv_free(&missing);
	send_reply(readbuf, got);
}

/* ------------------------------------------------------------------ misc */

static void cmd_release(const struct jval *id)
{
	size_t n = nmms;
	release_all();
	begin_ok(id);
	sb_printf(&reply, ",\"released\":%zu}", n);
	send_reply(NULL, 0);
}

static void cmd_stats(const struct jval *id)
{
	begin_ok(id);
	sb_printf(&reply,
		  ",\"version\":\"%s\",\"uptime_us\":%llu,\"requests\":%llu,\"errors\":%llu,\"attaches\":%llu,"
		  "\"scans\":%llu,\"last_scan_us\":%llu,\"last_scan_pages\":%llu,\"reads\":%llu,\"read_bytes\":%llu,"
		  "\"read_missing_pages\":%llu,\"pending_detach\":%zu,\"mms\":[",
		  DT_VERSION, (unsigned long long)(dt_now_us() - stats.started_us), (unsigned long long)stats.requests,
		  (unsigned long long)stats.errors, (unsigned long long)stats.attaches, (unsigned long long)stats.scans,
		  (unsigned long long)stats.last_scan_us, (unsigned long long)stats.last_scan_pages,
		  (unsigned long long)stats.reads, (unsigned long long)stats.read_bytes,
		  (unsigned long long)stats.read_missing_pages, dt_inject_pending_count());
	for (size_t i = 0; i < nmms; i++) {
		struct dt_mm *mm = mms[i];
		if (i)
			sb_putc(&reply, ',');
		put_mm_info(&reply, mm);
		sb_printf(&reply,
			  ",\"scans\":%llu,\"last_pages\":%llu,\"total_pages\":%llu,\"stop_us\":%llu,\"via_vdso\":%s,"
			  "\"seccomp_suspended\":%s,\"user_mode_only\":%s}",
			  (unsigned long long)mm->scans, (unsigned long long)mm->last_pages,
			  (unsigned long long)mm->total_pages, (unsigned long long)mm->inj.stop_us,
			  mm->inj.via_vdso ? "true" : "false", mm->inj.seccomp_suspended ? "true" : "false",
			  mm->inj.user_mode_only ? "true" : "false");
	}
	sb_puts(&reply, "]}");
	send_reply(NULL, 0);
}

static int handle_line(char *line, size_t len)
{
	stats.requests++;
	const char *perr = NULL;
	struct jval *root = json_parse(line, len, &arena, &perr);
	if (!root) {
		char msg[160];
		snprintf(msg, sizeof msg, "malformed JSON: %s", perr);
		send_error(NULL, E_BAD_REQUEST, EINVAL, msg);
		return 0;
	}
	if (root->t != J_OBJ) {
		send_error(NULL, E_BAD_REQUEST, EINVAL, "request must be a JSON object");
		return 0;
	}
	const struct jval *id = json_get(root, "id");
	const struct jval *cmd = json_get(root, "cmd");
	if (!cmd || cmd->t != J_STR) {
		send_error(id, E_BAD_REQUEST, EINVAL, "request needs a string \"cmd\"");
		return 0;
	}
	const char *c = cmd->u.s.s;
	if (strlen(c) != cmd->u.s.len) {
		send_error(id, E_BAD_REQUEST, EINVAL, "unknown cmd");
		return 0;
	}
	if (!strcmp(c, "attach"))
		cmd_attach(root, id);
	else if (!strcmp(c, "scan"))
		cmd_scan(root, id);
	else if (!strcmp(c, "read"))
		cmd_read(root, id);
	else if (!strcmp(c, "release"))
		cmd_release(id);
	else if (!strcmp(c, "stats"))
		cmd_stats(id);
	else if (!strcmp(c, "quit")) {
		size_t n = nmms;
		release_all();
		begin_ok(id);
		sb_printf(&reply, ",\"released\":%zu}", n);
		send_reply(NULL, 0);
		return 1;
	} else
		send_error(id, E_BAD_REQUEST, EINVAL, "unknown cmd");
	return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
	fprintf(stderr,
		"usage: ferry-dirtytrack [-v|--verbose] [--version]\n"
		"Reads JSON requests on stdin, one per line; see docs/dirtytrack.md.\n");
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
			dt_verbose = 1;
		else if (!strcmp(argv[i], "--version")) {
			printf("ferry-dirtytrack %s\n", DT_VERSION);
			return 0;
		} else {
			usage();
			return 2;
		}
	}
	stats.started_us = dt_now_us();

	/* SIGCHLD must not be ignored (ptrace stops are reported through it) and
	 * is consumed via a signalfd; termination signals likewise, so they are
	 * handled between requests, never in the middle of an injection. */
	signal(SIGCHLD, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	sigset_t term, chld, all;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigaddset(&term, SIGINT);
	sigaddset(&term, SIGHUP);
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	all = term;
	sigaddset(&all, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &all, NULL) < 0) {
		dt_log("sigprocmask: %s", strerror(errno));
		return 1;
	}
	int sigfd = signalfd(-1, &term, SFD_CLOEXEC | SFD_NONBLOCK);
	int chldfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0 || chldfd < 0) {
		dt_log("signalfd: %s", strerror(errno));
		return 1;
	}
	dt_inject_init(chldfd);

#ifdef F_SETPIPE_SZ
	/* Bigger pipe = fewer wakeups for bulk page data; ignore failures. */
	if (fcntl(1, F_SETPIPE_SZ, 1 << 20) < 0)
		DBG("F_SETPIPE_SZ on stdout: %s", strerror(errno));
	else
		DBG("stdout pipe buffer: %d bytes", fcntl(1, F_GETPIPE_SZ));
#endif

	arena.cap = MAX_NODES;
	arena.nodes = malloc(sizeof(struct jval) * arena.cap);
	size_t icap = 1 << 16, ilen = 0;
	char *ibuf = malloc(icap);
	if (!arena.nodes || !ibuf) {
		dt_log("out of memory");
		return 1;
	}
	int discarding = 0; /* inside an over-long line */
	int quit = 0;

	while (!quit) {
		struct pollfd pf[3] = {
			{.fd = 0, .events = POLLIN},
			{.fd = sigfd, .events = POLLIN},
			{.fd = chldfd, .events = POLLIN},
		};
		int pr = poll(pf, 3, dt_inject_pending_count() ? 100 : -1);
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			dt_log("poll: %s", strerror(errno));
			break;
		}
		if (pf[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sigfd, &si, sizeof si) > 0)
				dt_log("signal %u: releasing and exiting", si.ssi_signo);
			break;
		}
		if (pf[2].revents & POLLIN) {
			struct signalfd_siginfo si[16];
			while (read(chldfd, si, sizeof si) > 0)
				;
		}
		if (dt_inject_pending_count())
			dt_inject_service_pending();
		if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;

		if (icap - ilen < 65536) {
			size_t nc = icap * 2;
			if (nc > MAX_LINE + 65536 + 1)
				nc = MAX_LINE + 65536 + 1;
			if (nc > icap) {
				char *nb = realloc(ibuf, nc);
				if (!nb) {
					dt_log("out of memory");
					break;
				}
				ibuf = nb;
				icap = nc;
			}
		}
		ssize_t n = read(0, ibuf + ilen, icap - ilen - 1);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			dt_log("stdin: %s", strerror(errno));
			break;
		}
		if (n == 0) {
			DBG("EOF on stdin");
			break;
		}
		ilen += (size_t)n;
		size_t start = 0;
		for (;;) {
			char *nl = memchr(ibuf + start, '\n', ilen - start);
			if (!nl)
				break;
			size_t llen = (size_t)(nl - (ibuf + start));
			char *line = ibuf + start;
			start += llen + 1;
			if (discarding) {
				discarding = 0;
				send_error(NULL, E_BAD_REQUEST, E2BIG, "request line too long (max 4 MiB)");
				continue;
			}
			if (llen && line[llen - 1] == '\r')
				llen--;
			size_t k = 0;
			while (k < llen && (line[k] == ' ' || line[k] == '\t'))
				k++;
			if (k == llen)
				continue; /* blank line */
			line[llen] = '\0';
			if (handle_line(line, llen)) {
				quit = 1;
				break;
			}
			if (dt_inject_pending_count())
				dt_inject_service_pending();
		}
		memmove(ibuf, ibuf + start, ilen - start);
		ilen -= start;
		if (ilen > MAX_LINE) {
			discarding = 1;
			ilen = 0;
		}
	}
	release_all();
	return 0;
}
