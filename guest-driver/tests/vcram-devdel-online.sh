#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test, KTAP: the host removes the vcram device with QMP device_del
# while tasks keep adding and removing the node's memory through the
# driver's sysfs "online" attribute (tests/tests/driver.rs sends device_del
# when this script prints "device_del: ready" and checks that QEMU reports
# DEVICE_DELETED within 15 s).
#
# The ACPI eject holds the device hotplug lock while it unbinds the driver,
# and unbinding waits for the writers of the driver's attributes; adding and
# offlining memory take that lock too.  A writer caught in between must not
# hold the removal up (a deadlock, before the driver stopped being waited
# for), and whichever state it leaves the memory in, the memory goes.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

# driver unbound and PCI function gone (the unbind comes first)
removed() { [ ! -e "$VDEV" ] && [ ! -e "$PCI" ]; }
WRITERS=6
# rounds: online=0/online=1 rounds of all writers so far
rounds() { cat /tmp/toggles.* 2>/dev/null | awk '{ n += $1 } END { print n + 0 }'; }
rounds_at_least() { [ "$(rounds)" -ge "$1" ]; }
# finished: how many writers returned
finished() { find /tmp -maxdepth 1 -name 'toggler.*.done' | wc -l; }
all_finished() { [ "$(finished)" -eq $WRITERS ]; }

ktap_plan 5
vcram_bind
# 1
check "bound, node $NODE private, device behind $(basename "$(dirname "$PCI")")" \
	test -n "$VDEV" -a "$(private)" = "$NODE" -a -n "$PCI"

# The writers: online=0, online=1, as fast as they go, until the attribute
# is gone.  Several, so that some wait inside a write while another one
# adds or offlines when the eject begins.  /tmp/toggles.I counts writer I's
# rounds, /tmp/toggler.I.done marks its end.
rm -f /tmp/toggles.* /tmp/toggler.*.done
i=0
while [ $i -lt $WRITERS ]; do
	(
		n=0
		while [ -e "$VDIR/online" ]; do
			echo 0 2>/dev/null >"$VDIR/online"
			echo 1 2>/dev/null >"$VDIR/online"
			n=$((n + 1))
			echo $n >/tmp/toggles.$i
		done
		echo "$n" >/tmp/toggler.$i.done
	) &
	i=$((i + 1))
done
wait_for 60 rounds_at_least 6
echo "# $(rounds) rounds of online=0/online=1 so far by $WRITERS writers (online: $(stat online))"
echo "# device_del: ready"
t0=$(date +%s)
wait_for 120 removed
echo "# device removed $(($(date +%s) - t0)) s after the ready line"
# 2
check "QMP device_del while memory is added and removed: driver unbound, PCI function gone" removed
# 3
wait_for 30 all_finished
check "every online writer returned ($(finished) of $WRITERS, $(rounds) rounds)" all_finished
# 4
wait_for 15 gone
rmmod vcram 2>/dev/null
mrc=$?
check "node $NODE's memory removed, module unloads" test "$mrc" -eq 0 -a -z "$(private)"
# 5 (lockdep and the hung task detector report only on kernels built with them)
reports=$(dmesg | grep -cE "possible circular locking|possible recursive locking|blocked for more than|BUG:|WARNING:")
check "no lock-order, hung-task, BUG or WARNING report in the kernel log" test "$reports" -eq 0
dmesg | grep -E -A30 "possible circular locking|blocked for more than" | sed 's/^/# /' | head -60
vcram_log 16
ktap_done
