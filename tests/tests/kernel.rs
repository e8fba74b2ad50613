//! End-to-end test of the private memory node series (kernel-patches/) without
//! the vcram driver: the series' test owner module claims node 1's pc-dimm as
//! a private node, and `tests/guest/scripts/private-node.sh` checks isolation,
//! mbind, move_pages, numactl, migratepages, the free callback and removal,
//! and (`private-swap.sh`) its behaviour against swap.

use vcram_e2e::guest::{require_platform, Launch};
use vcram_e2e::repo_root;

#[test]
fn private_node_series_selftest() {
    require_platform();
    let script = std::fs::read_to_string(repo_root().join("tests/guest/scripts/private-node.sh"))
        .expect("script");
    let run = Launch::new()
        .timeout(900)
        .run_script(&script)
        .expect("launch");
    run.expect_ktap_passed(48);
    run.expect_clean_console();
}

/// The series against swap: `tests/guest/scripts/private-swap.sh` swaps on
/// zram, zswap and a loop device with the test owner's node 1, and checks
/// that reclaim needs the owner's RECLAIM capability, that swapped-out pages
/// come back to node 1 intact, and that neither shmem under a task policy nor
/// the neighbours read by cluster readahead ever land on node 1.
#[test]
fn private_node_series_with_swap() {
    require_platform();
    let script = std::fs::read_to_string(repo_root().join("tests/guest/scripts/private-swap.sh"))
        .expect("script");
    let run = Launch::new()
        .timeout(900)
        .run_script(&script)
        .expect("launch");
    run.expect_ktap_passed(14);
    run.expect_clean_console();
}

/// The series' kernel selftest, `tools/testing/selftests/mm/private_nodes`
/// with its wrapper `test_private_nodes.sh`, run in the guest by
/// `tests/guest/scripts/selftest-private-nodes.sh`.
#[test]
fn private_nodes_kernel_selftest() {
    require_platform();
    let script =
        std::fs::read_to_string(repo_root().join("tests/guest/scripts/selftest-private-nodes.sh"))
            .expect("script");
    let run = Launch::new()
        .timeout(600)
        .run_script(&script)
        .expect("launch");
    run.expect_ktap_passed(3);
    run.expect_clean_console();
}
