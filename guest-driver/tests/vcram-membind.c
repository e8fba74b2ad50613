// SPDX-License-Identifier: GPL-2.0
/*
 * vcram-membind: put anonymous memory on one NUMA node with
 * mbind(MPOL_BIND), without libnuma (which only accepts nodes in the
 * cpuset's Mems_allowed), and check placement and contents.
 *
 *   vcram-membind NODES MIB [HOLD_SECONDS [zero|random|text [move|slow]]]
 *
 * NODES is a node or a comma-separated list ("0,1").
 * Maps MIB MiB, binds it to NODES, writes the pattern (with "move": writes
 * it wherever the default policy puts it, then moves the pages to NODE
 * with move_pages(2); with "slow": pauses 20 ms after each MiB), counts
 * the pages
 * that landed on NODE (move_pages query), holds the memory for
 * HOLD_SECONDS (0: not at all), checks the contents again and exits.
 * Before writing it checks that the new memory reads as zero.
 * Prints "key=value" lines; exit status 0 only if every page was on NODE
 * and the contents were intact.  After the hold it also prints where the
 * pages are then ("end_node0=... end_node1=..."): memory may be moved.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MPOL_BIND 2
#define MPOL_MF_MOVE 2

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill(unsigned char *p, size_t len, const char *pattern, int slow)
{
	uint64_t s = 0x9e3779b97f4a7c15ull;
	size_t i;

	if (slow) {
		for (i = 0; i < len; i += 1 << 20) {
			fill(p + i, len - i < (1 << 20) ? len - i : 1 << 20,
			     pattern, 0);
			usleep(20000);
		}
		return;
	}

	if (!strcmp(pattern, "zero")) {
		for (i = 0; i < len; i += 4096)
			p[i] = 0;
	} else if (!strcmp(pattern, "random")) {
		for (i = 0; i + 8 <= len; i += 8) {
			uint64_t v = next_rand(&s);

			memcpy(p + i, &v, 8);
		}
	} else {
		for (i = 0; i < len; i++)
			p[i] = "the quick brown fox jumps over the lazy dog\n"[i % 44];
	}
}

static uint64_t checksum(const unsigned char *p, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	size_t i;

	for (i = 0; i < len; i += 8) {
		uint64_t v;

		memcpy(&v, p + i, 8);
		h = (h ^ v) * 1099511628211ull;
	}
	return h;
}

int main(int argc, char **argv)
{
	unsigned long mask[16] = { 0 };
	const char *pattern = "text";
	long node = -1, mib, hold = 0;
	unsigned long end_on[4] = { 0 };
	char *tok, *save = NULL;
	size_t len, npages, i, on_node = 0;
	unsigned char *p;
	void **pages;
	int *status, *nodes;
	int move = 0, slow = 0, tries;
	uint64_t sum1, sum2;

	if (argc < 3) {
		fprintf(stderr, "usage: %s NODE MIB [HOLD_SECONDS [zero|random|text [move|slow]]]\n",
			argv[0]);
		return 2;
	}
	for (tok = strtok_r(argv[1], ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		long n = strtol(tok, NULL, 0);

		if (n < 0 || n >= 16 * 64)
			return 2;
		mask[n / 64] |= 1ul << (n % 64);
		/* the last node named is the one move_pages() targets */
		node = n;
	}
	mib = strtol(argv[2], NULL, 0);
	if (argc > 3)
		hold = strtol(argv[3], NULL, 0);
	if (argc > 4)
		pattern = argv[4];
	if (argc > 5) {
		move = !strcmp(argv[5], "move");
		slow = !strcmp(argv[5], "slow");
	}
	if (node < 0 || node >= 16 * 64 || mib <= 0)
		return 2;

	len = (size_t)mib << 20;
	npages = len / 4096;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	if (!move && syscall(SYS_mbind, p, len, MPOL_BIND, mask, 16 * 64, 0)) {
		printf("mbind_errno=%d\n", errno);
		perror("mbind");
		return 1;
	}
	/* Fresh anonymous memory must read as zero (discarded pages too). */
	for (i = 0; i < len; i += 8) {
		uint64_t v;

		memcpy(&v, p + i, 8);
		if (v) {
			printf("nonzero_before_write=%zu\n", i);
			return 1;
		}
	}
	fill(p, len, pattern, slow);
	sum1 = checksum(p, len);

	pages = calloc(npages, sizeof(*pages));
	status = calloc(npages, sizeof(*status));
	if (!pages || !status)
		return 1;
	nodes = calloc(npages, sizeof(*nodes));
	if (!nodes)
		return 1;
	for (i = 0; i < npages; i++) {
		pages[i] = p + i * 4096;
		nodes[i] = node;
	}
	if (move && syscall(SYS_move_pages, 0, npages, pages, nodes, status,
			    MPOL_MF_MOVE) < 0) {
		printf("move_pages_errno=%d\n", errno);
		perror("move_pages");
		return 1;
	}
	/*
	 * A page being migrated (the driver's relief moves pages off the
	 * node) reads as an error for a moment: ask again.
	 */
	for (tries = 0; tries < 50; tries++) {
		size_t busy = 0;

		if (syscall(SYS_move_pages, 0, npages, pages, NULL, status, 0)) {
			perror("move_pages");
			return 1;
		}
		for (i = 0; i < npages; i++)
			busy += status[i] < 0;
		if (!busy)
			break;
		usleep(100000);
	}
	for (i = 0; i < npages; i++)
		if (status[i] >= 0 && status[i] < 16 * 64 &&
		    (mask[status[i] / 64] & (1ul << (status[i] % 64))))
			on_node++;
	printf("pages=%zu on_node=%zu\n", npages, on_node);
	fflush(stdout);

	if (hold > 0)
		sleep(hold);
	sum2 = checksum(p, len);
	if (!syscall(SYS_move_pages, 0, npages, pages, NULL, status, 0)) {
		for (i = 0; i < npages; i++)
			if (status[i] >= 0 && status[i] < 4)
				end_on[status[i]]++;
		printf("end_node0=%lu end_node1=%lu\n", end_on[0], end_on[1]);
	}
	printf("checksum_ok=%d\n", sum1 == sum2);
	return on_node == npages && sum1 == sum2 ? 0 : 1;
}
