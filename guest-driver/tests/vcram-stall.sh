#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test, KTAP: the device stops answering (vcram-device
# --fault drop-requests-after=1: the probe's RESET is answered, every later
# request is taken off the queue and never answered), then the PCI device
# is removed: first with no page in use but the freed ones the device did
# not discard, then with pages in use.  Each removal must finish within
# 15 s, the folios of the unanswered DISCARDs must come back (zeroed by the
# CPU), the orphaned node must take no new memory, and once its last user
# is gone its memory must go away: no page lost, none leaked.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

ktap_plan 11

# unanswered MIB: free MIB on the node, wait until the device holds their
# DISCARDs without answering
unanswered() {
	vcram-membind "$NODE" "$1" 0 text >/dev/null 2>&1
	held() { [ "$(stat requests_inflight)" -gt 0 ] && [ "$(stat pages_pending)" -ge $(($1 * 256)) ]; }
	wait_for 10 held "$1"
	echo "# requests_inflight $(stat requests_inflight) pages_pending $(stat pages_pending) discards_sent $(stat discards_sent)"
	held "$1"
}

# --- the device stops answering, no page in use, only kept ones ---
vcram_bind
# 1
check "bound, node $NODE private" test -n "$VDEV" -a "$(private)" = "$NODE"
# 2
check "DISCARDs of 16 MiB freed stay unanswered" unanswered 16
# 3: offlining waits for every kept folio: they must come back without
# the device
check "device removal with only unanswered DISCARDs completes within 15 s" vcram_remove_pci
# 4: the memory could only go if every page came back
wait_for 15 gone
check "node $NODE's memory went with the device (no page kept)" gone
# 5
rmmod vcram 2>/dev/null
check "module unloads" test $? -eq 0

# --- again, with pages in use ---
echo 1 > /sys/bus/pci/rescan
sleep 1
vcram_bind
# 6: the device answers nothing now, not even the probe's RESET
check "device back after rescan, node $NODE private again" test "$(private)" = "$NODE"
vcram-membind "$NODE" 8 25 text >/tmp/h.out 2>&1 &
holder=$!
sleep 3
unanswered 4 >/dev/null
# 7
check "device removal with pages in use and unanswered DISCARDs completes within 15 s" vcram_remove_pci
# 8
rmmod vcram 2>/dev/null
rrc=$?
check "pages in use: node $NODE stays, module stays" \
	test "$(private)" = "$NODE" -a "$rrc" -ne 0
# 9-11: nothing new lands on a node with no device behind it, the
# holder's data is intact, and once the last page is free the memory goes:
# nothing leaked
vcram_orphan_checks "$holder" /tmp/h.out
vcram_log 16
ktap_done
