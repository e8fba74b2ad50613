# flow.rs (pressure test), device with --physical-size 96M: a holder keeps
# 32 MiB of text on node 1 (never OOM-killed), then an incompressible writer
# (480 MiB, far past the 96 MiB device, so that the pause always comes before
# it is done) goes past the high watermark.  The driver is told (events_pressure), pauses
# the node, the writer's next fault gets SIGBUS (status 3; no OOM kill), and
# the holder's checksums must still verify.
# wait_for
. /usr/share/vcram/ktap.sh
# pause at HIGH (pause_level=2), not at LOW (the default): the writer must get
# past the high watermark before the pause stops it
insmod /lib/modules/vcram/vcram.ko pause_level=2 || exit 1
for d in /sys/bus/virtio/devices/virtio*/vcram; do [ -d "$d" ] && V=$d; done
st() { cat "$V/$1" 2>/dev/null || echo -1; }
show() {
	echo "flow: $1_physical_used=$(st physical_used) $1_capacity=$(st physical_capacity) $1_level=$(st pressure_level) $1_paused=$(st paused) $1_pauses=$(st pauses) $1_events_pressure=$(st events_pressure) $1_events_overflow=$(st events_overflow)"
}
show idle
vcram-workload --node 1 --mib 32 --pattern text --seed 1 --oom-score-adj -1000 \
	--hold --json >/tmp/holder.json 2>/tmp/holder.err &
holder=$!
wait_for 120 grep -q HOLD /tmp/holder.err
sleep 3
show held
wrc=0
vcram-workload --node 1 --mib 480 --pattern random --seed 2 --oom-score-adj 1000 \
	--free munmap >/tmp/writer.out 2>&1 || wrc=$?
echo "flow: writer_status=$wrc"
grep -E "^(not ok|# SIGBUS|# totals)" /tmp/writer.out | sed 's/^/flow: writer: /'
show writer
kill -USR1 "$holder"
hrc=0
wait "$holder" || hrc=$?
echo "flow: holder_status=$hrc"
echo "FLOW-HOLDER-JSON $(cat /tmp/holder.json)"
show end
echo "flow: oom_kills=$(dmesg | grep -c -E 'invoked oom-killer|Killed process')"
dmesg | grep -E "vcram|Killed process" | tail -n 8 | sed 's/^/flow: dmesg: /'
echo "flow: done"
