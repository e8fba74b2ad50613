#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test of vcram.ko's device-guided relief, KTAP output.  Needs a
# device with a small physical capacity and a guest with room on node 0:
#   vcram-device ... --window-size 1G --physical-size 96M;  --mem 1G
# A holder bound to {1} only keeps 40 MiB of incompressible data on the
# node; a writer of 256 MiB of incompressible data bound to {0,1} pushes
# physical use past the high watermark.  Expected: the driver asks the
# device for the pages that cost it most (NOMINATE) and moves them to node 0
# (node_private_evacuate()) until physical use is below the low watermark;
# the writer sees no failure, nobody gets SIGBUS or an OOM kill, every
# checksum holds, the holder's pages are moved off the node, and once the
# node is no longer paused a new task bound to {1} faults in fine.
# VCRAM_RELIEF_RATE (default: the module's) sets the relief_rate parameter
# (pages per second; 0: no relief).

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

show() {
	echo "# level $(stat device_pressure_level) paused $(stat paused) used $(($(stat physical_used) >> 20))/$(($(stat physical_capacity) >> 20)) MiB raw $(stat raw_pages) overflow $(stat overflow_pages) relief: runs $(stat relief_runs) nominations $(stat relief_nominate_requests)/$(stat relief_nominated_pages) moved $(stat relief_pages_moved) busy $(stat relief_busy) failed $(stat relief_failed) last_ms $(stat relief_last_ms) migrate_out $(stat migrate_out)"
}

ktap_plan 9
if [ -n "$VCRAM_RELIEF_RATE" ]; then
	vcram_bind relief_rate="$VCRAM_RELIEF_RATE"
else
	vcram_bind
fi
check "vcram bound" test -d "$VDIR"
echo "# relief_rate $(cat /sys/module/vcram/parameters/relief_rate 2>/dev/null || echo none) pause_level $(cat /sys/module/vcram/parameters/pause_level)"
show

# The highest level seen (sampled every 100 ms).
(
	max=0
	while :; do
		l=$(stat device_pressure_level)
		[ "$l" -gt "$max" ] && max=$l && echo "$max" >/tmp/maxlevel
		sleep 0.1 2>/dev/null || sleep 1
	done
) &
sampler=$!
echo 0 >/tmp/maxlevel

vcram-membind "$NODE" 40 60 random >/tmp/holder.out 2>&1 &
holder=$!
sleep 3
show
echo "# writing 256 MiB of random data bound to {0,$NODE}"
vcram-membind "0,$NODE" 256 40 random >/tmp/writer.out 2>&1 &
writer=$!
sleep 2
show
# while both still hold all their data
wait_for 25 below_low
relieved=$?
kill -0 "$writer" 2>/dev/null
alive=$?
show
wait "$writer"
wrc=$?
echo "# writer exit status $wrc"
sed 's/^/# writer: /' /tmp/writer.out
kill "$sampler"
echo "# highest level seen: $(cat /tmp/maxlevel)"
check "physical use went past the high watermark" test "$(cat /tmp/maxlevel)" -ge 2
check "physical use back below the low watermark while the writer holds its data" \
	test "$relieved" -eq 0 -a "$alive" -eq 0
check "writer bound to {0,1}: no failure, checksums intact (status $wrc)" \
	sh -c "test $wrc -eq 0 && grep -q checksum_ok=1 /tmp/writer.out"
check "no SIGBUS, no OOM kill" \
	sh -c '! dmesg | grep -q -E "invoked oom-killer|Killed process" && ! grep -q -i "bus error" /tmp/writer.out /tmp/holder.out'

wait "$holder"
hrc=$?
sed 's/^/# holder: /' /tmp/holder.out
check "holder bound to {1}: data intact (status $hrc)" \
	sh -c "test $hrc -eq 0 && grep -q checksum_ok=1 /tmp/holder.out"
moved=$(sed -n 's/.*end_node0=\([0-9]*\).*/\1/p' /tmp/holder.out)
check "holder bound to {1}: pages moved off the node (${moved:-0} on node 0)" \
	test "${moved:-0}" -gt 0
show
check "relief counted: nominations asked for, pages moved" \
	test "$(stat relief_nominate_requests)" -ge 1 -a "$(stat relief_pages_moved)" -ge 1

# Placement resumes at NORMAL: a new task bound to {1} faults in fine.
wait_for 30 unpaused
vcram-membind "$NODE" 8 0 random >/tmp/late.out 2>&1
lrc=$?
sed 's/^/# late: /' /tmp/late.out
check "after the relief, a new task bound to {1} is placed on the node (status $lrc)" \
	test "$lrc" -eq 0

show
echo 0 > "$VDIR/online"
rmmod vcram
vcram_log 20
ktap_done
