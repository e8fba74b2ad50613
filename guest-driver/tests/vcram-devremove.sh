#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test: the vcram PCI device goes away (sysfs PCI remove), KTAP.
# Without pages in use the memory goes with it; with pages in use the node
# stays, paused (the module stays loaded, freed pages are zeroed by the
# CPU), until its last page is free: then its memory goes too.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

ktap_plan 7
vcram_bind
check "bound, node $NODE private" test -n "$PCI" -a "$(private)" = "$NODE"

echo 1 > "$PCI/remove"
# (the memory goes from the driver's orphan queue, not in remove())
wait_for 15 gone
check "device removed without pages in use: memory gone" gone
rmmod vcram
check "module unloads" test $? -eq 0

echo 1 > /sys/bus/pci/rescan
sleep 1
vcram_bind
check "device back after rescan, node $NODE private again" \
	test -n "$PCI" -a "$(private)" = "$NODE"

vcram-membind "$NODE" 32 8 text >/tmp/h.out 2>&1 &
holder=$!
sleep 3
echo 1 > "$PCI/remove"
rmmod vcram 2>/dev/null
rrc=$?
check "device removed with pages in use: node stays, module stays" \
	test "$(private)" = "$NODE" -a "$rrc" -ne 0
vcram-membind "$NODE" 16 0 random >/dev/null 2>&1
arc=$?
wait "$holder"
hrc=$?
check "holder's data intact, the orphaned node takes no new memory" \
	test "$hrc" -eq 0 -a "$arc" -ne 0
wait_for 15 gone
rmmod vcram
check "memory removed once its last page is free, module unloads" \
	test $? -eq 0 -a -z "$(private)"
vcram_log 8
ktap_done
