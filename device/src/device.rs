//! One device instance (one frontend connection): window state, page store, events and
//! counters, shared by the vhost-user thread, the vring thread, the scanner and the control
//! socket.
//!
//! Lock order: `store` before `events`; `published` and `window` are leaf locks. `get_config`
//! only takes leaf locks that are never held for long, so it answers promptly even while a
//! large request holds the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use log::{error, info, warn};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestAddressSpace};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::events::EventQueue;
use crate::model::{Counters, Scanned, Store, StoreConfig, Stored};
use crate::protocol::*;
use crate::ratelimit::RateLimiter;
use crate::request::{self, Chain, GuestBytes, Kind, Refusal, Reject, WindowGeom};
use crate::rl_warn;
use crate::stats::{self, DeviceCounters, Snapshot};
use crate::window::{self, GuestMem, Located, WindowMap, WindowSpec, GM};

/// Options of the device model.
#[derive(Clone, Debug)]
pub struct DeviceOptions {
    pub node: u32,
    pub window: WindowSpec,
    /// Physical capacity in bytes; None: half the window.
    pub physical_size: Option<u64>,
    pub level: i32,
    pub raw_threshold: usize,
    pub low_watermark: u32,
    pub high_watermark: u32,
    pub hysteresis: u32,
    /// 0 disables the periodic scanner.
    pub scan_interval_ms: u64,
    pub queue_size: u16,
    /// Release host memory of large discarded runs (MADV_REMOVE) instead of memset.
    pub punch_holes: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            node: 1,
            window: WindowSpec::default(),
            physical_size: None,
            level: 1,
            raw_threshold: 4032,
            low_watermark: 75,
            high_watermark: 90,
            hysteresis: 5,
            scan_interval_ms: 1000,
            queue_size: 1024,
            punch_holes: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// No memory table yet.
    Unknown,
    /// Memory table received, no region matches.
    Missing,
    Ok {
        base: u64,
        size: u64,
    },
    Bad(String),
}

impl WindowState {
    pub fn describe(&self) -> String {
        match self {
            WindowState::Unknown => "not mapped yet".into(),
            WindowState::Missing => "missing".into(),
            WindowState::Ok { .. } => "ok".into(),
            WindowState::Bad(m) => format!("bad: {m}"),
        }
    }
}

pub struct Device {
    pub opts: DeviceOptions,
    mem: Mutex<Option<GM>>,
    window: Mutex<WindowState>,
    store: Mutex<Option<Store>>,
    published: Mutex<Counters>,
    pub events: Mutex<EventQueue>,
    pub dc: DeviceCounters,
    pub warn: RateLimiter,
    /// Written when events are queued outside the vring thread.
    pub notify: EventFd,
    pub connected: AtomicBool,
    /// The frontend of this instance has gone (its statistics stay readable).
    pub ended: AtomicBool,
    /// 1 for the first frontend connection of the daemon, 2 for the next, ...
    pub session: std::sync::atomic::AtomicU64,
    stop: Mutex<bool>,
    stop_cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GuestBytes for GuestMem {
    fn read_at(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.read_slice(buf, GuestAddress(addr)).is_ok()
    }
    fn write_at(&self, addr: u64, buf: &[u8]) -> bool {
        self.write_slice(buf, GuestAddress(addr)).is_ok()
    }
    fn valid(&self, addr: u64, len: u64) -> bool {
        usize::try_from(len)
            .map(|l| {
                vm_memory::GuestMemory::check_range(
                    self,
                    GuestAddress(addr),
                    l,
                    vm_memory::Permissions::Write,
                )
            })
            .unwrap_or(false)
    }
}

impl Device {
    pub fn new(opts: DeviceOptions) -> std::io::Result<Device> {
        Ok(Device {
            opts,
            mem: Mutex::new(None),
            window: Mutex::new(WindowState::Unknown),
            store: Mutex::new(None),
            published: Mutex::new(Counters::default()),
            events: Mutex::new(EventQueue::new()),
            dc: DeviceCounters::default(),
            warn: RateLimiter::new(10),
            notify: EventFd::new(EFD_NONBLOCK)?,
            connected: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            session: std::sync::atomic::AtomicU64::new(0),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
        })
    }

    pub fn mem(&self) -> Option<GM> {
        lock(&self.mem).clone()
    }

    pub fn window_state(&self) -> WindowState {
        lock(&self.window).clone()
    }

    fn geom(&self) -> Option<(u64, u64)> {
        match *lock(&self.window) {
            WindowState::Ok { base, size } => Some((base, size)),
            _ => None,
        }
    }

    /// Map the window for one batch of work (None if there is no usable window).
    pub fn map(&self) -> Option<WindowMap> {
        let (base, size) = self.geom()?;
        let gm = self.mem()?;
        WindowMap::get(&gm, base, size)
    }

    /// The frontend changed the memory table: find the window again.
    pub fn update_memory(&self, gm: GM) {
        let located = window::locate(&gm.memory(), &self.opts.window);
        *lock(&self.mem) = Some(gm);
        let mut w = lock(&self.window);
        let next = match located {
            Located::Found { base, size } => {
                let mut store = lock(&self.store);
                match store.as_ref() {
                    Some(s) if s.config().base != base || s.pages() * VCRAM_PAGE_SIZE != size => {
                        WindowState::Bad(format!(
                            "the window moved or changed size ({:#x}+{:#x} -> {base:#x}+{size:#x})",
                            s.config().base,
                            s.pages() * VCRAM_PAGE_SIZE
                        ))
                    }
                    Some(_) => WindowState::Ok { base, size },
                    None => match self.new_store(base, size) {
                        Ok(mut s) => {
                            // metadata alone may already be past a watermark
                            if self.after_op(&mut s) {
                                let _ = self.notify.write(1);
                            }
                            *store = Some(s);
                            WindowState::Ok { base, size }
                        }
                        Err(e) => WindowState::Bad(format!("cannot create the page store: {e}")),
                    },
                }
            }
            Located::Bad(m) => WindowState::Bad(m),
            Located::Missing { regions } => {
                if matches!(*w, WindowState::Ok { .. }) {
                    warn!(
                        "window ({}) is no longer among the {regions} shared regions: not serving",
                        self.opts.window.describe()
                    );
                } else {
                    info!(
                        "window ({}) not among the {regions} shared regions yet",
                        self.opts.window.describe()
                    );
                }
                WindowState::Missing
            }
        };
        if next != *w {
            match &next {
                WindowState::Ok { base, size } => info!(
                    "window found: base {base:#x}, {size:#x} bytes ({} pages), node {}",
                    size / VCRAM_PAGE_SIZE,
                    self.opts.node
                ),
                WindowState::Bad(m) => error!("window unusable: {m}; not serving requests"),
                _ => {}
            }
        }
        *w = next;
    }

    fn new_store(&self, base: u64, size: u64) -> std::io::Result<Store> {
        let physical = self.opts.physical_size.unwrap_or(size / 2);
        let metadata = size / VCRAM_PAGE_SIZE * crate::model::store::METADATA_BYTES_PER_PAGE as u64;
        if physical <= metadata {
            return Err(std::io::Error::other(format!(
                "the physical capacity ({physical} bytes) is not larger than the metadata of a {size:#x}-byte window ({metadata} bytes)"
            )));
        }
        Store::new(StoreConfig {
            base,
            pages: size / VCRAM_PAGE_SIZE,
            physical_capacity: physical,
            level: self.opts.level,
            raw_threshold: self.opts.raw_threshold,
            low_watermark: self.opts.low_watermark,
            high_watermark: self.opts.high_watermark,
            hysteresis: self.opts.hysteresis,
        })
    }

    /// Publish the store's counters and move its events to the event queue. Returns whether
    /// events were queued.
    pub fn after_op(&self, store: &mut Store) -> bool {
        let c = store.counters();
        *lock(&self.published) = c;
        if !store.has_events() {
            return false;
        }
        let evs = store.take_events();
        let mut q = lock(&self.events);
        for e in evs {
            q.push(e, c.overflow_pages);
        }
        true
    }

    /// Handle one requestq chain. Returns the number of bytes written to the chain.
    pub fn handle_request(&self, chain: &Chain, mem: &dyn GuestBytes) -> u32 {
        let descs = &chain.descs[..];
        let map = self.map();
        let geom = map.as_ref().map(|m| WindowGeom {
            base: m.base,
            pages: m.pages(),
        });
        let resp = match request::parse_chain(chain, mem, geom) {
            Err(r) => {
                self.refuse(r);
                if r.reason == Reject::NoResponseBuffer {
                    return 0;
                }
                VcramResp::new(r.reason.status(), r.bad_range, 0, 0)
            }
            Ok(req) => match map {
                None => {
                    self.refuse(Refusal {
                        reason: Reject::NoWindow,
                        bad_range: VCRAM_NO_RANGE,
                    });
                    VcramResp::new(VCRAM_S_NO_WINDOW, VCRAM_NO_RANGE, 0, 0)
                }
                Some(map) => self.execute(&req, &map),
            },
        };
        match request::scatter(descs, mem, resp.as_slice()) {
            Some(n) => n,
            None => {
                stats::inc(&self.dc.unanswerable, 1);
                rl_warn!(
                    self.warn,
                    "request response buffer lies outside guest memory; request dropped"
                );
                0
            }
        }
    }

    fn refuse(&self, r: Refusal) {
        self.dc.reject(r.reason);
        rl_warn!(
            self.warn,
            "rejected request: {} (status {}, range {})",
            r.reason.name(),
            status_name(r.reason.status()),
            if r.bad_range == VCRAM_NO_RANGE {
                "-".to_string()
            } else {
                r.bad_range.to_string()
            }
        );
    }

    /// Run a validated request against the window.
    pub fn execute(&self, req: &request::Request, map: &WindowMap) -> VcramResp {
        /// COMMIT releases the store lock this often (pages), so scans and other readers of
        /// the store are not held up behind a large request.
        const COMMIT_LOCK_PAGES: u32 = 128;
        let mut guard = lock(&self.store);
        match guard.as_ref() {
            Some(st) if st.pages() == map.pages() => {}
            _ => return VcramResp::new(VCRAM_S_NO_WINDOW, VCRAM_NO_RANGE, 0, 0),
        }
        let mut done = 0u64;
        let mut overflowed = 0u64;
        let mut status = VCRAM_S_OK;
        match req.kind {
            Kind::Discard => {
                stats::inc(&self.dc.discard_requests, 1);
                if let Some(store) = guard.as_mut() {
                    for &(first, n) in &req.ranges {
                        if !map.zero(first, n, self.opts.punch_holes)
                            || !store.discard_range(first, n)
                        {
                            status = VCRAM_S_DEVICE_ERROR;
                            break;
                        }
                        done += n;
                    }
                }
            }
            Kind::Reset => {
                stats::inc(&self.dc.reset_requests, 1);
                if let Some(store) = guard.as_mut() {
                    // Released from the backing at once where it can be punched (the host
                    // memory goes too), else zeroed.
                    if map.zero(0, map.pages(), true) {
                        store.reset();
                        done = map.pages();
                    } else {
                        status = VCRAM_S_DEVICE_ERROR;
                    }
                }
            }
            Kind::Commit => {
                stats::inc(&self.dc.commit_requests, 1);
                let mut scratch = Box::new([0u8; VCRAM_PAGE_SIZE as usize]);
                let mut since_unlock = 0u32;
                'outer: for &(first, n) in &req.ranges {
                    for idx in first..first.saturating_add(n) {
                        if since_unlock == COMMIT_LOCK_PAGES {
                            since_unlock = 0;
                            if let Some(st) = guard.as_mut() {
                                self.after_op(st);
                            }
                            drop(guard);
                            guard = lock(&self.store);
                        }
                        let Some(store) = guard.as_mut() else {
                            status = VCRAM_S_DEVICE_ERROR;
                            break 'outer;
                        };
                        if !map.copy_page(idx, &mut scratch) {
                            status = VCRAM_S_DEVICE_ERROR;
                            break 'outer;
                        }
                        match store.store_page(idx, &scratch[..]) {
                            Some(Stored::Overflow) => overflowed += 1,
                            Some(_) => {}
                            None => {
                                status = VCRAM_S_DEVICE_ERROR;
                                break 'outer;
                            }
                        }
                        store.counters_mut().commit_pages += 1;
                        done += 1;
                        since_unlock += 1;
                    }
                }
            }
        }
        if status != VCRAM_S_OK {
            stats::inc(&self.dc.device_errors, 1);
            error!("internal error executing a {:?} request", req.kind);
        }
        if let Some(st) = guard.as_mut() {
            self.after_op(st);
        }
        VcramResp::new(status, VCRAM_NO_RANGE, done, overflowed)
    }

    /// One scan pass over the window. Returns false when there was nothing to scan.
    ///
    /// Only pages with data in the backing file are read (SEEK_DATA/SEEK_HOLE): a hole reads
    /// as zero, so in a hole only pages the store holds something for are looked at (through
    /// the occupancy summary, without reading guest memory). The cost of a pass follows the
    /// pages the guest touched, not the window size, and holes stay holes.
    pub fn scan_pass(&self) -> bool {
        /// Hold the store lock for at most this many pages examined, or 64 recompressions,
        /// whichever comes first, so requests are not held up behind a pass.
        const CHUNK: u64 = 1024;
        const ZERO: [u8; VCRAM_PAGE_SIZE as usize] = [0; VCRAM_PAGE_SIZE as usize];
        let Some(map) = self.map() else {
            return false;
        };
        let pages = map.pages();
        let runs = map.data_runs(0, pages);
        let mut scratch = Box::new([0u8; VCRAM_PAGE_SIZE as usize]);
        let t0 = std::time::Instant::now();
        let mut events = false;
        let mut idx = 0u64;
        let mut run = 0usize;
        while idx < pages {
            let mut guard = lock(&self.store);
            let Some(store) = guard.as_mut() else {
                return false;
            };
            if store.pages() != pages {
                return false;
            }
            let mut examined = 0;
            let mut recompressed = 0;
            while idx < pages && examined < CHUNK && recompressed < 64 {
                while runs.get(run).is_some_and(|r| r.0 + r.1 <= idx) {
                    run += 1;
                }
                let outcome = match runs.get(run) {
                    Some(&(start, _)) if start <= idx => {
                        // data: compare a copy of the page
                        let r = map
                            .copy_page(idx, &mut scratch)
                            .then(|| store.scan_stable(idx, &scratch[..]))
                            .flatten();
                        idx += 1;
                        r
                    }
                    next => {
                        // a hole up to the next run: only pages held as non-zero changed
                        let hole_end = next.map_or(pages, |r| r.0);
                        let mut from = idx;
                        let mut hit = None;
                        while let Some(j) = store.next_occupied(from, hole_end) {
                            if !store.is_zero(j) {
                                hit = Some(j);
                                break;
                            }
                            from = j + 1;
                        }
                        match hit {
                            Some(j) => {
                                idx = j + 1;
                                store.scan_stable(j, &ZERO)
                            }
                            None => {
                                idx = hole_end;
                                continue;
                            }
                        }
                    }
                };
                examined += 1;
                if !matches!(outcome, Some(Scanned::Unchanged)) {
                    recompressed += 1;
                }
            }
            events |= self.after_op(store);
            drop(guard);
            if self.stopping() {
                break;
            }
        }
        let ns = t0.elapsed().as_nanos() as u64;
        if let Some(store) = lock(&self.store).as_mut() {
            store.note_scan(ns);
            events |= self.after_op(store);
        }
        if events {
            let _ = self.notify.write(1);
        }
        true
    }

    /// The frontend disconnected: drop the guest memory mappings (the VM's memory must not be
    /// kept alive by the daemon); counters stay readable.
    pub fn disconnect(&self) {
        self.connected.store(false, Ordering::Relaxed);
        self.ended.store(true, Ordering::Relaxed);
        *lock(&self.mem) = None;
        // The page store (page table and images) goes with the session; the published
        // counters and the event statistics stay for the control socket.
        if let Some(st) = lock(&self.store).take() {
            *lock(&self.published) = st.counters();
        }
    }

    /// Whether a page store is held (a window was found and the session has not ended).
    pub fn has_store(&self) -> bool {
        lock(&self.store).is_some()
    }

    pub fn request_stop(&self) {
        *lock(&self.stop) = true;
        self.stop_cv.notify_all();
    }

    pub fn stopping(&self) -> bool {
        *lock(&self.stop)
    }

    /// Sleep up to `ms`; returns true if a stop was requested.
    pub fn wait_stop(&self, ms: u64) -> bool {
        let g = lock(&self.stop);
        let (g, _) = self
            .stop_cv
            .wait_timeout_while(g, std::time::Duration::from_millis(ms), |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    /// The config space (256 bytes; the defined part is `VCRAM_CONFIG_SIZE`).
    pub fn config_bytes(&self) -> [u8; VCRAM_CONFIG_MAX] {
        let c = *lock(&self.published);
        let ws = self.window_state();
        let (base, size) = match ws {
            WindowState::Ok { base, size } => (base, size),
            _ => (0, 0),
        };
        let mut status = 0;
        match ws {
            WindowState::Ok { .. } => status |= VCRAM_ST_WINDOW_OK,
            WindowState::Bad(_) => status |= VCRAM_ST_WINDOW_BAD,
            _ => {}
        }
        if c.overflow_pages > 0 {
            status |= VCRAM_ST_OVERFLOW;
        }
        let seq = lock(&self.events).last_seq();
        let cfg = VcramConfig {
            magic: VCRAM_MAGIC.into(),
            version_major: VCRAM_VERSION_MAJOR.into(),
            version_minor: VCRAM_VERSION_MINOR.into(),
            node: self.opts.node.into(),
            page_size: (VCRAM_PAGE_SIZE as u32).into(),
            window_base: base.into(),
            window_size: size.into(),
            physical_capacity: c.physical_capacity.into(),
            low_watermark: self.opts.low_watermark.into(),
            high_watermark: self.opts.high_watermark.into(),
            status: status.into(),
            pressure_level: c.pressure_level.into(),
            max_ranges: VCRAM_MAX_RANGES.into(),
            event_size: (VCRAM_EVENT_SIZE as u32).into(),
            physical_used: c.physical_used.into(),
            stored_pages: c.stored_pages.into(),
            same_pages: c.same_pages.into(),
            compressed_bytes: c.compressed_bytes.into(),
            overflow_pages: c.overflow_pages.into(),
            raw_pages: c.raw_pages.into(),
            event_seq: seq.into(),
            granule: (crate::model::arena::GRANULE as u32).into(),
            zero_pages: (c.zero_pages.min(u64::from(u32::MAX)) as u32).into(),
        };
        let mut out = [0u8; VCRAM_CONFIG_MAX];
        out[..VCRAM_CONFIG_SIZE].copy_from_slice(cfg.as_slice());
        out
    }

    pub fn snapshot(&self) -> Snapshot {
        let c = *lock(&self.published);
        let ws = self.window_state();
        let mut s = Snapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            connected: self.connected.load(Ordering::Relaxed),
            frontend: if self.connected.load(Ordering::Relaxed) {
                "connected"
            } else if self.ended.load(Ordering::Relaxed) {
                "disconnected (statistics of its session)"
            } else {
                "waiting for a connection"
            }
            .to_string(),
            session: self.session.load(Ordering::Relaxed),
            window_status: ws.describe(),
            node: self.opts.node,
            zstd_level: self.opts.level,
            raw_threshold: self.opts.raw_threshold as u64,
            low_watermark: self.opts.low_watermark,
            high_watermark: self.opts.high_watermark,
            scan_interval_ms: self.opts.scan_interval_ms,
            rss_bytes: stats::rss_bytes(),
            rss_anon_bytes: stats::rss_anon_bytes(),
            ..Default::default()
        };
        if let WindowState::Ok { base, size } = ws {
            s.window_base = base;
            s.logical_capacity = size;
        }
        s.set_store(&c);
        s.set_device(&self.dc);
        let q = lock(&self.events);
        s.events_generated = q.generated;
        s.events_delivered = q.delivered;
        s.events_lost = q.lost;
        s.events_merged = q.merged;
        s.events_pending = q.len() as u64;
        s
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use vm_memory::mmap::MmapRegion;
    use vm_memory::{FileOffset, GuestMemoryAtomic, GuestMemoryMmap, GuestRegionMmap};

    pub const BASE: u64 = 1 << 32;

    /// Guest memory: 1 MiB of RAM at 0 and a window of `size` bytes at `BASE`, each a tempfile.
    /// A memfd, like QEMU's memory-backend-memfd.
    pub fn memfd() -> std::fs::File {
        use std::os::fd::FromRawFd;
        // SAFETY: a fresh descriptor from memfd_create, owned by the File from here on.
        unsafe {
            let fd = libc::memfd_create(c"vcram-test".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0);
            std::fs::File::from_raw_fd(fd)
        }
    }

    pub fn guest(size: usize) -> GM {
        guest_with(size).0
    }

    /// Also returns the window's memfd.
    pub fn guest_with(size: usize) -> (GM, std::fs::File) {
        let win = memfd();
        let region = |f: std::fs::File, base: u64, size: usize| {
            f.set_len(size as u64).unwrap();
            let m = MmapRegion::from_file(FileOffset::new(f, 0), size).unwrap();
            GuestRegionMmap::new(m, GuestAddress(base)).unwrap()
        };
        let gm = GuestMemoryAtomic::new(
            GuestMemoryMmap::from_regions(vec![
                region(memfd(), 0, 1 << 20),
                region(win.try_clone().unwrap(), BASE, size),
            ])
            .unwrap(),
        );
        (gm, win)
    }

    /// 512-byte blocks the file uses.
    pub fn blocks(f: &std::fs::File) -> u64 {
        use std::os::unix::fs::MetadataExt;
        f.metadata().unwrap().blocks()
    }

    #[test]
    fn scans_and_discards_never_touch_holes() {
        // 64 MiB window, 10 pages written
        let size = 64 << 20;
        let d = Device::new(DeviceOptions {
            window: WindowSpec {
                base: Some(BASE),
                ..Default::default()
            },
            scan_interval_ms: 0,
            ..Default::default()
        })
        .unwrap();
        let (gm, win) = guest_with(size);
        d.update_memory(gm.clone());
        let written = [0u64, 1, 2, 500, 9000, 9001, 9002, 9003, 16000, 16383];
        for &i in &written {
            write_window(&gm, i, &text_page(i));
        }
        let used = blocks(&win);
        assert_eq!(used, written.len() as u64 * 8);
        assert!(d.scan_pass());
        let s = d.snapshot();
        assert_eq!(s.stored_pages, written.len() as u64);
        assert_eq!(
            s.scan_pages,
            written.len() as u64,
            "only pages with data are read"
        );
        assert_eq!(blocks(&win), used, "a scan allocated host memory for holes");
        // a DISCARD over a large hole-y range: the zero check skips the holes
        let r = run_request(&d, &gm, VCRAM_REQ_DISCARD, &[(BASE + 600 * 4096, 8000)]);
        assert_eq!(u32::from(r.status), VCRAM_S_OK);
        assert_eq!(
            blocks(&win),
            used,
            "a DISCARD allocated host memory for holes"
        );
        // a page punched out behind the device's back reads zero: the scan notices without
        // reading it
        // SAFETY: fallocate on our own memfd.
        let rc = unsafe {
            libc::fallocate(
                win.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                500 * 4096,
                4096,
            )
        };
        assert_eq!(rc, 0);
        assert!(d.scan_pass());
        let s = d.snapshot();
        assert_eq!(s.stored_pages, written.len() as u64);
        assert_eq!(s.zero_pages, 1, "the punched page is now held as zero");
        assert_eq!(s.scan_pages, 2 * written.len() as u64);
        assert_eq!(blocks(&win), used - 8);
    }

    pub fn device(opts: DeviceOptions, size: usize) -> (Device, GM) {
        let d = Device::new(DeviceOptions {
            window: WindowSpec {
                base: Some(BASE),
                ..Default::default()
            },
            scan_interval_ms: 0,
            ..opts
        })
        .unwrap();
        let gm = guest(size);
        d.update_memory(gm.clone());
        (d, gm)
    }

    pub fn write_window(gm: &GM, page: u64, data: &[u8]) {
        gm.memory()
            .write_slice(data, GuestAddress(BASE + page * VCRAM_PAGE_SIZE))
            .unwrap();
    }

    pub fn text_page(seed: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(4096);
        let mut i = seed;
        while v.len() < 4096 {
            v.extend_from_slice(format!("line {i} of some compressible text; ").as_bytes());
            i += 1;
        }
        v.truncate(4096);
        v
    }

    #[test]
    fn disconnect_drops_the_page_store_and_keeps_the_statistics() {
        let (d, gm) = device(DeviceOptions::default(), 4 << 20);
        for i in 0..32 {
            write_window(&gm, i, &text_page(i));
        }
        assert!(d.scan_pass());
        assert_eq!(d.snapshot().stored_pages, 32);
        assert!(d.has_store());
        d.disconnect();
        assert!(!d.has_store(), "the store outlived its session");
        let s = d.snapshot();
        assert_eq!(
            s.stored_pages, 32,
            "statistics of the session stay readable"
        );
        assert!(!s.connected);
        // nothing to scan or serve any more
        assert!(!d.scan_pass());
    }

    /// Run a request through `handle_request` with a chain in the first MiB of guest memory.
    pub fn run_request(d: &Device, gm: &GM, req_type: u32, ranges: &[(u64, u32)]) -> VcramResp {
        let m = gm.memory();
        let mut req = VcramReqHeader {
            req_type: req_type.into(),
            nr_ranges: (ranges.len() as u32).into(),
            tag: 0.into(),
        }
        .as_slice()
        .to_vec();
        for &(a, n) in ranges {
            req.extend_from_slice(
                VcramRange {
                    addr: a.into(),
                    npages: n.into(),
                    reserved: 0.into(),
                }
                .as_slice(),
            );
        }
        m.write_slice(&req, GuestAddress(0x1000)).unwrap();
        let chain = Chain {
            descs: vec![
                request::Desc {
                    addr: 0x1000,
                    len: req.len() as u32,
                    writable: false,
                },
                request::Desc {
                    addr: 0x80000,
                    len: 24,
                    writable: true,
                },
            ],
            complete: true,
        };
        assert_eq!(d.handle_request(&chain, &*m), 24);
        m.read_obj(GuestAddress(0x80000)).unwrap()
    }

    #[test]
    fn reset_discards_the_whole_window() {
        // 4 MiB window, 64 KiB metadata, 256 KiB physical: 128 raw pages reach HIGH
        let (d, gm) = device(
            DeviceOptions {
                physical_size: Some(256 << 10),
                ..Default::default()
            },
            4 << 20,
        );
        let pages = (4 << 20) / VCRAM_PAGE_SIZE;
        for i in 0..48 {
            let mut p = text_page(i);
            // incompressible
            for (k, b) in p.iter_mut().enumerate() {
                *b = (k as u64 * 2654435761 + i * 97).to_le_bytes()[2] ^ (k as u8);
            }
            write_window(&gm, i * 7, &p);
        }
        write_window(&gm, pages - 1, &text_page(3));
        let r = run_request(&d, &gm, VCRAM_REQ_COMMIT, &[(BASE, (pages - 1) as u32)]);
        assert_eq!(u32::from(r.status), VCRAM_S_OK);
        assert!(d.scan_pass());
        let before = d.snapshot();
        assert!(before.stored_pages >= 49, "{}", before.stored_pages);
        assert!(before.pressure_level > 0, "test needs pressure");
        let r = run_request(&d, &gm, VCRAM_REQ_RESET, &[]);
        assert_eq!(u32::from(r.status), VCRAM_S_OK);
        assert_eq!(u64::from(r.pages_done), pages);
        let s = d.snapshot();
        assert_eq!(s.stored_pages, 0);
        assert_eq!(s.overflow_pages, 0);
        assert_eq!(s.physical_used, s.metadata_bytes);
        assert_eq!(s.pressure_level, VCRAM_LEVEL_NORMAL);
        assert_eq!(s.reset_requests, 1);
        // the window reads as zero, and a scan finds nothing to store
        let m = gm.memory();
        let mut buf = vec![1u8; 4 << 20];
        m.read_slice(&mut buf, GuestAddress(BASE)).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
        assert!(d.scan_pass());
        assert_eq!(d.snapshot().stored_pages, 0);
        // the level change was queued for the driver, newest last
        let q = d.events.lock().unwrap();
        assert!(q.len() >= 2);
        drop(q);
        let mut last = None;
        while let Some(e) = {
            let q = d.events.lock().unwrap();
            q.peek()
        } {
            last = Some(e);
            d.events.lock().unwrap().pop_delivered();
        }
        let last = last.unwrap();
        assert_eq!(u32::from(last.event_type), VCRAM_EVT_PRESSURE);
        assert_eq!(u32::from(last.level), VCRAM_LEVEL_NORMAL);
    }

    #[test]
    fn physical_capacity_below_the_metadata_is_refused() {
        // 64 MiB window: 256 KiB of metadata
        let (d, _gm) = device(
            DeviceOptions {
                physical_size: Some(256 << 10),
                ..Default::default()
            },
            64 << 20,
        );
        match d.window_state() {
            WindowState::Bad(m) => assert!(m.contains("metadata"), "{m}"),
            other => panic!("{other:?}"),
        }
        let (d, _gm) = device(
            DeviceOptions {
                physical_size: Some((256 << 10) + 4096),
                ..Default::default()
            },
            64 << 20,
        );
        assert_eq!(
            d.window_state(),
            WindowState::Ok {
                base: BASE,
                size: 64 << 20
            }
        );
    }
}
