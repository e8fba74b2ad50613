# In-guest KTAP selftest of the private memory node series (kernel-patches/),
# without the vcram driver: the series' test owner (test_private_node.ko)
# claims the pc-dimm on node 1 as a private node. Run by tests/tests/kernel.rs.
KTAP_LIB=/usr/share/vcram/ktap.sh
[ -r $KTAP_LIB ] || { echo "KTAP version 1"; echo "Bail out! $KTAP_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/ktap.sh
. $KTAP_LIB
KO=$(ls /lib/modules/*/kernel/mm/test_private_node.ko 2>/dev/null | head -n1)
D=/sys/kernel/debug/test_private_node
N1=/sys/devices/system/node/node1/meminfo
NODES=/sys/devices/system/node
n1() { awk -v k="$1:" '$3 == k { print $4 }' "$N1"; }
stat() { awk -v k="$1" '$1 == k { print $2 }' "$D/stats"; }
settle() { sleep 1; echo 1 >"$D/flush"; sleep 1; }
# ptest ARGS...; then one case per DESC: ok if ptest printed an "ok" line with it
ptest_cases() {
	args=$1
	shift
	# shellcheck disable=SC2086 # ARGS is a word list
	ptest $args >/tmp/ptest 2>&1
	sed 's/^/# ptest: /' /tmp/ptest
	for what in "$@"; do
		if grep -F "$what" /tmp/ptest | grep -q '^ok'; then ok "$what"; else notok "$what"; fi
	done
}
# pages of a hog on node 1: "hog: 64 MiB N0=.. N1=.."
hog_n1() { sed -n 's/.*N1=\([0-9-]*\).*/\1/p' "$1"; }

ktap_plan 49
if [ -z "$KO" ]; then
	echo "# test_private_node.ko missing: the kernel needs CONFIG_TEST_PRIVATE_NODE=m"
	ktap_fail_rest "test_private_node.ko present"
	exit 1
fi

# --- registration and node state (caps USER_NUMA) -----------------------------
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
avail0=$(meminfo MemAvailable) commit0=$(meminfo CommitLimit)
check "insmod test_private_node caps=2" insmod "$KO" caps=2
avail1=$(meminfo MemAvailable) commit1=$(meminfo CommitLimit)
echo "# MemAvailable $avail0 -> $avail1 kB, CommitLimit $commit0 -> $commit1 kB"
check "MemAvailable leaves node 1 out (grew by less than 64 MiB)" [ $((avail1 - avail0)) -lt 65536 ]
check "CommitLimit leaves node 1 out (grew by less than 64 MiB)" [ $((commit1 - commit0)) -lt 65536 ]
check "the owner's module is pinned while it owns node 1" sh -c '! rmmod test_private_node 2>/dev/null'
echo "# has_memory=$(cat $NODES/has_memory) has_private_memory=$(cat $NODES/has_private_memory)"
check "node 1 in has_private_memory" [ "$(cat $NODES/has_private_memory)" = 1 ]
check "node 1 not in has_memory" [ "$(cat $NODES/has_memory)" = 0 ]
total=$(n1 MemTotal)
check "node1 meminfo: MemTotal is the window (1 GiB)" [ "$total" = 1048576 ]
check "no kswapd1/kcompactd1 without RECLAIM" sh -c '! ps | grep -qE "\[(kswapd|kcompactd)1\]"'
cat "$D/selftest" >/tmp/selftest
sed 's/^/# selftest: /' /tmp/selftest
check "in-kernel allocation checks (nid, THISNODE, private zonelist)" \
	sh -c '! grep -q "not ok" /tmp/selftest && grep -q "^ok" /tmp/selftest'

# --- isolation: nothing reaches node 1 without an explicit request -----------
dd if=/dev/zero of=/tmp/big bs=1M count=100 2>/dev/null
cat /tmp/big >/dev/null
rm -f /tmp/big
find / -xdev >/dev/null 2>&1
echo "# node1 after page cache + slab pressure: FilePages $(n1 FilePages) Slab $(n1 Slab) AnonPages $(n1 AnonPages)"
check "page cache and slab pressure leave node 1 empty" \
	[ "$(n1 FilePages)" = 0 -a "$(n1 Slab)" = 0 -a "$(n1 AnonPages)" = 0 ]
# more than node 0 has (its MemTotal + 64 MiB)
hog_mib=$(($(awk '$3 == "MemTotal:" { print $4 }' $NODES/node0/meminfo) / 1024 + 64))
ptest hog $hog_mib >/tmp/hog 2>&1
rc=$?
echo "# unbound hog of $hog_mib MiB: rc=$rc $(cat /tmp/hog) node1 AnonPages $(n1 AnonPages)"
check "a hog with no policy is OOM-killed and never gets node 1" \
	[ "$rc" -ne 0 -a "$(n1 AnonPages)" = 0 ]
timeout 30 stress-ng --vm 1 --vm-bytes 64M --timeout 3 -q >/dev/null 2>&1
check "stress-ng --vm without policy leaves node 1 empty" [ "$(n1 AnonPages)" = 0 ]
# The kernel turns THP off on guests under 512 MiB: turn it on for MADV_HUGEPAGE.
T=/sys/kernel/mm/transparent_hugepage
echo madvise >$T/enabled
echo madvise >$T/defrag
ptest thp 256 >/tmp/thp 2>&1
echo never >$T/enabled
echo "# $(cat /tmp/thp); node1 AnonHugePages $(n1 AnonHugePages) AnonPages $(n1 AnonPages)"
thp_huge=$(sed -n 's/.*huge=\([0-9-]*\).*/\1/p' /tmp/thp)
check "THP pressure (256 MiB MADV_HUGEPAGE, no policy) gets huge pages, none on node 1" \
	[ "$(hog_n1 /tmp/thp)" = 0 -a "${thp_huge:-0}" -gt 0 -a "$(n1 AnonHugePages)" = 0 -a "$(n1 AnonPages)" = 0 ]

# --- mbind / move_pages (ptest prints TAP lines: relabel them) ---------------
ptest_cases "" "all touched pages of BIND{1} are on node 1" \
	"BIND{0,1} pages are on node 0 or 1" \
	"PREFERRED{1} pages are on node 1" \
	"PREFERRED_MANY{1} pages are on node 1" \
	"INTERLEAVE{1} pages are on node 1" \
	"INTERLEAVE{0,1} puts half the pages on node 1, half on node 0" \
	"WEIGHTED_INTERLEAVE{0,1} uses both nodes" \
	"mode with bit 5 is EINVAL" \
	"move_pages to node 1"
# mbind(MPOL_MF_MOVE) moves only anonymous memory onto the node
ptest_cases filemove "mbind(MPOL_MF_MOVE) leaves page cache off node 1" \
	"file pages intact after mbind(MPOL_MF_MOVE)"

# --- the owner pauses placement (node_private_set_paused) ---------------------
ooms=$(dmesg | grep -c "Killed process")
ptest_cases "paused $D/paused" "paused: a new page under BIND{1} is SIGBUS" \
	"paused: read(2) into an untouched BIND{1} page is EFAULT" \
	"paused: BIND{0,1} falls back to node 0" \
	"paused: move_pages to node 1 is ENOMEM, pages stay on node 0" \
	"paused: data already on node 1 stays there, intact" \
	"resumed: a new page under BIND{1} lands on node 1"
check "a pause kills nothing (no OOM killer)" [ "$(dmesg | grep -c "Killed process")" = "$ooms" ]
check "node 1 is no longer paused" [ "$(cat "$D/paused")" = 0 ]

# --- numactl, migratepages ----------------------------------------------------
numactl --membind=1 ptest hog 64 >/tmp/hog 2>&1
check "numactl --membind=1 puts every page on node 1" [ "$(hog_n1 /tmp/hog)" = 16384 ]
numactl --preferred=1 ptest hog 64 >/tmp/hog 2>&1
echo "# numactl --preferred=1: $(cat /tmp/hog)"
check "numactl --preferred=1 puts every page on node 1" [ "$(hog_n1 /tmp/hog)" = 16384 ]
numactl --interleave=0,1 ptest hog 64 >/tmp/hog 2>&1
echo "# numactl --interleave=0,1: $(cat /tmp/hog)"
il1=$(hog_n1 /tmp/hog)
check "numactl --interleave=0,1 puts about half the pages on node 1" \
	[ "${il1:-0}" -ge 6553 -a "${il1:-0}" -le 9830 ]
# numastat: node 1 has a column, and a bound task's memory shows on it
numastat >/tmp/numastat 2>&1
sed 's/^/# numastat: /' /tmp/numastat | head -n 3
check "numastat lists node 1" sh -c 'head -n 1 /tmp/numastat | grep -q node1'
numactl --membind=1 ptest hog 32 hold >/tmp/bound 2>&1 &
B=$!
wait_for 30 grep -q '^hog:' /tmp/bound
numastat -p $B >/tmp/numastat 2>&1
sed 's/^/# numastat -p: /' /tmp/numastat | grep -E "Node|Private|Total"
# the Private row: "Private  <node 0 MB>  <node 1 MB>  <total MB>"
priv1=$(awk '$1 == "Private" { print int($3) }' /tmp/numastat)
check "numastat -p shows a bound task's 32 MiB on node 1" [ "${priv1:-0}" -ge 32 ]
kill $B
wait $B 2>/dev/null
ptest hog 32 hold >/tmp/hold 2>&1 &
H=$!
sleep 3
migratepages $H 0 1
sleep 1
echo "# migratepages: $(grep -o 'N1=[0-9]*' /proc/$H/numa_maps | head -3 | tr '\n' ' ')"
check "migratepages moves a task's memory to node 1" grep -q 'N1=' /proc/$H/numa_maps

# --- free callback and remove ------------------------------------------------
# a holder bound with mbind (not libnuma), so that the removal below finds
# pages in use whatever the numactl cases above managed to place
ptest bindhold 4 3600 >/tmp/bh 2>&1 &
BH=$!
wait_for 60 grep -q '^placed' /tmp/bh
echo 1 >"$D/remove" 2>/dev/null
r=$?
check "remove with pages in use fails" [ $r -ne 0 -a "$(cat $NODES/has_private_memory)" = 1 ]
kill $H $BH
wait $H 2>/dev/null
wait $BH 2>/dev/null
settle
sed 's/^/# stats: /' "$D/stats"
check "free callback: every freed folio kept once and released" \
	[ "$(stat freed)" -gt 0 -a "$(stat freed)" = "$(stat kept)" -a "$(stat kept)" = "$(stat released)" -a "$(stat foreign)" = 0 ]
# a task whose bind policy names node 1 faults after the node is gone: SIGBUS
ptest_cases "orphan $D/remove" "orphan: node 1 removed by its owner" \
	"orphan: a fault under BIND{1} without node 1 is SIGBUS"
check "remove succeeds once the pages are freed" [ "$(cat $NODES/has_private_memory)" = "" ]
# registration must count memory that is only added (offline) as the node's
echo 1 >"$D/register_public"
echo "# registration with public memory added, offline: $(cat "$D/register_public")"
check "registration fails with -EBUSY while public memory is added to the node" \
	[ "$(cat "$D/register_public")" = -16 -a "$(cat $NODES/has_memory)" = 0 ]
rmmod test_private_node

# --- without USER_NUMA: policies and migrations naming node 1 are refused ----
insmod "$KO" caps=0
ptest_cases refused "refused: mbind(MPOL_BIND, {1}) is EINVAL" \
	"refused: mbind(MPOL_PREFERRED, {1}) is EINVAL" \
	"refused: BIND{0,1} never uses node 1" \
	"refused: move_pages to node 1 is ENODEV"
mems=$(sed -n 's/^Mems_allowed_list:[[:space:]]*//p' /proc/self/status)
echo "# caps=0: Mems_allowed_list $mems"
check "without USER_NUMA node 1 is not in Mems_allowed and numactl -m all works" \
	sh -c '[ "$0" = 0 ] && numactl -m all true' "$mems"
echo 1 >"$D/remove"
rmmod test_private_node

dmesg | grep -E "BUG:|WARNING:|bad page|Call Trace" | sed 's/^/# dmesg: /'
ktap_done
