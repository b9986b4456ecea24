// memhog: a workload for migration tests. It holds N MiB of anonymous memory, dirties pages at a steady rate,
// and can prove on request that every page survived a checkpoint/restore intact and up to date.
//
//   memhog --mib N [--rate PAGES_PER_SEC] [--pattern random|sequential] --port P
//
// TCP 127.0.0.1:P, one command per line:
//   ping   -> "pong <n>"   n counts pings over the process lifetime, so a client sees gaps/duplicates if state is lost
//   verify -> "ok <pages>" or "bad <count>"   (count = pages that fail a check, +1 if the global sum is off)
//   stats  -> "rss_pages <n> dirtied <n>"
//   grow M -> maps M MiB more as a new region, fills it, and includes it in verify: "ok <total pages>"
//             (memory that appears while a pre-copy runs must arrive too)
//
// Each page starts with {index, generation, check} and ends with check again, check = hash(index, generation):
// a zeroed, torn, misplaced or foreign page fails. A page restored from an OLDER copy is still self-consistent,
// so the generation is also kept in a separate shadow array and, in sequential mode, must follow QEMU's
// invariant (all pages at g except a prefix at g+1, derived from the dirtied counter). The sum of all
// generations must equal the number of writes. Pre-copy bugs (a missed dirty page) show up as "bad".
// Single-threaded on purpose: one poll() loop serves clients and paces the writes, so there are no locks and
// CRIU sees one simple task.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define TAIL (PAGE / 8 - 1)        // index of the last u64 in a page
#define MAX_LINE 256
#define MAX_OUT 4096

struct client {
  int fd, skip;                    // skip: discarding the rest of an over-long line
  size_t inlen, outlen;
  char in[MAX_LINE], out[MAX_OUT];
};

static uint64_t *mem;              // npages pages; u64 view: [0]=index [1]=generation [2]=check ... [TAIL]=check
static uint64_t *shadow;           // generation of each page, kept apart from mem
static size_t npages;
static int sequential;
static uint64_t dirtied, pings, rng;
static struct client *clients;
#define MAX_GROWN 64
static uint64_t *grown[MAX_GROWN];  // regions added by "grow"; page i of region r holds its tag in every u64
static size_t grown_pages[MAX_GROWN], ngrown;
static size_t nclients;

// splitmix64 finalizer over (index, generation); never 0 in practice, so a zero page cannot pass.
static uint64_t check_of(uint64_t idx, uint64_t gen) {
  uint64_t z = idx * 0x9E3779B97F4A7C15ull + gen * 0xC2B2AE3D27D4EB4Full + 0x165667B19E3779F9ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void write_page(size_t i, uint64_t gen) {
  uint64_t *p = mem + i * (PAGE / 8), c = check_of(i, gen);
  p[0] = i;
  p[1] = gen;
  p[2] = c;
  p[TAIL] = c;
  shadow[i] = gen;
}

static uint64_t next_rand(void) {  // xorshift64*: cheap, and its state migrates with the process
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545F4914F6CDD1Dull;
}

static void dirty_one(void) {
  // Sequential: QEMU-style sweep, the cursor is dirtied % npages. Random: any page, uniformly.
  size_t i = sequential ? (size_t)(dirtied % npages) : (size_t)(next_rand() % npages);
  write_page(i, shadow[i] + 1);
  dirtied++;
}

static uint64_t verify(void) {
  uint64_t bad = 0, sum = 0, base = dirtied / npages, cursor = dirtied % npages;
  for (size_t i = 0; i < npages; i++) {
    const uint64_t *p = mem + i * (PAGE / 8);
    uint64_t gen = p[1];
    int ok = p[0] == i && p[2] == check_of(i, gen) && p[TAIL] == p[2] && gen == shadow[i];
    if (sequential && gen != base + (i < cursor))
      ok = 0;
    bad += !ok;
    sum += gen;
  }
  if (sum != dirtied)
    bad++;
  for (size_t r = 0; r < ngrown; r++)
    for (size_t i = 0; i < grown_pages[r]; i++) {
      const uint64_t *p = grown[r] + i * (PAGE / 8), tag = check_of(r << 32 | i, ~0ull);
      bad += p[0] != tag || p[TAIL] != tag || p[PAGE / 16] != tag;
    }
  return bad;
}

static size_t total_pages(void) {
  size_t n = npages;
  for (size_t r = 0; r < ngrown; r++)
    n += grown_pages[r];
  return n;
}

static int grow(long mib) {
  if (mib <= 0 || mib > 4096 || ngrown == MAX_GROWN)
    return -1;
  size_t n = (size_t)mib * (1024 * 1024 / PAGE);
  uint64_t *m = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED)
    return -1;
  for (size_t i = 0; i < n; i++) {
    uint64_t *p = m + i * (PAGE / 8), tag = check_of((uint64_t)ngrown << 32 | i, ~0ull);
    p[0] = p[PAGE / 16] = p[TAIL] = tag;
  }
  grown[ngrown] = m;
  grown_pages[ngrown++] = n;
  return 0;
}

static long rss_pages(void) {
  long size = 0, rss = -1;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f && fscanf(f, "%ld %ld", &size, &rss) != 2)
    rss = -1;
  if (f)
    fclose(f);
  return rss;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void drop_client(size_t k) {
  close(clients[k].fd);
  clients[k] = clients[--nclients];
}

// Queues a reply and sends what the socket takes now; the rest goes out on POLLOUT. A client that does not
// read its replies is dropped rather than allowed to grow our memory (which would disturb the measurement).
static int reply(struct client *c, const char *s) {
  size_t n = strlen(s);
  if (c->outlen + n > MAX_OUT)
    return -1;
  memcpy(c->out + c->outlen, s, n);
  c->outlen += n;
  ssize_t w = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (w < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  memmove(c->out, c->out + w, c->outlen - (size_t)w);
  c->outlen -= (size_t)w;
  return 0;
}

static int command(struct client *c, char *line) {
  char buf[128];
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
    line[--n] = 0;
  if (!strcmp(line, "ping")) {
    snprintf(buf, sizeof buf, "pong %llu\n", (unsigned long long)++pings);
  } else if (!strcmp(line, "verify")) {
    uint64_t bad = verify();
    if (bad)
      snprintf(buf, sizeof buf, "bad %llu\n", (unsigned long long)bad);
    else
      snprintf(buf, sizeof buf, "ok %zu\n", total_pages());
  } else if (!strncmp(line, "grow ", 5)) {
    if (grow(strtol(line + 5, NULL, 10)))
      snprintf(buf, sizeof buf, "err grow\n");
    else
      snprintf(buf, sizeof buf, "ok %zu\n", total_pages());
  } else if (!strcmp(line, "stats")) {
    snprintf(buf, sizeof buf, "rss_pages %ld dirtied %llu\n", rss_pages(), (unsigned long long)dirtied);
  } else {
    snprintf(buf, sizeof buf, n ? "err unknown command\n" : "");  // an empty line gets no answer
  }
  return reply(c, buf);
}

// Reads what is there and runs every complete line; a partial line waits for the rest.
static int on_readable(struct client *c) {
  ssize_t r = recv(c->fd, c->in + c->inlen, sizeof c->in - c->inlen, MSG_DONTWAIT);
  if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
    return -1;
  if (r < 0)
    return 0;
  c->inlen += (size_t)r;
  char *start = c->in, *nl;
  while ((nl = memchr(start, '\n', c->inlen - (size_t)(start - c->in)))) {
    *nl = 0;
    if (!c->skip && command(c, start) < 0)
      return -1;
    c->skip = 0;
    start = nl + 1;
  }
  c->inlen -= (size_t)(start - c->in);
  memmove(c->in, start, c->inlen);
  if (c->inlen == sizeof c->in) {  // no newline in MAX_LINE bytes: answer once, drop the line up to its end
    c->inlen = 0;
    if (!c->skip++)
      return reply(c, "err line too long\n");
  }
  return 0;
}

static void on_exit_signal(int sig) {
  (void)sig;
  _exit(0);  // as PID 1 in a container, default-action signals are ignored: exit so `docker stop` is quick
}

static void usage(void) {
  fprintf(stderr, "usage: memhog --mib N [--rate PAGES_PER_SEC] [--pattern random|sequential] --port P\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"mib", 1, 0, 'm'}, {"rate", 1, 0, 'r'}, {"pattern", 1, 0, 'p'},
                                       {"port", 1, 0, 'P'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  long mib = -1, port = -1;
  double rate = 0;
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'm': mib = strtol(optarg, NULL, 10); break;
    case 'r': rate = strtod(optarg, NULL); break;
    case 'p':
      if (!strcmp(optarg, "sequential")) sequential = 1;
      else if (strcmp(optarg, "random")) usage();
      break;
    case 'P': port = strtol(optarg, NULL, 10); break;
    default: usage();
    }
  }
  if (mib <= 0 || port <= 0 || port > 65535 || rate < 0 || optind != argc)
    usage();

  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_exit_signal);
  signal(SIGINT, on_exit_signal);

  npages = (size_t)mib * (1024 * 1024 / PAGE);
  mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  shadow = calloc(npages, sizeof *shadow);
  if (mem == MAP_FAILED || !shadow) {
    perror("memhog: memory");
    return 1;
  }
  for (size_t i = 0; i < npages; i++)  // touch every page so the whole region is resident from the start
    write_page(i, 0);
  rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() ^ (uint64_t)(now() * 1e9);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 128)) {
    perror("memhog: listen");
    return 1;
  }
  printf("memhog: %zu pages (%ld MiB), %s, %.0f pages/s, 127.0.0.1:%ld\n", npages, mib,
         sequential ? "sequential" : "random", rate, port);
  fflush(stdout);

  // Pacing: the writes owed since t0 are rate * elapsed. After a long stall (the task was frozen for a
  // checkpoint, or restored on another host with a different clock) start a new period instead of bursting.
  double t0 = now();
  uint64_t done = 0;
  struct pollfd *pfds = NULL;
  size_t cap = 0;
  for (;;) {
    if (cap < nclients + 1) {
      cap = (nclients + 1) * 2;
      pfds = realloc(pfds, cap * sizeof *pfds);
      clients = realloc(clients, cap * sizeof *clients);
      if (!pfds || !clients) {
        perror("memhog: realloc");
        return 1;
      }
    }
    pfds[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    for (size_t k = 0; k < nclients; k++)
      pfds[k + 1] = (struct pollfd){.fd = clients[k].fd, .events = POLLIN | (clients[k].outlen ? POLLOUT : 0)};
    int timeout = -1;
    if (rate > 0) {
      double wait = (done + 1) / rate - (now() - t0);
      timeout = wait <= 0 ? 0 : wait > 0.1 ? 100 : (int)(wait * 1000) + 1;
    }
    if (poll(pfds, nclients + 1, timeout) < 0 && errno != EINTR) {
      perror("memhog: poll");
      return 1;
    }
    if (rate > 0) {
      double el = now() - t0;
      if (el * rate - (double)done > rate / 10 + 1) {  // more than 100 ms behind: new period
        t0 = now();
        done = 0;
      }
      for (uint64_t owed = (uint64_t)((now() - t0) * rate); done < owed; done++)
        dirty_one();
    }
    // Clients first (their indexes match pfds), walking backwards because drop_client moves the last one.
    size_t polled = nclients;
    for (size_t k = polled; k-- > 0;) {
      short re = pfds[k + 1].revents;
      struct client *c = &clients[k];
      int fail = (re & (POLLERR | POLLNVAL)) != 0;
      if (!fail && (re & (POLLIN | POLLHUP)))
        fail = on_readable(c) < 0;
      if (!fail && (re & POLLOUT) && c->outlen)
        fail = reply(c, "") < 0;
      if (fail)
        drop_client(k);
    }
    if (pfds[0].revents & POLLIN) {
      int fd;
      while (nclients < cap && (fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        clients[nclients++] = (struct client){.fd = fd};
      }
    }
  }
}
