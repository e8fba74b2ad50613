//! End-to-end test of the private memory node series (kernel-patches/) without
//! the vcram driver: the series' test owner module claims node 1's pc-dimm as
//! a private node, and `tests/guest/scripts/private-node.sh` checks isolation,
//! mbind, move_pages, numactl, migratepages, the free callback and removal.

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
    let report = run
        .ktap()
        .unwrap_or_else(|| panic!("no KTAP\n{}", run.transcript()));
    report
        .all_passed()
        .unwrap_or_else(|e| panic!("{e}\n{}", run.transcript()));
    assert_eq!(report.cases.len(), 22);
    assert_eq!(run.status.code(), Some(0), "{}", run.transcript());
    for bad in ["BUG:", "WARNING:", "bad page", "Kernel panic"] {
        assert!(
            !run.serial.contains(bad),
            "console shows {bad:?}\n{}",
            run.serial
        );
    }
}
