#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test of vcram.ko with the real vcram-device, KTAP output.
#
# Run inside the vcram test guest (scripts/launch --device-socket ...
# --script guest-driver/tests/vcram-test.sh).  Environment:
#   VCRAM_KO    module to load (default: /lib/modules/vcram/vcram.ko)
#   VCRAM_NODE  expected node (default 1)
#   VCRAM_MB    size of the test workload in MiB (default 64)

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB
MB=${VCRAM_MB:-64}

node_mem_kb() {
	# node_mem_kb <field> : value of "Node N <field>:" in kB
	awk -v f="$1:" '$3 == f { print $4 }' \
		/sys/devices/system/node/node"$NODE"/meminfo
}

ktap_plan 21

# 1: load
check "insmod vcram.ko" vcram_bind
# 2: bound
check "driver bound to a virtio device" test -n "$VDEV" -a -d "$VDIR"
[ -n "$VDEV" ] && echo "# device $(basename "$VDEV")"

# 3: private node listed
priv=$(cat /sys/devices/system/node/has_private_memory 2>/dev/null)
echo "# has_private_memory: $priv"
check "has_private_memory lists node $NODE" \
	sh -c "echo '$priv' | tr ',' '\n' | grep -qx '$NODE' || echo '$priv' | grep -q '$NODE'"

# 4: size of the node = window size
total=$(node_mem_kb MemTotal)
wsize=$(stat window_size)
echo "# node $NODE MemTotal ${total} kB, window_size $wsize"
check "node $NODE has the window's size" \
	test "$((total * 1024))" -eq "$wsize" -a "$wsize" -gt 0

# 5: not in N_MEMORY
check "node $NODE is not in has_memory" \
	sh -c "! grep -q '$NODE' /sys/devices/system/node/has_memory || \
	       [ \"\$(cat /sys/devices/system/node/has_memory)\" = 0 ]"

# 6: numactl --membind runs a program on the node.  libnuma only accepts
# nodes of the cpuset's Mems_allowed; if the kernel leaves private nodes
# out of it, "numactl --all" lifts that check.
echo "# $(grep Mems_allowed_list /proc/self/status)"
NUMACTL="numactl"
if ! numactl --membind="$NODE" true >/dev/null 2>&1; then
	echo "# numactl --membind=$NODE refused by libnuma, using numactl --all"
	NUMACTL="numactl --all"
fi
f0=$(node_mem_kb MemFree)
f1=$($NUMACTL --membind="$NODE" sh -c \
	"x=\$(head -c 16000000 /dev/zero | tr '\\0' a); awk '\$3 == \"MemFree:\" { print \$4 }' /sys/devices/system/node/node$NODE/meminfo")
echo "# $NUMACTL --membind=$NODE: node $NODE MemFree $f0 kB -> ${f1:-?} kB"
check "$NUMACTL --membind=$NODE places a program's memory on node $NODE" \
	test -n "$f1" -a "$((f0 - ${f1:-$f0}))" -ge 8000

idle_used=$(stat physical_used)
free_before=$(node_mem_kb MemFree)
out=$(vcram-membind "$NODE" "$MB" 0 text 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
check "mbind(MPOL_BIND) workload lands on node $NODE" test "$rc" -eq 0

# 7: hold memory on the node, check it is used there
vcram-membind "$NODE" "$MB" 30 text >/tmp/holder.out 2>&1 &
holder=$!
# until it has written everything (it prints its placement before holding)
wait_for 120 grep -q "^pages=" /tmp/holder.out
free_during=$(node_mem_kb MemFree)
used_kb=$((free_before - free_during))
echo "# node $NODE MemFree before ${free_before} kB, with holder ${free_during} kB"
check "membind memory is taken from node $NODE" \
	test "$used_kb" -ge $((MB * 1024 / 2))
# the device's scanner (1 s) or COMMIT accounts the written pages
stored_all() { [ "$(stat stored_pages)" -ge $((MB * 256)) ]; }
wait_for 10 stored_all
echo "# device: stored_pages $(stat stored_pages) same_pages $(stat same_pages) physical_used $(stat physical_used) compressed_bytes $(stat compressed_bytes)"
check "the device accounts the workload's pages" \
	test "$(stat stored_pages)" -ge $((MB * 256)) -a "$(stat physical_used)" -gt "$idle_used"

# 8: removal with pages in use fails, rmmod fails
echo 0 > "$VDIR/online" 2>/dev/null
# the status of the write to sysfs is the point
# shellcheck disable=SC2320
r1=$?
rmmod vcram 2>/dev/null
r2=$?
check "remove with pages in use fails (online=0 and rmmod refused)" \
	test "$r1" -ne 0 -a "$r2" -ne 0 -a "$(stat online)" = 1

# 9: freeing the pages produces DISCARD requests
d0=$(stat discard_pages)
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
sleep 2
d1=$(stat discard_pages)
echo "# discard_pages $d0 -> $d1, discards_sent $(stat discards_sent), pages_released $(stat pages_released), pages_zeroed_cpu $(stat pages_zeroed_cpu), pages_pending $(stat pages_pending)"
check "freed pages are discarded" test "$((d1 - d0))" -ge $((MB * 256 / 2))

# 10: no pages pending after the flush
check "no freed pages left pending" test "$(stat pages_pending)" -eq 0

# 11: events: none malformed
echo "# events: pressure $(stat events_pressure) overflow $(stat events_overflow) malformed $(stat events_malformed) level $(stat pressure_level)"
check "no malformed events" test "$(stat events_malformed)" -eq 0

# 12: migration onto the node (move_pages) sends COMMIT
c0=$(stat commit_pages)
m0=$(stat migrate_in)
out=$(vcram-membind "$NODE" 16 0 text move 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
sleep 1
echo "# migrate_in $m0 -> $(stat migrate_in), commit_pages $c0 -> $(stat commit_pages), commits_sent $(stat commits_sent)"
check "move_pages to node $NODE works and is COMMITted" \
	test "$rc" -eq 0 -a "$(stat migrate_in)" -gt "$m0" -a "$(stat commit_pages)" -gt "$c0"

# 13: malformed events are counted and dropped
if [ -w "$DBG/inject_event" ]; then
	bad0=$(stat events_malformed)
	seq0=$(stat last_event_seq)
	lvl0=$(stat pressure_level)
	ev 1 2 "$((seq0 + 1))" 0 0 | head -c 47 > "$DBG/inject_event"	# short
	ev 9 0 "$((seq0 + 1))" 0 0 > "$DBG/inject_event"		# type
	ev 1 7 "$((seq0 + 1))" 0 0 > "$DBG/inject_event"		# level
	ev 2 0 "$((seq0 + 1))" 4096 1 > "$DBG/inject_event"	# outside window
	ev 1 2 0 0 0 > "$DBG/inject_event"			# seq 0
	bad1=$(stat events_malformed)
	echo "# events_malformed $bad0 -> $bad1, last_event_seq $seq0 -> $(stat last_event_seq)"
	check "malformed events are counted and dropped" \
		test "$((bad1 - bad0))" -eq 5 -a "$(stat last_event_seq)" = "$seq0" \
		-a "$(stat pressure_level)" = "$lvl0" -a "$(stat paused)" = 0
else
	skip "malformed events are counted and dropped" "no debugfs"
fi

# 14: failed requests fall back to zeroing on the CPU
if [ -w "$DBG/fail_requests" ]; then
	z0=$(stat pages_zeroed_cpu)
	f0=$(stat discards_failed)
	echo 1000000 > "$DBG/fail_requests"
	vcram-membind "$NODE" 16 0 random >/dev/null 2>&1
	sleep 2
	echo 0 > "$DBG/fail_requests"
	echo "# pages_zeroed_cpu $z0 -> $(stat pages_zeroed_cpu), discards_failed $f0 -> $(stat discards_failed), pages_pending $(stat pages_pending)"
	check "failed DISCARDs are zeroed on the CPU and released" \
		test "$(stat pages_zeroed_cpu)" -ge "$((z0 + 4096))" \
		-a "$(stat discards_failed)" -gt "$f0" -a "$(stat pages_pending)" -eq 0
else
	skip "failed DISCARDs are zeroed on the CPU and released" "no debugfs"
fi

# freed pages read back as zero when allocated again (vcram-membind
# checks that before writing), and the device is back at its idle use
out=$(vcram-membind "$NODE" 16 0 zero 2>&1)
rc=$?
at_idle() { [ "$(stat physical_used)" -le "$idle_used" ]; }
wait_for 10 at_idle
echo "# physical_used $(stat physical_used), idle $idle_used"
check "memory allocated again on node $NODE reads as zero; device back at idle use" \
	test "$rc" -eq 0 -a "$(stat physical_used)" -le "$idle_used"

# THP: 2 MiB folios on the node are freed and discarded as order-9 folios
THP=/sys/kernel/mm/transparent_hugepage/enabled
if [ -w "$THP" ]; then
	thp_old=$(sed 's/.*\[\(.*\)\].*/\1/' "$THP")
	echo always > "$THP"
	d0=$(stat discard_pages)
	vcram-membind "$NODE" 32 3 text >/dev/null 2>&1 &
	thp_pid=$!
	sleep 2
	huge=$(node_mem_kb AnonHugePages)
	wait "$thp_pid"
	thp_rc=$?
	sleep 1
	echo "$thp_old" > "$THP"
	echo "# AnonHugePages on node $NODE: ${huge} kB; discard_pages $d0 -> $(stat discard_pages)"
	check "THP on node $NODE: huge folios placed, freed and discarded" \
		test "$thp_rc" -eq 0 -a "${huge:-0}" -gt 0 \
		-a "$(stat discard_pages)" -ge $((d0 + 8192)) -a "$(stat pages_pending)" -eq 0
else
	skip "THP on node $NODE: huge folios placed, freed and discarded" "no THP"
fi

# 16: no sysfs unbind (the memory may not be removable)
check "sysfs unbind is not offered" test ! -e /sys/bus/virtio/drivers/vcram/unbind

# 17: now removal and unload succeed
echo 0 > "$VDIR/online"
# the status of the write to sysfs is the point
# shellcheck disable=SC2320
r1=$?
rmmod vcram
r2=$?
check "remove and rmmod succeed once the pages are free" \
	test "$r1" -eq 0 -a "$r2" -eq 0

# 18: load again: the node comes back
vcram_bind
sleep 1
priv=$(private)
echo 0 > "$VDIR/online"
# the status of the write to sysfs is the point
# shellcheck disable=SC2320
r1=$?
rmmod vcram
r2=$?
check "reload: node $NODE private again, removed and unloaded again" \
	test "$priv" = "$NODE" -a "$r1" -eq 0 -a "$r2" -eq 0

dmesg | grep -E "vcram|private" | sed 's/^/# /'
ktap_done
