#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test, KTAP: the device stops answering (vcram-device
# --fault drop-requests-after=1: the probe's RESET is answered, every later
# request is taken off the queue and never answered), then the PCI device
# is removed with pages in use.  The removal must finish within 15 s, the
# folios of the unanswered DISCARDs must come back (zeroed by the CPU), the
# orphaned node must take no new memory, and once its last user is gone its
# memory must go away: no page lost, none leaked.

KTAP_LIB=/usr/share/vcram/ktap.sh
[ -r $KTAP_LIB ] || { echo "KTAP version 1"; echo "Bail out! $KTAP_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/ktap.sh
. $KTAP_LIB

KO=${VCRAM_KO:-/lib/modules/vcram/vcram.ko}
NODE=${VCRAM_NODE:-1}

private() {
	cat /sys/devices/system/node/has_private_memory 2>/dev/null
}

stat() {
	cat "$VDIR/$1" 2>/dev/null || echo -1
}

ktap_plan 9

insmod "$KO"
VDEV=
for d in /sys/bus/virtio/drivers/vcram/virtio*; do
	[ -e "$d" ] && VDEV=$d
done
VDIR=$VDEV/vcram
PCI=$(readlink -f "$VDEV/..")
# 1
check "bound, node $NODE private" test -n "$VDEV" -a "$(private)" = "$NODE"

# 2: frees whose DISCARDs the device never answers
vcram-membind "$NODE" 16 0 text >/dev/null 2>&1
unanswered() { [ "$(stat requests_inflight)" -gt 0 ] && [ "$(stat pages_pending)" -ge 4096 ]; }
wait_for 10 unanswered
echo "# requests_inflight $(stat requests_inflight) pages_pending $(stat pages_pending) discards_sent $(stat discards_sent)"
check "DISCARDs of 16 MiB freed stay unanswered" unanswered

# 3: the PCI device goes away with pages in use; the removal returns
vcram-membind "$NODE" 8 25 text >/tmp/h.out 2>&1 &
holder=$!
sleep 3
t0=$(date +%s)
(echo 1 > "$PCI/remove"; echo done > /tmp/removed) &
removed() { [ -e /tmp/removed ]; }
wait_for 15 removed
t1=$(date +%s)
echo "# removal took $((t1 - t0)) s (limit 15)"
check "device removal with unanswered requests completes within 15 s" removed

# 4
rmmod vcram 2>/dev/null
rrc=$?
check "pages in use: node $NODE stays, module stays" \
	test "$(private)" = "$NODE" -a "$rrc" -ne 0

# 5: nothing new lands on a node with no device behind it
vcram-membind "$NODE" 4 0 zero >/tmp/new.out 2>&1
nrc=$?
sed 's/^/# new: /' /tmp/new.out | tail -3
check "orphaned node takes no new memory" test "$nrc" -ne 0

# 6
wait "$holder"
hrc=$?
sed 's/^/# holder: /' /tmp/h.out | tail -3
check "holder's data intact" test "$hrc" -eq 0

# 7: once the last page is free, the memory goes: nothing leaked
gone() { [ -z "$(private)" ]; }
wait_for 15 gone
grep -h . /sys/devices/system/node/node"$NODE"/meminfo 2>/dev/null | grep -E 'MemTotal|MemFree' | sed 's/^/# /'
check "node $NODE's memory removed once its last page is free" gone

# 8
rmmod vcram
check "module unloads" test $? -eq 0

# 9
echo 1 > /sys/bus/pci/rescan
sleep 1
insmod "$KO"
check "device back after rescan, node $NODE private again" test "$(private)" = "$NODE"
dmesg | grep vcram | sed 's/^/# /' | tail -12
ktap_done
