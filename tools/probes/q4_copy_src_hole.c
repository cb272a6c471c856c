/* Q4: UFFDIO_COPY of 2 pages whose src 2nd page is unmapped. */
#include "common.h"

int main(void)
{
	int u = uffd_new(0);
	char *dst = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ureg(u, dst, 4 * PG, UFFDIO_REGISTER_MODE_MISSING, NULL)) DIE("reg");
	char *src = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(src, 'S', PG);
	munmap(src + PG, PG); /* src page 2 is a hole */
	__s64 f;
	errno = 0;
	int rc = ucopy(u, dst, src, 2 * PG, 0, &f);
	uint64_t v0 = pagemap(dst), v1 = pagemap(dst + PG);
	P("q4 COPY(dst, src, 2 pages; src page 2 unmapped) = %s copy=%lld; dst page0 present=%d, page1 present=%d",
	  rcs(rc), (long long)f, (int)PM_PRESENT(v0), (int)PM_PRESENT(v1));
	P("q4 dst page0 first byte='%c'", dst[0]);
	/* same with src hole first: nothing copied */
	rc = ucopy(u, dst + 2 * PG, src + PG, PG, 0, &f);
	P("q4 COPY(dst+2, src=hole, 1 page) = %s copy=%lld; dst page2 present=%d", rcs(rc), (long long)f,
	  (int)PM_PRESENT(pagemap(dst + 2 * PG)));
	/* src PROT_NONE page */
	char *s2 = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(s2, 'T', 2 * PG);
	mprotect(s2 + PG, PG, PROT_NONE);
	rc = ucopy(u, dst + 2 * PG, s2, 2 * PG, 0, &f);
	P("q4 COPY(dst+2, src 2nd page PROT_NONE, 2 pages) = %s copy=%lld; dst page2 present=%d page3 present=%d",
	  rcs(rc), (long long)f, (int)PM_PRESENT(pagemap(dst + 2 * PG)), (int)PM_PRESENT(pagemap(dst + 3 * PG)));
	return 0;
}
