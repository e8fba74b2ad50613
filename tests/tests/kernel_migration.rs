// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! The kernel's own mm migration selftest (`tools/testing/selftests/mm/migration.c`
//! of the guest kernel's tree, built into the initramfs as `mm-migration`) run
//! against the series' private node 1: `tests/guest/scripts/mm-migration.sh`
//! runs it without the test owner module, with caps=2 (USER_NUMA) and with
//! caps=0 (no USER_NUMA) and asserts what it does with node 1.

use vcram_e2e::guest::{require_platform, Launch};
use vcram_e2e::repo_root;

#[test]
fn kernel_mm_migration_selftest_with_private_node() {
    require_platform();
    let script = std::fs::read_to_string(repo_root().join("tests/guest/scripts/mm-migration.sh"))
        .expect("script");
    // The selftest skips every case with fewer than 3 CPUs.
    let run = Launch::new()
        .arg("--smp")
        .arg("3")
        .timeout(900)
        .run_script(&script)
        .expect("launch");
    run.expect_ktap_passed(15);
    run.expect_clean_console();
}
