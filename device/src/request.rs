// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Parsing and validation of requestq chains. Everything here is guest-controlled input:
//! no panics, no unchecked arithmetic or indexing on guest values.

use vm_memory::ByteValued;

use crate::protocol::*;

/// One descriptor of a chain, as the device saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// Access to guest memory by guest-physical address.
pub trait GuestBytes {
    /// Fill `buf` from `addr`; false if any byte is outside guest memory.
    fn read_at(&self, addr: u64, buf: &mut [u8]) -> bool;
    /// Write `buf` at `addr`; false if any byte is outside guest memory.
    fn write_at(&self, addr: u64, buf: &[u8]) -> bool;
    /// Whether `[addr, addr + len)` is entirely guest memory.
    fn valid(&self, addr: u64, len: u64) -> bool;
}

/// Why a request was refused (one counter each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// The chain ends early: its last descriptor has NEXT, but the next one could not be read
    /// (index past the queue or the indirect table, outside guest memory, a loop).
    BrokenChain,
    /// More than `VCRAM_MAX_CHAIN_DESCS` descriptors.
    ChainTooLong,
    /// A device-readable descriptor after a device-writable one.
    WrongDirection,
    /// Less than 24 device-writable bytes: no room for the response (nothing written).
    NoResponseBuffer,
    /// Fewer than 16 readable bytes.
    HeaderShort,
    /// Readable bytes do not equal 16 + 16 * nr_ranges (too short or too long).
    LengthMismatch,
    /// nr_ranges is 0 or above `VCRAM_MAX_RANGES`.
    BadRangeCount,
    /// A readable descriptor points outside guest memory.
    BadAddress,
    /// Unknown request type.
    Unsupported,
    /// A range has a nonzero reserved field.
    ReservedSet,
    /// A range is unaligned, empty, wraps, or is outside the window.
    OutOfRange,
    /// Ranges overlap.
    Overlap,
    /// No usable window.
    NoWindow,
    /// NOMINATE: no room for one entry after the response (fewer than 24 + 16 writable bytes).
    NominateNoRoom,
    /// NOMINATE (1.4): a page limit of 0, or its reserved field set.
    NominateBadLimit,
}

impl Reject {
    pub fn status(self) -> u32 {
        match self {
            Reject::BrokenChain
            | Reject::ChainTooLong
            | Reject::WrongDirection
            | Reject::NoResponseBuffer
            | Reject::HeaderShort
            | Reject::LengthMismatch
            | Reject::BadRangeCount
            | Reject::BadAddress
            | Reject::ReservedSet
            | Reject::NominateNoRoom
            | Reject::NominateBadLimit => VCRAM_S_BAD_REQUEST,
            Reject::Unsupported => VCRAM_S_UNSUPPORTED,
            Reject::OutOfRange => VCRAM_S_OUT_OF_RANGE,
            Reject::Overlap => VCRAM_S_OVERLAP,
            Reject::NoWindow => VCRAM_S_NO_WINDOW,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Reject::BrokenChain => "broken_chain",
            Reject::ChainTooLong => "chain_too_long",
            Reject::WrongDirection => "wrong_direction",
            Reject::NoResponseBuffer => "no_response_buffer",
            Reject::HeaderShort => "header_short",
            Reject::LengthMismatch => "length_mismatch",
            Reject::BadRangeCount => "bad_range_count",
            Reject::BadAddress => "bad_address",
            Reject::Unsupported => "unsupported",
            Reject::ReservedSet => "reserved_set",
            Reject::OutOfRange => "out_of_range",
            Reject::Overlap => "overlap",
            Reject::NoWindow => "no_window",
            Reject::NominateNoRoom => "nominate_no_room",
            Reject::NominateBadLimit => "nominate_bad_limit",
        }
    }

    pub const ALL: [Reject; 15] = [
        Reject::BrokenChain,
        Reject::ChainTooLong,
        Reject::WrongDirection,
        Reject::NoResponseBuffer,
        Reject::HeaderShort,
        Reject::LengthMismatch,
        Reject::BadRangeCount,
        Reject::BadAddress,
        Reject::Unsupported,
        Reject::ReservedSet,
        Reject::OutOfRange,
        Reject::Overlap,
        Reject::NoWindow,
        Reject::NominateNoRoom,
        Reject::NominateBadLimit,
    ];

    pub fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A refused request: why, and which range (if one is to blame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reject,
    pub bad_range: u32,
}

impl Refusal {
    fn new(reason: Reject) -> Self {
        Refusal {
            reason,
            bad_range: VCRAM_NO_RANGE,
        }
    }
    fn at(reason: Reject, idx: usize) -> Self {
        Refusal {
            reason,
            bad_range: u32::try_from(idx).unwrap_or(VCRAM_NO_RANGE),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Discard,
    Commit,
    /// The whole window (no ranges).
    Reset,
    /// Name the costliest pages (no ranges; answered in the writable part).
    Nominate,
}

/// A validated request: page ranges as window page indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    /// (first page index in the window, number of pages)
    pub ranges: Vec<(u64, u64)>,
    /// NOMINATE: entries that fit after the response (1 ..= `VCRAM_MAX_NOMINATIONS`); else 0.
    pub max_nominations: usize,
    /// NOMINATE (since 1.4): the most pages the answer may name; None: no limit (1.3).
    pub max_pages: Option<u32>,
}

impl Request {
    pub fn pages(&self) -> u64 {
        self.ranges.iter().map(|r| r.1).sum()
    }
}

/// The window as the parser needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGeom {
    pub base: u64,
    pub pages: u64,
}

/// Writable descriptors of a chain (where the response goes).
pub fn writable_len(descs: &[Desc]) -> u64 {
    descs
        .iter()
        .filter(|d| d.writable)
        .map(|d| u64::from(d.len))
        .sum()
}

/// A descriptor chain as taken off a queue: at most `VCRAM_MAX_CHAIN_DESCS + 1` descriptors,
/// and whether it ended properly (its last descriptor without NEXT).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub descs: Vec<Desc>,
    pub complete: bool,
}

impl Chain {
    /// Collect from an iterator of (descriptor, has NEXT); stops after one descriptor more than
    /// allowed (so an endless chain is reported as too long).
    pub fn collect(it: impl Iterator<Item = (Desc, bool)>) -> Chain {
        let mut descs = Vec::new();
        let mut more = true;
        for (d, next) in it.take(VCRAM_MAX_CHAIN_DESCS + 1) {
            descs.push(d);
            more = next;
        }
        Chain {
            descs,
            complete: !more,
        }
    }
}

/// Check the chain layout. Returns whether a response can be written (>= 24 writable bytes,
/// correct order) alongside any refusal.
pub fn check_layout(descs: &[Desc]) -> Result<(), Refusal> {
    if descs.len() > VCRAM_MAX_CHAIN_DESCS {
        return Err(Refusal::new(Reject::ChainTooLong));
    }
    let mut seen_writable = false;
    for d in descs {
        if d.writable {
            seen_writable = true;
        } else if seen_writable {
            return Err(Refusal::new(Reject::WrongDirection));
        }
    }
    if writable_len(descs) < VCRAM_RESP_SIZE as u64 {
        return Err(Refusal::new(Reject::NoResponseBuffer));
    }
    Ok(())
}

const MAX_REQ_BYTES: u64 = VCRAM_REQ_HEADER_SIZE as u64 + VCRAM_MAX_RANGES as u64 * 16;

/// Parse and validate a request chain taken off the queue: a chain that was cut short is
/// refused (after the descriptor count, before anything else).
pub fn parse_chain(
    chain: &Chain,
    mem: &dyn GuestBytes,
    window: Option<WindowGeom>,
) -> Result<Request, Refusal> {
    if chain.descs.len() <= VCRAM_MAX_CHAIN_DESCS && !chain.complete {
        // A response can still be written if the part read holds one.
        return Err(Refusal::new(match check_layout(&chain.descs) {
            Err(r) if r.reason == Reject::NoResponseBuffer => Reject::NoResponseBuffer,
            _ => Reject::BrokenChain,
        }));
    }
    parse(&chain.descs, mem, window)
}

/// Parse and validate a complete request chain. `window` is None when the device has no usable
/// window.
pub fn parse(
    descs: &[Desc],
    mem: &dyn GuestBytes,
    window: Option<WindowGeom>,
) -> Result<Request, Refusal> {
    check_layout(descs)?;
    // The response must be deliverable before anything is executed.
    if descs
        .iter()
        .filter(|d| d.writable)
        .any(|d| !mem.valid(d.addr, u64::from(d.len)))
    {
        return Err(Refusal::new(Reject::BadAddress));
    }
    // Gather the readable bytes (bounded).
    let readable: u64 = descs
        .iter()
        .filter(|d| !d.writable)
        .map(|d| u64::from(d.len))
        .sum();
    if readable < VCRAM_REQ_HEADER_SIZE as u64 {
        return Err(Refusal::new(Reject::HeaderShort));
    }
    // The whole readable part must be guest memory before its content decides anything.
    if descs
        .iter()
        .filter(|d| !d.writable)
        .any(|d| !mem.valid(d.addr, u64::from(d.len)))
    {
        return Err(Refusal::new(Reject::BadAddress));
    }
    if readable > MAX_REQ_BYTES {
        // Too long for any valid request; look at the header only, for the checks that come
        // before the length (type, range count).
        let mut hdr = [0u8; VCRAM_REQ_HEADER_SIZE];
        gather(descs, mem, &mut hdr)?;
        let h = VcramReqHeader::from_slice(&hdr)
            .copied()
            .unwrap_or_default();
        let kind = check_type(u32::from(h.req_type))?;
        check_range_count(kind, u32::from(h.nr_ranges))?;
        return Err(Refusal::new(Reject::LengthMismatch));
    }
    let mut buf = vec![0u8; readable as usize];
    gather(descs, mem, &mut buf)?;
    let hdr = buf
        .get(..VCRAM_REQ_HEADER_SIZE)
        .and_then(VcramReqHeader::from_slice)
        .copied()
        .ok_or(Refusal::new(Reject::HeaderShort))?;
    let kind = check_type(u32::from(hdr.req_type))?;
    let nr = u32::from(hdr.nr_ranges);
    check_range_count(kind, nr)?;
    let expected = VCRAM_REQ_HEADER_SIZE as u64 + u64::from(nr) * VCRAM_RANGE_SIZE as u64;
    let with_args = kind == Kind::Nominate
        && readable == VCRAM_REQ_HEADER_SIZE as u64 + VCRAM_NOMINATE_ARGS_SIZE as u64;
    if readable != expected && !with_args {
        return Err(Refusal::new(Reject::LengthMismatch));
    }
    let max_nominations = if kind == Kind::Nominate {
        let room = writable_len(descs).saturating_sub(VCRAM_RESP_SIZE as u64)
            / VCRAM_NOMINATION_SIZE as u64;
        if room == 0 {
            return Err(Refusal::new(Reject::NominateNoRoom));
        }
        usize::try_from(room)
            .unwrap_or(VCRAM_MAX_NOMINATIONS)
            .min(VCRAM_MAX_NOMINATIONS)
    } else {
        0
    };
    let max_pages = if with_args {
        let args = buf
            .get(VCRAM_REQ_HEADER_SIZE..)
            .and_then(VcramNominateArgs::from_slice)
            .copied()
            .ok_or(Refusal::new(Reject::LengthMismatch))?;
        let max = u32::from(args.max_pages);
        if max == 0 || u32::from(args.reserved) != 0 {
            return Err(Refusal::new(Reject::NominateBadLimit));
        }
        Some(max)
    } else {
        None
    };
    let Some(w) = window else {
        return Err(Refusal::new(Reject::NoWindow));
    };
    let table = if with_args {
        &[][..]
    } else {
        buf.get(VCRAM_REQ_HEADER_SIZE..).unwrap_or(&[])
    };
    let mut ranges = Vec::with_capacity(nr as usize);
    for (i, raw) in table.chunks_exact(VCRAM_RANGE_SIZE).enumerate() {
        let r = VcramRange::from_slice(raw)
            .copied()
            .ok_or(Refusal::at(Reject::LengthMismatch, i))?;
        if u32::from(r.reserved) != 0 {
            return Err(Refusal::at(Reject::ReservedSet, i));
        }
        let addr = u64::from(r.addr);
        let n = u64::from(u32::from(r.npages));
        if n == 0 || addr % VCRAM_PAGE_SIZE != 0 || addr < w.base {
            return Err(Refusal::at(Reject::OutOfRange, i));
        }
        let first = (addr - w.base) / VCRAM_PAGE_SIZE;
        match first.checked_add(n) {
            Some(end) if end <= w.pages => ranges.push((first, n)),
            _ => return Err(Refusal::at(Reject::OutOfRange, i)),
        }
    }
    // Overlap: sort by start, compare neighbours.
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_unstable_by_key(|&i| ranges.get(i).map(|r| r.0).unwrap_or(0));
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if let (Some(ra), Some(rb)) = (ranges.get(a), ranges.get(b)) {
            if rb.0 < ra.0 + ra.1 {
                return Err(Refusal::at(Reject::Overlap, a.max(b)));
            }
        }
    }
    Ok(Request {
        kind,
        ranges,
        max_nominations,
        max_pages,
    })
}

/// DISCARD and COMMIT: 1 ..= 1024 ranges; RESET and NOMINATE: none.
fn check_range_count(kind: Kind, nr: u32) -> Result<(), Refusal> {
    let ok = match kind {
        Kind::Reset | Kind::Nominate => nr == 0,
        Kind::Discard | Kind::Commit => (1..=VCRAM_MAX_RANGES).contains(&nr),
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(Reject::BadRangeCount))
    }
}

fn check_type(t: u32) -> Result<Kind, Refusal> {
    match t {
        VCRAM_REQ_DISCARD => Ok(Kind::Discard),
        VCRAM_REQ_COMMIT => Ok(Kind::Commit),
        VCRAM_REQ_RESET => Ok(Kind::Reset),
        VCRAM_REQ_NOMINATE => Ok(Kind::Nominate),
        _ => Err(Refusal::new(Reject::Unsupported)),
    }
}

/// Copy the first `out.len()` readable bytes of the chain into `out`.
fn gather(descs: &[Desc], mem: &dyn GuestBytes, out: &mut [u8]) -> Result<(), Refusal> {
    let mut pos = 0usize;
    for d in descs.iter().filter(|d| !d.writable) {
        if pos >= out.len() {
            break;
        }
        let take = (d.len as usize).min(out.len() - pos);
        let dst = out
            .get_mut(pos..pos + take)
            .ok_or(Refusal::new(Reject::BadAddress))?;
        if !mem.read_at(d.addr, dst) {
            return Err(Refusal::new(Reject::BadAddress));
        }
        pos += take;
    }
    Ok(())
}

/// Write `data` across the writable descriptors, in order. Returns bytes written, or None if a
/// writable descriptor lies outside guest memory.
pub fn scatter(descs: &[Desc], mem: &dyn GuestBytes, data: &[u8]) -> Option<u32> {
    let mut pos = 0usize;
    for d in descs.iter().filter(|d| d.writable) {
        if pos >= data.len() {
            break;
        }
        let take = (d.len as usize).min(data.len() - pos);
        let src = data.get(pos..pos + take)?;
        if !mem.write_at(d.addr, src) {
            return None;
        }
        pos += take;
    }
    u32::try_from(pos).ok()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Flat fake guest memory at [base, base + len).
    pub struct FakeMem {
        pub base: u64,
        pub bytes: RefCell<Vec<u8>>,
    }

    impl FakeMem {
        pub fn new(base: u64, len: usize) -> Self {
            FakeMem {
                base,
                bytes: RefCell::new(vec![0; len]),
            }
        }
        fn span(&self, addr: u64, len: usize) -> Option<std::ops::Range<usize>> {
            let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
            let end = off.checked_add(len)?;
            if end <= self.bytes.borrow().len() {
                Some(off..end)
            } else {
                None
            }
        }
        pub fn put(&self, addr: u64, data: &[u8]) {
            assert!(self.write_at(addr, data));
        }
    }

    impl GuestBytes for FakeMem {
        fn read_at(&self, addr: u64, buf: &mut [u8]) -> bool {
            match self.span(addr, buf.len()) {
                Some(r) => {
                    buf.copy_from_slice(&self.bytes.borrow()[r]);
                    true
                }
                None => false,
            }
        }
        fn write_at(&self, addr: u64, buf: &[u8]) -> bool {
            match self.span(addr, buf.len()) {
                Some(r) => {
                    self.bytes.borrow_mut()[r].copy_from_slice(buf);
                    true
                }
                None => false,
            }
        }
        fn valid(&self, addr: u64, len: u64) -> bool {
            usize::try_from(len)
                .ok()
                .and_then(|l| self.span(addr, l))
                .is_some()
        }
    }

    const W: WindowGeom = WindowGeom {
        base: 0x1_0000_0000,
        pages: 1024,
    };

    fn req_bytes(t: u32, ranges: &[(u64, u32)]) -> Vec<u8> {
        encode_request(t, 7, ranges)
    }

    /// Request bytes at 0x1000, response buffer at 0x8000.
    fn setup(bytes: &[u8]) -> (FakeMem, Vec<Desc>) {
        let m = FakeMem::new(0, 0x10000 + 20 * 1024);
        m.put(0x1000, bytes);
        let d = vec![
            Desc {
                addr: 0x1000,
                len: bytes.len() as u32,
                writable: false,
            },
            Desc {
                addr: 0x8000,
                len: 24,
                writable: true,
            },
        ];
        (m, d)
    }

    fn refuse(descs: &[Desc], m: &FakeMem) -> Refusal {
        parse(descs, m, Some(W)).unwrap_err()
    }

    #[test]
    fn valid_discard_and_commit() {
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 2), (W.base + 0x10000, 3)]);
        let (m, d) = setup(&b);
        let r = parse(&d, &m, Some(W)).unwrap();
        assert_eq!(r.kind, Kind::Discard);
        assert_eq!(r.ranges, vec![(0, 2), (16, 3)]);
        assert_eq!(r.pages(), 5);
        let b = req_bytes(VCRAM_REQ_COMMIT, &[(W.base + 1023 * 4096, 1)]);
        let (m, d) = setup(&b);
        assert_eq!(parse(&d, &m, Some(W)).unwrap().ranges, vec![(1023, 1)]);
    }

    #[test]
    fn header_and_ranges_split_across_descriptors() {
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1), (W.base + 4096, 1)]);
        let m = FakeMem::new(0, 0x10000);
        m.put(0x1000, &b[..10]);
        m.put(0x3000, &b[10..40]);
        m.put(0x5000, &b[40..]);
        let d = vec![
            Desc {
                addr: 0x1000,
                len: 10,
                writable: false,
            },
            Desc {
                addr: 0x3000,
                len: 30,
                writable: false,
            },
            Desc {
                addr: 0x5000,
                len: 8,
                writable: false,
            },
            Desc {
                addr: 0x8000,
                len: 12,
                writable: true,
            },
            Desc {
                addr: 0x9000,
                len: 12,
                writable: true,
            },
        ];
        assert_eq!(parse(&d, &m, Some(W)).unwrap().ranges, vec![(0, 1), (1, 1)]);
        // response scattered over two writable descriptors
        let resp = VcramResp::new(VCRAM_S_OK, VCRAM_NO_RANGE, 2, 0);
        assert_eq!(scatter(&d, &m, resp.as_slice()), Some(24));
        let mut got = [0u8; 24];
        m.read_at(0x8000, &mut got[..12]);
        m.read_at(0x9000, &mut got[12..]);
        assert_eq!(&got[..], resp.as_slice());
    }

    #[test]
    fn chain_too_short() {
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1)]);
        let (m, mut d) = setup(&b);
        // header cut short
        d[0].len = 10;
        assert_eq!(refuse(&d, &m).reason, Reject::HeaderShort);
        // header complete but range table short
        d[0].len = 20;
        assert_eq!(refuse(&d, &m).reason, Reject::LengthMismatch);
        // no readable part at all
        assert_eq!(refuse(&d[1..], &m).reason, Reject::HeaderShort);
        // no writable part: nothing can be answered
        assert_eq!(refuse(&d[..1], &m).reason, Reject::NoResponseBuffer);
        // writable part too small
        d[0].len = b.len() as u32;
        d[1].len = 23;
        assert_eq!(refuse(&d, &m).reason, Reject::NoResponseBuffer);
        assert_eq!(Reject::NoResponseBuffer.status(), VCRAM_S_BAD_REQUEST);
    }

    #[test]
    fn chain_too_long() {
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1)]);
        let (m, mut d) = setup(&b);
        // more readable bytes than nr_ranges says
        d[0].len = b.len() as u32 + 16;
        assert_eq!(refuse(&d, &m).reason, Reject::LengthMismatch);
        // huge readable length
        d[0].len = 0x4000;
        assert_eq!(refuse(&d, &m).reason, Reject::LengthMismatch);
        // ... past the end of guest memory: the readable part is checked first (section 4.4)
        d[0].len = u32::MAX;
        assert_eq!(refuse(&d, &m).reason, Reject::BadAddress);
        // too many descriptors
        let mut many = vec![
            Desc {
                addr: 0x1000,
                len: 1,
                writable: false
            };
            VCRAM_MAX_CHAIN_DESCS
        ];
        many.push(Desc {
            addr: 0x8000,
            len: 24,
            writable: true,
        });
        assert_eq!(refuse(&many, &m).reason, Reject::ChainTooLong);
    }

    #[test]
    fn addresses_outside_guest_memory() {
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1)]);
        let (m, mut d) = setup(&b);
        d[0].addr = 0xffff_ffff_ffff_fff0;
        assert_eq!(refuse(&d, &m).reason, Reject::BadAddress);
        d[0].addr = 0x1_0000_0000_0000;
        assert_eq!(refuse(&d, &m).reason, Reject::BadAddress);
        // response buffer outside guest memory: refused before anything runs, and scatter
        // cannot write the status either
        d[0].addr = 0x1000;
        d[1].addr = 0x7fff_ffff_0000;
        assert_eq!(refuse(&d, &m).reason, Reject::BadAddress);
        assert_eq!(scatter(&d, &m, &[0u8; 24]), None);
    }

    #[test]
    fn ranges_outside_window() {
        let cases: &[(u64, u32)] = &[
            (W.base - 4096, 1),        // below
            (W.base + 1024 * 4096, 1), // just past the end
            (W.base + 1023 * 4096, 2), // runs past the end
            (W.base + 100, 1),         // unaligned
            (W.base, 0),               // empty
            (!0xfffu64, u32::MAX),     // wraps
            (0, 1),                    // far below
        ];
        for &(a, n) in cases {
            let b = req_bytes(VCRAM_REQ_COMMIT, &[(W.base, 1), (a, n)]);
            let (m, d) = setup(&b);
            let r = refuse(&d, &m);
            assert_eq!(r.reason, Reject::OutOfRange, "{a:#x} {n}");
            assert_eq!(r.bad_range, 1);
            assert_eq!(r.reason.status(), VCRAM_S_OUT_OF_RANGE);
        }
    }

    #[test]
    fn overlapping_ranges() {
        let b = req_bytes(
            VCRAM_REQ_DISCARD,
            &[
                (W.base + 10 * 4096, 5),
                (W.base, 2),
                (W.base + 14 * 4096, 1),
            ],
        );
        let (m, d) = setup(&b);
        let r = refuse(&d, &m);
        assert_eq!(r.reason, Reject::Overlap);
        assert_eq!(r.bad_range, 2);
        // identical ranges
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1), (W.base, 1)]);
        let (m, d) = setup(&b);
        assert_eq!(refuse(&d, &m).reason, Reject::Overlap);
        // adjacent is fine
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base + 4096, 1), (W.base, 1)]);
        let (m, d) = setup(&b);
        assert!(parse(&d, &m, Some(W)).is_ok());
    }

    #[test]
    fn unknown_type_and_counts() {
        for t in [0u32, 5, 0xffff_ffff] {
            let b = req_bytes(t, &[(W.base, 1)]);
            let (m, d) = setup(&b);
            let r = refuse(&d, &m);
            assert_eq!(r.reason, Reject::Unsupported);
            assert_eq!(r.reason.status(), VCRAM_S_UNSUPPORTED);
        }
        let b = req_bytes(VCRAM_REQ_DISCARD, &[]);
        let (m, d) = setup(&b);
        assert_eq!(refuse(&d, &m).reason, Reject::BadRangeCount);
        let mut b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1)]);
        b[4..8].copy_from_slice(&(VCRAM_MAX_RANGES + 1).to_le_bytes());
        let (m, d) = setup(&b);
        assert_eq!(refuse(&d, &m).reason, Reject::BadRangeCount);
    }

    #[test]
    fn reserved_field_must_be_zero() {
        let mut b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1)]);
        b[28] = 1;
        let (m, d) = setup(&b);
        assert_eq!(refuse(&d, &m).reason, Reject::ReservedSet);
    }

    #[test]
    fn buffers_in_wrong_direction() {
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1)]);
        let (m, mut d) = setup(&b);
        // writable first, readable after
        d.swap(0, 1);
        assert_eq!(refuse(&d, &m).reason, Reject::WrongDirection);
        // request in a writable buffer only
        d[1].writable = true;
        assert_eq!(refuse(&d, &m).reason, Reject::HeaderShort);
        // response buffer read-only
        let (m, mut d) = setup(&b);
        d[1].writable = false;
        assert_eq!(refuse(&d, &m).reason, Reject::NoResponseBuffer);
    }

    #[test]
    fn no_window() {
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1)]);
        let (m, d) = setup(&b);
        let r = parse(&d, &m, None).unwrap_err();
        assert_eq!(r.reason, Reject::NoWindow);
        assert_eq!(r.reason.status(), VCRAM_S_NO_WINDOW);
    }

    #[test]
    fn chains_cut_short() {
        let b = req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1)]);
        let (m, d) = setup(&b);
        // the last descriptor still has NEXT: refused, though the part read is a valid request
        let cut = Chain::collect(d.iter().map(|x| (*x, true)));
        assert!(!cut.complete);
        let r = parse_chain(&cut, &m, Some(W)).unwrap_err();
        assert_eq!(r.reason, Reject::BrokenChain);
        assert_eq!(r.reason.status(), VCRAM_S_BAD_REQUEST);
        // cut before the response buffer: nothing can be answered
        let cut = Chain::collect(d[..1].iter().map(|x| (*x, true)));
        assert_eq!(
            parse_chain(&cut, &m, Some(W)).unwrap_err().reason,
            Reject::NoResponseBuffer
        );
        // an empty chain (the head could not be read)
        let empty = Chain::collect(std::iter::empty());
        assert!(!empty.complete);
        assert_eq!(
            parse_chain(&empty, &m, Some(W)).unwrap_err().reason,
            Reject::NoResponseBuffer
        );
        // complete: parsed
        let last = d.len() - 1;
        let ok = Chain::collect(d.iter().enumerate().map(|(i, x)| (*x, i != last)));
        assert!(ok.complete);
        assert_eq!(parse_chain(&ok, &m, Some(W)).unwrap().ranges, vec![(0, 1)]);
        // endless: at most one descriptor past the limit is taken, and it is too long
        let endless = Chain::collect(std::iter::repeat((d[0], true)));
        assert_eq!(endless.descs.len(), VCRAM_MAX_CHAIN_DESCS + 1);
        assert_eq!(
            parse_chain(&endless, &m, Some(W)).unwrap_err().reason,
            Reject::ChainTooLong
        );
    }

    #[test]
    fn reset_has_no_ranges() {
        let b = req_bytes(VCRAM_REQ_RESET, &[]);
        let (m, d) = setup(&b);
        let r = parse(&d, &m, Some(W)).unwrap();
        assert_eq!(r.kind, Kind::Reset);
        assert!(r.ranges.is_empty());
        // ranges are refused
        let b = req_bytes(VCRAM_REQ_RESET, &[(W.base, 1)]);
        let (m, d) = setup(&b);
        assert_eq!(refuse(&d, &m).reason, Reject::BadRangeCount);
        // a header of 16 bytes followed by more: length mismatch
        let mut b = req_bytes(VCRAM_REQ_RESET, &[]);
        b.extend_from_slice(&[0u8; 16]);
        let (m, d) = setup(&b);
        assert_eq!(refuse(&d, &m).reason, Reject::LengthMismatch);
        // no window
        let b = req_bytes(VCRAM_REQ_RESET, &[]);
        let (m, d) = setup(&b);
        assert_eq!(parse(&d, &m, None).unwrap_err().reason, Reject::NoWindow);
    }

    /// PROTOCOL.md section 4.4: readable part inside guest memory before type, type before
    /// range count, range count before the exact length, even for a readable part too long
    /// for any request.
    #[test]
    fn order_of_checks_matches_the_protocol() {
        let m = FakeMem::new(0, 0x10000);
        let hdr = req_bytes(99, &[]);
        m.put(0x1000, &hdr);
        let resp = Desc {
            addr: 0x8000,
            len: 24,
            writable: true,
        };
        // unknown type, but a readable descriptor outside guest memory: BAD_REQUEST
        for tail_len in [16u32, 0x8000] {
            let d = vec![
                Desc {
                    addr: 0x1000,
                    len: 16,
                    writable: false,
                },
                Desc {
                    addr: 0x7fff_0000_0000,
                    len: tail_len,
                    writable: false,
                },
                resp,
            ];
            assert_eq!(refuse(&d, &m).reason, Reject::BadAddress, "{tail_len}");
        }
        // too long for any request: the type is reported first, then the range count
        let long = vec![
            Desc {
                addr: 0x1000,
                len: 0x5000,
                writable: false,
            },
            resp,
        ];
        assert_eq!(refuse(&long, &m).reason, Reject::Unsupported);
        let mut b = req_bytes(VCRAM_REQ_DISCARD, &[]);
        b[4..8].copy_from_slice(&5000u32.to_le_bytes());
        m.put(0x1000, &b);
        assert_eq!(refuse(&long, &m).reason, Reject::BadRangeCount);
        m.put(0x1000, &req_bytes(VCRAM_REQ_DISCARD, &[(W.base, 1)]));
        assert_eq!(refuse(&long, &m).reason, Reject::LengthMismatch);
    }

    #[test]
    fn reject_indices_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in Reject::ALL {
            assert!(seen.insert(r.index()));
        }
    }
}
