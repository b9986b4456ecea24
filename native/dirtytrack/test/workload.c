/*
 * Test workload for ferry-dirtytrack. Line commands on stdin, one reply line
 * on stdout per command.
 *
 *   dt-workload [--mib M] [--threads T] [--sleepers S] [--harden]
 *
 * The main region has M MiB, MADV_NOHUGEPAGE, page i filled with u64 words
 * w[j] = i*1000003 + j (little-endian). Commands:
 *   info                       -> "ok pid P base B size N"
 *   w SEED i1 i2 ...           -> main thread writes u64 (SEED<<32 | i) at word (i*31+SEED)%512 of page i
 *   tw K SEED i1 i2 ...        -> same, done by worker thread K
 *   touch K STRIDE             -> write 1 byte to K pages (page p*STRIDE), "ok NS"
 *   rand MS                    -> random 8-byte writes over the region for MS ms, "ok COUNT"
 *   mmap MIB                   -> new anonymous region, every page written, "ok ADDR SIZE"
 *   sbrk KIB                   -> grow the heap by KIB, every new page written, "ok ADDR SIZE"
 *   munmap ADDR SIZE           -> "ok"
 *   fork                       -> child runs the same command loop on FIFOs; "ok CHILDPID"
 *                                 (driver passes paths: fork IN OUT)
 *   remap ADDR SIZE            -> munmap + mmap MAP_FIXED at the same place, pages written
 *   prot ADDR SIZE P           -> mprotect(ADDR, SIZE, P)
 *   mmapthp MIB                -> 2 MiB-aligned MADV_HUGEPAGE region, every page written
 *   wa A1 A2 ...               -> flip one byte at each absolute address
 *   vfork SECS                 -> vfork; the child sleeps SECS then exits; "ok CHILD" afterwards
 *   clonevm                    -> clone(CLONE_VM) child (own tgid, our mm) sleeping forever; "ok CHILD"
 *   leaderexit                 -> the command loop moves to a new thread, the main thread exits
 *   exec                       -> re-exec itself with --mib 1 (prints "ready" again)
 *   exit                       -> exit(0)
 *   check                      -> "ok" (proves the process still runs and its syscalls restart cleanly)
 * --threads T: T worker threads blocked in read() on their own pipes.
 * --sleepers S: S threads looping nanosleep(1ms) + a write to their own page.
 * --harden: no_new_privs, a seccomp filter that fails userfaultfd() with EPERM,
 *           and all capabilities dropped (like a default Docker container).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static char *region;
static size_t region_size;
static int nthreads;
static int tpipe[64][2];
static int ackpipe[2];
static char **g_argv;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *m)
{
	fprintf(stderr, "dt-workload: %s: %s\n", m, strerror(errno));
	exit(3);
}

static void do_writes(char *args)
{
	char *save = NULL;
	char *t = strtok_r(args, " \n", &save);
	if (!t)
		return;
	uint64_t seed = strtoull(t, NULL, 10);
	while ((t = strtok_r(NULL, " \n", &save))) {
		uint64_t i = strtoull(t, NULL, 10);
		if (i * PAGE >= region_size)
			continue;
		uint64_t *w = (uint64_t *)(region + i * PAGE);
		w[(i * 31 + seed) % 512] = (seed << 32) | i;
	}
}

static void *worker(void *arg)
{
	int k = (int)(intptr_t)arg;
	char buf[65536];
	for (;;) {
		ssize_t n = read(tpipe[k][0], buf, sizeof buf - 1);
		if (n < 0) {
			if (errno == EINTR) {
				fprintf(stderr, "dt-workload: worker read returned EINTR (restart broken?)\n");
				continue;
			}
			die("worker read");
		}
		if (n == 0)
			return NULL;
		buf[n] = 0;
		do_writes(buf);
		if (write(ackpipe[1], "k", 1) != 1)
			die("ack");
	}
}

static void *sleeper(void *arg)
{
	(void)arg;
	volatile uint64_t *mine = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mine == MAP_FAILED)
		die("mmap");
	for (;;) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
		(*mine)++;
	}
	return NULL;
}

static void harden(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die("no_new_privs");
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		die("seccomp");
	/* self-check: userfaultfd must now fail */
	if (syscall(SYS_userfaultfd, O_CLOEXEC) >= 0 || errno != EPERM) {
		fprintf(stderr, "dt-workload: seccomp filter not effective\n");
		exit(3);
	}
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];
	memset(d, 0, sizeof d);
	if (syscall(SYS_capset, &h, d) < 0)
		die("capset");
	for (int c = 0; c <= 63; c++)
		prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
}

static void loop(FILE *in, FILE *out);

static void *loop_thread(void *arg)
{
	(void)arg;
	loop(stdin, stdout);
	exit(0);
}

static int clonevm_child(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = {1, 0};
		syscall(SYS_nanosleep, &ts, NULL);
	}
	return 0;
}

static void cmd_fork(char *args, FILE *out)
{
	char inpath[256], outpath[256];
	if (sscanf(args, "%255s %255s", inpath, outpath) != 2) {
		fprintf(out, "err usage\n");
		return;
	}
	fflush(out);
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		FILE *ci = fopen(inpath, "r");
		FILE *co = fopen(outpath, "w");
		if (!ci || !co)
			die("fifo");
		fprintf(co, "ready %d\n", (int)getpid());
		fflush(co);
		loop(ci, co);
		exit(0);
	}
	fprintf(out, "ok %d\n", (int)c);
}

static void loop(FILE *in, FILE *out)
{
	static char line[1 << 20];
	while (fgets(line, sizeof line, in)) {
		char *sp = strchr(line, ' ');
		char *args = sp ? sp + 1 : line + strlen(line);
		if (sp)
			*sp = 0;
		line[strcspn(line, "\n")] = 0;
		if (!strcmp(line, "info")) {
			fprintf(out, "ok pid %d base %lu size %lu\n", (int)getpid(), (unsigned long)(uintptr_t)region,
				(unsigned long)region_size);
		} else if (!strcmp(line, "w")) {
			do_writes(args);
			fprintf(out, "ok\n");
		} else if (!strcmp(line, "tw")) {
			int k = atoi(args);
			char *rest = strchr(args, ' ');
			if (k < 0 || k >= nthreads || !rest) {
				fprintf(out, "err bad thread\n");
			} else {
				size_t l = strlen(rest + 1);
				if (write(tpipe[k][1], rest + 1, l) != (ssize_t)l)
					die("tw");
				char a;
				while (read(ackpipe[0], &a, 1) != 1)
					if (errno != EINTR)
						die("ack read");
				fprintf(out, "ok\n");
			}
		} else if (!strcmp(line, "touch")) {
			unsigned long k = 0, stride = 1;
			sscanf(args, "%lu %lu", &k, &stride);
			uint64_t t0 = now_ns();
			for (unsigned long p = 0; p < k; p++) {
				size_t off = (p * stride * PAGE) % region_size;
				region[off] ^= 1;
			}
			fprintf(out, "ok %llu\n", (unsigned long long)(now_ns() - t0));
		} else if (!strcmp(line, "rand")) {
			unsigned long ms = strtoul(args, NULL, 10);
			uint64_t end = now_ns() + ms * 1000000ULL, count = 0, x = 88172645463325252ULL;
			size_t nwords = region_size / 8;
			while (1) {
				for (int k = 0; k < 1024; k++) {
					x ^= x << 13;
					x ^= x >> 7;
					x ^= x << 17;
					((volatile uint64_t *)region)[x % nwords] = x;
				}
				count += 1024;
				if (now_ns() >= end)
					break;
			}
			fprintf(out, "ok %llu\n", (unsigned long long)count);
		} else if (!strcmp(line, "mmap")) {
			size_t sz = strtoul(args, NULL, 10) << 20;
			char *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				die("mmap");
			madvise(p, sz, MADV_NOHUGEPAGE);
			for (size_t o = 0; o < sz; o += PAGE)
				p[o] = (char)(o / PAGE) | 1;
			fprintf(out, "ok %lu %lu\n", (unsigned long)(uintptr_t)p, (unsigned long)sz);
		} else if (!strcmp(line, "sbrk")) {
			size_t sz = strtoul(args, NULL, 10) << 10;
			char *p = sbrk((intptr_t)sz);
			if (p == (void *)-1)
				die("sbrk");
			for (size_t o = 0; o < sz; o += 64)
				p[o] = 0x5a;
			fprintf(out, "ok %lu %lu\n", (unsigned long)(uintptr_t)p, (unsigned long)sz);
		} else if (!strcmp(line, "munmap")) {
			unsigned long a = 0, s = 0;
			sscanf(args, "%lu %lu", &a, &s);
			fprintf(out, munmap((void *)a, s) == 0 ? "ok\n" : "err munmap\n");
		} else if (!strcmp(line, "remap")) {
			/* unmap and map again at the same address: a new, unregistered VMA
			 * with exactly the old boundaries */
			unsigned long a = 0, sz = 0;
			sscanf(args, "%lu %lu", &a, &sz);
			char *p = (char *)a;
			if (munmap(p, sz) < 0 ||
			    mmap(p, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p)
				die("remap");
			madvise(p, sz, MADV_NOHUGEPAGE);
			for (size_t o = 0; o < sz; o += PAGE)
				p[o] = 0x77;
			fprintf(out, "ok\n");
		} else if (!strcmp(line, "prot")) {
			unsigned long a = 0, sz = 0;
			int pr = 0;
			sscanf(args, "%lu %lu %d", &a, &sz, &pr);
			fprintf(out, mprotect((void *)a, sz, pr) == 0 ? "ok\n" : "err mprotect\n");
		} else if (!strcmp(line, "mmapthp")) {
			size_t sz = strtoul(args, NULL, 10) << 20, al = 2UL << 20;
			char *raw = mmap(NULL, sz + al, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (raw == MAP_FAILED)
				die("mmap");
			char *p = (char *)(((uintptr_t)raw + al - 1) & ~(al - 1));
			madvise(p, sz, MADV_HUGEPAGE);
			for (size_t o = 0; o < sz; o += PAGE)
				p[o] = 1;
			fprintf(out, "ok %lu %lu\n", (unsigned long)(uintptr_t)p, (unsigned long)sz);
		} else if (!strcmp(line, "wa")) {
			/* write one byte at absolute addresses */
			char *save = NULL;
			for (char *t = strtok_r(args, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
				*(volatile char *)(uintptr_t)strtoul(t, NULL, 10) ^= 0x55;
			fprintf(out, "ok\n");
		} else if (!strcmp(line, "vfork")) {
			/* the parent sleeps in TASK_KILLABLE until the child exits:
			 * PTRACE_INTERRUPT cannot stop it meanwhile */
			unsigned long secs = strtoul(args, NULL, 10);
			fflush(out);
			pid_t c = vfork();
			if (c == 0) {
				struct timespec ts = {(time_t)secs, 0};
				syscall(SYS_nanosleep, &ts, NULL);
				_exit(0);
			}
			fprintf(out, "ok %d\n", (int)c);
		} else if (!strcmp(line, "clonevm")) {
			/* a separate thread group sharing our mm */
			char *stack = malloc(1 << 16);
			if (!stack)
				die("malloc");
			int c = clone(clonevm_child, stack + (1 << 16), CLONE_VM | SIGCHLD, NULL);
			if (c < 0)
				die("clone");
			fprintf(out, "ok %d\n", c);
		} else if (!strcmp(line, "leaderexit")) {
			/* continue the command loop in a new thread; the main thread exits */
			pthread_t t;
			fprintf(out, "ok\n");
			fflush(out);
			if (pthread_create(&t, NULL, loop_thread, NULL) != 0)
				die("pthread_create");
			pthread_exit(NULL);
		} else if (!strcmp(line, "fork")) {
			cmd_fork(args, out);
		} else if (!strcmp(line, "exec")) {
			fflush(out);
			char *av[] = {g_argv[0], "--mib", "1", NULL};
			execv("/proc/self/exe", av);
			die("execv");
		} else if (!strcmp(line, "exit")) {
			fflush(out);
			exit(0);
		} else if (!strcmp(line, "check")) {
			fprintf(out, "ok\n");
		} else {
			fprintf(out, "err unknown %s\n", line);
		}
		fflush(out);
	}
}

int main(int argc, char **argv)
{
	g_argv = argv;
	unsigned long mib = 16;
	int sleepers = 0, hard = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			nthreads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--sleepers") && i + 1 < argc)
			sleepers = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--harden"))
			hard = 1;
	}
	if (nthreads > 64)
		nthreads = 64;
	region_size = mib << 20;
	region = mmap(NULL, region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap region");
	madvise(region, region_size, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < region_size / PAGE; i++) {
		uint64_t *w = (uint64_t *)(region + i * PAGE);
		for (int j = 0; j < 512; j++)
			w[j] = (uint64_t)i * 1000003ULL + (uint64_t)j;
	}
	if (pipe(ackpipe) < 0)
		die("pipe");
	for (int k = 0; k < nthreads; k++) {
		pthread_t t;
		if (pipe(tpipe[k]) < 0)
			die("pipe");
		if (pthread_create(&t, NULL, worker, (void *)(intptr_t)k) != 0)
			die("pthread_create");
	}
	for (int k = 0; k < sleepers; k++) {
		pthread_t t;
		if (pthread_create(&t, NULL, sleeper, NULL) != 0)
			die("pthread_create");
	}
	if (hard)
		harden();
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	loop(stdin, stdout);
	return 0;
}
