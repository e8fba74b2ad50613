#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# In-guest test of vcram.ko as a demotion target (caps RECLAIM|USER_NUMA|HOTUNPLUG|DEMOTION),
# KTAP output.  Writes VCRAM_MB MiB on node 0, by default 83 % of node 0's
# memory (400 MiB in a 512 MiB guest), so that reclaim demotes whatever the
# guest's size (the debug kernel's runs use 1 GiB).

VCRAM_LIB=/usr/share/vcram/vcram.sh
[ -r $VCRAM_LIB ] || { echo "KTAP version 1"; echo "Bail out! $VCRAM_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/vcram.sh
. $VCRAM_LIB
MB=${VCRAM_MB:-$(($(awk '/MemTotal/ { print $4 }' /sys/devices/system/node/node0/meminfo) * 83 / 100 / 1024))}

tier_of() {
	for t in /sys/devices/virtual/memory_tiering/memory_tier*; do
		[ -r "$t/nodelist" ] || continue
		case ",$(cat "$t/nodelist")," in
		*",$1,"* | *",$1-"* | *"-$1,"*) basename "$t" ;;
		esac
	done
}

ktap_plan 4
vcram_bind caps=15
check "bound with caps reclaim|user NUMA|hot-unplug|demotion" test "$(stat caps)" = 0xf

t0=$(tier_of 0)
t1=$(tier_of "$NODE")
echo "# node 0 in ${t0:-none}, node $NODE in ${t1:-none}"
check "node $NODE is in a lower memory tier than node 0" \
	test -n "$t1" -a -n "$t0" -a "$t1" != "$t0"

echo 1 > /sys/kernel/mm/numa/demotion_enabled
d0=$(awk '/^pgdemote_/ { s += $2 } END { print s + 0 }' /proc/vmstat)
vcram-membind 0 "$MB" 2 text >/dev/null 2>&1
d1=$(awk '/^pgdemote_/ { s += $2 } END { print s + 0 }' /proc/vmstat)
sleep 1
echo "# pgdemote $d0 -> $d1, migrate_in $(stat migrate_in), commit_pages $(stat commit_pages), commits_dropped $(stat commits_dropped)"
check "reclaim demotes to node $NODE and the driver COMMITs the pages" \
	test "$d1" -gt "$d0" -a "$(stat migrate_in)" -gt 0 -a "$(stat commit_pages)" -gt 0
echo 0 > /sys/kernel/mm/numa/demotion_enabled

sleep 1
echo 0 > "$VDIR/online"
# the status of the write to sysfs is the point
# shellcheck disable=SC2320
r1=$?
rmmod vcram
check "remove and unload" test "$r1" -eq 0 -a $? -eq 0
ktap_done
