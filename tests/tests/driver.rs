// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! End-to-end tests of vcram.ko with the real vcram-device: the in-guest KTAP
//! suites of `guest-driver/tests/` run in the test guest, and the host checks
//! the device's own statistics afterwards.

use vcram_e2e::device::Device;
use vcram_e2e::guest::{require_platform, Launch, Run};
use vcram_e2e::repo_root;

fn driver_built() -> bool {
    let env =
        std::fs::read_to_string(repo_root().join("images/out/platform.env")).unwrap_or_default();
    let kbuild = env
        .lines()
        .find_map(|l| l.strip_prefix("KBUILD="))
        .unwrap_or("")
        .to_string();
    std::path::Path::new(&kbuild)
        .join("../src/include/linux/node_private.h")
        .exists()
}

/// Runs one guest-driver suite against a fresh device; returns the run.
fn run_suite(script: &str, device_args: &[&str], timeout: u64) -> (Run, Device) {
    require_platform();
    assert!(
        driver_built(),
        "the platform kernel lacks kernel-patches/ (node_private.h): re-run scripts/setup"
    );
    let dev = Device::start(device_args).expect("start vcram-device");
    let script = std::fs::read_to_string(repo_root().join("guest-driver/tests").join(script))
        .expect("suite script");
    let run = Launch::new()
        .device_socket(&dev.socket())
        .timeout(timeout)
        .run_script(&script)
        .expect("launch");
    (run, dev)
}

fn assert_ktap_passed(run: &Run, dev: &Device, min_cases: usize) {
    let report = run
        .ktap()
        .unwrap_or_else(|| panic!("no KTAP\n{}\n{}", run.transcript(), dev.log()));
    report
        .all_passed()
        .unwrap_or_else(|e| panic!("{e}\n{}\n--- device ---\n{}", run.transcript(), dev.log()));
    assert!(report.cases.len() >= min_cases, "{report:?}");
    run.expect_clean_console();
}

#[test]
fn driver_binds_places_discards_and_reports() {
    let (run, dev) = run_suite("vcram-test.sh", &[], 900);
    assert_ktap_passed(&run, &dev, 20);
    assert_eq!(run.status.code(), Some(0), "{}", run.transcript());
    // The host's view of the same session: pages were stored, then freed
    // pages were discarded and physical use went back down.
    let stats = dev.stats().expect("stats");
    assert!(stats["discard_pages"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert!(
        stats["discard_requests"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert!(
        stats["max_physical_used"].as_u64() > stats["physical_used"].as_u64(),
        "physical use did not fall after the frees: {stats}"
    );
    assert_eq!(stats["bad_requests"].as_u64(), Some(0), "{stats}");
    // The driver asked for a clean device at probe (protocol 1.2 RESET).
    assert!(
        stats["reset_requests"].as_u64().unwrap_or(0) >= 1,
        "no RESET at probe: {stats}"
    );
}

#[test]
fn pressure_pauses_the_node_and_keeps_stored_data() {
    let (run, dev) = run_suite("vcram-pressure.sh", &["--physical-size", "96M"], 900);
    assert_ktap_passed(&run, &dev, 8);
    let stats = dev.stats().expect("stats");
    assert!(stats["high_events"].as_u64().unwrap_or(0) >= 1, "{stats}");
}

#[test]
fn device_removal_with_pages_in_use_does_not_crash_the_guest() {
    let (run, dev) = run_suite("vcram-devremove.sh", &[], 900);
    assert_ktap_passed(&run, &dev, 6);
}

#[test]
fn tiering_demotes_into_the_node() {
    let (run, dev) = run_suite("vcram-tiering.sh", &[], 900);
    assert_ktap_passed(&run, &dev, 4);
}
