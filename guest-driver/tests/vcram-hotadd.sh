#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test, KTAP: the host removes the vcram device with QMP device_del
# when this script prints "hotadd: remove now", and adds it again (a new
# chardev to the same vcram-device, QMP device_add) when it prints "hotadd:
# add now" (tests/tests/driver.rs).  An ACPI hot-add probes the driver under
# the device hotplug lock, which adding memory takes: the probe waits for
# the memory 15 s at most, then goes on, and the memory comes online in the
# background once the hot-add is done.  Before, the probe blocked for good
# and with it every later ACPI hotplug.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

# driver unbound and PCI function gone
removed() { [ ! -e "$VDEV" ] && [ ! -e "$PCI" ]; }
# bound again, and the node's memory online
back() { vcram_find; [ -n "$VDEV" ] && [ "$(stat online)" = 1 ] && [ "$(private)" = "$NODE" ]; }

ktap_plan 5
vcram_bind
# 1
check "bound, node $NODE private, device behind $(basename "$(dirname "$PCI")")" \
	test -n "$VDEV" -a "$(private)" = "$NODE" -a -n "$PCI"
echo "# hotadd: remove now"
wait_for 60 removed
wait_for 60 gone
# 2
check "QMP device_del: driver unbound, node $NODE's memory removed" sh -c "[ ! -e '$VDEV' ] && [ -z \"\$(cat /sys/devices/system/node/has_private_memory)\" ]"
t0=$(date +%s)
echo "# hotadd: add now"
wait_for 120 back
echo "# bound again after $(($(date +%s) - t0)) s: $VDEV, online $(stat online)"
# 3
check "QMP device_add: the driver binds again and node $NODE's memory comes online" back
# 4
vcram-membind "$NODE" 16 0 text >/tmp/m.out 2>&1
mrc=$?
sed 's/^/# /' /tmp/m.out | tail -3
check "a task bound to node $NODE gets its pages there, data intact (status $mrc)" \
	sh -c "test $mrc -eq 0 && grep -q checksum_ok=1 /tmp/m.out"
# 5 the hot-add took the background path, and nothing hung or broke
reports=$(dmesg | grep -cE "blocked for more than|possible circular locking|BUG:|WARNING:")
check "the probe went on without the memory (in the background after the hot-add), no hang or lock report" \
	sh -c "dmesg | grep -q 'comes online in the background' && test $reports -eq 0"
vcram_log 12
ktap_done
