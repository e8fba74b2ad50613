#!/bin/sh
# Guest script used to boot-test the series (busybox sh; needs ptest, numactl,
# migratepages and test_private_node.ko in the initramfs). Not run by CI.
D=/sys/kernel/debug/test_private_node
KO=$(ls /lib/modules/*/kernel/mm/test_private_node.ko)
N1=/sys/devices/system/node/node1/meminfo
echo "### A: caps=2"
insmod $KO
echo "has_memory=$(cat /sys/devices/system/node/has_memory) has_private_memory=$(cat /sys/devices/system/node/has_private_memory)"
ps | grep -E "kswapd|kcompactd" | grep -v grep
grep Mems_allowed_list /proc/self/status
cat $D/selftest
echo "--- page cache and slab pressure"
dd if=/dev/zero of=/tmp/big bs=1M count=100 2>/dev/null; cat /tmp/big > /dev/null; rm /tmp/big
find / -xdev > /dev/null 2>&1
grep -E "FilePages|Slab|AnonPages|MemUsed" $N1
echo "--- hog without policy (expect OOM kill, nothing on node 1)"
ptest hog 700; echo "hog rc=$?"
grep -E "AnonPages" $N1
dmesg | grep -E "Out of memory|Killed process" | tail -2
echo "--- mbind tests"
ptest
echo "--- numactl --membind=1"
numactl --membind=1 ptest hog 64; echo "numactl rc=$?"
echo "--- migratepages"
ptest hog 32 hold > /tmp/h.log 2>&1 &
H=$!
sleep 3; cat /tmp/h.log
migratepages $H 0 1; echo "migratepages rc=$?"
grep -o "N1=[0-9]*" /proc/$H/numa_maps | head -3
grep migrate_in $D/stats
echo "--- remove while in use"
echo 1 > $D/remove; echo "remove rc=$? last=$(cat $D/remove)"
echo "has_private_memory=$(cat /sys/devices/system/node/has_private_memory)"
kill $H; wait $H; sleep 1; echo 1 > $D/flush; sleep 1
cat $D/stats
echo 1 > $D/remove; echo "remove rc=$? last=$(cat $D/remove)"
echo "has_private_memory=$(cat /sys/devices/system/node/has_private_memory)"
rmmod test_private_node; echo "rmmod rc=$?"
echo "### B: caps=0"
insmod $KO caps=0
grep Mems_allowed_list /proc/self/status
ptest nomigrate
echo 1 > $D/remove; echo "remove rc=$?"; rmmod test_private_node; echo "rmmod rc=$?"
echo "### C: caps=8 (demotion without reclaim)"
insmod $KO caps=8; echo "insmod rc=$?"
echo "### D: caps=15 (reclaim, user NUMA, hot-unplug, demotion)"
insmod $KO caps=15
ps | grep -E "kswapd1|kcompactd1" | grep -v grep
echo 1 > /sys/kernel/mm/numa/demotion_enabled
ptest hog 480; echo "hog rc=$?"
grep -E "AnonPages" $N1
grep -E "pgdemote_kswapd|pgdemote_direct" /proc/vmstat
grep migrate_in $D/stats
sleep 1; echo 1 > $D/flush
echo 1 > $D/remove; echo "remove rc=$? last=$(cat $D/remove)"
rmmod test_private_node; echo "rmmod rc=$?"
echo "### dmesg"
dmesg | grep -iE "warn|bug|bad page|oops|call trace" | head -20
