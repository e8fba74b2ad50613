// SPDX-License-Identifier: GPL-2.0
/*
 * vcram: requestq.  DISCARD requests for folios freed on the node, COMMIT
 * requests for folios migrated onto it.
 *
 * The flush worker runs at most flush_interval_ms after the first free of
 * a batch (at once when batch_ranges folios are waiting), merges adjacent
 * folios into ranges and queues requests of up to batch_ranges ranges.
 * A DISCARD request owns its folios until it completes; then they go back
 * to the page allocator.  If a request cannot be queued or the device
 * fails it, its folios are zeroed on the CPU and released.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/pfn.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/virtio.h>

#include "vcram.h"

struct vcram_req {
	struct list_head folios;	/* DISCARD: the folios, via lru */
	unsigned long npages;
	unsigned int max_ranges;
	unsigned int nr_ranges;
	u64 next_addr;			/* end of the last range */
	u32 type;
	unsigned int extra;		/* readable bytes after hdr, not ranges */
	struct vcram_nominate *nom;	/* NOMINATE: where the answer goes */
	struct vcram_resp resp;		/* device-writable */
	struct vcram_req_header hdr;	/* device-readable, with ranges[] */
	struct vcram_range ranges[];
};

static void vcram_done_work(struct work_struct *work);

void vcram_req_init(struct vcram *vc)
{
	BUILD_BUG_ON(offsetof(struct vcram_req, ranges) !=
		     offsetof(struct vcram_req, hdr) +
		     sizeof(struct vcram_req_header));
	spin_lock_init(&vc->rq_lock);
	spin_lock_init(&vc->commit_lock);
	atomic_set(&vc->inflight, 0);
	init_waitqueue_head(&vc->inflight_wq);
	INIT_WORK(&vc->done_work, vcram_done_work);
	INIT_DELAYED_WORK(&vc->flush_work, vcram_flush_work);
}

static unsigned int vcram_req_max_ranges(struct vcram *vc)
{
	unsigned int n = READ_ONCE(vcram_batch_ranges);

	return clamp_t(unsigned int, n, 1, vc->max_ranges);
}

/*
 * The flush worker runs on a WQ_MEM_RECLAIM queue, possibly on its rescuer
 * while the system is short of memory: it must not enter reclaim itself
 * (GFP_NOWAIT).  When the allocation fails, freed folios are zeroed on the
 * CPU instead, which needs no memory.
 */
static struct vcram_req *vcram_req_alloc(u32 type, unsigned int max_ranges,
					 gfp_t gfp)
{
	struct vcram_req *req;

	req = kmalloc(struct_size(req, ranges, max_ranges), gfp | __GFP_NOWARN);
	if (!req)
		return NULL;
	INIT_LIST_HEAD(&req->folios);
	req->npages = 0;
	req->max_ranges = max_ranges;
	req->nr_ranges = 0;
	req->next_addr = 0;
	req->type = type;
	req->extra = 0;
	req->nom = NULL;
	return req;
}

/* Add a page range, merging it with the previous one if adjacent. */
static bool vcram_req_add(struct vcram_req *req, u64 addr, unsigned int npages)
{
	struct vcram_range *r;

	if (req->nr_ranges && addr == req->next_addr) {
		r = &req->ranges[req->nr_ranges - 1];
		if (le32_to_cpu(r->npages) <= U32_MAX - npages) {
			le32_add_cpu(&r->npages, npages);
			goto added;
		}
	}
	if (req->nr_ranges == req->max_ranges)
		return false;
	r = &req->ranges[req->nr_ranges++];
	r->addr = cpu_to_le64(addr);
	r->npages = cpu_to_le32(npages);
	r->reserved = 0;
added:
	req->next_addr = addr + ((u64)npages << PAGE_SHIFT);
	req->npages += npages;
	return true;
}

static bool vcram_in_window(struct vcram *vc, u64 addr, unsigned long npages)
{
	return addr >= vc->base && addr < vcram_window_end(vc) &&
	       npages <= (vcram_window_end(vc) - addr) >> PAGE_SHIFT;
}

static void vcram_req_free(struct vcram *vc, struct vcram_req *req)
{
	kfree(req);
}

/* Zero and release the folios of a DISCARD that did not happen. */
static void vcram_req_fallback(struct vcram *vc, struct vcram_req *req)
{
	struct folio *folio, *next;

	list_for_each_entry_safe(folio, next, &req->folios, lru) {
		list_del(&folio->lru);
		vcram_zero_release_folio(vc, folio,
					 (unsigned int)(unsigned long)folio->private);
		cond_resched();
	}
}

static void vcram_req_submit(struct vcram *vc, struct vcram_req *req)
{
	struct scatterlist out, in, *sgs[2] = { &out, &in };
	/* Once queued, req may complete and be freed at any time. */
	unsigned long npages = req->npages;
	u32 type = req->type;
	unsigned long flags;
	int ret;

	req->hdr.type = cpu_to_le32(req->type);
	req->hdr.nr_ranges = cpu_to_le32(req->nr_ranges);
	/* A sequence number: kernel pointers are not the device's business. */
	req->hdr.tag = cpu_to_le64(atomic64_inc_return(&vc->req_seq));
	memset(&req->resp, 0, sizeof(req->resp));
	sg_init_one(&out, &req->hdr, sizeof(req->hdr) + req->extra +
		    req->nr_ranges * sizeof(struct vcram_range));
	if (req->nom)
		sg_init_one(&in, &req->nom->resp, sizeof(req->nom->resp) +
			    req->nom->max * sizeof(struct vcram_nomination));
	else
		sg_init_one(&in, &req->resp, sizeof(req->resp));

	/*
	 * The kick stays under rq_lock: once vcram_req_stop() has set
	 * rq_dead under it, nobody touches the queue, which the device's
	 * reset and del_vqs then take away.
	 */
	spin_lock_irqsave(&vc->rq_lock, flags);
	if (vc->rq_dead) {
		ret = -ENODEV;
	} else {
		ret = virtqueue_add_sgs(vc->rq, sgs, 1, 1, req, GFP_ATOMIC);
		if (!ret) {
			atomic_inc(&vc->inflight);
			if (virtqueue_kick_prepare(vc->rq))
				virtqueue_notify(vc->rq);
		}
	}
	spin_unlock_irqrestore(&vc->rq_lock, flags);

	if (!ret) {
		if (type == VCRAM_REQ_DISCARD) {
			vcram_count(vc, VCRAM_STAT_DISCARDS_SENT, 1);
			vcram_count(vc, VCRAM_STAT_DISCARD_PAGES, npages);
		} else if (type == VCRAM_REQ_COMMIT) {
			vcram_count(vc, VCRAM_STAT_COMMITS_SENT, 1);
			vcram_count(vc, VCRAM_STAT_COMMIT_PAGES, npages);
		}
		return;
	}
	if (ret == -ENOSPC)
		vcram_count(vc, VCRAM_STAT_QUEUE_FULL, 1);
	if (req->nom) {
		/* Not queued: the caller sees len 0 at once. */
		complete(&req->nom->done);
		vcram_nominate_put(req->nom);
	}
	if (type == VCRAM_REQ_DISCARD)
		vcram_req_fallback(vc, req);
	else if (type == VCRAM_REQ_COMMIT)
		vcram_count(vc, VCRAM_STAT_COMMITS_DROPPED, req->nr_ranges);
	vcram_req_free(vc, req);
}

static const char *vcram_status_name(u32 status)
{
	static const char * const names[] = {
		[VCRAM_S_OK] = "OK",
		[VCRAM_S_BAD_REQUEST] = "BAD_REQUEST",
		[VCRAM_S_UNSUPPORTED] = "UNSUPPORTED",
		[VCRAM_S_OUT_OF_RANGE] = "OUT_OF_RANGE",
		[VCRAM_S_OVERLAP] = "OVERLAP",
		[VCRAM_S_NO_WINDOW] = "NO_WINDOW",
		[VCRAM_S_DEVICE_ERROR] = "DEVICE_ERROR",
	};

	return status <= VCRAM_S_MAX ? names[status] : "unknown";
}

/* A request came back (len: used length) or was taken back at reset. */
static void vcram_req_complete(struct vcram *vc, struct vcram_req *req,
			       unsigned int len, bool answered)
{
	struct vcram_resp resp;
	struct folio *folio, *next;
	u32 status = VCRAM_S_MAX + 1;

	if (req->type == VCRAM_REQ_NOMINATE) {
		/* The relief worker checks the answer; it may be gone. */
		if (req->nom) {
			req->nom->len = answered ? len : 0;
			complete(&req->nom->done);
			vcram_nominate_put(req->nom);
		}
		goto out;
	}
	if (answered && len == sizeof(resp)) {
		memcpy(&resp, &req->resp, sizeof(resp));
		status = le32_to_cpu(resp.status);
	}
	/* Fault injection: pretend the device failed the request. */
	if (answered && READ_ONCE(vc->fail_requests)) {
		WRITE_ONCE(vc->fail_requests, vc->fail_requests - 1);
		status = VCRAM_S_DEVICE_ERROR;
	}
	if (status != VCRAM_S_OK)
		dev_warn_ratelimited(&vc->vdev->dev,
				     "%s of %lu pages: %s (status %u, len %u)\n",
				     req->type == VCRAM_REQ_DISCARD ? "DISCARD" :
				     req->type == VCRAM_REQ_RESET ? "RESET" : "COMMIT",
				     req->npages,
				     answered ? vcram_status_name(status) : "not answered",
				     status, len);

	if (req->type == VCRAM_REQ_RESET) {
		WRITE_ONCE(vc->reset_status, status);
	} else if (req->type == VCRAM_REQ_DISCARD) {
		if (status != VCRAM_S_OK) {
			vcram_count(vc, VCRAM_STAT_DISCARDS_FAILED, 1);
			vcram_req_fallback(vc, req);
		} else {
			list_for_each_entry_safe(folio, next, &req->folios, lru) {
				list_del(&folio->lru);
				vcram_release_folio(vc, folio,
						    (unsigned int)(unsigned long)folio->private);
				cond_resched();
			}
		}
	} else if (status != VCRAM_S_OK) {
		vcram_count(vc, VCRAM_STAT_COMMITS_FAILED, 1);
	} else {
		vcram_count(vc, VCRAM_STAT_COMMIT_OVERFLOWED,
			    min_t(u64, le64_to_cpu(resp.pages_overflowed),
				  req->npages));
	}
out:
	vcram_req_free(vc, req);
	if (atomic_dec_and_test(&vc->inflight))
		wake_up_all(&vc->inflight_wq);
}

static void vcram_done_work(struct work_struct *work)
{
	struct vcram *vc = container_of(work, struct vcram, done_work);
	struct vcram_req *req;
	unsigned long flags;
	unsigned int len;

	for (;;) {
		spin_lock_irqsave(&vc->rq_lock, flags);
		req = vc->rq_dead ? NULL : virtqueue_get_buf(vc->rq, &len);
		spin_unlock_irqrestore(&vc->rq_lock, flags);
		if (!req)
			break;
		vcram_req_complete(vc, req, len, true);
	}
}

void vcram_rq_done(struct virtqueue *vq)
{
	struct vcram *vc = vq->vdev->priv;

	queue_work(vc->wq, &vc->done_work);
}

void vcram_req_kick_flush(struct vcram *vc, bool now)
{
	if (now)
		mod_delayed_work(vc->wq, &vc->flush_work, 0);
	else
		queue_delayed_work(vc->wq, &vc->flush_work,
				   msecs_to_jiffies(READ_ONCE(vcram_flush_interval_ms)));
}

/* Called from the migrate notification: must not sleep. */
void vcram_req_note_commit(struct vcram *vc, unsigned long pfn,
			   unsigned int npages)
{
	struct vcram_commit *c;
	unsigned long flags;
	bool dropped = false;

	spin_lock_irqsave(&vc->commit_lock, flags);
	c = vc->nr_commits ? &vc->commits[vc->nr_commits - 1] : NULL;
	if (c && c->pfn + c->npages == pfn && c->npages <= U32_MAX - npages)
		c->npages += npages;
	else if (vc->nr_commits < VCRAM_COMMIT_SLOTS)
		vc->commits[vc->nr_commits++] = (struct vcram_commit) {
			.pfn = pfn, .npages = npages,
		};
	else
		dropped = true;
	spin_unlock_irqrestore(&vc->commit_lock, flags);
	if (dropped)
		vcram_count(vc, VCRAM_STAT_COMMITS_DROPPED, 1);
	vcram_req_kick_flush(vc, false);
}

static int vcram_commit_cmp(const void *a, const void *b)
{
	const struct vcram_commit *x = a, *y = b;

	if (x->pfn != y->pfn)
		return x->pfn < y->pfn ? -1 : 1;
	return 0;
}

/* COMMIT what migrations brought onto the node since the last flush. */
static void vcram_flush_commits(struct vcram *vc)
{
	struct vcram_commit *batch;
	struct vcram_req *req;
	unsigned int i, n;
	u64 end = 0;

	if (!READ_ONCE(vc->nr_commits))
		return;
	batch = kmalloc_array(VCRAM_COMMIT_SLOTS, sizeof(*batch),
			      GFP_NOWAIT | __GFP_NOWARN);
	if (!batch)
		return;	/* try again at the next flush */
	spin_lock_irq(&vc->commit_lock);
	n = vc->nr_commits;
	memcpy(batch, vc->commits, n * sizeof(*batch));
	vc->nr_commits = 0;
	spin_unlock_irq(&vc->commit_lock);

	/* Ranges of one request must not overlap: sort and merge. */
	sort(batch, n, sizeof(*batch), vcram_commit_cmp, NULL);
	req = NULL;
	for (i = 0; i < n; i++) {
		u64 addr = PFN_PHYS(batch[i].pfn);
		u64 len = (u64)batch[i].npages << PAGE_SHIFT;

		if (!vcram_in_window(vc, addr, batch[i].npages))
			continue;
		if (req && addr < end) {
			/* Overlaps the previous range: keep only the rest. */
			if (addr + len <= end)
				continue;
			len -= end - addr;
			addr = end;
		}
		if (req && !vcram_req_add(req, addr, len >> PAGE_SHIFT)) {
			vcram_req_submit(vc, req);
			req = NULL;
		}
		if (!req) {
			req = vcram_req_alloc(VCRAM_REQ_COMMIT,
					      vcram_req_max_ranges(vc),
					      GFP_NOWAIT);
			if (!req) {
				vcram_count(vc, VCRAM_STAT_COMMITS_DROPPED,
					    n - i);
				break;
			}
			vcram_req_add(req, addr, len >> PAGE_SHIFT);
		}
		end = addr + len;
	}
	if (req)
		vcram_req_submit(vc, req);
	kfree(batch);
}

void vcram_flush_work(struct work_struct *work)
{
	struct vcram *vc = container_of(to_delayed_work(work), struct vcram,
					flush_work);
	struct llist_node *pos, *next;
	struct vcram_req *req = NULL;
	struct folio *folio;
	unsigned int order;
	u64 addr;

	atomic_set(&vc->freed_nr, 0);
	pos = llist_reverse_order(llist_del_all(&vc->freed));
	for (; pos; pos = next) {
		next = pos->next;
		folio = container_of((struct list_head *)pos, struct folio,
				     lru);
		order = (unsigned int)(unsigned long)folio->private;
		addr = PFN_PHYS(folio_pfn(folio));

		if (READ_ONCE(vc->rq_dead) || !READ_ONCE(vcram_discard) ||
		    !vcram_in_window(vc, addr, 1UL << order)) {
			vcram_zero_release_folio(vc, folio, order);
			continue;
		}
		if (req && !vcram_req_add(req, addr, 1U << order)) {
			vcram_req_submit(vc, req);
			req = NULL;
		}
		if (!req) {
			req = vcram_req_alloc(VCRAM_REQ_DISCARD,
					      vcram_req_max_ranges(vc),
					      GFP_NOWAIT);
			if (!req) {
				vcram_zero_release_folio(vc, folio, order);
				continue;
			}
			vcram_req_add(req, addr, 1U << order);
		}
		list_add_tail(&folio->lru, &req->folios);
		cond_resched();
	}
	if (req)
		vcram_req_submit(vc, req);

	vcram_flush_commits(vc);
	/* No device: once the node's last page is free, remove its memory. */
	if (READ_ONCE(vc->orphaned))
		queue_delayed_work(vcram_orphan_wq, &vc->reap_work, HZ / 2);
}

/*
 * Probe, before the window is added: have the device discard the whole
 * window, so that what a previous kernel left there is neither counted nor
 * kept (protocol 1.2; older devices do not know RESET).
 */
int vcram_req_reset(struct vcram *vc)
{
	struct vcram_req *req;

	if (vc->version_minor < 2)
		return 0;
	req = vcram_req_alloc(VCRAM_REQ_RESET, 0, GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	WRITE_ONCE(vc->reset_status, VCRAM_S_MAX + 1);
	vcram_req_submit(vc, req);
	if (!wait_event_timeout(vc->inflight_wq, !atomic_read(&vc->inflight),
				10 * HZ))
		return -ETIMEDOUT;
	return READ_ONCE(vc->reset_status) == VCRAM_S_OK ? 0 : -EIO;
}

static void vcram_nominate_release(struct kref *ref)
{
	kfree(container_of(ref, struct vcram_nominate, ref));
}

void vcram_nominate_put(struct vcram_nominate *nom)
{
	kref_put(&nom->ref, vcram_nominate_release);
}

/*
 * Ask the device for up to nom->max nominations (protocol 1.3), naming at
 * most nom->max_pages pages if that is not 0 (the page limit of 1.4, sent
 * only to a device of 1.4 or later), and wait up to @timeout for the
 * answer.  Returns 0 with nom->len set (0: not answered), -ETIMEDOUT, or
 * -ENOMEM.  The caller keeps its reference on @nom either way; the request
 * holds its own until it completes.
 */
int vcram_req_nominate(struct vcram *vc, struct vcram_nominate *nom,
		       unsigned long timeout)
{
	struct vcram_nominate_args *args;
	struct vcram_req *req;

	/* The page limit goes where the first range would. */
	BUILD_BUG_ON(sizeof(*args) > sizeof(struct vcram_range));
	req = vcram_req_alloc(VCRAM_REQ_NOMINATE, 1, GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	if (nom->max_pages && vc->version_minor >= 4) {
		args = (struct vcram_nominate_args *)req->ranges;
		args->max_pages = cpu_to_le32(nom->max_pages);
		args->reserved = 0;
		req->extra = sizeof(*args);
	} else {
		nom->max_pages = 0;
	}
	nom->len = 0;
	kref_get(&nom->ref);
	req->nom = nom;
	vcram_req_submit(vc, req);
	if (!wait_for_completion_timeout(&nom->done, timeout))
		return -ETIMEDOUT;
	return 0;
}

/*
 * Discard everything kept now and wait up to @timeout for the answers.
 * Returns -ETIMEDOUT if requests are still unanswered then.
 */
int vcram_req_drain(struct vcram *vc, unsigned long timeout)
{
	mod_delayed_work(vc->wq, &vc->flush_work, 0);
	flush_delayed_work(&vc->flush_work);
	if (!wait_event_timeout(vc->inflight_wq, !atomic_read(&vc->inflight),
				timeout)) {
		dev_warn(&vc->vdev->dev,
			 "%d requests still unanswered after %u ms\n",
			 atomic_read(&vc->inflight), jiffies_to_msecs(timeout));
		return -ETIMEDOUT;
	}
	return 0;
}

/*
 * Before the device reset: no new request, no kick from here on.  Freed
 * folios are zeroed on the CPU until vcram_req_restart().
 */
void vcram_req_stop(struct vcram *vc)
{
	spin_lock_irq(&vc->rq_lock);
	vc->rq_dead = true;
	spin_unlock_irq(&vc->rq_lock);
	cancel_work_sync(&vc->done_work);
}

/*
 * After the device reset (or with the device broken): no request completes
 * any more.  Finish the answered ones, fall back to the CPU for the others:
 * a reset device no longer carries them out.
 */
void vcram_req_reclaim(struct vcram *vc)
{
	struct vcram_req *req;
	unsigned int len;

	if (!vc->rq)
		return;
	while ((req = virtqueue_get_buf(vc->rq, &len)))
		vcram_req_complete(vc, req, len, true);
	while ((req = virtqueue_detach_unused_buf(vc->rq)))
		vcram_req_complete(vc, req, 0, false);
}

/* The queues are set up again (restore, reset_done): requests flow. */
void vcram_req_restart(struct vcram *vc)
{
	spin_lock_irq(&vc->rq_lock);
	vc->rq_dead = false;
	spin_unlock_irq(&vc->rq_lock);
	vcram_req_kick_flush(vc, true);
}
