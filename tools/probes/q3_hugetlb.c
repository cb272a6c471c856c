/* Q3: hugetlb memfd file semantics + MAP_PRIVATE MISSING registration. Needs nr_hugepages >= 8. */
#include "common.h"

int main(void)
{
	struct stat st;
	int fd = memfd_create("q3a", MFD_HUGETLB);
	if (fd < 0) DIE("memfd hugetlb %s", en(errno));
	/* (a) ftruncate to 3 MiB */
	int r = ftruncate(fd, 3 << 20); fstat(fd, &st);
	P("q3a ftruncate(hugetlb memfd, 3MiB) = %s, st_size=%lld", RES(r), (long long)st.st_size);
	r = ftruncate(fd, 4 << 20); fstat(fd, &st);
	P("q3a ftruncate(4MiB) = %s, st_size=%lld st_blksize=%ld", RES(r), (long long)st.st_size, (long)st.st_blksize);
	r = ftruncate(fd, 4 << 20 | 4096); fstat(fd, &st);
	P("q3a ftruncate(4MiB+4KiB) = %s, st_size=%lld", RES(r), (long long)st.st_size);

	/* (b) mmap 3 MiB of a 4 MiB file */
	char *p = mmap(NULL, 3 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) { P("q3b mmap(len 3MiB) = %s", en(errno)); }
	else {
		char d[256]; int n = vmas(p, 4 << 20, d, sizeof d);
		P("q3b mmap(len 3MiB, shared) = OK addr%%2MiB=%lu vmas=%d {%s} (vma rounded up to 4MiB)",
		  (unsigned long)p % HPG, n, d);
		p[0] = 1;
		P("q3b touch byte 3MiB+1 (beyond requested len, inside rounded vma) -> %s", signame(touch(p + (3 << 20) + 1, 1)));
		r = munmap(p, 1 << 20);
		P("q3b munmap(addr, 1MiB) = %s; vmas now=%d", RES(r), vmas(p, 4 << 20, NULL, 0));
		r = munmap(p + (1 << 20), 1 << 20);
		P("q3b munmap(addr+1MiB, 1MiB) = %s; vmas now=%d", RES(r), vmas(p, 4 << 20, NULL, 0));
		r = munmap(p + (2 << 20), 1 << 20);
		n = vmas(p, 4 << 20, d, sizeof d);
		P("q3b munmap(addr+2MiB, 1MiB) (start aligned, end unaligned) = %s; vmas now=%d {%s}", RES(r), n, d);
		r = munmap(p, 3 << 20);
		n = vmas(p, 4 << 20, d, sizeof d);
		P("q3b munmap(addr, 3MiB) (the length passed to mmap) = %s; vmas now=%d {%s}", RES(r), n, d);
		r = munmap(p, 4 << 20);
		P("q3b munmap(addr, 4MiB) = %s; vmas now=%d", RES(r), vmas(p, 4 << 20, NULL, 0));
	}
	p = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 1 << 20);
	P("q3b mmap(offset 1MiB) = %s", p == MAP_FAILED ? en(errno) : "OK");
	p = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	r = mprotect(p, 1 << 20, PROT_READ);
	P("q3b mprotect(addr, 1MiB) = %s", RES(r));
	r = mprotect(p + (2 << 20), 1 << 20, PROT_READ);
	{ char d[256]; int n = vmas(p, 4 << 20, d, sizeof d);
	  P("q3b mprotect(addr+2MiB, 1MiB) (start aligned, end not) = %s; vmas now=%d {%s}", RES(r), n, d); }
	r = madvise(p, 1 << 20, MADV_DONTNEED);
	P("q3b madvise(addr, 1MiB, DONTNEED) = %s", RES(r));

	/* (c) pwrite / pread */
	char buf[4096];
	memset(buf, 'W', sizeof buf);
	ssize_t w = pwrite(fd, buf, 4096, 0);
	P("q3c pwrite(hugetlb memfd) = %zd %s", w, w < 0 ? en(errno) : "");
	w = write(fd, buf, 4096);
	P("q3c write(hugetlb memfd) = %zd %s", w, w < 0 ? en(errno) : "");
	memset(p + 8192, 'M', 16);
	memset(buf, 0, sizeof buf);
	ssize_t rd = pread(fd, buf, 4096, 8192);
	P("q3c pread(4096 @8192) = %zd %s first='%c'", rd, rd < 0 ? en(errno) : "OK", buf[0]);
	rd = pread(fd, buf, 4096, 4 << 20);
	P("q3c pread at EOF = %zd", rd);

	/* (d) fallocate PUNCH_HOLE|KEEP_SIZE 4KiB at offset 8192 (unaligned to 2MiB) */
	fstat(fd, &st); long long b0 = st.st_blocks;
	r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8192, 4096);
	fstat(fd, &st);
	P("q3d fallocate(PUNCH|KEEP, off 8192, len 4096) = %s; byte @8191=0x%02x @8192=0x%02x (was 'M'); st_blocks %lld -> %lld; huge page still mapped=%d",
	  RES(r), (unsigned char)p[8191], (unsigned char)p[8192], b0, (long long)st.st_blocks,
	  (int)PM_PRESENT(pagemap(p)));
	memset(p, 'M', 16384);
	r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 100);
	fstat(fd, &st);
	P("q3d fallocate(PUNCH|KEEP, off 4096, len 100) = %s; bytes @4095='%c' @4096=0x%02x @4195=0x%02x @4196='%c' (only the range is zeroed); st_blocks=%lld",
	  RES(r), p[4095], (unsigned char)p[4096], (unsigned char)p[4195], p[4196], (long long)st.st_blocks);
	r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, HPG);
	fstat(fd, &st);
	P("q3d fallocate(PUNCH|KEEP, 0, 2MiB) = %s; st_blocks=%lld; mapped page present=%d", RES(r), (long long)st.st_blocks,
	  (int)PM_PRESENT(pagemap(p)));
	r = fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, HPG);
	P("q3d fallocate(PUNCH without KEEP_SIZE) = %s", RES(r));
	r = fallocate(fd, 0, 0, 4096);
	fstat(fd, &st);
	P("q3d fallocate(mode 0, 0, 4096) = %s st_blocks=%lld", RES(r), (long long)st.st_blocks);
	munmap(p, 4 << 20);
	close(fd);

	/* (e) MAP_PRIVATE hugetlb registered MISSING */
	fd = memfd_create("q3e", MFD_HUGETLB);
	ftruncate(fd, 2 * HPG);
	p = mmap(NULL, 2 * HPG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) DIE("q3e mmap %s", en(errno));
	int u = uffd_new(0);
	__u64 ioc;
	r = ureg(u, p, 2 * HPG, UFFDIO_REGISTER_MODE_MISSING, &ioc);
	P("q3e register MISSING on private hugetlb = %s ioctls=0x%llx", rcs(r), (unsigned long long)ioc);
	struct toucher t; toucher_start(&t, p + 0x3123, 0);
	struct uffd_msg m; long n = uread(u, &m, 2000);
	P("q3e read fault at base+0x3123: msg bytes=%ld event=0x%x flags=0x%llx address=base+0x%llx (masked to 2MiB: %s)",
	  n, m.event, (unsigned long long)m.arg.pagefault.flags, (unsigned long long)(m.arg.pagefault.address - (unsigned long)p),
	  m.arg.pagefault.address == (unsigned long)p ? "yes" : "no");
	char *src = mmap(NULL, HPG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(src, 'C', HPG);
	__s64 f; r = ucopy(u, p, src, HPG, 0, &f);
	pthread_join(t.t, NULL);
	P("q3e COPY 2MiB = %s copy=%lld; fault thread done=%d; map reads '%c'", rcs(r), (long long)f, t.done, p[0x3123]);
	memset(buf, 'x', 16);
	rd = pread(fd, buf, 16, 0x3123);
	fstat(fd, &st);
	P("q3e pread(memfd) after COPY into private map = %zd first byte 0x%02x (%s); st_blocks=%lld",
	  rd, (unsigned char)buf[0], buf[0] == 0 ? "zeros: page is private, not in page cache" : "page cache got the data",
	  (long long)st.st_blocks);
	char *sh = mmap(NULL, 2 * HPG, PROT_READ, MAP_SHARED, fd, 0);
	P("q3e shared view of same file reads 0x%02x", (unsigned char)sh[0x3123]);
	return 0;
}
