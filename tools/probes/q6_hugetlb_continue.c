/* Q6: UFFDIO_CONTINUE on a hugetlb MAP_SHARED vma registered MISSING only (page in cache). */
#include "common.h"

int main(void)
{
	int fd = memfd_create("q6", MFD_HUGETLB);
	if (fd < 0) DIE("memfd %s", en(errno));
	ftruncate(fd, 2 * HPG);
	char *alias = mmap(NULL, 2 * HPG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	char *p = mmap(NULL, 2 * HPG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (alias == MAP_FAILED || p == MAP_FAILED) DIE("mmap %s", en(errno));
	memset(alias, 'A', HPG); /* huge page 0 in page cache; huge page 1 absent */
	int u = uffd_new(0);
	__u64 ioc;
	int rc = ureg(u, p, 2 * HPG, UFFDIO_REGISTER_MODE_MISSING, &ioc);
	P("q6 register MISSING (only) on hugetlb shared = %s ioctls=0x%llx (CONTINUE bit 0x80 %s)", rcs(rc),
	  (unsigned long long)ioc, ioc & 0x80 ? "present" : "absent");
	__s64 f;
	rc = ucont(u, p, HPG, 0, &f);
	P("q6 CONTINUE(huge page 0, in cache) = %s mapped=%lld; pagemap present=%d; reads '%c'", rcs(rc), (long long)f,
	  (int)PM_PRESENT(pagemap(p)), rc == 0 ? p[5] : '?');
	rc = ucont(u, p, HPG, 0, &f);
	P("q6 CONTINUE again (already mapped) = %s mapped=%lld", rcs(rc), (long long)f);
	rc = ucont(u, p + HPG, HPG, 0, &f);
	P("q6 CONTINUE(huge page 1, not in cache) = %s mapped=%lld", rcs(rc), (long long)f);
	/* control: read of page 0 on a MISSING-only vma when cached -> no message */
	char *q = mmap(NULL, 2 * HPG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ureg(u, q, 2 * HPG, UFFDIO_REGISTER_MODE_MISSING, NULL);
	struct toucher t; toucher_start(&t, q + 7, 0);
	struct uffd_msg m; long n = uread(u, &m, 300);
	P("q6 control: read of cached huge page via another MISSING-registered map -> %s", n > 0 ? "uffd msg" : "no msg (normal fault)");
	pthread_join(t.t, NULL);
	/* shmem equivalent for comparison */
	int sfd = memfd("q6s", 0, PG);
	char *sa = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	char *sp = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	sa[0] = 'S';
	ureg(u, sp, PG, UFFDIO_REGISTER_MODE_MISSING, NULL);
	rc = ucont(u, sp, PG, 0, &f);
	P("q6 shmem comparison: CONTINUE on MISSING-only shmem = %s mapped=%lld", rcs(rc), (long long)f);
	return 0;
}
