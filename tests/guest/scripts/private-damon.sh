# In-guest KTAP test of private memory nodes against DAMON, with the series'
# test owner (test_private_node.ko, caps=2: USER_NUMA, no RECLAIM) claiming
# node 1 (4 GiB to 5 GiB). Run by tests/tests/kernel.rs.
#
# What it asserts, each with a DAMON scheme that matches every region and
# a task holding 32 MiB bound to node 1 (ptest bindhold):
# - a physical-address migrate_cold scheme over node 1's range, target node
#   0, leaves the bound task's pages on node 1, intact;
# - the same with a virtual-address scheme over the bound task;
# - a physical-address pageout scheme over node 1 leaves them in place
#   (the owner does not allow RECLAIM);
# - a physical-address migrate_hot scheme with node 1 as its target never
#   moves another task's node-0 memory there.
# Each scheme must have been tried on its regions (its nr_tried stat), so a
# DAMON that did nothing cannot pass.
KTAP_LIB=/usr/share/vcram/ktap.sh
[ -r $KTAP_LIB ] || { echo "KTAP version 1"; echo "Bail out! $KTAP_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/ktap.sh
. $KTAP_LIB
KO=$(ls /lib/modules/*/kernel/mm/test_private_node.ko 2>/dev/null | head -n1)
K=/sys/kernel/mm/damon/admin/kdamonds
N1_START=4294967296
N1_END=5368709120
# field NAME FILE: the number after "NAME=" in FILE
field() { sed -n "s/.* $1=\([0-9-]*\).*/\1/p" "$2" | tail -n1; }

# damon OPS ACTION TARGET_NID WHAT: one kdamond, one context, one target and
# one scheme that matches everything. WHAT is "START END" for paddr, a pid
# for vaddr. Starts it.
damon() {
	echo 1 >$K/nr_kdamonds
	echo 1 >$K/0/contexts/nr_contexts
	C=$K/0/contexts/0
	echo "$1" >$C/operations
	echo 5000 >$C/monitoring_attrs/intervals/sample_us
	echo 100000 >$C/monitoring_attrs/intervals/aggr_us
	echo 1 >$C/targets/nr_targets
	if [ "$1" = paddr ]; then
		echo 1 >$C/targets/0/regions/nr_regions
		set -- "$1" "$2" "$3" $4
		echo "$5" >$C/targets/0/regions/0/end
		echo "$4" >$C/targets/0/regions/0/start
	else
		echo "$4" >$C/targets/0/pid_target
	fi
	echo 1 >$C/schemes/nr_schemes
	echo "$2" >$C/schemes/0/action
	# every region matches (the ranges default to 0..0)
	A=$C/schemes/0/access_pattern
	echo 18446744073709551615 >$A/sz/max
	echo 4294967295 >$A/nr_accesses/max
	echo 4294967295 >$A/age/max
	[ -e $C/schemes/0/target_nid ] && echo "$3" >$C/schemes/0/target_nid
	echo on >$K/0/state
}

# damon_stop: refresh the scheme's stats, print them, stop the kdamond;
# TRIED and APPLIED hold nr_tried and sz_applied
damon_stop() {
	echo update_schemes_stats >$K/0/state
	S=$K/0/contexts/0/schemes/0/stats
	TRIED=$(cat $S/nr_tried)
	APPLIED=$(cat $S/sz_applied)
	echo "# scheme $(cat $K/0/contexts/0/schemes/0/action): nr_tried=$TRIED sz_tried=$(cat $S/sz_tried) nr_applied=$(cat $S/nr_applied) sz_applied=$APPLIED"
	echo off >$K/0/state
}

# hold SECONDS: a task with 32 MiB bound to node 1, in the background
# (pid in H, output in /tmp/h); waits until the memory is written
hold() {
	ptest bindhold 32 "$1" >/tmp/h 2>&1 &
	H=$!
	wait_for 60 grep -q '^placed' /tmp/h
}

# held: wait for the holder; print its report; ok if all its pages are still
# on node 1 and intact
held() {
	wait $H
	sed 's/^/# ptest: /' /tmp/h
	[ "$(field n1 /tmp/h)" = "$(field pages /tmp/h)" ] && [ "$(field bad /tmp/h)" = 0 ]
}

ktap_plan 9
if [ -z "$KO" ] || [ ! -d $K ]; then
	echo "# test_private_node.ko (CONFIG_TEST_PRIVATE_NODE=m) or DAMON sysfs (CONFIG_DAMON_SYSFS) missing"
	ktap_fail_rest "test_private_node.ko and DAMON present"
	exit 1
fi
insmod "$KO" caps=2
check "node 1 private (test owner, caps=2)" [ "$(cat /sys/devices/system/node/has_private_memory)" = 1 ]

# --- physical-address migrate_cold over node 1 -------------------------------
hold 8
damon paddr migrate_cold 0 "$N1_START $N1_END"
sleep 5
damon_stop
check "paddr migrate_cold was tried on node 1's range" [ "$TRIED" -gt 0 ]
check "paddr migrate_cold leaves node 1's pages where they are, intact" held

# --- virtual-address migrate_cold over the bound task -------------------------
hold 8
damon vaddr migrate_cold 0 "$H"
sleep 5
damon_stop
check "vaddr migrate_cold was tried on the bound task" [ "$TRIED" -gt 0 ]
check "vaddr migrate_cold leaves the bound task's pages on node 1, intact" held

# --- physical-address pageout over node 1, without RECLAIM ---------------------
hold 8
damon paddr pageout 0 "$N1_START $N1_END"
sleep 5
damon_stop
check "paddr pageout was tried on node 1's range" [ "$TRIED" -gt 0 ]
check "paddr pageout without RECLAIM leaves node 1's pages in place" held

# --- physical-address migrate_hot towards node 1 ---------------------------------
ptest hog 32 hold >/tmp/hog 2>&1 &
G=$!
wait_for 60 grep -q '^hog' /tmp/hog
damon paddr migrate_hot 1 "0 $N1_START"
sleep 5
damon_stop
echo "# node-0 task: $(cat /tmp/hog); numa_maps: $(grep -o 'N[0-9]=[0-9]*' /proc/$G/numa_maps | sort | uniq -c | tr '\n' ' ')"
check "paddr migrate_hot never moves a node-0 task's memory to node 1" \
	sh -c '! grep -q "N1=" /proc/$0/numa_maps' "$G"
kill $G
wait $G 2>/dev/null

sleep 1
echo 1 >/sys/kernel/debug/test_private_node/flush
echo 1 >/sys/kernel/debug/test_private_node/remove
rmmod test_private_node
dmesg | grep -E "BUG:|WARNING:|bad page|Call Trace" | sed 's/^/# dmesg: /'
check "dmesg clean (no kernel oops, warning or bad-page report)" sh -c '! dmesg | grep -qE "BUG:|WARNING:|bad page|Call Trace"'
ktap_done
