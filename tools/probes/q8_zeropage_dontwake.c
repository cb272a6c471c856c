/* Q8: anon MISSING: read fault flags; write after ZEROPAGE; COPY DONTWAKE keeps faulter blocked until WAKE. */
#include "common.h"

static char src[PG] __attribute__((aligned(4096)));

int main(void)
{
	int u = uffd_new(0);
	char *p = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ureg(u, p, 4 * PG, UFFDIO_REGISTER_MODE_MISSING, NULL)) DIE("reg");
	struct toucher t; struct uffd_msg m; __s64 f;
	toucher_start(&t, p + 100, 0);
	long n = uread(u, &m, 1000);
	P("q8 read fault page0: msg bytes=%ld event=0x%x flags=0x%llx addr=base+%lld", n, m.event,
	  (unsigned long long)m.arg.pagefault.flags, (long long)(m.arg.pagefault.address - (unsigned long)p));
	int rc = uzero(u, p, PG, 0, &f);
	pthread_join(t.t, NULL);
	uint64_t v = pagemap(p);
	P("q8 ZEROPAGE = %s zeropage=%lld; reader done=%d; pagemap present=%d pfn=0x%llx excl=%d", rcs(rc), (long long)f, t.done,
	  (int)PM_PRESENT(v), (unsigned long long)PM_PFN(v), (int)PM_EXCL(v));
	uint64_t zpfn = PM_PFN(v);
	toucher_start(&t, p + 200, 1);
	n = uread(u, &m, 500);
	pthread_join(t.t, NULL);
	v = pagemap(p);
	P("q8 write to zeropage-mapped page0: uffd msg=%s; writer done=%d; pfn changed from zero pfn=%s; value=0x%x",
	  n > 0 ? "YES" : "none", t.done, PM_PFN(v) != zpfn ? "yes (COW)" : "no", (unsigned char)p[200]);
	/* zeropage on page 2, check pfn identical to page 0's old pfn (shared zero page) */
	uzero(u, p + 2 * PG, PG, 0, &f);
	P("q8 ZEROPAGE page2 pfn==earlier zero pfn: %s", PM_PFN(pagemap(p + 2 * PG)) == zpfn ? "yes (shared zero page)" : "no");

	/* DONTWAKE */
	toucher_start(&t, p + PG + 5, 1);
	n = uread(u, &m, 1000);
	P("q8 write fault page1: msg flags=0x%llx", (unsigned long long)m.arg.pagefault.flags);
	memset(src, 'D', PG);
	rc = ucopy(u, p + PG, src, PG, UFFDIO_COPY_MODE_DONTWAKE, &f);
	msleep(300);
	int blocked = !t.done;
	n = uread(u, &m, 200);
	P("q8 COPY(DONTWAKE) = %s copy=%lld; after 300ms faulter still blocked=%s; new msg queued=%s; page present=%d",
	  rcs(rc), (long long)f, blocked ? "yes" : "no", n > 0 ? "yes" : "no", (int)PM_PRESENT(pagemap(p + PG)));
	rc = uwake(u, p + PG, PG);
	msleep(100);
	P("q8 WAKE = %s; faulter done=%d; value at write=0x%02x (0x5a = its write)", rcs(rc), t.done, (unsigned char)p[PG + 5]);
	pthread_join(t.t, NULL);
	/* ZEROPAGE DONTWAKE too */
	toucher_start(&t, p + 3 * PG, 0);
	uread(u, &m, 1000);
	rc = uzero(u, p + 3 * PG, PG, UFFDIO_ZEROPAGE_MODE_DONTWAKE, &f);
	msleep(300);
	blocked = !t.done;
	uwake(u, p + 3 * PG, PG);
	pthread_join(t.t, NULL);
	P("q8 ZEROPAGE(DONTWAKE) = %s; reader blocked until WAKE=%s", rcs(rc), blocked ? "yes" : "no");
	return 0;
}
