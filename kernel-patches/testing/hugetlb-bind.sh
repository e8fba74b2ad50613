# In-guest KTAP check of patch 9 (hugetlb's bind mask) on a kernel without
# cpusets and with hugetlbfs (kernel-patches/testing/nocpusets.config): a
# task bound to the private node 1 only maps and touches MAP_HUGETLB memory,
# which comes from node 0 (hugetlb never uses private nodes). Without the
# fix its bind mask counted only node 1's huge pages (none): ENOMEM.
# Build: scripts/build-kernel --no-publish --lax --extra-config kernel-patches/testing/nocpusets.config
# Run: scripts/launch --kernel <that build's bzImage> --initrd <an initramfs
# built with --kbuild <that build>> --script kernel-patches/testing/hugetlb-bind.sh
KTAP_LIB=/usr/share/vcram/ktap.sh
[ -r $KTAP_LIB ] || { echo "KTAP version 1"; echo "Bail out! $KTAP_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/ktap.sh
. $KTAP_LIB
KO=$(ls /lib/modules/*/kernel/mm/test_private_node.ko 2>/dev/null | head -n1)
HP=/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages
field() { sed -n "s/.* $1=\([0-9-]*\).*/\1/p" "$2" | tail -n1; }

ktap_plan 4
if [ -z "$KO" ] || [ ! -e $HP ] || grep -q cpuset /proc/filesystems; then
	echo "# needs test_private_node.ko and hugetlbfs (kernel-patches/testing/nocpusets.config)"
	ktap_fail_rest "kernel without cpusets, with hugetlbfs and the test owner"
	exit 1
fi
insmod "$KO" caps=2
echo 8 >$HP
check "8 huge pages on node 0" [ "$(cat $HP)" = 8 ]
numactl --membind=0 ptest hugetlb 8 >/tmp/h0 2>&1
sed 's/^/# BIND{0}: /' /tmp/h0
check "BIND{0}: MAP_HUGETLB maps, on node 0" [ "$(field mapped /tmp/h0)" = 0 -a "$(field n0 /tmp/h0)" = 2048 ]
numactl --membind=1 ptest hugetlb 8 >/tmp/h1 2>&1
sed 's/^/# BIND{1}: /' /tmp/h1
check "BIND{1} (private only): MAP_HUGETLB maps from node 0, none on node 1" \
	[ "$(field mapped /tmp/h1)" = 0 -a "$(field n1 /tmp/h1)" = 0 ]
echo 1 >/sys/kernel/debug/test_private_node/remove
rmmod test_private_node
check "dmesg clean" sh -c '! dmesg | grep -qE "BUG:|WARNING:|bad page|Call Trace"'
ktap_done
