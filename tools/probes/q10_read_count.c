/* Q10: read(2) on a uffd with small / large counts. */
#include "common.h"

int main(void)
{
	int u = uffd_new(0);
	char buf[256];
	errno = 0;
	ssize_t n = read(u, buf, 31);
	P("q10 read(count 31), no message pending -> %zd %s", n, n < 0 ? en(errno) : "");
	n = read(u, buf, 0);
	P("q10 read(count 0), no message pending -> %zd %s", n, n < 0 ? en(errno) : "");
	n = read(u, buf, 64);
	P("q10 read(count 64), no message pending (O_NONBLOCK) -> %zd %s", n, n < 0 ? en(errno) : "");
	char *p = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ureg(u, p, 2 * PG, UFFDIO_REGISTER_MODE_MISSING, NULL);
	struct toucher t; toucher_start(&t, p, 0);
	struct pollfd pf = { u, POLLIN, 0 };
	poll(&pf, 1, 1000);
	n = read(u, buf, 31);
	P("q10 read(count 31), one message pending -> %zd %s", n, n < 0 ? en(errno) : "");
	n = read(u, buf, 64);
	P("q10 read(count 64), one message pending -> %zd (event=0x%x)", n, (unsigned char)buf[0]);
	n = read(u, buf, 64);
	P("q10 read again (message already read, faulter still blocked) -> %zd %s", n, n < 0 ? en(errno) : "");
	struct toucher t2; toucher_start(&t2, p + PG, 1);
	poll(&pf, 1, 1000);
	n = read(u, buf, 63);
	P("q10 read(count 63), one message pending -> %zd", n);
	__s64 f; uzero(u, p, 2 * PG, 0, &f);
	pthread_join(t.t, NULL); pthread_join(t2.t, NULL);
	/* two pending messages, count 48 (>=32 but < 64) */
	char *q = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ureg(u, q, 2 * PG, UFFDIO_REGISTER_MODE_MISSING, NULL);
	toucher_start(&t, q, 0); toucher_start(&t2, q + PG, 0);
	msleep(200);
	n = read(u, buf, 48);
	ssize_t n2 = read(u, buf, 96);
	P("q10 two pending: read(count 48) -> %zd, then read(count 96) -> %zd", n, n2);
	uzero(u, q, 2 * PG, 0, &f);
	pthread_join(t.t, NULL); pthread_join(t2.t, NULL);
	return 0;
}
