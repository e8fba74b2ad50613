// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Protocol tests: the real daemon driven over vhost-user, no QEMU.

mod common;

use std::time::Duration;

use common::*;
use vcram_device::protocol::*;

type Case = (u32, Vec<(u64, u32)>, u32, u32);
type Chain = (Vec<(u64, u32, bool)>, Option<u32>);

fn le32(v: vm_memory::Le32) -> u32 {
    u32::from(v)
}
fn le64(v: vm_memory::Le64) -> u64 {
    u64::from(v)
}

#[test]
fn negotiates_and_serves_config() {
    let d = Daemon::start(&[
        "--node",
        "3",
        "--physical-size",
        "16M",
        "--window-size",
        "64M",
    ]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let cfg = c.cfg();
    assert_eq!(le32(cfg.magic), VCRAM_MAGIC);
    assert_eq!(u16::from(cfg.version_major), VCRAM_VERSION_MAJOR);
    assert_eq!(le32(cfg.node), 3);
    assert_eq!(le32(cfg.page_size), 4096);
    assert_eq!(le64(cfg.window_base), WIN_BASE);
    assert_eq!(le64(cfg.window_size), WIN_SIZE);
    assert_eq!(le64(cfg.physical_capacity), 16 << 20);
    assert_eq!(le32(cfg.status) & VCRAM_ST_WINDOW_OK, VCRAM_ST_WINDOW_OK);
    assert_eq!(le32(cfg.event_size), 48);
    assert_eq!(le32(cfg.max_ranges), VCRAM_MAX_RANGES);
    assert_eq!(le32(cfg.granule), 64);
    // metadata is part of physical use from the start: 16 bytes per page
    assert_eq!(le64(cfg.physical_used), WIN_PAGES * 16);
    // QEMU may use a smaller or larger config_size: a prefix, or zero padding up to 256
    let small = c.config(64);
    assert_eq!(&small[..], &c.config(128)[..64]);
    let big = c.config(256);
    assert_eq!(big.len(), 256);
    assert!(big[128..].iter().all(|b| *b == 0));
    assert_eq!(&big[0..4], b"VCRM");
    let s = d.stats();
    assert!(s.connected);
    assert_eq!(s.window_status, "ok");
    assert_eq!(s.logical_capacity, WIN_SIZE);
    assert_eq!(s.metadata_bytes_per_page, 16);
}

#[test]
fn commit_then_discard_zeroes_and_releases() {
    discard_test(&[]);
}

#[test]
fn discard_with_punched_holes() {
    discard_test(&["--punch-holes"]);
}

fn discard_test(args: &[&str]) {
    let d = Daemon::start(args);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    for i in 0..32 {
        g.write(g.window_page(i), &text_page(i));
    }
    g.write(g.window_page(40), &random_page(40));
    let (len, r) = c.request(
        &g,
        VCRAM_REQ_COMMIT,
        &[
            (g.window_page(0), 32),
            (g.window_page(40), 1),
            (g.window_page(50), 2),
        ],
    );
    assert_eq!(len, 24);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    assert_eq!(le64(r.pages_done), 35);
    assert_eq!(le64(r.pages_overflowed), 0);
    let s = d.stats();
    assert_eq!(s.commit_requests, 1);
    assert_eq!(s.commit_pages, 35);
    assert_eq!(s.compressed_pages, 32);
    assert_eq!(s.raw_pages, 1);
    assert_eq!(s.zero_pages, 2);
    assert_eq!(s.stored_pages, 35);
    assert!(s.ratio > 2.0, "ratio {}", s.ratio);
    let used_before = s.physical_used;
    assert!(used_before > WIN_PAGES * 16 + 4096);
    let cfg = c.cfg();
    assert_eq!(le64(cfg.stored_pages), 35);
    assert_eq!(le64(cfg.raw_pages), 1);
    assert_eq!(le64(cfg.physical_used), used_before);

    // discard pages 4..12 and 40: zeroed in guest memory, images dropped
    let (len, r) = c.request(
        &g,
        VCRAM_REQ_DISCARD,
        &[(g.window_page(4), 8), (g.window_page(40), 1)],
    );
    assert_eq!(len, 24);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    assert_eq!(le64(r.pages_done), 9);
    for i in 4..12 {
        assert!(
            g.read(g.window_page(i), 4096).iter().all(|b| *b == 0),
            "page {i}"
        );
    }
    assert!(g.read(g.window_page(40), 4096).iter().all(|b| *b == 0));
    // neighbours untouched
    assert_eq!(g.read(g.window_page(3), 4096), text_page(3));
    assert_eq!(g.read(g.window_page(12), 4096), text_page(12));
    let s = d.stats();
    assert_eq!(s.discard_requests, 1);
    assert_eq!(s.discard_pages, 9);
    assert_eq!(s.stored_pages, 26);
    assert_eq!(s.raw_pages, 0);
    assert!(s.physical_used < used_before - 4096);
    assert_eq!(s.max_physical_used, used_before);

    // a large discard (hole-punching path with --punch-holes) must read back as zeros too
    for i in 100..300 {
        g.write(g.window_page(i), &text_page(i));
    }
    use std::os::unix::fs::MetadataExt;
    let blocks = || g.regions[1].file.metadata().unwrap().blocks();
    let before = blocks();
    let (_, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(100), 200)]);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    let after = blocks();
    if args.contains(&"--punch-holes") {
        // 200 pages = 1600 512-byte blocks given back to the host
        assert!(before - after >= 1600, "{before} -> {after}");
    } else {
        assert_eq!(before, after);
    }
    for i in 100..300 {
        assert!(
            g.read(g.window_page(i), 4096).iter().all(|b| *b == 0),
            "page {i}"
        );
    }
    assert_eq!(g.read(g.window_page(300), 8), vec![0u8; 8]);
    assert_eq!(d.stats().bad_requests, 0);
}

#[test]
fn bad_requests_get_error_status_and_device_keeps_serving() {
    let d = Daemon::start(&[]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let page = g.window_page(0);
    let mut expect_bad = 0;
    let cases: Vec<Case> = vec![
        (7, vec![(page, 1)], VCRAM_S_UNSUPPORTED, VCRAM_NO_RANGE),
        (
            VCRAM_REQ_DISCARD,
            vec![(page, 1), (WIN_BASE + WIN_SIZE, 1)],
            VCRAM_S_OUT_OF_RANGE,
            1,
        ),
        (
            VCRAM_REQ_DISCARD,
            vec![(WIN_BASE - 4096, 1)],
            VCRAM_S_OUT_OF_RANGE,
            0,
        ),
        (
            VCRAM_REQ_COMMIT,
            vec![(WIN_BASE + WIN_SIZE - 4096, 2)],
            VCRAM_S_OUT_OF_RANGE,
            0,
        ),
        (
            VCRAM_REQ_COMMIT,
            vec![(page + 8, 1)],
            VCRAM_S_OUT_OF_RANGE,
            0,
        ),
        (VCRAM_REQ_COMMIT, vec![(page, 0)], VCRAM_S_OUT_OF_RANGE, 0),
        (
            VCRAM_REQ_DISCARD,
            vec![(!0xfffu64, u32::MAX)],
            VCRAM_S_OUT_OF_RANGE,
            0,
        ),
        (
            VCRAM_REQ_DISCARD,
            vec![(page, 4), (page + 3 * 4096, 1)],
            VCRAM_S_OVERLAP,
            1,
        ),
        (
            VCRAM_REQ_DISCARD,
            vec![],
            VCRAM_S_BAD_REQUEST,
            VCRAM_NO_RANGE,
        ),
    ];
    g.write(page, &text_page(1));
    for (t, ranges, status, bad) in &cases {
        let (len, r) = c.request(&g, *t, ranges);
        assert_eq!(len, 24);
        assert_eq!(le32(r.status), *status, "{t} {ranges:?}");
        assert_eq!(le32(r.bad_range), *bad, "{t} {ranges:?}");
        assert_eq!(le64(r.pages_done), 0);
        expect_bad += 1;
    }
    // nothing was executed: the page keeps its contents
    assert!(
        g.read(page, 4096) == text_page(1),
        "a refused request changed the page"
    );

    // hand-made chains
    let req = request_bytes(VCRAM_REQ_DISCARD, &[(page, 1)]);
    let ra = c.alloc(req.len() as u64);
    g.write(ra, &req);
    let resp = c.alloc(64);
    let mut chains: Vec<Chain> = vec![
        // header too short
        (
            vec![(ra, 10, false), (resp, 24, true)],
            Some(VCRAM_S_BAD_REQUEST),
        ),
        // range table too long
        (
            vec![(ra, req.len() as u32 + 16, false), (resp, 24, true)],
            Some(VCRAM_S_BAD_REQUEST),
        ),
        // readable after writable
        (
            vec![(resp, 24, true), (ra, req.len() as u32, false)],
            Some(VCRAM_S_BAD_REQUEST),
        ),
        // readable buffer outside guest memory
        (
            vec![(0x7_0000_0000, req.len() as u32, false), (resp, 24, true)],
            Some(VCRAM_S_BAD_REQUEST),
        ),
        // response buffer too small: nothing can be written
        (vec![(ra, req.len() as u32, false), (resp, 16, true)], None),
        // no response buffer at all
        (vec![(ra, req.len() as u32, false)], None),
        // only writable buffers
        (vec![(resp, 64, true)], Some(VCRAM_S_BAD_REQUEST)),
    ];
    // too many descriptors
    let mut long = vec![(ra, 1, false); VCRAM_MAX_CHAIN_DESCS];
    long.push((resp, 24, true));
    chains.push((long, Some(VCRAM_S_BAD_REQUEST)));
    for (bufs, status) in &chains {
        g.write(resp, &[0xee; 64]);
        let head = c.rq.add(&g, bufs);
        c.rq.kick();
        let u = c.rq.wait_used(&g, 1, T);
        assert_eq!(u[0].0, head as u32);
        match status {
            Some(s) => {
                assert_eq!(u[0].1, 24, "{bufs:?}");
                assert_eq!(le32(read_resp(&g, resp).status), *s, "{bufs:?}");
            }
            None => {
                assert_eq!(u[0].1, 0, "{bufs:?}");
                assert_eq!(g.read(resp, 16), vec![0xee; 16]);
            }
        }
        expect_bad += 1;
    }
    // response buffer outside guest memory: not executed, completed with length 0, counted
    let head = c.rq.add(
        &g,
        &[(ra, req.len() as u32, false), (0x7_0000_0000, 24, true)],
    );
    c.rq.kick();
    let u = c.rq.wait_used(&g, 1, T);
    assert_eq!(u[0], (head as u32, 0));
    expect_bad += 1;
    assert!(
        g.read(page, 4096) == text_page(1),
        "a refused request changed the page"
    );

    // still serving
    let (len, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(page, 1)]);
    assert_eq!(
        (len, le32(r.status), le64(r.pages_done)),
        (24, VCRAM_S_OK, 1)
    );
    assert!(g.read(page, 4096).iter().all(|b| *b == 0));
    let s = d.stats();
    assert_eq!(s.bad_requests, expect_bad);
    assert_eq!(s.rejects["out_of_range"], 6);
    assert_eq!(s.rejects["overlap"], 1);
    assert_eq!(s.rejects["unsupported"], 1);
    assert_eq!(s.rejects["no_response_buffer"], 2);
    assert_eq!(s.rejects["chain_too_long"], 1);
    assert_eq!(s.rejects["wrong_direction"], 1);
    assert_eq!(s.rejects["bad_address"], 2);
    assert_eq!(s.unanswerable_requests, 1);
    assert_eq!(s.discard_requests, 1);
    assert_eq!(s.discard_pages, 1);
}

#[test]
fn indirect_descriptors_and_broken_chains() {
    let d = Daemon::start(&[]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let page = g.window_page(5);
    g.write(page, &text_page(5));
    // a request through an indirect table, header and ranges split
    let req = request_bytes(VCRAM_REQ_DISCARD, &[(page, 1)]);
    let ra = c.alloc(64);
    g.write(ra, &req);
    let resp = c.alloc(24);
    let table = c.alloc(64);
    let head = c.rq.add_indirect(
        &g,
        table,
        &[(ra, 16, false), (ra + 16, 16, false), (resp, 24, true)],
    );
    c.rq.kick();
    let u = c.rq.wait_used(&g, 1, T);
    assert_eq!(u[0], (head as u32, 24));
    assert_eq!(le32(read_resp(&g, resp).status), VCRAM_S_OK);
    assert!(g.read(page, 4096).iter().all(|b| *b == 0));

    // a descriptor whose `next` points at itself: the chain is cut at the queue size, refused
    g.write(page, &text_page(5));
    let i = c.rq.next_desc;
    Vq::write_desc(&g, c.rq.desc, i, ra, req.len() as u32, VRING_DESC_F_NEXT, i);
    c.rq.next_desc = (i + 1) % c.rq.size;
    c.rq.push_head(&g, i);
    // `next` beyond the queue size: the chain ends there (no response buffer), refused
    let j = c.rq.next_desc;
    Vq::write_desc(
        &g,
        c.rq.desc,
        j,
        ra,
        req.len() as u32,
        VRING_DESC_F_NEXT,
        4000,
    );
    c.rq.next_desc = (j + 1) % c.rq.size;
    c.rq.push_head(&g, j);
    c.rq.kick();
    let u = c.rq.wait_used(&g, 2, T);
    assert_eq!(u, vec![(i as u32, 0), (j as u32, 0)]);
    // a head index beyond the queue size: consumed without a used entry; the queue goes on
    c.rq.push_head(&g, 9999);
    c.rq.kick();
    let (len, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(page, 1)]);
    assert_eq!((len, le32(r.status)), (24, VCRAM_S_OK));
    assert!(g.read(page, 4096).iter().all(|b| *b == 0));
    let s = d.stats();
    assert_eq!(s.rejects["chain_too_long"], 1);
    assert_eq!(s.rejects["no_response_buffer"], 2);
    assert_eq!(s.discard_requests, 2);
    assert!(s.device_errors >= 1);
}

/// RESET (1.2): the whole window is discarded (host memory released), accounting back to the
/// metadata alone; what the previous guest kernel left is no longer counted.
#[test]
fn reset_discards_the_whole_window_and_releases_host_memory() {
    use std::os::unix::fs::MetadataExt;
    let d = Daemon::start(&[]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    assert!(
        u16::from(c.cfg().version_minor) >= 2,
        "RESET is protocol 1.2"
    );
    for i in 0..300 {
        g.write(g.window_page(i), &text_page(i));
    }
    let (_, r) = c.request(&g, VCRAM_REQ_COMMIT, &[(g.window_page(0), 300)]);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    assert_eq!(d.stats().stored_pages, 300);
    let blocks = || g.regions[1].file.metadata().unwrap().blocks();
    assert!(blocks() >= 300 * 8);
    let (len, r) = c.request(&g, VCRAM_REQ_RESET, &[]);
    assert_eq!((len, le32(r.status)), (24, VCRAM_S_OK));
    assert_eq!(le64(r.pages_done), WIN_SIZE / 4096);
    assert_eq!(blocks(), 0, "host memory of the window released");
    assert!(g.read(g.window_page(0), 300 * 4096).iter().all(|b| *b == 0));
    let s = d.stats();
    assert_eq!(s.stored_pages, 0);
    assert_eq!(s.physical_used, s.metadata_bytes);
    assert_eq!(s.reset_requests, 1);
    // a RESET with ranges is malformed
    let (_, r) = c.request(&g, VCRAM_REQ_RESET, &[(g.window_page(0), 1)]);
    assert_eq!(le32(r.status), VCRAM_S_BAD_REQUEST);
}

/// A chain whose last descriptor still has NEXT (pointing past the queue, or past an indirect
/// table) was cut short: virtio-queue's iterator just stops there. Such a chain must be refused,
/// not executed with the part that was read.
#[test]
fn chains_cut_short_are_refused_not_executed() {
    let d = Daemon::start(&[]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let page = g.window_page(7);
    let req = request_bytes(VCRAM_REQ_DISCARD, &[(page, 1)]);
    let ra = c.alloc(64);
    g.write(ra, &req);
    let resp = c.alloc(24);

    // direct: request, response, and the response's NEXT points past the queue
    g.write(page, &text_page(7));
    let i = c.rq.next_desc;
    let k = (i + 1) % c.rq.size;
    Vq::write_desc(&g, c.rq.desc, i, ra, req.len() as u32, VRING_DESC_F_NEXT, k);
    Vq::write_desc(
        &g,
        c.rq.desc,
        k,
        resp,
        24,
        VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
        c.rq.size + 100,
    );
    c.rq.next_desc = (k + 1) % c.rq.size;
    c.rq.push_head(&g, i);
    c.rq.kick();
    let u = c.rq.wait_used(&g, 1, T);
    assert_eq!(u[0].0, i as u32);
    assert_eq!(u[0].1, 24, "refused with a response");
    assert_eq!(le32(read_resp(&g, resp).status), VCRAM_S_BAD_REQUEST);
    assert_eq!(g.read(page, 4096), text_page(7), "the DISCARD was executed");

    // indirect: the table's last entry has NEXT pointing past the table
    let table = c.alloc(64);
    let head = c.rq.add_indirect(
        &g,
        table,
        &[(ra, 16, false), (ra + 16, 16, false), (resp, 24, true)],
    );
    Vq::write_desc(
        &g,
        table,
        2,
        resp,
        24,
        VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
        3,
    );
    c.rq.kick();
    let u = c.rq.wait_used(&g, 1, T);
    assert_eq!(u[0], (head as u32, 24));
    assert_eq!(le32(read_resp(&g, resp).status), VCRAM_S_BAD_REQUEST);
    assert_eq!(g.read(page, 4096), text_page(7), "the DISCARD was executed");

    // a well-formed request still works
    let (len, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(page, 1)]);
    assert_eq!((len, le32(r.status)), (24, VCRAM_S_OK));
    assert!(g.read(page, 4096).iter().all(|b| *b == 0));
    let s = d.stats();
    assert_eq!(s.rejects["broken_chain"], 2);
    assert_eq!(s.discard_requests, 1);
    assert_eq!(s.device_errors, 0);
}

#[test]
fn corrupted_avail_index_does_not_wedge_the_device() {
    let phys = WIN_PAGES * 16 + 64 * 4096;
    let d = Daemon::start(&["--physical-size", &phys.to_string()]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let bufs = c.post_event_buffers(&g, 4, 48);
    // The driver claims 300 new entries on a 256-entry ring.
    let good = c.rq.avail_idx;
    g.write(c.rq.avail + 2, &good.wrapping_add(300).to_le_bytes());
    c.rq.kick();
    std::thread::sleep(Duration::from_millis(100));
    let t0 = cpu_ticks(d.child.id());
    std::thread::sleep(Duration::from_millis(600));
    let used = cpu_ticks(d.child.id()) - t0;
    assert!(used < 20, "daemon spun: {used} ticks in 0.6 s");
    // still answering, and the eventq is still served by the same worker
    for i in 0..70 {
        g.write(g.window_page(i), &random_page(i + 1));
    }
    let s = d.scan();
    assert!(s.overflow_pages > 0);
    assert!(s.device_errors >= 1);
    let u = c.eq.wait_used(&g, 1, T);
    assert_eq!(u[0].1, 48);
    assert_eq!(le32(read_event(&g, bufs[0]).event_type), VCRAM_EVT_PRESSURE);
    // the driver repairs its ring: requests flow again
    g.write(c.rq.avail + 2, &good.to_le_bytes());
    let (len, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(0), 70)]);
    assert_eq!((len, le32(r.status)), (24, VCRAM_S_OK));
    assert_eq!(d.stats().stored_pages, 0);
}

#[test]
fn flood_of_requests_all_complete() {
    let d = Daemon::start(&[]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let n = QSIZE / 2; // two descriptors per request
    let mut resps = Vec::new();
    for i in 0..n as u64 {
        let (t, ranges) = if i % 3 == 0 {
            (99, vec![(g.window_page(i), 1)])
        } else {
            (VCRAM_REQ_DISCARD, vec![(g.window_page(i), 1)])
        };
        resps.push((t, c.post_request(&g, t, &ranges).1));
    }
    c.rq.kick();
    let used = c.rq.wait_used(&g, n, T);
    assert_eq!(used.len(), n as usize);
    for (t, a) in resps {
        let st = le32(read_resp(&g, a).status);
        assert_eq!(
            st,
            if t == 99 {
                VCRAM_S_UNSUPPORTED
            } else {
                VCRAM_S_OK
            }
        );
    }
    let s = d.stats();
    assert_eq!(s.bad_requests, (n as u64).div_ceil(3));
    assert_eq!(s.discard_requests, n as u64 - (n as u64).div_ceil(3));
    // second round reuses the ring (wraps the descriptor table)
    for i in 0..n as u64 {
        c.post_request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(i), 1)]);
    }
    c.rq.kick();
    assert_eq!(c.rq.wait_used(&g, n, T).len(), n as usize);
    assert_eq!(d.stats().discard_requests, s.discard_requests + n as u64);
}

#[test]
fn scanner_finds_direct_writes() {
    let d = Daemon::start(&[]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let s = d.scan();
    assert_eq!(s.scans, 1);
    // the window's memfd is all holes: nothing is read
    assert_eq!(s.scan_pages, 0);
    assert_eq!(s.scan_changed_pages, 0);
    for i in 0..10 {
        g.write(g.window_page(1000 + i), &text_page(i));
    }
    g.write(g.window_page(5), &[0x77; 4096]);
    let s = d.scan();
    assert_eq!(s.scans, 2);
    assert_eq!(s.scan_pages, 11, "only the pages with data are read");
    assert_eq!(s.scan_changed_pages, 11);
    assert_eq!(s.compressed_pages, 10);
    assert_eq!(s.same_pages, 1);
    // unchanged: nothing new
    let s = d.scan();
    assert_eq!(s.scan_changed_pages, 11);
    // one byte changes in one page
    g.write(g.window_page(1003) + 100, b"#");
    let s = d.scan();
    assert_eq!(s.scan_changed_pages, 12);
    assert_eq!(s.stored_pages, 11);
    assert!(s.scan_ms_last > 0.0);
    // config space: one same-filled page, none of them zero; then a page of
    // zeros written over a text page is a zero page (0x7c, protocol 1.1)
    let cfg = c.cfg();
    assert_eq!(cfg.same_pages.to_native(), 1);
    assert_eq!(cfg.zero_pages.to_native(), 0);
    g.write(g.window_page(1001), &[0u8; 4096]);
    let s = d.scan();
    assert_eq!(s.zero_pages, 1);
    let cfg = c.cfg();
    assert_eq!(cfg.same_pages.to_native(), 2);
    assert_eq!(cfg.zero_pages.to_native(), 1);
}

#[test]
fn periodic_scanner_runs() {
    let d = Daemon::start(&["--scan-interval-ms", "50"]);
    let g = Guest::new();
    let _c = Conn::open(&d.socket, &g, MemSetup::Table);
    g.write(g.window_page(7), &text_page(7));
    let t0 = std::time::Instant::now();
    loop {
        let s = d.stats();
        if s.scans >= 2 && s.compressed_pages == 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "scanner did not run: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pressure_and_overflow_events() {
    // physical: metadata (16384 pages x 16 = 256 KiB) + 64 KiB of images
    let phys = WIN_PAGES * 16 + 16 * 4096;
    let d = Daemon::start(&[
        "--physical-size",
        &phys.to_string(),
        "--low-watermark",
        "85",
        "--high-watermark",
        "95",
        "--hysteresis",
        "2",
    ]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let bufs = c.post_event_buffers(&g, 8, 64);
    assert!(c.eq.stays_idle(&g, Duration::from_millis(100)));
    // 20 incompressible pages: 16 fit, 4 overflow
    for i in 0..20 {
        g.write(g.window_page(i), &random_page(i + 1));
    }
    let (_, r) = c.request(&g, VCRAM_REQ_COMMIT, &[(g.window_page(0), 20)]);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    assert_eq!(le64(r.pages_done), 20);
    assert_eq!(le64(r.pages_overflowed), 4);
    // LOW, HIGH, OVERFLOW(4 pages from page 16)
    let u = c.eq.wait_used(&g, 3, T);
    assert!(u.iter().all(|e| e.1 == VCRAM_EVENT_SIZE as u32));
    let evs: Vec<VcramEvent> = (0..3).map(|i| read_event(&g, bufs[i])).collect();
    assert_eq!(le32(evs[0].event_type), VCRAM_EVT_PRESSURE);
    assert_eq!(le32(evs[0].level), VCRAM_LEVEL_LOW);
    assert_eq!(le64(evs[0].seq), 1);
    assert_eq!(le32(evs[1].event_type), VCRAM_EVT_PRESSURE);
    assert_eq!(le32(evs[1].level), VCRAM_LEVEL_HIGH);
    assert_eq!(le64(evs[1].seq), 2);
    assert_eq!(le32(evs[2].event_type), VCRAM_EVT_OVERFLOW);
    assert_eq!(le64(evs[2].addr), g.window_page(16));
    assert_eq!(le32(evs[2].npages), 4);
    assert_eq!(le64(evs[2].overflow_total), 4);
    assert_eq!(le64(evs[2].seq), 3);
    assert!(c.eq.stays_idle(&g, Duration::from_millis(100)));
    let cfg = c.cfg();
    assert_eq!(le32(cfg.pressure_level), VCRAM_LEVEL_HIGH);
    assert_eq!(le64(cfg.overflow_pages), 4);
    assert_ne!(le32(cfg.status) & VCRAM_ST_OVERFLOW, 0);
    assert_eq!(le64(cfg.event_seq), 3);
    let s = d.stats();
    assert_eq!(s.overflow_pages, 4);
    assert!(s.physical_used <= s.physical_capacity);
    assert_eq!(s.watermark_events, 2);
    assert_eq!(s.events_delivered, 3);

    // free everything: back to normal, one event
    let (_, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(0), 20)]);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    let u = c.eq.wait_used(&g, 1, T);
    assert_eq!(u[0].1, 48);
    let e = read_event(&g, bufs[3]);
    assert_eq!(le32(e.event_type), VCRAM_EVT_PRESSURE);
    assert_eq!(le32(e.level), VCRAM_LEVEL_NORMAL);
    assert_eq!(le64(e.overflow_total), 0);
    assert_eq!(le64(c.cfg().overflow_pages), 0);
}

#[test]
fn events_wait_for_buffers_and_bad_event_buffers_are_returned() {
    let phys = WIN_PAGES * 16 + 4 * 4096;
    let d = Daemon::start(&[
        "--physical-size",
        &phys.to_string(),
        "--low-watermark",
        "98",
        "--high-watermark",
        "99",
    ]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    for i in 0..8 {
        g.write(g.window_page(i), &random_page(100 + i));
    }
    // events raised with no buffer posted
    let (_, r) = c.request(&g, VCRAM_REQ_COMMIT, &[(g.window_page(0), 8)]);
    assert_eq!(le64(r.pages_overflowed), 4);
    let s = d.stats();
    assert_eq!(s.events_pending, 3);
    // a too-small buffer and a device-readable one are returned unused
    let small = c.alloc(64);
    c.eq.add(&g, &[(small, 16, true)]);
    let ro = c.alloc(64);
    c.eq.add(&g, &[(ro, 64, false)]);
    c.eq.kick();
    let u = c.eq.wait_used(&g, 2, T);
    assert_eq!(u[0].1, 0);
    assert_eq!(u[1].1, 0);
    assert_eq!(d.stats().bad_event_buffers, 2);
    // a buffer split in two descriptors works
    let a = c.alloc(64);
    let b = c.alloc(64);
    c.eq.add(&g, &[(a, 20, true), (b, 28, true)]);
    c.eq.kick();
    let u = c.eq.wait_used(&g, 1, T);
    assert_eq!(u[0].1, 48);
    let mut raw = g.read(a, 20);
    raw.extend(g.read(b, 28));
    use vm_memory::ByteValued;
    let e = *VcramEvent::from_slice(&raw).unwrap();
    assert_eq!(le64(e.seq), 1);
    // the rest arrive once buffers are posted
    let bufs = c.post_event_buffers(&g, 4, 48);
    let u = c.eq.wait_used(&g, 2, T);
    assert_eq!(u.len(), 2);
    assert_eq!(le64(read_event(&g, bufs[0]).seq), 2);
    assert_eq!(le64(read_event(&g, bufs[1]).seq), 3);
    assert_eq!(le32(read_event(&g, bufs[1]).event_type), VCRAM_EVT_OVERFLOW);
    assert_eq!(d.stats().events_pending, 0);
}

#[test]
fn scanner_events_reach_the_eventq() {
    // 64 raw pages of room; low at 75% (meta + 32 pages), high at 90% (meta + 51.2 pages)
    let phys = WIN_PAGES * 16 + 64 * 4096;
    let d = Daemon::start(&["--physical-size", &phys.to_string()]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let bufs = c.post_event_buffers(&g, 8, 48);
    for i in 0..70 {
        g.write(g.window_page(100 + i), &random_page(i + 7));
    }
    let s = d.scan();
    assert_eq!(s.scan_changed_pages, 70);
    assert_eq!(s.raw_pages, 64);
    assert_eq!(s.overflow_pages, 6);
    let u = c.eq.wait_used(&g, 3, T);
    assert!(u.iter().all(|e| e.1 == 48));
    let e: Vec<VcramEvent> = (0..3).map(|i| read_event(&g, bufs[i])).collect();
    assert_eq!(
        (le32(e[0].event_type), le32(e[0].level)),
        (VCRAM_EVT_PRESSURE, VCRAM_LEVEL_LOW)
    );
    assert_eq!(
        (le32(e[1].event_type), le32(e[1].level)),
        (VCRAM_EVT_PRESSURE, VCRAM_LEVEL_HIGH)
    );
    assert_eq!(le32(e[2].event_type), VCRAM_EVT_OVERFLOW);
    assert_eq!(le64(e[2].addr), g.window_page(164));
    assert_eq!(le32(e[2].npages), 6);
    // a rescan with nothing changed and no room: no new event
    d.scan();
    assert!(c.eq.stays_idle(&g, Duration::from_millis(200)));
    // room again: the next scan stores overflow pages without them being rewritten
    let (_, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(100), 10)]);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    let s = d.scan();
    assert_eq!(s.overflow_pages, 0);
    assert_eq!(s.scan_retried_pages, 6);
    assert_eq!(s.raw_pages, 60);
}

#[test]
fn window_by_file_and_add_mem_reg() {
    // The window backed by a named file, matched by inode; regions arrive one by one.
    let f = tempfile::NamedTempFile::new_in(if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })
    .unwrap();
    let path = f.path().display().to_string();
    let d = Daemon::start(&["--window-file", &path]);
    let g = Guest {
        regions: vec![
            Region::memfd("vcram-test-ram", RAM_BASE, RAM_SIZE),
            Region::from_file(f.reopen().unwrap(), WIN_BASE, WIN_SIZE),
        ],
    };
    let mut c = Conn::open(&d.socket, &g, MemSetup::AddRegions);
    let cfg = c.cfg();
    assert_eq!(le64(cfg.window_base), WIN_BASE);
    assert_eq!(le64(cfg.window_size), WIN_SIZE);
    g.write(g.window_page(9), &text_page(9));
    let (_, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(9), 1)]);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    assert!(g.read(g.window_page(9), 4096).iter().all(|b| *b == 0));
    // the region goes away: requests fail with NO_WINDOW; it comes back: served again
    use vhost::vhost_user::VhostUserFrontend;
    c.fe.remove_mem_region(&g.regions[1].info()).unwrap();
    assert_eq!(le32(c.cfg().status) & VCRAM_ST_WINDOW_OK, 0);
    let (_, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(9), 1)]);
    assert_eq!(le32(r.status), VCRAM_S_NO_WINDOW);
    c.fe.add_mem_region(&g.regions[1].info()).unwrap();
    let (_, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(9), 1)]);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    assert_eq!(d.stats().rejects["no_window"], 1);
}

#[test]
fn window_of_wrong_size_is_not_served() {
    let d = Daemon::start(&["--window-base", "4G", "--window-size", "128M"]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let cfg = c.cfg();
    assert_eq!(le32(cfg.status) & VCRAM_ST_WINDOW_OK, 0);
    assert_ne!(le32(cfg.status) & VCRAM_ST_WINDOW_BAD, 0);
    assert_eq!(le64(cfg.window_size), 0);
    g.write(g.window_page(1), &text_page(1));
    let (len, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(1), 1)]);
    assert_eq!(len, 24);
    assert_eq!(le32(r.status), VCRAM_S_NO_WINDOW);
    assert_eq!(g.read(g.window_page(1), 4096), text_page(1));
    let s = d.stats();
    assert!(s.window_status.starts_with("bad:"), "{}", s.window_status);
    assert!(s.window_status.contains("0x8000000"), "{}", s.window_status);
}

#[test]
fn window_missing_is_not_served() {
    let d = Daemon::start(&["--window-base", "8G"]);
    let g = Guest::new();
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    assert_eq!(le32(c.cfg().status), 0);
    let (_, r) = c.request(&g, VCRAM_REQ_COMMIT, &[(g.window_page(1), 1)]);
    assert_eq!(le32(r.status), VCRAM_S_NO_WINDOW);
    assert_eq!(d.stats().window_status, "missing");
}

#[test]
fn reconnect_gets_a_fresh_device() {
    let mut d = Daemon::start(&[]);
    let g = Guest::new();
    {
        let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
        for i in 0..4 {
            g.write(g.window_page(i), &text_page(i));
        }
        let (_, r) = c.request(&g, VCRAM_REQ_COMMIT, &[(g.window_page(0), 4)]);
        assert_eq!(le32(r.status), VCRAM_S_OK);
        let (_, r) = c.request(&g, 42, &[(g.window_page(0), 4)]);
        assert_eq!(le32(r.status), VCRAM_S_UNSUPPORTED);
        let s = d.stats();
        assert_eq!(s.stored_pages, 4);
        assert_eq!(s.bad_requests, 1);
    } // frontend hangs up
    let t0 = std::time::Instant::now();
    // until the next frontend connects, the statistics of the last session stay readable
    let g2 = Guest::new();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let s = d.stats();
        if !s.connected {
            assert_eq!(s.session, 1);
            assert!(s.frontend.starts_with("disconnected"), "{}", s.frontend);
            assert_eq!(s.stored_pages, 4);
            assert_eq!(s.bad_requests, 1);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "disconnect not seen: {s:?}"
        );
    }
    // the daemon dropped its mappings of the old guest memory
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", d.child.id())).unwrap();
    assert!(
        !maps.contains("vcram-test-window"),
        "old guest memory still mapped"
    );
    let mut c = Conn::open(&d.socket, &g2, MemSetup::Table);
    let s = d.stats();
    assert!(s.connected);
    assert_eq!(s.session, 2);
    assert_eq!(s.frontend, "connected");
    assert_eq!(s.stored_pages, 0);
    assert_eq!(s.commit_requests, 0);
    assert_eq!(s.bad_requests, 0);
    assert_eq!(le64(c.cfg().stored_pages), 0);
    g2.write(g2.window_page(2), &text_page(2));
    let (_, r) = c.request(&g2, VCRAM_REQ_COMMIT, &[(g2.window_page(2), 1)]);
    assert_eq!(le32(r.status), VCRAM_S_OK);
    assert_eq!(d.stats().compressed_pages, 1);
    assert!(d.child.try_wait().unwrap().is_none(), "daemon exited");
}

#[test]
fn control_socket_commands() {
    let d = Daemon::start(&[]);
    assert_eq!(d.ctl("ping").trim(), r#"{"pong":true}"#);
    assert!(d.ctl("bogus").contains("error"));
    let s = d.stats();
    assert!(!s.connected);
    assert_eq!(s.window_status, "not mapped yet");
}

#[test]
fn bad_command_lines_fail_clearly() {
    let run = |args: &[&str]| {
        let o = std::process::Command::new(device_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?}");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = run(&["--socket", "/tmp/x", "--window-base", "4X"]);
    assert!(e.contains("unknown suffix"), "{e}");
    let e = run(&["--socket", "/tmp/x", "--window-base", "4G", "--level", "50"]);
    assert!(e.contains("zstd level"), "{e}");
    let e = run(&["--socket", "/tmp/x"]);
    assert!(e.contains("--window-base") || e.contains("window"), "{e}");
    let e = run(&["--socket", "/nonexistent/dir/x", "--window-base", "4G"]);
    assert!(e.contains("does not exist"), "{e}");
    // a regular file at a socket path, the watermarks and the physical size against the
    // metadata: tests/hostile.rs
}

#[test]
fn once_exits_after_the_frontend_leaves() {
    let mut d = Daemon::start(&["--once"]);
    let g = Guest::new();
    {
        let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
        let (_, r) = c.request(&g, VCRAM_REQ_DISCARD, &[(g.window_page(0), 1)]);
        assert_eq!(le32(r.status), VCRAM_S_OK);
    }
    let t0 = std::time::Instant::now();
    loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "daemon still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Requests, the periodic scanner, on-demand scans and config reads all at once: nothing
/// deadlocks, every request completes, and the final state is consistent with memory.
#[test]
fn concurrent_scans_requests_and_config_reads() {
    let d = Daemon::start(&[
        "--scan-interval-ms",
        "1",
        "--physical-size",
        "1M",
        "--window-size",
        "8M",
    ]);
    let g = Guest::with_window(8 << 20);
    let mut c = Conn::open(&d.socket, &g, MemSetup::Table);
    let ctl = d.control.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let scanner = std::thread::spawn(move || {
        let mut n = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            vcram_device::control::request(&ctl, "scan").unwrap();
            n += 1;
        }
        n
    });
    for round in 0..12u64 {
        for i in 0..64 {
            let p = if (i + round) % 3 == 0 {
                random_page(i * 31 + round)
            } else {
                text_page(i + round)
            };
            g.write(g.window_page(i), &p);
        }
        let (_, r) = c.request(&g, VCRAM_REQ_COMMIT, &[(g.window_page(0), 64)]);
        assert_eq!(le32(r.status), VCRAM_S_OK);
        let _ = c.cfg();
        let (_, r) = c.request(
            &g,
            VCRAM_REQ_DISCARD,
            &[(g.window_page(16), 16), (g.window_page(40), 8)],
        );
        assert_eq!(le32(r.status), VCRAM_S_OK);
        assert!(g.read(g.window_page(20), 4096).iter().all(|b| *b == 0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scans = scanner.join().unwrap();
    assert!(scans > 0);
    // settle: one more scan sees memory as it is now
    let s = d.scan();
    let s2 = d.scan();
    assert_eq!(
        s2.scan_changed_pages, s.scan_changed_pages,
        "memory still changing"
    );
    // pages 0..16, 32..40, 48..64 hold data (40 pages), the rest is zero
    assert_eq!(s2.stored_pages + s2.overflow_pages, 40, "{s2:?}");
    assert!(s2.physical_used <= s2.physical_capacity);
    assert_eq!(s2.bad_requests, 0);
    assert_eq!(s2.commit_requests, 12);
    assert_eq!(s2.discard_requests, 12);
}
