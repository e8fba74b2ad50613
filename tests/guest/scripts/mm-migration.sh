# The kernel's own mm migration selftest (tools/testing/selftests/mm/migration.c
# of the guest kernel's tree, /usr/bin/mm-migration) against a private node 1.
# Run by tests/tests/kernel_migration.rs with --smp 3: the selftest needs
# numa_num_task_cpus() - 1 >= 2 and otherwise skips every case.
#
# What the selftest does: its fixture takes the first two nodes of libnuma's
# numa_all_nodes_ptr (the task's Mems_allowed) and each case (private_anon,
# shared_anon, private_anon_thp) move_pages()es a 2 MiB buffer back and forth
# between them for 20 s while other threads/processes read it. It checks only
# move_pages' return value, not the per-page status.
#
# What it does with node 1 (seen here, and asserted below):
# - without test_private_node, node 1 has no memory, is not in Mems_allowed,
#   and every case skips ("Not enough threads or NUMA nodes available");
# - with caps=2 (USER_NUMA), the series puts node 1 in Mems_allowed, so
#   libnuma picks nodes 0 and 1; the three cases run one by one:
#   private_anon really moves its (4 KiB) page between node 0 and node 1 (the
#   owner's migrate notification counts folios into and out of node 1);
#   private_anon_thp does too; THP is set to madvise for it (the guest's
#   default "never" makes its buffer 4 KiB pages), and a sample of node 1's
#   meminfo has shown AnonHugePages 2048 kB there (not in every run: the
#   1 s samples are a diagnostic, not asserted);
#   shared_anon fails: its shmem folios stay on node 0 because only
#   anonymous folios move to a private node (move_pages status -EINVAL per
#   page), and 7.3's selftest checks that the page reached both nodes
#   ("Expected err (-2) == 0"). That is the series' rule, asserted as such;
# - with caps=0 (no USER_NUMA), node 1 is not in Mems_allowed: user space
#   may not name it, so libnuma sees one node and every case skips, and
#   nothing migrates into node 1.
KTAP_LIB=/usr/share/vcram/ktap.sh
[ -r $KTAP_LIB ] || { echo "KTAP version 1"; echo "Bail out! $KTAP_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/ktap.sh
. $KTAP_LIB
KO=$(ls /lib/modules/*/kernel/mm/test_private_node.ko 2>/dev/null | head -n1)
D=/sys/kernel/debug/test_private_node
N1=/sys/devices/system/node/node1/meminfo
NODES=/sys/devices/system/node
THP=/sys/kernel/mm/transparent_hugepage/enabled
CASES="private_anon shared_anon private_anon_thp"
# the selftest's cases in 7.3 (also shared_anon_thp and the hugetlb pair)
NCASES=6
n1() { awk -v k="$1:" '$3 == k { print $4 }' "$N1"; }
stat() { awk -v k="$1" '$1 == k { print $2 }' "$D/stats"; }
settle() { sleep 1; echo 1 >"$D/flush"; sleep 1; }
mems() { sed -n 's/^Mems_allowed_list:[[:space:]]*//p' /proc/self/status; }
# runs mm-migration with "$@", its output (prefixed "# mm-migration: ") goes
# to the console and to /tmp/mm; sets rc
run_mm() {
	timeout 300 mm-migration "$@" >/tmp/mm 2>&1
	rc=$?
	sed 's/^/# mm-migration: /' /tmp/mm
	echo "# mm-migration${*:+ $*}: exit status $rc"
}
count() { grep -c "$1" /tmp/mm; }

ktap_plan 15
if [ -z "$KO" ] || ! command -v mm-migration >/dev/null; then
	echo "# test_private_node.ko (CONFIG_TEST_PRIVATE_NODE=m) or /usr/bin/mm-migration missing"
	ktap_fail_rest "test_private_node.ko and mm-migration present"
	exit 1
fi
echo "# cpus: $(nproc) (the selftest needs 3); THP: $(cat $THP)"

# --- node 1 without memory: not in Mems_allowed, every case skips ----------------
echo "# no module: Mems_allowed_list $(mems)"
check "without the module node 1 is not in Mems_allowed" [ "$(mems)" = 0 ]
run_mm
check "without the module all $NCASES cases skip (one node)" \
	[ "$(count '^ok [0-9]* migration\.[a-z_]* # SKIP')" = $NCASES -a "$(count '^not ok')" = 0 ]

# --- caps=2 (USER_NUMA): migrates between node 0 and node 1 ---------
check "insmod test_private_node caps=2" insmod "$KO" caps=2
echo "# caps=2: Mems_allowed_list $(mems); has_private_memory $(cat $NODES/has_private_memory)"
numactl -H | sed 's/^/# numactl -H: /'
check "caps=2: node 1 in Mems_allowed (libnuma's numa_all_nodes)" [ "$(mems)" = 0-1 ]
for c in $CASES; do
	in0=$(stat migrate_in)
	out0=$(stat migrate_out)
	# sample node 1 while the case runs (diagnostic only: 1 s samples miss
	# short stays, and a page's per-cpu vmstat delta can linger after it left)
	(
		max_a=0 max_h=0 max_s=0
		while [ ! -f /tmp/mm.done ]; do
			a=$(n1 AnonPages) h=$(n1 AnonHugePages) s=$(n1 Shmem)
			[ "$a" -gt $max_a ] && max_a=$a
			[ "$h" -gt $max_h ] && max_h=$h
			[ "$s" -gt $max_s ] && max_s=$s
			sleep 1
		done
		echo "# $c: node 1 peaks (kB, 1 s samples): AnonPages $max_a AnonHugePages $max_h Shmem $max_s"
	) &
	S=$!
	rm -f /tmp/mm.done
	[ $c = private_anon_thp ] && echo madvise >$THP
	run_mm -t "$c"
	echo never >$THP
	touch /tmp/mm.done
	wait $S
	rm -f /tmp/mm.done
	din=$(($(stat migrate_in) - in0))
	dout=$(($(stat migrate_out) - out0))
	echo "# $c: folios migrated into node 1: $din, out of node 1: $dout"
	passed=0
	[ $rc -eq 0 -a "$(count "^ok 1 migration\.$c\$")" = 1 ] && passed=1
	case $c in
	private_anon)
		check "caps=2: private_anon passes and migrates folios into and out of node 1" \
			[ $passed = 1 -a $din -gt 0 -a $dout -gt 0 ] ;;
	shared_anon)
		# 7.3's selftest checks that a page reached both nodes; shmem may
		# not move to a private node, so the case fails that check
		check "caps=2: shared_anon fails the cross-node check: its shmem never reaches node 1" \
			[ $passed = 0 -a "$(count 'Expected err (-2) == 0')" = 1 -a $din = 0 -a $dout = 0 ] ;;
	private_anon_thp)
		# (whether the THP moved whole shows only in the 1 s samples above:
		# seen in some runs, missed in others, so not asserted)
		check "caps=2: private_anon_thp passes and migrates folios into and out of node 1" \
			[ $passed = 1 -a $din -gt 0 -a $dout -gt 0 ] ;;
	esac
done
settle
sed 's/^/# stats: /' "$D/stats"
echo "# node1 after: AnonPages $(n1 AnonPages) Shmem $(n1 Shmem) FilePages $(n1 FilePages)"
check "caps=2: the migrate notification never fired for other nodes' folios" [ "$(stat foreign)" = 0 ]
check "caps=2: node 1 holds no anon or shmem pages once the selftest exited" \
	[ "$(n1 AnonPages)" = 0 -a "$(n1 Shmem)" = 0 ]
echo 1 >"$D/remove"
check "caps=2: node 1 is removable afterwards" [ "$(cat $NODES/has_private_memory)" = "" ]
rmmod test_private_node

# --- caps=0 (no USER_NUMA): node 1 stays out of Mems_allowed, every case skips --
check "insmod test_private_node caps=0" insmod "$KO" caps=0
echo "# caps=0: Mems_allowed_list $(mems)"
check "caps=0: node 1 is not in Mems_allowed" [ "$(mems)" = 0 ]
run_mm
echo "# caps=0: migrate_in $(stat migrate_in)"
check "caps=0: all $NCASES cases skip (one usable node), nothing migrates into node 1" \
	[ "$(count '^ok [0-9]* migration\.[a-z_]* # SKIP')" = $NCASES -a "$(count '^not ok')" = 0 \
	-a "$(stat migrate_in)" = 0 ]
settle
echo 1 >"$D/remove"
check "caps=0: node 1 is removable afterwards" [ "$(cat $NODES/has_private_memory)" = "" ]
rmmod test_private_node

dmesg | grep -E "BUG:|WARNING:|bad page|Call Trace" | sed 's/^/# dmesg: /'
check "dmesg clean (no kernel oops, warning or bad-page report)" sh -c '! dmesg | grep -qE "BUG:|WARNING:|bad page|Call Trace"'
ktap_done
