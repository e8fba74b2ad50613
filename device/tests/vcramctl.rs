// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! `vcramctl` against a running daemon.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use vcram_device::stats::Snapshot;

fn ctl(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let socket = d.control.display().to_string();
    vcramctl(&[&["--socket", socket.as_str()], args].concat())
}

#[test]
fn stats_table_json_prometheus_watch() {
    let d = Daemon::start(&["--physical-size", "8M"]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    traffic(&mut c, &g, 8, 10, 2);

    let (ok, out, err) = ctl(&d, &["stats"]);
    assert!(ok, "{err}");
    println!("{out}");
    for needle in [
        "logical capacity",
        "64.00 MiB",
        "physical capacity",
        "8.00 MiB",
        "physical used",
        "max physical used",
        "original bytes",
        "compressed bytes",
        "compression ratio",
        "pages stored",
        "same-filled 0",
        "compressed 8",
        "incompressible 0",
        "discards",
        "1 requests, 2 pages",
        "commits",
        "1 requests, 10 pages",
        "scans",
        "watermark events",
        "overflow pages",
        "bad requests rejected",
        "unsupported 1",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }

    let (ok, out, _) = ctl(&d, &["stats", "--json"]);
    assert!(ok);
    let s: Snapshot = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(s.stored_pages, 8);
    assert_eq!(s.commit_pages, 10);
    assert_eq!(s.bad_requests, 1);

    let (ok, out, _) = ctl(&d, &["stats", "--prometheus"]);
    assert!(ok);
    assert!(out.contains("# TYPE vcram_physical_used_bytes gauge"));
    assert!(out.contains("vcram_stored_pages 8\n"), "{out}");
    assert!(out.contains("vcram_rejects_total{reason=\"unsupported\"} 1"));
    assert!(out.contains("vcram_commit_pages_total 10\n"));

    // --scan finds a direct write
    g.write(g.window_page(20), &text_page(20));
    let (ok, out, _) = ctl(&d, &["stats", "--json", "--scan"]);
    assert!(ok);
    let s: Snapshot = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(s.scan_changed_pages, 1);

    // --watch repeats
    let mut child = Command::new(ctl_bin())
        .arg("--socket")
        .arg(&d.control)
        .args(["stats", "--json", "--watch", "0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(lines >= 3, "{lines} samples");
}

#[test]
fn errors_are_clear() {
    let d = Daemon::start(&[]);
    let o = Command::new(ctl_bin())
        .args(["--socket", "/nonexistent/vcram.ctl", "stats"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot talk to /nonexistent/vcram.ctl"),
        "{err}"
    );
    let (ok, _, err) = ctl(&d, &["stats", "--watch", "0"]);
    assert!(!ok);
    assert!(err.contains("watch") || err.contains("interval"), "{err}");
    let (ok, out, _) = ctl(&d, &["ping"]);
    assert!(ok);
    assert!(out.contains("pong"));
}
