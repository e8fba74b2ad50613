// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! End-to-end tests of the private memory node series (kernel-patches/)
//! without the vcram driver: the series' test owner module claims node 1's
//! pc-dimm as a private node, and the in-guest suites check it (KTAP).

use vcram_e2e::guest::{require_platform, Launch};
use vcram_e2e::repo_root;

/// Runs `tests/guest/scripts/NAME` in the guest; every one of its `cases`
/// must pass, with a clean console.
fn run_suite(name: &str, timeout: u64, cases: usize) {
    require_platform();
    let script = std::fs::read_to_string(repo_root().join("tests/guest/scripts").join(name))
        .expect("script");
    let run = Launch::new()
        .timeout(timeout)
        .run_script(&script)
        .expect("launch");
    run.expect_ktap_passed(cases);
    run.expect_clean_console();
}

/// `private-node.sh`: node state, accounting, isolation, every policy mode,
/// move_pages, numactl, migratepages, the free callback, removal, an owner
/// without USER_NUMA, and the pause.
#[test]
fn private_node_series_selftest() {
    run_suite("private-node.sh", 900, 49);
}

/// `private-swap.sh`: swap on zram, zswap and a loop device with node 1;
/// reclaim needs the owner's RECLAIM capability, swapped-out pages come
/// back to node 1 intact, and neither shmem under a task policy nor the
/// neighbours read by cluster readahead ever land on node 1.
#[test]
fn private_node_series_with_swap() {
    run_suite("private-swap.sh", 900, 17);
}

/// `private-damon.sh`: DAMON's physical- and virtual-address migrate_cold
/// and pageout schemes leave a bound task's memory on node 1 intact, and a
/// migrate_hot scheme never makes node 1 its target.
#[test]
fn private_node_series_with_damon() {
    run_suite("private-damon.sh", 900, 9);
}

/// `selftest-private-nodes.sh`: the series' kernel selftest,
/// `tools/testing/selftests/mm/private_nodes` with its wrapper
/// `test_private_nodes.sh`.
#[test]
fn private_nodes_kernel_selftest() {
    run_suite("selftest-private-nodes.sh", 600, 3);
}
