// lazyd-forker: a workload that forks, mremaps, munmaps and madvises after a lazy restore, so that
// ferry-lazyd sees UFFD_EVENT_FORK, REMAP, UNMAP and REMOVE while pages are still missing.
//
//   lazyd-forker --mib N --dir D [--rate PAGES_PER_SEC]
//
// Fills region A (N MiB) and three 8 MiB regions B, C, D, then dirties random pages of A until D/go exists.
// Then: fork; the child verifies all of A, writes some pages, verifies again, writes D/child.result and exits.
// The parent moves B (mremap), unmaps the second half of C, MADV_DONTNEEDs the first half of D (must read as
// zeros afterwards), verifies everything that is left, reaps the child and writes D/parent.result:
// "ok <pages checked> child-status <s>" or "bad <n> ...". Then it sleeps until killed.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define W (PAGE / 8)
#define SMALL (8u << 20)

static uint64_t tag(uint64_t region, uint64_t i, uint64_t gen)
{
	uint64_t z = (region << 40 | i) * 0x9E3779B97F4A7C15ull + gen * 0xC2B2AE3D27D4EB4Full + 1;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void put(uint64_t *m, uint64_t r, size_t i, uint64_t gen)
{
	uint64_t *p = m + i * W, t = tag(r, i, gen);
	p[0] = t, p[1] = gen, p[W / 2] = t, p[W - 1] = t;
}

static size_t check(const uint64_t *m, uint64_t r, size_t from, size_t n, const uint64_t *gens)
{
	size_t bad = 0;
	for (size_t i = from; i < from + n; i++) {
		const uint64_t *p = m + i * W;
		uint64_t g = gens ? gens[i] : 0, t = tag(r, i, g);
		bad += p[0] != t || p[1] != g || p[W / 2] != t || p[W - 1] != t;
	}
	return bad;
}

static size_t check_zero(const uint64_t *m, size_t n)
{
	size_t bad = 0;
	for (size_t i = 0; i < n * W; i++)
		bad += m[i] != 0;
	return bad;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return p;
}

static void result(const char *dir, const char *name, const char *text)
{
	char path[4096], tmp[4200];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
	rename(tmp, path);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"mib", 1, 0, 'm'}, {"dir", 1, 0, 'd'}, {"rate", 1, 0, 'r'}, {0, 0, 0, 0}};
	long mib = 64, rate = 5000;
	const char *dir = NULL;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1)
		switch (o) {
		case 'm': mib = strtol(optarg, NULL, 10); break;
		case 'd': dir = optarg; break;
		case 'r': rate = strtol(optarg, NULL, 10); break;
		default: return 2;
		}
	if (!dir || mib <= 0)
		return 2;
	size_t na = (size_t)mib << 20 >> 12, ns = SMALL / PAGE;
	uint64_t *a = map(na * PAGE), *b = map(SMALL), *c = map(SMALL), *d = map(SMALL);
	uint64_t *gens = calloc(na, 8), rng = 88172645463325252ull;
	for (size_t i = 0; i < na; i++)
		put(a, 1, i, 0);
	for (size_t i = 0; i < ns; i++)
		put(b, 2, i, 0), put(c, 3, i, 0), put(d, 4, i, 0);
	char go[4096];
	snprintf(go, sizeof go, "%s/go", dir);
	result(dir, "ready", "ready\n");
	long per_ms = rate / 1000 > 0 ? rate / 1000 : 1;
	while (access(go, F_OK)) {
		for (long k = 0; k < per_ms; k++) {
			rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
			size_t i = (size_t)((rng * 0x2545F4914F6CDD1Dull) % na);
			put(a, 1, i, ++gens[i]);
		}
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	pid_t pid = fork();
	if (pid < 0) {
		result(dir, "parent.result", "bad fork failed\n");
		return 1;
	}
	char buf[256];
	if (pid == 0) {
		size_t bad = check(a, 1, 0, na, gens);
		for (size_t i = 0; i < na; i += 7)
			put(a, 1, i, ++gens[i]);
		bad += check(a, 1, 0, na, gens);
		snprintf(buf, sizeof buf, "%s %zu\n", bad ? "bad" : "ok", bad ? bad : 2 * na);
		result(dir, "child.result", buf);
		_exit(bad ? 1 : 0);
	}
	size_t bad = 0, checked = 0;
	void *dst = mmap(NULL, SMALL, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *b2 = mremap(b, SMALL, SMALL, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	if (b2 == MAP_FAILED)
		bad += 1000000;
	else
		bad += check(b2, 2, 0, ns, NULL), checked += ns;
	munmap((char *)c + SMALL / 2, SMALL / 2);
	bad += check(c, 3, 0, ns / 2, NULL), checked += ns / 2;
	madvise(d, SMALL / 2, MADV_DONTNEED);
	bad += check_zero(d, ns / 2) + check(d, 4, ns / 2, ns / 2, NULL), checked += ns;
	bad += check(a, 1, 0, na, gens), checked += na;
	int st = 0;
	waitpid(pid, &st, 0);
	snprintf(buf, sizeof buf, "%s %zu child-status %d\n", bad || st ? "bad" : "ok", bad ? bad : checked, st);
	result(dir, "parent.result", buf);
	for (;;)
		pause();
}
