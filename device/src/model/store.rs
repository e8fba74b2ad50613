// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! The page store: what the device holds for each 4 KiB page of the window, and the physical
//! space accounting that follows from it. Independent of vhost and guest memory: it is fed
//! plain byte slices, so it can be unit-tested and benchmarked directly.
//!
//! Page table: one 16-byte [`Entry`] per window page, nothing else per page. Images live in the
//! [`Arena`]. Physical use = page-table bytes + every held image rounded up to [`GRANULE`].

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

use super::arena::{rounded, Arena, GRANULE};
use super::compress::{self, Encoded, Encoder};
use crate::protocol::{VCRAM_LEVEL_HIGH, VCRAM_LEVEL_LOW, VCRAM_LEVEL_NORMAL, VCRAM_PAGE_SIZE};

pub const PAGE: usize = VCRAM_PAGE_SIZE as usize;

/// State of one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageState {
    /// Never written, or discarded: nothing held, content is zero.
    Empty = 0,
    /// Same-filled (one repeated 8-byte word; all-zero pages included): nothing held but the word.
    Same = 1,
    /// A zstd image is held.
    Compressed = 2,
    /// Incompressible: the 4096 bytes are held as they are.
    Raw = 3,
    /// Written, but could not be stored: physical capacity exhausted.
    Overflow = 4,
}

impl PageState {
    fn from_bits(b: u32) -> PageState {
        match b & 0xf {
            1 => PageState::Same,
            2 => PageState::Compressed,
            3 => PageState::Raw,
            4 => PageState::Overflow,
            _ => PageState::Empty,
        }
    }
}

/// Page-table entry, 16 bytes.
/// - `word`: Same: the fill word; Compressed/Raw/Overflow: xxh3-64 of the page content the
///   image was made from; Empty: 0.
/// - `slot`: arena slot of the image (Compressed/Raw).
/// - `meta`: bits 0..4 state, bits 16..29 image size in bytes (Overflow: size it needed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Entry {
    word: u64,
    slot: u32,
    meta: u32,
}

impl Entry {
    /// Whether `page` is the content this entry was made from (a word compare for empty and
    /// same-filled pages, the xxh3-64 hash otherwise).
    #[inline]
    pub fn matches(&self, page: &[u8]) -> bool {
        match self.state() {
            PageState::Empty => compress::is_filled_with(page, 0),
            PageState::Same => compress::is_filled_with(page, self.word),
            _ => xxh3_64(page) == self.word,
        }
    }

    #[inline]
    pub fn state(&self) -> PageState {
        PageState::from_bits(self.meta)
    }
    #[inline]
    fn size(&self) -> usize {
        (self.meta >> 16) as usize
    }
    #[inline]
    fn set(&mut self, state: PageState, size: usize, word: u64, slot: u32) {
        self.word = word;
        self.slot = slot;
        self.meta = (state as u32) | ((size.min(0x1fff) as u32) << 16);
    }
}

pub const METADATA_BYTES_PER_PAGE: usize = std::mem::size_of::<Entry>();

/// Static parameters of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Guest-physical base of the window (for event addresses).
    pub base: u64,
    /// Pages in the window.
    pub pages: u64,
    /// Physical capacity in bytes.
    pub physical_capacity: u64,
    /// zstd level.
    pub level: i32,
    /// Images larger than this are stored raw.
    pub raw_threshold: usize,
    /// Percent of physical capacity.
    pub low_watermark: u32,
    pub high_watermark: u32,
    /// Percent of physical capacity the use must fall below a watermark to clear it.
    pub hysteresis: u32,
}

/// Something the driver must hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelEvent {
    Pressure { level: u32, used: u64 },
    Overflow { addr: u64, npages: u32, used: u64 },
}

/// Counters kept by the store.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub logical_pages: u64,
    pub physical_capacity: u64,
    pub granule: u64,
    pub metadata_bytes: u64,
    pub physical_used: u64,
    pub max_physical_used: u64,
    pub stored_pages: u64,
    pub same_pages: u64,
    pub zero_pages: u64,
    pub compressed_pages: u64,
    pub raw_pages: u64,
    /// Pages currently not stored (capacity exhausted).
    pub overflow_pages: u64,
    /// Page-store attempts that overflowed, cumulative.
    pub overflow_pages_total: u64,
    /// Exact image bytes (raw pages count 4096; same-filled count 0).
    pub compressed_bytes: u64,
    /// Image bytes rounded to the granule.
    pub image_bytes: u64,
    /// Bytes reserved by the image arena (its memory footprint).
    pub arena_bytes: u64,
    pub discard_pages: u64,
    pub commit_pages: u64,
    /// Pages (re)stored from an encoding, by COMMIT or the scanner (each encoded once).
    pub store_ops: u64,
    pub scans: u64,
    pub scan_pages: u64,
    pub scan_changed_pages: u64,
    pub scan_retried_pages: u64,
    pub scan_ns_total: u64,
    pub scan_ns_last: u64,
    pub pressure_level: u32,
    pub watermark_events: u64,
    pub low_events: u64,
    pub high_events: u64,
    pub normal_events: u64,
    pub overflow_events: u64,
}

impl Counters {
    /// Bytes of page content held (stored pages x 4096).
    pub fn original_bytes(&self) -> u64 {
        self.stored_pages * VCRAM_PAGE_SIZE
    }
}

/// What happened to a page that was (re)stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Same,
    Compressed(usize),
    Raw,
    Overflow,
}

/// Result of scanning one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scanned {
    Unchanged,
    Changed(Stored),
    /// Unchanged overflow page that was tried again because space became available.
    Retried(Stored),
}

/// A page encoded (and hashed) outside the store: what [`Store::put_prepared`] and
/// [`Store::install_scan`] hold. Encoding is the expensive part; it needs no lock.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub enc: Encoded,
    /// xxh3-64 of the page (Compressed/Raw).
    pub hash: u64,
    /// The zstd image (Compressed) or the page itself (Raw); empty for Same.
    pub image: Vec<u8>,
}

impl Prepared {
    pub fn new(encoder: &mut Encoder, page: &[u8]) -> Prepared {
        let enc = encoder.encode(page);
        let (hash, image) = match enc {
            Encoded::Same(_) => (0, Vec::new()),
            Encoded::Compressed(n) => (
                xxh3_64(page),
                encoder.output().get(..n).unwrap_or(&[]).to_vec(),
            ),
            Encoded::Raw => (xxh3_64(page), page.to_vec()),
        };
        Prepared { enc, hash, image }
    }
}

/// A page's entry and its block's generation, as seen when work on it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub entry: Entry,
    pub gen: u32,
}

/// What scanning one page outside the lock found.
#[derive(Clone, Debug)]
pub enum ScanWork {
    Unchanged,
    Changed(Prepared),
    /// An unchanged overflow page, encoded for a retry (stored if space is free by then).
    Retry(Prepared),
}

impl ScanWork {
    /// Compare `page` (a stable copy) with `seen`; encode it if it changed, or if it is an
    /// overflow page and `room()` says it might fit now. A page is encoded at most once.
    pub fn new(
        encoder: &mut Encoder,
        seen: &Seen,
        page: &[u8],
        room: impl FnOnce() -> bool,
    ) -> ScanWork {
        if !seen.entry.matches(page) {
            ScanWork::Changed(Prepared::new(encoder, page))
        } else if seen.entry.state() == PageState::Overflow && room() {
            ScanWork::Retry(Prepared::new(encoder, page))
        } else {
            ScanWork::Unchanged
        }
    }
}

/// What [`Store::verify`] found wrong.
#[derive(Debug, thiserror::Error)]
#[error("store inconsistent: {0}")]
pub struct Inconsistent(pub String);

/// Pages per block of the occupancy summary.
pub const BLOCK_PAGES: usize = 512;

pub struct Store {
    cfg: StoreConfig,
    table: Vec<Entry>,
    /// Per block of `BLOCK_PAGES` pages: how many entries are not Empty. Lets passes over holes
    /// of the window skip blocks that hold nothing without reading their entries (the table is
    /// allocated zeroed, so entries never touched stay unmapped).
    occupied: Vec<u32>,
    /// Per block of `BLOCK_PAGES` pages: bumped by every change of an entry in it. Work
    /// prepared outside the store lock (scans, compression) is installed only if the
    /// generation it started from is still current.
    gens: Vec<u32>,
    arena: Arena,
    encoder: Encoder,
    c: Counters,
    low_b: u64,
    high_b: u64,
    hyst_b: u64,
    events: Vec<ModelEvent>,
}

impl Store {
    pub fn new(cfg: StoreConfig) -> std::io::Result<Store> {
        let pages = usize::try_from(cfg.pages).map_err(std::io::Error::other)?;
        let encoder = Encoder::new(cfg.level, cfg.raw_threshold)?;
        let cap = cfg.physical_capacity as u128;
        let pct = |p: u32| (cap * p.min(100) as u128 / 100) as u64;
        let metadata = (pages * METADATA_BYTES_PER_PAGE) as u64;
        let c = Counters {
            logical_pages: cfg.pages,
            physical_capacity: cfg.physical_capacity,
            granule: GRANULE as u64,
            metadata_bytes: metadata,
            physical_used: metadata,
            max_physical_used: metadata,
            ..Default::default()
        };
        let mut s = Store {
            low_b: pct(cfg.low_watermark),
            high_b: pct(cfg.high_watermark),
            hyst_b: pct(cfg.hysteresis),
            cfg,
            table: zeroed_table(pages)?,
            occupied: vec![0; pages.div_ceil(BLOCK_PAGES)],
            gens: vec![0; pages.div_ceil(BLOCK_PAGES)],
            arena: Arena::new(),
            encoder,
            c,
            events: Vec::new(),
        };
        s.update_pressure();
        Ok(s)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn pages(&self) -> u64 {
        self.cfg.pages
    }

    pub fn counters(&self) -> Counters {
        let mut c = self.c;
        c.arena_bytes = self.arena.reserved_bytes();
        c
    }

    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.c
    }

    /// Events generated since the last call.
    pub fn take_events(&mut self) -> Vec<ModelEvent> {
        std::mem::take(&mut self.events)
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn state(&self, idx: u64) -> Option<(PageState, usize)> {
        let e = self.table.get(usize::try_from(idx).ok()?)?;
        Some((e.state(), e.size()))
    }

    /// Reconstruct the page from what the device holds (None for overflow pages or bad index).
    pub fn image(&self, idx: u64) -> Option<Vec<u8>> {
        let e = *self.table.get(usize::try_from(idx).ok()?)?;
        match e.state() {
            PageState::Empty => Some(vec![0u8; PAGE]),
            PageState::Same => Some(
                std::iter::repeat_n(e.word.to_le_bytes(), PAGE / 8)
                    .flatten()
                    .collect(),
            ),
            PageState::Compressed => compress::decode(self.arena.get(e.size(), e.slot)?).ok(),
            PageState::Raw => self.arena.get(PAGE, e.slot).map(|s| s.to_vec()),
            PageState::Overflow => None,
        }
    }

    /// Bytes of arena slots holding images (for consistency checks).
    pub fn arena_live_bytes(&self) -> u64 {
        self.arena.live_bytes()
    }

    #[inline]
    fn physical_used(&self) -> u64 {
        self.c.metadata_bytes + self.c.image_bytes
    }

    fn release(&mut self, i: usize) {
        let Some(e) = self.table.get(i).copied() else {
            return;
        };
        if let Some(g) = self.gens.get_mut(i / BLOCK_PAGES) {
            *g = g.wrapping_add(1);
        }
        if e.state() != PageState::Empty {
            if let Some(b) = self.occupied.get_mut(i / BLOCK_PAGES) {
                *b -= 1;
            }
        }
        let c = &mut self.c;
        match e.state() {
            PageState::Empty => return,
            PageState::Same => {
                c.stored_pages -= 1;
                c.same_pages -= 1;
                if e.word == 0 {
                    c.zero_pages -= 1;
                }
            }
            PageState::Compressed => {
                c.stored_pages -= 1;
                c.compressed_pages -= 1;
                c.compressed_bytes -= e.size() as u64;
                c.image_bytes -= rounded(e.size()) as u64;
                self.arena.release(e.size(), e.slot);
            }
            PageState::Raw => {
                c.stored_pages -= 1;
                c.raw_pages -= 1;
                c.compressed_bytes -= PAGE as u64;
                c.image_bytes -= PAGE as u64;
                self.arena.release(PAGE, e.slot);
            }
            PageState::Overflow => {
                c.overflow_pages -= 1;
            }
        }
        if let Some(e) = self.table.get_mut(i) {
            *e = Entry::default();
        }
    }

    fn note_overflow(&mut self, i: usize, hash: u64, need: usize) {
        if let Some(e) = self.table.get_mut(i) {
            e.set(PageState::Overflow, need, hash, 0);
        }
        self.c.overflow_pages += 1;
        self.c.overflow_pages_total += 1;
        let addr = self.cfg.base + (i as u64) * VCRAM_PAGE_SIZE;
        let used = self.physical_used();
        if let Some(ModelEvent::Overflow {
            addr: a, npages, ..
        }) = self.events.last_mut()
        {
            if *a + (*npages as u64) * VCRAM_PAGE_SIZE == addr && *npages < u32::MAX {
                *npages += 1;
                return;
            }
        }
        self.c.overflow_events += 1;
        self.events.push(ModelEvent::Overflow {
            addr,
            npages: 1,
            used,
        });
    }

    /// Compress and hold `page` (4096 bytes) as the content of page `idx`, replacing what was
    /// held. Returns None for a bad index.
    pub fn store_page(&mut self, idx: u64, page: &[u8]) -> Option<Stored> {
        let i = usize::try_from(idx).ok()?;
        if i >= self.table.len() || page.len() != PAGE {
            return None;
        }
        let p = Prepared::new(&mut self.encoder, page);
        Some(self.put(i, &p))
    }

    /// The entry of page `idx` and the generation of its block: what work prepared outside
    /// the lock starts from.
    pub fn snapshot(&self, idx: u64) -> Option<Seen> {
        let i = usize::try_from(idx).ok()?;
        Some(Seen {
            entry: *self.table.get(i)?,
            gen: *self.gens.get(i / BLOCK_PAGES)?,
        })
    }

    /// Whether an overflow page of this entry would fit now.
    pub fn has_room_for(&self, e: &Entry) -> bool {
        let free = self
            .cfg
            .physical_capacity
            .saturating_sub(self.physical_used());
        free >= rounded(e.size().max(1)) as u64
    }

    /// Hold a page encoded outside the lock, unconditionally (COMMIT).
    pub fn put_prepared(&mut self, idx: u64, p: &Prepared) -> Option<Stored> {
        let i = usize::try_from(idx).ok()?;
        if i >= self.table.len() {
            return None;
        }
        Some(self.put(i, p))
    }

    /// Apply the results of scanning pages outside the lock: each one only if nothing changed
    /// its block since it was seen (else the work is dropped: None; the next pass sees the page
    /// again). All are checked before any is applied, so the batch's own changes do not void
    /// the rest of it.
    pub fn install_scans(&mut self, batch: &[(u64, Seen, &ScanWork)]) -> Vec<Option<Scanned>> {
        let current: Vec<bool> = batch
            .iter()
            .map(|&(idx, seen, _)| self.snapshot(idx) == Some(seen))
            .collect();
        batch
            .iter()
            .zip(current)
            .map(|(&(idx, seen, work), ok)| {
                if ok {
                    self.apply_scan(idx, seen, work)
                } else {
                    None
                }
            })
            .collect()
    }

    /// One page of [`Store::install_scans`].
    pub fn install_scan(&mut self, idx: u64, seen: Seen, work: &ScanWork) -> Option<Scanned> {
        if self.snapshot(idx)? != seen {
            return None;
        }
        self.apply_scan(idx, seen, work)
    }

    fn apply_scan(&mut self, idx: u64, seen: Seen, work: &ScanWork) -> Option<Scanned> {
        let i = usize::try_from(idx).ok()?;
        if i >= self.table.len() {
            return None;
        }
        self.c.scan_pages += 1;
        match work {
            ScanWork::Unchanged => Some(Scanned::Unchanged),
            ScanWork::Changed(p) => {
                let r = self.put(i, p);
                self.c.scan_changed_pages += 1;
                Some(Scanned::Changed(r))
            }
            ScanWork::Retry(p) => {
                if !self.has_room_for(&seen.entry) {
                    return Some(Scanned::Unchanged);
                }
                let r = self.put(i, p);
                self.c.scan_retried_pages += 1;
                Some(Scanned::Retried(r))
            }
        }
    }

    /// Hold the prepared page as page `i` (i < pages), replacing what was held.
    fn put(&mut self, i: usize, p: &Prepared) -> Stored {
        self.release(i);
        self.c.store_ops += 1;
        // Every outcome below leaves the entry non-Empty.
        if let Some(b) = self.occupied.get_mut(i / BLOCK_PAGES) {
            *b += 1;
        }
        let r = match p.enc {
            Encoded::Same(w) => {
                if let Some(e) = self.table.get_mut(i) {
                    e.set(PageState::Same, 0, w, 0);
                }
                self.c.stored_pages += 1;
                self.c.same_pages += 1;
                if w == 0 {
                    self.c.zero_pages += 1;
                }
                Stored::Same
            }
            Encoded::Compressed(_) | Encoded::Raw => {
                let (size, state) = match p.enc {
                    Encoded::Compressed(n) => (n, PageState::Compressed),
                    _ => (PAGE, PageState::Raw),
                };
                let need = rounded(size) as u64;
                let slot = if self.physical_used() + need > self.cfg.physical_capacity {
                    None
                } else {
                    p.image.get(..size).and_then(|img| self.arena.store(img))
                };
                match slot {
                    None => {
                        self.note_overflow(i, p.hash, size);
                        Stored::Overflow
                    }
                    Some(slot) => {
                        if let Some(e) = self.table.get_mut(i) {
                            e.set(state, size, p.hash, slot);
                        }
                        self.c.stored_pages += 1;
                        self.c.compressed_bytes += size as u64;
                        self.c.image_bytes += need;
                        if state == PageState::Raw {
                            self.c.raw_pages += 1;
                            Stored::Raw
                        } else {
                            self.c.compressed_pages += 1;
                            Stored::Compressed(size)
                        }
                    }
                }
            }
        };
        self.after_change();
        r
    }

    /// Drop whatever page `idx` holds (the guest freed it; its memory is zeroed by the caller).
    pub fn discard_page(&mut self, idx: u64) -> bool {
        let Ok(i) = usize::try_from(idx) else {
            return false;
        };
        if i >= self.table.len() {
            return false;
        }
        self.release(i);
        self.c.discard_pages += 1;
        self.after_change();
        true
    }

    /// Discard `n` pages from `first`. Returns false (and does nothing) if out of range.
    pub fn discard_range(&mut self, first: u64, n: u64) -> bool {
        let Some(end) = first.checked_add(n) else {
            return false;
        };
        if end > self.cfg.pages {
            return false;
        }
        for idx in first..end {
            if let Ok(i) = usize::try_from(idx) {
                self.release(i);
            }
        }
        self.c.discard_pages += n;
        self.after_change();
        true
    }

    /// Drop everything held: every page is empty (the caller zeroed the window).
    pub fn reset(&mut self) {
        // Every block changed, held or not: work prepared before the reset is void.
        for g in &mut self.gens {
            *g = g.wrapping_add(1);
        }
        let mut from = 0;
        while let Some(i) = self.next_occupied(from, self.cfg.pages) {
            if let Ok(i) = usize::try_from(i) {
                self.release(i);
            }
            from = i + 1;
        }
        self.after_change();
    }

    /// The first page in `[from, end)` that is not Empty, skipping blocks that hold nothing.
    pub fn next_occupied(&self, from: u64, end: u64) -> Option<u64> {
        let end = usize::try_from(end.min(self.cfg.pages)).ok()?;
        let mut i = usize::try_from(from).ok()?;
        while i < end {
            let block = i / BLOCK_PAGES;
            let block_end = ((block + 1) * BLOCK_PAGES).min(end);
            if self.occupied.get(block).copied().unwrap_or(0) == 0 {
                i = block_end;
                continue;
            }
            while i < block_end {
                if self.table.get(i)?.state() != PageState::Empty {
                    return Some(i as u64);
                }
                i += 1;
            }
        }
        None
    }

    /// Recount the page table and the arena and compare with the counters and the occupancy
    /// summary (for tests and consistency checks; reads every entry).
    pub fn verify(&self) -> Result<(), Inconsistent> {
        let c = self.counters();
        let (mut stored, mut same, mut zero, mut comp, mut raw, mut over) = (0, 0, 0, 0, 0, 0);
        let (mut bytes, mut rounded_bytes) = (0u64, 0u64);
        let mut occupied = vec![0u32; self.occupied.len()];
        for (i, e) in self.table.iter().enumerate() {
            if e.state() != PageState::Empty {
                occupied[i / BLOCK_PAGES] += 1;
            }
            match e.state() {
                PageState::Empty => {}
                PageState::Same => {
                    stored += 1;
                    same += 1;
                    if e.word == 0 {
                        zero += 1;
                    }
                }
                PageState::Compressed => {
                    stored += 1;
                    comp += 1;
                    bytes += e.size() as u64;
                    rounded_bytes += rounded(e.size()) as u64;
                }
                PageState::Raw => {
                    stored += 1;
                    raw += 1;
                    bytes += PAGE as u64;
                    rounded_bytes += PAGE as u64;
                }
                PageState::Overflow => over += 1,
            }
        }
        let want = (stored, same, zero, comp, raw, over, bytes, rounded_bytes);
        let got = (
            c.stored_pages,
            c.same_pages,
            c.zero_pages,
            c.compressed_pages,
            c.raw_pages,
            c.overflow_pages,
            c.compressed_bytes,
            c.image_bytes,
        );
        if want != got {
            return Err(Inconsistent(format!("counters {got:?}, recount {want:?}")));
        }
        if self.arena.live_bytes() != rounded_bytes {
            return Err(Inconsistent(format!(
                "arena holds {} bytes, images {rounded_bytes}",
                self.arena.live_bytes()
            )));
        }
        if c.physical_used != c.metadata_bytes + rounded_bytes
            || c.physical_used > c.physical_capacity.max(c.metadata_bytes)
            || c.max_physical_used < c.physical_used
        {
            return Err(Inconsistent(format!(
                "physical used {} (max {}), metadata {} + images {rounded_bytes}, capacity {}",
                c.physical_used, c.max_physical_used, c.metadata_bytes, c.physical_capacity
            )));
        }
        if occupied != self.occupied {
            return Err(Inconsistent(
                "occupancy summary differs from the page table".into(),
            ));
        }
        Ok(())
    }

    /// Whether page `idx` is recorded as reading zero (empty, or same-filled with 0).
    pub fn is_zero(&self, idx: u64) -> bool {
        usize::try_from(idx)
            .ok()
            .and_then(|i| self.table.get(i))
            .is_some_and(|e| match e.state() {
                PageState::Empty => true,
                PageState::Same => e.word == 0,
                _ => false,
            })
    }

    /// Compare the content of page `idx` with what was last stored; restore it if it changed.
    /// `live` is first copied to `scratch`, so the comparison and the image see the same bytes.
    pub fn scan_page(&mut self, idx: u64, live: &[u8], scratch: &mut [u8]) -> Option<Scanned> {
        if live.len() != PAGE || scratch.len() != PAGE {
            return None;
        }
        scratch.copy_from_slice(live);
        self.scan_stable(idx, scratch)
    }

    /// Compare the stable copy `page` of page `idx` with what was last stored (a hash, or the
    /// fill word); store it if it changed, or retry an overflow page once space is free.
    pub fn scan_stable(&mut self, idx: u64, page: &[u8]) -> Option<Scanned> {
        let seen = self.snapshot(idx)?;
        if page.len() != PAGE {
            return None;
        }
        let room = self.has_room_for(&seen.entry);
        let work = ScanWork::new(&mut self.encoder, &seen, page, || room);
        self.install_scan(idx, seen, &work)
    }

    /// Record one finished scan pass.
    pub fn note_scan(&mut self, ns: u64) {
        self.c.scans += 1;
        self.c.scan_ns_total += ns;
        self.c.scan_ns_last = ns;
    }

    #[inline]
    fn after_change(&mut self) {
        let used = self.physical_used();
        self.c.physical_used = used;
        if used > self.c.max_physical_used {
            self.c.max_physical_used = used;
        }
        self.update_pressure();
    }

    fn update_pressure(&mut self) {
        let used = self.physical_used();
        let cur = self.c.pressure_level;
        let next = match cur {
            VCRAM_LEVEL_NORMAL => {
                if used >= self.high_b {
                    VCRAM_LEVEL_HIGH
                } else if used >= self.low_b {
                    VCRAM_LEVEL_LOW
                } else {
                    cur
                }
            }
            VCRAM_LEVEL_LOW => {
                if used >= self.high_b {
                    VCRAM_LEVEL_HIGH
                } else if used.saturating_add(self.hyst_b) < self.low_b {
                    VCRAM_LEVEL_NORMAL
                } else {
                    cur
                }
            }
            _ => {
                if used.saturating_add(self.hyst_b) < self.low_b {
                    VCRAM_LEVEL_NORMAL
                } else if used.saturating_add(self.hyst_b) < self.high_b {
                    VCRAM_LEVEL_LOW
                } else {
                    cur
                }
            }
        };
        if next != cur {
            self.c.pressure_level = next;
            self.c.watermark_events += 1;
            match next {
                VCRAM_LEVEL_NORMAL => self.c.normal_events += 1,
                VCRAM_LEVEL_LOW => self.c.low_events += 1,
                _ => self.c.high_events += 1,
            }
            self.events.push(ModelEvent::Pressure { level: next, used });
        }
    }
}

/// A page table of `pages` empty entries, allocated zeroed: the kernel maps its pages only
/// when an entry is first written, so a sparse window costs only the entries in use.
fn zeroed_table(pages: usize) -> std::io::Result<Vec<Entry>> {
    if pages == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<Entry>(pages).map_err(std::io::Error::other)?;
    // SAFETY: the layout is non-zero-sized (pages > 0). An all-zero Entry is a valid value
    // (word 0, slot 0, meta 0: Empty), so the zeroed allocation holds `pages` initialized
    // entries, allocated by the global allocator with the layout Vec<Entry> expects.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut Entry;
        if p.is_null() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
        }
        Ok(Vec::from_raw_parts(p, pages, pages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::random_page;

    fn cfg(pages: u64, cap: u64) -> StoreConfig {
        StoreConfig {
            base: 0x1_0000_0000,
            pages,
            physical_capacity: cap,
            level: 1,
            raw_threshold: 4032,
            low_watermark: 50,
            high_watermark: 80,
            hysteresis: 5,
        }
    }

    fn text_page(seed: u64) -> Vec<u8> {
        format!("page {seed}: lorem ipsum dolor sit amet, consectetur adipiscing elit. ")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(PAGE)
            .collect()
    }

    #[test]
    fn entry_is_16_bytes() {
        assert_eq!(METADATA_BYTES_PER_PAGE, 16);
    }

    #[test]
    fn states_and_accounting() {
        let mut s = Store::new(cfg(16, 1 << 20)).unwrap();
        let meta = 16 * 16;
        assert_eq!(s.counters().physical_used, meta);
        assert_eq!(s.store_page(0, &vec![0u8; PAGE]), Some(Stored::Same));
        assert_eq!(s.store_page(1, &vec![0xabu8; PAGE]), Some(Stored::Same));
        let t = text_page(1);
        let Some(Stored::Compressed(n)) = s.store_page(2, &t) else {
            panic!()
        };
        assert_eq!(s.store_page(3, &random_page(3)), Some(Stored::Raw));
        let c = s.counters();
        assert_eq!(c.stored_pages, 4);
        assert_eq!(c.same_pages, 2);
        assert_eq!(c.zero_pages, 1);
        assert_eq!(c.compressed_pages, 1);
        assert_eq!(c.raw_pages, 1);
        assert_eq!(c.compressed_bytes, n as u64 + 4096);
        assert_eq!(c.image_bytes, rounded(n) as u64 + 4096);
        assert_eq!(c.physical_used, meta + rounded(n) as u64 + 4096);
        assert_eq!(c.original_bytes(), 4 * 4096);
        // images reproduce the content
        assert_eq!(s.image(2).unwrap(), t);
        assert_eq!(s.image(3).unwrap(), random_page(3));
        assert_eq!(s.image(1).unwrap(), vec![0xabu8; PAGE]);
        assert_eq!(s.image(5).unwrap(), vec![0u8; PAGE]);
        // overwrite a compressed page with a same-filled one releases the image
        assert_eq!(s.store_page(2, &vec![0u8; PAGE]), Some(Stored::Same));
        assert_eq!(s.counters().compressed_pages, 0);
        assert_eq!(s.counters().zero_pages, 2);
        assert_eq!(s.counters().physical_used, meta + 4096);
        // discard everything
        assert!(s.discard_range(0, 16));
        let c = s.counters();
        assert_eq!(c.stored_pages, 0);
        assert_eq!(c.same_pages, 0);
        assert_eq!(c.compressed_bytes, 0);
        assert_eq!(c.physical_used, meta);
        assert_eq!(c.discard_pages, 16);
        assert_eq!(c.max_physical_used, meta + rounded(n) as u64 + 4096);
        assert_eq!(s.state(3), Some((PageState::Empty, 0)));
    }

    #[test]
    fn bad_indices_are_rejected() {
        let mut s = Store::new(cfg(4, 1 << 20)).unwrap();
        assert_eq!(s.store_page(4, &vec![1u8; PAGE]), None);
        assert_eq!(s.store_page(0, &[1u8; 100]), None);
        assert!(!s.discard_page(4));
        assert!(!s.discard_range(3, 2));
        assert!(!s.discard_range(u64::MAX, 2));
        assert!(s.state(u64::MAX).is_none());
        let mut scratch = vec![0u8; PAGE];
        assert!(s.scan_page(9, &vec![0u8; PAGE], &mut scratch).is_none());
        assert_eq!(s.counters().discard_pages, 0);
    }

    #[test]
    fn overflow_is_counted_and_reported() {
        // capacity: metadata (8 pages x 16) + 2 raw pages
        let mut s = Store::new(cfg(8, 128 + 2 * 4096)).unwrap();
        s.take_events();
        assert_eq!(s.store_page(0, &random_page(1)), Some(Stored::Raw));
        assert_eq!(s.store_page(1, &random_page(2)), Some(Stored::Raw));
        assert_eq!(s.store_page(2, &random_page(3)), Some(Stored::Overflow));
        assert_eq!(s.store_page(3, &random_page(4)), Some(Stored::Overflow));
        assert_eq!(s.store_page(5, &random_page(5)), Some(Stored::Overflow));
        // same-filled pages need no space
        assert_eq!(s.store_page(6, &vec![0u8; PAGE]), Some(Stored::Same));
        let c = s.counters();
        assert_eq!(c.overflow_pages, 3);
        assert_eq!(c.overflow_pages_total, 3);
        assert!(c.physical_used <= c.physical_capacity);
        let ev: Vec<_> = s
            .take_events()
            .into_iter()
            .filter(|e| matches!(e, ModelEvent::Overflow { .. }))
            .collect();
        // pages 2,3 form one run, page 5 another
        assert_eq!(ev.len(), 2);
        assert!(
            matches!(ev[0], ModelEvent::Overflow { addr, npages: 2, .. } if addr == 0x1_0000_0000 + 2 * 4096)
        );
        assert!(
            matches!(ev[1], ModelEvent::Overflow { addr, npages: 1, .. } if addr == 0x1_0000_0000 + 5 * 4096)
        );
        assert_eq!(s.image(2), None);
        // free space, then a scan retries the unchanged overflow page
        s.discard_page(0);
        let mut scratch = vec![0u8; PAGE];
        assert_eq!(
            s.scan_page(2, &random_page(3), &mut scratch),
            Some(Scanned::Retried(Stored::Raw))
        );
        assert_eq!(s.counters().overflow_pages, 2);
        assert_eq!(s.image(2).unwrap(), random_page(3));
        // discarding an overflow page clears it
        s.discard_page(3);
        assert_eq!(s.counters().overflow_pages, 1);
    }

    #[test]
    fn watermarks_have_hysteresis_and_one_event_per_crossing() {
        // 20 raw pages of capacity; metadata is 100 pages x 16 = 1600 bytes
        let cap = 20 * 4096;
        let mut s = Store::new(cfg(100, cap)).unwrap();
        assert!(s.take_events().is_empty());
        let levels = |s: &mut Store| -> Vec<u32> {
            s.take_events()
                .into_iter()
                .filter_map(|e| match e {
                    ModelEvent::Pressure { level, .. } => Some(level),
                    _ => None,
                })
                .collect()
        };
        for i in 0..9 {
            s.store_page(i, &random_page(i + 10));
        }
        assert_eq!(levels(&mut s), Vec::<u32>::new()); // 9 pages + meta < 50%
        s.store_page(9, &random_page(99));
        assert_eq!(levels(&mut s), vec![VCRAM_LEVEL_LOW]);
        // hovering right below the low mark does not flap
        s.discard_page(9);
        s.store_page(9, &random_page(98));
        s.discard_page(9);
        assert_eq!(levels(&mut s), Vec::<u32>::new());
        for i in 9..16 {
            s.store_page(i, &random_page(i + 50));
        }
        assert_eq!(levels(&mut s), vec![VCRAM_LEVEL_HIGH]);
        s.discard_page(15);
        assert_eq!(levels(&mut s), Vec::<u32>::new()); // within hysteresis of high
        s.discard_range(10, 5);
        assert_eq!(levels(&mut s), vec![VCRAM_LEVEL_LOW]);
        s.discard_range(0, 10);
        assert_eq!(levels(&mut s), vec![VCRAM_LEVEL_NORMAL]);
        let c = s.counters();
        assert_eq!(c.watermark_events, 4);
        assert_eq!((c.low_events, c.high_events, c.normal_events), (2, 1, 1));
    }

    /// Random stores, discards and scans; after each step the counters must equal what a
    /// recount of the page table and the arena gives, and every held image must reproduce its
    /// page.
    #[test]
    fn accounting_matches_a_recount_under_random_operations() {
        let pages = 64u64;
        let cap = pages * 16 + 8 * 4096;
        let mut s = Store::new(cfg(pages, cap)).unwrap();
        let mut content: Vec<Vec<u8>> = vec![vec![0u8; PAGE]; pages as usize];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut scratch = vec![0u8; PAGE];
        for step in 0..1500 {
            let idx = rnd() % pages;
            let i = idx as usize;
            match rnd() % 5 {
                0 | 1 => {
                    let page = match rnd() % 4 {
                        0 => vec![(rnd() % 3) as u8; PAGE],
                        1 => random_page(rnd()),
                        _ => text_page(rnd() % 50),
                    };
                    content[i] = page.clone();
                    s.store_page(idx, &page).unwrap();
                }
                2 => {
                    content[i] = vec![0u8; PAGE];
                    assert!(s.discard_page(idx));
                }
                3 => {
                    // a direct write found by the scanner
                    let page = text_page(rnd() % 50);
                    content[i] = page.clone();
                    s.scan_page(idx, &page, &mut scratch).unwrap();
                }
                _ => {
                    s.scan_page(idx, &content[i].clone(), &mut scratch).unwrap();
                }
            }
            let c = s.counters();
            let (mut stored, mut same, mut zero, mut comp, mut raw, mut over) = (0, 0, 0, 0, 0, 0);
            let (mut bytes, mut rounded_bytes) = (0u64, 0u64);
            for p in 0..pages {
                let (st, size) = s.state(p).unwrap();
                match st {
                    PageState::Empty => {}
                    PageState::Same => {
                        stored += 1;
                        same += 1;
                        if content[p as usize].iter().all(|b| *b == 0) {
                            zero += 1;
                        }
                    }
                    PageState::Compressed => {
                        stored += 1;
                        comp += 1;
                        bytes += size as u64;
                        rounded_bytes += rounded(size) as u64;
                    }
                    PageState::Raw => {
                        stored += 1;
                        raw += 1;
                        bytes += 4096;
                        rounded_bytes += 4096;
                    }
                    PageState::Overflow => over += 1,
                }
                if st != PageState::Overflow && step % 10 == 0 {
                    assert!(
                        s.image(p).unwrap() == content[p as usize],
                        "step {step}: page {p} ({st:?}) does not reproduce"
                    );
                }
            }
            assert_eq!(
                (
                    c.stored_pages,
                    c.same_pages,
                    c.zero_pages,
                    c.compressed_pages,
                    c.raw_pages
                ),
                (stored, same, zero, comp, raw),
                "step {step}"
            );
            assert_eq!(c.overflow_pages, over, "step {step}");
            assert_eq!(c.compressed_bytes, bytes, "step {step}");
            assert_eq!(c.image_bytes, rounded_bytes, "step {step}");
            assert_eq!(s.arena_live_bytes(), rounded_bytes, "step {step}");
            assert_eq!(
                c.physical_used,
                c.metadata_bytes + rounded_bytes,
                "step {step}"
            );
            assert!(c.physical_used <= cap, "step {step}");
            assert!(c.max_physical_used >= c.physical_used);
            s.verify().unwrap();
        }
        let c = s.counters();
        assert!(c.overflow_pages_total > 0, "the run never hit the capacity");
        assert!(c.watermark_events > 0);
    }

    #[test]
    fn scanner_detects_changes() {
        let mut s = Store::new(cfg(4, 1 << 20)).unwrap();
        let mut scratch = vec![0u8; PAGE];
        let zero = vec![0u8; PAGE];
        assert_eq!(
            s.scan_page(0, &zero, &mut scratch),
            Some(Scanned::Unchanged)
        );
        let t = text_page(7);
        assert!(matches!(
            s.scan_page(0, &t, &mut scratch),
            Some(Scanned::Changed(Stored::Compressed(_)))
        ));
        assert_eq!(s.scan_page(0, &t, &mut scratch), Some(Scanned::Unchanged));
        let mut t2 = t.clone();
        t2[1234] ^= 0x40;
        assert!(matches!(
            s.scan_page(0, &t2, &mut scratch),
            Some(Scanned::Changed(Stored::Compressed(_)))
        ));
        assert_eq!(s.image(0).unwrap(), t2);
        let f = vec![0x5au8; PAGE];
        assert_eq!(
            s.scan_page(1, &f, &mut scratch),
            Some(Scanned::Changed(Stored::Same))
        );
        assert_eq!(s.scan_page(1, &f, &mut scratch), Some(Scanned::Unchanged));
        let c = s.counters();
        assert_eq!(c.scan_changed_pages, 3);
        assert_eq!(c.scan_pages, 6);
    }

    /// Work prepared outside the lock is dropped if its block changed meanwhile (a DISCARD of
    /// a page that was empty already included), and kept if only the batch itself changed it.
    #[test]
    fn scan_work_is_dropped_when_its_block_changed() {
        let mut s = Store::new(cfg(2048, 1 << 30)).unwrap();
        let mut enc = Encoder::new(1, 4032).unwrap();
        let page = text_page(1);
        let seen = s.snapshot(5).unwrap();
        let work = ScanWork::new(&mut enc, &seen, &page, || true);
        assert!(matches!(work, ScanWork::Changed(_)));
        // the guest discards page 5 (empty already) after the scanner copied it
        assert!(s.discard_page(5));
        assert_eq!(s.install_scan(5, seen, &work), None);
        assert_eq!(s.state(5).unwrap().0, PageState::Empty);
        // other blocks are unaffected; a batch in one block installs all of its pages
        let seen: Vec<Seen> = (600..603).map(|i| s.snapshot(i).unwrap()).collect();
        let works: Vec<ScanWork> = seen
            .iter()
            .map(|x| ScanWork::new(&mut enc, x, &page, || true))
            .collect();
        let batch: Vec<(u64, Seen, &ScanWork)> = (600..603)
            .zip(&seen)
            .zip(&works)
            .map(|((i, x), w)| (i, *x, w))
            .collect();
        let r = s.install_scans(&batch);
        assert!(r.iter().all(|x| matches!(x, Some(Scanned::Changed(_)))));
        assert_eq!(s.counters().stored_pages, 3);
        // unchanged pages are not encoded
        let seen = s.snapshot(600).unwrap();
        assert!(matches!(
            ScanWork::new(&mut enc, &seen, &page, || true),
            ScanWork::Unchanged
        ));
        s.verify().unwrap();
    }

    #[test]
    fn occupancy_summary_skips_empty_blocks_and_reset_empties_the_store() {
        let pages = 5 * BLOCK_PAGES as u64 + 7;
        let mut s = Store::new(cfg(pages, 1 << 30)).unwrap();
        assert_eq!(s.next_occupied(0, pages), None);
        let at = [3u64, 700, 701, 2 * 512 + 511, pages - 1];
        for &i in &at {
            s.store_page(i, &text_page(i)).unwrap();
        }
        s.store_page(900, &vec![0u8; PAGE]).unwrap();
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(i) = s.next_occupied(from, pages) {
            found.push(i);
            from = i + 1;
        }
        assert_eq!(found, vec![3, 700, 701, 900, 2 * 512 + 511, pages - 1]);
        assert_eq!(s.next_occupied(4, 700), None);
        assert_eq!(s.next_occupied(702, pages), Some(900));
        assert!(s.is_zero(900) && s.is_zero(0) && !s.is_zero(700));
        s.discard_page(701);
        assert_eq!(s.next_occupied(701, 900), None);
        s.verify().unwrap();
        let seen = s.snapshot(1800).unwrap();
        s.reset();
        assert_ne!(
            s.snapshot(1800),
            Some(seen),
            "an empty block's generation moves too"
        );
        s.verify().unwrap();
        let c = s.counters();
        assert_eq!((c.stored_pages, c.image_bytes), (0, 0));
        assert_eq!(c.physical_used, c.metadata_bytes);
        assert_eq!(s.next_occupied(0, pages), None);
    }
}
