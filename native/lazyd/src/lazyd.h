/*
 * ferry-lazyd: a drop-in for `criu lazy-pages` (CRIU 4.2.x). Shared types.
 * See docs/lazyd.md for the protocol and the design.
 */
#ifndef FERRY_LAZYD_H
#define FERRY_LAZYD_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define LZ_PAGE 4096ULL

/* Log levels as CRIU's -v: 0 always, 1 error, 2 warning, 3 info, 4 debug. */
extern int lz_loglevel;
void lz_log_open(const char *path); /* NULL or "-": stderr */
void lz_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LERR(...) lz_log(1, "Error: " __VA_ARGS__)
#define LWARN(...) lz_log(2, "Warn: " __VA_ARGS__)
#define LINFO(...) lz_log(3, __VA_ARGS__)
#define LDBG(...)                          \
	do {                                   \
		if (lz_loglevel >= 4)          \
			lz_log(4, __VA_ARGS__); \
	} while (0)

static inline uint64_t lz_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

/* pagemap.proto: PagemapEntry.flags */
#define PE_PARENT 1u
#define PE_LAZY 2u
#define PE_PRESENT 4u

/* One lazy range of a task as the images describe it: a PE_LAZY pagemap entry cut at VMA boundaries
 * (UFFDIO_COPY cannot cross a VMA), like collect_iovs() in criu/uffd.c. */
struct lz_lazy_range {
	uint64_t vaddr;  /* dump-time address */
	uint64_t npages;
	int64_t file_off; /* offset of the first page in pages-<id>.img, -1 if the file does not hold it */
};

struct lz_image {
	int pid;
	uint32_t pages_id;
	struct lz_lazy_range *r;
	size_t nr;
	uint64_t lazy_pages;
	const unsigned char *pages; /* mmap of pages-<id>.img (local mode only), NULL otherwise */
	size_t pages_len;
};

/* Reads pagemap-<pid>.img and mm-<pid>.img from imgdir (a directory fd). map_pages: also mmap pages-<id>.img.
 * Returns 0, or -1 with the reason logged. */
int lz_image_load(int imgdir, int pid, int map_pages, struct lz_image *out);

#endif
