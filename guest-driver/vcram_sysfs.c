// SPDX-License-Identifier: GPL-2.0
/*
 * vcram: sysfs attributes, in the "vcram" group of the virtio device
 * (/sys/bus/virtio/devices/virtioN/vcram/).
 *
 * Device values are read from the config space at each read; driver
 * counters are the driver's own.  "online" removes the memory (write 0;
 * fails with EBUSY while pages are in use, ETIMEDOUT when the device leaves
 * DISCARDs unanswered) or adds it again (write 1).  The ABI is documented
 * in Documentation/ABI/testing/sysfs-driver-vcram.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/kstrtox.h>
#include <linux/sysfs.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "vcram.h"

static struct vcram *dev_to_vcram(struct device *dev)
{
	return dev_to_virtio(dev)->priv;
}

#define VCRAM_CFG_ATTR(_name, _field, _type)				\
static ssize_t _name##_show(struct device *dev,				\
			    struct device_attribute *attr, char *buf)	\
{									\
	struct vcram *vc = dev_to_vcram(dev);				\
	_type v;							\
									\
	virtio_cread_le(vc->vdev, struct vcram_config, _field, &v);	\
	return sysfs_emit(buf, "%llu\n", (unsigned long long)v);	\
}									\
static DEVICE_ATTR_RO(_name)

VCRAM_CFG_ATTR(physical_capacity, physical_capacity, u64);
VCRAM_CFG_ATTR(physical_used, physical_used, u64);
VCRAM_CFG_ATTR(stored_pages, stored_pages, u64);
VCRAM_CFG_ATTR(same_pages, same_pages, u64);
VCRAM_CFG_ATTR(compressed_bytes, compressed_bytes, u64);
VCRAM_CFG_ATTR(overflow_pages, overflow_pages, u64);
VCRAM_CFG_ATTR(raw_pages, raw_pages, u64);
VCRAM_CFG_ATTR(event_seq, event_seq, u64);
VCRAM_CFG_ATTR(window_base, window_base, u64);
VCRAM_CFG_ATTR(window_size, window_size, u64);
VCRAM_CFG_ATTR(low_watermark, low_watermark, u32);
VCRAM_CFG_ATTR(high_watermark, high_watermark, u32);
VCRAM_CFG_ATTR(status, status, u32);
VCRAM_CFG_ATTR(device_pressure_level, pressure_level, u32);
VCRAM_CFG_ATTR(max_ranges, max_ranges, u32);
VCRAM_CFG_ATTR(granule, granule, u32);
VCRAM_CFG_ATTR(zero_pages, zero_pages, u32);

#define VCRAM_STAT_ATTR(_name, _stat)					\
static ssize_t _name##_show(struct device *dev,				\
			    struct device_attribute *attr, char *buf)	\
{									\
	struct vcram *vc = dev_to_vcram(dev);				\
									\
	return sysfs_emit(buf, "%ld\n",					\
			  atomic_long_read(&vc->stats[_stat]));		\
}									\
static DEVICE_ATTR_RO(_name)

VCRAM_STAT_ATTR(pages_deferred, VCRAM_STAT_PAGES_DEFERRED);
VCRAM_STAT_ATTR(pages_released, VCRAM_STAT_PAGES_RELEASED);
VCRAM_STAT_ATTR(pages_zeroed_cpu, VCRAM_STAT_PAGES_ZEROED_CPU);
VCRAM_STAT_ATTR(discards_sent, VCRAM_STAT_DISCARDS_SENT);
VCRAM_STAT_ATTR(discard_pages, VCRAM_STAT_DISCARD_PAGES);
VCRAM_STAT_ATTR(discards_failed, VCRAM_STAT_DISCARDS_FAILED);
VCRAM_STAT_ATTR(queue_full, VCRAM_STAT_QUEUE_FULL);
VCRAM_STAT_ATTR(commits_sent, VCRAM_STAT_COMMITS_SENT);
VCRAM_STAT_ATTR(commit_pages, VCRAM_STAT_COMMIT_PAGES);
VCRAM_STAT_ATTR(commits_failed, VCRAM_STAT_COMMITS_FAILED);
VCRAM_STAT_ATTR(commit_overflowed, VCRAM_STAT_COMMIT_OVERFLOWED);
VCRAM_STAT_ATTR(commits_dropped, VCRAM_STAT_COMMITS_DROPPED);
VCRAM_STAT_ATTR(migrate_in, VCRAM_STAT_MIGRATE_IN);
VCRAM_STAT_ATTR(migrate_out, VCRAM_STAT_MIGRATE_OUT);
VCRAM_STAT_ATTR(events_pressure, VCRAM_STAT_EVENTS_PRESSURE);
VCRAM_STAT_ATTR(events_overflow, VCRAM_STAT_EVENTS_OVERFLOW);
VCRAM_STAT_ATTR(events_malformed, VCRAM_STAT_EVENTS_MALFORMED);
VCRAM_STAT_ATTR(events_lost, VCRAM_STAT_EVENTS_LOST);
VCRAM_STAT_ATTR(events_missed, VCRAM_STAT_EVENTS_MISSED);
VCRAM_STAT_ATTR(overflow_pages_reported, VCRAM_STAT_OVERFLOW_PAGES);
VCRAM_STAT_ATTR(pauses, VCRAM_STAT_PAUSES);
VCRAM_STAT_ATTR(foreign_folios, VCRAM_STAT_FOREIGN);
VCRAM_STAT_ATTR(relief_runs, VCRAM_STAT_RELIEF_RUNS);
VCRAM_STAT_ATTR(relief_nominate_requests, VCRAM_STAT_RELIEF_NOMINATES);
VCRAM_STAT_ATTR(relief_nominated_pages, VCRAM_STAT_RELIEF_NOMINATED);
VCRAM_STAT_ATTR(relief_bad_nominations, VCRAM_STAT_RELIEF_BAD);
VCRAM_STAT_ATTR(relief_pages_evacuated, VCRAM_STAT_RELIEF_EVACUATED);
VCRAM_STAT_ATTR(relief_pages_moved, VCRAM_STAT_RELIEF_MOVED);
VCRAM_STAT_ATTR(relief_busy, VCRAM_STAT_RELIEF_BUSY);
VCRAM_STAT_ATTR(relief_failed, VCRAM_STAT_RELIEF_FAILED);
VCRAM_STAT_ATTR(relief_gave_up, VCRAM_STAT_RELIEF_GAVE_UP);
VCRAM_STAT_ATTR(relief_retries, VCRAM_STAT_RELIEF_RETRIES);
VCRAM_STAT_ATTR(pm_freezes, VCRAM_STAT_PM_FREEZES);
VCRAM_STAT_ATTR(pm_restores, VCRAM_STAT_PM_RESTORES);

static ssize_t relief_active_show(struct device *dev,
				  struct device_attribute *attr, char *buf)
{
	struct vcram *vc = dev_to_vcram(dev);

	return sysfs_emit(buf, "%d\n",
			  test_bit(VCRAM_RELIEF_ACTIVE, &vc->relief_flags));
}
static DEVICE_ATTR_RO(relief_active);

static ssize_t relief_last_ms_show(struct device *dev,
				   struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n",
			  READ_ONCE(dev_to_vcram(dev)->relief_last_ms));
}
static DEVICE_ATTR_RO(relief_last_ms);

static ssize_t pages_pending_show(struct device *dev,
				  struct device_attribute *attr, char *buf)
{
	struct vcram *vc = dev_to_vcram(dev);

	return sysfs_emit(buf, "%ld\n", atomic_long_read(&vc->pages_pending));
}
static DEVICE_ATTR_RO(pages_pending);

static ssize_t requests_inflight_show(struct device *dev,
				      struct device_attribute *attr, char *buf)
{
	struct vcram *vc = dev_to_vcram(dev);

	return sysfs_emit(buf, "%d\n", atomic_read(&vc->inflight));
}
static DEVICE_ATTR_RO(requests_inflight);

static ssize_t pressure_level_show(struct device *dev,
				   struct device_attribute *attr, char *buf)
{
	struct vcram *vc = dev_to_vcram(dev);

	return sysfs_emit(buf, "%d\n", READ_ONCE(vc->level));
}
static DEVICE_ATTR_RO(pressure_level);

static ssize_t paused_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	struct vcram *vc = dev_to_vcram(dev);

	return sysfs_emit(buf, "%d\n", node_private_paused(vc->nid));
}
static DEVICE_ATTR_RO(paused);

static ssize_t node_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	return sysfs_emit(buf, "%d\n", dev_to_vcram(dev)->nid);
}
static DEVICE_ATTR_RO(node);

static ssize_t caps_show(struct device *dev, struct device_attribute *attr,
			 char *buf)
{
	return sysfs_emit(buf, "%#lx\n", dev_to_vcram(dev)->np.caps);
}
static DEVICE_ATTR_RO(caps);

static ssize_t last_event_seq_show(struct device *dev,
				   struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n",
			  READ_ONCE(dev_to_vcram(dev)->last_seq));
}
static DEVICE_ATTR_RO(last_event_seq);

static ssize_t online_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(dev_to_vcram(dev)->added));
}

static ssize_t online_store(struct device *dev, struct device_attribute *attr,
			    const char *buf, size_t count)
{
	bool on;
	int ret;

	ret = kstrtobool(buf, &on);
	if (ret)
		return ret;
	ret = vcram_mem_set_online(dev_to_vcram(dev), on);
	return ret ? ret : count;
}
static DEVICE_ATTR_RW(online);

static struct attribute *vcram_attrs[] = {
	&dev_attr_physical_capacity.attr,
	&dev_attr_physical_used.attr,
	&dev_attr_stored_pages.attr,
	&dev_attr_same_pages.attr,
	&dev_attr_compressed_bytes.attr,
	&dev_attr_overflow_pages.attr,
	&dev_attr_raw_pages.attr,
	&dev_attr_event_seq.attr,
	&dev_attr_window_base.attr,
	&dev_attr_window_size.attr,
	&dev_attr_low_watermark.attr,
	&dev_attr_high_watermark.attr,
	&dev_attr_status.attr,
	&dev_attr_device_pressure_level.attr,
	&dev_attr_max_ranges.attr,
	&dev_attr_granule.attr,
	&dev_attr_zero_pages.attr,
	&dev_attr_pages_deferred.attr,
	&dev_attr_pages_released.attr,
	&dev_attr_pages_zeroed_cpu.attr,
	&dev_attr_discards_sent.attr,
	&dev_attr_discard_pages.attr,
	&dev_attr_discards_failed.attr,
	&dev_attr_queue_full.attr,
	&dev_attr_commits_sent.attr,
	&dev_attr_commit_pages.attr,
	&dev_attr_commits_failed.attr,
	&dev_attr_commit_overflowed.attr,
	&dev_attr_commits_dropped.attr,
	&dev_attr_migrate_in.attr,
	&dev_attr_migrate_out.attr,
	&dev_attr_events_pressure.attr,
	&dev_attr_events_overflow.attr,
	&dev_attr_events_malformed.attr,
	&dev_attr_events_lost.attr,
	&dev_attr_events_missed.attr,
	&dev_attr_overflow_pages_reported.attr,
	&dev_attr_pauses.attr,
	&dev_attr_foreign_folios.attr,
	&dev_attr_relief_runs.attr,
	&dev_attr_relief_nominate_requests.attr,
	&dev_attr_relief_nominated_pages.attr,
	&dev_attr_relief_bad_nominations.attr,
	&dev_attr_relief_pages_evacuated.attr,
	&dev_attr_relief_pages_moved.attr,
	&dev_attr_relief_busy.attr,
	&dev_attr_relief_failed.attr,
	&dev_attr_relief_gave_up.attr,
	&dev_attr_relief_retries.attr,
	&dev_attr_pm_freezes.attr,
	&dev_attr_pm_restores.attr,
	&dev_attr_relief_active.attr,
	&dev_attr_relief_last_ms.attr,
	&dev_attr_pages_pending.attr,
	&dev_attr_requests_inflight.attr,
	&dev_attr_pressure_level.attr,
	&dev_attr_paused.attr,
	&dev_attr_node.attr,
	&dev_attr_caps.attr,
	&dev_attr_last_event_seq.attr,
	&dev_attr_online.attr,
	NULL
};

static const struct attribute_group vcram_group = {
	.name = "vcram",
	.attrs = vcram_attrs,
};

const struct attribute_group *vcram_groups[] = {
	&vcram_group,
	NULL
};
