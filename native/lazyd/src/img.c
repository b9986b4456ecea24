/* CRIU image reading without protobuf-c: magic header, then { u32 LE length; message } records
 * (criu/protobuf.c do_pb_read_one, criu/image.c open_image). Only the fields the daemon needs. */
#include "lazyd.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMG_COMMON_MAGIC 0x54564319u
#define PAGEMAP_MAGIC 0x56084025u

struct buf {
	unsigned char *p;
	size_t n;
};

static int read_file(int dir, const char *name, struct buf *b)
{
	int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		LERR("can't open %s: %s", name, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < 8) {
		LERR("%s: too short or unreadable", name);
		close(fd);
		return -1;
	}
	b->n = (size_t)st.st_size;
	b->p = malloc(b->n);
	size_t got = 0;
	while (b->p && got < b->n) {
		ssize_t r = read(fd, b->p + got, b->n - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (!b->p || got != b->n) {
		LERR("%s: read failed", name);
		free(b->p);
		return -1;
	}
	return 0;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int s = 0; s < 64 && *p < end; s += 7) {
		unsigned char c = *(*p)++;
		r |= (uint64_t)(c & 0x7f) << s;
		if (!(c & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* Calls fn(field, wiretype, varint value, bytes, len) for each field of a flat message. */
typedef int (*field_fn)(void *ctx, unsigned field, unsigned wt, uint64_t v, const unsigned char *b, size_t len);

static int pb_walk(const unsigned char *p, size_t n, field_fn fn, void *ctx)
{
	const unsigned char *end = p + n;
	while (p < end) {
		uint64_t key, v = 0;
		const unsigned char *b = NULL;
		size_t len = 0;
		if (varint(&p, end, &key))
			return -1;
		unsigned wt = key & 7, f = (unsigned)(key >> 3);
		switch (wt) {
		case 0:
			if (varint(&p, end, &v))
				return -1;
			break;
		case 1:
			if (end - p < 8)
				return -1;
			memcpy(&v, p, 8);
			p += 8;
			break;
		case 2:
			if (varint(&p, end, &v) || v > (uint64_t)(end - p))
				return -1;
			b = p;
			len = (size_t)v;
			p += len;
			break;
		case 5:
			if (end - p < 4)
				return -1;
			v = le32(p);
			p += 4;
			break;
		default:
			return -1;
		}
		if (fn(ctx, f, wt, v, b, len))
			return -1;
	}
	return 0;
}

/* Iterates the records of an image: returns the next message or NULL at the end (*bad on a broken file). */
static const unsigned char *next_rec(const struct buf *b, size_t *pos, size_t *len, int *bad)
{
	if (*pos == b->n)
		return NULL;
	if (b->n - *pos < 4) {
		*bad = 1;
		return NULL;
	}
	*len = le32(b->p + *pos);
	*pos += 4;
	if (*len > b->n - *pos) {
		*bad = 1;
		return NULL;
	}
	const unsigned char *m = b->p + *pos;
	*pos += *len;
	return m;
}

struct pm_entry {
	uint64_t vaddr, nr_pages, compat_nr;
	uint32_t flags;
	int has_flags, has_nr, in_parent;
};

static int pm_field(void *ctx, unsigned f, unsigned wt, uint64_t v, const unsigned char *b, size_t len)
{
	struct pm_entry *e = ctx;
	(void)b, (void)len;
	if (wt != 0)
		return 0;
	switch (f) {
	case 1: e->vaddr = v; break;
	case 2: e->compat_nr = v; break;
	case 3: e->in_parent = v != 0; break;
	case 4: e->flags = (uint32_t)v, e->has_flags = 1; break;
	case 5: e->nr_pages = v, e->has_nr = 1; break;
	}
	return 0;
}

static int head_field(void *ctx, unsigned f, unsigned wt, uint64_t v, const unsigned char *b, size_t len)
{
	(void)b, (void)len;
	if (f == 1 && wt == 0)
		*(uint32_t *)ctx = (uint32_t)v;
	return 0;
}

struct vma {
	uint64_t start, end;
};
struct vmas {
	struct vma *v;
	size_t n, cap;
	struct vma cur;
};

static int vma_field(void *ctx, unsigned f, unsigned wt, uint64_t v, const unsigned char *b, size_t len)
{
	struct vma *e = ctx;
	(void)b, (void)len;
	if (wt == 0 && f == 1)
		e->start = v;
	if (wt == 0 && f == 2)
		e->end = v;
	return 0;
}

static int mm_field(void *ctx, unsigned f, unsigned wt, uint64_t v, const unsigned char *b, size_t len)
{
	struct vmas *vs = ctx;
	(void)v;
	if (f != 14 || wt != 2) /* MmEntry.vmas */
		return 0;
	struct vma e = {0, 0};
	if (pb_walk(b, len, vma_field, &e) || e.end <= e.start)
		return -1;
	if (vs->n == vs->cap) {
		vs->cap = vs->cap ? vs->cap * 2 : 64;
		struct vma *nv = realloc(vs->v, vs->cap * sizeof *nv);
		if (!nv)
			return -1;
		vs->v = nv;
	}
	vs->v[vs->n++] = e;
	return 0;
}

static int push_range(struct lz_image *im, size_t *cap, uint64_t va, uint64_t n, int64_t off)
{
	if (im->nr == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		struct lz_lazy_range *nr = realloc(im->r, *cap * sizeof *nr);
		if (!nr)
			return -1;
		im->r = nr;
	}
	im->r[im->nr++] = (struct lz_lazy_range){va, n, off};
	return 0;
}

int lz_image_load(int imgdir, int pid, int map_pages, struct lz_image *im)
{
	char name[64];
	struct buf pm = {0}, mm = {0};
	struct vmas vs = {0};
	size_t cap = 0;
	int ret = -1, bad = 0;

	memset(im, 0, sizeof *im);
	im->pid = pid;
	snprintf(name, sizeof name, "mm-%d.img", pid);
	if (read_file(imgdir, name, &mm))
		goto out;
	size_t pos = 8, len;
	const unsigned char *m;
	if (le32(mm.p) != IMG_COMMON_MAGIC || !(m = next_rec(&mm, &pos, &len, &bad)) || pb_walk(m, len, mm_field, &vs)) {
		LERR("%s: not a CRIU mm image", name);
		goto out;
	}
	snprintf(name, sizeof name, "pagemap-%d.img", pid);
	if (read_file(imgdir, name, &pm))
		goto out;
	pos = 8;
	if (le32(pm.p) != IMG_COMMON_MAGIC || le32(pm.p + 4) != PAGEMAP_MAGIC || !(m = next_rec(&pm, &pos, &len, &bad)) ||
	    pb_walk(m, len, head_field, &im->pages_id)) {
		LERR("%s: not a CRIU pagemap image", name);
		goto out;
	}
	/* Pages of PE_PRESENT entries follow each other in pages-<id>.img in pagemap order (criu/pagemap.c). */
	uint64_t off = 0;
	size_t vi = 0;
	while ((m = next_rec(&pm, &pos, &len, &bad))) {
		struct pm_entry e = {0};
		if (pb_walk(m, len, pm_field, &e)) {
			bad = 1;
			break;
		}
		uint64_t n = e.has_nr ? e.nr_pages : e.compat_nr; /* 4.2 writes field 5; 4.1 field 2 */
		uint32_t fl = e.has_flags ? e.flags : (e.in_parent ? PE_PARENT : PE_PRESENT);
		int64_t foff = (fl & PE_PRESENT) ? (int64_t)off : -1;
		if (fl & PE_PRESENT)
			off += n * LZ_PAGE;
		if (!(fl & PE_LAZY) || !n)
			continue;
		/* Cut at VMA boundaries; pagemap entries and VMAs are both sorted (criu/uffd.c collect_iovs). */
		uint64_t start = e.vaddr, end = e.vaddr + n * LZ_PAGE;
		for (; vi < vs.n && start < end; vi++) {
			if (start >= vs.v[vi].end)
				continue;
			if (start < vs.v[vi].start) {
				LERR("%s: lazy pages at %llx are outside every VMA", name, (unsigned long long)start);
				goto out;
			}
			uint64_t e2 = end < vs.v[vi].end ? end : vs.v[vi].end;
			if (push_range(im, &cap, start, (e2 - start) / LZ_PAGE,
				       foff < 0 ? -1 : foff + (int64_t)(start - e.vaddr)))
				goto out;
			im->lazy_pages += (e2 - start) / LZ_PAGE;
			start = e2;
			if (end <= vs.v[vi].end)
				break;
		}
		if (start < end) {
			LERR("%s: lazy pages at %llx are outside every VMA", name, (unsigned long long)start);
			goto out;
		}
	}
	if (bad) {
		LERR("%s: truncated or corrupt record", name);
		goto out;
	}
	if (map_pages) {
		snprintf(name, sizeof name, "pages-%u.img", im->pages_id);
		int fd = openat(imgdir, name, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			LERR("can't open %s: %s", name, strerror(errno));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		if ((uint64_t)st.st_size < off) {
			LERR("%s: %lld bytes, the pagemap needs %llu", name, (long long)st.st_size, (unsigned long long)off);
			close(fd);
			goto out;
		}
		im->pages_len = (size_t)st.st_size;
		if (im->pages_len) {
			void *p = mmap(NULL, im->pages_len, PROT_READ, MAP_PRIVATE, fd, 0);
			if (p == MAP_FAILED) {
				LERR("mmap %s: %s", name, strerror(errno));
				close(fd);
				goto out;
			}
			madvise(p, im->pages_len, MADV_SEQUENTIAL);
			im->pages = p;
		}
		close(fd);
	}
	LINFO("pid %d: %zu lazy ranges, %llu lazy pages, %zu VMAs, pages-%u.img", pid, im->nr,
	      (unsigned long long)im->lazy_pages, vs.n, im->pages_id);
	ret = 0;
out:
	free(pm.p);
	free(mm.p);
	free(vs.v);
	if (ret) {
		free(im->r);
		im->r = NULL;
	}
	return ret;
}
