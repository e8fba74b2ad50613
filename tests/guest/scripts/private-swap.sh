# In-guest KTAP test of private memory nodes against swap, with the series'
# test owner (test_private_node.ko) claiming node 1: zram, zswap and a loop
# device as swap. Run by tests/tests/kernel.rs.
#
# What it asserts:
# - reclaim acts on node 1 only if the owner allows RECLAIM: MADV_PAGEOUT
#   leaves the pages in place and nodeN/reclaim fails with EPERM without it;
#   with it, pages swap out and come back to node 1 intact (zram, zswap);
# - shmem written by a task whose policy binds it to node 1 is never placed
#   there, neither when written nor when the task faults it back in;
# - cluster swap readahead (a loop device: not synchronous, so swap-in reads
#   ahead; VMA readahead off) never brings the neighbouring slots of other
#   memory onto node 1;
# - a memory cgroup whose memory is on node 1 (owner with RECLAIM) swaps it
#   out at its memory.max instead of going OOM, and memory.reclaim reaches it.
KTAP_LIB=/usr/share/vcram/ktap.sh
[ -r $KTAP_LIB ] || { echo "KTAP version 1"; echo "Bail out! $KTAP_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/ktap.sh
. $KTAP_LIB
KO=$(ls /lib/modules/*/kernel/mm/test_private_node.ko 2>/dev/null | head -n1)
D=/sys/kernel/debug/test_private_node
NODES=/sys/devices/system/node
# field NAME FILE: the number after "NAME=" in FILE
field() { sed -n "s/.* $1=\([0-9-]*\).*/\1/p" "$2"; }
vmstat() { awk -v k="$1" '$1 == k { print $2 }' /proc/vmstat; }
# run ptest ARGS..., its output to /tmp/pt and the console
pt() {
	ptest "$@" >/tmp/pt 2>&1
	sed 's/^/# ptest: /' /tmp/pt
}
remove_owner() {
	sleep 1
	echo 1 >"$D/flush"
	echo 1 >"$D/remove"
	rmmod test_private_node
}

ktap_plan 17
if [ -z "$KO" ] || [ ! -e /sys/block/zram0 ]; then
	echo "# test_private_node.ko (CONFIG_TEST_PRIVATE_NODE=m) or zram (CONFIG_ZRAM) missing"
	ktap_fail_rest "test_private_node.ko and zram present"
	exit 1
fi

echo 256M >/sys/block/zram0/disksize
mkswap /dev/zram0 >/dev/null 2>&1 && swapon /dev/zram0
check "swap on zram0" grep -q zram0 /proc/swaps

# --- caps=2 (USER_NUMA, no RECLAIM): nothing reclaims node 1 ------------------
insmod "$KO" caps=2
pt pageout 16
pages=$(field pages /tmp/pt)
check "without RECLAIM MADV_PAGEOUT leaves node 1's pages in place" \
	[ "$(field n1 /tmp/pt)" = "$pages" -a "$(field present_after_pageout /tmp/pt)" = "$pages" ]
echo 1M 2>/tmp/err >$NODES/node1/reclaim
rc=$?
echo "# echo 1M > node1/reclaim: status $rc: $(cat /tmp/err)"
check "without RECLAIM node1/reclaim fails with EPERM" \
	sh -c '[ $0 -ne 0 ] && grep -qi "not permitted" /tmp/err' "$rc"
remove_owner

# --- caps=3 (RECLAIM, USER_NUMA): swap out and back in ------------------------
insmod "$KO" caps=3
pt pageout 16
pages=$(field pages /tmp/pt)
check "with RECLAIM MADV_PAGEOUT swaps node 1's pages out (zram)" \
	[ "$(field present_after_pageout /tmp/pt)" -lt $((pages / 2)) ]
check "swapped-in pages come back to node 1, intact (zram)" \
	[ "$(field after_swapin_n1 /tmp/pt)" = "$pages" -a "$(field bad /tmp/pt)" = 0 ]

# shmem under the task's BIND{1} policy (zram swaps in synchronously)
pt shmswap 8
pages=$(field pages /tmp/pt)
check "shmem written under a BIND{1} task policy stays off node 1" [ "$(field n1_written /tmp/pt)" = 0 ]
check "shmem swapped out" [ "$(field present_after_pageout /tmp/pt)" -lt $((pages / 2)) ]
check "shmem swapped in by the bound task stays off node 1, intact" \
	[ "$(field n1_after_swapin /tmp/pt)" = 0 -a "$(field bad /tmp/pt)" = 0 ]

# zswap in front of zram
echo 1 >/sys/module/zswap/parameters/enabled
before=$(vmstat zswpout)
pt pageout 16
pages=$(field pages /tmp/pt)
echo "# zswpout $before -> $(vmstat zswpout)"
check "zswap stores node 1's swapped-out pages" [ "$(vmstat zswpout)" -gt "${before:-0}" ]
check "pages come back from zswap to node 1, intact" \
	[ "$(field after_swapin_n1 /tmp/pt)" = "$pages" -a "$(field bad /tmp/pt)" = 0 ]
echo 0 >/sys/module/zswap/parameters/enabled

# --- memcg (caps=3): a cgroup whose memory is on node 1 reclaims it there ----
# Its limit reclaim and memory.reclaim must reach node 1, or a cgroup bound
# to the node goes OOM at memory.max with swap to spare.
grep -q '^cgroup2 /sys/fs/cgroup ' /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup
echo +memory >/sys/fs/cgroup/cgroup.subtree_control
CG=/sys/fs/cgroup/private
mkdir -p $CG
echo 24M >$CG/memory.max
sh -c 'echo $$ >$0/cgroup.procs; exec ptest bindhold 64 1' $CG >/tmp/pt 2>&1
rc=$?
sed 's/^/# ptest: /' /tmp/pt
echo "# status $rc; memory.events: $(tr '\n' ' ' <$CG/memory.events)"
check "a cgroup bound to node 1 at memory.max swaps instead of OOM, data intact" \
	[ $rc = 0 -a "$(awk '$1 == "oom_kill" { print $2 }' $CG/memory.events)" = 0 -a "$(field bad /tmp/pt)" = 0 ]
echo max >$CG/memory.max
sh -c 'echo $$ >$0/cgroup.procs; exec ptest bindhold 32 20' $CG >/tmp/pt 2>&1 &
H=$!
wait_for 60 grep -q '^placed' /tmp/pt
n1_anon() { sed -n 's/^anon .*N1=\([0-9]*\).*/\1/p' $CG/memory.numa_stat; }
before=$(n1_anon)
echo 16M 2>/tmp/err >$CG/memory.reclaim
rc=$?
after=$(n1_anon)
echo "# memory.reclaim 16M: status $rc $(cat /tmp/err); anon on node 1: $before -> $after"
check "memory.reclaim of a cgroup reclaims its memory on node 1" \
	[ $rc = 0 -a "$after" -le $((before - 8 * 1048576)) ]
kill $H
wait $H 2>/dev/null
rmdir $CG

# cluster readahead: a loop device (not synchronous) and no VMA readahead
swapoff /dev/zram0
dd if=/dev/zero of=/tmp/swap.img bs=1M count=64 2>/dev/null
losetup /dev/loop0 /tmp/swap.img && mkswap /dev/loop0 >/dev/null 2>&1 && swapon /dev/loop0
check "swap on a loop device" grep -q loop0 /proc/swaps
echo false >/sys/kernel/mm/swap/vma_ra_enabled
cluster=$(cat /proc/sys/vm/page-cluster)
echo 4 >/proc/sys/vm/page-cluster
pt raswap 512
pages=$(field pages /tmp/pt)
check "cluster readahead swapped both ranges out" \
	[ "$(field x_present_after_pageout /tmp/pt)" -lt $((pages / 2)) -a "$(field y_present_after_pageout /tmp/pt)" -lt $((pages / 2)) ]
# ptest reclaims (memory.reclaim) until none of x is left in the swap cache
# from its own pageout, then counts the pages of x that y's faults read ahead
# (x_read); those must not be on node 1. How far readahead reaches adapts to
# earlier hits: a run in which it read none of x cannot tell, and says so.
check "both ranges intact after the readahead round trip" [ "$(field bad /tmp/pt)" = 0 ]
if [ "$(field x_read /tmp/pt)" -gt 0 ]; then
	check "cluster readahead never brings the unbound range onto node 1" \
		[ "$(field x_read_n1 /tmp/pt)" = 0 -a "$(field x_n1 /tmp/pt)" = 0 ]
else
	skip "cluster readahead never brings the unbound range onto node 1" \
		"y's faults read none of x this run (x_cached=$(field x_cached /tmp/pt))"
fi
echo "$cluster" >/proc/sys/vm/page-cluster
echo true >/sys/kernel/mm/swap/vma_ra_enabled
swapoff /dev/loop0
losetup -d /dev/loop0
remove_owner

dmesg | grep -E "BUG:|WARNING:|bad page|Call Trace" | sed 's/^/# dmesg: /'
check "dmesg clean (no kernel oops, warning or bad-page report)" sh -c '! dmesg | grep -qE "BUG:|WARNING:|bad page|Call Trace"'
ktap_done
