// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Finding the window (the pc-dimm's RAM region) among the regions the frontend shares.
//!
//! `update_memory()` calls [`locate`] every time; the data path calls [`WindowMap::get`] for
//! every batch of work, so host pointers are never kept across memory-table updates. A
//! `WindowMap` holds a reference-counted snapshot of the memory table, which keeps the mapping
//! alive while it is in use even if the frontend removes the region meanwhile.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use vm_memory::{
    GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryLoadGuard,
    GuestMemoryMmap, GuestMemoryRegion,
};

use vm_memory::VolatileSlice;

use crate::protocol::VCRAM_PAGE_SIZE;

const PAGE: usize = VCRAM_PAGE_SIZE as usize;

pub type GuestMem = GuestMemoryMmap<()>;
pub type GM = GuestMemoryAtomic<GuestMem>;

/// What identifies the window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowSpec {
    /// Guest-physical base the region must start at.
    pub base: Option<u64>,
    /// Size the region must have.
    pub size: Option<u64>,
    /// (st_dev, st_ino) of the memory-backend file the region must be mapped from.
    pub file_id: Option<(u64, u64)>,
    /// The file path (for messages).
    pub file_path: Option<String>,
}

impl WindowSpec {
    pub fn with_file(mut self, path: &Path) -> std::io::Result<Self> {
        let md = std::fs::metadata(path)?;
        self.file_id = Some((md.dev(), md.ino()));
        self.file_path = Some(path.display().to_string());
        Ok(self)
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.base {
            parts.push(format!("base {b:#x}"));
        }
        if let Some(p) = &self.file_path {
            parts.push(format!("file {p}"));
        }
        if let Some(s) = self.size {
            parts.push(format!("size {s:#x}"));
        }
        parts.join(", ")
    }
}

/// Outcome of looking for the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Located {
    Found {
        base: u64,
        size: u64,
    },
    /// A region matched but cannot be used.
    Bad(String),
    /// No region matched.
    Missing {
        regions: usize,
    },
}

/// Look for the window among the regions of `mem`.
pub fn locate(mem: &GuestMem, spec: &WindowSpec) -> Located {
    let mut regions = 0usize;
    for r in mem.iter() {
        regions += 1;
        let start = r.start_addr().0;
        if let Some(b) = spec.base {
            if start != b {
                continue;
            }
        }
        if let Some(id) = spec.file_id {
            let same = r
                .file_offset()
                .and_then(|fo| fo.file().metadata().ok())
                .map(|md| (md.dev(), md.ino()) == id)
                .unwrap_or(false);
            if !same {
                if spec.base.is_some() {
                    return Located::Bad(format!(
                        "the region at {start:#x} is not mapped from {}",
                        spec.file_path.as_deref().unwrap_or("the window file")
                    ));
                }
                continue;
            }
        }
        let len = r.len();
        if let Some(want) = spec.size {
            if len != want {
                return Located::Bad(format!(
                    "the window region at {start:#x} is {len:#x} bytes, expected {want:#x} (--window-size)"
                ));
            }
        }
        if start % VCRAM_PAGE_SIZE != 0 || len % VCRAM_PAGE_SIZE != 0 || len == 0 {
            return Located::Bad(format!(
                "the window region at {start:#x} ({len:#x} bytes) is not 4 KiB aligned"
            ));
        }
        return Located::Found {
            base: start,
            size: len,
        };
    }
    Located::Missing { regions }
}

/// A usable mapping of the window for the duration of one batch of work.
pub struct WindowMap {
    _guard: GuestMemoryLoadGuard<GuestMem>,
    host: *mut u8,
    /// The backing file and the offset of the window in it (kept open by the guard).
    file: Option<(RawFd, u64)>,
    pub base: u64,
    pub size: u64,
}

// SAFETY: `host` points into the region the guard keeps mapped for the lifetime of the
// WindowMap; guest memory is only accessed through volatile slices (reads) and raw pointer
// writes (zeroing) that never form references, so sharing the map between the workers of one
// batch is as sound as sharing the guest memory itself.
unsafe impl Send for WindowMap {}
unsafe impl Sync for WindowMap {}

impl WindowMap {
    /// Map the window `[base, base + size)` from the current memory table, if it is there.
    pub fn get(gm: &GM, base: u64, size: u64) -> Option<WindowMap> {
        let guard = gm.memory();
        let r = guard.find_region(GuestAddress(base))?;
        if r.start_addr().0 != base || r.len() < size {
            return None;
        }
        let host = r.get_host_address(vm_memory::MemoryRegionAddress(0)).ok()?;
        let file = r
            .file_offset()
            .map(|fo| (fo.file().as_raw_fd(), fo.start()));
        Some(WindowMap {
            _guard: guard,
            host,
            file,
            base,
            size,
        })
    }

    pub fn pages(&self) -> u64 {
        self.size / VCRAM_PAGE_SIZE
    }

    /// The runs of pages in `[first, first + n)` that hold data in the backing file, as
    /// (first page, pages), in order; the rest are holes (read as zero, use no host memory).
    ///
    /// Data is found with mincore(2) on the pages themselves (page-cache residency, 512 pages
    /// a call; SEEK_HOLE would walk every page up to the next hole, however far); at a page
    /// that is not resident, SEEK_DATA tells a swapped-out page (data) from a hole and skips
    /// the hole (cheap over a sparse file). So the cost follows the data pages in the range
    /// and the number of holes, and holes are never touched. Where the
    /// backing cannot tell (no file, lseek or mincore unsupported), the whole range is data.
    pub fn data_runs(&self, first: u64, n: u64) -> Vec<(u64, u64)> {
        let Some(end) = first.checked_add(n).filter(|e| *e <= self.pages()) else {
            return Vec::new();
        };
        if n == 0 {
            return Vec::new();
        }
        let all = vec![(first, n)];
        let Some((fd, off)) = self.file else {
            return all;
        };
        // The first page at or after `p` with data, `end` if none before it; None: unknown.
        let seek_data = |p: u64| -> Option<u64> {
            let pos = i64::try_from(p.checked_mul(VCRAM_PAGE_SIZE)?.checked_add(off)?).ok()?;
            // SAFETY: lseek on a descriptor the guard keeps open; no memory is passed.
            let d = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
            if d < 0 {
                return (std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO))
                    .then_some(end);
            }
            Some(((d as u64).saturating_sub(off) / VCRAM_PAGE_SIZE).min(end))
        };
        const CHUNK: u64 = 512;
        let mut resident = [0u8; CHUNK as usize];
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut push = |a: u64, b: u64| match runs.last_mut() {
            Some(last) if last.0 + last.1 == a => last.1 += b - a,
            _ => runs.push((a, b - a)),
        };
        let mut p = first;
        while p < end {
            let len = CHUNK.min(end - p);
            // SAFETY: [p, p + len) is inside the mapping the guard keeps; mincore writes
            // `len` <= CHUNK bytes into `resident`.
            let rc = unsafe {
                libc::mincore(
                    self.host.add((p * VCRAM_PAGE_SIZE) as usize) as *mut libc::c_void,
                    (len * VCRAM_PAGE_SIZE) as usize,
                    resident.as_mut_ptr(),
                )
            };
            if rc != 0 {
                return all;
            }
            let q = resident[..len as usize]
                .iter()
                .position(|r| r & 1 == 0)
                .map_or(len, |q| q as u64);
            if q > 0 {
                push(p, p + q);
                p += q;
                continue;
            }
            // p is not resident: a hole up to the next data, or data swapped out
            match seek_data(p) {
                None => return all,
                Some(d) if d == p => {
                    push(p, p + 1);
                    p += 1;
                }
                Some(d) => p = d,
            }
        }
        runs
    }

    /// Pages `[first, first + n)` of the window as a volatile slice: guest memory, which the
    /// guest may change at any time, so it is never seen as `&[u8]`.
    pub fn slice(&self, first: u64, n: u64) -> Option<VolatileSlice<'_>> {
        let end = first.checked_add(n)?;
        if end > self.pages() {
            return None;
        }
        let off = usize::try_from(first * VCRAM_PAGE_SIZE).ok()?;
        let len = usize::try_from(n * VCRAM_PAGE_SIZE).ok()?;
        // SAFETY: [off, off + len) lies inside the mapped region (end <= pages), which the
        // guard keeps mapped for the lifetime of `self`, hence of the slice.
        Some(unsafe { VolatileSlice::new(self.host.add(off), len) })
    }

    /// Whether page `idx` reads as zero now, looking at 64 bytes at a time (copied out of
    /// guest memory) and stopping at the first that is not: a page with data is found out
    /// after one block in the common case. False for a page outside the window.
    pub fn page_is_zero(&self, idx: u64) -> bool {
        let Some(v) = self.slice(idx, 1) else {
            return false;
        };
        let mut block = [0u8; 64];
        (0..PAGE / 64).all(|k| {
            v.subslice(k * 64, 64)
                .map(|b| b.copy_to(&mut block[..]) == 64)
                .unwrap_or(false)
                && crate::model::compress::is_filled_with(&block, 0)
        })
    }

    /// Copy page `idx` into `out`: a stable snapshot of a page the guest may be writing.
    #[inline]
    pub fn copy_page(&self, idx: u64, out: &mut [u8; PAGE]) -> bool {
        match self.slice(idx, 1) {
            Some(v) => v.copy_to(&mut out[..]) == PAGE,
            None => false,
        }
    }

    /// Zero the pages of `ranges` ((first, pages), inside the window, not overlapping), as
    /// [`WindowMap::zero`] does one range, but with one residency lookup for ranges that lie
    /// close together (a request of many small ranges costs a few mincore calls, not one
    /// each). False (nothing done) if a range is outside the window.
    pub fn zero_ranges(&self, ranges: &[(u64, u64)], punch: bool) -> bool {
        /// Small ranges within this many pages share one lookup.
        const SPAN: u64 = 4096;
        if ranges
            .iter()
            .any(|&(f, n)| f.checked_add(n).is_none_or(|e| e > self.pages()))
        {
            return false;
        }
        let mut small: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(f, n) in ranges {
            if punch && n >= PUNCH_MIN_PAGES {
                if !self.zero(f, n, true) {
                    return false;
                }
            } else if n > 0 {
                small.push((f, n));
            }
        }
        small.sort_unstable();
        let mut i = 0;
        while i < small.len() {
            // a cluster of ranges within SPAN pages of its first
            let start = small[i].0;
            let mut j = i;
            let mut end = start;
            while j < small.len() && small[j].0 + small[j].1 <= start + SPAN.max(small[i].1) {
                end = end.max(small[j].0 + small[j].1);
                j += 1;
            }
            let runs = self.data_runs(start, end - start);
            let mut r = 0;
            for &(f, n) in &small[i..j] {
                let e = f + n;
                while runs.get(r).is_some_and(|x| x.0 + x.1 <= f) {
                    r += 1;
                }
                let mut k = r;
                while let Some(&(a, len)) = runs.get(k) {
                    if a >= e {
                        break;
                    }
                    for idx in a.max(f)..(a + len).min(e) {
                        if !self.page_is_zero(idx) {
                            // SAFETY: idx < pages (checked above): the page is inside the
                            // mapped window.
                            unsafe { zero_page(self.host.add(idx as usize * PAGE)) };
                        }
                    }
                    k += 1;
                }
            }
            i = j;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a store fence has no preconditions.
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
        true
    }

    /// Zero `n` pages from `first` (the caller validated the range). With `punch`, runs of at
    /// least `PUNCH_MIN_PAGES` are punched out of the shared backing file (MADV_REMOVE) so the
    /// host memory is released too (the frontend's mapping reads zeros afterwards); this is
    /// slower than memset because every mapping of the pages must be torn down.
    pub fn zero(&self, first: u64, n: u64, punch: bool) -> bool {
        let Some(end) = first.checked_add(n) else {
            return false;
        };
        if end > self.pages() {
            return false;
        }
        let off = (first * VCRAM_PAGE_SIZE) as usize;
        let len = (n * VCRAM_PAGE_SIZE) as usize;
        // SAFETY: [off, off + len) is inside the mapped window (checked above).
        unsafe {
            let p = self.host.add(off);
            if punch
                && (n >= PUNCH_MIN_PAGES || n == self.pages())
                && libc::madvise(p as *mut libc::c_void, len, libc::MADV_REMOVE) == 0
            {
                return true;
            }
            // Skip holes of the backing (never touched, so they stay holes) and pages that are
            // zero already (no write, no dirtying). The check reads a copy (guest memory is
            // never looked at through a reference).
            for (run, len) in self.data_runs(first, n) {
                for idx in run..run + len {
                    if !self.page_is_zero(idx) {
                        zero_page(self.host.add(idx as usize * PAGE));
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            std::arch::x86_64::_mm_sfence();
        }
        true
    }
}

/// Zero one 4 KiB page with non-temporal stores: a freed page is not worth pulling into the
/// cache, and skipping the read-for-ownership makes DISCARD about 1.5x faster than memset on
/// cold memory. The caller issues the store fence before completing the request.
///
/// # Safety
/// `p` must be valid for writes of 4096 bytes and 16-byte aligned (pages are 4096-aligned).
#[inline]
unsafe fn zero_page(p: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_setzero_si128, _mm_stream_si128};
        let z = _mm_setzero_si128();
        let q = p as *mut __m128i;
        for i in (0..256).step_by(4) {
            _mm_stream_si128(q.add(i), z);
            _mm_stream_si128(q.add(i + 1), z);
            _mm_stream_si128(q.add(i + 2), z);
            _mm_stream_si128(q.add(i + 3), z);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::ptr::write_bytes(p, 0, 4096);
}

/// Runs at least this long are released with MADV_REMOVE instead of memset.
pub const PUNCH_MIN_PAGES: u64 = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::mmap::MmapRegion;
    use vm_memory::{FileOffset, GuestRegionMmap};

    fn region(file: &std::fs::File, base: u64, size: usize) -> GuestRegionMmap<()> {
        file.set_len(size as u64).unwrap();
        let m = MmapRegion::from_file(FileOffset::new(file.try_clone().unwrap(), 0), size).unwrap();
        GuestRegionMmap::new(m, GuestAddress(base)).unwrap()
    }

    fn mem(regions: Vec<GuestRegionMmap<()>>) -> GuestMem {
        GuestMemoryMmap::from_regions(regions).unwrap()
    }

    #[test]
    fn locate_by_base_file_and_size() {
        let ram = tempfile::tempfile().unwrap();
        let win = tempfile::NamedTempFile::new().unwrap();
        let other = tempfile::NamedTempFile::new().unwrap();
        let m = mem(vec![
            region(&ram, 0, 1 << 20),
            region(win.as_file(), 1 << 32, 8 << 20),
        ]);
        let by_base = WindowSpec {
            base: Some(1 << 32),
            ..Default::default()
        };
        assert_eq!(
            locate(&m, &by_base),
            Located::Found {
                base: 1 << 32,
                size: 8 << 20
            }
        );
        let by_file = WindowSpec::default().with_file(win.path()).unwrap();
        assert_eq!(
            locate(&m, &by_file),
            Located::Found {
                base: 1 << 32,
                size: 8 << 20
            }
        );
        // both must agree
        let both = WindowSpec {
            base: Some(1 << 32),
            ..WindowSpec::default().with_file(other.path()).unwrap()
        };
        assert!(matches!(locate(&m, &both), Located::Bad(m) if m.contains("not mapped from")));
        // wrong size
        let sized = WindowSpec {
            base: Some(1 << 32),
            size: Some(16 << 20),
            ..Default::default()
        };
        assert!(matches!(locate(&m, &sized), Located::Bad(m) if m.contains("expected 0x1000000")));
        // missing
        let missing = WindowSpec {
            base: Some(2 << 32),
            ..Default::default()
        };
        assert_eq!(locate(&m, &missing), Located::Missing { regions: 2 });
        let missing_file = WindowSpec::default().with_file(other.path()).unwrap();
        assert_eq!(locate(&m, &missing_file), Located::Missing { regions: 2 });
        assert!(WindowSpec::default()
            .with_file(std::path::Path::new("/nonexistent/x"))
            .is_err());
    }

    #[test]
    fn window_map_pages_and_zeroing() {
        let win = tempfile::tempfile().unwrap();
        let gm = GuestMemoryAtomic::new(mem(vec![region(&win, 1 << 32, 1 << 20)]));
        assert!(WindowMap::get(&gm, 1 << 33, 1 << 20).is_none());
        assert!(WindowMap::get(&gm, 1 << 32, 2 << 20).is_none());
        let map = WindowMap::get(&gm, 1 << 32, 1 << 20).unwrap();
        assert_eq!(map.pages(), 256);
        let mut p = [0u8; PAGE];
        assert!(!map.copy_page(256, &mut p));
        assert!(map.slice(255, 2).is_none());
        assert!(map.slice(u64::MAX, 2).is_none());
        assert_eq!(map.slice(0, 256).unwrap().len(), 1 << 20);
        // write through the guest view, read through the map
        let m = gm.memory();
        vm_memory::Bytes::write_slice(&*m, &[7u8; 8192], GuestAddress((1 << 32) + 4096)).unwrap();
        assert!(map.copy_page(1, &mut p));
        assert_eq!(p[0], 7);
        assert!(map.copy_page(2, &mut p));
        assert_eq!(p[4095], 7);
        assert!(!map.page_is_zero(1) && !map.page_is_zero(256));
        assert!(map.zero(1, 1, false));
        assert!(map.page_is_zero(1));
        // several ranges at once
        vm_memory::Bytes::write_slice(&*m, &[9u8; 4096 * 4], GuestAddress((1 << 32) + 10 * 4096))
            .unwrap();
        assert!(map.zero_ranges(&[(12, 1), (10, 1), (200, 3)], false));
        assert!(map.page_is_zero(10) && map.page_is_zero(12));
        assert!(!map.page_is_zero(11) && !map.page_is_zero(13));
        assert!(!map.zero_ranges(&[(10, 1), (255, 2)], false));
        assert!(!map.page_is_zero(11), "nothing done for a bad request");
        assert!(map.copy_page(1, &mut p));
        assert!(p.iter().all(|b| *b == 0));
        assert!(map.copy_page(2, &mut p));
        assert_eq!(p[0], 7);
        assert!(!map.zero(255, 2, false));
        assert!(!map.zero(u64::MAX, 2, false));
        assert!(map.copy_page(2, &mut p));
        assert_eq!(p[0], 7);
    }

    #[test]
    fn data_runs_follow_the_backing_file() {
        let win = crate::device::tests::memfd();
        let gm = GuestMemoryAtomic::new(mem(vec![region(&win, 1 << 32, 4 << 20)]));
        let map = WindowMap::get(&gm, 1 << 32, 4 << 20).unwrap();
        assert_eq!(map.data_runs(0, 1024), vec![]);
        let m = gm.memory();
        for p in [3u64, 4, 100, 1023] {
            vm_memory::Bytes::write_slice(&*m, &[1u8; 16], GuestAddress((1 << 32) + p * 4096))
                .unwrap();
        }
        assert_eq!(map.data_runs(0, 1024), vec![(3, 2), (100, 1), (1023, 1)]);
        assert_eq!(map.data_runs(4, 100), vec![(4, 1), (100, 1)]);
        assert_eq!(map.data_runs(5, 95), vec![]);
        assert_eq!(map.data_runs(1000, 30), vec![], "past the window");
        assert_eq!(map.data_runs(0, 0), vec![]);
        // without a backing file the whole range is one run
        let anon = GuestMemoryAtomic::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(1 << 32), 1 << 20)]).unwrap(),
        );
        let map = WindowMap::get(&anon, 1 << 32, 1 << 20).unwrap();
        assert_eq!(map.data_runs(10, 20), vec![(10, 20)]);
    }
}
