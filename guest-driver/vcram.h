/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vcram: guest driver of the vcram compressed-RAM expander.
 *
 * The device's window is hot-added as a private memory node.  Folios freed
 * on the node are kept until the device has discarded them (DISCARD
 * requests on the requestq), pages migrated onto the node are reported
 * with COMMIT requests, and the device's pressure events pause placement
 * of new memory on the node.
 */
#ifndef _VCRAM_H
#define _VCRAM_H

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/kref.h>
#include <linux/llist.h>
#include <linux/memory-tiers.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/node_private.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/virtio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "vcram_proto.h"

/* Compressed memory is slower than DRAM: a lower tier, as dax/kmem's */
#define VCRAM_DEFAULT_ADISTANCE	(MEMTIER_ADISTANCE_DRAM * 5)

/* Event buffers kept posted on the eventq (PROTOCOL.md asks for >= 16) */
#define VCRAM_NR_EVBUFS		64
/*
 * How long probe waits for the memory to come online before it goes on
 * without it (an ACPI hot-add probes under the lock adding memory takes).
 */
#define VCRAM_PROBE_ADD_WAIT	(15 * HZ)
/* Pending COMMIT ranges collected by the migrate notification */
#define VCRAM_COMMIT_SLOTS	512

/* Driver counters, shown in sysfs */
enum vcram_stat {
	VCRAM_STAT_PAGES_DEFERRED,	/* pages kept by the free callback */
	VCRAM_STAT_PAGES_RELEASED,	/* handed back to the page allocator */
	VCRAM_STAT_PAGES_ZEROED_CPU,	/* of those: zeroed on the CPU */
	VCRAM_STAT_DISCARDS_SENT,	/* DISCARD requests queued */
	VCRAM_STAT_DISCARD_PAGES,	/* pages in them */
	VCRAM_STAT_DISCARDS_FAILED,	/* completed without status OK */
	VCRAM_STAT_QUEUE_FULL,		/* requests that found no room */
	VCRAM_STAT_COMMITS_SENT,	/* COMMIT requests queued */
	VCRAM_STAT_COMMIT_PAGES,	/* pages in them */
	VCRAM_STAT_COMMITS_FAILED,	/* completed without status OK */
	VCRAM_STAT_COMMIT_OVERFLOWED,	/* pages the device could not store */
	VCRAM_STAT_COMMITS_DROPPED,	/* migrations not reported (no room) */
	VCRAM_STAT_MIGRATE_IN,		/* folios migrated onto the node */
	VCRAM_STAT_MIGRATE_OUT,		/* folios migrated off the node */
	VCRAM_STAT_EVENTS_PRESSURE,	/* valid PRESSURE events */
	VCRAM_STAT_EVENTS_OVERFLOW,	/* valid OVERFLOW events */
	VCRAM_STAT_EVENTS_MALFORMED,	/* events dropped as invalid */
	VCRAM_STAT_EVENTS_LOST,		/* events the device dropped */
	VCRAM_STAT_EVENTS_MISSED,	/* gaps in the event sequence */
	VCRAM_STAT_OVERFLOW_PAGES,	/* pages named by OVERFLOW events */
	VCRAM_STAT_PAUSES,		/* times placement was paused */
	VCRAM_STAT_FOREIGN,		/* callbacks for other nodes' folios */
	VCRAM_STAT_RELIEF_RUNS,		/* relief episodes started */
	VCRAM_STAT_RELIEF_NOMINATES,	/* NOMINATE requests answered */
	VCRAM_STAT_RELIEF_NOMINATED,	/* pages named in the answers */
	VCRAM_STAT_RELIEF_BAD,		/* answers or entries refused */
	VCRAM_STAT_RELIEF_EVACUATED,	/* pages handed to the evacuation */
	VCRAM_STAT_RELIEF_MOVED,	/* pages moved off the node */
	VCRAM_STAT_RELIEF_BUSY,		/* evacuations that left folios (-EBUSY) */
	VCRAM_STAT_RELIEF_FAILED,	/* other failures (no room, no answer) */
	VCRAM_STAT_RELIEF_GAVE_UP,	/* episodes ended without reaching LOW */
	VCRAM_STAT_RELIEF_RETRIES,	/* episodes started again after a give-up */
	VCRAM_STAT_PM_FREEZES,		/* freeze callbacks (suspend, hibernation) */
	VCRAM_STAT_PM_RESTORES,		/* restore callbacks that brought it back */
	VCRAM_NR_STATS
};

/* Recent OVERFLOW ranges, for debugfs */
#define VCRAM_OVERFLOW_LOG	64

struct vcram_overflow {
	u64 seq;
	u64 addr;
	u32 npages;
};

/*
 * A NOMINATE in flight: shared by the relief worker, which may stop
 * waiting, and the request, which completes it (the last put frees it).
 */
struct vcram_nominate {
	struct kref ref;
	struct completion done;
	unsigned int len;		/* used length, 0: not answered */
	unsigned int max;		/* room for this many entries */
	unsigned int max_pages;		/* page limit sent (1.4), 0: none */
	struct vcram_resp resp;		/* device-writable from here */
	struct vcram_nomination ent[];
};

struct vcram_commit {
	unsigned long pfn;
	unsigned int npages;
};

struct vcram {
	struct virtio_device *vdev;
	struct virtqueue *rq;
	struct virtqueue *evq;
	struct workqueue_struct *wq;

	/* From the config space, fixed after probe */
	int nid;
	u64 base;
	u64 size;
	u32 max_ranges;
	u16 version_minor;

	/* Memory: the private node registration and its state */
	struct node_private np;
	struct memory_dev_type *mtype;	/* while added, if adistance set */
	/*
	 * Two locks, so that nothing which device removal waits for (it runs
	 * under the device hotplug lock on an ACPI hot-unplug) ever waits for
	 * that lock itself:
	 * - mem_lock serializes adding and removing the memory, and is held
	 *   across the memory hotplug calls (which take the device hotplug
	 *   lock).  Probe, the sysfs "online" writer and the reap work take
	 *   it; removal never does.
	 * - lock guards the state below and the pause, and keeps relief from
	 *   evacuating while the memory is offlined.  It is never held across
	 *   a memory hotplug call, so removal may take it and wait for the
	 *   works that do.
	 * Order: mem_lock, then lock.
	 */
	struct mutex mem_lock;		/* adding, removing the memory */
	struct mutex lock;		/* the state below, the pause */
	bool added;
	bool orphaned;			/* device gone */
	bool removing;			/* offlining in progress */
	bool reaping;			/* the reap work holds a reference */
	int last_remove_err;
	/* Orphaned: removes the memory once the node's last page is free */
	struct delayed_work reap_work;
	/* The driver binding, the reap work, each sysfs "online" request */
	struct kref ref;
	/* Unbinding has begun: "online" writers stop waiting (online_wq) */
	bool unbinding;
	wait_queue_head_t online_wq;

	/* requestq */
	spinlock_t rq_lock;		/* rq, rq_dead */
	bool rq_dead;
	atomic_t inflight;
	atomic64_t req_seq;		/* tags of requests */
	wait_queue_head_t inflight_wq;
	struct work_struct done_work;

	/* Freed folios waiting for DISCARD, linked through folio->lru */
	struct llist_head freed;
	struct delayed_work flush_work;
	atomic_long_t pages_pending;	/* kept and not yet released */
	atomic_t freed_nr;		/* folios on the freed list */

	/* Migrations onto the node, to COMMIT */
	spinlock_t commit_lock;
	unsigned int nr_commits;
	struct vcram_commit commits[VCRAM_COMMIT_SLOTS];

	/* Window known (base and size valid): events are handled from then */
	bool window_known;

	/* eventq */
	spinlock_t evq_lock;		/* evq, evq_dead */
	bool evq_dead;
	struct vcram_event *evbufs;
	struct work_struct event_work;
	struct mutex ev_lock;		/* event handling, last_seq, ovf */
	u64 last_seq;
	unsigned int nr_ovf;		/* OVERFLOW events logged in ovf */
	struct vcram_overflow ovf[VCRAM_OVERFLOW_LOG];
	int level;			/* pressure level last reported */
	struct work_struct pressure_work;

	/* Relief: moving the device's nominations off the node */
	struct delayed_work relief_work;
	unsigned long relief_flags;	/* VCRAM_RELIEF_ACTIVE */
	unsigned long relief_start;	/* jiffies the episode began */
	unsigned long relief_moved;	/* pages moved in this episode */
	unsigned int relief_idle;	/* rounds without progress */
	unsigned int relief_last_ms;	/* length of the last episode */
	unsigned long relief_retry_delay; /* jiffies before the next retry */

	atomic_long_t stats[VCRAM_NR_STATS];

	/* Fault injection for tests (debugfs) */
	struct dentry *debugfs;
	u32 fail_requests;		/* fail the next N completions */

	u32 reset_status;		/* answer to the RESET sent at probe */
};

/* Module parameters (vcram_main.c) */
extern unsigned long vcram_caps;
extern int vcram_adistance;
extern unsigned int vcram_flush_interval_ms;
extern unsigned int vcram_batch_ranges;
extern unsigned int vcram_pause_level;
extern struct workqueue_struct *vcram_orphan_wq;
extern bool vcram_discard;
extern bool vcram_commit;
extern unsigned int vcram_relief_rate;

static inline void vcram_count(struct vcram *vc, enum vcram_stat s, long n)
{
	atomic_long_add(n, &vc->stats[s]);
}

static inline u64 vcram_window_end(struct vcram *vc)
{
	return vc->base + vc->size;
}

/* vcram_mem.c */
extern const struct node_private_ops vcram_np_ops;
int vcram_mem_set_online(struct vcram *vc, bool on);
int vcram_mem_add_at_probe(struct vcram *vc, unsigned long timeout);
void vcram_mem_unbinding(struct vcram *vc);
bool vcram_mem_orphan(struct vcram *vc);
void vcram_reap_work(struct work_struct *work);
void vcram_put(struct vcram *vc);
void vcram_mem_init(struct vcram *vc);
void vcram_release_folio(struct vcram *vc, struct folio *folio,
			 unsigned int order);
void vcram_zero_release_folio(struct vcram *vc, struct folio *folio,
			      unsigned int order);
void vcram_pressure_work(struct work_struct *work);
void vcram_queue_pressure(struct vcram *vc);

/* vcram_req.c */
void vcram_req_init(struct vcram *vc);
int vcram_req_reset(struct vcram *vc);
void vcram_rq_done(struct virtqueue *vq);
void vcram_flush_work(struct work_struct *work);
void vcram_req_kick_flush(struct vcram *vc, bool now);
int vcram_req_drain(struct vcram *vc, unsigned long timeout);
void vcram_req_stop(struct vcram *vc);
void vcram_req_reclaim(struct vcram *vc);
void vcram_req_restart(struct vcram *vc);
void vcram_req_note_commit(struct vcram *vc, unsigned long pfn,
			   unsigned int npages);

int vcram_req_nominate(struct vcram *vc, struct vcram_nominate *nom,
		       unsigned long timeout);
void vcram_nominate_put(struct vcram_nominate *nom);

/* vcram_relief.c */
#define VCRAM_RELIEF_ACTIVE	0
#define VCRAM_RELIEF_RETRY	1	/* a retry is queued */
void vcram_relief_init(struct vcram *vc);
void vcram_relief_start(struct vcram *vc, const char *why);
void vcram_relief_stop(struct vcram *vc);

/* vcram_event.c */
int vcram_event_init(struct vcram *vc);
int vcram_event_post_all(struct vcram *vc);
void vcram_evq_done(struct virtqueue *vq);
void vcram_event_work(struct work_struct *work);
void vcram_event_stop(struct vcram *vc);
void vcram_event_reclaim(struct vcram *vc);
void vcram_event_restart(struct vcram *vc);
void vcram_event_window_known(struct vcram *vc);
void vcram_event_inject(struct vcram *vc, const void *data, size_t len);

/* vcram_main.c */
int vcram_test_reset(struct virtio_device *vdev);

/* vcram_debugfs.c */
void vcram_debugfs_module_init(void);
void vcram_debugfs_module_exit(void);
void vcram_debugfs_init(struct vcram *vc);
void vcram_debugfs_exit(struct vcram *vc);

/* vcram_sysfs.c */
extern const struct attribute_group *vcram_groups[];

#endif /* _VCRAM_H */
