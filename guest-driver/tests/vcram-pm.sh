#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test, KTAP: the device is reset under the driver with pages on
# the node, and everything must flow again afterwards.
#
# The reset, the first of these the guest has:
# - S3: echo mem > /sys/power/state, the host wakes the guest with QMP
#   system_wakeup (the driver's freeze/restore); needs CONFIG_PM_SLEEP;
# - a PCI function reset: echo 1 > .../reset (reset_prepare/reset_done);
#   needs a reset method for the device;
# - debugfs vcram/virtioN/reset: the virtio core's freeze and restore steps
#   around the same driver callbacks (vcram_quiesce(), vcram_reinit()).
# The test guest's kernel has suspend (images/kernel.config: SUSPEND,
# PM_SLEEP, ACPI_SLEEP) and QEMU's q35 offers S3: the S3 path, checked
# through the driver's pm_freezes/pm_restores and the kernel's
# suspend_stats (tests/tests/driver.rs insists on it when the kernel has
# CONFIG_SUSPEND).  A kernel without it takes the PCI function reset (FLR of
# the device behind its PCIe root port), and without that the debugfs path.

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB

ktap_plan 7

vcram_bind
# 1
check "bound, node $NODE private" test -n "$VDEV"

vcram-membind "$NODE" 16 40 text >/tmp/h.out 2>&1 &
holder=$!
sleep 3
d0=$(stat discard_pages)
p0=$(stat events_pressure)
s0=$(stat last_event_seq)
f0=$(stat pm_freezes)
r0=$(stat pm_restores)
ok0=$(cat /sys/power/suspend_stats/success 2>/dev/null || echo 0)

# 2: the reset
if [ -e /sys/power/state ] && grep -qw mem /sys/power/state; then
	how="S3 suspend and resume"
	echo "# reset by $how: waiting for the host's system_wakeup"
	# QEMU resets the ICH9 LPC bridge on system_wakeup and SeaBIOS's resume
	# path does not set its ACPI base and enable (config 0x40-0x47) again,
	# while Linux restores only the 64-byte config header: after S3 the
	# ACPI PM I/O ports are gone and the S5 power-off at the end fails
	# (WARNING in do_exit, the guest never stops).  Seen with QEMU 11.1.3:
	# PMBASE 0x600 and ACPI_EN before, 0 after.  Put them back.
	LPC=/sys/bus/pci/devices/0000:00:1f.0/config
	dd if=$LPC of=/tmp/lpc.cfg bs=1 skip=64 count=8 2>/dev/null
	echo mem > /sys/power/state
	rrc=$?
	echo "# LPC 0x40-0x47 before $(od -An -tx1 /tmp/lpc.cfg), after resume $(dd if=$LPC bs=1 skip=64 count=8 2>/dev/null | od -An -tx1)"
	dd if=/tmp/lpc.cfg of=$LPC bs=1 seek=64 count=8 conv=notrunc 2>/dev/null
	echo "# resumed: pm_freezes $f0 -> $(stat pm_freezes), pm_restores $r0 -> $(stat pm_restores), suspend_stats/success $ok0 -> $(cat /sys/power/suspend_stats/success 2>/dev/null)"
elif [ -w "$PCI/reset" ]; then
	how="PCI function reset"
	echo "# no suspend in this kernel; reset by $how, method $(cat "$PCI/reset_method")"
	echo 1 > "$PCI/reset"
	rrc=$?
else
	how="freeze and restore through debugfs"
	echo "# no suspend in this kernel, no reset method for $PCI; reset by $how"
	echo 1 > "$DBG/reset"
	rrc=$?
fi
check "$how with 16 MiB on node $NODE" test "$rrc" -eq 0
# 3: on the S3 path, the driver's own freeze and restore ran, once each
# (not a reset fallback), and the kernel counts a successful suspend
if [ "$how" = "S3 suspend and resume" ]; then
	check "S3: the driver's freeze and restore ran once each, suspend succeeded" \
		test "$(stat pm_freezes)" -eq "$((f0 + 1))" -a \
		"$(stat pm_restores)" -eq "$((r0 + 1))" -a \
		"$(cat /sys/power/suspend_stats/success)" -eq "$((ok0 + 1))"
else
	skip "S3: the driver's freeze and restore ran" "no suspend in this kernel"
fi

# 4: DISCARDs flow after the reset
vcram-membind "$NODE" 16 0 random >/dev/null 2>&1
drained() { [ "$(stat pages_pending)" -eq 0 ] && [ "$(stat requests_inflight)" -eq 0 ]; }
wait_for 10 drained
echo "# discard_pages $d0 -> $(stat discard_pages), pages_pending $(stat pages_pending), requests_inflight $(stat requests_inflight), pages_zeroed_cpu $(stat pages_zeroed_cpu)"
check "DISCARDs are sent and answered after the reset" \
	test "$(stat discard_pages)" -ge "$((d0 + 4096))" -a "$(stat pages_pending)" -eq 0

# 5: events flow after the reset: the device's pressure events come
# through the eventq again (a small capacity: 96M; 72 MiB of random data,
# held while the device scans it,
# crosses the low watermark, 72 MiB)
vcram-membind "$NODE" 72 10 random slow >/dev/null 2>&1 &
w=$!
evs() { [ "$(stat events_pressure)" -gt "$p0" ]; }
wait_for 30 evs
echo "# events_pressure $p0 -> $(stat events_pressure), last_event_seq $s0 -> $(stat last_event_seq), device_pressure_level $(stat device_pressure_level)"
check "pressure events arrive on the eventq after the reset" evs
wait "$w"

# 6
wait "$holder"
hrc=$?
sed 's/^/# holder: /' /tmp/h.out | tail -3
check "data on node $NODE intact across the reset" test "$hrc" -eq 0

# 7
sleep 2
echo 0 > "$VDIR/online"
check "memory removed afterwards (nothing kept)" test "$(stat online)" = 0
vcram_log
ktap_done
