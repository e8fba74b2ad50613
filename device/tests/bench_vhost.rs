// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Measurements through the real vhost-user path (run by bench/compare.sh):
//! `cargo test --release -p vcram-device --test bench_vhost -- --ignored --nocapture --test-threads=1`
//! They print `key value` lines; their assertions only check that the work was done.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vcram_device::protocol::*;

fn fill_window(g: &Guest, pages: u64) {
    let host = g.window_host();
    for i in 0..pages {
        let p = text_page(i);
        // SAFETY: i < pages, inside the window mapping.
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), host.add((i * 4096) as usize), 4096) };
    }
}

fn commit_all(c: &mut Conn, g: &Guest, pages: u64) -> Duration {
    let t0 = Instant::now();
    let chunk = 4096u64;
    let mut first = 0;
    while first < pages {
        let n = chunk.min(pages - first);
        let (_, r) = c.request(g, VCRAM_REQ_COMMIT, &[(g.window_page(first), n as u32)]);
        assert_eq!(u32::from(r.status), VCRAM_S_OK);
        first += n;
    }
    t0.elapsed()
}

#[test]
#[ignore]
fn discard_throughput() {
    for mode in ["memset", "punch"] {
        discard_throughput_mode(mode);
    }
}

fn discard_throughput_mode(mode: &str) {
    let win: u64 = 256 << 20;
    let pages = win / 4096;
    let ws = win.to_string();
    let mut args = vec!["--window-size", ws.as_str()];
    if mode == "punch" {
        args.push("--punch-holes");
    }
    let d = Daemon::start(&args);
    let g = Guest::with_window(win);
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    for &(range_pages, per_req) in &[(1u64, 256u64), (16, 64), (512, 8)] {
        // best of 3 passes over the whole window (this machine is shared: take the least
        // disturbed pass); every pass discards pages that hold images
        let mut best = f64::MAX;
        for _ in 0..3 {
            fill_window(&g, pages);
            commit_all(&mut c, &g, pages);
            assert_eq!(d.stats().stored_pages, pages);
            let pages_per_req = range_pages * per_req;
            let nreq = pages / pages_per_req;
            let inflight = 64u64;
            let t0 = Instant::now();
            let mut k = 0u64;
            while k < nreq {
                let batch = inflight.min(nreq - k);
                for j in 0..batch {
                    let base = (k + j) * pages_per_req;
                    let ranges: Vec<(u64, u32)> = (0..per_req)
                        .map(|r| (g.window_page(base + r * range_pages), range_pages as u32))
                        .collect();
                    c.post_request(&g, VCRAM_REQ_DISCARD, &ranges);
                }
                c.rq.kick();
                c.rq.wait_used(&g, batch as u16, T);
                k += batch;
            }
            best = best.min(t0.elapsed().as_secs_f64());
            let s = d.stats();
            assert_eq!(s.stored_pages, 0);
            assert_eq!(s.bad_requests, 0);
            // spot-check zeroing
            assert!(g
                .read(g.window_page(pages / 2 + 1), 4096)
                .iter()
                .all(|b| *b == 0));
        }
        println!(
            "discard_pages_per_s mode={mode} range_pages={range_pages} ranges_per_req={per_req} {:.0}",
            pages as f64 / best
        );
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[test]
#[ignore]
fn rss_after_commit() {
    let Ok(file) = std::env::var("VCRAM_BENCH_FILE") else {
        println!("VCRAM_BENCH_FILE not set; skipped");
        return;
    };
    let data = std::fs::read(&file).unwrap();
    let pages = (data.len() / 4096) as u64;
    let win = pages.div_ceil(512) * 512 * 4096;
    let d = Daemon::start(&["--window-size", &win.to_string()]);
    let g = Guest::with_window(win);
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    // SAFETY: data fits in the window (win >= pages * 4096).
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), g.window_host(), (pages * 4096) as usize)
    };
    let rss0 = proc_status(d.child.id(), "RssAnon:");
    let t = commit_all(&mut c, &g, pages);
    let s = d.stats();
    assert_eq!(s.commit_pages, pages);
    let pid = d.child.id();
    println!("file {file}");
    println!(
        "commit_vhost_mbps {:.1}",
        (pages * 4096) as f64 / 1e6 / t.as_secs_f64()
    );
    println!("device_ratio {:.4}", s.ratio);
    println!("image_bytes {}", s.image_bytes);
    println!("metadata_bytes {}", s.metadata_bytes);
    println!("arena_bytes {}", s.arena_bytes);
    println!("held_bytes {}", s.image_bytes + s.metadata_bytes);
    println!("rss_anon_before {rss0}");
    println!("rss_anon {}", proc_status(pid, "RssAnon:"));
    println!("rss_shmem {}", proc_status(pid, "RssShmem:"));
    println!("rss_file {}", proc_status(pid, "RssFile:"));
    println!("vm_rss {}", proc_status(pid, "VmRSS:"));
    // scanning the committed window through the daemon (unchanged pages), best of 3 passes
    let mut best_ms = f64::MAX;
    let mut s1 = d.scan();
    for _ in 0..3 {
        s1 = d.scan();
        best_ms = best_ms.min(s1.scan_ms_last);
    }
    println!("daemon_scan_ms {best_ms:.2}");
    println!("daemon_scan_gbps {:.2}", win as f64 / 1e9 / (best_ms / 1e3));
    assert_eq!(s1.scan_changed_pages, 0);
    // the guest frees everything: the daemon's own memory must follow
    let (_, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(0), pages as u32)]);
    assert_eq!(u32::from(r.status), VCRAM_S_OK);
    let s = d.stats();
    assert_eq!(s.stored_pages, 0);
    println!("held_after_discard {}", s.image_bytes + s.metadata_bytes);
    println!("rss_anon_after_discard {}", proc_status(pid, "RssAnon:"));
}
