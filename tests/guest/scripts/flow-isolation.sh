# flow.rs (isolation test): stress-ng and memory hogs without a policy that
# names node 1 must leave private node 1 empty; numactl --preferred=1,
# --interleave=0,1 and --membind=1 runs must reach it.
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
echo "flow: node1_used_kb_after_hogs=$(used1)"
echo "FLOW-HOGS-DONE"
# (the host reads the device's stats now)
sleep 6
# A task that names node 1 has opted in, whatever the mode: preferred and
# interleave policies reach the private node too (ptest hog prints the pages
# per node: "hog: 48 MiB N0=.. N1=..").
n1pages() { sed -n 's/.*N1=\([0-9-]*\).*/\1/p' "$1"; }
rc=0
numactl --preferred=1 ptest hog 48 >/tmp/pref.out 2>&1 || rc=$?
echo "flow: preferred_status=$rc"
echo "flow: preferred_n1=$(n1pages /tmp/pref.out)"
rc=0
numactl --interleave=0,1 ptest hog 48 >/tmp/il.out 2>&1 || rc=$?
echo "flow: interleave_status=$rc"
echo "flow: interleave_n1=$(n1pages /tmp/il.out)"
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
