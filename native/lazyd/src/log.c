/* Logging in CRIU's style: "(seconds.micros) message", to the -o file or stderr. */
#include "lazyd.h"

#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

int lz_loglevel = 2;
static int log_fd = 2;
static uint64_t t0;

void lz_log_open(const char *path)
{
	t0 = lz_now_us();
	if (!path || !strcmp(path, "-"))
		return;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "ferry-lazyd: can't open log %s: %s\n", path, strerror(errno));
		return;
	}
	log_fd = fd;
}

void lz_log(int level, const char *fmt, ...)
{
	if (level > lz_loglevel)
		return;
	char buf[1024];
	uint64_t t = lz_now_us() - t0;
	int n = snprintf(buf, sizeof buf, "(%02llu.%06llu) ", (unsigned long long)(t / 1000000),
			 (unsigned long long)(t % 1000000));
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < sizeof buf)
		n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof buf - 1)
		n = sizeof buf - 2;
	if (buf[n - 1] != '\n')
		buf[n++] = '\n';
	ssize_t w = write(log_fd, buf, (size_t)n);
	(void)w;
}
