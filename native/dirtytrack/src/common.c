#include "common.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int dt_verbose;

void dt_seterr(struct dt_err *e, const char *code, int err, const char *fmt, ...)
{
	va_list ap;
	e->code = code;
	e->err = err;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
}

void dt_log(const char *fmt, ...)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "ferry-dirtytrack[%d]: ", (int)getpid());
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < sizeof buf)
		n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof buf - 1)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	ssize_t w = write(2, buf, (size_t)n);
	(void)w;
}

int rv_push(struct dt_rangevec *rv, uint64_t start, uint64_t end)
{
	if (start >= end)
		return 0;
	if (rv->n && rv->v[rv->n - 1].end == start) {
		rv->v[rv->n - 1].end = end;
		return 0;
	}
	if (rv->n == rv->cap) {
		size_t nc = rv->cap ? rv->cap * 2 : 64;
		struct dt_range *nv = realloc(rv->v, nc * sizeof *nv);
		if (!nv)
			return -1;
		rv->v = nv;
		rv->cap = nc;
	}
	rv->v[rv->n].start = start;
	rv->v[rv->n].end = end;
	rv->n++;
	return 0;
}

static int cmp_range(const void *a, const void *b)
{
	const struct dt_range *x = a, *y = b;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

void rv_sort_merge(struct dt_rangevec *rv)
{
	if (rv->n < 2)
		return;
	int sorted = 1;
	for (size_t i = 1; i < rv->n; i++)
		if (rv->v[i].start < rv->v[i - 1].start) {
			sorted = 0;
			break;
		}
	if (!sorted)
		qsort(rv->v, rv->n, sizeof rv->v[0], cmp_range);
	size_t o = 0;
	for (size_t i = 1; i < rv->n; i++) {
		if (rv->v[i].start <= rv->v[o].end) {
			if (rv->v[i].end > rv->v[o].end)
				rv->v[o].end = rv->v[i].end;
		} else {
			rv->v[++o] = rv->v[i];
		}
	}
	rv->n = o + 1;
}

uint64_t rv_pages(const struct dt_rangevec *rv)
{
	uint64_t p = 0;
	for (size_t i = 0; i < rv->n; i++)
		p += (rv->v[i].end - rv->v[i].start) / DT_PAGE_SIZE;
	return p;
}

void rv_free(struct dt_rangevec *rv)
{
	free(rv->v);
	rv->v = NULL;
	rv->n = rv->cap = 0;
}
