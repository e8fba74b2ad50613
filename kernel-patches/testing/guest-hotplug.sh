#!/bin/sh
# Guest script used to boot-test the series (busybox sh; needs ptest, numactl,
# migratepages and test_private_node.ko in the initramfs). Not run by CI.
D=/sys/kernel/debug/test_private_node
KO=$(ls /lib/modules/*/kernel/mm/test_private_node.ko)
N1=/sys/devices/system/node/node1/meminfo
insmod $KO
echo "--- sysfs: offline one block, online_kernel is made movable"
B=$(for m in /sys/devices/system/memory/memory*; do [ -e $m/node1 ] && echo $m; done | tail -1)
echo "block $B: $(cat $B/state) $(cat $B/valid_zones)"
echo offline > $B/state; echo "offline rc=$? state=$(cat $B/state) has_private=$(cat /sys/devices/system/node/has_private_memory)"
echo "valid_zones=$(cat $B/valid_zones)"
echo online_kernel > $B/state; echo "online_kernel rc=$? state=$(cat $B/state) zones=$(cat $B/valid_zones)"
echo "--- fill node 1 under membind (expect OOM kill of the bound task only)"
numactl --membind=1 ptest hog 1300; echo "bound hog rc=$?"
dmesg | grep -E "oom-kill:|Killed process" | tail -2
grep -E "AnonPages|MemFree" $N1
echo "--- sysfs offline of a block in use fails"
numactl --membind=1 ptest hog 900 hold > /tmp/h.log 2>&1 &
H=$!
sleep 8; cat /tmp/h.log
for m in $(for m in /sys/devices/system/memory/memory*; do [ -e $m/node1 ] && echo $m; done); do
  echo offline > $m/state 2>/dev/null && echo "$m offlined" && echo online_movable > $m/state
done | head -3
echo "blocks still online: $(for m in /sys/devices/system/memory/memory*; do [ -e $m/node1 ] && cat $m/state; done | grep -c online)"
kill $H; wait $H
sleep 1; echo 1 > $D/flush; sleep 1
cat $D/stats | head -4
echo 1 > $D/remove; echo "remove rc=$? last=$(cat $D/remove)"
rmmod test_private_node; echo "rmmod rc=$?"
echo "--- re-add twice"
for i in 1 2; do insmod $KO && echo "add $i: $(cat /sys/devices/system/node/has_private_memory)" && echo 1 > $D/remove && rmmod test_private_node && echo "removed $i"; done
dmesg | grep -iE "warn|bug|bad page|oops|call trace|private" | tail -15
