# flow.rs (free test): text on private node 1, held while the host scans,
# then freed (munmap -> free callback -> DISCARD); the driver's counters
# are printed before the guest powers off.
set -e
# wait_for
. /usr/share/vcram/ktap.sh
insmod /lib/modules/vcram/vcram.ko
for d in /sys/bus/virtio/devices/virtio*/vcram; do [ -d "$d" ] && V=$d; done
show() {
	for f in discards_sent discard_pages pages_pending physical_used stored_pages; do
		if [ -r "$V/$f" ]; then echo "flow: $1_$f=$(cat "$V/$f")"; fi
	done
}
show before
vcram-workload --node 1 --mib "$FLOW_MIB" --pattern text --seed 1 \
	--hold-seconds "${FLOW_HOLD:-15}" --free munmap
# The free path may complete asynchronously: wait until nothing is pending.
nothing_pending() { [ "$(cat "$V/pages_pending" 2>/dev/null || echo 0)" = 0 ]; }
wait_for 20 nothing_pending || true
sleep 2
show after
echo "flow: done"
