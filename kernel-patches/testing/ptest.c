/*
 * Guest checks for private memory nodes (not part of the series; built into
 * the test initramfs, run by tests/guest/scripts/private-node.sh).
 * Build: gcc -O2 -static -o ptest ptest.c
 *   ptest [nomigrate]      mbind/move_pages checks against node 1, TAP-like
 *   ptest refused          what an owner without USER_NUMA refuses
 *   ptest filemove         mbind(MPOL_MF_MOVE) never moves page cache to node 1
 *   ptest orphan FILE      remove node 1 through FILE (the test owner's debugfs
 *                          "remove"), then fault under BIND{1}: SIGBUS
 *   ptest pageout MiB      swap a BIND{1} range out (MADV_PAGEOUT) and back in
 *   ptest shmswap MiB      shmem under a BIND{1} task policy, swapped out and in
 *   ptest raswap PAGES     cluster readahead next to a BIND{1} range's slots
 *   ptest hog MiB [hold]   touch MiB of anonymous memory, print pages per node
 *   ptest hugetlb MiB      map and touch MiB of MAP_HUGETLB memory (run it under
 *                          a task policy, e.g. numactl --membind=1)
 *   ptest bindhold MiB SEC write MiB under BIND{1}, print where it is, hold it
 *                          SEC seconds (others act meanwhile), then check the
 *                          contents and print where the pages are now
 *   ptest thp MiB          the same with MADV_HUGEPAGE on a 2 MiB aligned range,
 *                          also prints how many pages were in huge pages
 *   ptest paused FILE      pause node 1 by writing 1 to FILE (the test owner's
 *                          debugfs "paused"), check what a pause does, resume
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MPOL_DEFAULT 0
#define MPOL_PREFERRED 1
#define MPOL_BIND 2
#define MPOL_INTERLEAVE 3
#define MPOL_PREFERRED_MANY 5
#define MPOL_WEIGHTED_INTERLEAVE 6
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

/*
 * hugetlb: MiB of MAP_HUGETLB memory (2 MiB pages), touched; prints
 * "hugetlb: mib=M mapped=0|errno n0=A n1=B".  Exit status 0 if it mapped.
 */
static int hugetlb(long mb)
{
	size_t len = (size_t)mb << 20;
	long pages = mb * 256, i;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);

	if (p == MAP_FAILED) {
		printf("hugetlb: mib=%ld mapped=%d n0=0 n1=0\n", mb, errno);
		return 1;
	}
	for (i = 0; i < pages; i++)
		p[i * 4096] = 1;
	printf("hugetlb: mib=%ld mapped=0 n0=%ld n1=%ld\n", mb, count_on(p, pages, 0),
	       count_on(p, pages, 1));
	return 0;
}

/*
 * bindhold: MiB under BIND{1}, each page stamped with its index.  Prints
 * "placed pages=N n1=X" once written (a test waits for it, then acts on the
 * memory from outside), holds it SEC seconds, then prints
 * "held pages=N n0=A n1=B bad=C": where the pages are now, and how many
 * pages lost their stamp.  Exit status 0 if nothing was lost.
 */
static int bindhold(long mb, int sec)
{
	long pages = mb * 256, i, bad = 0;
	size_t len = pages * 4096;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED || mbind_(p, len, MPOL_BIND, 1UL << 1, 0))
		return 2;
	for (i = 0; i < pages; i++)
		memset(p + i * 4096, (int)(i % 251) + 1, 4096);
	printf("placed pages=%ld n1=%ld\n", pages, count_on(p, pages, 1));
	fflush(stdout);
	sleep(sec);
	for (i = 0; i < pages; i++) {
		char *q = p + i * 4096;

		if (q[0] != (char)(i % 251 + 1) || memcmp(q, q + 1, 4095))
			bad++;
	}
	printf("held pages=%ld n0=%ld n1=%ld bad=%ld\n", pages, count_on(p, pages, 0),
	       count_on(p, pages, 1), bad);
	return bad != 0;
}

/* Pages of [p, p + MiB) in huge pages, from /proc/self/smaps. */
static long thp_pages(char *p)
{
	unsigned long start, end;
	char line[256];
	FILE *f = fopen("/proc/self/smaps", "r");
	long kb = -1;
	int in = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		/* "start-end perms ..." starts a VMA; "Key: value" lines follow */
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
			in = start == (unsigned long)p;
		else if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb < 0 ? -1 : kb / 4;
}

static int thp(long mb)
{
	long pages = mb * 256, i;
	size_t len = pages * 4096, align = 2 << 20;
	char *raw = mmap(NULL, len + align, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p;

	if (raw == MAP_FAILED)
		return 1;
	p = (char *)(((unsigned long)raw + align - 1) & ~(align - 1));
	madvise(p, len, MADV_HUGEPAGE);
	for (i = 0; i < pages; i++)
		p[i * 4096] = 1;
	printf("thp: %ld MiB N0=%ld N1=%ld huge=%ld\n", mb, count_on(p, pages, 0),
	       count_on(p, pages, 1), thp_pages(p));
	return 0;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	int ok = fd >= 0 && write(fd, s, strlen(s)) == (ssize_t)strlen(s);

	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

/* Touch one page of a BIND{1} range in a child; returns its wait status. */
/*
 * Wait up to 20 s for child @pid; a child still running then (a fault that
 * retries forever) is killed.  Returns its wait status, or -1 if it had to be
 * killed or could not be waited for.
 */
static int wait_bounded(pid_t pid, const char *what)
{
	int st = 0, i;

	for (i = 0; i < 200; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return st;
		if (r < 0)
			return -1;
		usleep(100000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	printf("# %s was still retrying after 20 s\n", what);
	return -1;
}

static int touch_in_child(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		char *c = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (c == MAP_FAILED || mbind_(c, 4096, MPOL_BIND, 1UL << 1, 0))
			_exit(2);
		c[0] = 1;
		_exit(count_on(c, 1, 1) == 1 ? 0 : 1);
	}
	if (pid < 0)
		return -1;
	return wait_bounded(pid, "the fault");
}

/* What a pause of node 1 does; the owner's debugfs file @ctl pauses it. */
static int paused(const char *ctl)
{
	long pages = 1024, i, r, bad;
	size_t len = pages * 4096;
	char *d = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *e = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void **addrs = malloc(pages * sizeof(void *));
	int *nodes = malloc(pages * sizeof(int));
	int *status = malloc(pages * sizeof(int));
	int st, fd;

	/* Data stored on node 1 before the pause. */
	mbind_(d, len, MPOL_BIND, 1UL << 1, 0);
	for (i = 0; i < (long)len; i++)
		d[i] = (char)(i * 7 + 3);
	r = write_file(ctl, "1");
	check(r == 0, "pause node 1 through the owner", r);

	st = touch_in_child();
	check(st >= 0 && WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS,
	      "paused: a new page under BIND{1} is SIGBUS", st);

	mbind_(e, 4096, MPOL_BIND, 1UL << 1, 0);
	fd = open("/dev/zero", O_RDONLY);
	r = read(fd, e, 4096);
	check(r == -1 && errno == EFAULT,
	      "paused: read(2) into an untouched BIND{1} page is EFAULT", r < 0 ? -errno : r);
	close(fd);

	mbind_(q, len, MPOL_BIND, 3UL, 0);
	memset(q, 1, len);
	r = count_on(q, pages, 0);
	check(r == pages, "paused: BIND{0,1} falls back to node 0", r);

	memset(m, 2, len);
	for (i = 0; i < pages; i++) {
		addrs[i] = m + i * 4096;
		nodes[i] = 1;
	}
	r = syscall(SYS_move_pages, 0, pages, addrs, nodes, status, 0);
	st = errno;
	printf("# paused move_pages: %ld errno %d\n", r, r ? st : 0);
	check(r == -1 && st == ENOMEM && count_on(m, pages, 0) == pages,
	      "paused: move_pages to node 1 is ENOMEM, pages stay on node 0", r ? -st : 0);

	for (i = 0, bad = 0; i < (long)len; i++)
		bad += d[i] != (char)(i * 7 + 3);
	r = count_on(d, pages, 1);
	check(bad == 0 && r == pages, "paused: data already on node 1 stays there, intact", bad);

	r = write_file(ctl, "0");
	st = touch_in_child();
	check(r == 0 && st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "resumed: a new page under BIND{1} lands on node 1", st);
	printf("1..%d\n", n);
	return 0;
}

/*
 * mbind(MPOL_MF_MOVE) of page cache: a private mapping of a shmem file
 * (memfd), read in on node 0, must not move to node 1 under BIND{1}:
 * only anonymous memory moves to a private node.
 */
static int filemove(void)
{
	long pages = 256, i, r;
	size_t len = pages * 4096;
	char buf[4096];
	volatile char sink = 0;
	int fd = syscall(SYS_memfd_create, "ptest", 0);
	char *f;

	memset(buf, 0x5a, sizeof(buf));
	for (i = 0; fd >= 0 && i < pages; i++)
		if (write(fd, buf, sizeof(buf)) != sizeof(buf))
			break;
	f = fd >= 0 ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
	check(f != MAP_FAILED && i == pages, "file pages written and mapped", i);
	if (f == MAP_FAILED)
		return 1;
	for (i = 0; i < pages; i++)
		sink += f[i * 4096];
	r = count_on(f, pages, 0);
	check(r == pages, "file pages start on node 0", r);
	r = mbind_(f, len, MPOL_BIND, 1UL << 1, MPOL_MF_MOVE);
	printf("# mbind(BIND{1}, MPOL_MF_MOVE) of file pages: %ld errno %d\n", r, r ? errno : 0);
	r = count_on(f, pages, 1);
	check(r == 0, "mbind(MPOL_MF_MOVE) leaves page cache off node 1", r);
	for (i = 0, r = 0; i < pages; i++)
		r += f[i * 4096] != 0x5a;
	check(r == 0, "file pages intact after mbind(MPOL_MF_MOVE)", r);
	printf("1..%d\n", n);
	return 0;
}

/*
 * A bind policy to node 1 whose memory is gone: remove the node through
 * the owner's debugfs file @ctl, then fault under BIND{1}.  The fault must
 * fail with SIGBUS, not retry forever.
 */
static int orphan(const char *ctl)
{
	char *c = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long r = mbind_(c, 4096, MPOL_BIND, 1UL << 1, 0);
	pid_t pid;
	int st;

	check(r == 0, "orphan: mbind(MPOL_BIND, {1}) before removal", r ? -errno : 0);
	r = write_file(ctl, "1");
	check(r == 0, "orphan: node 1 removed by its owner", r);
	pid = fork();
	if (pid == 0) {
		c[0] = 1;
		_exit(0);
	}
	st = pid < 0 ? -1 : wait_bounded(pid, "orphan: the fault");
	check(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS,
	      "orphan: a fault under BIND{1} without node 1 is SIGBUS", st);
	printf("1..%d\n", n);
	return 0;
}

/* An owner that allows no user placement (caps without USER_NUMA). */
static int refused(void)
{
	long pages = 1024, r, i;
	size_t len = pages * 4096;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void **addrs = malloc(pages * sizeof(void *));
	int *nodes = malloc(pages * sizeof(int));
	int *status = malloc(pages * sizeof(int));

	r = mbind_(p, len, MPOL_BIND, 1UL << 1, 0);
	check(r == -1 && errno == EINVAL, "refused: mbind(MPOL_BIND, {1}) is EINVAL", r ? -errno : 0);
	r = mbind_(p, len, MPOL_PREFERRED, 1UL << 1, 0);
	check(r == -1 && errno == EINVAL, "refused: mbind(MPOL_PREFERRED, {1}) is EINVAL", r ? -errno : 0);
	r = mbind_(p, len, MPOL_INTERLEAVE, 1UL << 1, 0);
	check(r == -1 && errno == EINVAL, "refused: mbind(MPOL_INTERLEAVE, {1}) is EINVAL", r ? -errno : 0);
	r = mbind_(p, len, MPOL_BIND, 3UL, 0);
	check(r == 0, "refused: mbind(MPOL_BIND, {0,1}) keeps node 0", r ? -errno : 0);
	memset(p, 1, len);
	r = count_on(p, pages, 1);
	check(r == 0 && count_on(p, pages, 0) == pages, "refused: BIND{0,1} never uses node 1", r);
	for (i = 0; i < pages; i++) {
		addrs[i] = p + i * 4096;
		nodes[i] = 1;
	}
	r = syscall(SYS_move_pages, 0, pages, addrs, nodes, status, 0);
	check(r == -1 && errno == ENODEV, "refused: move_pages to node 1 is ENODEV", r ? -errno : 0);
	printf("1..%d\n", n);
	return 0;
}

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

/* Pages of [p, p + pages) that are present (not swapped out). */
static long present(char *p, long pages)
{
	return count_on(p, pages, 0) + count_on(p, pages, 1);
}

/* What a swap round trip of [p, p + pages) did. */
struct roundtrip {
	long n1_before;		/* pages on node 1 before MADV_PAGEOUT */
	long present_after;	/* pages still present after it */
	long n1_after;		/* pages on node 1 once touched again */
	long bad;		/* bytes that came back wrong */
};

/* Fill [p, p + pages) with a pattern, swap it out, read it back. */
static struct roundtrip swap_roundtrip(char *p, long pages, int mul, int add)
{
	struct roundtrip r = { 0 };
	size_t len = pages * 4096;
	long i;

	for (i = 0; i < (long)len; i += 64)
		p[i] = (char)(i / 64 * mul + add);
	r.n1_before = count_on(p, pages, 1);
	madvise(p, len, MADV_PAGEOUT);
	r.present_after = present(p, pages);
	for (i = 0; i < (long)len; i += 64)
		r.bad += p[i] != (char)(i / 64 * mul + add);
	r.n1_after = count_on(p, pages, 1);
	return r;
}

/*
 * Swap a BIND{1} range out with MADV_PAGEOUT and back in by touching it:
 * prints "pageout: n1=.. after_pageout=.. after_swapin_n1=.. bad=..".
 * Without RECLAIM the pages must stay; with it they leave and come back
 * to node 1 intact.
 */
static int pageout(long mb)
{
	long pages = mb * 256;
	size_t len = pages * 4096;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct roundtrip r;

	if (p == MAP_FAILED || mbind_(p, len, MPOL_BIND, 1UL << 1, 0))
		return 1;
	r = swap_roundtrip(p, pages, 13, 1);
	printf("pageout: pages=%ld n1=%ld present_after_pageout=%ld after_swapin_n1=%ld bad=%ld\n",
	       pages, r.n1_before, r.present_after, r.n1_after, r.bad);
	return 0;
}

/*
 * shmem under the task's BIND{1} policy: written, swapped out and faulted
 * back by the bound task, its pages must stay off node 1 (the file
 * outlives the task).  Prints "shmswap: n1_written=.. present_after_pageout=..
 * n1_after_swapin=.. bad=..".
 */
static int shmswap(long mb)
{
	long pages = mb * 256;
	size_t len = pages * 4096;
	unsigned long mask = 1UL << 1;
	int fd = syscall(SYS_memfd_create, "shmswap", 0);
	struct roundtrip r;
	char *p;

	if (fd < 0 || ftruncate(fd, len))
		return 1;
	if (syscall(SYS_set_mempolicy, MPOL_BIND, &mask, 64))
		return 2;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return 1;
	r = swap_roundtrip(p, pages, 7, 5);
	printf("shmswap: pages=%ld n1_written=%ld present_after_pageout=%ld n1_after_swapin=%ld bad=%ld\n",
	       pages, r.n1_before, r.present_after, r.n1_after, r.bad);
	return 0;
}

/*
 * Cluster swap readahead: pages of an unbound range X and of a BIND{1}
 * range Y are swapped out alternately, so their slots are neighbours.
 * Faulting Y back reads X's slots ahead; X's pages must not land on
 * node 1.  Prints "raswap: x_n1=.. y_n1=.. x_bad=..".
 */
/* Anonymous pages of [p, p + pages) in memory or in the swap cache. */
static long resident(char *p, long pages)
{
	unsigned char *vec = malloc(pages);
	long i, r = 0;

	if (!vec || mincore(p, pages * 4096, vec))
		r = -1;
	for (i = 0; r >= 0 && i < pages; i++)
		r += vec[i] & 1;
	free(vec);
	return r;
}

/*
 * Cluster readahead next to a BIND{1} range: x (no policy) and y (BIND{1})
 * are swapped out in alternating chunks of RA_CHUNK pages, so that their
 * slots share readahead clusters.  Faulting y back in sequentially grows the
 * readahead window, which reads x's slots too; those must not follow y's
 * policy onto node 1 (x_n1 once x is touched).  x's own pages can stay in
 * the swap cache after their pageout (a loop device writes asynchronously),
 * and then y's faults find them there instead of reading them: so before y
 * faults, anonymous memory is reclaimed until no page of x is cached
 * (x_cached, at most 60 rounds: writeback to the loop device can lag).
 * x_read counts the pages of x that y's faults read ahead (not cached
 * before them, cached after), x_read_n1 those of them that landed on node 1.
 * How much readahead reads adapts to earlier hits, so x_read can be 0.
 */
#define RA_CHUNK 8

/*
 * Reclaim anonymous memory through the root memory cgroup's memory.reclaim
 * (cgroup2 mounted on /sys/fs/cgroup).  Not node0/reclaim: per-node
 * proactive reclaim shrinks nothing while the node has little page cache
 * (__node_reclaim()'s min_unmapped_pages test), as in this guest.
 */
static void reclaim_anon(void)
{
	int fd = open("/sys/fs/cgroup/memory.reclaim", O_WRONLY);

	if (fd < 0) {
		perror("/sys/fs/cgroup/memory.reclaim");
		return;
	}
	/* EAGAIN: less than asked was reclaimed, which is fine here */
	if (write(fd, "64M swappiness=max", 18) < 0 && errno != EAGAIN)
		perror("memory.reclaim");
	close(fd);
}
static int raswap(long pages)
{
	size_t len = pages * 4096;
	char *x = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *y = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long i, bad = 0, xout, yout, xra, xcached, xread = 0, xread_n1 = 0;
	unsigned char *before = malloc(pages), *after = malloc(pages);
	void **addrs = malloc(pages * sizeof(void *));
	int *where = malloc(pages * sizeof(int));
	int round;

	if (x == MAP_FAILED || y == MAP_FAILED || !before || !after || !addrs || !where ||
	    mbind_(y, len, MPOL_BIND, 1UL << 1, 0))
		return 1;
	for (i = 0; i < pages; i++) {
		x[i * 4096] = (char)(i * 3 + 1);
		y[i * 4096] = (char)(i * 5 + 2);
	}
	for (i = 0; i < pages; i += RA_CHUNK) {
		madvise(x + i * 4096, RA_CHUNK * 4096, MADV_PAGEOUT);
		madvise(y + i * 4096, RA_CHUNK * 4096, MADV_PAGEOUT);
	}
	xout = present(x, pages);
	yout = present(y, pages);
	for (round = 0; round < 60 && (xcached = resident(x, pages)) > 0; round++) {
		sleep(1);
		reclaim_anon();
	}
	if (mincore(x, len, before))
		return 1;
	for (i = 0; i < pages; i++)
		bad += y[i * 4096] != (char)(i * 5 + 2);
	xra = resident(x, pages);
	if (mincore(x, len, after))
		return 1;
	for (i = 0; i < pages; i++)
		bad += x[i * 4096] != (char)(i * 3 + 1);
	/* where the pages of x that y's faults read ahead ended up */
	for (i = 0; i < pages; i++)
		addrs[i] = x + i * 4096;
	if (syscall(SYS_move_pages, 0, pages, addrs, NULL, where, 0))
		return 1;
	for (i = 0; i < pages; i++) {
		if (!(before[i] & 1) && (after[i] & 1)) {
			xread++;
			xread_n1 += where[i] == 1;
		}
	}
	printf("raswap: pages=%ld x_present_after_pageout=%ld y_present_after_pageout=%ld x_cached=%ld reclaim_rounds=%d x_readahead=%ld x_read=%ld x_read_n1=%ld x_n1=%ld y_n1=%ld bad=%ld\n",
	       pages, xout, yout, xcached, round, xra, xread, xread_n1,
	       count_on(x, pages, 1), count_on(y, pages, 1), bad);
	return 0;
}

int main(int argc, char **argv)
{
	long pages = 4096, r;
	size_t len = pages * 4096;
	char *p;

	if (argc > 2 && !strcmp(argv[1], "hog"))
		return hog(atol(argv[2]), argc > 3);
	if (argc > 2 && !strcmp(argv[1], "hugetlb"))
		return hugetlb(atol(argv[2]));
	if (argc > 3 && !strcmp(argv[1], "bindhold"))
		return bindhold(atol(argv[2]), atoi(argv[3]));
	if (argc > 2 && !strcmp(argv[1], "thp"))
		return thp(atol(argv[2]));
	if (argc > 2 && !strcmp(argv[1], "paused"))
		return paused(argv[2]);
	if (argc > 2 && !strcmp(argv[1], "orphan"))
		return orphan(argv[2]);
	if (argc > 1 && !strcmp(argv[1], "filemove"))
		return filemove();
	if (argc > 1 && !strcmp(argv[1], "refused"))
		return refused();
	if (argc > 2 && !strcmp(argv[1], "pageout"))
		return pageout(atol(argv[2]));
	if (argc > 2 && !strcmp(argv[1], "shmswap"))
		return shmswap(atol(argv[2]));
	if (argc > 2 && !strcmp(argv[1], "raswap"))
		return raswap(atol(argv[2]));

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

	/* Every mode may name node 1: a task that names it has opted in. */
	char *s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mbind_(s, len, MPOL_PREFERRED, 1UL << 1, 0);
	check(r == 0, "mbind(MPOL_PREFERRED, {1}) accepted", r ? -errno : 0);
	memset(s, 1, len);
	r = count_on(s, pages, 1);
	check(r == pages, "PREFERRED{1} pages are on node 1", r);
	munmap(s, len);

	s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mbind_(s, len, MPOL_PREFERRED_MANY, 1UL << 1, 0);
	check(r == 0, "mbind(MPOL_PREFERRED_MANY, {1}) accepted", r ? -errno : 0);
	memset(s, 1, len);
	r = count_on(s, pages, 1);
	check(r == pages, "PREFERRED_MANY{1} pages are on node 1", r);
	munmap(s, len);

	s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mbind_(s, len, MPOL_INTERLEAVE, 1UL << 1, 0);
	check(r == 0, "mbind(MPOL_INTERLEAVE, {1}) accepted", r ? -errno : 0);
	memset(s, 1, len);
	r = count_on(s, pages, 1);
	check(r == pages, "INTERLEAVE{1} pages are on node 1", r);
	munmap(s, len);

	s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mbind_(s, len, MPOL_INTERLEAVE, 3UL, 0);
	check(r == 0, "mbind(MPOL_INTERLEAVE, {0,1}) accepted", r ? -errno : 0);
	memset(s, 1, len);
	r = count_on(s, pages, 1);
	printf("# INTERLEAVE{0,1}: %ld of %ld pages on node 1\n", r, pages);
	check(r >= pages * 4 / 10 && r <= pages * 6 / 10 && count_on(s, pages, 0) == pages - r,
	      "INTERLEAVE{0,1} puts half the pages on node 1, half on node 0", r);
	munmap(s, len);

	s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mbind_(s, len, MPOL_WEIGHTED_INTERLEAVE, 3UL, 0);
	check(r == 0, "mbind(MPOL_WEIGHTED_INTERLEAVE, {0,1}) accepted", r ? -errno : 0);
	memset(s, 1, len);
	r = count_on(s, pages, 1);
	printf("# WEIGHTED_INTERLEAVE{0,1}: %ld of %ld pages on node 1\n", r, pages);
	check(r > 0 && r < pages && count_on(s, pages, 0) == pages - r,
	      "WEIGHTED_INTERLEAVE{0,1} uses both nodes", r);

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
			check(r == -1 && errno == ENODEV, "move_pages to node 1 without USER_NUMA is ENODEV", r ? -errno : 0);
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
