#ifndef FERRY_DT_READMEM_H
#define FERRY_DT_READMEM_H

#include "common.h"
#include "track.h"

#define DT_READ_MAX_BYTES (64ULL << 20) /* per request */
#define DT_READ_MAX_RANGES 65536

/* Read page-aligned ranges from the running task into out (which must hold
 * the sum of the range sizes). Unreadable pages are skipped and appended to
 * missing. *outlen = bytes produced. 0 or -1 with *e set. */
int dt_read_ranges(struct dt_mm *mm, const struct dt_range *r, size_t n, char *out, size_t *outlen,
		   struct dt_rangevec *missing, struct dt_err *e);

#endif
