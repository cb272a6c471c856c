/* Q7: basic mmap/munmap/mprotect/memfd/ftruncate/pread/fallocate errno paths.
 * The MAP_HUGETLB line depends on /proc/sys/vm/nr_hugepages (printed). */
#include "common.h"

#define M(desc, call) do { void *_r = (call); \
	P("q7 %s -> %s", desc, _r == MAP_FAILED ? en(errno) : "OK"); } while (0)
#define R(desc, call) do { errno = 0; long _r = (call); \
	P("q7 %s -> %s (ret %ld)", desc, _r < 0 ? en(errno) : "OK", _r); } while (0)

int main(void)
{
	int RW = PROT_READ | PROT_WRITE, PA = MAP_PRIVATE | MAP_ANONYMOUS;
	char d[512];
	M("mmap(len 0, anon private)", mmap(NULL, 0, RW, PA, -1, 0));
	char *base = mmap(reserve(8 * PG, PG), 8 * PG, RW, PA | MAP_FIXED, -1, 0); /* PROT_NONE guards around */
	M("mmap(MAP_FIXED, addr=base+1)", mmap(base + 1, PG, RW, PA | MAP_FIXED, -1, 0));
	M("mmap(flags=MAP_ANONYMOUS only, no SHARED/PRIVATE)", mmap(NULL, PG, RW, MAP_ANONYMOUS, -1, 0));
	M("mmap(flags=MAP_SHARED|MAP_PRIVATE|MAP_ANONYMOUS)", mmap(NULL, PG, RW, MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
	int fd = memfd("q7", 0, 2 * PG);
	char path[64]; snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int ro = open(path, O_RDONLY);
	M("mmap(PROT_WRITE, MAP_SHARED, memfd reopened O_RDONLY)", mmap(NULL, PG, RW, MAP_SHARED, ro, 0));
	M("mmap(PROT_READ, MAP_SHARED, O_RDONLY memfd)", mmap(NULL, PG, PROT_READ, MAP_SHARED, ro, 0));
	M("mmap(PROT_WRITE, MAP_PRIVATE, O_RDONLY memfd)", mmap(NULL, PG, RW, MAP_PRIVATE, ro, 0));
	M("mmap(memfd, offset 100)", mmap(NULL, PG, RW, MAP_SHARED, fd, 100));
	M("mmap(memfd, offset 4096+1)", mmap(NULL, PG, RW, MAP_SHARED, fd, PG + 1));
	M("mmap(anon, non-page-multiple len 100)", mmap(NULL, 100, RW, PA, -1, 0));
	R("munmap(base+1, PG)", munmap(base + 1, PG));
	R("munmap(base, 0)", munmap(base, 0));
	R("munmap(base, 100) (unaligned len)", munmap(base + 7 * PG, 100));
	P("q7   vmas of base after munmap(base+7p,100): %d {%s}", vmas(base, 8 * PG, d, sizeof d), d);
	char *hole = mmap(NULL, 4 * PG, RW, PA, -1, 0);
	munmap(hole, 4 * PG);
	R("munmap(hole with no vma)", munmap(hole, 4 * PG));
	R("mprotect(base+1, PG, R)", mprotect(base + 1, PG, PROT_READ));
	R("mprotect(base, 0, R)", mprotect(base, 0, PROT_READ));
	/* base(8 pages) fresh: [0,3) mapped, [3,4) hole, [4,8) mapped */
	base = mmap(reserve(8 * PG, PG), 8 * PG, RW, PA | MAP_FIXED, -1, 0); /* PROT_NONE guards around */
	munmap(base + 3 * PG, PG);
	R("mprotect(base, 8 pages, PROT_READ) over [0,3) vma, [3,4) hole, [4,8) vma", mprotect(base, 8 * PG, PROT_READ));
	vmas(base, 8 * PG, d, sizeof d);
	P("q7   after failed mprotect: vmas {%s} (part before the hole changed?)", d);
	R("mprotect(hole only)", mprotect(hole, PG, PROT_READ));
	R("madvise(hole, DONTNEED)", madvise(hole, PG, MADV_DONTNEED));
	R("memfd_create(\"x\", 0x100)", memfd_create("x", 0x100));
	char name[300];
	memset(name, 'n', sizeof name);
	name[249] = 0;
	R("memfd_create(name of 249 chars)", memfd_create(name, 0));
	name[249] = 'n'; name[250] = 0;
	R("memfd_create(name of 250 chars)", memfd_create(name, 0));
	R("ftruncate(memfd, -1)", ftruncate(fd, -1));
	R("ftruncate(O_RDONLY memfd, PG)", ftruncate(ro, PG));
	{
		FILE *f = fopen("/proc/sys/vm/nr_hugepages", "r"); int nh = -1;
		if (f) { fscanf(f, "%d", &nh); fclose(f); }
		char desc[128];
		snprintf(desc, sizeof desc, "mmap(MAP_HUGETLB anon 2MiB) with nr_hugepages=%d", nh);
		M(desc, mmap(NULL, HPG, RW, PA | MAP_HUGETLB, -1, 0));
		snprintf(desc, sizeof desc, "memfd_create(MFD_HUGETLB) with nr_hugepages=%d", nh);
		R(desc, memfd_create("h", MFD_HUGETLB));
	}
	char *m = mmap(NULL, 4 * PG, RW, MAP_SHARED, fd, 0);
	P("q7 mmap(2-page memfd, len 4 pages) -> %s", m == MAP_FAILED ? en(errno) : "OK");
	P("q7   touch page 1 (in file) -> %s", signame(touch(m + PG, 1)));
	P("q7   touch page 2 (beyond EOF) -> %s", signame(touch(m + 2 * PG, 0)));
	P("q7   touch page 3 (beyond EOF) -> %s", signame(touch(m + 3 * PG, 1)));
	char *mp = mmap(NULL, 4 * PG, RW, MAP_PRIVATE, fd, 0);
	P("q7   MAP_PRIVATE same: write page 3 (beyond EOF) -> %s", signame(touch(mp + 3 * PG, 1)));
	char b[16];
	R("pread(memfd, 16, offset 100*PG) beyond EOF", pread(fd, b, 16, 100 * PG));
	R("pread(memfd, 16, offset 2*PG-8) straddling EOF", pread(fd, b, 16, 2 * PG - 8));
	R("fallocate(PUNCH_HOLE without KEEP_SIZE)", fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, PG));
	R("fallocate(PUNCH_HOLE|KEEP_SIZE)", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PG));
	R("fallocate(PUNCH_HOLE|KEEP_SIZE, unaligned 100..300)", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 200));
	R("pwrite(memfd, 16, offset 3*PG) beyond EOF (extends)", pwrite(fd, b, 16, 3 * PG));
	struct stat st; fstat(fd, &st);
	P("q7   size after that pwrite: %lld", (long long)st.st_size);
	return 0;
}
