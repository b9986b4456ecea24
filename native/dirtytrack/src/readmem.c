/*
 * Read pages of a running task: process_vm_readv with batched iovecs (the
 * fast path), /proc/PID/mem pread for whatever it cannot read (PROT_NONE
 * pages are readable there; it is also the path when the thread-group leader
 * has exited), and a per-page "missing" list for what neither can read.
 */
#define _GNU_SOURCE
#include "readmem.h"

#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define IOV_BATCH 1024

int dt_read_ranges(struct dt_mm *mm, const struct dt_range *r, size_t n, char *out, size_t *outlen,
		   struct dt_rangevec *missing, struct dt_err *e)
{
	if (dt_mm_alive(mm) != DT_ALIVE) {
		dt_seterr(e, E_READ, ESRCH, "pid %d: address space is gone (exited or exec'd)", (int)mm->pid);
		return -1;
	}
	struct iovec remote[IOV_BATCH];
	size_t w = 0, i = 0;
	uint64_t off = 0;
	int vm_ok = 1;
	while (i < n) {
		if (off >= r[i].end - r[i].start) {
			i++;
			off = 0;
			continue;
		}
		if (vm_ok) {
			size_t cnt = 0, total = 0;
			for (size_t k = i; k < n && cnt < IOV_BATCH; k++) {
				uint64_t s = r[k].start + (k == i ? off : 0);
				if (s >= r[k].end)
					continue;
				remote[cnt].iov_base = (void *)(uintptr_t)s;
				remote[cnt].iov_len = (size_t)(r[k].end - s);
				total += remote[cnt].iov_len;
				cnt++;
			}
			struct iovec local = {.iov_base = out + w, .iov_len = total};
			ssize_t got = process_vm_readv(mm->pid, &local, 1, remote, cnt, 0);
			if (got < 0) {
				if (errno == EFAULT || errno == EIO) {
					got = 0;
				} else if (errno == ESRCH || errno == EPERM) {
					vm_ok = 0; /* leader gone or not permitted: /proc/PID/mem only */
					continue;
				} else if (errno == EINTR) {
					continue;
				} else {
					dt_seterr(e, E_READ, errno, "process_vm_readv(%d): %s", (int)mm->pid, strerror(errno));
					return -1;
				}
			}
			size_t adv = (size_t)got & ~(size_t)(DT_PAGE_SIZE - 1);
			w += adv;
			/* advance (i, off) by adv bytes */
			while (adv > 0 && i < n) {
				uint64_t left = r[i].end - r[i].start - off;
				if (adv >= left) {
					adv -= left;
					i++;
					off = 0;
				} else {
					off += adv;
					adv = 0;
				}
			}
			if ((size_t)got == total)
				continue;
			if (i >= n)
				break;
		}
		/* process_vm_readv stopped at r[i].start + off: try /proc/PID/mem. */
		uint64_t addr = r[i].start + off;
		size_t len = (size_t)(r[i].end - addr);
		ssize_t p = pread(mm->memfd, out + w, len, (off_t)addr);
		if (p < 0 && errno == EINTR)
			continue;
		size_t padv = p > 0 ? ((size_t)p & ~(size_t)(DT_PAGE_SIZE - 1)) : 0;
		w += padv;
		off += padv;
		if (padv < len) {
			/* the page at the stop point is unreadable by both paths */
			uint64_t a = r[i].start + off;
			if (rv_push(missing, a, a + DT_PAGE_SIZE) < 0) {
				dt_seterr(e, E_READ, ENOMEM, "out of memory");
				return -1;
			}
			off += DT_PAGE_SIZE;
		}
	}
	/* A pid-based read may have hit another process if ours died and the pid
	 * was reused, or a new image after execve: refuse the data then. */
	if (dt_mm_alive(mm) != DT_ALIVE) {
		dt_seterr(e, E_READ, ESRCH, "pid %d: address space went away during the read", (int)mm->pid);
		return -1;
	}
	*outlen = w;
	return 0;
}
