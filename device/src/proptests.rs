// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Randomized tests (proptest) of everything a guest or a control client feeds the device:
//! the request parser, the event queue, the page store and the control protocol. Together
//! they run more than 100k cases; each checks that nothing panics (debug builds also trap
//! integer overflow, so accounting that would go negative fails here) and the invariants
//! named in each test.

use proptest::prelude::*;
use vm_memory::ByteValued;

use crate::control::{self, Current, Sessions};
use crate::events::{EventQueue, EVENT_BACKLOG};
use crate::model::compress::Encoder;
use crate::model::store::{ScanWork, BLOCK_PAGES};
use crate::model::{ModelEvent, PageState, Store, StoreConfig};
use crate::protocol::*;
use crate::request::tests::FakeMem;
use crate::request::{parse_chain, Chain, Desc, Kind, Reject, WindowGeom};
use crate::testdata::random_page;

const MEM: u64 = 0x20000;
const WIN: WindowGeom = WindowGeom {
    base: 0x1_0000_0000,
    pages: 4096,
};

/// A range entry near the window: mostly valid, sometimes off by a little or a lot.
fn range() -> impl Strategy<Value = (u64, u32, u32)> {
    let addr = prop_oneof![
        8 => (0..WIN.pages + 8).prop_map(|p| WIN.base + p * 4096),
        1 => any::<u64>(),
        1 => (0..WIN.pages).prop_map(|p| WIN.base + p * 4096 + 8),
    ];
    let npages = prop_oneof![8 => 0u32..64, 1 => any::<u32>()];
    let reserved = prop_oneof![20 => Just(0u32), 1 => any::<u32>()];
    (addr, npages, reserved)
}

/// Request bytes: a header (type and count mostly sensible) and a range table.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![4 => 1u32..=3, 1 => any::<u32>()],
        prop::collection::vec(range(), 0..12),
        prop_oneof![8 => Just(None), 1 => Just(Some(0u32)), 1 => any::<u32>().prop_map(Some)],
        prop_oneof![8 => Just(0usize), 1 => 0usize..40],
    )
        .prop_map(|(t, ranges, nr_override, cut)| {
            let nr = nr_override.unwrap_or(ranges.len() as u32);
            let mut v = VcramReqHeader {
                req_type: t.into(),
                nr_ranges: nr.into(),
                tag: 0.into(),
            }
            .as_slice()
            .to_vec();
            for (a, n, r) in ranges {
                v.extend_from_slice(
                    VcramRange {
                        addr: a.into(),
                        npages: n.into(),
                        reserved: r.into(),
                    }
                    .as_slice(),
                );
            }
            v.truncate(v.len().saturating_sub(cut));
            v
        })
}

/// A chain over fake memory: the request split at random points into readable descriptors
/// (some moved outside guest memory), then writable descriptors, sometimes out of order,
/// sometimes cut short.
fn chain() -> impl Strategy<Value = (Vec<u8>, Chain)> {
    (
        request_bytes(),
        prop::collection::vec(1usize..64, 0..6),
        prop::collection::vec(
            (prop_oneof![4 => 0u32..32, 1 => any::<u32>()], any::<bool>()),
            0..4,
        ),
        prop_oneof![20 => Just(None), 1 => (0usize..8).prop_map(Some)],
        prop_oneof![20 => Just(true), 1 => Just(false)],
        prop_oneof![20 => Just(None), 1 => (0usize..8, 0usize..8).prop_map(Some)],
        prop_oneof![20 => Just(0usize), 1 => 1usize..70],
    )
        .prop_map(|(bytes, cuts, resp, bad, complete, swap, extra)| {
            let mut descs = Vec::new();
            let mut at = 0usize;
            let mut addr = 0x1000u64;
            for c in cuts {
                if at >= bytes.len() {
                    break;
                }
                let n = c.min(bytes.len() - at);
                descs.push(Desc {
                    addr,
                    len: n as u32,
                    writable: false,
                });
                at += n;
                addr += 0x400;
            }
            if at < bytes.len() {
                descs.push(Desc {
                    addr,
                    len: (bytes.len() - at) as u32,
                    writable: false,
                });
            }
            let mut w = 0x18000u64;
            for (len, inside) in resp {
                descs.push(Desc {
                    addr: if inside { w } else { 1 << 50 },
                    len,
                    writable: true,
                });
                w += 0x100;
            }
            for _ in 0..extra {
                descs.push(Desc {
                    addr: 0x18000,
                    len: 1,
                    writable: true,
                });
            }
            if let Some(i) = bad {
                if let Some(d) = descs.get_mut(i) {
                    d.addr = d.addr.wrapping_add(1 << 40);
                }
            }
            if let Some((i, j)) = swap {
                if i < descs.len() && j < descs.len() {
                    descs.swap(i, j);
                }
            }
            (bytes, Chain { descs, complete })
        })
}

fn fake_mem(bytes: &[u8], chain: &Chain) -> FakeMem {
    let m = FakeMem::new(0, MEM as usize);
    // Lay the request bytes out over the readable descriptors that lie in memory.
    let mut at = 0usize;
    for d in chain.descs.iter().filter(|d| !d.writable) {
        let n = (d.len as usize).min(bytes.len().saturating_sub(at));
        if n > 0 && d.addr + n as u64 <= MEM {
            m.put(d.addr, &bytes[at..at + n]);
        }
        at += n;
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 62_000, ..ProptestConfig::default() })]

    /// The parser never panics; what it accepts is valid, what it refuses has a status.
    #[test]
    fn request_parser((bytes, chain) in chain()) {
        let m = fake_mem(&bytes, &chain);
        match parse_chain(&chain, &m, Some(WIN)) {
            Ok(req) => {
                prop_assert!(chain.complete);
                prop_assert!(chain.descs.len() <= VCRAM_MAX_CHAIN_DESCS);
                let hdr = VcramReqHeader::from_slice(&bytes[..16]).unwrap();
                let nr = u32::from(hdr.nr_ranges) as usize;
                prop_assert_eq!(bytes.len(), 16 + 16 * nr);
                prop_assert_eq!(req.ranges.len(), nr);
                match req.kind {
                    Kind::Reset | Kind::Nominate => prop_assert_eq!(nr, 0),
                    _ => prop_assert!((1..=VCRAM_MAX_RANGES as usize).contains(&nr)),
                }
                let mut sorted = req.ranges.clone();
                sorted.sort_unstable();
                for r in &sorted {
                    prop_assert!(r.1 >= 1 && r.0 + r.1 <= WIN.pages);
                }
                for p in sorted.windows(2) {
                    prop_assert!(p[0].0 + p[0].1 <= p[1].0, "overlap accepted");
                }
            }
            Err(r) => {
                prop_assert!(Reject::ALL.contains(&r.reason));
                prop_assert!(r.bad_range == VCRAM_NO_RANGE || (r.bad_range as usize) < 1024);
                prop_assert!((1..=6).contains(&r.reason.status()));
            }
        }
        // without a window nothing valid is accepted
        if let Ok(req) = parse_chain(&chain, &m, None) {
            prop_assert!(false, "accepted without a window: {:?}", req);
        }
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Pressure(u32),
    Overflow(u64, u32),
    /// Many OVERFLOW records (not contiguous): fills the backlog.
    Burst(u64),
    /// Many level changes in a row: fills the backlog with PRESSURE records.
    Levels(u32),
    Deliver(usize),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0u32..3).prop_map(Ev::Pressure),
        6 => (0u64..64, 1u32..4).prop_map(|(p, n)| Ev::Overflow(p * 4096, n)),
        1 => (100u64..300).prop_map(Ev::Burst),
        1 => (100u32..300).prop_map(Ev::Levels),
        2 => (0usize..300).prop_map(Ev::Deliver),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8_000, ..ProptestConfig::default() })]

    /// The backlog stays bounded, records go out in seq order, every record is delivered,
    /// waiting or counted lost, and the last level delivered is the newest level generated.
    #[test]
    fn event_queue(ops in prop::collection::vec(ev(), 0..60)) {
        let mut q = EventQueue::new();
        let mut newest_level = None;
        let mut last_level = None;
        let mut last_seq = 0u64;
        let mut lost_seen = 0u64;
        let deliver = |q: &mut EventQueue, last_seq: &mut u64, last_level: &mut Option<u32>, lost: &mut u64| -> Result<(), TestCaseError> {
            let e = q.peek().unwrap();
            prop_assert!(u64::from(e.seq) > *last_seq);
            *last_seq = u64::from(e.seq);
            *lost += u64::from(u32::from(e.lost));
            if u32::from(e.event_type) == VCRAM_EVT_PRESSURE {
                *last_level = Some(u32::from(e.level));
            }
            q.pop_delivered();
            Ok(())
        };
        for op in ops {
            match op {
                Ev::Pressure(l) => {
                    newest_level = Some(l);
                    q.push(ModelEvent::Pressure { level: l, used: 0 }, 0);
                }
                Ev::Overflow(a, n) => q.push(ModelEvent::Overflow { addr: a, npages: n, used: 0 }, 0),
                Ev::Levels(n) => {
                    for k in 0..n {
                        newest_level = Some(k % 3);
                        q.push(ModelEvent::Pressure { level: k % 3, used: 0 }, 0);
                    }
                }
                Ev::Burst(n) => {
                    for k in 0..n {
                        q.push(ModelEvent::Overflow { addr: (1 << 30) + k * 8192, npages: 1, used: 0 }, 0);
                    }
                }
                Ev::Deliver(n) => {
                    for _ in 0..n.min(q.len()) {
                        deliver(&mut q, &mut last_seq, &mut last_level, &mut lost_seen)?;
                    }
                }
            }
            prop_assert!(q.len() <= EVENT_BACKLOG);
            prop_assert_eq!(q.generated, q.delivered + q.len() as u64 + q.lost);
        }
        while !q.is_empty() {
            deliver(&mut q, &mut last_seq, &mut last_level, &mut lost_seen)?;
        }
        prop_assert_eq!(last_level, newest_level);
        prop_assert_eq!(lost_seen, q.lost);
        prop_assert!(q.last_seq() >= last_seq);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Store(u64, u8),
    Discard(u64, u64),
    Scan(u64, u8),
    StaleScan(u64, u8),
    Reset,
}

fn op(pages: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..pages, any::<u8>()).prop_map(|(i, k)| Op::Store(i, k)),
        3 => (0..pages, 1u64..40).prop_map(|(i, n)| Op::Discard(i, n)),
        3 => (0..pages, any::<u8>()).prop_map(|(i, k)| Op::Scan(i, k)),
        1 => (0..pages, any::<u8>()).prop_map(|(i, k)| Op::StaleScan(i, k)),
        1 => Just(Op::Reset),
    ]
}

fn page(kind: u8) -> Vec<u8> {
    match kind % 4 {
        0 => vec![kind; 4096],
        1 => random_page(u64::from(kind)),
        2 => vec![0; 4096],
        _ => {
            let mut p = vec![0u8; 4096];
            for (i, b) in p.iter_mut().enumerate() {
                *b = ((i / (usize::from(kind) + 1)) % 26) as u8 + b'a';
            }
            p
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    /// Random stores, discards, scans (also with work that went stale) and resets on a small
    /// store with little capacity: accounting never goes negative (a debug build panics on
    /// underflow), the counters always equal a recount of the page states, used <= capacity.
    #[test]
    fn store_accounting(cap_pages in 1u64..12, ops in prop::collection::vec(op(2 * BLOCK_PAGES as u64 + 3), 1..24)) {
        let pages = 2 * BLOCK_PAGES as u64 + 3;
        let mut s = Store::new(StoreConfig {
            base: 0x1_0000_0000,
            pages,
            physical_capacity: pages * 16 + cap_pages * 4096,
            level: 1,
            raw_threshold: 4032,
            low_watermark: 50,
            high_watermark: 80,
            hysteresis: 5,
        }).unwrap();
        let mut enc = Encoder::new(1, 4032).unwrap();
        for op in ops {
            match op {
                Op::Store(i, k) => { s.store_page(i, &page(k)).unwrap(); }
                Op::Discard(i, n) => { s.discard_range(i, n.min(pages - i)); }
                Op::Scan(i, k) => { s.scan_stable(i, &page(k)).unwrap(); }
                Op::StaleScan(i, k) => {
                    let seen = s.snapshot(i).unwrap();
                    let work = ScanWork::new(&mut enc, &seen, &page(k), || true);
                    // a request changes the block in between: the work is dropped
                    s.discard_page(i);
                    prop_assert!(s.install_scan(i, seen, &work).is_none());
                }
                Op::Reset => s.reset(),
            }
            if let Err(e) = s.verify() {
                prop_assert!(false, "{}", e);
            }
            let c = s.counters();
            prop_assert!(c.physical_used <= c.physical_capacity);
            prop_assert_eq!(c.stored_pages, c.same_pages + c.compressed_pages + c.raw_pages);
            prop_assert!(c.zero_pages <= c.same_pages);
            for i in [0, pages / 2, pages - 1] {
                let (st, _) = s.state(i).unwrap();
                if st != PageState::Overflow {
                    prop_assert!(s.image(i).is_some());
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    /// Any input line gives one bounded JSON reply that never contains the input.
    #[test]
    fn control_protocol(
        parts in prop::collection::vec(
            prop_oneof![
                Just(b"ping\n".to_vec()),
                Just(b"stats\n".to_vec()),
                Just(b" scan \n".to_vec()),
                "[ -~]{0,40}\n".prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..1200),
            ],
            0..6,
        ),
        with_device in any::<bool>(),
    ) {
        let input: Vec<u8> = parts.concat();
        let cur: Current = std::sync::Arc::new(std::sync::Mutex::new(Sessions::default()));
        if with_device {
            let d = crate::device::Device::new(crate::device::DeviceOptions::default()).unwrap();
            cur.lock().unwrap().rotate(std::sync::Arc::new(d));
        }
        let max = 1024;
        // fed to the line splitter in pieces, as a socket delivers it
        let mut buf = Vec::new();
        let mut pieces = input.chunks(97);
        loop {
            let line = control::take_line_for_test(&mut buf, max);
            match line {
                // waiting for more only while a whole line of the limit could still come
                None => match pieces.next() {
                    Some(p) => {
                        prop_assert!(buf.len() <= max);
                        buf.extend_from_slice(p);
                        continue;
                    }
                    None => break,
                },
                Some(Err(msg)) => {
                    prop_assert!(msg.contains("too long") || msg.contains("UTF-8"));
                    break;
                }
                Some(Ok(cmd)) => {
                    let cmd = cmd.trim();
                    if cmd.is_empty() {
                        continue;
                    }
                    let out = control::reply(cmd, &cur);
                    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                    prop_assert!(v.is_object());
                    prop_assert!(out.len() < 1 << 20);
                    if !["ping", "stats", "scan"].contains(&cmd) {
                        prop_assert!(v.get("error").is_some());
                        if cmd.len() > 8 {
                            prop_assert!(!out.contains(cmd), "input echoed");
                        }
                    }
                }
            }
        }
    }
}
