# The series' kernel selftest (tools/testing/selftests/mm/private_nodes.c and
# its wrapper test_private_nodes.sh, built into the initramfs under
# /usr/lib/kselftest/mm) against node 1 of the guest, with the test owner
# module: the wrapper's two runs (USER_NUMA, then none) must pass all their
# cases. Run by tests/tests/kernel.rs.
KTAP_LIB=/usr/share/vcram/ktap.sh
[ -r $KTAP_LIB ] || { echo "KTAP version 1"; echo "Bail out! $KTAP_LIB missing (rebuild the initramfs)"; exit 1; }
# shellcheck source=tests/guest/lib/ktap.sh
. $KTAP_LIB
ktap_plan 3
if [ ! -x /usr/lib/kselftest/mm/private_nodes ]; then
	ktap_fail_rest "/usr/lib/kselftest/mm/private_nodes present (rebuild the initramfs)"
	exit 1
fi
cd /usr/lib/kselftest/mm || exit 1
sh ./test_private_nodes.sh >/tmp/pn 2>&1
rc=$?
sed 's/^/# selftest: /' /tmp/pn
check "test_private_nodes.sh exits 0" [ $rc = 0 ]
check "private_nodes with USER_NUMA: 12 passed, none failed" grep -q "Totals: pass:12 fail:0" /tmp/pn
check "private_nodes --refused: 5 passed, none failed" grep -q "Totals: pass:5 fail:0" /tmp/pn
ktap_done
