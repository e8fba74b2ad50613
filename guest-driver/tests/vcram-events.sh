#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test, KTAP: events that arrive before the window is known, and
# event accounting.  Needs vcram-device --fault window-delay-ms=1500
# --fault early-events: the device queues OVERFLOW of the window's first
# page (valid), three malformed events (type 99, PRESSURE level 7, OVERFLOW
# one page past the window) and PRESSURE NORMAL (valid) as soon as it
# finds the window, and reports the window 1.5 s later.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

ktap_plan 6

# 1
vcram_bind
check "bound after the window came 1.5 s late, node $NODE private" \
	test -n "$VDEV" -a "$(cat /sys/devices/system/node/has_private_memory)" = "$NODE"

# 2
early() { [ "$(stat last_event_seq)" -ge 5 ]; }
wait_for 5 early
echo "# events_overflow $(stat events_overflow) events_pressure $(stat events_pressure) events_malformed $(stat events_malformed) last_event_seq $(stat last_event_seq)"
check "early OVERFLOW and PRESSURE handled once the window is known" \
	test "$(stat events_overflow)" -eq 1 -a "$(stat events_pressure)" -ge 1

# 3
check "the three malformed early events counted as malformed, no more" \
	test "$(stat events_malformed)" -eq 3

# 4
base=$(stat window_base)
sed 's/^/# overflows: /' "$DBG/overflows"
check "the early OVERFLOW names the window's first page" \
	grep -q " $(printf '%#x' "$base") 1\$" "$DBG/overflows"

# 5: a lost event is counted once (device's lost count, not again as a gap)
l0=$(stat events_lost)
m0=$(stat events_missed)
seq0=$(stat last_event_seq)
ev 1 0 "$((seq0 + 3))" 0 0 2 > "$DBG/inject_event"
echo "# events_lost $l0 -> $(stat events_lost), events_missed $m0 -> $(stat events_missed)"
check "2 events the device reports lost count as lost, not also as missed" \
	test "$(stat events_lost)" -eq "$((l0 + 2))" -a "$(stat events_missed)" -eq "$m0"

# 6
echo 0 > /sys/module/vcram/parameters/pause_level 2>/dev/null
prc=$?
check "pause_level=0 refused" test "$prc" -ne 0 -a "$(cat /sys/module/vcram/parameters/pause_level)" != 0
vcram_log
ktap_done
