// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! End-to-end flow tests: a real guest (TCG) with vcram.ko, the real
//! `vcram-device`, and `vcram-workload` on private node 1. The host checks the
//! device's statistics (control socket) against what the guest did.
//!
//! Each test boots one guest with a script from `tests/guest/scripts/flow-*.sh`
//! and reads `flow: key=value` lines from its serial console.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use vcram_e2e::device::{release_binary, Device};
use vcram_e2e::guest::{require_platform, Launch, Run, Running};
use vcram_e2e::repo_root;

/// The guest script `flow-<name>.sh`, with `vars` (shell assignments) first.
fn script(name: &str, vars: &[(&str, &str)]) -> String {
    let body = std::fs::read_to_string(
        repo_root()
            .join("tests/guest/scripts")
            .join(format!("flow-{name}.sh")),
    )
    .expect("flow script");
    let mut s = String::new();
    for (k, v) in vars {
        s.push_str(&format!("{k}='{v}'\n"));
    }
    s + &body
}

fn spawn(dev: &Device, script: &str) -> Running {
    require_platform();
    Launch::new()
        .device_socket(&dev.socket())
        .timeout(600)
        .spawn_script(script)
        .expect("launch")
}

fn finish(guest: Running, dev: &Device) -> Run {
    let run = guest.wait(Duration::from_secs(600)).expect("wait");
    for bad in ["BUG:", "WARNING:", "Oops", "Kernel panic", "KASAN"] {
        assert!(
            !run.serial.contains(bad),
            "guest console shows {bad:?}\n{}\n--- device ---\n{}",
            run.transcript(),
            dev.log()
        );
    }
    run
}

/// The value of `flow: ... key=value` on the serial console (last one).
fn flow_value(serial: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=");
    serial
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once("flow: ").map(|x| x.1))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.strip_prefix(pat.as_str()))
        .next_back()
        .map(str::to_string)
}

fn flow_u64(serial: &str, key: &str) -> u64 {
    flow_value(serial, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `flow: {key}=N` on the console\n{serial}"))
}

fn u(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("stats has no {key}: {stats}"))
}

/// Forces a full scan of the window, then reads the statistics.
fn scanned_stats(dev: &Device) -> Value {
    dev.control("scan").expect("scan");
    dev.stats().expect("stats")
}

/// Waits until the guest console shows `marker`.
fn wait_marker(guest: &mut Running, dev: &Device, marker: &str) {
    guest
        .wait_for_serial(marker, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n--- device ---\n{}", dev.log()));
}

/// The ratio `zstd -b<level> -B4096` reports on `file`: (input, compressed).
fn zstd_cli_ratio(file: &PathBuf, level: i32) -> (u64, u64) {
    let out = Command::new("zstd")
        .arg(format!("-b{level}"))
        .arg("-B4096")
        .arg("-q")
        .arg(file)
        .output()
        .expect("run the zstd CLI (apt-get install zstd)");
    assert!(out.status.success(), "{out:?}");
    // Terminal: "-3#name :  33554432 ->  16106192 (x2.083), ..."; piped, the
    // progress line is overwritten: "-3     16106192 (2.083) ...". The
    // compressed size is the word before the "(ratio)".
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .rfind(|l| l.contains(" ("))
        .unwrap_or_else(|| panic!("no result line in zstd's output: {text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| w.starts_with('('))
        .unwrap_or_else(|| panic!("{line}"));
    let output: u64 = words[i - 1]
        .parse()
        .unwrap_or_else(|_| panic!("zstd output {line:?}"));
    let input = std::fs::metadata(file).unwrap().len();
    (input, output)
}

/// The device's ratio for a known file (the workload's `text` pattern, seed 1,
/// 32 MiB, generated identically on the host with `--dump`) equals what the
/// zstd CLI gives on that file in 4 KiB blocks at the same level, within 2%.
#[test]
fn ratio_matches_zstd_on_4k_blocks() {
    const LEVEL: i32 = 3;
    const MIB: u64 = 32;
    let dump = std::env::temp_dir().join(format!("vcram-flow-text-{}.bin", std::process::id()));
    let st = Command::new(release_binary("vcram-workload"))
        .args(["--node", "0", "--pattern", "text", "--seed", "1"])
        .args(["--mib", &MIB.to_string(), "--dump"])
        .arg(&dump)
        .status()
        .expect("run vcram-workload --dump on the host");
    assert!(st.success());
    assert_eq!(std::fs::metadata(&dump).unwrap().len(), MIB << 20);
    let (zin, zout) = zstd_cli_ratio(&dump, LEVEL);
    let _ = std::fs::remove_file(&dump);
    assert_eq!(zin, MIB << 20);
    let zstd_ratio = zin as f64 / zout as f64;

    let dev = Device::start(&["--physical-size", "512M", "--level", &LEVEL.to_string()])
        .expect("start vcram-device");
    let mut guest = spawn(
        &dev,
        &script(
            "hold",
            &[
                ("FLOW_PATTERNS", "text"),
                ("FLOW_MIB", &MIB.to_string()),
                ("FLOW_HOLD", "10"),
            ],
        ),
    );
    wait_marker(&mut guest, &dev, "FLOW-HELD-text");
    let stats = scanned_stats(&dev);
    let run = finish(guest, &dev);
    assert_eq!(run.status.code(), Some(0), "{}", run.transcript());

    let pages = MIB * 256;
    assert_eq!(u(&stats, "zstd_level"), LEVEL as u64, "{stats}");
    assert_eq!(u(&stats, "stored_pages"), pages, "{stats}");
    assert_eq!(u(&stats, "compressed_pages"), pages, "{stats}");
    assert_eq!(u(&stats, "original_bytes"), MIB << 20, "{stats}");
    let dev_ratio = stats["ratio"].as_f64().unwrap();
    let rel = (dev_ratio - zstd_ratio).abs() / zstd_ratio;
    eprintln!(
        "ratio: device {dev_ratio:.4} ({} -> {} B), zstd -b{LEVEL} -B4096 {zstd_ratio:.4} \
         ({zin} -> {zout} B), difference {:.3}%",
        u(&stats, "original_bytes"),
        u(&stats, "compressed_bytes"),
        rel * 100.0
    );
    assert!(
        rel <= 0.02,
        "device ratio {dev_ratio} vs zstd {zstd_ratio}: {stats}"
    );
    // A sanity bound: text really compressed (so the comparison means something).
    assert!(dev_ratio > 1.5, "{stats}");
}

/// Zero pages take no physical space and are never stored as data: 32 MiB
/// of written zero pages on the node leave physical use at its idle value
/// (the window's metadata, what the driver reads right after binding) and no
/// compressed or raw page appears. The window starts zero and freed pages are
/// zeroed by DISCARD, so zero-filled pages usually do not even change in the
/// device's view: they count either not at all or as `zero_pages`. Then 32 MiB
/// of same-filled pages (`byte:7`) must count as `same_pages`, also without
/// physical space beyond idle.
#[test]
fn zero_pages_take_no_physical_space() {
    const MIB: u64 = 32;
    let dev = Device::start(&["--physical-size", "512M"]).expect("start vcram-device");
    let mut guest = spawn(
        &dev,
        &script(
            "hold",
            &[
                ("FLOW_PATTERNS", "zero byte:7"),
                ("FLOW_MIB", &MIB.to_string()),
                ("FLOW_HOLD", "10"),
            ],
        ),
    );
    wait_marker(&mut guest, &dev, "FLOW-HELD-zero");
    let zero = scanned_stats(&dev);
    wait_marker(&mut guest, &dev, "FLOW-HELD-byte:7");
    let same = scanned_stats(&dev);
    let run = finish(guest, &dev);
    assert_eq!(run.status.code(), Some(0), "{}", run.transcript());

    let pages = MIB * 256;
    let idle = flow_u64(&run.serial, "idle_physical_used");
    let granule = u(&zero, "granule");
    for (what, st) in [("zero", &zero), ("byte:7", &same)] {
        eprintln!(
            "{what}: idle physical_used {idle}, held {}; stored {} zero {} same {} \
             compressed {} raw {} compressed_bytes {}, granule {granule}",
            u(st, "physical_used"),
            u(st, "stored_pages"),
            u(st, "zero_pages"),
            u(st, "same_pages"),
            u(st, "compressed_pages"),
            u(st, "raw_pages"),
            u(st, "compressed_bytes"),
        );
        assert_eq!(u(st, "compressed_pages"), 0, "{what}: {st}");
        assert_eq!(u(st, "raw_pages"), 0, "{what}: {st}");
        assert_eq!(u(st, "compressed_bytes"), 0, "{what}: {st}");
        assert!(
            u(st, "physical_used") <= idle + granule,
            "{what} pages took physical space: idle {idle}: {st}"
        );
    }
    assert_eq!(idle, u(&zero, "metadata_bytes"), "{zero}");
    // Zero pages: not stored, or stored as zero pages.
    assert_eq!(
        u(&zero, "stored_pages"),
        u(&zero, "zero_pages"),
        "zero-filled pages stored as something else: {zero}"
    );
    assert!(u(&zero, "zero_pages") <= pages, "{zero}");
    // Same-filled pages: every one counted as same-filled, none compressed.
    assert_eq!(u(&same, "stored_pages"), pages, "{same}");
    assert_eq!(u(&same, "same_pages"), pages, "{same}");
    assert!(u(&same, "max_physical_used") <= idle + granule, "{same}");
}

/// After a free, physical use returns to idle and the device's DISCARD page
/// count matches the pages freed. Stats are read after the guest powered off
/// (the daemon keeps the last session's). Expected: exactly the workload's
/// 8192 pages: only the workload's buffer is bound to node 1 (its corpora and
/// checksums are prepared before the policy), the guest puts nothing else on a
/// private node, and the driver's own count (sysfs `discard_pages`) must agree.
#[test]
fn free_discards_the_pages_and_physical_use_returns_to_idle() {
    const MIB: u64 = 32;
    let dev = Device::start(&["--physical-size", "512M"]).expect("start vcram-device");
    let idle = dev.stats().expect("stats");
    let mut guest = spawn(&dev, &script("discard", &[("FLOW_MIB", &MIB.to_string())]));
    wait_marker(&mut guest, &dev, "# HOLD");
    let held = scanned_stats(&dev);
    let run = finish(guest, &dev);
    assert_eq!(run.status.code(), Some(0), "{}", run.transcript());
    let after = dev.stats().expect("stats");

    let pages = MIB * 256;
    let idle_used = flow_u64(&run.serial, "before_physical_used");
    let drv_before = flow_u64(&run.serial, "before_discard_pages");
    let drv_after = flow_u64(&run.serial, "after_discard_pages");
    eprintln!(
        "discard: idle physical_used {idle_used} (device before boot {}); held: stored {} physical_used {}; after: \
         physical_used {} stored {} discard_pages {} discard_requests {}; driver discard_pages \
         {drv_after} (before the workload {drv_before})",
        u(&idle, "physical_used"),
        u(&held, "stored_pages"),
        u(&held, "physical_used"),
        u(&after, "physical_used"),
        u(&after, "stored_pages"),
        u(&after, "discard_pages"),
        u(&after, "discard_requests"),
    );
    assert_eq!(u(&held, "stored_pages"), pages, "{held}");
    assert!(
        u(&held, "physical_used") > idle_used + (MIB << 20) / 4,
        "{held}"
    );
    assert_eq!(idle_used, u(&after, "metadata_bytes"), "{after}");
    assert_eq!(u(&after, "physical_used"), idle_used, "{after}");
    assert_eq!(u(&after, "stored_pages"), 0, "{after}");
    assert_eq!(u(&after, "discard_pages"), pages, "{after}");
    assert_eq!(drv_before, 0, "{}", run.serial);
    assert_eq!(
        drv_after,
        u(&after, "discard_pages"),
        "driver and device disagree\n{}",
        run.serial
    );
    assert_eq!(u(&after, "bad_requests"), 0, "{after}");
}

/// Isolation: stress-ng and memory hogs with no policy never put a page on
/// private node 1 (node 1's MemUsed unchanged, the device stores nothing and
/// its scans see no change); policies that name node 1 reach it whatever the
/// mode: `--preferred=1` puts every page there, `--interleave=0,1` about
/// half, and a `numactl --membind=1` run has its pages on node 1, stored by
/// the device.
#[test]
fn only_allocations_that_name_the_node_reach_it() {
    let dev = Device::start(&["--physical-size", "512M"]).expect("start vcram-device");
    let mut guest = spawn(&dev, &script("isolation", &[]));
    wait_marker(&mut guest, &dev, "FLOW-HOGS-DONE");
    let hogs = scanned_stats(&dev);
    wait_marker(&mut guest, &dev, "FLOW-BOUND-HELD");
    let bound = scanned_stats(&dev);
    let run = finish(guest, &dev);
    assert_eq!(run.status.code(), Some(0), "{}", run.transcript());
    let s = &run.serial;
    let before = flow_u64(s, "node1_used_kb_before");
    let after_hogs = flow_u64(s, "node1_used_kb_after_hogs");
    let with_bound = flow_u64(s, "node1_used_kb_bound");
    eprintln!(
        "isolation: node1 MemUsed kB before {before}, after hogs {after_hogs}, bound run \
         {with_bound}; statuses stress-ng {} hog {} preferred=1 {} interleave=0,1 {} membind {}; \
         device after hogs: stored {} scan_changed {}; bound: stored {} scan_changed {}",
        flow_value(s, "stress_status").unwrap_or_default(),
        flow_value(s, "hog_status").unwrap_or_default(),
        flow_value(s, "preferred_status").unwrap_or_default(),
        flow_value(s, "interleave_status").unwrap_or_default(),
        flow_value(s, "membind_status").unwrap_or_default(),
        u(&hogs, "stored_pages"),
        u(&hogs, "scan_changed_pages"),
        u(&bound, "stored_pages"),
        u(&bound, "scan_changed_pages"),
    );
    assert_eq!(flow_u64(s, "stress_status"), 0, "{s}");
    assert_eq!(flow_u64(s, "hog_status"), 0, "{s}");
    assert_eq!(after_hogs, before, "hogs reached node 1\n{s}");
    assert_eq!(u(&hogs, "stored_pages"), 0, "{hogs}");
    assert_eq!(u(&hogs, "scan_changed_pages"), 0, "{hogs}");
    assert_eq!(u(&hogs, "commit_pages"), 0, "{hogs}");
    // Preferred and interleave policies that name node 1 reach it: all 48 MiB
    // (12288 pages) of the preferred run, about half of the interleaved one.
    assert_eq!(flow_u64(s, "preferred_status"), 0, "{s}");
    assert_eq!(flow_u64(s, "preferred_n1"), 12288, "{s}");
    assert_eq!(flow_u64(s, "interleave_status"), 0, "{s}");
    let il = flow_u64(s, "interleave_n1");
    assert!(
        (4915..=7373).contains(&il),
        "interleave put {il} of 12288 pages on node 1\n{s}"
    );
    // The bound run: all of its 16 MiB buffer (and more: the whole process is
    // bound) on node 1, seen by the guest and stored by the device.
    assert_eq!(flow_u64(s, "membind_status"), 0, "{s}");
    assert!(with_bound >= before + 16 * 1024, "{s}");
    assert!(u(&bound, "stored_pages") >= 16 * 256, "{bound}");
}

/// Pressure: with 96 MiB of physical capacity, a holder keeps 32 MiB of text
/// on the node, then an incompressible 480 MiB writer crosses the high
/// watermark. The device raises HIGH (`high_events` >= 1), the driver counts
/// the PRESSURE events (`events_pressure` > 0), and the holder's checksums
/// still verify afterwards (nothing already stored is lost).
#[test]
fn pressure_is_reported_and_stored_data_survives() {
    let dev = Device::start(&["--physical-size", "96M"]).expect("start vcram-device");
    let guest = spawn(&dev, &script("pressure", &[]));
    let run = finish(guest, &dev);
    let stats = dev.stats().expect("stats");
    let s = &run.serial;
    let holder: Value = s
        .lines()
        .find_map(|l| l.split_once("FLOW-HOLDER-JSON ").map(|x| x.1.trim()))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no holder JSON\n{}", run.transcript()));
    eprintln!(
        "pressure: writer status {}; driver: held physical_used {} events_pressure {} \
         pauses {} events_overflow {}; device: max_physical_used {} of {} high_events {} \
         overflow_events {} events_lost {}; holder ok {} mismatches {}",
        flow_value(s, "writer_status").unwrap_or_default(),
        flow_value(s, "held_physical_used").unwrap_or_default(),
        flow_value(s, "writer_events_pressure").unwrap_or_default(),
        flow_value(s, "writer_pauses").unwrap_or_default(),
        flow_value(s, "writer_events_overflow").unwrap_or_default(),
        u(&stats, "max_physical_used"),
        u(&stats, "physical_capacity"),
        u(&stats, "high_events"),
        u(&stats, "overflow_events"),
        u(&stats, "events_lost"),
        holder["ok"],
        holder["checksum_mismatches"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", run.transcript());
    // Crossed the high watermark (90% of 96 MiB).
    assert!(
        u(&stats, "max_physical_used") * 100 >= u(&stats, "physical_capacity") * 90,
        "{stats}"
    );
    assert!(u(&stats, "high_events") >= 1, "{stats}");
    assert!(flow_u64(s, "writer_events_pressure") > 0, "{s}");
    // The driver's answer to HIGH: it paused the node.
    assert!(flow_u64(s, "writer_pauses") >= 1, "{s}");
    assert_eq!(flow_u64(s, "held_events_pressure"), 0, "{s}");
    // Paused: the writer's next fault on the node got SIGBUS (vcram-workload
    // exits 3), and nothing was OOM-killed.
    assert_eq!(flow_u64(s, "writer_status"), 3, "{s}");
    assert_eq!(flow_u64(s, "oom_kills"), 0, "{s}");
    // The holder survived and its data verified after the writer.
    assert_eq!(flow_u64(s, "holder_status"), 0, "{s}");
    assert_eq!(holder["ok"], Value::Bool(true), "{holder}");
    let mism = &holder["checksum_mismatches"];
    for k in ["after_write", "after_scan"] {
        assert_eq!(mism[k].as_u64(), Some(0), "{k}: {holder}");
    }
    assert_eq!(u(&stats, "device_errors"), 0, "{stats}");
    assert_eq!(u(&stats, "bad_requests"), 0, "{stats}");
}
