# flow.rs (isolation test): stress-ng and memory hogs without a bind policy
# that includes node 1 must leave private node 1 empty; a
# numactl --membind=1 run must reach it.
set -e
# wait_for
. /usr/share/vcram/ktap.sh
insmod /lib/modules/vcram/vcram.ko
used1() {
	awk '/MemUsed/ {print $4}' /sys/devices/system/node/node1/meminfo
}
echo "flow: node1_used_kb_before=$(used1)"
echo "flow: has_private_memory=$(cat /sys/devices/system/node/has_private_memory)"
rc=0
stress-ng --vm 2 --vm-bytes 96M --vm-keep --timeout 8s >/tmp/stress.out 2>&1 || rc=$?
tail -n 3 /tmp/stress.out
echo "flow: stress_status=$rc"
# A plain hog: no policy at all (the placement check expects node 0).
rc=0
vcram-workload --policy none --node 0 --mib 96 --pattern random --free munmap >/tmp/hog.out 2>&1 || rc=$?
echo "flow: hog_status=$rc"
# Policies that must never reach a private node: preferred and interleave.
rc=0
numactl --preferred=1 vcram-workload --policy none --node 0 --mib 48 --pattern text >/tmp/pref.out 2>&1 || rc=$?
echo "flow: preferred_status=$rc"
# numactl may refuse a private node for --preferred; show why it failed.
[ "$rc" -eq 0 ] || head -n 3 /tmp/pref.out | sed 's/^/flow: preferred: /'
rc=0
numactl --interleave=0,1 vcram-workload --policy none --node 0 --mib 48 --pattern text >/tmp/il.out 2>&1 || rc=$?
echo "flow: interleave_status=$rc"
[ "$rc" -eq 0 ] || head -n 3 /tmp/il.out | sed 's/^/flow: interleave: /'
echo "flow: node1_used_kb_after_hogs=$(used1)"
echo "FLOW-HOGS-DONE"
sleep 6
# With the whole process bound to node 1, its pages (buffer, corpora,
# checksums) must land there.
numactl --membind=1 vcram-workload --policy none --node 1 --mib 16 --pattern text \
	--hold-seconds 10 --free munmap >/tmp/bind.out 2>&1 &
w=$!
wait_for 300 grep -q "^# HOLD" /tmp/bind.out || true
echo "flow: node1_used_kb_bound=$(used1)"
echo "FLOW-BOUND-HELD"
rc=0
wait "$w" || rc=$?
grep -E "^(not ok|# placement|# totals)" /tmp/bind.out || true
echo "flow: membind_status=$rc"
echo "flow: done"
