# flow.rs (ratio and zero-page tests): put workloads on private node 1 and
# hold each while the host scans the window and reads the device's stats.
# FLOW_PATTERNS (space separated) and FLOW_MIB are set by the test on the
# lines above.  For each pattern P the console shows "FLOW-HELD-P" while the
# workload holds its buffer.
set -e
# wait_for
. /usr/share/vcram/ktap.sh
insmod /lib/modules/vcram/vcram.ko
for d in /sys/bus/virtio/devices/virtio*/vcram; do [ -d "$d" ] && V=$d; done
echo "flow: idle_physical_used=$(cat "$V/physical_used")"
for p in $FLOW_PATTERNS; do
	vcram-workload --node 1 --mib "$FLOW_MIB" --pattern "$p" --seed 1 \
		--hold-seconds "${FLOW_HOLD:-20}" --free munmap >/tmp/w.out 2>&1 &
	w=$!
	wait_for 300 grep -q "^# HOLD" /tmp/w.out || true
	echo "FLOW-HELD-$p"
	rc=0
	wait "$w" || rc=$?
	grep -E "^(not ok|# placement|# totals)" /tmp/w.out || true
	echo "flow: $p status $rc"
	[ "$rc" -eq 0 ]
done
echo "flow: done"
