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

/// Write `bytes` of text pages into the window as a guest would: 2 MiB runs spread evenly
/// over the whole window (the rest stays holes of the memfd). Returns the pages written.
fn write_spread(g: &Guest, win: u64, bytes: u64) -> u64 {
    let run = 2u64 << 20;
    let runs = bytes / run;
    let stride = (win / runs) / run * run;
    let host = g.window_host();
    let mut pages = 0;
    for r in 0..runs {
        let off = r * stride;
        for k in 0..run / 4096 {
            let p = text_page(pages);
            // SAFETY: off + run <= win: the page lies inside the window mapping.
            unsafe {
                std::ptr::copy_nonoverlapping(p.as_ptr(), host.add((off + k * 4096) as usize), 4096)
            };
            pages += 1;
        }
    }
    pages
}

/// Host memory and scan time as the window grows and what the guest wrote stays 256 MiB.
/// `VCRAM_BENCH_WINDOWS` = window sizes in GiB (default "1 8 64").
#[test]
#[ignore]
fn scale_rss_and_scan() {
    let sizes = std::env::var("VCRAM_BENCH_WINDOWS").unwrap_or_else(|_| "1 8 64".into());
    for gib in sizes.split_whitespace() {
        let gib: u64 = gib.parse().unwrap();
        let win = gib << 30;
        let d = Daemon::start(&["--window-size", &win.to_string(), "--threads", "1"]);
        let g = Guest::with_window(win);
        let _c = Conn::open(&d.socket, &g, MemSetup::Table);
        let written = write_spread(&g, win, 256 << 20);
        let first = d.scan();
        assert_eq!(first.scan_changed_pages, written);
        let mut best_ms = f64::MAX;
        for _ in 0..3 {
            let s = d.scan();
            assert_eq!(s.scan_changed_pages, written);
            best_ms = best_ms.min(s.scan_ms_last);
        }
        let s = d.stats();
        let pid = d.child.id();
        println!(
            "scale window_gib={gib} touched={} images={} metadata={} vm_rss={} rss_anon={} rss_shmem={} first_scan_ms={:.1} scan_ms={best_ms:.2} scan_pages={}",
            written * 4096,
            s.image_bytes,
            s.metadata_bytes,
            proc_status(pid, "VmRSS:"),
            proc_status(pid, "RssAnon:"),
            proc_status(pid, "RssShmem:"),
            first.scan_ms_last,
            s.scan_pages / 4,
        );
    }
}

/// Scan-and-compress throughput with 1 and 2 workers: 256 MiB written directly, found and
/// compressed by one scan pass. The pages are dumped to `VCRAM_BENCH_DUMP` (if set) for
/// `zstd -b1 -B4096` on the same bytes.
#[test]
#[ignore]
fn scale_threads_throughput() {
    let bytes: u64 = 256 << 20;
    let win: u64 = 512 << 20;
    let pages: Vec<Vec<u8>> = (0..bytes / 4096).map(mixed_page).collect();
    if let Ok(path) = std::env::var("VCRAM_BENCH_DUMP") {
        std::fs::write(path, pages.concat()).unwrap();
    }
    // Best of 5 for each, the device and the anchor interleaved so that both see the same
    // machine (other jobs come and go on a shared one).
    let mut device = [(f64::MAX, 0.0); 2];
    let mut anchor = [(f64::MAX, 0.0); 2];
    for _ in 0..5 {
        for (k, threads) in ["1", "2"].into_iter().enumerate() {
            let d = Daemon::start(&["--window-size", &win.to_string(), "--threads", threads]);
            let g = Guest::with_window(win);
            let _c = Conn::open(&d.socket, &g, MemSetup::Table);
            for (i, p) in pages.iter().enumerate() {
                g.write(g.window_page(i as u64), p);
            }
            let c0 = cpu_secs(d.child.id());
            let s = d.scan();
            let cpu = cpu_secs(d.child.id()) - c0;
            assert_eq!(s.scan_changed_pages, bytes / 4096);
            if s.scan_ms_last < device[k].0 {
                device[k] = (s.scan_ms_last, cpu);
            }
            let (ms, cpu) = anchor_ms(&pages, k + 1);
            if ms < anchor[k].0 {
                anchor[k] = (ms, cpu);
            }
        }
    }
    for (k, (d, a)) in device.iter().zip(&anchor).enumerate() {
        let mbps = |ms: f64| bytes as f64 / 1e6 / (ms / 1e3);
        println!(
            "threads n={} scan_compress_mbps={:.1} cpu_per_wall={:.2} anchor_mbps={:.1} anchor_cpu_per_wall={:.2}",
            k + 1,
            mbps(d.0),
            d.1 / (d.0 / 1e3),
            mbps(a.0),
            a.1 / (a.0 / 1e3)
        );
    }
}

/// The anchor of the worker scaling: the same pages compressed one by one with zstd level 1
/// (a bulk context per thread, like the engine), on `n` threads of this process that share
/// nothing. Returns (wall ms, CPU seconds of this process meanwhile).
fn anchor_ms(pages: &[Vec<u8>], n: usize) -> (f64, f64) {
    let me = std::process::id();
    let c0 = cpu_secs(me);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..n {
            s.spawn(move || {
                let mut z = zstd::bulk::Compressor::new(1).unwrap();
                let mut out = vec![0u8; 8192];
                let mut total = 0usize;
                for p in pages.iter().skip(t).step_by(n) {
                    total += z.compress_to_buffer(p, &mut out[..]).unwrap();
                }
                assert!(total > 0);
            });
        }
    });
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    (ms, cpu_secs(me) - c0)
}

/// Pages like a guest's heap: text, with some binary-looking and incompressible pages.
fn mixed_page(i: u64) -> Vec<u8> {
    match i % 8 {
        0 => random_page(i),
        1 | 2 => (0..4096u64)
            .map(|k| ((k * 31 + i * 7) % 251) as u8 ^ ((k >> 5) as u8))
            .collect(),
        _ => text_page(i),
    }
}

/// 1000 clients connect to the control socket and stay (half of them mid-line): the daemon's
/// threads and memory stay bounded and `vcramctl stats` still answers.
#[test]
#[ignore]
fn scale_control_clients() {
    let d = Daemon::start(&[]);
    let pid = d.child.id();
    let threads0 = proc_status(pid, "Threads:") / 1024;
    let rss0 = proc_status(pid, "VmRSS:");
    let mut clients = Vec::new();
    for i in 0..1000 {
        match std::os::unix::net::UnixStream::connect(&d.control) {
            Ok(mut c) => {
                if i % 2 == 0 {
                    let _ = std::io::Write::write_all(&mut c, b"sta");
                }
                clients.push(c);
            }
            Err(e) => println!("connect {i}: {e}"),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut lat = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let o = std::process::Command::new(ctl_bin())
            .arg("--socket")
            .arg(&d.control)
            .args(["stats", "--json"])
            .output()
            .unwrap();
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "control clients={} threads_before={threads0} threads={} rss_before={rss0} rss={} stats_ms_median={:.1} stats_ms_max={:.1}",
        clients.len(),
        proc_status(pid, "Threads:") / 1024,
        proc_status(pid, "VmRSS:"),
        lat[lat.len() / 2],
        lat[lat.len() - 1],
    );
}

/// CPU time (user + system) the process used so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    cpu_ticks(pid) as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}
