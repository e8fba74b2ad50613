#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest pressure test of vcram.ko, KTAP output.  Needs a device with a
# small physical capacity, e.g.
#   vcram-device ... --window-size 1G --physical-size 96M
# A holder keeps compressible data on the node; a writer fills the node
# with incompressible data past the high watermark.  Expected: PRESSURE
# events, the driver pauses the node (node_private_set_paused()), the
# writer's next fault on the node gets SIGBUS (no OOM kill), the holder's
# data stays intact, and once the writer's memory is discarded the pressure
# clears and placement resumes.  Then, with pausing off, a writer past the
# capacity gets OVERFLOW events reported.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

show() {
	echo "# level $(stat pressure_level) paused $(stat paused) pauses $(stat pauses) physical_used $(stat physical_used)/$(stat physical_capacity) stored $(stat stored_pages) raw $(stat raw_pages) overflow $(stat overflow_pages) ev_pressure $(stat events_pressure) ev_overflow $(stat events_overflow) pending $(stat pages_pending)"
}

ktap_plan 8
vcram_bind
check "vcram bound" test -d "$VDIR"
idle=$(stat physical_used)
show

vcram-membind "$NODE" 32 60 text >/tmp/holder.out 2>&1 &
holder=$!
sleep 3
cap_mb=$(($(stat physical_capacity) >> 20))
big=$((cap_mb * 2))
echo "# writing ${big} MiB of random data to node $NODE, 1 MiB per 20 ms"
vcram-membind "$NODE" "$big" 5 random slow >/tmp/writer.out 2>&1
wrc=$?
echo "# writer exit status $wrc"
sed 's/^/# writer: /' /tmp/writer.out
show
check "high pressure paused the node" test "$(stat pauses)" -ge 1 -a "$(stat events_pressure)" -ge 2
# 135: killed by SIGBUS (7)
check "writer stopped by SIGBUS on its next page (status $wrc)" test "$wrc" -eq 135
check "no OOM kill" sh -c '! dmesg | grep -q -E "invoked oom-killer|Killed process"'
# Overflow: with pausing and relief off (pause_level=3, relief_rate=0), write
# past the capacity: the pages stay on the node, reported as OVERFLOW.
wait_for 15 unpaused
P=/sys/module/vcram/parameters/pause_level
R=/sys/module/vcram/parameters/relief_rate
old_p=$(cat "$P")
old_r=$(cat "$R")
echo 3 > "$P"
echo 0 > "$R"
vcram-membind "$NODE" "$big" 4 random >/dev/null 2>&1
orc=$?
echo "$old_p" > "$P"
echo "$old_r" > "$R"
echo "# writer without pausing: status $orc; recent overflows (seq addr pages): $(wc -l < "$DBG/overflows" 2>/dev/null)"
head -n 3 "$DBG/overflows" 2>/dev/null | sed 's/^/#   /'
show
check "without pausing, writing past the capacity is reported as OVERFLOW" \
	test "$orc" -eq 0 -a "$(stat events_overflow)" -ge 1 \
	-a "$(stat overflow_pages_reported)" -ge 1

wait "$holder"
hrc=$?
sed 's/^/# holder: /' /tmp/holder.out
check "holder's data intact" test "$hrc" -eq 0

unpaused_and_idle() { unpaused && [ "$(stat physical_used)" = "$idle" ]; }
wait_for 15 unpaused_and_idle
show
check "pressure cleared, node given back, device back at idle use" \
	test "$(stat paused)" = 0 -a "$(stat pressure_level)" = 0 \
	-a "$(stat physical_used)" = "$idle" -a "$(stat pages_pending)" = 0

echo 0 > "$VDIR/online"
# the status of the write to sysfs is the point
# shellcheck disable=SC2320
r1=$?
rmmod vcram
check "remove and unload" test "$r1" -eq 0 -a $? -eq 0
vcram_log 25
ktap_done
