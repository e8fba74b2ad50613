#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test, KTAP: the host removes the vcram device with QMP device_del
# while a task bound to the node holds pages there (tests/tests/driver.rs
# sends it when this script prints "device_del: ready", and checks that
# QEMU reports DEVICE_DELETED within 15 s).  The device sits behind a PCIe
# root port (scripts/launch); q35 hands its hotplug to ACPI, so the guest's
# acpiphp ejects it: the driver's remove() runs as on any removal.  Then:
# the driver is unbound and the PCI function gone, the node stays (paused,
# orphaned: nothing new lands there), the holder's data is intact, and the
# node's memory goes once its last page is free.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

# driver unbound and PCI function gone (the unbind comes first)
removed() { [ ! -e "$VDEV" ] && [ ! -e "$PCI" ]; }

ktap_plan 6
vcram_bind
# 1
check "bound, node $NODE private, device behind $(basename "$(dirname "$PCI")")" \
	test -n "$VDEV" -a "$(private)" = "$NODE" -a -n "$PCI"

vcram-membind "$NODE" 32 90 text >/tmp/h.out 2>&1 &
holder=$!
sleep 3
# and some freed pages on their way to the device (DISCARD)
vcram-membind "$NODE" 8 0 random >/dev/null 2>&1
echo "# requests_inflight $(stat requests_inflight) pages_pending $(stat pages_pending) discard_pages $(stat discard_pages)"
echo "# device_del: ready (holder $holder has 32 MiB on node $NODE)"
t0=$(date +%s)
wait_for 120 removed
echo "# device removed $(($(date +%s) - t0)) s after the ready line"
# 2
check "QMP device_del with pages in use: driver unbound, PCI function gone" removed
# 3
kill -0 "$holder" 2>/dev/null
alive=$?
rmmod vcram 2>/dev/null
rrc=$?
check "pages in use: node $NODE stays, module stays, the holder lives on" \
	test "$(private)" = "$NODE" -a "$rrc" -ne 0 -a "$alive" -eq 0
# 4-6
vcram_orphan_checks "$holder" /tmp/h.out
vcram_log 16
ktap_done
