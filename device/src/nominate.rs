// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! NOMINATE (protocol 1.3, PROTOCOL.md section 4.8): the device names the pages that cost it
//! most, worst first, so that the driver can move them off the node when physical space runs
//! short: overflow pages (written, not stored), then raw pages (4096 bytes held), then poorly
//! compressed ones (an image of half a page or more). Pages of one class that are adjacent in
//! the window are merged into runs of up to `VCRAM_MAX_NOMINATION_PAGES`.
//!
//! The walk over the window starts where the previous answer ended (a cursor that wraps
//! around), so that pages the driver could not move (pinned, busy) do not hide the others.

use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::ByteValued;

use crate::model::{PageState, Store};
use crate::protocol::*;
use crate::request::{self, Desc, GuestBytes};

/// An image at least this large is "poorly compressed" (ratio below 2).
pub const POOR_IMAGE_BYTES: usize = 2048;

/// One nominated run, in window page indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nomination {
    pub first: u64,
    pub npages: u32,
    pub class: u32,
}

/// What NOMINATE keeps between requests, and its counters.
#[derive(Default)]
pub struct NominateState {
    /// Window page where the next walk starts.
    cursor: AtomicU64,
    /// NOMINATE requests answered.
    pub requests: AtomicU64,
    /// Of those, requests that carried a page limit (protocol 1.4).
    pub limited: AtomicU64,
    /// Entries and pages named in the answers.
    pub entries: AtomicU64,
    pub pages: AtomicU64,
}

impl NominateState {
    /// Forget where the walk was (the store was replaced or reset).
    pub fn reset_cursor(&self) {
        self.cursor.store(0, Ordering::Relaxed);
    }
}

/// The class of a page (None: not worth moving).
fn class_of(state: PageState, size: usize) -> Option<u32> {
    match state {
        PageState::Overflow => Some(VCRAM_NOM_OVERFLOW),
        PageState::Raw => Some(VCRAM_NOM_RAW),
        PageState::Compressed if size >= POOR_IMAGE_BYTES => Some(VCRAM_NOM_POOR),
        _ => None,
    }
}

/// Walk `pages` page states from `cursor` (wrapping) and return up to `max` runs naming at
/// most `max_pages` pages in all (the last run cut short), worst class first (within a class
/// in walk order), and where the next walk should start: right after the last page named.
pub fn nominate(
    pages: u64,
    state: impl Fn(u64) -> Option<(PageState, usize)>,
    cursor: u64,
    max: usize,
    max_pages: u64,
) -> (Vec<Nomination>, u64) {
    if pages == 0 || max == 0 || max_pages == 0 {
        return (Vec::new(), 0);
    }
    let cursor = cursor % pages;
    // Per class (overflow, raw, poor): runs, with their walk offset.
    let mut lists: [Vec<(u64, Nomination)>; 3] = Default::default();
    let mut cur: Option<(u64, Nomination)> = None;
    // Pages of the worst class collected so far: once they fill the limit, nothing else
    // would be named.
    let mut worst_pages = 0u64;
    // Keeps a finished run (if its class list has room); returns the pages it adds to the
    // worst class.
    let flush = |lists: &mut [Vec<(u64, Nomination)>; 3], run: Option<(u64, Nomination)>| {
        let Some((off, n)) = run else { return 0 };
        let slot = n.class.saturating_sub(1) as usize;
        match lists.get_mut(slot) {
            Some(l) if l.len() < max => {
                l.push((off, n));
                if slot == 0 {
                    u64::from(n.npages)
                } else {
                    0
                }
            }
            _ => 0,
        }
    };
    for off in 0..pages {
        let idx = (cursor + off) % pages;
        let class = state(idx).and_then(|(s, size)| class_of(s, size));
        match (&mut cur, class) {
            (Some((_, run)), Some(c))
                if c == run.class
                    && run.first + u64::from(run.npages) == idx
                    && run.npages < VCRAM_MAX_NOMINATION_PAGES =>
            {
                run.npages += 1;
            }
            (_, c) => {
                worst_pages += flush(&mut lists, cur.take());
                cur = c.map(|class| {
                    (
                        off,
                        Nomination {
                            first: idx,
                            npages: 1,
                            class,
                        },
                    )
                });
            }
        }
        // Enough of the worst class: nothing else would be named.
        if lists[0].len() >= max || worst_pages >= max_pages {
            cur = None;
            break;
        }
    }
    flush(&mut lists, cur);
    let mut left = max_pages;
    let mut out: Vec<(u64, Nomination)> = Vec::new();
    for (off, mut n) in lists.into_iter().flatten().take(max) {
        if left == 0 {
            break;
        }
        n.npages = n.npages.min(u32::try_from(left).unwrap_or(u32::MAX));
        left -= u64::from(n.npages);
        out.push((off, n));
    }
    let next = out
        .iter()
        .map(|(off, n)| off + u64::from(n.npages))
        .max()
        .map_or(cursor, |end| (cursor + end) % pages);
    (out.drain(..).map(|(_, n)| n).collect(), next)
}

/// The answer to a validated NOMINATE: the response (pages_done = pages named,
/// pages_overflowed = pages not stored now), then the entries. Returns the bytes to scatter
/// over the writable part.
pub fn answer(
    st: &NominateState,
    store: &Store,
    base: u64,
    max: usize,
    max_pages: Option<u32>,
    overflow_now: u64,
) -> Vec<u8> {
    let cursor = st.cursor.load(Ordering::Relaxed);
    let limit = max_pages.map_or(u64::MAX, u64::from);
    let (runs, next) = nominate(store.pages(), |i| store.state(i), cursor, max, limit);
    st.cursor.store(next, Ordering::Relaxed);
    let pages: u64 = runs.iter().map(|r| u64::from(r.npages)).sum();
    st.requests.fetch_add(1, Ordering::Relaxed);
    if max_pages.is_some() {
        st.limited.fetch_add(1, Ordering::Relaxed);
    }
    st.entries.fetch_add(runs.len() as u64, Ordering::Relaxed);
    st.pages.fetch_add(pages, Ordering::Relaxed);
    let mut out = VcramResp::new(VCRAM_S_OK, VCRAM_NO_RANGE, pages, overflow_now)
        .as_slice()
        .to_vec();
    for r in &runs {
        out.extend_from_slice(
            VcramNomination {
                addr: (base + r.first * VCRAM_PAGE_SIZE).into(),
                npages: r.npages.into(),
                class: r.class.into(),
            }
            .as_slice(),
        );
    }
    out
}

/// Write an answer over the writable descriptors; the used length, or 0 if it could not be
/// written (checked before: the writable part lies in guest memory).
pub fn deliver(descs: &[Desc], mem: &dyn GuestBytes, bytes: &[u8]) -> u32 {
    request::scatter(descs, mem, bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::tests::{device, write_window, BASE};
    use crate::device::DeviceOptions;
    use crate::request::{parse, tests::FakeMem, Kind, Reject, WindowGeom};
    use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};

    const W: WindowGeom = WindowGeom {
        base: 0x1_0000_0000,
        pages: 1024,
    };

    fn header(t: u32, nr: u32) -> Vec<u8> {
        VcramReqHeader {
            req_type: t.into(),
            nr_ranges: nr.into(),
            tag: 1.into(),
        }
        .as_slice()
        .to_vec()
    }

    fn desc(addr: u64, len: u32, writable: bool) -> Desc {
        Desc {
            addr,
            len,
            writable,
        }
    }

    /// Hostile NOMINATE chains: every one refused with a clear reason, none panics.
    #[test]
    fn hostile_nominate_requests_are_refused() {
        let m = FakeMem::new(0, 0x10000);
        m.put(0x1000, &header(VCRAM_REQ_NOMINATE, 0));
        let hdr = desc(0x1000, 16, false);
        // no room for an entry after the response
        for w in [24u32, 39] {
            let r = parse(&[hdr, desc(0x8000, w, true)], &m, Some(W)).unwrap_err();
            assert_eq!(r.reason, Reject::NominateNoRoom, "{w}");
            assert_eq!(r.reason.status(), VCRAM_S_BAD_REQUEST);
        }
        // no response buffer at all
        let r = parse(&[hdr, desc(0x8000, 23, true)], &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::NoResponseBuffer);
        // ranges are not allowed
        m.put(0x2000, &header(VCRAM_REQ_NOMINATE, 1));
        let r = parse(
            &[desc(0x2000, 32, false), desc(0x8000, 4096, true)],
            &m,
            Some(W),
        )
        .unwrap_err();
        assert_eq!(r.reason, Reject::BadRangeCount);
        // a header followed by more bytes
        let r = parse(
            &[desc(0x1000, 32, false), desc(0x8000, 4096, true)],
            &m,
            Some(W),
        )
        .unwrap_err();
        assert_eq!(r.reason, Reject::LengthMismatch);
        // the answer buffer runs past guest memory: refused before anything is written
        let r = parse(&[hdr, desc(0xf000, 0x2000, true)], &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::BadAddress);
        // an answer buffer of 4 GiB in 64 descriptors past the end of memory
        let mut big = vec![hdr];
        big.extend(std::iter::repeat_n(desc(0x8000, u32::MAX, true), 63));
        assert_eq!(
            parse(&big, &m, Some(W)).unwrap_err().reason,
            Reject::BadAddress
        );
        // no window
        let r = parse(&[hdr, desc(0x8000, 4096, true)], &m, None).unwrap_err();
        assert_eq!(r.reason, Reject::NoWindow);
        // a writable descriptor before the header
        let r = parse(&[desc(0x8000, 4096, true), hdr], &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::WrongDirection);
    }

    /// An incompressible page (xorshift), stored raw.
    fn random_page(rnd: &mut u64) -> Vec<u8> {
        let mut page = vec![0u8; 4096];
        for c in page.chunks_mut(8) {
            *rnd ^= *rnd << 13;
            *rnd ^= *rnd >> 7;
            *rnd ^= *rnd << 17;
            c.copy_from_slice(&rnd.to_le_bytes());
        }
        page
    }

    fn limit(max_pages: u32, reserved: u32) -> Vec<u8> {
        VcramNominateArgs {
            max_pages: max_pages.into(),
            reserved: reserved.into(),
        }
        .as_slice()
        .to_vec()
    }

    /// Protocol 1.4's page limit: hostile values are refused with a clear reason, a huge one
    /// is accepted (it only caps), and the 1.3 request without a limit still works.
    #[test]
    fn hostile_nominate_limits_are_refused() {
        let m = FakeMem::new(0, 0x10000);
        let out = desc(0x8000, 4096, true);
        let with = |at: u64, args: &[u8]| {
            let mut b = header(VCRAM_REQ_NOMINATE, 0);
            b.extend_from_slice(args);
            m.put(at, &b);
            desc(at, b.len() as u32, false)
        };
        // a limit of 0 pages: nothing could be named; refused, not answered empty
        let r = parse(&[with(0x1000, &limit(0, 0)), out], &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::NominateBadLimit);
        assert_eq!(r.reason.status(), VCRAM_S_BAD_REQUEST);
        assert_eq!(r.reason.name(), "nominate_bad_limit");
        // reserved bits set
        let r = parse(&[with(0x1100, &limit(8, 1)), out], &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::NominateBadLimit);
        let r = parse(&[with(0x1200, &limit(8, u32::MAX)), out], &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::NominateBadLimit);
        // malformed: a limit cut short (4 bytes), or followed by more bytes
        let r = parse(&[with(0x1300, &limit(8, 0)[..4]), out], &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::LengthMismatch);
        let mut long = limit(8, 0);
        long.extend_from_slice(&[0; 8]);
        let r = parse(&[with(0x1400, &long), out], &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::LengthMismatch);
        // split over two readable descriptors: gathered like any readable part
        m.put(0x1500, &header(VCRAM_REQ_NOMINATE, 0));
        m.put(0x1600, &limit(3, 0));
        let r = parse(
            &[desc(0x1500, 16, false), desc(0x1600, 8, false), out],
            &m,
            Some(W),
        )
        .unwrap();
        assert_eq!(r.max_pages, Some(3));
        // huge: accepted, it only caps
        let r = parse(&[with(0x1700, &limit(u32::MAX, 0)), out], &m, Some(W)).unwrap();
        assert_eq!(r.kind, Kind::Nominate);
        assert_eq!(r.max_pages, Some(u32::MAX));
        // the 1.3 request (header alone): no limit
        let r = parse(&[with(0x1800, &[]), out], &m, Some(W)).unwrap();
        assert_eq!(r.max_pages, None);
        // a limit block on another request type is a length error, as before
        let mut b = header(VCRAM_REQ_RESET, 0);
        b.extend_from_slice(&limit(8, 0));
        m.put(0x1900, &b);
        let r = parse(&[desc(0x1900, 24, false), out], &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::LengthMismatch);
    }

    /// With a page limit the device names at most that many pages (the last run cut short)
    /// and its next walk starts right after the last page named, so no page is skipped.
    #[test]
    fn page_limit_caps_the_answer_and_the_cursor() {
        let v = vec![Some((PageState::Raw, 4096)); 1300];
        // no limit: three runs, 1300 pages, although the driver may move only 100
        let (n, _) = nominate(1300, states(&v), 0, 16, u64::MAX);
        assert_eq!(n.iter().map(|r| u64::from(r.npages)).sum::<u64>(), 1300);
        // limit 100: one run of 100; the next walk starts at page 100
        let (n, next) = nominate(1300, states(&v), 0, 16, 100);
        assert_eq!(
            n,
            vec![Nomination {
                first: 0,
                npages: 100,
                class: VCRAM_NOM_RAW
            }]
        );
        assert_eq!(next, 100);
        let (n, next) = nominate(1300, states(&v), next, 16, 100);
        assert_eq!(n[0].first, 100);
        assert_eq!(next, 200);
        // limit across classes: the worst class first, then what is left of the limit
        use PageState::*;
        let w = vec![
            Some((Raw, 4096)),
            Some((Raw, 4096)),
            Some((Overflow, 4096)),
            Some((Overflow, 4096)),
            Some((Raw, 4096)),
        ];
        let (n, _) = nominate(5, states(&w), 0, 16, 3);
        let got: Vec<(u64, u32, u32)> = n.iter().map(|r| (r.first, r.npages, r.class)).collect();
        assert_eq!(got, vec![(2, 2, VCRAM_NOM_OVERFLOW), (0, 1, VCRAM_NOM_RAW)]);
        // limit 1: one page
        let (n, _) = nominate(5, states(&w), 0, 16, 1);
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].first, n[0].npages), (2, 1));
    }

    /// Through the device: a 1.4 NOMINATE with a limit is answered within it and counted.
    #[test]
    fn device_answers_nominate_within_the_page_limit() {
        let (d, gm) = device(DeviceOptions::default(), 1 << 20);
        let mut rnd = 0x1234_5678_9abc_def1u64;
        for p in 0..40u64 {
            write_window(&gm, p, &random_page(&mut rnd));
        }
        assert!(d.scan_pass());
        let m = gm.memory();
        let mut req = header(VCRAM_REQ_NOMINATE, 0);
        req.extend_from_slice(&limit(7, 0));
        m.write_slice(&req, GuestAddress(0x1000)).unwrap();
        let chain = crate::request::Chain {
            descs: vec![desc(0x1000, 24, false), desc(0x80000, 24 + 16 * 8, true)],
            complete: true,
        };
        assert_eq!(d.handle_request(&chain, &*m), 24 + 16);
        let resp: VcramResp = m.read_obj(GuestAddress(0x80000)).unwrap();
        assert_eq!(u32::from(resp.status), VCRAM_S_OK);
        assert_eq!(u64::from(resp.pages_done), 7);
        let e0: VcramNomination = m.read_obj(GuestAddress(0x80000 + 24)).unwrap();
        assert_eq!(u64::from(e0.addr), BASE);
        assert_eq!(u32::from(e0.npages), 7);
        // a limit of 0 through the device: BAD_REQUEST, counted as such
        let mut bad = header(VCRAM_REQ_NOMINATE, 0);
        bad.extend_from_slice(&limit(0, 0));
        m.write_slice(&bad, GuestAddress(0x2000)).unwrap();
        let chain = crate::request::Chain {
            descs: vec![desc(0x2000, 24, false), desc(0x90000, 24 + 16, true)],
            complete: true,
        };
        assert_eq!(d.handle_request(&chain, &*m), 24);
        let resp: VcramResp = m.read_obj(GuestAddress(0x90000)).unwrap();
        assert_eq!(u32::from(resp.status), VCRAM_S_BAD_REQUEST);
        let s = d.snapshot();
        assert_eq!(s.nominate_requests, 1);
        assert_eq!(s.nominate_limited, 1);
        assert_eq!(s.nominated_pages, 7);
        assert_eq!(s.rejects.get("nominate_bad_limit"), Some(&1));
        assert_eq!(s.bad_requests, 1);
    }

    #[test]
    fn nominate_room_is_capped() {
        let m = FakeMem::new(0, 0x20000);
        m.put(0x1000, &header(VCRAM_REQ_NOMINATE, 0));
        let hdr = desc(0x1000, 16, false);
        let r = parse(&[hdr, desc(0x8000, 24 + 16 * 3 + 15, true)], &m, Some(W)).unwrap();
        assert_eq!(r.kind, Kind::Nominate);
        assert_eq!(r.max_nominations, 3);
        assert!(r.ranges.is_empty());
        let r = parse(&[hdr, desc(0x4000, 0x10000, true)], &m, Some(W)).unwrap();
        assert_eq!(r.max_nominations, VCRAM_MAX_NOMINATIONS);
    }

    fn states(v: &[Option<(PageState, usize)>]) -> impl Fn(u64) -> Option<(PageState, usize)> + '_ {
        move |i| v.get(i as usize).copied().flatten()
    }

    #[test]
    fn worst_class_first_runs_merged_and_the_cursor_moves_on() {
        use PageState::*;
        let v = vec![
            Some((Raw, 4096)),        // 0
            Some((Raw, 4096)),        // 1
            Some((Compressed, 100)),  // 2 good: never named
            Some((Overflow, 4096)),   // 3
            Some((Compressed, 3000)), // 4 poor
            Some((Raw, 4096)),        // 5
            Some((Overflow, 4096)),   // 6
            Some((Overflow, 4096)),   // 7
            None,                     // 8
            Some((Same, 0)),          // 9
        ];
        let (n, next) = nominate(v.len() as u64, states(&v), 0, 16, u64::MAX);
        let got: Vec<(u64, u32, u32)> = n.iter().map(|r| (r.first, r.npages, r.class)).collect();
        assert_eq!(
            got,
            vec![
                (3, 1, VCRAM_NOM_OVERFLOW),
                (6, 2, VCRAM_NOM_OVERFLOW),
                (0, 2, VCRAM_NOM_RAW),
                (5, 1, VCRAM_NOM_RAW),
                (4, 1, VCRAM_NOM_POOR),
            ]
        );
        assert_eq!(next, 8);
        // two entries: the overflow runs only; the walk goes on after them
        let (n, next) = nominate(v.len() as u64, states(&v), 0, 2, u64::MAX);
        assert_eq!(n.len(), 2);
        assert!(n.iter().all(|r| r.class == VCRAM_NOM_OVERFLOW));
        assert_eq!(next, 8);
        // from a cursor: the walk wraps around, a run does not span the wrap
        let (n, _) = nominate(v.len() as u64, states(&v), 7, 16, u64::MAX);
        let got: Vec<(u64, u32)> = n.iter().map(|r| (r.first, r.npages)).collect();
        assert_eq!(got, vec![(7, 1), (3, 1), (6, 1), (0, 2), (5, 1), (4, 1)]);
        // nothing to name
        let empty = vec![None; 10];
        assert_eq!(nominate(10, states(&empty), 3, 16, u64::MAX), (vec![], 3));
        assert_eq!(nominate(0, states(&empty), 3, 16, u64::MAX), (vec![], 0));
    }

    #[test]
    fn runs_are_capped() {
        let v = vec![Some((PageState::Raw, 4096)); 1300];
        let (n, _) = nominate(1300, states(&v), 0, 16, u64::MAX);
        let lens: Vec<u32> = n.iter().map(|r| r.npages).collect();
        assert_eq!(lens, vec![512, 512, 276]);
    }

    /// NOMINATE through the device: entries name the raw pages of the window, worst first, and
    /// the answer is scattered over the writable descriptors.
    #[test]
    fn device_answers_nominate() {
        let (d, gm) = device(DeviceOptions::default(), 1 << 20);
        let mut rnd = 0x1234_5678_9abc_def1u64;
        for p in [3u64, 4, 10] {
            write_window(&gm, p, &random_page(&mut rnd));
        }
        write_window(&gm, 20, &crate::device::tests::text_page(1));
        assert!(d.scan_pass());
        let m = gm.memory();
        m.write_slice(&header(VCRAM_REQ_NOMINATE, 0), GuestAddress(0x1000))
            .unwrap();
        // room for two entries in one descriptor and a third in another; two are written
        let chain = crate::request::Chain {
            descs: vec![
                desc(0x1000, 16, false),
                desc(0x80000, 24 + 16 * 2, true),
                desc(0x90000, 16, true),
            ],
            complete: true,
        };
        assert_eq!(d.handle_request(&chain, &*m), 24 + 16 * 2);
        let resp: VcramResp = m.read_obj(GuestAddress(0x80000)).unwrap();
        assert_eq!(u32::from(resp.status), VCRAM_S_OK);
        assert_eq!(u64::from(resp.pages_done), 3);
        let e0: VcramNomination = m.read_obj(GuestAddress(0x80000 + 24)).unwrap();
        let e1: VcramNomination = m.read_obj(GuestAddress(0x80000 + 40)).unwrap();
        assert_eq!(u64::from(e0.addr), BASE + 3 * 4096);
        assert_eq!(u32::from(e0.npages), 2);
        assert_eq!(u32::from(e0.class), VCRAM_NOM_RAW);
        assert_eq!(u64::from(e1.addr), BASE + 10 * 4096);
        assert_eq!(u32::from(e1.npages), 1);
        let s = d.snapshot();
        assert_eq!(s.nominate_requests, 1);
        assert_eq!(s.nominated_entries, 2);
        assert_eq!(s.nominated_pages, 3);
        assert_eq!(s.bad_requests, 0);
    }
}
