#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test of vcram.ko's relief, KTAP: the relief tries again on its
# own after giving up, and the device names no more pages than the relief
# moves (NOMINATE's page limit, protocol 1.4).  Needs
#   vcram-device ... --physical-size 96M --fault nominate-empty=60;  --mem 1G
# The device answers its first 60 NOMINATE requests with no entry (as if its
# costly pages were all busy), so the first episode (10 rounds a second)
# gives up after 5 s without progress, with physical use above the low
# watermark and no new event to come: the level stays where it is.  The
# driver must try again by itself and bring physical use below LOW while
# the writer (256 MiB of incompressible data bound to {0,1}, beside a
# holder of 40 MiB bound to {1}) holds its data.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

show() {
	echo "# level $(stat device_pressure_level) paused $(stat paused) used $(($(stat physical_used) >> 20))/$(($(stat physical_capacity) >> 20)) MiB relief: active $(stat relief_active) runs $(stat relief_runs) gave_up $(stat relief_gave_up) retries $(stat relief_retries) nominations $(stat relief_nominate_requests) named $(stat relief_nominated_pages) evacuated $(stat relief_pages_evacuated) moved $(stat relief_pages_moved) bad $(stat relief_bad_nominations)"
}

gave_up() { [ "$(stat relief_gave_up)" -ge 1 ]; }
# The driver gives up above the low watermark only, and queues a retry then;
# sampling physical use here instead races with that retry on a slow kernel.
gave_up_above_low() { gave_up && dmesg | grep -q "no progress, given up; retry in"; }

ktap_plan 5
vcram_bind
# 1
check "vcram bound, relief on" test -d "$VDIR" -a "$(cat /sys/module/vcram/parameters/relief_rate)" -gt 0
show

vcram-membind "$NODE" 40 100 random >/tmp/holder.out 2>&1 &
holder=$!
sleep 3
echo "# writing 256 MiB of random data bound to {0,$NODE}"
vcram-membind "0,$NODE" 256 90 random >/tmp/writer.out 2>&1 &
writer=$!
wait_for 90 gave_up
show
# 2: the first episode found nothing to move and gave up above LOW
check "the relief gave up with physical use above the low watermark (a retry queued)" gave_up_above_low

# 3: no new event comes (the level stays); the relief must retry by itself
wait_for 60 below_low
relieved=$?
kill -0 "$writer" 2>/dev/null
alive=$?
show
check "it tried again on its own: physical use below the low watermark while the writer holds its data" \
	test "$relieved" -eq 0 -a "$alive" -eq 0 -a "$(stat relief_retries)" -ge 1

# 4: with the page limit, every page named was handed to the evacuation:
# the device named no more than each round's budget
check "the device named no more pages than the relief took on ($(stat relief_nominated_pages) <= $(stat relief_pages_evacuated))" \
	test "$(stat relief_nominated_pages)" -ge 1 -a \
	"$(stat relief_nominated_pages)" -le "$(stat relief_pages_evacuated)" -a \
	"$(stat relief_bad_nominations)" -eq 0

# 5
wait "$writer"
wrc=$?
wait "$holder"
hrc=$?
sed 's/^/# writer: /' /tmp/writer.out
sed 's/^/# holder: /' /tmp/holder.out
check "writer bound to {0,1} and holder bound to {1}: no failure, checksums intact (status $wrc, $hrc)" \
	sh -c "test $wrc -eq 0 -a $hrc -eq 0 && grep -q checksum_ok=1 /tmp/writer.out && grep -q checksum_ok=1 /tmp/holder.out && ! dmesg | grep -q -E 'invoked oom-killer|Killed process'"

show
echo 0 > "$VDIR/online"
rmmod vcram
vcram_log 20
ktap_done
