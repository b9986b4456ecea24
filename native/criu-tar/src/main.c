/*
 * ferry-criu-tar: the `tar` that Ferry's CRIU wrapper puts first on CRIU's PATH.
 *
 * CRIU keeps the contents of every tmpfs in a container's mount namespace as `tar --create --gzip` output
 * (criu/mount.c tmpfs_dump) and unpacks it with `tar --extract --gzip` (tmpfs_restore). A Docker container has
 * five of them (/dev, /dev/shm, /sys/fs/cgroup on cgroup v1, and the empty masks on /proc/acpi and
 * /sys/firmware), and each --gzip makes tar fork and exec `sh -c gzip`: three processes per mount, inside the
 * freeze, on the dump and again on the restore. On the 2-core test VM that was ~15 ms per mount, ~75 ms of a
 * dump. The contents are a few device nodes and directories, nothing worth compressing, so:
 *
 *  - create with --gzip: the archive is written uncompressed (one exec of the real tar instead of three
 *    processes), or, for an empty directory, written here (no exec at all) byte for byte as GNU tar would;
 *  - extract with --gzip: if the archive on stdin (a regular image file) does not start with gzip's magic
 *    bytes, it is extracted without --gzip; a gzip archive (an image from a CRIU without this shim) is
 *    extracted as before;
 *  - anything else goes to the real tar unchanged.
 *
 * So an image written here needs this shim on the restoring host too: every Ferry host installs it
 * (install-host.sh), and a host without it cannot restore such an image ("not in gzip format").
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 512
#define RECORD (20 * BLOCK) /* GNU tar's default blocking factor */

static int has(int argc, char **argv, const char *flag)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], flag))
			return i;
	return 0;
}

/* The real tar: the first `tar` on PATH that is not in this program's own directory. */
static void exec_real(char **argv)
{
	char self[PATH_MAX], dir[PATH_MAX], cand[PATH_MAX + 8];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	self[n > 0 ? n : 0] = 0;
	char *slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/bin:/bin";
	for (const char *p = path; *p;) {
		size_t len = strcspn(p, ":");
		if (len > 0 && len < sizeof dir) {
			memcpy(dir, p, len);
			dir[len] = 0;
			char real[PATH_MAX];
			if (!realpath(dir, real) || strcmp(real, self)) {
				snprintf(cand, sizeof cand, "%s/tar", dir);
				if (access(cand, X_OK) == 0) {
					execv(cand, argv);
					fprintf(stderr, "ferry-criu-tar: %s: %s\n", cand, strerror(errno));
					_exit(127);
				}
			}
		}
		p += len;
		if (*p == ':')
			p++;
	}
	fprintf(stderr, "ferry-criu-tar: no tar on PATH besides %s\n", self);
	_exit(127);
}

/* argv without the element at `drop` (argv stays NULL-terminated). */
static void drop_arg(int argc, char **argv, int drop)
{
	memmove(&argv[drop], &argv[drop + 1], (size_t)(argc - drop) * sizeof *argv);
}

static void octal(char *field, size_t width, unsigned long long v)
{
	/* width includes the terminating NUL, as GNU tar writes these fields */
	snprintf(field, width, "%0*llo", (int)(width - 1), v);
}

/*
 * The archive GNU tar makes of an empty directory with CRIU's flags (--numeric-owner, GNU format): one "./"
 * header and zero blocks up to a full record. test/run.sh compares it with the real tar's bytes.
 */
static int write_empty_dir_archive(const struct stat *st)
{
	static char rec[RECORD];
	char *h = rec;
	memset(rec, 0, sizeof rec);
	strcpy(h, "./");
	octal(h + 100, 8, st->st_mode & 07777);
	octal(h + 108, 8, st->st_uid);
	octal(h + 116, 8, st->st_gid);
	octal(h + 124, 12, 0);
	octal(h + 136, 12, (unsigned long long)st->st_mtime);
	h[156] = '5';
	memcpy(h + 257, "ustar  ", 8); /* GNU magic and version: "ustar" ' ' ' ' NUL */
	memset(h + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < BLOCK; i++)
		sum += (unsigned char)h[i];
	snprintf(h + 148, 8, "%06o", sum); /* six digits, NUL, and the space that is already there */
	for (size_t off = 0; off < sizeof rec;) {
		ssize_t w = write(STDOUT_FILENO, rec + off, sizeof rec - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "ferry-criu-tar: write: %s\n", strerror(errno));
			return 2;
		}
		off += (size_t)w;
	}
	return 0;
}

/* CRIU's create: `--directory /proc/self/fd/0 .`; anything else is not ours to shortcut. */
static int empty_dir(int argc, char **argv, struct stat *st)
{
	int d = has(argc, argv, "--directory");
	if (!d || d + 2 != argc - 1 || strcmp(argv[argc - 1], "."))
		return 0;
	DIR *dir = opendir(argv[d + 1]);
	if (!dir)
		return 0;
	int empty = 1;
	struct dirent *e;
	while (empty && (e = readdir(dir)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			empty = 0;
	int ok = empty && fstat(dirfd(dir), st) == 0;
	closedir(dir);
	return ok;
}

int main(int argc, char **argv)
{
	int gz = has(argc, argv, "--gzip");
	if (gz && has(argc, argv, "--create") && !has(argc, argv, "--file")) {
		struct stat st;
		if (empty_dir(argc, argv, &st))
			return write_empty_dir_archive(&st);
		drop_arg(argc, argv, gz);
	} else if (gz && has(argc, argv, "--extract") && !has(argc, argv, "--file")) {
		unsigned char magic[2];
		off_t at = lseek(STDIN_FILENO, 0, SEEK_CUR);
		/* Only a seekable image can be peeked at; a pipe keeps the --gzip it came with. */
		if (at >= 0 && pread(STDIN_FILENO, magic, 2, at) == 2 && !(magic[0] == 0x1f && magic[1] == 0x8b))
			drop_arg(argc, argv, gz);
	}
	exec_real(argv);
	return 127;
}
