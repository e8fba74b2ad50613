// SPDX-License-Identifier: GPL-2.0
/*
 * vcram: the window as a private memory node.
 *
 * Free callback: a folio freed on the node is kept (refcount zero, linked
 * through folio->lru, its order in folio->private) until the device has
 * discarded it; see vcram_req.c.  Migrate notification: folios migrated
 * onto the node are reported with COMMIT.
 *
 * Pressure: while the device reports a level at or above pause_level, the
 * node is paused (node_private_set_paused()): allocations and migrations
 * onto it fail at once, and a task bound only to the node gets SIGBUS on
 * a fault that needs a new page.  What is stored stays; frees go on as
 * usual.  Placement resumes when the device reports NORMAL again.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/memory_hotplug.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pageblock-flags.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/wait.h>

#include "vcram.h"

static struct vcram *np_to_vcram(struct node_private *np)
{
	return container_of(np, struct vcram, np);
}

static bool vcram_free_folio(struct node_private *np, struct folio *folio,
			     unsigned int order)
{
	struct vcram *vc = np_to_vcram(np);
	unsigned long nr = 1UL << order;
	unsigned int batch;

	if (unlikely(folio_nid(folio) != vc->nid || order > MAX_PAGE_ORDER)) {
		vcram_count(vc, VCRAM_STAT_FOREIGN, 1);
		return false;
	}
	/* We own the folio now: folio->lru links it, ->private has order. */
	folio->private = (void *)(unsigned long)order;
	vcram_count(vc, VCRAM_STAT_PAGES_DEFERRED, nr);
	atomic_long_add(nr, &vc->pages_pending);
	llist_add((struct llist_node *)&folio->lru, &vc->freed);
	/* Flush at once every batch_ranges folios, else after the interval. */
	batch = max(READ_ONCE(vcram_batch_ranges), 1U);
	vcram_req_kick_flush(vc, !(atomic_inc_return(&vc->freed_nr) % batch));
	return true;
}

static void vcram_migrate_folio(struct node_private *np, struct folio *src,
				struct folio *dst)
{
	struct vcram *vc = np_to_vcram(np);

	if (folio_nid(dst) == vc->nid) {
		vcram_count(vc, VCRAM_STAT_MIGRATE_IN, 1);
		if (READ_ONCE(vcram_commit))
			vcram_req_note_commit(vc, folio_pfn(dst),
					      folio_nr_pages(dst));
	}
	if (folio_nid(src) == vc->nid)
		vcram_count(vc, VCRAM_STAT_MIGRATE_OUT, 1);
}

const struct node_private_ops vcram_np_ops = {
	.free_folio = vcram_free_folio,
	.migrate_folio = vcram_migrate_folio,
};

void vcram_mem_init(struct vcram *vc)
{
	BUILD_BUG_ON(offsetof(struct llist_node, next) != 0);
	init_llist_head(&vc->freed);
}

/*
 * Hand a kept folio to the page allocator.  Any context; callers give it
 * folios whose device contents are known to be zero.
 */
void vcram_release_folio(struct vcram *vc, struct folio *folio,
			 unsigned int order)
{
	unsigned long nr = 1UL << order;

	folio->private = NULL;
	node_private_release_folio(folio, order);
	atomic_long_sub(nr, &vc->pages_pending);
	vcram_count(vc, VCRAM_STAT_PAGES_RELEASED, nr);
}

/* The device could not discard the folio: zero it here, then release. */
void vcram_zero_release_folio(struct vcram *vc, struct folio *folio,
			      unsigned int order)
{
	unsigned long i, nr = 1UL << order;

	for (i = 0; i < nr; i++)
		clear_highpage(folio_page(folio, i));
	vcram_count(vc, VCRAM_STAT_PAGES_ZEROED_CPU, nr);
	vcram_release_folio(vc, folio, order);
}

static void vcram_pause(struct vcram *vc, const char *why)
{
	lockdep_assert_held(&vc->lock);
	node_private_set_paused(&vc->np, true);
	vcram_count(vc, VCRAM_STAT_PAUSES, 1);
	dev_warn_ratelimited(&vc->vdev->dev,
			     "%s: placement on node %d paused\n", why, vc->nid);
}

static void vcram_resume(struct vcram *vc)
{
	lockdep_assert_held(&vc->lock);
	node_private_set_paused(&vc->np, false);
	dev_info_ratelimited(&vc->vdev->dev,
			     "pressure level %d: placement on node %d resumed\n",
			     READ_ONCE(vc->level), vc->nid);
}

/*
 * On a system queue, not on vc->wq (a WQ_MEM_RECLAIM queue, whose rescuer
 * runs its items one by one): the pressure work sleeps on vc->lock, and
 * the flush work must never wait behind it.
 */
void vcram_queue_pressure(struct vcram *vc)
{
	queue_work(system_dfl_wq, &vc->pressure_work);
}

/*
 * Whether the node should be paused now.  With no device behind it, always:
 * nothing may land where nothing stores it.  Else pause at pause_level
 * (1..3, 3: never) and, once paused, resume only back at NORMAL.
 */
static bool vcram_want_paused(struct vcram *vc, bool paused)
{
	unsigned int pause_level = READ_ONCE(vcram_pause_level);
	int level = READ_ONCE(vc->level);

	if (vc->orphaned)
		return true;
	if (pause_level < VCRAM_LEVEL_LOW || pause_level > VCRAM_LEVEL_HIGH)
		return false;
	return paused ? level > VCRAM_LEVEL_NORMAL : level >= (int)pause_level;
}

void vcram_pressure_work(struct work_struct *work)
{
	struct vcram *vc = container_of(work, struct vcram, pressure_work);
	bool paused, want;
	char why[24];

	mutex_lock(&vc->lock);
	if (!vc->added || vc->removing)
		goto out;
	paused = node_private_paused(vc->nid);
	want = vcram_want_paused(vc, paused);
	if (want && !paused) {
		snprintf(why, sizeof(why), "pressure level %d",
			 READ_ONCE(vc->level));
		vcram_pause(vc, why);
	} else if (!want && paused) {
		vcram_resume(vc);
	}
	/* HIGH: also move the costliest pages off, down below LOW. */
	if (!vc->orphaned && READ_ONCE(vc->level) >= VCRAM_LEVEL_HIGH)
		vcram_relief_start(vc, "pressure level 2");
out:
	mutex_unlock(&vc->lock);
}

/* The reap work takes a reference.  Called with vc->lock held. */
static void vcram_orphan_memory(struct vcram *vc)
{
	lockdep_assert_held(&vc->lock);
	if (!node_private_paused(vc->nid))
		vcram_pause(vc, "device gone");
	if (!vc->reaping) {
		vc->reaping = true;
		kref_get(&vc->ref);
	}
	/* At once: no page may be in use at all. */
	mod_delayed_work(vcram_orphan_wq, &vc->reap_work, 0);
}

/*
 * The device is gone (its queues are shut down).  If its memory is added,
 * pause the node for good (nothing stores what would land there), zero
 * freed pages on the CPU from now on, and remove the memory once its last
 * page is free (vcram_reap_work()).  Runs under the device hotplug lock on
 * an ACPI hot-unplug: takes vc->lock only.  Returns whether memory was
 * added.
 */
bool vcram_mem_orphan(struct vcram *vc)
{
	bool added;

	cancel_work_sync(&vc->pressure_work);
	vcram_relief_stop(vc);
	mutex_lock(&vc->lock);
	WRITE_ONCE(vc->orphaned, true);
	added = vc->added;
	if (added)
		vcram_orphan_memory(vc);
	mutex_unlock(&vc->lock);
	return added;
}

static void vcram_put_mtype(struct vcram *vc)
{
	if (!vc->mtype)
		return;
	clear_node_memory_type(vc->nid, vc->mtype);
	put_memory_type(vc->mtype);
	vc->mtype = NULL;
}

/*
 * Add the window as private memory.  Called with vc->mem_lock held, not
 * vc->lock: adding takes the device hotplug lock.  The device can be
 * removed meanwhile (a request from sysfs "online"): then the memory is
 * orphaned at once and -ENODEV returned.
 */
static int vcram_mem_add(struct vcram *vc)
{
	struct device *dev = &vc->vdev->dev;
	int ret;

	lockdep_assert_held(&vc->mem_lock);
	mutex_lock(&vc->lock);
	ret = vc->added ? -EEXIST : vc->orphaned ? -ENODEV : 0;
	mutex_unlock(&vc->lock);
	if (ret)
		return ret;
	vc->np.owner = THIS_MODULE;
	vc->np.name = KBUILD_MODNAME;
	vc->np.caps = READ_ONCE(vcram_caps);
	if ((vc->np.caps & ~NODE_PRIVATE_CAPS_ALL) ||
	    ((vc->np.caps & NODE_PRIVATE_CAP_DEMOTION) &&
	     !(vc->np.caps & NODE_PRIVATE_CAP_RECLAIM))) {
		dev_err(dev, "caps %#lx: only bits %#lx exist, and demotion (8) needs reclaim (1)\n",
			vc->np.caps, (unsigned long)NODE_PRIVATE_CAPS_ALL);
		return -EINVAL;
	}
	vc->np.ops = &vcram_np_ops;
	/* The node's tier must be known before its memory comes online. */
	if (READ_ONCE(vcram_adistance) > 0) {
		vc->mtype = alloc_memory_type(READ_ONCE(vcram_adistance));
		if (IS_ERR(vc->mtype)) {
			ret = PTR_ERR(vc->mtype);
			vc->mtype = NULL;
			return ret;
		}
		init_node_memory_type(vc->nid, vc->mtype);
	}
	ret = add_private_memory_driver_managed(vc->nid, vc->base, vc->size,
						"System RAM (vcram)", MHP_NONE,
						MMOP_ONLINE_MOVABLE, &vc->np);
	if (ret) {
		dev_err(dev, "adding [%#llx-%#llx] to node %d as private memory (caps %#lx) failed: %d\n",
			vc->base, vcram_window_end(vc) - 1, vc->nid,
			vc->np.caps, ret);
		vcram_put_mtype(vc);
		return ret;
	}
	/* The registration pins this module until the memory is removed. */
	mutex_lock(&vc->lock);
	vc->added = true;
	if (vc->orphaned) {
		/* Removed while adding: the reap work takes the memory back. */
		vcram_orphan_memory(vc);
		ret = -ENODEV;
	}
	mutex_unlock(&vc->lock);
	if (ret) {
		dev_warn(dev, "node %d: device removed while its memory was added\n",
			 vc->nid);
		return ret;
	}
	dev_info(dev, "node %d: %llu MiB of private memory at %#llx, caps %#lx, adistance %d\n",
		 vc->nid, vc->size >> 20, vc->base, vc->np.caps,
		 vc->mtype ? vc->mtype->adistance : 0);
	return 0;
}

/*
 * Offline and remove the window.  Called with vc->mem_lock held, not
 * vc->lock (offlining takes the device hotplug lock).  Fails with -EBUSY
 * while pages of the node are in use, leaving everything as it was.
 * Nothing new is placed on the node meanwhile, the pressure work leaves
 * the pause alone and relief does not evacuate.
 */
static int vcram_mem_offline(struct vcram *vc)
{
	bool was_paused, orphaned;
	int ret;

	lockdep_assert_held(&vc->mem_lock);
	mutex_lock(&vc->lock);
	vc->removing = true;
	was_paused = node_private_set_paused(&vc->np, true);
	mutex_unlock(&vc->lock);

	ret = offline_and_remove_private_memory(&vc->np, vc->base, vc->size);

	mutex_lock(&vc->lock);
	vc->removing = false;
	vc->last_remove_err = ret;
	orphaned = vc->orphaned;
	if (ret && !was_paused && !orphaned)
		node_private_set_paused(&vc->np, false);
	if (!ret)
		vc->added = false;
	mutex_unlock(&vc->lock);
	if (ret) {
		/* A level reported meanwhile was left alone: apply it now. */
		if (!orphaned)
			vcram_queue_pressure(vc);
		return ret;
	}
	vcram_put_mtype(vc);
	/* Orphaned meanwhile: the reap work drops its reference. */
	if (orphaned)
		mod_delayed_work(vcram_orphan_wq, &vc->reap_work, 0);
	return 0;
}

/*
 * Remove the window (sysfs "online").  Called with vc->mem_lock held, from
 * the orphan queue.  The kept folios must come back first, as offlining
 * waits for them: with the device running, have them discarded, and give
 * up with -ETIMEDOUT rather than wait for a device that does not answer;
 * with the device stopped they are zeroed on the CPU at once.
 */
static int vcram_mem_remove(struct vcram *vc)
{
	struct device *dev = &vc->vdev->dev;
	int ret;

	lockdep_assert_held(&vc->mem_lock);
	if (!READ_ONCE(vc->added))
		return 0;
	ret = vcram_req_drain(vc, 10 * HZ);
	if (!ret)
		ret = vcram_mem_offline(vc);
	if (ret) {
		dev_warn(dev, "node %d: memory not removed (%d)%s\n", vc->nid,
			 ret, ret == -EBUSY ? ", pages in use" :
			 ret == -ETIMEDOUT ? ", the device does not answer" : "");
		return ret;
	}
	dev_info(dev, "node %d: private memory removed\n", vc->nid);
	return 0;
}

/*
 * A write to sysfs "online".  Adding and offlining take the device hotplug
 * lock, under which an ACPI hot-unplug (QMP device_del) unbinds the driver,
 * and unbinding waits for the writers of the driver's attributes: a writer
 * blocked on that lock would hold the unplug up for good.  So the request
 * runs on the orphan queue, and the writer waits for it only until the
 * unbinding begins (vcram_mem_unbinding(), from the bus notifier), then
 * returns -ENODEV and lets the request finish on its own.  The request
 * holds references on the driver state and on this module.
 */
struct vcram_online_req {
	struct work_struct work;
	struct kref ref;		/* the writer and the work */
	struct vcram *vc;
	bool on;
	bool done;
	int ret;
};

static void vcram_online_req_release(struct kref *ref)
{
	struct vcram_online_req *req =
		container_of(ref, struct vcram_online_req, ref);

	vcram_put(req->vc);
	kfree(req);
	/* Module exit destroys the orphan queue first, which waits for us. */
	module_put(THIS_MODULE);
}

static void vcram_online_put(struct vcram_online_req *req)
{
	kref_put(&req->ref, vcram_online_req_release);
}

static void vcram_online_work(struct work_struct *work)
{
	struct vcram_online_req *req =
		container_of(work, struct vcram_online_req, work);
	struct vcram *vc = req->vc;
	int ret;

	mutex_lock(&vc->mem_lock);
	if (req->on) {
		ret = vcram_mem_add(vc);
		if (ret == -EEXIST)
			ret = 0;
		else if (!ret)
			vcram_queue_pressure(vc);
	} else {
		ret = vcram_mem_remove(vc);
	}
	mutex_unlock(&vc->mem_lock);
	req->ret = ret;
	/* Pairs with the acquire in vcram_online_done(). */
	smp_store_release(&req->done, true);
	wake_up_all(&vc->online_wq);
	vcram_online_put(req);
}

static bool vcram_online_done(struct vcram_online_req *req)
{
	/* Pairs with the release in vcram_online_work(): req->ret is set. */
	return smp_load_acquire(&req->done);
}

/* Queue a request to add (@on) or remove the memory; NULL if none could. */
static struct vcram_online_req *vcram_online_submit(struct vcram *vc, bool on)
{
	struct vcram_online_req *req;

	req = kzalloc_obj(*req, GFP_KERNEL);
	if (!req)
		return NULL;
	if (!try_module_get(THIS_MODULE)) {
		kfree(req);
		return NULL;
	}
	kref_init(&req->ref);
	kref_get(&req->ref);
	kref_get(&vc->ref);
	req->vc = vc;
	req->on = on;
	INIT_WORK(&req->work, vcram_online_work);
	queue_work(vcram_orphan_wq, &req->work);
	return req;
}

int vcram_mem_set_online(struct vcram *vc, bool on)
{
	struct vcram_online_req *req;
	int ret;

	if (READ_ONCE(vc->unbinding))
		return -ENODEV;
	req = vcram_online_submit(vc, on);
	if (!req)
		return -ENOMEM;
	/* A fatal signal stops the wait, not the request. */
	ret = wait_event_killable(vc->online_wq, vcram_online_done(req) ||
				  READ_ONCE(vc->unbinding));
	if (vcram_online_done(req))
		ret = req->ret;
	else if (!ret)
		ret = -ENODEV;
	vcram_online_put(req);
	return ret;
}

/*
 * Probe: add the memory from the orphan queue and wait for it, but not for
 * good.  On an ACPI hot-add (QMP device_add) the probe runs under the
 * device hotplug lock, which adding memory takes: the request can only go
 * on once the probe has returned.  So after @timeout the probe goes on
 * without it and the memory comes online in the background.  Returns the
 * request's result, or 0 when it is still pending.
 */
int vcram_mem_add_at_probe(struct vcram *vc, unsigned long timeout)
{
	struct vcram_online_req *req;
	int ret = 0;

	req = vcram_online_submit(vc, true);
	if (!req)
		return -ENOMEM;
	if (wait_event_timeout(vc->online_wq, vcram_online_done(req),
			       timeout)) {
		/* Its last reference on @vc is gone once the work returns. */
		flush_work(&req->work);
		ret = req->ret;
	} else {
		dev_info(&vc->vdev->dev,
			 "node %d: adding the memory takes more than %u ms (a hot-add holds the device hotplug lock while probing?): it comes online in the background\n",
			 vc->nid, jiffies_to_msecs(timeout));
	}
	vcram_online_put(req);
	return ret;
}

/*
 * The driver is about to be unbound (BUS_NOTIFY_UNBIND_DRIVER, before the
 * driver's attributes are removed): wake the "online" writers and refuse
 * new ones.
 */
void vcram_mem_unbinding(struct vcram *vc)
{
	WRITE_ONCE(vc->unbinding, true);
	wake_up_all(&vc->online_wq);
}

/*
 * The device went away with pages in use: retried after frees on the node
 * until the memory can be removed; then the reference the reap work holds
 * goes, and with it, as a rule, the last of the driver state.
 */
void vcram_reap_work(struct work_struct *work)
{
	struct vcram *vc = container_of(to_delayed_work(work), struct vcram,
					reap_work);
	struct virtio_device *vdev = vc->vdev;
	bool removed = false, drop;
	int ret = 0;

	mutex_lock(&vc->mem_lock);
	if (READ_ONCE(vc->added)) {
		ret = vcram_mem_offline(vc);
		removed = !ret;
	}
	mutex_unlock(&vc->mem_lock);
	if (ret)
		return;		/* still in use: the next free retries */
	mutex_lock(&vc->lock);
	drop = vc->reaping;
	vc->reaping = false;
	mutex_unlock(&vc->lock);
	/* The driver is unbound: dev_info() would not name it. */
	if (removed)
		pr_info("%s: node %d: private memory removed, its last page is free\n",
			dev_name(&vdev->dev), vc->nid);
	if (drop)
		vcram_put(vc);
}
