/* common.h - tiny helpers shared by the faultline userfaultfd probes.
 * Each probe: gcc -O1 -Wall -o /tmp/x qN_*.c -lpthread  (run as root). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison { struct uffdio_range range; __u64 mode; __s64 updated; };
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef MFD_HUGETLB
#define MFD_HUGETLB 4U
#endif

#define PG 4096UL
#define HPG (2UL << 20)

static inline const char *en(int e) /* errno name */
{
	const char *s = e ? strerrorname_np(e) : "OK";
	return s ? s : "?";
}
/* "OK" if r == 0 (or >=0), else errno name */
#define RES(r) ((r) < 0 ? en(errno) : "OK")

#define P(...) do { printf(__VA_ARGS__); putchar('\n'); fflush(stdout); } while (0)
#define DIE(...) do { P("FATAL " __VA_ARGS__); exit(2); } while (0)

static inline int uffd_new(__u64 features)
{
	int fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) DIE("userfaultfd: %s", en(errno));
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	if (ioctl(fd, UFFDIO_API, &api)) DIE("UFFDIO_API: %s", en(errno));
	return fd;
}

/* returns 0 or -errno; *ioctls receives the returned mask */
static inline int ureg(int fd, void *a, unsigned long len, __u64 mode, __u64 *ioctls)
{
	struct uffdio_register r = { .range = { (unsigned long)a, len }, .mode = mode };
	int rc = ioctl(fd, UFFDIO_REGISTER, &r);
	if (ioctls) *ioctls = r.ioctls;
	return rc ? -errno : 0;
}
static inline int uunreg(int fd, void *a, unsigned long len)
{
	struct uffdio_range r = { (unsigned long)a, len };
	return ioctl(fd, UFFDIO_UNREGISTER, &r) ? -errno : 0;
}
static inline int uwake(int fd, void *a, unsigned long len)
{
	struct uffdio_range r = { (unsigned long)a, len };
	return ioctl(fd, UFFDIO_WAKE, &r) ? -errno : 0;
}
/* ioctl helpers return ioctl rc (0/-errno) and store the result field */
static inline int ucopy(int fd, void *dst, void *src, unsigned long len, __u64 mode, __s64 *field)
{
	struct uffdio_copy c = { (unsigned long)dst, (unsigned long)src, len, mode, 777 };
	int rc = ioctl(fd, UFFDIO_COPY, &c);
	if (field) *field = c.copy;
	return rc ? -errno : 0;
}
static inline int uzero(int fd, void *dst, unsigned long len, __u64 mode, __s64 *field)
{
	struct uffdio_zeropage z = { { (unsigned long)dst, len }, mode, 777 };
	int rc = ioctl(fd, UFFDIO_ZEROPAGE, &z);
	if (field) *field = z.zeropage;
	return rc ? -errno : 0;
}
static inline int ucont(int fd, void *dst, unsigned long len, __u64 mode, __s64 *field)
{
	struct uffdio_continue c = { { (unsigned long)dst, len }, mode, 777 };
	int rc = ioctl(fd, UFFDIO_CONTINUE, &c);
	if (field) *field = c.mapped;
	return rc ? -errno : 0;
}
static inline int upoison(int fd, void *dst, unsigned long len, __u64 mode, __s64 *field)
{
	struct uffdio_poison p = { { (unsigned long)dst, len }, mode, 777 };
	int rc = ioctl(fd, UFFDIO_POISON, &p);
	if (field) *field = p.updated;
	return rc ? -errno : 0;
}
static inline int uwp(int fd, void *a, unsigned long len, __u64 mode)
{
	struct uffdio_writeprotect w = { { (unsigned long)a, len }, mode };
	return ioctl(fd, UFFDIO_WRITEPROTECT, &w) ? -errno : 0;
}
static inline const char *rcs(int rc) { return rc ? en(-rc) : "OK"; }

/* Count VMAs in /proc/self/maps intersecting [a, a+len); also fill desc
 * with "start-end perms" for each, offsets relative to a in pages. */
static inline int vmas(void *a, unsigned long len, char *desc, size_t dlen)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;
	unsigned long lo = (unsigned long)a, hi = lo + len;
	if (desc) desc[0] = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char perm[8];
		if (sscanf(line, "%lx-%lx %7s", &s, &e, perm) != 3) continue;
		if (e <= lo || s >= hi) continue;
		n++;
		if (desc) {
			size_t l = strlen(desc);
			snprintf(desc + l, dlen - l, "%s[%+ld..%+ld)%s", l ? " " : "",
				 ((long)s - (long)lo) / (long)PG, ((long)e - (long)lo) / (long)PG, perm);
		}
	}
	fclose(f);
	return n;
}

/* pagemap entry for virtual address */
static inline uint64_t pagemap(void *a)
{
	static int fd = -1;
	static pid_t owner;
	uint64_t v = 0;
	if (fd >= 0 && owner != getpid()) { close(fd); fd = -1; } /* re-open after fork */
	if (fd < 0) { fd = open("/proc/self/pagemap", O_RDONLY); owner = getpid(); }
	if (pread(fd, &v, 8, ((unsigned long)a / PG) * 8) != 8) return ~0ULL;
	return v;
}
#define PM_PRESENT(v) (((v) >> 63) & 1)
#define PM_SWAP(v) (((v) >> 62) & 1)
#define PM_FILE(v) (((v) >> 61) & 1) /* file page or shared anon */
#define PM_EXCL(v) (((v) >> 56) & 1) /* exclusively mapped */
#define PM_UFFDWP(v) (((v) >> 57) & 1)
#define PM_PFN(v) ((v) & ((1ULL << 55) - 1))

/* reserve an area of n pages surrounded by PROT_NONE guard pages so that
 * neighbours never merge with it. Returns the inner start (not mapped: guard
 * covers it with PROT_NONE; caller maps MAP_FIXED over it). */
static inline char *reserve(unsigned long bytes, unsigned long align)
{
	unsigned long tot = bytes + 2 * align + align;
	char *g = mmap(NULL, tot, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (g == MAP_FAILED) DIE("reserve: %s", en(errno));
	unsigned long in = ((unsigned long)g + align + align - 1) & ~(align - 1);
	return (char *)in;
}

/* read one uffd message with timeout (ms); returns bytes or -errno / 0 on timeout */
static inline long uread(int fd, struct uffd_msg *m, int ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	int r = poll(&p, 1, ms);
	if (r <= 0) return 0;
	long n = read(fd, m, sizeof *m);
	return n < 0 ? -errno : n;
}

/* SIGBUS/SIGSEGV catching touch: returns 0 ok, else signal number */
static sigjmp_buf tjb;
static volatile int tsig;
static void tsh(int s) { tsig = s; siglongjmp(tjb, 1); }
static inline int touch(volatile char *p, int write)
{
	struct sigaction sa = { .sa_handler = tsh }, o1, o2;
	sigaction(SIGBUS, &sa, &o1);
	sigaction(SIGSEGV, &sa, &o2);
	tsig = 0;
	if (!sigsetjmp(tjb, 1)) {
		if (write) *p = 1; else (void)*p;
	}
	sigaction(SIGBUS, &o1, NULL);
	sigaction(SIGSEGV, &o2, NULL);
	return tsig;
}
static inline const char *signame(int s) { return s == 0 ? "no signal" : s == SIGBUS ? "SIGBUS" : s == SIGSEGV ? "SIGSEGV" : "other"; }

/* background faulting thread */
struct toucher { volatile char *p; int write; volatile int done; pthread_t t; };
static void *toucher_fn(void *a)
{
	struct toucher *t = a;
	if (t->write) *t->p = 0x5a; else (void)*t->p;
	t->done = 1;
	return NULL;
}
static inline void toucher_start(struct toucher *t, void *p, int write)
{
	t->p = p; t->write = write; t->done = 0;
	pthread_create(&t->t, NULL, toucher_fn, t);
}
static inline void msleep(int ms) { struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L }; nanosleep(&ts, NULL); }

static inline int memfd(const char *name, unsigned flags, off_t size)
{
	int fd = memfd_create(name, flags);
	if (fd < 0) DIE("memfd_create(%s): %s", name, en(errno));
	if (size && ftruncate(fd, size)) DIE("ftruncate: %s", en(errno));
	return fd;
}
