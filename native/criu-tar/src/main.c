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
 *  - create with --gzip: a tree of directories, symlinks, device nodes and fifos (what /dev and the cgroup
 *    tmpfs hold) is archived here, as GNU tar would (an empty one byte for byte); anything else is archived
 *    uncompressed by the real tar (one exec instead of three processes);
 *  - extract with --gzip: an archive on stdin (a regular image file) that does not start with gzip's magic
 *    bytes is extracted here if it holds only such entries, else by the real tar without --gzip; a gzip
 *    archive (an image from a CRIU without this shim) is extracted as before;
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
#include <sys/sysmacros.h>
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

/* width includes the terminating NUL, as GNU tar writes these fields; callers check that v fits */
static void octal(char *field, size_t width, unsigned long long v)
{
	field[width - 1] = 0;
	for (size_t i = width - 1; i-- > 0; v >>= 3)
		field[i] = (char)('0' + (v & 7));
}

static unsigned long long unoctal(const char *f, size_t width, int *bad)
{
	unsigned long long v = 0;
	size_t i = 0;
	while (i < width && f[i] == ' ')
		i++;
	for (; i < width && f[i] >= '0' && f[i] <= '7'; i++)
		v = v * 8 + (unsigned long long)(f[i] - '0');
	if (i < width && f[i] != 0 && f[i] != ' ')
		*bad = 1;
	return v;
}

/*
 * An archive built in memory, so that nothing reaches the image before it is certain the real tar is not
 * needed. Only what a container's /dev and /sys/fs/cgroup hold is built here: directories, symlinks,
 * device nodes and fifos, with short names. Anything else (a regular file, a hard link, another filesystem
 * below the root, a long name) makes the real tar do the whole archive.
 */
#define MAX_ARCHIVE (1 << 20)
static char arc[MAX_ARCHIVE + RECORD];
static size_t arc_len;

static int add_header(const char *name, const struct stat *st, char type, const char *link)
{
	if (strlen(name) > 99 || (link && strlen(link) > 99) || arc_len + BLOCK > MAX_ARCHIVE ||
	    st->st_uid > 07777777 || st->st_gid > 07777777 || (unsigned long long)st->st_mtime > 077777777777ull ||
	    major(st->st_rdev) > 07777777 || minor(st->st_rdev) > 07777777)
		return -1;
	char *h = arc + arc_len;
	memset(h, 0, BLOCK);
	memcpy(h, name, strlen(name));
	octal(h + 100, 8, st->st_mode & 07777);
	octal(h + 108, 8, st->st_uid);
	octal(h + 116, 8, st->st_gid);
	octal(h + 124, 12, 0);
	octal(h + 136, 12, (unsigned long long)st->st_mtime);
	h[156] = type;
	if (link)
		memcpy(h + 157, link, strlen(link));
	memcpy(h + 257, "ustar  ", 8); /* GNU magic and version: "ustar" ' ' ' ' NUL */
	if (type == '3' || type == '4') {
		octal(h + 329, 8, major(st->st_rdev));
		octal(h + 337, 8, minor(st->st_rdev));
	}
	memset(h + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < BLOCK; i++)
		sum += (unsigned char)h[i];
	snprintf(h + 148, 8, "%06o", sum); /* six digits, NUL, and the space that is already there */
	arc_len += BLOCK;
	return 0;
}

/* Depth first, parents before children (the extractor creates them in that order), as GNU tar does. */
static int add_tree(int dfd, const char *prefix, dev_t dev)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return -1;
	}
	int rc = 0;
	struct dirent *e;
	while (!rc && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char name[PATH_MAX], link[PATH_MAX];
		struct stat st;
		if ((size_t)snprintf(name, sizeof name, "%s%s", prefix, e->d_name) >= 100 ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) || st.st_dev != dev) {
			rc = -1;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			strcat(name, "/");
			int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			rc = sub < 0 || add_header(name, &st, '5', NULL) ? -1 : add_tree(sub, name, dev);
		} else if (st.st_nlink > 1) {
			rc = -1; /* a hard link: the real tar writes it as one */
		} else if (S_ISLNK(st.st_mode)) {
			ssize_t n = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
			if (n < 0 || n >= 100)
				rc = -1;
			else
				link[n] = 0, rc = add_header(name, &st, '2', link);
		} else if (S_ISCHR(st.st_mode)) {
			rc = add_header(name, &st, '3', NULL);
		} else if (S_ISBLK(st.st_mode)) {
			rc = add_header(name, &st, '4', NULL);
		} else if (S_ISFIFO(st.st_mode)) {
			rc = add_header(name, &st, '6', NULL);
		} else {
			rc = -1; /* regular files (contents, sparseness) and sockets (skipped with a warning) */
		}
	}
	closedir(d);
	return rc;
}

static int write_all(int fd, const char *p, size_t n)
{
	for (size_t off = 0; off < n;) {
		ssize_t w = write(fd, p + off, n - off);
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

/* CRIU's create: `--directory DIR .`. Returns -1 if the real tar has to make this archive. */
static int create_here(int argc, char **argv)
{
	int d = has(argc, argv, "--directory");
	if (!d || d + 2 != argc - 1 || strcmp(argv[argc - 1], "."))
		return -1;
	int dfd = open(argv[d + 1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (dfd < 0 || fstat(dfd, &st)) {
		if (dfd >= 0)
			close(dfd);
		return -1;
	}
	arc_len = 0;
	if (add_header("./", &st, '5', NULL) || add_tree(dfd, "./", st.st_dev))
		return -1;
	/* GNU tar ends with two zero blocks and pads to a whole record */
	size_t total = (arc_len + 2 * BLOCK + RECORD - 1) / RECORD * RECORD;
	memset(arc + arc_len, 0, total - arc_len);
	return write_all(STDOUT_FILENO, arc, total);
}

struct dirattr {
	char name[101];
	mode_t mode;
	uid_t uid;
	gid_t gid;
	time_t mtime;
};

/*
 * CRIU's extract into a freshly mounted tmpfs. The archive is checked whole first; if it holds anything but
 * directories, symlinks, device nodes and fifos with plain relative names, -1: the real tar extracts it.
 * What GNU tar run as root does with those is done here: owners, modes and mtimes as archived (atime now),
 * directories' attributes last, deepest first, once their entries are in.
 */
static int extract_here(int argc, char **argv)
{
	int d = has(argc, argv, "--directory");
	if (!d || d + 1 >= argc)
		return -1;
	struct stat in;
	off_t at = lseek(STDIN_FILENO, 0, SEEK_CUR);
	if (at < 0 || fstat(STDIN_FILENO, &in) || !S_ISREG(in.st_mode) || in.st_size - at > MAX_ARCHIVE)
		return -1;
	ssize_t n = pread(STDIN_FILENO, arc, MAX_ARCHIVE, at);
	if (n < BLOCK || n % BLOCK)
		return -1;
	static struct dirattr dirs[MAX_ARCHIVE / BLOCK];
	size_t ndirs = 0, end = 0;
	for (size_t off = 0; off + BLOCK <= (size_t)n; off += BLOCK) {
		const char *h = arc + off;
		int zero = 1;
		for (int i = 0; i < BLOCK && zero; i++)
			zero = h[i] == 0;
		if (zero) {
			end = off;
			break;
		}
		int bad = 0;
		unsigned sum = 0;
		for (int i = 0; i < BLOCK; i++)
			sum += (i >= 148 && i < 156) ? ' ' : (unsigned char)h[i];
		if (unoctal(h + 148, 8, &bad) != sum || bad || memcmp(h + 257, "ustar", 5) || h[99] || h[256] ||
		    unoctal(h + 124, 12, &bad) != 0 || bad || !h[156] || !memchr("52346", h[156], 5))
			return -1;
		if (h[0] == '/' || strstr(h, "..") || (strncmp(h, "./", 2) && strcmp(h, ".")))
			return -1;
		end = off + BLOCK;
	}
	if (!end)
		return -1;

	int root = open(argv[d + 1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		fprintf(stderr, "ferry-criu-tar: %s: %s\n", argv[d + 1], strerror(errno));
		return 2;
	}
	for (size_t off = 0; off < end; off += BLOCK) {
		const char *h = arc + off;
		int bad = 0;
		char name[101];
		memcpy(name, h, 100);
		name[100] = 0;
		size_t len = strlen(name);
		while (len > 1 && name[len - 1] == '/')
			name[--len] = 0;
		const char *rel = !strcmp(name, ".") || !strcmp(name, "./") ? "." : name + 2;
		mode_t mode = (mode_t)unoctal(h + 100, 8, &bad);
		uid_t uid = (uid_t)unoctal(h + 108, 8, &bad);
		gid_t gid = (gid_t)unoctal(h + 116, 8, &bad);
		time_t mtime = (time_t)unoctal(h + 136, 12, &bad);
		struct timespec ts[2] = {{0, UTIME_NOW}, {mtime, 0}};
		int r = 0;
		switch (h[156]) {
		case '5':
			if (strcmp(rel, ".") && mkdirat(root, rel, 0700) && errno != EEXIST)
				r = -1;
			snprintf(dirs[ndirs].name, sizeof dirs[ndirs].name, "%s", rel);
			dirs[ndirs].mode = mode, dirs[ndirs].uid = uid, dirs[ndirs].gid = gid, dirs[ndirs].mtime = mtime;
			ndirs++;
			continue;
		case '2': {
			char link[101];
			memcpy(link, h + 157, 100);
			link[100] = 0;
			r = symlinkat(link, root, rel) || fchownat(root, rel, uid, gid, AT_SYMLINK_NOFOLLOW) ||
			    utimensat(root, rel, ts, AT_SYMLINK_NOFOLLOW);
			break;
		}
		default: {
			mode_t type = h[156] == '3' ? S_IFCHR : h[156] == '4' ? S_IFBLK : S_IFIFO;
			dev_t dev = makedev(unoctal(h + 329, 8, &bad), unoctal(h + 337, 8, &bad));
			/* chmod after chown: chown clears set-id bits */
			r = mknodat(root, rel, type | (mode & 0777), type == S_IFIFO ? 0 : dev) ||
			    fchownat(root, rel, uid, gid, AT_SYMLINK_NOFOLLOW) || fchmodat(root, rel, mode & 07777, 0) ||
			    utimensat(root, rel, ts, AT_SYMLINK_NOFOLLOW);
		}
		}
		if (r) {
			fprintf(stderr, "ferry-criu-tar: extract %s: %s\n", name, strerror(errno));
			return 2;
		}
	}
	while (ndirs--) {
		struct dirattr *a = &dirs[ndirs];
		struct timespec ts[2] = {{0, UTIME_NOW}, {a->mtime, 0}};
		if (fchownat(root, a->name, a->uid, a->gid, AT_SYMLINK_NOFOLLOW) || fchmodat(root, a->name, a->mode & 07777, 0) ||
		    utimensat(root, a->name, ts, AT_SYMLINK_NOFOLLOW)) {
			fprintf(stderr, "ferry-criu-tar: extract %s: %s\n", a->name, strerror(errno));
			return 2;
		}
	}
	close(root);
	return 0;
}

int main(int argc, char **argv)
{
	int gz = has(argc, argv, "--gzip");
	if (gz && has(argc, argv, "--create") && !has(argc, argv, "--file")) {
		int rc = create_here(argc, argv);
		if (rc >= 0)
			return rc;
		drop_arg(argc, argv, gz);
	} else if (gz && has(argc, argv, "--extract") && !has(argc, argv, "--file")) {
		unsigned char magic[2];
		off_t at = lseek(STDIN_FILENO, 0, SEEK_CUR);
		/* Only a seekable image can be peeked at; a pipe keeps the --gzip it came with. */
		if (at >= 0 && pread(STDIN_FILENO, magic, 2, at) == 2 && !(magic[0] == 0x1f && magic[1] == 0x8b)) {
			int rc = extract_here(argc, argv);
			if (rc >= 0)
				return rc;
			drop_arg(argc, argv, gz);
		}
	}
	exec_real(argv);
	return 127;
}
