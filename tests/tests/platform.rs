// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! End-to-end tests of the guest platform: the real kernel and initramfs
//! booted under QEMU by `scripts/launch`, checked from inside the guest (KTAP)
//! and from the host (QMP).

use std::process::Command;
use std::time::Duration;
use vcram_e2e::guest::{require_platform, Launch};
use vcram_e2e::qmp::Qmp;
use vcram_e2e::repo_root;

const GIB: u64 = 1 << 30;

#[test]
fn guest_boots_and_returns_script_status() {
    require_platform();
    let run = Launch::new()
        .run_script("echo hello-from-guest\ncat /proc/version\nexit 7\n")
        .expect("launch");
    assert!(
        run.serial.contains("vcram-init: ready"),
        "{}",
        run.transcript()
    );
    assert!(
        run.serial.contains("hello-from-guest"),
        "{}",
        run.transcript()
    );
    assert!(
        run.serial.contains("Linux version 7.3"),
        "{}",
        run.transcript()
    );
    assert_eq!(run.status.code(), Some(7), "{}", run.transcript());
    let info = run.info();
    assert!(
        matches!(info.get("accel").map(String::as_str), Some("kvm" | "tcg")),
        "launcher did not say which accelerator: {info:?}"
    );
}

#[test]
fn window_node_is_possible_and_empty() {
    require_platform();
    let run = Launch::new()
        .run_script("vcram-platform-check\n")
        .expect("launch");
    run.expect_ktap_passed(6);
}

#[test]
fn window_appears_in_query_memory_devices() {
    require_platform();
    let mut guest = Launch::new()
        .window_size("512M")
        .spawn_script("echo waiting-for-host\nsleep 600\n")
        .expect("launch");
    guest
        .wait_for_serial("waiting-for-host", Duration::from_secs(120))
        .expect("guest reached the script");
    let info = vcram_e2e::guest::launcher_info(&guest.launcher());
    let base = u64::from_str_radix(info["base"].trim_start_matches("0x"), 16).unwrap();
    let size = u64::from_str_radix(info["size"].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(size, GIB / 2);

    let mut qmp: Qmp = guest.qmp().expect("qmp");
    let devices = qmp
        .execute("query-memory-devices", serde_json::json!({}))
        .expect("query-memory-devices");
    let dimms: Vec<_> = devices
        .as_array()
        .expect("array")
        .iter()
        .filter(|d| d["type"] == "dimm")
        .collect();
    assert_eq!(dimms.len(), 1, "{devices}");
    let d = &dimms[0]["data"];
    assert_eq!(d["addr"].as_u64(), Some(base), "{devices}");
    assert_eq!(d["size"].as_u64(), Some(size), "{devices}");
    assert_eq!(d["node"].as_u64(), Some(1), "{devices}");
    assert_eq!(d["memdev"], "/objects/vcram-window", "{devices}");

    // The guest never onlined it: QEMU's view of guest RAM above 4 GiB is only
    // the dimm, and the window's node has no memory.
    let _ = qmp.execute("quit", serde_json::json!({}));
    let run = guest.wait(Duration::from_secs(30)).expect("wait");
    assert_eq!(
        run.status.code(),
        Some(125),
        "a guest stopped by QMP reports no status\n{}",
        run.transcript()
    );
}

#[test]
fn timeout_stops_the_guest_and_leaves_no_process() {
    require_platform();
    let run = Launch::new()
        .timeout(3)
        .run_script("sleep 600\n")
        .expect("launch");
    assert_eq!(run.status.code(), Some(124), "{}", run.transcript());
    assert!(
        run.launcher.contains("timeout after 3 s"),
        "{}",
        run.transcript()
    );
    // QEMU's command line names the launch's run dir (its QMP socket): no
    // process may be left that names it.
    let out = Command::new("pgrep")
        .args(["-f", &format!("{}/qmp.sock", run.run_dir.display())])
        .output()
        .expect("pgrep");
    assert!(
        out.stdout.is_empty(),
        "stray processes: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn launch_cmd(args: &[&str]) -> std::process::Output {
    Command::new(repo_root().join("scripts/launch"))
        .args(args)
        .output()
        .expect("run scripts/launch")
}

#[test]
fn window_size_must_be_a_multiple_of_the_block_size() {
    let out = launch_cmd(&["--window-size", "100M", "--script", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a multiple of the guest's memory block size"),
        "{err}"
    );
    let out = launch_cmd(&["--window-size", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a size"));
}

#[test]
fn unknown_options_and_missing_files_are_refused() {
    let out = launch_cmd(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option '--frobnicate'"));
    let out = launch_cmd(&["--script", "/nonexistent/script.sh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn qmp_socket_in_use_is_refused() {
    let dir = std::env::temp_dir().join(format!("vcram-e2e-sock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("busy.sock");
    let _ = std::fs::remove_file(&path);
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let script = dir.join("s.sh");
    std::fs::write(&script, "true\n").unwrap();
    let out = launch_cmd(&[
        "--qmp",
        path.to_str().unwrap(),
        "--script",
        script.to_str().unwrap(),
        "--kernel",
        "/dev/null",
        "--initrd",
        "/dev/null",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is in use"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn device_socket_must_exist() {
    let out = launch_cmd(&[
        "--device-socket",
        "/nonexistent/vcram.sock",
        "--kernel",
        "/dev/null",
        "--initrd",
        "/dev/null",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not a socket"), "{err}");
}
