// SPDX-License-Identifier: GPL-2.0
/*
 * vcram: fault injection for tests, in debugfs (vcram/virtioN/):
 *
 *   inject_event   write: the bytes are handled as an event the device
 *                  delivered with that used length (validation included)
 *   fail_requests  the next N request completions are treated as failed
 *                  (DISCARD folios are zeroed on the CPU)
 *   overflows      the most recent OVERFLOW events: seq, first address,
 *                  pages (pages the device could not store)
 *   reset          write 1: stop the device, reset it and set it up again
 *                  the way suspend and resume do (freeze and restore)
 *   break          write 1: virtio_break_device(), as virtio-pci does on a
 *                  surprise removal before it removes the device (nothing
 *                  completes any more; remove the PCI device next)
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kstrtox.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>
#include <linux/virtio.h>

#include "vcram.h"

static struct dentry *vcram_debugfs_root;

static ssize_t vcram_inject_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	struct vcram *vc = file->private_data;
	u8 buf[2 * sizeof(struct vcram_event)];
	size_t len = min(count, sizeof(buf));

	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	vcram_event_inject(vc, buf, count);
	return count;
}

static const struct file_operations vcram_inject_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = vcram_inject_write,
};

static ssize_t vcram_reset_write(struct file *file, const char __user *ubuf,
				 size_t count, loff_t *ppos)
{
	struct vcram *vc = file->private_data;
	bool on;
	int ret;

	ret = kstrtobool_from_user(ubuf, count, &on);
	if (ret)
		return ret;
	if (!on)
		return count;
	ret = vcram_test_reset(vc->vdev);
	return ret ? ret : count;
}

static const struct file_operations vcram_reset_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = vcram_reset_write,
};

static ssize_t vcram_break_write(struct file *file, const char __user *ubuf,
				 size_t count, loff_t *ppos)
{
	struct vcram *vc = file->private_data;
	bool on;
	int ret;

	ret = kstrtobool_from_user(ubuf, count, &on);
	if (ret)
		return ret;
	if (on) {
		dev_warn(&vc->vdev->dev, "debugfs: virtqueues broken\n");
		virtio_break_device(vc->vdev);
	}
	return count;
}

static const struct file_operations vcram_break_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = vcram_break_write,
};

static int vcram_overflows_show(struct seq_file *m, void *v)
{
	struct vcram *vc = m->private;
	unsigned int i, first;

	mutex_lock(&vc->ev_lock);
	first = vc->nr_ovf > VCRAM_OVERFLOW_LOG ?
		vc->nr_ovf - VCRAM_OVERFLOW_LOG : 0;
	for (i = first; i < vc->nr_ovf; i++) {
		const struct vcram_overflow *o = &vc->ovf[i % VCRAM_OVERFLOW_LOG];

		seq_printf(m, "%llu %#llx %u\n", o->seq, o->addr, o->npages);
	}
	mutex_unlock(&vc->ev_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vcram_overflows);

void vcram_debugfs_module_init(void)
{
	vcram_debugfs_root = debugfs_create_dir(KBUILD_MODNAME, NULL);
}

void vcram_debugfs_module_exit(void)
{
	debugfs_remove_recursive(vcram_debugfs_root);
}

void vcram_debugfs_init(struct vcram *vc)
{
	vc->debugfs = debugfs_create_dir(dev_name(&vc->vdev->dev),
					 vcram_debugfs_root);
	debugfs_create_file("inject_event", 0200, vc->debugfs, vc,
			    &vcram_inject_fops);
	debugfs_create_u32("fail_requests", 0600, vc->debugfs,
			   &vc->fail_requests);
	debugfs_create_file("overflows", 0444, vc->debugfs, vc,
			    &vcram_overflows_fops);
	debugfs_create_file("reset", 0200, vc->debugfs, vc, &vcram_reset_fops);
	debugfs_create_file("break", 0200, vc->debugfs, vc, &vcram_break_fops);
}

void vcram_debugfs_exit(struct vcram *vc)
{
	debugfs_remove_recursive(vc->debugfs);
	vc->debugfs = NULL;
}
