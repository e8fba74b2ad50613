// SPDX-License-Identifier: GPL-2.0
/*
 * vcram: device-guided relief.  When the device reports HIGH pressure or
 * an OVERFLOW, the driver asks it which pages cost it most (NOMINATE,
 * protocol 1.3: overflowed pages, then raw ones, then poorly compressed
 * ones) and moves them to public nodes with node_private_evacuate(), a
 * round every 100 ms within the relief_rate budget, until physical use is
 * below the low watermark.  Moved pages come back through the free
 * callback and are DISCARDed as usual, which releases the device's space.
 *
 * An episode that makes no progress for 5 s is given up; if physical use
 * is still above the low watermark then, the relief tries again on its own
 * after a delay that doubles with every give-up that moved nothing (1 s up
 * to 32 s; back to 1 s after one that moved pages or reached LOW), or at
 * once on the next HIGH or OVERFLOW event.  So a device that stays above
 * LOW without a new event is not left alone, and one whose costly pages
 * cannot move (pinned, no room elsewhere) costs one NOMINATE per round for
 * 5 s every 32 s at most.
 *
 * The work runs on the system's unbound queue: it sleeps in migration and
 * takes vc->lock around each evacuation, so that the memory stays added
 * while it runs (offlining marks it removing under that lock first).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/jiffies.h>
#include <linux/math64.h>
#include <linux/mm.h>
#include <linux/pfn.h>
#include <linux/slab.h>
#include <linux/virtio_config.h>

#include "vcram.h"

#define VCRAM_RELIEF_ROUNDS_PER_SEC	10
#define VCRAM_RELIEF_ROUND		(HZ / VCRAM_RELIEF_ROUNDS_PER_SEC)
/* Rounds without a page moved before an episode is given up (5 s) */
#define VCRAM_RELIEF_MAX_IDLE		50
/* How long a round waits for the device's answer */
#define VCRAM_RELIEF_TIMEOUT		(2 * HZ)
/* Delay before a retry after a give-up: doubles up to the maximum */
#define VCRAM_RELIEF_RETRY_MIN		HZ
#define VCRAM_RELIEF_RETRY_MAX		(32 * HZ)

static void vcram_relief_work(struct work_struct *work);

void vcram_relief_init(struct vcram *vc)
{
	INIT_DELAYED_WORK(&vc->relief_work, vcram_relief_work);
}

static bool vcram_relief_usable(struct vcram *vc)
{
	return READ_ONCE(vcram_relief_rate) && vc->version_minor >= 3 &&
	       !READ_ONCE(vc->rq_dead);
}

/* Physical use below the low watermark (from the config space). */
static bool vcram_below_low(struct vcram *vc)
{
	u64 used, cap;
	u32 low;

	virtio_cread_le(vc->vdev, struct vcram_config, physical_used, &used);
	virtio_cread_le(vc->vdev, struct vcram_config, physical_capacity, &cap);
	virtio_cread_le(vc->vdev, struct vcram_config, low_watermark, &low);
	if (!cap || low > 100)
		return false;	/* nonsense: the idle limit ends the episode */
	return used < div_u64(cap, 100) * low;
}

/* A new episode; the caller has set VCRAM_RELIEF_ACTIVE. */
static void vcram_relief_begin(struct vcram *vc, const char *why)
{
	WRITE_ONCE(vc->relief_start, jiffies);
	WRITE_ONCE(vc->relief_moved, 0);
	WRITE_ONCE(vc->relief_idle, 0);
	vcram_count(vc, VCRAM_STAT_RELIEF_RUNS, 1);
	dev_info_ratelimited(&vc->vdev->dev,
			     "%s: moving the device's costliest pages off node %d\n",
			     why, vc->nid);
}

/* On HIGH pressure and on OVERFLOW: start an episode unless one runs. */
void vcram_relief_start(struct vcram *vc, const char *why)
{
	if (!vcram_relief_usable(vc))
		return;
	if (!test_and_set_bit(VCRAM_RELIEF_ACTIVE, &vc->relief_flags)) {
		/* An event does not wait for a queued retry. */
		clear_bit(VCRAM_RELIEF_RETRY, &vc->relief_flags);
		vcram_relief_begin(vc, why);
		mod_delayed_work(system_dfl_wq, &vc->relief_work, 0);
		return;
	}
	/* A round is queued already unless one is running: then, one more. */
	queue_delayed_work(system_dfl_wq, &vc->relief_work, 0);
}

/* Before the device stops, and at the end: no round runs after this. */
void vcram_relief_stop(struct vcram *vc)
{
	cancel_delayed_work_sync(&vc->relief_work);
	clear_bit(VCRAM_RELIEF_ACTIVE, &vc->relief_flags);
	clear_bit(VCRAM_RELIEF_RETRY, &vc->relief_flags);
}

static void vcram_relief_end(struct vcram *vc, bool reached)
{
	unsigned int ms = jiffies_to_msecs(jiffies - READ_ONCE(vc->relief_start));
	unsigned long moved = READ_ONCE(vc->relief_moved);
	unsigned long delay = vc->relief_retry_delay;

	WRITE_ONCE(vc->relief_last_ms, ms);
	if (reached) {
		vc->relief_retry_delay = 0;
		clear_bit(VCRAM_RELIEF_ACTIVE, &vc->relief_flags);
		dev_info_ratelimited(&vc->vdev->dev,
				     "relief: %lu pages moved off node %d in %u ms, physical use below the low watermark\n",
				     moved, vc->nid, ms);
		return;
	}
	/* Above LOW still: try again later, sooner if this one did move. */
	vcram_count(vc, VCRAM_STAT_RELIEF_GAVE_UP, 1);
	if (moved || !delay)
		delay = VCRAM_RELIEF_RETRY_MIN;
	else
		delay = min_t(unsigned long, 2 * delay, VCRAM_RELIEF_RETRY_MAX);
	vc->relief_retry_delay = delay;
	set_bit(VCRAM_RELIEF_RETRY, &vc->relief_flags);
	clear_bit(VCRAM_RELIEF_ACTIVE, &vc->relief_flags);
	queue_delayed_work(system_dfl_wq, &vc->relief_work, delay);
	dev_info_ratelimited(&vc->vdev->dev,
			     "relief: %lu pages moved off node %d in %u ms, no progress, given up; retry in %u ms\n",
			     moved, vc->nid, ms, jiffies_to_msecs(delay));
}

/*
 * A queued retry is due (VCRAM_RELIEF_RETRY set, no episode running):
 * start an episode if physical use is still above LOW.  Returns true if
 * one runs.
 */
static bool vcram_relief_retry(struct vcram *vc)
{
	if (!test_and_clear_bit(VCRAM_RELIEF_RETRY, &vc->relief_flags))
		return false;
	if (vcram_below_low(vc)) {
		vc->relief_retry_delay = 0;
		return false;
	}
	if (test_and_set_bit(VCRAM_RELIEF_ACTIVE, &vc->relief_flags))
		return true;	/* an event started one meanwhile */
	vcram_count(vc, VCRAM_STAT_RELIEF_RETRIES, 1);
	vcram_relief_begin(vc, "still above the low watermark");
	return true;
}

/*
 * Check one answer: status OK, used length 24 + 16 * n with n within what
 * was asked, no more pages named than the limit sent (if one was).
 * Returns the number of entries, or -EPROTO.
 */
static int vcram_relief_entries(struct vcram *vc, struct vcram_nominate *nom)
{
	size_t hdr = sizeof(nom->resp), ent = sizeof(nom->ent[0]);
	unsigned int len = nom->len;

	if (len < hdr || (len - hdr) % ent || (len - hdr) / ent > nom->max ||
	    le32_to_cpu(nom->resp.status) != VCRAM_S_OK ||
	    (nom->max_pages &&
	     le64_to_cpu(nom->resp.pages_done) > nom->max_pages)) {
		vcram_count(vc, VCRAM_STAT_RELIEF_BAD, 1);
		dev_warn_ratelimited(&vc->vdev->dev,
				     "NOMINATE answer refused: length %u, status %u, %llu pages named (limit %u)\n",
				     len, le32_to_cpu(nom->resp.status),
				     le64_to_cpu(nom->resp.pages_done),
				     nom->max_pages);
		return -EPROTO;
	}
	return (len - hdr) / ent;
}

/* Move one nominated run; returns the pages moved, or a negative error. */
static long vcram_relief_evacuate(struct vcram *vc, u64 addr,
				  unsigned long npages)
{
	unsigned long moved = 0;
	int ret;

	mutex_lock(&vc->lock);
	if (!vc->added || vc->removing || READ_ONCE(vc->orphaned)) {
		mutex_unlock(&vc->lock);
		return -ENODEV;
	}
	ret = node_private_evacuate(&vc->np, PHYS_PFN(addr), npages,
				    NUMA_NO_NODE, &moved);
	mutex_unlock(&vc->lock);
	vcram_count(vc, VCRAM_STAT_RELIEF_EVACUATED, npages);
	vcram_count(vc, VCRAM_STAT_RELIEF_MOVED, moved);
	if (ret == -EBUSY) {
		vcram_count(vc, VCRAM_STAT_RELIEF_BUSY, 1);
		ret = 0;
	} else if (ret) {
		vcram_count(vc, VCRAM_STAT_RELIEF_FAILED, 1);
		dev_warn_ratelimited(&vc->vdev->dev,
				     "evacuating %lu pages at %#llx failed: %d\n",
				     npages, addr, ret);
	}
	return ret ? ret : (long)moved;
}

static void vcram_relief_work(struct work_struct *work)
{
	struct vcram *vc = container_of(to_delayed_work(work), struct vcram,
					relief_work);
	unsigned long round_end = jiffies + VCRAM_RELIEF_ROUND;
	unsigned long budget, moved = 0;
	struct vcram_nominate *nom;
	unsigned int rate;
	int i, n, ret;

	if (!vcram_relief_usable(vc)) {
		clear_bit(VCRAM_RELIEF_ACTIVE, &vc->relief_flags);
		clear_bit(VCRAM_RELIEF_RETRY, &vc->relief_flags);
		return;
	}
	if (!test_bit(VCRAM_RELIEF_ACTIVE, &vc->relief_flags) &&
	    !vcram_relief_retry(vc))
		return;
	if (vcram_below_low(vc)) {
		vcram_relief_end(vc, true);
		return;
	}

	rate = READ_ONCE(vcram_relief_rate);
	budget = max_t(unsigned long, 1, rate / VCRAM_RELIEF_ROUNDS_PER_SEC);
	nom = kzalloc(struct_size(nom, ent, VCRAM_MAX_NOMINATIONS),
		      GFP_KERNEL | __GFP_NOWARN);
	if (!nom) {
		vcram_count(vc, VCRAM_STAT_RELIEF_FAILED, 1);
		goto next;
	}
	kref_init(&nom->ref);
	init_completion(&nom->done);
	nom->max = min_t(unsigned long, budget, VCRAM_MAX_NOMINATIONS);
	/* Name no more than this round moves (1.4; cleared for older devices) */
	nom->max_pages = min_t(unsigned long, budget, U32_MAX);
	ret = vcram_req_nominate(vc, nom, VCRAM_RELIEF_TIMEOUT);
	if (ret || !nom->len) {
		vcram_count(vc, VCRAM_STAT_RELIEF_FAILED, 1);
		goto put;
	}
	vcram_count(vc, VCRAM_STAT_RELIEF_NOMINATES, 1);
	n = vcram_relief_entries(vc, nom);
	for (i = 0; i < n && budget; i++) {
		u64 addr = le64_to_cpu(nom->ent[i].addr);
		u32 npages = le32_to_cpu(nom->ent[i].npages);
		long got;

		if (!npages || npages > VCRAM_MAX_NOMINATION_PAGES ||
		    !PAGE_ALIGNED(addr) || addr < vc->base ||
		    addr >= vcram_window_end(vc) ||
		    npages > (vcram_window_end(vc) - addr) >> PAGE_SHIFT) {
			vcram_count(vc, VCRAM_STAT_RELIEF_BAD, 1);
			dev_warn_ratelimited(&vc->vdev->dev,
					     "nomination of %u pages at %#llx is outside the window: ignored\n",
					     npages, addr);
			continue;
		}
		vcram_count(vc, VCRAM_STAT_RELIEF_NOMINATED, npages);
		npages = min_t(unsigned long, npages, budget);
		budget -= npages;
		got = vcram_relief_evacuate(vc, addr, npages);
		if (got < 0)
			break;	/* no room, or the memory is going */
		moved += got;
	}
put:
	vcram_nominate_put(nom);
next:
	/* Have the freed sources discarded now: that releases the space. */
	if (moved)
		vcram_req_kick_flush(vc, true);
	WRITE_ONCE(vc->relief_moved, vc->relief_moved + moved);
	vc->relief_idle = moved ? 0 : vc->relief_idle + 1;
	if (vc->relief_idle >= VCRAM_RELIEF_MAX_IDLE) {
		vcram_relief_end(vc, false);
		return;
	}
	queue_delayed_work(system_dfl_wq, &vc->relief_work,
			   time_before(jiffies, round_end) ?
			   round_end - jiffies : 0);
}
