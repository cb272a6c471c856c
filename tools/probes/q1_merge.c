/* Q1: VMA split/merge around uffd register/unregister, adjacent mmaps, mprotect,
 * hugetlb and shmem. Counts VMAs intersecting the 3-unit area via /proc/self/maps. */
#include "common.h"

static char d[1024];
#define CNT(a, l) (vmas((a), (l), d, sizeof d))

static char *anon3(char *at)
{
	char *p = mmap(at, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (p == MAP_FAILED) DIE("mmap: %s", en(errno));
	return p;
}

/* (a) variants: how = 0 untouched; 1 touched (written) all 3 before register;
 * 2 register middle, COPY into middle, write outer pages, then unregister;
 * 3 register all 3, ZEROPAGE all 3, unregister middle only, then unregister rest */
static void q1a(void)
{
	static char src[PG] __attribute__((aligned(4096)));
	const char *names[] = { "untouched", "all 3 written before register",
				"middle filled by UFFDIO_COPY + outer written while registered",
				"outer written, middle filled by UFFDIO_ZEROPAGE while registered",
				"middle filled by UFFDIO_COPY, outer never touched",
				"middle filled by UFFDIO_ZEROPAGE, then outer written while registered" };
	for (int how = 0; how < 6; how++) {
		int u = uffd_new(0);
		char *p = anon3(reserve(3 * PG, PG));
		int n0 = CNT(p, 3 * PG);
		if (how == 1) { p[0] = p[PG] = p[2 * PG] = 1; }
		if (how == 3) { p[0] = p[2 * PG] = 1; }
		int rc = ureg(u, p + PG, PG, UFFDIO_REGISTER_MODE_MISSING, NULL);
		if (how == 2 || how == 4) {
			__s64 f; int r2 = ucopy(u, p + PG, src, PG, 0, &f);
			if (how == 2) p[0] = p[2 * PG] = 1;
			P("q1a[%d] copy middle: %s copy=%lld", how, rcs(r2), (long long)f);
		}
		if (how == 3 || how == 5) {
			__s64 f; int r2 = uzero(u, p + PG, PG, 0, &f);
			if (how == 5) p[0] = p[2 * PG] = 1;
			P("q1a[%d] zeropage middle: %s zeropage=%lld", how, rcs(r2), (long long)f);
		}
		int n1 = CNT(p, 3 * PG);
		char d1[1024]; strcpy(d1, d);
		int ru = uunreg(u, p + PG, PG);
		int n2 = CNT(p, 3 * PG);
		P("q1a[%d] %s: before=%d register(mid)=%s vmas=%d {%s} unregister=%s vmas=%d {%s}",
		  how, names[how], n0, rcs(rc), n1, d1, rcs(ru), n2, d);
		close(u);
	}
}

/* (b) adjacent separate mmaps */
static void q1b(void)
{
	int fl = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, pr = PROT_READ | PROT_WRITE;
	/* b1: A then B right after, neither touched */
	char *r = reserve(3 * PG, PG);
	mmap(r, PG, pr, fl, -1, 0);
	mmap(r + PG, PG, pr, fl, -1, 0);
	P("q1b1 two adjacent anon mmaps, untouched: vmas=%d {%s}", CNT(r, 2 * PG), d);
	/* b2: A touched, then B mapped adjacent */
	r = reserve(3 * PG, PG);
	mmap(r, PG, pr, fl, -1, 0); r[0] = 1;
	mmap(r + PG, PG, pr, fl, -1, 0);
	int n = CNT(r, 2 * PG);
	r[PG] = 1;
	P("q1b2 A written, then B mmapped adjacent: vmas=%d {%s}; after writing B: vmas=%d", n, d, CNT(r, 2 * PG));
	/* b3: A at 0 and C at +2 both written (distinct anon_vmas), then B fills gap */
	r = reserve(3 * PG, PG);
	mmap(r, PG, pr, fl, -1, 0); r[0] = 1;
	mmap(r + 2 * PG, PG, pr, fl, -1, 0); r[2 * PG] = 1;
	mmap(r + PG, PG, pr, fl, -1, 0);
	n = CNT(r, 3 * PG);
	char d1[1024]; strcpy(d1, d);
	r[PG] = 1;
	P("q1b3 A(+0) and C(+2) written, then B(+1) mmapped into the gap: vmas=%d {%s}; after writing B: vmas=%d {%s}",
	  n, d1, CNT(r, 3 * PG), d);
	/* b4: A written, B mapped adjacent and written, both before any merge? (B merges at mmap time) */
	r = reserve(3 * PG, PG);
	mmap(r + PG, PG, pr, fl, -1, 0); r[PG] = 1;
	mmap(r, PG, pr, fl, -1, 0);
	P("q1b4 B(+1) written, then A(+0) mmapped adjacent before it: vmas=%d {%s}", CNT(r, 2 * PG), d);
	/* b5: both written: A at +0 written, B at +1 written (B merged at mmap with A) */
	r = reserve(3 * PG, PG);
	mmap(r, PG, pr, fl, -1, 0); r[0] = 1;
	mmap(r + PG, PG, pr, fl, -1, 0); r[PG] = 1;
	/* then mprotect B RO and back: re-merge check */
	mprotect(r + PG, PG, PROT_READ); n = CNT(r, 2 * PG);
	mprotect(r + PG, PG, pr);
	P("q1b5 A,B adjacent both written; mprotect B RO: vmas=%d; back RW: vmas=%d {%s}", n, CNT(r, 2 * PG), d);
}

/* (c) mprotect middle page */
static void q1c(void)
{
	for (int touched = 0; touched < 2; touched++) {
		char *p = anon3(reserve(3 * PG, PG));
		if (touched) p[0] = p[PG] = p[2 * PG] = 1;
		int r1 = mprotect(p + PG, PG, PROT_READ);
		int n1 = CNT(p, 3 * PG); char d1[1024]; strcpy(d1, d);
		int r2 = mprotect(p + PG, PG, PROT_READ | PROT_WRITE);
		int n2 = CNT(p, 3 * PG);
		P("q1c %s: mprotect(mid,R)=%s vmas=%d {%s}; mprotect(mid,RW)=%s vmas=%d {%s}",
		  touched ? "touched" : "untouched", RES(r1), n1, d1, RES(r2), n2, d);
	}
}

/* (d) hugetlb memfd 3x2MiB MAP_SHARED */
static void q1d(void)
{
	int fd = memfd_create("q1d", MFD_HUGETLB);
	if (fd < 0) { P("q1d memfd_create(MFD_HUGETLB): %s", en(errno)); return; }
	if (ftruncate(fd, 3 * HPG)) { P("q1d ftruncate: %s", en(errno)); return; }
	char *r = reserve(3 * HPG, HPG);
	char *p = mmap(r, 3 * HPG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED) { P("q1d mmap: %s (nr_hugepages too small?)", en(errno)); return; }
	for (int touched = 0; touched < 2; touched++) {
		if (touched) { /* fresh mapping, then touch all 3 huge pages */
			p = mmap(p, 3 * HPG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
			if (p == MAP_FAILED) DIE("q1d remap: %s", en(errno));
			p[0] = p[HPG] = p[2 * HPG] = 1;
		}
		int u = uffd_new(0);
		int n0 = CNT(p, 3 * HPG);
		int rc = ureg(u, p + HPG, HPG, UFFDIO_REGISTER_MODE_MISSING, NULL);
		int n1 = CNT(p, 3 * HPG); char d1[1024]; strcpy(d1, d);
		int ru = uunreg(u, p + HPG, HPG);
		int n2 = CNT(p, 3 * HPG);
		P("q1d hugetlb shared %s: before=%d register(mid 2MiB)=%s vmas=%d {%s} unregister=%s vmas=%d {%s} (units of 4KiB pages)",
		  touched ? "all 3 touched" : "untouched", n0, rcs(rc), n1, d1, rcs(ru), n2, d);
		close(u);
	}
	/* mprotect split/merge on hugetlb too (fresh mapping) */
	p = mmap(p, 3 * HPG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	int r1 = mprotect(p + HPG, HPG, PROT_READ); int n1 = CNT(p, 3 * HPG);
	int r2 = mprotect(p + HPG, HPG, PROT_READ | PROT_WRITE);
	P("q1d hugetlb mprotect(mid,R)=%s vmas=%d; back RW=%s vmas=%d", RES(r1), n1, RES(r2), CNT(p, 3 * HPG));
	munmap(p, 3 * HPG);
	/* two separate adjacent hugetlb mmaps at consecutive file offsets */
	char *s = reserve(2 * HPG, HPG);
	void *a1 = mmap(s, HPG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	void *a2 = mmap(s + HPG, HPG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, HPG);
	P("q1d hugetlb two adjacent mmaps pgoff 0,2MiB: %s/%s vmas=%d {%s}", a1 == MAP_FAILED ? en(errno) : "OK",
	  a2 == MAP_FAILED ? en(errno) : "OK", CNT(s, 2 * HPG), d);
	munmap(s, 2 * HPG); close(fd);
}

/* (e) shmem memfd MAP_SHARED 3 pages */
static void q1e(void)
{
	int fd = memfd("q1e", 0, 3 * PG);
	char *r = reserve(3 * PG, PG);
	char *p = mmap(r, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	for (int touched = 0; touched < 2; touched++) {
		if (touched) p = mmap(p, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
		if (touched) p[0] = p[PG] = p[2 * PG] = 1;
		int u = uffd_new(0);
		int n0 = CNT(p, 3 * PG);
		int rc = ureg(u, p + PG, PG, UFFDIO_REGISTER_MODE_MISSING, NULL);
		int n1 = CNT(p, 3 * PG); char d1[1024]; strcpy(d1, d);
		int ru = uunreg(u, p + PG, PG);
		int n2 = CNT(p, 3 * PG);
		P("q1e shmem memfd shared %s: before=%d register(mid)=%s vmas=%d {%s} unregister=%s vmas=%d {%s}",
		  touched ? "all 3 touched" : "untouched", n0, rcs(rc), n1, d1, rcs(ru), n2, d);
		close(u);
	}
	/* MAP_SHARED|MAP_ANONYMOUS as well */
	char *q = mmap(reserve(3 * PG, PG), 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	int u = uffd_new(0);
	int rc = ureg(u, q + PG, PG, UFFDIO_REGISTER_MODE_MISSING, NULL);
	int n1 = CNT(q, 3 * PG);
	int ru = uunreg(u, q + PG, PG);
	P("q1e shared-anon: register(mid)=%s vmas=%d unregister=%s vmas=%d {%s}", rcs(rc), n1, rcs(ru), CNT(q, 3 * PG), d);
	/* two separate adjacent MAP_SHARED mmaps of the same memfd at consecutive offsets */
	char *s = reserve(3 * PG, PG);
	mmap(s, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	mmap(s + PG, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, PG);
	int na = CNT(s, 2 * PG);
	mmap(s + 2 * PG, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0); /* non-consecutive pgoff */
	P("q1e memfd adjacent mmaps pgoff 0,1: vmas=%d; + third at pgoff 0: vmas=%d {%s}", na, CNT(s, 3 * PG), d);
	close(u);
}

int main(void)
{
	q1a(); q1b(); q1c(); q1d(); q1e();
	return 0;
}
