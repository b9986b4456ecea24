/* Test client: starts COMMAND... swrk <fd> as runc does, sends one request (hex), prints the answer (hex),
 * and exits with COMMAND's exit status.   swrk-client REQ_HEX COMMAND... */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	unsigned char req[4096], resp[65536];
	size_t n = strlen(argv[1]) / 2;
	for (size_t i = 0; i < n && i < sizeof req; i++)
		sscanf(argv[1] + 2 * i, "%2hhx", &req[i]);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) < 0)
		return 3;
	pid_t pid = fork();
	if (pid == 0) {
		char fd[16];
		snprintf(fd, sizeof fd, "%d", sp[1]);
		close(sp[0]);
		char **av = calloc((size_t)argc + 2, sizeof *av);
		int k = 0;
		for (int i = 2; i < argc; i++)
			av[k++] = argv[i];
		av[k++] = "swrk";
		av[k++] = fd;
		execv(av[0], av);
		_exit(127);
	}
	close(sp[1]);
	if (send(sp[0], req, n, 0) != (ssize_t)n)
		return 4;
	ssize_t r = recv(sp[0], resp, sizeof resp, 0);
	for (ssize_t i = 0; i < r; i++)
		printf("%02x", resp[i]);
	printf("\n");
	close(sp[0]);
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
