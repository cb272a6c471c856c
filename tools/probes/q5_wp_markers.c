/* Q5: uffd-wp pte markers (unpopulated, write-protected) vs ZEROPAGE / POISON / COPY.
 * shmem memfd MAP_SHARED (markers always) and anon with WP_UNPOPULATED. */
#include "common.h"

static void pmline(const char *tag, char *p, int n)
{
	char b[256] = "";
	for (int i = 0; i < n; i++) {
		uint64_t v = pagemap(p + i * PG);
		size_t l = strlen(b);
		snprintf(b + l, sizeof b - l, " pg%d:present=%d swap/marker=%d wp=%d", i, (int)PM_PRESENT(v), (int)PM_SWAP(v), (int)PM_UFFDWP(v));
	}
	P("%s pagemap:%s", tag, b);
}

static char srcbuf[PG] __attribute__((aligned(4096)));

static void run(const char *tag, char *p, int u, int fd)
{
	__s64 f;
	int rc = uwp(u, p, 5 * PG, UFFDIO_WRITEPROTECT_MODE_WP);
	P("%s WRITEPROTECT(WP) over 5 unpopulated pages = %s", tag, rcs(rc));
	pmline(tag, p, 5);
	rc = uzero(u, p, PG, 0, &f);
	P("%s ZEROPAGE page0 (on WP marker) = %s zeropage=%lld", tag, rcs(rc), (long long)f);
	rc = upoison(u, p + PG, PG, 0, &f);
	P("%s POISON page1 (on WP marker) = %s updated=%lld", tag, rcs(rc), (long long)f);
	memset(srcbuf, 'c', PG);
	rc = ucopy(u, p + PG, srcbuf, PG, 0, &f);
	P("%s COPY page1 (on WP marker) = %s copy=%lld", tag, rcs(rc), (long long)f);
	rc = ucopy(u, p + 2 * PG, srcbuf, PG, UFFDIO_COPY_MODE_WP, &f);
	P("%s COPY(MODE_WP) page2 (on WP marker) = %s copy=%lld", tag, rcs(rc), (long long)f);
	pmline(tag, p, 5);
	if (fd >= 0) {
		struct stat st; fstat(fd, &st);
		P("%s memfd st_blocks=%lld (page cache pages=%lld)", tag, (long long)st.st_blocks, (long long)st.st_blocks / 8);
	}
	/* which pages now give a WP fault on write? probe each with a thread */
	for (int i = 0; i < 3; i++) {
		struct toucher t; toucher_start(&t, p + i * PG + 8, 1);
		struct uffd_msg m; long n = uread(u, &m, 300);
		if (n > 0) {
			P("%s write page%d -> uffd msg flags=0x%llx (%s)", tag, i, (unsigned long long)m.arg.pagefault.flags,
			  m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP ? "WP fault" : "MISSING fault");
			uwp(u, p + i * PG, PG, 0); /* unprotect + wake */
			if (!(m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) { __s64 ff; ucopy(u, p + i * PG, srcbuf, PG, 0, &ff); }
		} else
			P("%s write page%d -> no uffd message (write completed=%d)", tag, i, t.done);
		pthread_join(t.t, NULL);
	}
	{
		struct toucher t; toucher_start(&t, p + 3 * PG, 0);
		struct uffd_msg m; long n = uread(u, &m, 300);
		if (n > 0) {
			P("%s read page3 (WP marker, no page) -> uffd msg flags=0x%llx", tag, (unsigned long long)m.arg.pagefault.flags);
			__s64 ff; int r2 = uzero(u, p + 3 * PG, PG, 0, &ff);
			P("%s   resolve with ZEROPAGE = %s zeropage=%lld", tag, rcs(r2), (long long)ff);
			if (r2) { r2 = ucopy(u, p + 3 * PG, srcbuf, PG, 0, &ff); P("%s   resolve with COPY = %s", tag, rcs(r2)); }
		} else
			P("%s read page3 (WP marker) -> no uffd message (done=%d)", tag, t.done);
		pthread_join(t.t, NULL);
	}
	{
		struct toucher t; toucher_start(&t, p + 4 * PG, 1);
		struct uffd_msg m; long n = uread(u, &m, 300);
		if (n > 0) {
			P("%s write page4 (WP marker, no page) -> uffd msg flags=0x%llx", tag, (unsigned long long)m.arg.pagefault.flags);
			__s64 ff; int r2 = ucopy(u, p + 4 * PG, srcbuf, PG, 0, &ff);
			P("%s   resolve with COPY = %s", tag, rcs(r2));
		} else
			P("%s write page4 (WP marker) -> no uffd message (done=%d)", tag, t.done);
		pthread_join(t.t, NULL);
	}
	pmline(tag, p, 5);
}

int main(void)
{
	int fd = memfd("q5", 0, 5 * PG);
	char *p = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int u = uffd_new(0);
	__u64 ioc;
	int rc = ureg(u, p, 5 * PG, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, &ioc);
	P("q5shmem register MISSING|WP = %s ioctls=0x%llx", rcs(rc), (unsigned long long)ioc);
	run("q5shmem", p, u, fd);
	close(u);

	u = uffd_new(UFFD_FEATURE_WP_UNPOPULATED);
	char *a = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	rc = ureg(u, a, 5 * PG, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, &ioc);
	P("q5anon(WP_UNPOPULATED) register MISSING|WP = %s ioctls=0x%llx", rcs(rc), (unsigned long long)ioc);
	run("q5anon", a, u, -1);
	return 0;
}
