#ifndef FERRY_DT_COMMON_H
#define FERRY_DT_COMMON_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#define DT_PAGE_SIZE 4096ULL
#define DT_PAGE_MASK (~(DT_PAGE_SIZE - 1))

/* Stable error codes (see docs/dirtytrack.md). */
#define E_PTRACE "E_PTRACE"
#define E_UFFD "E_UFFD"
#define E_SCAN "E_SCAN"
#define E_READ "E_READ"
#define E_NOT_TRACKING "E_NOT_TRACKING"
#define E_BAD_REQUEST "E_BAD_REQUEST"
#define E_INTERNAL "E_INTERNAL"

struct dt_err {
	const char *code; /* NULL = no error */
	int err;          /* errno, 0 if not applicable */
	char msg[320];
};

void dt_seterr(struct dt_err *e, const char *code, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Diagnostics go to stderr only; stdout carries the protocol. */
extern int dt_verbose;
void dt_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define DBG(...)                      \
	do {                               \
		if (dt_verbose)            \
			dt_log(__VA_ARGS__); \
	} while (0)

static inline uint64_t dt_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

/* A growable vector of [start,end) ranges. */
struct dt_range {
	uint64_t start;
	uint64_t end;
};
struct dt_rangevec {
	struct dt_range *v;
	size_t n;
	size_t cap;
};
int rv_push(struct dt_rangevec *rv, uint64_t start, uint64_t end); /* -1 on ENOMEM; merges with the tail */
void rv_sort_merge(struct dt_rangevec *rv);
uint64_t rv_pages(const struct dt_rangevec *rv);
void rv_free(struct dt_rangevec *rv);

#endif
