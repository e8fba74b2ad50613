// SPDX-License-Identifier: GPL-2.0
/*
 * vcram: eventq.  The driver keeps VCRAM_NR_EVBUFS buffers posted; each
 * event is copied out of its buffer, the buffer is posted again at once,
 * and only then is the copy checked.  A malformed event (wrong length,
 * unknown type, bad level, sequence number going backwards, range outside
 * the window) is counted and dropped.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vcram.h"

int vcram_event_init(struct vcram *vc)
{
	spin_lock_init(&vc->evq_lock);
	mutex_init(&vc->ev_lock);
	INIT_WORK(&vc->event_work, vcram_event_work);
	vc->evbufs = kcalloc(VCRAM_NR_EVBUFS, sizeof(*vc->evbufs),
			     GFP_KERNEL);
	return vc->evbufs ? 0 : -ENOMEM;
}

static int vcram_event_post(struct vcram *vc, struct vcram_event *buf,
			    gfp_t gfp)
{
	struct scatterlist sg;

	memset(buf, 0, sizeof(*buf));
	sg_init_one(&sg, buf, sizeof(*buf));
	return virtqueue_add_inbuf(vc->evq, &sg, 1, buf, gfp);
}

int vcram_event_post_all(struct vcram *vc)
{
	int i, ret = 0;

	spin_lock_irq(&vc->evq_lock);
	for (i = 0; i < VCRAM_NR_EVBUFS; i++) {
		ret = vcram_event_post(vc, &vc->evbufs[i], GFP_ATOMIC);
		if (ret)
			break;
	}
	if (i)
		virtqueue_kick(vc->evq);
	spin_unlock_irq(&vc->evq_lock);
	/* Fewer buffers than wanted (a small queue) still works. */
	return i ? 0 : ret;
}

void vcram_evq_done(struct virtqueue *vq)
{
	struct vcram *vc = vq->vdev->priv;

	queue_work(vc->wq, &vc->event_work);
}

static bool vcram_event_buf_ok(struct vcram *vc, struct vcram_event *buf)
{
	return buf >= vc->evbufs && buf < vc->evbufs + VCRAM_NR_EVBUFS;
}

static void vcram_event_bad(struct vcram *vc, const char *why, u64 val)
{
	vcram_count(vc, VCRAM_STAT_EVENTS_MALFORMED, 1);
	dev_warn_ratelimited(&vc->vdev->dev, "dropped malformed event: %s %llu\n",
			     why, val);
}

static const char * const vcram_level_names[] = {
	[VCRAM_LEVEL_NORMAL] = "normal",
	[VCRAM_LEVEL_LOW] = "low",
	[VCRAM_LEVEL_HIGH] = "high",
};

static void vcram_set_level(struct vcram *vc, u32 level)
{
	if (level > VCRAM_LEVEL_HIGH)
		return;
	if (READ_ONCE(vc->level) != level)
		dev_info_ratelimited(&vc->vdev->dev, "device pressure %s -> %s\n",
				     vcram_level_names[READ_ONCE(vc->level)],
				     vcram_level_names[level]);
	WRITE_ONCE(vc->level, level);
	vcram_queue_pressure(vc);
}

/* Events were lost: take the level from the config space instead. */
static void vcram_resync_level(struct vcram *vc)
{
	u32 level;

	virtio_cread_le(vc->vdev, struct vcram_config, pressure_level, &level);
	vcram_set_level(vc, level);
}

static void vcram_handle_event(struct vcram *vc, const struct vcram_event *ev,
			       unsigned int len)
{
	u32 type, level, npages, lost;
	u64 seq, addr, cfg_seq;
	bool resync = false, restart = false;

	if (len != sizeof(*ev)) {
		vcram_event_bad(vc, "length", len);
		return;
	}
	type = le32_to_cpu(ev->type);
	level = le32_to_cpu(ev->level);
	seq = le64_to_cpu(ev->seq);
	addr = le64_to_cpu(ev->addr);
	npages = le32_to_cpu(ev->npages);
	lost = le32_to_cpu(ev->lost);

	if (!seq) {
		vcram_event_bad(vc, "seq", seq);
		return;
	}
	if (seq <= vc->last_seq) {
		/* A new device instance numbers from 1 again. */
		virtio_cread_le(vc->vdev, struct vcram_config, event_seq,
				&cfg_seq);
		if (seq != 1 || cfg_seq >= vc->last_seq) {
			vcram_event_bad(vc, "seq going back, seq", seq);
			return;
		}
		restart = true;
	}

	switch (type) {
	case VCRAM_EVT_PRESSURE:
		if (level > VCRAM_LEVEL_HIGH) {
			vcram_event_bad(vc, "pressure level", level);
			return;
		}
		break;
	case VCRAM_EVT_OVERFLOW:
		if (!npages || !IS_ALIGNED(addr, PAGE_SIZE) ||
		    addr < vc->base || addr >= vcram_window_end(vc) ||
		    npages > (vcram_window_end(vc) - addr) >> PAGE_SHIFT) {
			vcram_event_bad(vc, "overflow range at", addr);
			return;
		}
		break;
	default:
		vcram_event_bad(vc, "type", type);
		return;
	}

	/* Valid: from here on it counts. */
	if (restart) {
		dev_info(&vc->vdev->dev, "device event numbering restarted\n");
		vc->last_seq = 0;
		resync = true;
	}
	if (vc->last_seq && seq > vc->last_seq + 1) {
		u64 gap = seq - vc->last_seq - 1;

		/* The device's lost count explains as many numbers. */
		if (gap > lost)
			vcram_count(vc, VCRAM_STAT_EVENTS_MISSED, gap - lost);
		resync = true;
	}
	vc->last_seq = seq;
	if (lost) {
		vcram_count(vc, VCRAM_STAT_EVENTS_LOST, lost);
		dev_warn_ratelimited(&vc->vdev->dev,
				     "device dropped %u events\n", lost);
		resync = true;
	}

	if (type == VCRAM_EVT_PRESSURE) {
		vcram_count(vc, VCRAM_STAT_EVENTS_PRESSURE, 1);
		vcram_set_level(vc, level);
	} else {
		vcram_count(vc, VCRAM_STAT_EVENTS_OVERFLOW, 1);
		vcram_count(vc, VCRAM_STAT_OVERFLOW_PAGES, npages);
		vc->ovf[vc->nr_ovf++ % VCRAM_OVERFLOW_LOG] = (struct vcram_overflow) {
			.seq = seq, .addr = addr, .npages = npages,
		};
		dev_warn_ratelimited(&vc->vdev->dev,
				     "device could not store %u pages at [%#llx-%#llx] (pfn %#llx), %llu pages unstored in total\n",
				     npages, addr,
				     addr + ((u64)npages << PAGE_SHIFT) - 1,
				     addr >> PAGE_SHIFT,
				     le64_to_cpu(ev->overflow_total));
		vcram_relief_start(vc, "overflow");
	}
	if (resync && !(type == VCRAM_EVT_PRESSURE && !lost))
		vcram_resync_level(vc);
}

void vcram_event_work(struct work_struct *work)
{
	struct vcram *vc = container_of(work, struct vcram, event_work);
	struct vcram_event *buf, ev;
	unsigned long flags;
	unsigned int len;
	bool kick = false;

	/*
	 * Before the window is known an OVERFLOW cannot be checked: leave
	 * the events in the ring until vcram_event_window_known().
	 */
	/* Pairs with vcram_event_window_known() */
	if (!smp_load_acquire(&vc->window_known))
		return;

	for (;;) {
		spin_lock_irqsave(&vc->evq_lock, flags);
		buf = vc->evq_dead ? NULL : virtqueue_get_buf(vc->evq, &len);
		if (buf && !vcram_event_buf_ok(vc, buf)) {
			/* Cannot happen: the core hands back our tokens. */
			spin_unlock_irqrestore(&vc->evq_lock, flags);
			vcram_event_bad(vc, "buffer", (u64)(uintptr_t)buf);
			continue;
		}
		if (buf) {
			memcpy(&ev, buf, sizeof(ev));
			if (!vcram_event_post(vc, buf, GFP_ATOMIC))
				kick = true;
		}
		spin_unlock_irqrestore(&vc->evq_lock, flags);
		if (!buf)
			break;
		mutex_lock(&vc->ev_lock);
		vcram_handle_event(vc, &ev, len);
		mutex_unlock(&vc->ev_lock);
	}

	spin_lock_irqsave(&vc->evq_lock, flags);
	if (kick && !vc->evq_dead)
		virtqueue_kick(vc->evq);
	spin_unlock_irqrestore(&vc->evq_lock, flags);
}

/* Handle @len bytes as if the device had delivered them (debugfs). */
void vcram_event_inject(struct vcram *vc, const void *data, size_t len)
{
	struct vcram_event ev = {};

	memcpy(&ev, data, min(len, sizeof(ev)));
	mutex_lock(&vc->ev_lock);
	vcram_handle_event(vc, &ev, len);
	mutex_unlock(&vc->ev_lock);
}

/* The window's base and size are set: handle events from now on. */
void vcram_event_window_known(struct vcram *vc)
{
	/* Pairs with vcram_event_work(): base and size are visible first. */
	smp_store_release(&vc->window_known, true);
	queue_work(vc->wq, &vc->event_work);
}

/* Before the device reset: no more buffers posted, no kick. */
void vcram_event_stop(struct vcram *vc)
{
	spin_lock_irq(&vc->evq_lock);
	vc->evq_dead = true;
	spin_unlock_irq(&vc->evq_lock);
	cancel_work_sync(&vc->event_work);
}

/* After the device reset: take the buffers back. */
void vcram_event_reclaim(struct vcram *vc)
{
	if (!vc->evq)
		return;
	while (virtqueue_detach_unused_buf(vc->evq))
		;
}

/*
 * New queues (restore, reset_done): the device may number its events anew,
 * and what it reported meanwhile is lost: take the level from the config
 * space.  Events are handled once the window is checked again.
 */
void vcram_event_restart(struct vcram *vc)
{
	spin_lock_irq(&vc->evq_lock);
	vc->evq_dead = false;
	spin_unlock_irq(&vc->evq_lock);
	mutex_lock(&vc->ev_lock);
	vc->last_seq = 0;
	vcram_resync_level(vc);
	mutex_unlock(&vc->ev_lock);
}
