/* Q2: shmem (memfd) MAP_PRIVATE: read then write of a page that has page-cache data. */
#include "common.h"

static void pm(const char *what, char *p)
{
	uint64_t v0 = pagemap(p), v1 = pagemap(p + PG);
	P("q2 pagemap %s: page0 present=%d file/shared=%d excl=%d pfn=0x%llx | page1 present=%d file=%d",
	  what, (int)PM_PRESENT(v0), (int)PM_FILE(v0), (int)PM_EXCL(v0), (unsigned long long)PM_PFN(v0),
	  (int)PM_PRESENT(v1), (int)PM_FILE(v1));
}

int main(void)
{
	int fd = memfd("q2", 0, 2 * PG);
	char buf[8] = "PWRITE!";
	if (pwrite(fd, buf, 8, 0) != 8) DIE("pwrite %s", en(errno));
	char *p = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) DIE("mmap %s", en(errno));
	pm("after mmap", p);
	volatile char c = p[0];
	(void)c;
	P("q2 read via private map: '%.7s' (%s)", p, memcmp(p, "PWRITE!", 7) ? "MISMATCH" : "matches pwrite");
	pm("after read p[0]", p);
	memcpy(p, "PRIVATE", 7);
	pm("after write p[0]", p);
	char rb[8] = { 0 };
	pread(fd, rb, 7, 0);
	P("q2 pread(memfd,0) after private write: '%s' -> %s", rb,
	  strcmp(rb, "PWRITE!") ? "page cache MODIFIED (no COW)" : "page cache unchanged (COW to private anon page)");
	P("q2 private map now reads '%.7s'", p);
	/* page 1: untouched in cache -> read gives zeros; write of hole */
	struct stat st; fstat(fd, &st);
	P("q2 memfd st_blocks before touching hole page 1: %lld (512B units)", (long long)st.st_blocks);
	(void)*(volatile char *)(p + PG);
	pm("after read p[PG] (hole)", p);
	fstat(fd, &st);
	P("q2 memfd st_blocks after read of hole page 1 via private map: %lld (512B units)", (long long)st.st_blocks);
	p[PG] = 'X';
	pm("after write p[PG]", p);
	fstat(fd, &st);
	char z = 1; pread(fd, &z, 1, PG);
	P("q2 after private write to hole page 1: pread byte=%d st_blocks=%lld", z, (long long)st.st_blocks);
	/* a later pwrite to page 0 is not seen by the private (COWed) page */
	pwrite(fd, "LATER!!", 7, 0);
	P("q2 pwrite after COW: private map reads '%.7s'", p);
	return 0;
}
