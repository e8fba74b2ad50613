// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! The phases of a run, in order (each one KTAP test case):
//!
//! 1. `alloc_bind`: set_mempolicy (with `--policy set_mempolicy`), mmap a
//!    private anonymous buffer, mbind it (with `--policy mbind`).
//! 2. `fill`: optionally MADV_POPULATE_WRITE, then write every page from the
//!    pattern, taking each page's checksum from the generated contents.
//! 3. `verify_after_write`: checksum every page of the buffer again.
//! 4. `placement`: move_pages query; every page must be on a `--node` node.
//! 5. `migrate`: move_pages everything to `--migrate-node`, check each
//!    page's status and the placement, verify the checksums there, move
//!    back to the first `--node`, check status and placement again.
//! 6. `verify_after_migrate`: checksums after the round trip.
//! 7. `verify_after_scan`: `--hold` / `--hold-seconds` waits first (a
//!    test reads device stats meanwhile, or puts the device under
//!    pressure), then `--wait-scan` seconds; then checksums and placement
//!    again. Runs when either is given.
//! 8. `bench`: `--bench read|write` passes over the buffer (MB/s).
//! 9. `free`: munmap, or MADV_DONTNEED and a check that no page is left.
//! 10. `reuse_zero`: touch the range again (dontneed) or a fresh mapping
//!     bound the same way (munmap); every page must read back zero and lie
//!     on a `--node` node.

use super::args::{BenchMode, Config, FreeMode, Policy, DEFAULT_SIZE};
use super::json::Json;
use super::numa::{self, Mapping, NodeMask, Placement};
use super::pattern::{self, Filler, PatternSpec};
use super::report::{PhaseRecord, Reporter};
use super::{bench, hash, signals, EXIT_ENOMEM, EXIT_FAIL, EXIT_OK, EXIT_SIGBUS};

use std::io::Write;
use std::time::{Duration, Instant};

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Page indices whose checksum differs, and how many.
pub struct Mismatches {
    pub count: usize,
    pub first: Vec<usize>,
}

/// Re-hashes every page and compares with `hashes`.
fn verify(m: &Mapping, page: usize, hashes: &[u64]) -> Mismatches {
    let mut out = Mismatches {
        count: 0,
        first: Vec::new(),
    };
    for (i, &h) in hashes.iter().enumerate() {
        // SAFETY: page i lies inside the mapping.
        let got = unsafe { hash::hash_raw(m.ptr().add(i * page), page) };
        if got != h {
            out.count += 1;
            if out.first.len() < 8 {
                out.first.push(i);
            }
        }
    }
    out
}

fn verify_phase(
    name: &'static str,
    m: &Mapping,
    page: usize,
    hashes: &[u64],
) -> (PhaseRecord, usize) {
    let mut r = PhaseRecord::new(name);
    let t = Instant::now();
    let mm = verify(m, page, hashes);
    r.ms = Some(ms_since(t));
    r.bytes = Some(m.len() as u64);
    r.detail("pages", hashes.len());
    r.detail("mismatches", mm.count);
    if mm.count > 0 {
        r.detail("first_mismatches", mm.first.clone());
        r.fail(format!(
            "{} of {} pages changed (first: {:?})",
            mm.count,
            hashes.len(),
            mm.first
        ));
    }
    (r, mm.count)
}

fn placement_json(p: &Placement) -> Json {
    Json::Obj(
        p.per_node
            .iter()
            .map(|(n, c)| (n.to_string(), Json::from(*c)))
            .chain(
                p.errors
                    .iter()
                    .map(|(e, c)| (numa::errno_name(*e), Json::from(*c))),
            )
            .collect(),
    )
}

/// Queries placement and checks every page is on one of `nodes`; adds the
/// counts to `r` under `key`.
fn check_placement(
    r: &mut PhaseRecord,
    key: &str,
    addrs: &[*mut u8],
    nodes: &[u32],
) -> Option<Placement> {
    match numa::query_nodes(addrs) {
        Ok(st) => {
            let p = Placement::from_status(&st);
            r.detail(key, placement_json(&p));
            let bad = p.misplaced(nodes);
            if bad > 0 {
                r.fail(format!(
                    "{key}: {bad} of {} pages not on node(s) {nodes:?}: {}",
                    addrs.len(),
                    p.summary()
                ));
            }
            Some(p)
        }
        Err(e) => {
            r.fail(format!("{key}: move_pages query: {e}"));
            None
        }
    }
}

/// Moves every page to `node`; checks each page's status.
fn move_all(r: &mut PhaseRecord, key: &str, addrs: &[*mut u8], node: u32) -> f64 {
    let targets = vec![node as i32; addrs.len()];
    let mut status = vec![i32::MIN; addrs.len()];
    let t = Instant::now();
    let res = numa::move_pages(addrs, Some(&targets), &mut status, numa::MPOL_MF_MOVE);
    let ms = ms_since(t);
    r.detail(&format!("{key}_ms"), ms);
    match res {
        Ok(not_moved) => {
            let p = Placement::from_status(&status);
            r.detail(&format!("{key}_status"), placement_json(&p));
            let bad = p.misplaced(&[node]);
            if bad > 0 || not_moved > 0 {
                r.fail(format!(
                    "{key}: move_pages to node {node}: {bad} pages with another status ({}), {not_moved} not moved",
                    p.summary()
                ));
            }
        }
        Err(e) => r.fail(format!("{key}: move_pages to node {node}: {e}")),
    }
    ms
}

/// Write-faults every page without changing its contents.
///
/// A `lock or [p], 0` in assembly: a real write access (an idempotent
/// atomic RMW in Rust may be compiled into a plain load, which would only
/// map the shared zero page).
fn touch_pages(m: &Mapping, page: usize) {
    for i in 0..m.len() / page {
        // SAFETY: page-aligned address inside the mapping.
        unsafe { touch_write(m.ptr().add(i * page)) };
    }
}

/// # Safety
/// `p` must be valid for writes of 8 bytes and 8-byte aligned.
#[cfg(target_arch = "x86_64")]
unsafe fn touch_write(p: *mut u8) {
    std::arch::asm!("lock or qword ptr [{0}], 0", in(reg) p, options(nostack));
}

/// # Safety
/// `p` must be valid for reads and writes of a byte.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn touch_write(p: *mut u8) {
    let v = std::ptr::read_volatile(p);
    std::ptr::write_volatile(p, v);
}

/// Pages that are not all zero.
fn nonzero_pages(m: &Mapping, page: usize) -> (usize, Vec<usize>) {
    let mut n = 0;
    let mut first = Vec::new();
    for i in 0..m.len() / page {
        // SAFETY: inside the mapping.
        let s = unsafe { std::slice::from_raw_parts(m.ptr().add(i * page), page) };
        if s.iter().any(|&b| b != 0) {
            n += 1;
            if first.len() < 8 {
                first.push(i);
            }
        }
    }
    (n, first)
}

/// Applies --thp and --policy mbind to a fresh mapping.
fn bind(cfg: &Config, m: &Mapping, mask: &NodeMask) -> Result<(), String> {
    if let Some(on) = cfg.thp {
        let adv = if on {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        m.madvise(adv).map_err(|e| format!("madvise THP: {e}"))?;
    }
    if cfg.policy == Policy::Mbind {
        numa::mbind(m.ptr() as usize, m.len(), numa::MPOL_BIND, mask, 0)
            .map_err(|e| format!("mbind(MPOL_BIND, {:?}): {e}", cfg.nodes))?;
    }
    Ok(())
}

/// Waits for `--hold`/`--hold-seconds`; returns the seconds held.
fn hold(cfg: &Config, m: &Mapping, pages: usize) -> f64 {
    signals::install_release();
    let msg = format!(
        "HOLD pid={} pages={pages} addr={:#x} node={:?}: send SIGUSR1{} to continue{}",
        std::process::id(),
        m.ptr() as usize,
        cfg.nodes,
        if cfg.hold { " or a line on stdin" } else { "" },
        cfg.hold_seconds
            .map(|s| format!(" (or wait {s} s)"))
            .unwrap_or_default()
    );
    if cfg.json {
        eprintln!("vcram-workload: {msg}");
    } else {
        println!("# {msg}");
    }
    let _ = std::io::stdout().flush();
    let t = Instant::now();
    let deadline = cfg.hold_seconds.map(|s| t + Duration::from_secs_f64(s));
    let mut watch_stdin = cfg.hold;
    loop {
        if signals::released() {
            break;
        }
        let mut wait = Duration::from_millis(200);
        if let Some(d) = deadline {
            let now = Instant::now();
            if now >= d {
                break;
            }
            wait = wait.min(d - now);
        }
        let ms = wait.as_millis().max(1) as i32;
        if watch_stdin {
            let mut pfd = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                let mut buf = [0u8; 256];
                // SAFETY: reading into our buffer.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    break;
                }
                // EOF or error: only signals (or the deadline) release now
                watch_stdin = false;
            }
        } else {
            // SAFETY: poll with no fds is a sleep that signals interrupt.
            unsafe { libc::poll(std::ptr::null_mut(), 0, ms) };
        }
    }
    signals::uninstall_release();
    t.elapsed().as_secs_f64()
}

/// The buffer size `cfg` asks for, in bytes (before rounding to pages).
fn requested_size(cfg: &Config, page: usize) -> Result<u64, String> {
    match (cfg.size, &cfg.pattern) {
        (Some(s), _) => Ok(s),
        (None, PatternSpec::File(p)) => Filler::file_pages(p, page)
            .map(|n| n * page as u64)
            .map_err(|e| format!("pattern file {p}: {e}")),
        (None, _) => Ok(DEFAULT_SIZE),
    }
}

/// The filler for `pages` pages of `page` bytes of the configured pattern.
fn filler(cfg: &Config, pages: usize, page: usize) -> Result<Filler, String> {
    Filler::new(
        &cfg.pattern,
        pages,
        page,
        cfg.seed,
        &cfg.binary_dir,
        cfg.text_file.as_deref(),
    )
}

/// `--dump PATH`: writes the pages of the pattern to `path`; prints the
/// page counts per kind. Exit status 0, or 1 on an error.
pub fn dump(cfg: &Config, path: &str) -> i32 {
    let page = numa::page_size();
    let res = requested_size(cfg, page).and_then(|size| {
        let pages = size.div_ceil(page as u64) as usize;
        let f = filler(cfg, pages, page)?;
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?,
        );
        let mut buf = vec![0u8; page];
        for i in 0..pages {
            f.fill_page(i, &mut buf);
            out.write_all(&buf).map_err(|e| format!("{path}: {e}"))?;
        }
        out.flush().map_err(|e| format!("{path}: {e}"))?;
        let kinds: Vec<String> = pattern::count_kinds(&f.kinds)
            .iter()
            .map(|(k, c)| format!("{}={c}", k.name()))
            .collect();
        Ok(format!(
            "{pages} pages of {} to {path}: {}",
            cfg.pattern,
            kinds.join(" ")
        ))
    });
    match res {
        Ok(msg) => {
            println!("{msg}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("vcram-workload: {e}");
            EXIT_FAIL
        }
    }
}

/// Runs all phases; prints the report; returns the exit status.
pub fn run(cfg: &Config) -> i32 {
    let page = numa::page_size();
    let mut rep = Reporter::new(cfg.json);
    signals::install_sigbus();
    let mask = NodeMask::from_nodes(&cfg.nodes);
    let mut summary = Json::obj([
        ("program", Json::str("vcram-workload")),
        ("version", Json::str(env!("CARGO_PKG_VERSION"))),
    ]);
    // (phase, exit status) when allocation on the node stopped
    let mut stop: Option<(&'static str, i32)> = None;
    let mut error = Json::Null;

    // ---- alloc_bind (with preparation of the pattern) ----
    let mut r = PhaseRecord::new("alloc_bind");
    let size = requested_size(cfg, page);
    let pages = size
        .as_ref()
        .map_or(0, |s| s.div_ceil(page as u64) as usize);
    let len = pages * page;
    summary.push(
        "config",
        Json::obj([
            ("bytes", Json::from(len)),
            ("pages", Json::from(pages)),
            ("page_size", Json::from(page)),
            ("nodes", Json::from(cfg.nodes.clone())),
            ("policy", Json::str(cfg.policy.name())),
            ("pattern", Json::str(cfg.pattern.to_string())),
            ("seed", Json::from(cfg.seed)),
            ("populate", Json::from(cfg.populate)),
            ("oom_score_adj", cfg.oom_score_adj.map(|v| v as i64).into()),
            ("thp", cfg.thp.map(|t| if t { "on" } else { "off" }).into()),
            ("migrate", Json::from(cfg.migrate)),
            ("migrate_node", Json::from(cfg.migrate_node)),
            ("wait_scan_s", cfg.wait_scan.into()),
            ("bench", cfg.bench.map(BenchMode::name).into()),
            ("passes", Json::from(cfg.passes)),
            ("hold", Json::from(cfg.hold)),
            ("hold_seconds", cfg.hold_seconds.into()),
            ("free", Json::str(cfg.free.name())),
            ("reuse", Json::from(cfg.reuse)),
        ]),
    );
    let t = Instant::now();
    // Corpora and checksums are allocated (and written) before any policy
    // of ours, so that only the buffer lands on the node.
    let prepared = size.and_then(|_| filler(cfg, pages, page));
    let filler = match prepared {
        Ok(f) => Some(f),
        Err(e) => {
            r.fail(e);
            None
        }
    };
    let mut hashes = vec![u64::MAX; pages];
    let mut scratch = vec![0xffu8; page];
    r.detail("prepare_ms", ms_since(t));
    let t = Instant::now();
    let mut policy_set = false;
    let mut map: Option<Mapping> = None;
    if let Some(adj) = cfg.oom_score_adj {
        if let Err(e) = std::fs::write("/proc/self/oom_score_adj", adj.to_string()) {
            r.fail(format!("writing {adj} to /proc/self/oom_score_adj: {e}"));
        }
        r.detail("oom_score_adj", adj as i64);
    }
    if r.passed() && cfg.policy == Policy::SetMempolicy {
        match numa::set_mempolicy(numa::MPOL_BIND, Some(&mask)) {
            Ok(()) => policy_set = true,
            Err(e) => r.fail(format!("set_mempolicy(MPOL_BIND, {:?}): {e}", cfg.nodes)),
        }
    }
    if r.passed() {
        match Mapping::new(len) {
            Ok(m) => {
                if let Err(e) = bind(cfg, &m, &mask) {
                    r.fail(e);
                }
                signals::set_buffer(m.ptr(), m.len(), page);
                r.detail("addr", format!("{:#x}", m.ptr() as usize));
                map = Some(m);
            }
            Err(e) => {
                if e.raw_os_error() == Some(libc::ENOMEM) {
                    stop = Some(("alloc_bind", EXIT_ENOMEM));
                    error = Json::obj([
                        ("kind", Json::str("ENOMEM")),
                        ("phase", Json::str("alloc_bind")),
                        ("call", Json::str("mmap")),
                    ]);
                }
                r.fail(format!("mmap {len} bytes: {e}"));
            }
        }
    }
    r.ms = Some(ms_since(t));
    r.detail("bytes_requested", len);
    r.detail("policy", cfg.policy.name());
    r.detail("nodes", cfg.nodes.clone());
    let ok = r.passed();
    rep.record(r);
    let (Some(m), Some(filler), true) = (map, filler, ok) else {
        rep.skip_rest("allocation or binding failed");
        return finish(rep, summary, error, stop, policy_set);
    };
    let addrs = m.page_addrs(page);

    // ---- fill ----
    let mut r = PhaseRecord::new("fill");
    let t = Instant::now();
    // In chunks: populate (with --populate), then write and checksum, so
    // that when allocation on the node stops, what was stored before can
    // still be checked.
    let chunk_pages = 512;
    let mut populate = cfg.populate;
    let mut populate_ms = 0.0;
    let mut filled = 0;
    while filled < pages {
        let n = chunk_pages.min(pages - filled);
        if populate {
            let tp = Instant::now();
            let res = m.madvise_range(filled * page, n * page, numa::MADV_POPULATE_WRITE);
            populate_ms += ms_since(tp);
            if let Err(e) = res {
                let errno = e.raw_os_error().unwrap_or(0);
                if errno == libc::EINVAL && filled == 0 {
                    r.note("MADV_POPULATE_WRITE not supported: pages are faulted by the writes");
                    populate = false;
                    continue;
                }
                let present = numa::query_nodes(&addrs)
                    .map(|st| st.iter().filter(|&&s| s >= 0).count())
                    .unwrap_or(0);
                let kind = match errno {
                    libc::ENOMEM => {
                        stop = Some(("fill", EXIT_ENOMEM));
                        "ENOMEM"
                    }
                    libc::EFAULT => {
                        stop = Some(("fill", EXIT_SIGBUS));
                        "EFAULT (SIGBUS)"
                    }
                    _ => "error",
                };
                error = Json::obj([
                    ("kind", Json::str(kind)),
                    ("phase", Json::str("fill")),
                    ("call", Json::str("madvise(MADV_POPULATE_WRITE)")),
                    ("errno", Json::from(errno as i64)),
                    ("pages_filled", Json::from(filled)),
                    ("pages_present", Json::from(present)),
                    ("pages", Json::from(pages)),
                ]);
                r.fail(format!(
                    "{kind}: allocation on node(s) {:?} stopped: {filled} of {pages} pages filled, {present} present (MADV_POPULATE_WRITE: {e}); the later phases check the filled pages",
                    cfg.nodes
                ));
                break;
            }
        }
        for i in filled..filled + n {
            filler.fill_page(i, &mut scratch);
            hashes[i] = hash::hash_bytes(&scratch);
            // SAFETY: page i lies inside the mapping; scratch is one page.
            unsafe { std::ptr::copy_nonoverlapping(scratch.as_ptr(), addrs[i], page) };
        }
        filled += n;
    }
    if cfg.populate {
        r.detail("populate_ms", populate_ms);
    }
    r.detail("pages_filled", filled);
    r.ms = Some(ms_since(t));
    r.bytes = Some((filled * page) as u64);
    let kinds = pattern::count_kinds(&filler.kinds);
    let kinds_json = Json::Obj(
        kinds
            .iter()
            .map(|(k, c)| (k.name().to_string(), Json::from(*c)))
            .collect(),
    );
    let nominal = pattern::nominal_ratio(&filler.kinds);
    r.detail("pattern", cfg.pattern.to_string());
    r.detail("pages_by_kind", kinds_json.clone());
    r.detail("nominal_ratio", nominal);
    for s in &filler.sources {
        r.note(format!("corpus {s}"));
    }
    summary.push("pages_by_kind", kinds_json);
    summary.push("nominal_ratio", nominal.into());
    summary.push("corpora", filler.sources.clone().into());
    rep.record(r);
    drop(filler);
    if filled == 0 {
        rep.skip_rest("nothing was filled");
        drop(m);
        return finish(rep, summary, error, stop, policy_set);
    }
    // The later phases check the filled pages (all of them, unless
    // allocation stopped).
    let hashes = &hashes[..filled];
    let addrs_all = addrs;
    let addrs = &addrs_all[..filled];
    let flen = filled * page;

    // ---- verify_after_write ----
    let (r, after_write) = verify_phase("verify_after_write", &m, page, hashes);
    rep.record(r);
    let mut mismatches = Json::obj([("after_write", Json::from(after_write))]);

    // ---- placement ----
    let mut r = PhaseRecord::new("placement");
    let t = Instant::now();
    let p = check_placement(&mut r, "pages_per_node", addrs, &cfg.nodes);
    r.ms = Some(ms_since(t));
    if let Some(p) = &p {
        summary.push("pages_per_node", placement_json(p));
    }
    rep.record(r);

    // ---- migrate, verify_after_migrate ----
    if cfg.migrate {
        let mut r = PhaseRecord::new("migrate");
        let t = Instant::now();
        let home = cfg.nodes[0];
        move_all(&mut r, "to_migrate_node", addrs, cfg.migrate_node);
        check_placement(&mut r, "on_migrate_node", addrs, &[cfg.migrate_node]);
        let mid = verify(&m, page, hashes);
        r.detail("mismatches_on_migrate_node", mid.count);
        if mid.count > 0 {
            r.fail(format!(
                "{} pages changed on node {} (first: {:?})",
                mid.count, cfg.migrate_node, mid.first
            ));
        }
        move_all(&mut r, "back", addrs, home);
        check_placement(&mut r, "back_on_node", addrs, &[home]);
        r.ms = Some(ms_since(t));
        r.bytes = Some(2 * flen as u64);
        mismatches.push("on_migrate_node", Json::from(mid.count));
        rep.record(r);
        let (r, n) = verify_phase("verify_after_migrate", &m, page, hashes);
        mismatches.push("after_migrate", Json::from(n));
        rep.record(r);
    } else {
        rep.record(PhaseRecord::skip("migrate", "no --migrate"));
        rep.record(PhaseRecord::skip("verify_after_migrate", "no --migrate"));
    }

    // ---- hold, then verify_after_scan ----
    let mut held = None;
    if cfg.hold || cfg.hold_seconds.is_some() {
        let s = hold(cfg, &m, filled);
        rep.diag(&format!("held {s:.1} s"));
        summary.push("held_s", Json::Num(s));
        held = Some(s);
    }
    if cfg.wait_scan.is_some() || held.is_some() {
        let secs = cfg.wait_scan.unwrap_or(0.0);
        std::thread::sleep(Duration::from_secs_f64(secs));
        let (mut r, n) = verify_phase("verify_after_scan", &m, page, hashes);
        r.detail("waited_s", secs + held.unwrap_or(0.0));
        check_placement(&mut r, "pages_per_node", addrs, &cfg.nodes);
        mismatches.push("after_scan", Json::from(n));
        rep.record(r);
    } else {
        rep.record(PhaseRecord::skip(
            "verify_after_scan",
            "no --wait-scan or --hold",
        ));
    }
    summary.push("checksum_mismatches", mismatches);

    // ---- bench ----
    if let Some(mode) = cfg.bench {
        let mut r = PhaseRecord::new("bench");
        let t = Instant::now();
        // SAFETY: the whole mapping is ours, page aligned.
        let mbs = unsafe { bench::run(m.ptr(), flen, mode == BenchMode::Write, cfg.passes) };
        r.ms = Some(ms_since(t));
        r.bytes = Some(flen as u64 * cfg.passes as u64);
        let best = mbs.iter().copied().fold(0.0, f64::max);
        let median = bench::median(&mbs);
        r.detail("mode", mode.name());
        r.detail(
            "passes_mb_per_s",
            Json::Arr(mbs.iter().map(|&x| Json::Num(x)).collect()),
        );
        r.detail("best_mb_per_s", best);
        r.detail("median_mb_per_s", median);
        summary.push(
            "bench",
            Json::obj([
                ("mode", Json::str(mode.name())),
                ("bytes", Json::from(flen)),
                (
                    "passes_mb_per_s",
                    Json::Arr(mbs.iter().map(|&x| Json::Num(x)).collect()),
                ),
                ("best_mb_per_s", Json::Num(best)),
                ("median_mb_per_s", median.into()),
            ]),
        );
        rep.record(r);
    } else {
        rep.record(PhaseRecord::skip("bench", "no --bench"));
    }

    // ---- free ----
    let mut r = PhaseRecord::new("free");
    r.detail("mode", cfg.free.name());
    r.bytes = Some(len as u64);
    let t = Instant::now();
    let remaining = match cfg.free {
        FreeMode::Munmap => {
            signals::set_buffer(std::ptr::null_mut(), 0, page);
            if let Err(e) = m.unmap() {
                r.fail(format!("munmap: {e}"));
            }
            r.ms = Some(ms_since(t));
            None
        }
        FreeMode::DontNeed => {
            if let Err(e) = m.madvise(libc::MADV_DONTNEED) {
                r.fail(format!("madvise(MADV_DONTNEED): {e}"));
            }
            r.ms = Some(ms_since(t));
            match numa::query_nodes(&addrs_all) {
                Ok(st) => {
                    let p = Placement::from_status(&st);
                    let present = pages - p.absent();
                    r.detail("pages_left", present);
                    if present > 0 {
                        r.fail(format!(
                            "{present} pages still present after MADV_DONTNEED: {}",
                            p.summary()
                        ));
                    }
                }
                Err(e) => r.fail(format!("move_pages query: {e}")),
            }
            Some(m)
        }
    };
    rep.record(r);

    // ---- reuse_zero ----
    if cfg.reuse {
        let mut r = PhaseRecord::new("reuse_zero");
        let t = Instant::now();
        let m2 = match remaining {
            Some(m) => Ok(m),
            None => Mapping::new(len)
                .map_err(|e| format!("mmap: {e}"))
                .and_then(|m| bind(cfg, &m, &mask).map(|_| m)),
        };
        match m2 {
            Ok(m2) => {
                signals::set_buffer(m2.ptr(), m2.len(), page);
                r.detail(
                    "mapping",
                    if cfg.free == FreeMode::DontNeed {
                        "same"
                    } else {
                        "fresh"
                    },
                );
                touch_pages(&m2, page);
                let (n, first) = nonzero_pages(&m2, page);
                r.detail("nonzero_pages", n);
                if n > 0 {
                    r.fail(format!(
                        "{n} of {pages} reused pages are not zero (first: {first:?})"
                    ));
                }
                check_placement(&mut r, "pages_per_node", &m2.page_addrs(page), &cfg.nodes);
                r.ms = Some(ms_since(t));
                r.bytes = Some(len as u64);
                signals::set_buffer(std::ptr::null_mut(), 0, page);
                if let Err(e) = m2.unmap() {
                    r.fail(format!("munmap: {e}"));
                }
            }
            Err(e) => r.fail(e),
        }
        rep.record(r);
    } else {
        drop(remaining);
        rep.record(PhaseRecord::skip("reuse_zero", "no --reuse"));
    }
    finish(rep, summary, error, stop, policy_set)
}

/// The exit status: 1 when a check failed, except the phase where
/// allocation on the node stopped (then 3 or 4, if nothing else failed).
fn exit_code(rep: &Reporter, stop: Option<(&str, i32)>) -> i32 {
    let failed_other = rep
        .records
        .iter()
        .any(|r| !r.passed() && Some(r.name) != stop.map(|s| s.0));
    match stop {
        _ if failed_other => EXIT_FAIL,
        Some((_, code)) => code,
        None if rep.all_passed() => EXIT_OK,
        None => EXIT_FAIL,
    }
}

fn finish(
    rep: Reporter,
    mut summary: Json,
    error: Json,
    stop: Option<(&'static str, i32)>,
    policy_set: bool,
) -> i32 {
    if policy_set {
        let _ = numa::set_mempolicy(numa::MPOL_DEFAULT, None);
    }
    let code = exit_code(&rep, stop);
    summary.push("error", error);
    rep.finish(summary, code);
    let _ = std::io::stdout().flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::main_with_args;

    #[test]
    fn touch_allocates_without_changing() {
        let page = numa::page_size();
        let m = Mapping::new(8 * page).unwrap();
        // SAFETY: inside the mapping.
        unsafe { m.ptr().add(page).write(7) };
        touch_pages(&m, page);
        let st = numa::query_nodes(&m.page_addrs(page)).unwrap();
        assert!(st.iter().all(|&s| s >= 0), "{st:?}");
        let (n, first) = nonzero_pages(&m, page);
        assert_eq!((n, first), (1, vec![1]));
    }

    #[test]
    fn exit_codes() {
        let mut rep = Reporter::new(true);
        rep.record(PhaseRecord::new("alloc_bind"));
        let mut f = PhaseRecord::new("fill");
        f.fail("ENOMEM");
        rep.record(f);
        rep.skip_rest("x");
        assert_eq!(exit_code(&rep, Some(("fill", EXIT_ENOMEM))), EXIT_ENOMEM);
        assert_eq!(exit_code(&rep, None), EXIT_FAIL);
        let mut rep = Reporter::new(true);
        let mut a = PhaseRecord::new("alloc_bind");
        a.fail("mmap ENOMEM");
        rep.record(a);
        rep.skip_rest("x");
        assert_eq!(
            exit_code(&rep, Some(("alloc_bind", EXIT_ENOMEM))),
            EXIT_ENOMEM
        );
        assert_eq!(exit_code(&rep, Some(("fill", EXIT_SIGBUS))), EXIT_FAIL);
        let mut rep = Reporter::new(true);
        rep.skip_rest("x");
        assert_eq!(exit_code(&rep, None), EXIT_OK);
    }

    #[test]
    fn dump_writes_the_pages() {
        let path = std::env::temp_dir().join(format!("vcram-dump-{}", std::process::id()));
        let p = path.to_str().unwrap();
        let args = [
            "--pattern",
            "mix:zero=1,random=1",
            "--size",
            "8k",
            "--dump",
            p,
        ];
        assert_eq!(main_with_args(args), EXIT_OK);
        let v = std::fs::read(&path).unwrap();
        assert_eq!(v.len(), 8192);
        let zero_pages = v.chunks(4096).filter(|c| c.iter().all(|&b| b == 0)).count();
        assert_eq!(zero_pages, 1);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(main_with_args(["--dump", "/nonexistent/x"]), EXIT_FAIL);
    }

    /// The whole program on the host's node 0, every phase.
    #[test]
    fn full_run_on_node0() {
        for extra in [
            &["--free", "dontneed"][..],
            &["--json", "--policy", "set_mempolicy", "--bench", "write"][..],
        ] {
            let mut args = vec![
                "--node",
                "0",
                "--mib",
                "2",
                "--migrate",
                "--wait-scan",
                "0",
                "--reuse",
                "--hold-seconds",
                "0",
                "--bench",
                "read",
                "--passes",
                "1",
                "--pattern",
                "mix:zero=1,half=1,text=1,random=1",
            ];
            args.extend_from_slice(extra);
            assert_eq!(main_with_args(&args), EXIT_OK, "{args:?}");
        }
        assert_eq!(main_with_args(["--node", "999", "--mib", "1"]), EXIT_FAIL);
        assert_eq!(main_with_args(["--nope"]), crate::workload::EXIT_USAGE);
    }
}
