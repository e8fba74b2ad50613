/*
 * Quick guest checks for private memory nodes, used to boot-test the series
 * (not part of it, not run by CI). Build: gcc -O2 -static -o ptest ptest.c
 *   ptest [nomigrate]      mbind/move_pages checks against node 1, TAP-like
 *   ptest hog MiB [hold]   touch MiB of anonymous memory, print pages per node
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MPOL_DEFAULT 0
#define MPOL_PREFERRED 1
#define MPOL_BIND 2
#define MPOL_INTERLEAVE 3
#define MPOL_MF_MOVE (1 << 1)

static int n;
static void check(int ok, const char *what, long detail)
{
	printf("%s %d %s (%ld)\n", ok ? "ok" : "not ok", ++n, what, detail);
}

static long mbind_(void *a, unsigned long len, int mode, unsigned long mask, unsigned flags)
{
	return syscall(SYS_mbind, a, len, mode, &mask, 64, flags);
}

static long count_on(char *p, long pages, int node)
{
	void **addrs = malloc(pages * sizeof(void *));
	int *status = malloc(pages * sizeof(int));
	long i, c = 0;

	for (i = 0; i < pages; i++)
		addrs[i] = p + i * 4096;
	if (syscall(SYS_move_pages, 0, pages, addrs, NULL, status, 0))
		return -errno;
	for (i = 0; i < pages; i++)
		if (status[i] == node)
			c++;
	free(addrs);
	free(status);
	return c;
}

static int hog(long mb, int hold)
{
	long pages = mb * 256, i;
	char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return 1;
	for (i = 0; i < pages; i++)
		p[i * 4096] = 1;
	printf("hog: %ld MiB N0=%ld N1=%ld\n", mb, count_on(p, pages, 0), count_on(p, pages, 1));
	fflush(stdout);
	if (hold)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	long pages = 4096, r;
	size_t len = pages * 4096;
	char *p;

	if (argc > 2 && !strcmp(argv[1], "hog"))
		return hog(atol(argv[2]), argc > 3);

	/* BIND to node 1 */
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mbind_(p, len, MPOL_BIND, 1UL << 1, 0);
	check(r == 0, "mbind(MPOL_BIND, {1})", r ? -errno : 0);
	memset(p, 1, len);
	r = count_on(p, pages, 1);
	check(r == pages, "all touched pages of BIND{1} are on node 1", r);

	/* BIND {0,1} */
	char *q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mbind_(q, len, MPOL_BIND, 3UL, 0);
	check(r == 0, "mbind(MPOL_BIND, {0,1})", r ? -errno : 0);
	memset(q, 1, len);
	r = count_on(q, pages, 1) + count_on(q, pages, 0);
	check(r == pages, "BIND{0,1} pages are on node 0 or 1", r);
	printf("# BIND{0,1}: %ld pages on node 1\n", count_on(q, pages, 1));

	/* PREFERRED / INTERLEAVE over node 1 only */
	char *s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mbind_(s, len, MPOL_PREFERRED, 1UL << 1, 0);
	check(r == -1 && errno == EINVAL, "mbind(MPOL_PREFERRED, {1}) is EINVAL", r ? -errno : 0);
	r = mbind_(s, len, MPOL_INTERLEAVE, 1UL << 1, 0);
	check(r == -1 && errno == EINVAL, "mbind(MPOL_INTERLEAVE, {1}) is EINVAL", r ? -errno : 0);
	r = mbind_(s, len, MPOL_INTERLEAVE, 3UL, 0);
	check(r == 0, "mbind(MPOL_INTERLEAVE, {0,1}) accepted", r ? -errno : 0);
	memset(s, 1, len);
	r = count_on(s, pages, 1);
	check(r == 0, "INTERLEAVE{0,1} never uses node 1", r);

	/* internal flag cannot be passed */
	r = mbind_(s, len, MPOL_BIND | (1 << 5), 1UL << 1, 0);
	check(r == -1 && errno == EINVAL, "mode with bit 5 is EINVAL", r ? -errno : 0);

	/* move_pages of node-0 pages to node 1 */
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(m, 2, len);
	{
		void **addrs = malloc(pages * sizeof(void *));
		int *nodes = malloc(pages * sizeof(int));
		int *status = malloc(pages * sizeof(int));
		long i;

		for (i = 0; i < pages; i++) {
			addrs[i] = m + i * 4096;
			nodes[i] = 1;
		}
		r = syscall(SYS_move_pages, 0, pages, addrs, nodes, status, 0);
		printf("# move_pages to node 1: %ld errno %d status[0] %d\n", r, r ? errno : 0, status[0]);
		if (argc > 1 && !strcmp(argv[1], "nomigrate"))
			check(r == -1 && errno == ENODEV, "move_pages to node 1 without USER_MIGRATE is ENODEV", r ? -errno : 0);
		else
			check(r == 0 && count_on(m, pages, 1) == pages, "move_pages to node 1", count_on(m, pages, 1));
	}

	if (argc > 2 && !strcmp(argv[2], "hold")) {
		printf("# holding memory\n");
		fflush(stdout);
		pause();
	}
	munmap(p, len);
	munmap(q, len);
	munmap(s, len);
	munmap(m, len);
	printf("1..%d\n", n);
	return 0;
}
