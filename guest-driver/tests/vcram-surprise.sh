#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test, KTAP: a surprise removal with pages in use and DISCARDs in
# flight.  virtio-pci breaks the device's queues (virtio_break_device())
# when the device is gone before it removes it; QEMU's ACPI hotplug only
# does orderly removals (vcram-devdel.sh), so debugfs vcram/virtioN/break
# does that step and a sysfs PCI removal follows.  Needs vcram-device --fault drop-requests-after=1, so
# that DISCARDs are in flight when the queues break.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

ktap_plan 7

vcram_bind
# 1
check "bound, node $NODE private" test -n "$VDEV" -a "$(private)" = "$NODE"

vcram-membind "$NODE" 8 20 text >/tmp/h.out 2>&1 &
holder=$!
sleep 3
vcram-membind "$NODE" 16 0 text >/dev/null 2>&1
held() { [ "$(stat requests_inflight)" -gt 0 ] && [ "$(stat pages_pending)" -ge 4096 ]; }
wait_for 10 held
echo "# requests_inflight $(stat requests_inflight) pages_pending $(stat pages_pending)"
# 2
check "DISCARDs of 16 MiB in flight" held

# 3: the device is gone: its queues break, then the removal
echo 1 > "$DBG/break"
vcram-membind "$NODE" 4 0 text >/dev/null 2>&1
check "surprise removal with pages in use completes within 15 s" vcram_remove_pci

# 4
vcram-membind "$NODE" 4 0 zero >/dev/null 2>&1
nrc=$?
check "node $NODE stays, takes no new memory" test "$(private)" = "$NODE" -a "$nrc" -ne 0

# 5
wait "$holder"
hrc=$?
sed 's/^/# holder: /' /tmp/h.out | tail -2
check "holder's data intact" test "$hrc" -eq 0

# 6
wait_for 15 gone
check "memory removed once its last page is free (nothing leaked)" gone

# 7
rmmod vcram
check "module unloads" test $? -eq 0
vcram_log
ktap_done
