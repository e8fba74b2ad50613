#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test of vcram.ko with the real vcram-device, KTAP output.
#
# Run inside the vcram test guest (scripts/launch --device-socket ...
# --script guest-driver/tests/vcram-test.sh).  Environment:
#   VCRAM_KO    module to load (default: /lib/modules/vcram/vcram.ko)
#   VCRAM_NODE  expected node (default 1)
#   VCRAM_MB    size of the test workload in MiB (default 64)

KO=${VCRAM_KO:-/lib/modules/vcram/vcram.ko}
NODE=${VCRAM_NODE:-1}
MB=${VCRAM_MB:-64}
NTESTS=12
n=0
fails=0

ok() {
	n=$((n + 1))
	echo "ok $n $1"
}

notok() {
	n=$((n + 1))
	fails=$((fails + 1))
	echo "not ok $n $1"
}

check() {
	# check "description" command...
	desc=$1
	shift
	if "$@"; then ok "$desc"; else notok "$desc"; fi
}

skip() {
	n=$((n + 1))
	echo "ok $n $1 # SKIP $2"
}

node_mem_kb() {
	# node_mem_kb <field> : value of "Node N <field>:" in kB
	awk -v f="$1:" '$3 == f { print $4 }' \
		/sys/devices/system/node/node"$NODE"/meminfo
}

stat() {
	cat "$VDIR/$1" 2>/dev/null || echo -1
}

echo "KTAP version 1"
echo "1..$NTESTS"

# 1: load
if insmod "$KO"; then ok "insmod vcram.ko"; else notok "insmod vcram.ko"; fi
VDEV=
for d in /sys/bus/virtio/drivers/vcram/virtio*; do
	[ -e "$d" ] && VDEV=$d
done
VDIR=$VDEV/vcram
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

# 6: a membind workload runs and lands on the node.  numactl (libnuma)
# only accepts nodes of the cpuset's Mems_allowed, which never has private
# nodes; vcram-membind calls mbind(2) itself.
echo "# $(grep Mems_allowed_list /proc/self/status)"
if numactl --membind="$NODE" true 2>/dev/null; then
	echo "# numactl --membind=$NODE accepted"
else
	echo "# numactl --membind=$NODE refused by libnuma"
fi
free_before=$(node_mem_kb MemFree)
out=$(vcram-membind "$NODE" "$MB" 0 text 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
check "mbind(MPOL_BIND) workload lands on node $NODE" test "$rc" -eq 0

# 7: hold memory on the node, check it is used there
vcram-membind "$NODE" "$MB" 30 text >/tmp/holder.out 2>&1 &
holder=$!
sleep 4
free_during=$(node_mem_kb MemFree)
used_kb=$((free_before - free_during))
echo "# node $NODE MemFree before ${free_before} kB, with holder ${free_during} kB"
check "membind memory is taken from node $NODE" \
	test "$used_kb" -ge $((MB * 1024 / 2))
echo "# device: stored_pages $(stat stored_pages) physical_used $(stat physical_used)"

# 8: removal with pages in use fails, rmmod fails
echo 0 > "$VDIR/online" 2>/dev/null
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

# 12: now removal and unload succeed
echo 0 > "$VDIR/online"
r1=$?
rmmod vcram
r2=$?
check "remove and rmmod succeed once the pages are free" \
	test "$r1" -eq 0 -a "$r2" -eq 0

dmesg | grep -E "vcram|private" | sed 's/^/# /'
[ "$fails" -eq 0 ]
