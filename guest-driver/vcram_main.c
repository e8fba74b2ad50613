// SPDX-License-Identifier: GPL-2.0
/*
 * vcram: probe and remove, config space validation, module parameters.
 *
 * Bring-up follows device/PROTOCOL.md section 2: check the identity
 * fields, set up both queues, set DRIVER_OK, post event buffers, then poll
 * the status until the device has found its window, and only then hot-add
 * the window as a private memory node.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/acpi.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/kstrtox.h>
#include <linux/memory.h>
#include <linux/memory_hotplug.h>
#include <linux/module.h>
#include <linux/nodemask.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vcram.h"

static unsigned int device_id = 6;
module_param(device_id, uint, 0444);
MODULE_PARM_DESC(device_id,
		 "virtio device id of the vcram device (default 6, PCI 1af4:1046)");

unsigned long vcram_caps = NODE_PRIVATE_CAP_USER_NUMA;
module_param_named(caps, vcram_caps, ulong, 0644);
MODULE_PARM_DESC(caps,
		 "Private node capabilities: 1 reclaim, 2 user NUMA (mempolicy and migration), 4 hot-unplug, 8 demotion (needs 1), 16 NUMA balancing, 32 long-term pins (default 2); used when the memory is added");

int vcram_adistance = VCRAM_DEFAULT_ADISTANCE;
module_param_named(adistance, vcram_adistance, int, 0644);
MODULE_PARM_DESC(adistance,
		 "Abstract distance of the node's memory type (memory tiering; default 5x DRAM, as dax/kmem; 0: the kernel's default)");

unsigned int vcram_flush_interval_ms = 10;
module_param_named(flush_interval_ms, vcram_flush_interval_ms, uint, 0644);
MODULE_PARM_DESC(flush_interval_ms,
		 "Longest delay between a free and its DISCARD request (default 10)");

unsigned int vcram_batch_ranges = 256;
module_param_named(batch_ranges, vcram_batch_ranges, uint, 0644);
MODULE_PARM_DESC(batch_ranges,
		 "Ranges per request, and freed folios that trigger an early flush (1..1024, default 256)");

unsigned int vcram_pause_level = VCRAM_LEVEL_LOW;

/* 0 would pause the node at NORMAL, that is for good: 1..3 only. */
static int vcram_pause_level_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;
	int ret;

	ret = kstrtouint(val, 0, &v);
	if (ret)
		return ret;
	if (v < VCRAM_LEVEL_LOW || v > VCRAM_LEVEL_HIGH + 1)
		return -EINVAL;
	WRITE_ONCE(*(unsigned int *)kp->arg, v);
	return 0;
}

static const struct kernel_param_ops vcram_pause_level_ops = {
	.set = vcram_pause_level_set,
	.get = param_get_uint,
};
module_param_cb(pause_level, &vcram_pause_level_ops, &vcram_pause_level, 0644);
MODULE_PARM_DESC(pause_level,
		 "Device pressure level that pauses placement on the node: 1 low (default), 2 high, 3 never");

unsigned int vcram_relief_rate = 32768;
module_param_named(relief_rate, vcram_relief_rate, uint, 0644);
MODULE_PARM_DESC(relief_rate,
		 "Pages per second the relief may move off the node on HIGH pressure and OVERFLOW (default 32768, 128 MiB/s; 0: no relief)");

/* Reaps the memory of nodes whose device went away (vcram_reap_work()). */
struct workqueue_struct *vcram_orphan_wq;

bool vcram_discard = true;
module_param_named(discard, vcram_discard, bool, 0644);
MODULE_PARM_DESC(discard,
		 "Send DISCARD for freed pages (default Y); N zeroes them on the CPU instead");

bool vcram_commit = true;
module_param_named(commit, vcram_commit, bool, 0644);
MODULE_PARM_DESC(commit, "Send COMMIT for pages migrated onto the node (default Y)");

static unsigned int window_timeout_ms = 2000;
module_param(window_timeout_ms, uint, 0644);
MODULE_PARM_DESC(window_timeout_ms,
		 "How long probe waits for the device to find its window (default 2000)");

/* Filled in from device_id at module init. */
static struct virtio_device_id vcram_id_table[] = {
	{ 6, VIRTIO_DEV_ANY_ID },
	{ 0 },
};

/*
 * The config space's node is the window's proximity domain as the firmware
 * describes it (QEMU's -numa nodeid, the PXM of the DIMM in the SRAT).
 * Linux numbers its nodes in its own order: translate, as virtio-mem does.
 * Without ACPI NUMA, or a PXM the SRAT does not name, the number is taken
 * as the node id.
 */
static u32 vcram_pxm_to_node(struct vcram *vc, u32 pxm)
{
#ifdef CONFIG_ACPI_NUMA
	int nid = pxm_to_node(pxm);

	if (nid != NUMA_NO_NODE) {
		if (nid != pxm)
			dev_info(&vc->vdev->dev, "proximity domain %u is node %d\n",
				 pxm, nid);
		return nid;
	}
#endif
	return pxm;
}

static int vcram_check_identity(struct vcram *vc)
{
	struct virtio_device *vdev = vc->vdev;
	struct device *dev = &vdev->dev;
	u32 magic, node, page_size, event_size, max_ranges;
	struct node_private *np;
	u16 major, minor;

	virtio_cread_le(vdev, struct vcram_config, magic, &magic);
	if (magic != VCRAM_MAGIC) {
		dev_err(dev, "config magic %#x is not %#x: not a vcram device\n",
			magic, VCRAM_MAGIC);
		return -ENODEV;
	}
	virtio_cread_le(vdev, struct vcram_config, version_major, &major);
	virtio_cread_le(vdev, struct vcram_config, version_minor, &minor);
	if (major != VCRAM_VERSION_MAJOR) {
		dev_err(dev, "protocol version %u.%u is not supported (need %u.x)\n",
			major, minor, VCRAM_VERSION_MAJOR);
		return -ENODEV;
	}
	vc->version_minor = minor;

	virtio_cread_le(vdev, struct vcram_config, page_size, &page_size);
	/* Protocol 1.0 pages are 4 KiB, as the kernel's must be. */
	BUILD_BUG_ON(PAGE_SIZE != VCRAM_PAGE_SIZE);
	if (page_size != VCRAM_PAGE_SIZE) {
		dev_err(dev, "device page size %u is not %u\n", page_size,
			VCRAM_PAGE_SIZE);
		return -ENODEV;
	}
	virtio_cread_le(vdev, struct vcram_config, event_size, &event_size);
	if (event_size != sizeof(struct vcram_event)) {
		dev_err(dev, "event size %u is not %zu\n", event_size,
			sizeof(struct vcram_event));
		return -ENODEV;
	}
	virtio_cread_le(vdev, struct vcram_config, max_ranges, &max_ranges);
	if (!max_ranges) {
		dev_err(dev, "device accepts no ranges per request\n");
		return -ENODEV;
	}
	vc->max_ranges = min_t(u32, max_ranges, VCRAM_MAX_RANGES);

	virtio_cread_le(vdev, struct vcram_config, node, &node);
	node = vcram_pxm_to_node(vc, node);
	if (node >= MAX_NUMNODES || !node_possible(node)) {
		dev_err(dev, "node %u is not a possible NUMA node\n", node);
		return -ENODEV;
	}
	if (node_state(node, N_MEMORY) || node_state(node, N_MEMORY_PRIVATE)) {
		dev_err(dev, "node %u already has memory\n", node);
		return -EBUSY;
	}
	np = node_private_get(node);
	if (np) {
		dev_err(dev, "node %u is a private node of %s already\n", node,
			np->name ? np->name : "another owner");
		node_private_put(np);
		return -EBUSY;
	}
	vc->nid = node;
	return 0;
}

static int vcram_wait_window(struct vcram *vc)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(window_timeout_ms);
	struct device *dev = &vc->vdev->dev;
	u32 status;

	for (;;) {
		virtio_cread_le(vc->vdev, struct vcram_config, status, &status);
		if (status & VCRAM_ST_WINDOW_BAD) {
			dev_err(dev, "device reports its window unusable (status %#x)\n",
				status);
			return -ENODEV;
		}
		if (status & VCRAM_ST_WINDOW_OK)
			return 0;
		if (time_after(jiffies, deadline)) {
			dev_err(dev, "device did not find its window within %u ms (status %#x)\n",
				window_timeout_ms, status);
			return -ETIMEDOUT;
		}
		msleep(20);
	}
}

static int vcram_check_window(struct vcram *vc)
{
	unsigned long block = memory_block_size_bytes();
	struct device *dev = &vc->vdev->dev;
	struct range plug;
	u64 base, size;

	virtio_cread_le(vc->vdev, struct vcram_config, window_base, &base);
	virtio_cread_le(vc->vdev, struct vcram_config, window_size, &size);
	if (!size || !IS_ALIGNED(base, block) || !IS_ALIGNED(size, block)) {
		dev_err(dev, "window [%#llx, +%#llx) is not aligned to the memory block size %#lx\n",
			base, size, block);
		return -EINVAL;
	}
	plug = mhp_get_pluggable_range(true);
	if (base + size < base || base < plug.start ||
	    base + size - 1 > plug.end) {
		dev_err(dev, "window [%#llx, +%#llx) is outside the pluggable range [%#llx, %#llx]\n",
			base, size, plug.start, plug.end);
		return -EINVAL;
	}
	vc->base = base;
	vc->size = size;
	return 0;
}

static int vcram_find_vqs(struct vcram *vc)
{
	struct virtqueue_info vqs_info[VCRAM_NR_VQS] = {
		[VCRAM_RQ] = { "requests", vcram_rq_done },
		[VCRAM_EVQ] = { "events", vcram_evq_done },
	};
	struct virtqueue *vqs[VCRAM_NR_VQS];
	int ret;

	ret = virtio_find_vqs(vc->vdev, VCRAM_NR_VQS, vqs, vqs_info, NULL);
	if (ret)
		return ret;
	vc->rq = vqs[VCRAM_RQ];
	vc->evq = vqs[VCRAM_EVQ];
	return 0;
}

/*
 * Stop both queues and take them away: nothing is queued or kicked any more
 * (both queues marked dead under their locks first), the device is reset
 * (it no longer touches the rings, nor carries out what it did not answer),
 * answered requests are finished and unanswered DISCARDs fall back to
 * zeroing on the CPU.  Also right for a broken device (surprise removal),
 * whose unanswered requests never complete.  Idempotent.
 */
static void vcram_stop_device(struct vcram *vc)
{
	if (!vc->rq)
		return;
	vcram_req_stop(vc);
	vcram_event_stop(vc);
	virtio_reset_device(vc->vdev);
	vcram_req_reclaim(vc);
	vcram_event_reclaim(vc);
	/* Its NOMINATE, if any, was just completed: no round starts again. */
	vcram_relief_stop(vc);
	vc->vdev->config->del_vqs(vc->vdev);
	vc->rq = NULL;
	vc->evq = NULL;
}

/*
 * Last of the driver state, at the last reference: the device is stopped
 * and the memory removed.  Nothing may queue work for @vc any more but
 * the flush work, which may queue the reap work (which may be our caller:
 * it is then not waited for).  Removal never drops the last reference
 * with the reap work queued, so it never waits here for that work, which
 * takes the device hotplug lock.
 */
static void vcram_release(struct kref *ref)
{
	struct vcram *vc = container_of(ref, struct vcram, ref);
	struct virtio_device *vdev = vc->vdev;

	cancel_work_sync(&vc->pressure_work);
	vcram_relief_stop(vc);
	cancel_delayed_work_sync(&vc->flush_work);
	if (current_work() == &vc->reap_work.work)
		cancel_delayed_work(&vc->reap_work);
	else
		cancel_delayed_work_sync(&vc->reap_work);
	destroy_workqueue(vc->wq);
	kfree(vc->evbufs);
	kfree(vc);
	put_device(&vdev->dev);
}

void vcram_put(struct vcram *vc)
{
	kref_put(&vc->ref, vcram_release);
}

/*
 * Bring the queues up again after vcram_stop_device() (restore,
 * reset_done): the device must serve the same window; events are numbered
 * anew and the pressure level is read again.
 */
static int vcram_start_device(struct vcram *vc)
{
	struct device *dev = &vc->vdev->dev;
	u64 base, size;
	int ret;

	ret = vcram_find_vqs(vc);
	if (ret) {
		dev_err(dev, "setting up the queues again failed: %d\n", ret);
		return ret;
	}
	vcram_event_restart(vc);
	virtio_device_ready(vc->vdev);
	ret = vcram_event_post_all(vc);
	if (!ret)
		ret = vcram_wait_window(vc);
	if (ret)
		goto err;
	virtio_cread_le(vc->vdev, struct vcram_config, window_base, &base);
	virtio_cread_le(vc->vdev, struct vcram_config, window_size, &size);
	if (base != vc->base || size != vc->size) {
		dev_err(dev, "window is [%#llx, +%#llx) now, was [%#llx, +%#llx)\n",
			base, size, vc->base, vc->size);
		ret = -ENODEV;
		goto err;
	}
	vcram_req_restart(vc);
	vcram_event_window_known(vc);
	return 0;
err:
	vcram_stop_device(vc);
	return ret;
}

/*
 * Suspend (freeze) and PCI function reset (reset_prepare): send what is
 * kept, give the device a second to answer, then stop it as on removal.
 * While stopped, freed pages are zeroed on the CPU; the node's memory and
 * its state stay.
 */
static int vcram_quiesce(struct virtio_device *vdev)
{
	struct vcram *vc = vdev->priv;

	if (!vc || !vc->rq)
		return 0;
	vcram_req_drain(vc, HZ);
	vcram_stop_device(vc);
	dev_info(&vdev->dev, "queues stopped\n");
	return 0;
}

/* Resume (restore) and after a PCI function reset (reset_done). */
static int vcram_reinit(struct virtio_device *vdev)
{
	struct vcram *vc = vdev->priv;
	int ret;

	if (!vc)
		return 0;
	ret = vcram_start_device(vc);
	if (ret) {
		dev_err(&vdev->dev,
			"device not usable after resume or reset (%d): freed pages are zeroed by the CPU\n",
			ret);
		return ret;
	}
	dev_info(&vdev->dev, "queues running again\n");
	return 0;
}

#ifdef CONFIG_PM_SLEEP
/* Suspend and hibernation: as reset_prepare, counted (pm_freezes). */
static int vcram_freeze(struct virtio_device *vdev)
{
	struct vcram *vc = vdev->priv;

	if (vc)
		vcram_count(vc, VCRAM_STAT_PM_FREEZES, 1);
	return vcram_quiesce(vdev);
}

/* Resume: as reset_done; pm_restores counts the ones that worked. */
static int vcram_restore(struct virtio_device *vdev)
{
	struct vcram *vc = vdev->priv;
	int ret;

	ret = vcram_reinit(vdev);
	if (!ret && vc)
		vcram_count(vc, VCRAM_STAT_PM_RESTORES, 1);
	return ret;
}
#endif

static struct virtio_driver vcram_driver;

/*
 * Unbinding begins (before the driver's attributes are removed, which waits
 * for their writers): let "online" writers go (vcram_mem_set_online()).
 */
static int vcram_bus_notify(struct notifier_block *nb, unsigned long action,
			    void *data)
{
	struct device *dev = data;
	struct vcram *vc;

	if (action != BUS_NOTIFY_UNBIND_DRIVER ||
	    dev->driver != &vcram_driver.driver)
		return NOTIFY_DONE;
	vc = dev_to_virtio(dev)->priv;
	if (vc)
		vcram_mem_unbinding(vc);
	return NOTIFY_OK;
}

static struct notifier_block vcram_bus_nb = {
	.notifier_call = vcram_bus_notify,
};

static DEFINE_MUTEX(vcram_bus_nb_lock);
static const struct bus_type *vcram_bus_nb_bus;

/*
 * From the first probe, so that the notifier is in place before any
 * device's attributes exist (the driver core adds them after probe).
 */
static int vcram_watch_bus(struct virtio_device *vdev)
{
	int ret = 0;

	mutex_lock(&vcram_bus_nb_lock);
	if (!vcram_bus_nb_bus) {
		ret = bus_register_notifier(vdev->dev.bus, &vcram_bus_nb);
		if (!ret)
			vcram_bus_nb_bus = vdev->dev.bus;
	}
	mutex_unlock(&vcram_bus_nb_lock);
	return ret;
}

static int vcram_probe(struct virtio_device *vdev)
{
	struct vcram *vc;
	u32 level, granule;
	int ret;

	vcram_proto_check_layout();

	if (vdev->id.device != device_id)
		return -ENODEV;
	ret = vcram_watch_bus(vdev);
	if (ret) {
		dev_err(&vdev->dev, "cannot watch the virtio bus for unbinding: %d\n",
			ret);
		return ret;
	}
	if (!vdev->config->get) {
		dev_err(&vdev->dev, "config space is not readable\n");
		return -EINVAL;
	}

	vc = kzalloc(sizeof(*vc), GFP_KERNEL);
	if (!vc)
		return -ENOMEM;
	vc->vdev = vdev;
	vdev->priv = vc;
	vc->nid = NUMA_NO_NODE;
	kref_init(&vc->ref);
	init_waitqueue_head(&vc->online_wq);
	mutex_init(&vc->mem_lock);
	mutex_init(&vc->lock);
	INIT_WORK(&vc->pressure_work, vcram_pressure_work);
	INIT_DELAYED_WORK(&vc->reap_work, vcram_reap_work);
	vcram_relief_init(vc);
	vcram_mem_init(vc);
	vcram_req_init(vc);

	ret = vcram_check_identity(vc);
	if (ret)
		goto err_free;

	vc->wq = alloc_workqueue("vcram%d", WQ_UNBOUND | WQ_MEM_RECLAIM, 0,
				 vdev->index);
	if (!vc->wq) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = vcram_event_init(vc);
	if (ret)
		goto err_wq;
	ret = vcram_find_vqs(vc);
	if (ret) {
		dev_err(&vdev->dev, "setting up the queues failed: %d\n", ret);
		goto err_wq;
	}

	virtio_device_ready(vdev);
	ret = vcram_event_post_all(vc);
	if (ret) {
		dev_err(&vdev->dev, "posting event buffers failed: %d\n", ret);
		goto err_reset;
	}

	ret = vcram_wait_window(vc);
	if (ret)
		goto err_reset;
	ret = vcram_check_window(vc);
	if (ret)
		goto err_reset;
	ret = vcram_req_reset(vc);
	if (ret)
		dev_warn(&vdev->dev,
			 "RESET failed (%d): the device may still count a previous kernel's data\n",
			 ret);

	virtio_cread_le(vdev, struct vcram_config, pressure_level, &level);
	WRITE_ONCE(vc->level, min_t(u32, level, VCRAM_LEVEL_HIGH));
	/* Events that came before the window was known are handled now. */
	vcram_event_window_known(vc);
	virtio_cread_le(vdev, struct vcram_config, granule, &granule);
	if (granule == U32_MAX)
		dev_warn(&vdev->dev,
			 "config space shorter than %zu bytes: device counters read as all ones\n",
			 sizeof(struct vcram_config));

	/* Once added, the request applies a level reported before. */
	ret = vcram_mem_add_at_probe(vc, VCRAM_PROBE_ADD_WAIT);
	if (ret)
		goto err_reset;
	vcram_debugfs_init(vc);
	/* For messages from works that outlive the binding (the reap) */
	get_device(&vdev->dev);
	return 0;

err_reset:
	vcram_stop_device(vc);
	cancel_work_sync(&vc->pressure_work);
err_wq:
	destroy_workqueue(vc->wq);
err_free:
	kfree(vc->evbufs);
	vdev->priv = NULL;
	kfree(vc);
	return ret;
}

/*
 * debugfs "reset": the virtio core's steps around a driver's freeze and
 * restore (virtio_device_freeze(), virtio_device_restore_priv()), with the
 * driver's own callbacks, for tests on kernels without CONFIG_PM_SLEEP and
 * devices without a PCI reset method.
 */
int vcram_test_reset(struct virtio_device *vdev)
{
	int ret;

	ret = vcram_quiesce(vdev);
	if (ret)
		return ret;
	virtio_reset_device(vdev);
	virtio_add_status(vdev, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	virtio_add_status(vdev, VIRTIO_CONFIG_S_DRIVER);
	ret = vdev->config->finalize_features(vdev);
	if (!ret) {
		virtio_add_status(vdev, VIRTIO_CONFIG_S_FEATURES_OK);
		if (!(vdev->config->get_status(vdev) &
		      VIRTIO_CONFIG_S_FEATURES_OK))
			ret = -ENODEV;
	}
	if (!ret)
		ret = vcram_reinit(vdev);
	if (ret)
		virtio_add_status(vdev, VIRTIO_CONFIG_S_FAILED);
	return ret;
}

static void vcram_remove(struct virtio_device *vdev)
{
	struct vcram *vc = vdev->priv;

	/*
	 * With suppress_bind_attrs and the module reference held while the
	 * memory is added, this runs with memory still added only when the
	 * device itself goes away.  Stop the device first, as virtio-mem
	 * does: unanswered DISCARDs (a device that stopped answering, or a
	 * surprise removal that broke the queues) are zeroed on the CPU, so
	 * that offlining never waits for the device.
	 *
	 * The memory is not offlined here: on an ACPI hot-unplug (QMP
	 * device_del) this runs under the device hotplug lock
	 * (acpi_device_hotplug()), which offlining takes too.  The node is
	 * orphaned (paused, freed pages zeroed by the CPU) and the reap work
	 * removes its memory from the orphan queue, at once if no page is in
	 * use, else once the last one is free.  For the same reason nothing
	 * here takes mem_lock or waits for a work that does: a request from
	 * the sysfs "online" attribute may be adding or offlining the memory
	 * at this moment, blocked on the lock our caller holds; its writer
	 * stopped waiting for it when the unbinding began (vcram_bus_notify()),
	 * so the attribute goes, and it finds the node orphaned afterwards.
	 */
	vcram_mem_unbinding(vc);
	vcram_debugfs_exit(vc);
	vcram_stop_device(vc);
	if (vcram_mem_orphan(vc))
		dev_info(&vdev->dev,
			 "device gone: node %d paused, freed pages are zeroed by the CPU, its memory goes when its last page is free\n",
			 vc->nid);
	vdev->priv = NULL;
	vcram_put(vc);
}

static struct virtio_driver vcram_driver = {
	.driver.name = KBUILD_MODNAME,
	/* The memory cannot always be removed: no unbind through sysfs. */
	.driver.suppress_bind_attrs = true,
	.driver.dev_groups = vcram_groups,
	.id_table = vcram_id_table,
	.probe = vcram_probe,
	.remove = vcram_remove,
#ifdef CONFIG_PM_SLEEP
	.freeze = vcram_freeze,
	.restore = vcram_restore,
#endif
	.reset_prepare = vcram_quiesce,
	.reset_done = vcram_reinit,
};

static int __init vcram_init(void)
{
	int ret;

	if (device_id == 0 || device_id == VIRTIO_DEV_ANY_ID) {
		pr_err("device_id %u is not a usable virtio device id\n",
		       device_id);
		return -EINVAL;
	}
	if (vcram_batch_ranges < 1 || vcram_batch_ranges > VCRAM_MAX_RANGES) {
		pr_err("batch_ranges must be 1..%u\n", VCRAM_MAX_RANGES);
		return -EINVAL;
	}
	vcram_id_table[0].device = device_id;
	vcram_orphan_wq = alloc_workqueue("vcram_orphan", WQ_UNBOUND, 0);
	if (!vcram_orphan_wq)
		return -ENOMEM;
	vcram_debugfs_module_init();
	ret = register_virtio_driver(&vcram_driver);
	if (ret) {
		vcram_debugfs_module_exit();
		destroy_workqueue(vcram_orphan_wq);
	}
	return ret;
}

static void __exit vcram_exit(void)
{
	unregister_virtio_driver(&vcram_driver);
	if (vcram_bus_nb_bus)
		bus_unregister_notifier(vcram_bus_nb_bus, &vcram_bus_nb);
	/* A reap work may still be returning from its last vcram_put(). */
	destroy_workqueue(vcram_orphan_wq);
	vcram_debugfs_module_exit();
}

module_init(vcram_init);
module_exit(vcram_exit);
MODULE_DEVICE_TABLE(virtio, vcram_id_table);
MODULE_DESCRIPTION("vcram compressed-RAM expander: window as a private memory node");
MODULE_LICENSE("GPL");
