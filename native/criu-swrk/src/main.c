/*
 * ferry-criu-swrk: answers runc's CRIU version and feature questions without starting CRIU.
 *
 *   ferry-criu-swrk --identity CRIU_BINARY -- COMMAND... swrk FD
 *
 * Before every `runc checkpoint` runc starts `criu swrk` once to ask for CRIU's version and, for a lazy dump,
 * once more for a feature check; before every `runc restore`, once for the version. Each is a whole CRIU
 * process start (~25-65 ms on the 2-core test VM), and all of them run inside the container's freeze. The
 * answers cannot change while the kernel and the CRIU binary stay the same, so this front peeks at the request
 * on the swrk socket: a VERSION or FEATURE_CHECK request is answered from a cache of CRIU's own earlier answer
 * to the same request (see answer_key; kept per boot and per CRIU binary, like CRIU's kernel-probe cache); on a
 * miss it asks the real CRIU, through a socket of its own, and keeps the answer if it says success. Any other
 * request is left unread on the socket and COMMAND is exec'd as it is.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* criu/rpc.proto criu_req_type */
#define REQ_FEATURE_CHECK 9
#define REQ_VERSION 10
#define MAX_MSG 65536

static const char *cache_dir = "/run/ferry/criu-rpc";

static void die(const char *what)
{
	fprintf(stderr, "ferry-criu-swrk: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The request type: field 1 (varint), which every encoder puts first. -1 if it is not there. */
static long req_type(const unsigned char *m, size_t n)
{
	if (n < 2 || m[0] != 0x08)
		return -1;
	long v = 0;
	for (size_t i = 1, shift = 0; i < n && shift < 35; i++, shift += 7) {
		v |= (long)(m[i] & 0x7f) << shift;
		if (!(m[i] & 0x80))
			return v;
	}
	return -1;
}

static int varint(const unsigned char *m, size_t n, size_t *i, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; *i < n && shift < 64; shift += 7) {
		unsigned char b = m[(*i)++];
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return 0;
	}
	return -1;
}

/*
 * What the answer depends on: the request without its criu_opts (field 2). runc sends a feature check with
 * all of the coming dump's options, the task's pid among them; CRIU's answer comes from the kernel (its
 * kdat probes) and the features asked for, not from those options. -1 if the message does not parse.
 */
static ssize_t answer_key(const unsigned char *m, size_t n, unsigned char *out)
{
	size_t i = 0, o = 0;
	while (i < n) {
		size_t start = i;
		uint64_t tag, v;
		if (varint(m, n, &i, &tag))
			return -1;
		switch (tag & 7) {
		case 0: if (varint(m, n, &i, &v)) return -1; break;
		case 1: i += 8; break;
		case 2: if (varint(m, n, &i, &v) || v > n - i) return -1; i += v; break;
		case 5: i += 4; break;
		default: return -1;
		}
		if (i > n)
			return -1;
		if (tag >> 3 != 2) {
			memcpy(out + o, m + start, i - start);
			o += i - start;
		}
	}
	return (ssize_t)o;
}

/* criu_resp.success (field 2, varint) is true: only successful answers are kept. */
static int resp_success(const unsigned char *m, size_t n)
{
	size_t i = 0;
	if (i < n && m[i] == 0x08)
		for (i++; i < n && (m[i++] & 0x80);)
			;
	return i + 1 < n && m[i] == 0x10 && m[i + 1] == 0x01;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	for (const unsigned char *c = p; n--; c++)
		h = (h ^ *c) * 0x100000001b3ull;
	return h;
}

/* The cache file for this request on this boot with this CRIU binary. */
static void cache_path(char *out, size_t outsz, const char *identity, const unsigned char *req, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	char boot[64] = "";
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t r = read(fd, boot, sizeof boot - 1);
		boot[r > 0 ? r : 0] = 0;
		close(fd);
	}
	h = fnv(h, boot, strlen(boot));
	struct stat st;
	if (stat(identity, &st) == 0) {
		uint64_t id[5] = {st.st_dev, st.st_ino, (uint64_t)st.st_size, (uint64_t)st.st_mtim.tv_sec,
				  (uint64_t)st.st_mtim.tv_nsec};
		h = fnv(h, id, sizeof id);
	}
	h = fnv(h, req, n);
	snprintf(out, outsz, "%s/%016llx", cache_dir, (unsigned long long)h);
}

/* A cached answer: the file holds the request's length, the request, then the answer. */
static ssize_t cache_read(const char *path, const unsigned char *req, size_t n, unsigned char *resp)
{
	static unsigned char buf[2 * MAX_MSG + 4];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t r = read(fd, buf, sizeof buf);
	close(fd);
	uint32_t len;
	if (r < 4)
		return -1;
	memcpy(&len, buf, 4);
	if (len != n || (size_t)r <= 4 + n || memcmp(buf + 4, req, n))
		return -1; /* another request under the same hash, or a torn file */
	memcpy(resp, buf + 4 + n, (size_t)r - 4 - n);
	return r - 4 - (ssize_t)n;
}

static void cache_write(const char *path, const unsigned char *req, size_t n, const unsigned char *resp, size_t rn)
{
	char tmp[4200];
	if (mkdir(cache_dir, 0700) < 0 && errno != EEXIST)
		return;
	snprintf(tmp, sizeof tmp, "%s.%d", path, getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	uint32_t len = (uint32_t)n;
	int ok = write(fd, &len, 4) == 4 && write(fd, req, n) == (ssize_t)n && write(fd, resp, rn) == (ssize_t)rn;
	close(fd);
	if (!ok || rename(tmp, path) < 0)
		unlink(tmp);
}

/* Cache miss: the real CRIU answers on a socket of ours; its exit status becomes ours. */
static int ask_criu(int sk, char **cmd, int ncmd, const unsigned char *req, size_t n, unsigned char *resp, ssize_t *rn)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		die("socketpair");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		char fdarg[16];
		close(sk); /* runc's socket is answered by the parent */
		int fd = dup(sp[1]); /* without CLOEXEC: CRIU inherits it */
		snprintf(fdarg, sizeof fdarg, "%d", fd);
		cmd[ncmd - 1] = fdarg;
		execv(cmd[0], cmd);
		_exit(127);
	}
	close(sp[1]);
	*rn = -1;
	if (send(sp[0], req, n, 0) == (ssize_t)n)
		*rn = recv(sp[0], resp, MAX_MSG, 0);
	close(sp[0]); /* CRIU's swrk loop ends on EOF */
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
	if (argc < 5 || strcmp(argv[1], "--identity") || strcmp(argv[3], "--")) {
		fprintf(stderr, "usage: ferry-criu-swrk --identity CRIU_BINARY -- COMMAND...\n");
		return 2;
	}
	const char *identity = argv[2];
	char **cmd = argv + 4;
	int ncmd = argc - 4;
	if (getenv("FERRY_CRIU_RPC_CACHE_DIR"))
		cache_dir = getenv("FERRY_CRIU_RPC_CACHE_DIR");
	int sk = -1;
	if (ncmd >= 2 && !strcmp(cmd[ncmd - 2], "swrk"))
		sk = atoi(cmd[ncmd - 1]);
	if (sk <= 2)
		goto pass;

	static unsigned char req[MAX_MSG], resp[MAX_MSG];
	char ctl[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = {req, sizeof req};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	ssize_t n = recvmsg(sk, &mh, MSG_PEEK | MSG_CMSG_CLOEXEC);
	/* Only small requests without file descriptors: the two kinds answered here carry none. */
	if (n <= 0 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || mh.msg_controllen)
		goto pass;
	long t = req_type(req, (size_t)n);
	if (t != REQ_VERSION && t != REQ_FEATURE_CHECK)
		goto pass;

	static unsigned char key[MAX_MSG];
	ssize_t kn = answer_key(req, (size_t)n, key);
	if (kn < 0)
		goto pass;
	char path[4096];
	cache_path(path, sizeof path, identity, key, (size_t)kn);
	ssize_t rn = cache_read(path, key, (size_t)kn, resp);
	int status = 0;
	if (rn < 0) {
		status = ask_criu(sk, cmd, ncmd, req, (size_t)n, resp, &rn);
		if (rn > 0 && status == 0 && resp_success(resp, (size_t)rn))
			cache_write(path, key, (size_t)kn, resp, (size_t)rn);
	}
	if (recv(sk, req, sizeof req, 0) != n) /* the request, consumed now that it is answered */
		die("recv");
	if (rn > 0 && send(sk, resp, (size_t)rn, MSG_NOSIGNAL) != rn)
		die("send");
	return status;

pass:
	execv(cmd[0], cmd);
	die(cmd[0]);
}
