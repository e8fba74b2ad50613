#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test, KTAP: the device is reset under the driver with pages on
# the node, and everything must flow again afterwards.
#
# S3 (echo mem > /sys/power/state, QMP system_wakeup) needs CONFIG_PM_SLEEP
# in the guest kernel; without it (see /sys/power) this suite resets the
# device with a PCI function reset (echo 1 > .../reset), which runs the
# driver's reset_prepare/reset_done: the same quiesce and re-init as
# freeze/restore (vcram_quiesce() and vcram_reinit() in vcram_main.c).

KTAP_LIB=/usr/share/vcram/ktap.sh
[ -r $KTAP_LIB ] || { echo "KTAP version 1"; echo "Bail out! $KTAP_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/ktap.sh
. $KTAP_LIB

KO=${VCRAM_KO:-/lib/modules/vcram/vcram.ko}
NODE=${VCRAM_NODE:-1}

stat() {
	cat "$VDIR/$1" 2>/dev/null || echo -1
}

ktap_plan 6

insmod "$KO"
VDEV=
for d in /sys/bus/virtio/drivers/vcram/virtio*; do
	[ -e "$d" ] && VDEV=$d
done
VDIR=$VDEV/vcram
PCI=$(readlink -f "$VDEV/..")
# 1
check "bound, node $NODE private" test -n "$VDEV"

vcram-membind "$NODE" 16 40 text >/tmp/h.out 2>&1 &
holder=$!
sleep 3
d0=$(stat discard_pages)
p0=$(stat events_pressure)
s0=$(stat last_event_seq)

# 2: the reset
if [ -e /sys/power/state ] && grep -qw mem /sys/power/state; then
	how="S3 suspend and resume"
	echo "# reset by $how: waiting for the host's system_wakeup"
	echo mem > /sys/power/state
	rrc=$?
else
	how="PCI function reset"
	echo "# no suspend in this kernel (/sys/power/state: $(cat /sys/power/state 2>&1)); reset by $how, method $(cat "$PCI/reset_method" 2>&1)"
	echo 1 > "$PCI/reset"
	rrc=$?
fi
check "$how with 16 MiB on node $NODE" test "$rrc" -eq 0

# 3: DISCARDs flow after the reset
vcram-membind "$NODE" 16 0 random >/dev/null 2>&1
drained() { [ "$(stat pages_pending)" -eq 0 ] && [ "$(stat requests_inflight)" -eq 0 ]; }
wait_for 10 drained
echo "# discard_pages $d0 -> $(stat discard_pages), pages_pending $(stat pages_pending), requests_inflight $(stat requests_inflight), pages_zeroed_cpu $(stat pages_zeroed_cpu)"
check "DISCARDs are sent and answered after the reset" \
	test "$(stat discard_pages)" -ge "$((d0 + 4096))" -a "$(stat pages_pending)" -eq 0

# 4: events flow after the reset: the device's pressure events come
# through the eventq again (a small capacity: 96M; 48 MiB of random data
# crosses the low watermark)
vcram-membind "$NODE" 56 0 random >/dev/null 2>&1 &
w=$!
evs() { [ "$(stat events_pressure)" -gt "$p0" ]; }
wait_for 30 evs
echo "# events_pressure $p0 -> $(stat events_pressure), last_event_seq $s0 -> $(stat last_event_seq), device_pressure_level $(stat device_pressure_level)"
check "pressure events arrive on the eventq after the reset" evs
wait "$w"

# 5
wait "$holder"
hrc=$?
sed 's/^/# holder: /' /tmp/h.out | tail -3
check "data on node $NODE intact across the reset" test "$hrc" -eq 0

# 6
sleep 2
echo 0 > "$VDIR/online"
check "memory removed afterwards (nothing kept)" test "$(stat online)" = 0
dmesg | grep vcram | sed 's/^/# /' | tail -12
ktap_done
