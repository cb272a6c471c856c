/* Q9: MAP_SHARED|MAP_ANONYMOUS (shmem) registered MINOR only: read of an uncached page;
 * then a forked child registers MINOR on the inherited mapping and reads pages the parent populated. */
#include "common.h"

int main(void)
{
	char *p = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int u = uffd_new(0);
	__u64 ioc;
	int rc = ureg(u, p, 4 * PG, UFFDIO_REGISTER_MODE_MINOR, &ioc);
	P("q9 register MINOR on shared anon = %s ioctls=0x%llx", rcs(rc), (unsigned long long)ioc);
	struct toucher t; struct uffd_msg m;
	toucher_start(&t, p, 0);
	long n = uread(u, &m, 500);
	pthread_join(t.t, NULL);
	P("q9 read page0 (not in cache): uffd msg=%s; reader done=%d; pagemap present=%d value=%d",
	  n > 0 ? "YES" : "none (normal fault, page allocated)", t.done, (int)PM_PRESENT(pagemap(p)), p[0]);
	toucher_start(&t, p + PG, 1);
	n = uread(u, &m, 500);
	pthread_join(t.t, NULL);
	P("q9 write page1 (not in cache): uffd msg=%s; writer done=%d", n > 0 ? "YES" : "none", t.done);
	/* populate page 2 in the cache via madvise-free path: write then zap our pte */
	p[2 * PG] = 'Z';
	madvise(p + 2 * PG, PG, MADV_DONTNEED);
	P("q9 page2 written then MADV_DONTNEED: pagemap present=%d", (int)PM_PRESENT(pagemap(p + 2 * PG)));
	toucher_start(&t, p + 2 * PG, 0);
	n = uread(u, &m, 500);
	P("q9 read page2 (in cache, pte zapped): uffd msg=%s flags=0x%llx", n > 0 ? "YES" : "none",
	  n > 0 ? (unsigned long long)m.arg.pagefault.flags : 0ULL);
	if (n > 0) { __s64 f; rc = ucont(u, p + 2 * PG, PG, 0, &f); P("q9   CONTINUE = %s mapped=%lld", rcs(rc), (long long)f); }
	pthread_join(t.t, NULL);
	P("q9   reader done=%d value='%c'", t.done, p[2 * PG]);
	close(u);

	/* second process: child inherits the mapping (pages 0..2 are in the cache, page 3 not) */
	int pfd[2]; pipe(pfd);
	pid_t pid = fork();
	if (pid == 0) {
		char out[512];
		int cu = uffd_new(0);
		P("q9c child pagemap before register: pg0 present=%d pg2 present=%d pg3 present=%d",
		  (int)PM_PRESENT(pagemap(p)), (int)PM_PRESENT(pagemap(p + 2 * PG)), (int)PM_PRESENT(pagemap(p + 3 * PG)));
		rc = ureg(cu, p, 4 * PG, UFFDIO_REGISTER_MODE_MINOR, &ioc);
		P("q9c child register MINOR on inherited shared-anon map = %s ioctls=0x%llx", rcs(rc), (unsigned long long)ioc);
		struct toucher ct; struct uffd_msg cm;
		for (int i = 0; i < 4; i++) {
			toucher_start(&ct, p + i * PG, 0);
			long cn = uread(cu, &cm, 300);
			if (cn > 0) {
				__s64 f; int r2 = ucont(cu, p + i * PG, PG, 0, &f);
				snprintf(out, sizeof out, "MINOR msg flags=0x%llx, CONTINUE=%s", (unsigned long long)cm.arg.pagefault.flags, rcs(r2));
			} else
				snprintf(out, sizeof out, "no msg");
			pthread_join(ct.t, NULL);
			P("q9c child read page%d -> %s; value=0x%02x", i, out, (unsigned char)p[i * PG]);
		}
		_exit(0);
	}
	int st; waitpid(pid, &st, 0);
	P("q9 child exit status %d", WEXITSTATUS(st));
	return 0;
}
