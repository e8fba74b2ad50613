// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! One device instance (one frontend connection): window state, page store, events and
//! counters, shared by the vhost-user thread, the vring thread, the scanner and the control
//! socket.
//!
//! Lock order: `store` before `events`; `published` and `window` are leaf locks. `get_config`
//! only takes leaf locks that are never held for long, so it answers promptly even while a
//! large request holds the store.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use log::{error, info, warn};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestAddressSpace};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::events::EventQueue;
use crate::fault::FaultState;
use crate::model::compress::Encoder;
use crate::model::store::{Prepared, ScanWork, Seen};
use crate::model::{Counters, PageState, Store, StoreConfig, Stored};
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
    /// Worker threads for scanning and compression.
    pub threads: usize,
    /// Injected faults (`--fault`), for tests of the driver.
    pub faults: crate::fault::FaultPlan,
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
            threads: 1,
            faults: Default::default(),
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
    /// zstd contexts of idle workers.
    encoders: Mutex<Vec<Encoder>>,
    pub dc: DeviceCounters,
    pub warn: RateLimiter,
    /// Injected faults (`--fault`) and their state.
    pub fault: FaultState,
    /// Written when events are queued outside the vring thread.
    pub notify: EventFd,
    pub connected: AtomicBool,
    /// The frontend of this instance has gone (its statistics stay readable).
    pub ended: AtomicBool,
    /// 1 for the first frontend connection of the daemon, 2 for the next, ...
    pub session: std::sync::atomic::AtomicU64,
    /// NOMINATE's cursor and counters (`nominate.rs`).
    pub nominate: crate::nominate::NominateState,
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
        let fault = FaultState::new(opts.faults.clone());
        Ok(Device {
            opts,
            mem: Mutex::new(None),
            window: Mutex::new(WindowState::Unknown),
            store: Mutex::new(None),
            published: Mutex::new(Counters::default()),
            events: Mutex::new(EventQueue::new()),
            encoders: Mutex::new(Vec::new()),
            dc: DeviceCounters::default(),
            warn: RateLimiter::new(10),
            fault,
            notify: EventFd::new(EFD_NONBLOCK)?,
            connected: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            session: std::sync::atomic::AtomicU64::new(0),
            nominate: Default::default(),
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
                            let early = self.fault.window_found(base, size);
                            if !early.is_empty() {
                                let mut q = lock(&self.events);
                                early.into_iter().for_each(|r| q.push_record(r));
                                let _ = self.notify.write(1);
                            }
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
                Some(map) if req.kind == Kind::Nominate => {
                    return self.nominate_answer(&req, &map, descs, mem);
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

    /// NOMINATE (`nominate.rs`): name the costliest pages into the writable part.
    fn nominate_answer(
        &self,
        req: &request::Request,
        map: &WindowMap,
        descs: &[request::Desc],
        mem: &dyn GuestBytes,
    ) -> u32 {
        let bytes = {
            let guard = lock(&self.store);
            match guard.as_ref() {
                Some(st) if st.pages() == map.pages() => crate::nominate::answer(
                    &self.nominate,
                    st,
                    map.base,
                    // fault nominate-empty: nothing named (counted as an answer)
                    if self.fault.empty_nomination() {
                        0
                    } else {
                        req.max_nominations
                    },
                    req.max_pages,
                    st.counters().overflow_pages,
                ),
                _ => VcramResp::new(VCRAM_S_NO_WINDOW, VCRAM_NO_RANGE, 0, 0)
                    .as_slice()
                    .to_vec(),
            }
        };
        crate::nominate::deliver(descs, mem, &bytes)
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
                    if map.zero_ranges(&req.ranges, self.opts.punch_holes) {
                        for &(first, n) in &req.ranges {
                            if !store.discard_range(first, n) {
                                status = VCRAM_S_DEVICE_ERROR;
                                break;
                            }
                            done += n;
                        }
                    } else {
                        status = VCRAM_S_DEVICE_ERROR;
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
            // Answered by nominate_answer() before execution.
            Kind::Nominate => {}
            Kind::Commit => {
                stats::inc(&self.dc.commit_requests, 1);
                // Compression runs outside the store lock, on the worker pool.
                drop(guard);
                let (ok, d, o) = self.commit_ranges(&req.ranges, map);
                if !ok {
                    status = VCRAM_S_DEVICE_ERROR;
                }
                done = d;
                overflowed = o;
                guard = lock(&self.store);
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

    /// An encoder for a worker (reused across operations).
    fn take_encoder(&self) -> Option<Encoder> {
        if let Some(e) = lock(&self.encoders).pop() {
            return Some(e);
        }
        match Encoder::new(self.opts.level, self.opts.raw_threshold) {
            Ok(e) => Some(e),
            Err(e) => {
                rl_warn!(self.warn, "cannot create a zstd context: {e}");
                None
            }
        }
    }

    fn give_encoder(&self, e: Encoder) {
        let mut pool = lock(&self.encoders);
        if pool.len() < self.threads() {
            pool.push(e);
        }
    }

    /// Worker threads for scanning and compression (`--threads`, at least 1).
    pub fn threads(&self) -> usize {
        self.opts.threads.max(1)
    }

    /// Run `work` on up to `n` threads (the caller's included); each returns when it finds no
    /// more work.
    fn on_workers(&self, n: usize, work: impl Fn() + Sync) {
        let n = n.clamp(1, self.threads());
        if n == 1 {
            work();
            return;
        }
        std::thread::scope(|s| {
            for _ in 1..n {
                if let Err(e) = std::thread::Builder::new()
                    .name("vcram-worker".into())
                    .spawn_scoped(s, &work)
                {
                    rl_warn!(self.warn, "cannot start a worker thread: {e}");
                    break;
                }
            }
            work();
        });
    }

    /// COMMIT the pages of `ranges`: copied and encoded by the workers outside the store lock
    /// (a page whose content the store already holds is not encoded again), held under the
    /// lock a chunk at a time. Returns (no internal failure, pages done, pages overflowed).
    fn commit_ranges(&self, ranges: &[(u64, u64)], map: &WindowMap) -> (bool, u64, u64) {
        const CHUNK: u64 = 128;
        let mut chunks = Vec::new();
        for &(first, n) in ranges {
            let mut p = first;
            let end = first.saturating_add(n);
            while p < end {
                let m = CHUNK.min(end - p);
                chunks.push((p, m));
                p += m;
            }
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        let overflowed = AtomicU64::new(0);
        let work = || {
            let Some(mut enc) = self.take_encoder() else {
                failed.store(true, Ordering::Relaxed);
                return;
            };
            let mut page = Box::new([0u8; VCRAM_PAGE_SIZE as usize]);
            while !failed.load(Ordering::Relaxed) {
                let Some(&(first, n)) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let seen: Option<Vec<Seen>> = match lock(&self.store).as_ref() {
                    Some(st) => (first..first + n).map(|i| st.snapshot(i)).collect(),
                    None => None,
                };
                let Some(seen) = seen else {
                    failed.store(true, Ordering::Relaxed);
                    break;
                };
                let mut prepared = Vec::with_capacity(n as usize);
                for (k, s) in seen.iter().enumerate() {
                    if !map.copy_page(first + k as u64, &mut page) {
                        failed.store(true, Ordering::Relaxed);
                        break;
                    }
                    let held = matches!(
                        s.entry.state(),
                        PageState::Same | PageState::Compressed | PageState::Raw
                    );
                    prepared.push(if held && s.entry.matches(&page[..]) {
                        None
                    } else {
                        Some(Prepared::new(&mut enc, &page[..]))
                    });
                }
                if prepared.len() != seen.len() {
                    break;
                }
                let mut guard = lock(&self.store);
                let Some(store) = guard.as_mut() else {
                    failed.store(true, Ordering::Relaxed);
                    break;
                };
                let mut over = 0;
                for (k, p) in prepared.iter().enumerate() {
                    if let Some(p) = p {
                        match store.put_prepared(first + k as u64, p) {
                            Some(Stored::Overflow) => over += 1,
                            Some(_) => {}
                            None => failed.store(true, Ordering::Relaxed),
                        }
                    }
                }
                store.counters_mut().commit_pages += n;
                self.after_op(store);
                drop(guard);
                done.fetch_add(n, Ordering::Relaxed);
                overflowed.fetch_add(over, Ordering::Relaxed);
            }
            self.give_encoder(enc);
        };
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        self.on_workers(total.div_ceil(4 * CHUNK) as usize, work);
        (
            !failed.load(Ordering::Relaxed),
            done.load(Ordering::Relaxed),
            overflowed.load(Ordering::Relaxed),
        )
    }

    /// One scan pass over the window. Returns false when there was nothing to scan.
    ///
    /// Only pages with data in the backing file are read (SEEK_DATA/SEEK_HOLE): a hole reads
    /// as zero, so in a hole only pages the store holds something non-zero for are looked at
    /// (through the occupancy summary, without reading guest memory). The cost of a pass
    /// follows the pages the guest touched, not the window size, and holes stay holes.
    ///
    /// The window is cut into chunks of `CHUNK` pages, taken by up to `--threads` workers.
    /// For a chunk, a worker notes the entries under the store lock, then copies, compares
    /// and encodes the pages without it, then installs the results under the lock (dropping
    /// those whose block changed meanwhile: the next pass sees them again).
    pub fn scan_pass(&self) -> bool {
        const CHUNK: u64 = 1024;
        const ZERO: [u8; VCRAM_PAGE_SIZE as usize] = [0; VCRAM_PAGE_SIZE as usize];
        let Some(map) = self.map() else {
            return false;
        };
        let pages = map.pages();
        let runs = map.data_runs(0, pages);
        let nchunks = pages.div_ceil(CHUNK);
        let next = AtomicU64::new(0);
        let events = AtomicBool::new(false);
        let gone = AtomicBool::new(false);
        let t0 = std::time::Instant::now();
        let work = || {
            let Some(mut enc) = self.take_encoder() else {
                return;
            };
            let mut page = Box::new([0u8; VCRAM_PAGE_SIZE as usize]);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= nchunks || self.stopping() || gone.load(Ordering::Relaxed) {
                    break;
                }
                let (a, b) = (k * CHUNK, ((k + 1) * CHUNK).min(pages));
                // (page, entry seen, data in the backing, room for an overflow retry)
                let mut items: Vec<(u64, Seen, bool, bool)> = Vec::new();
                {
                    let guard = lock(&self.store);
                    let Some(store) = guard.as_ref().filter(|s| s.pages() == pages) else {
                        gone.store(true, Ordering::Relaxed);
                        break;
                    };
                    let mut add = |store: &Store, p: u64, data: bool| {
                        if let Some(seen) = store.snapshot(p) {
                            let room = store.has_room_for(&seen.entry);
                            items.push((p, seen, data, room));
                        }
                    };
                    let mut hole_from = a;
                    let holes =
                        |store: &Store,
                         from: u64,
                         to: u64,
                         add: &mut dyn FnMut(&Store, u64, bool)| {
                            let mut f = from;
                            while let Some(j) = store.next_occupied(f, to) {
                                if !store.is_zero(j) {
                                    add(store, j, false);
                                }
                                f = j + 1;
                            }
                        };
                    let first_run = runs.partition_point(|r| r.0 + r.1 <= a);
                    for &(start, len) in runs.get(first_run..).unwrap_or(&[]) {
                        if start >= b {
                            break;
                        }
                        let (s0, s1) = (start.max(a), (start + len).min(b));
                        holes(store, hole_from, s0, &mut add);
                        for p in s0..s1 {
                            add(store, p, true);
                        }
                        hole_from = s1;
                    }
                    holes(store, hole_from, b, &mut add);
                }
                if items.is_empty() {
                    continue;
                }
                let work: Vec<ScanWork> = items
                    .iter()
                    .map(|&(p, seen, data, room)| {
                        let bytes: &[u8] = if !data {
                            &ZERO
                        } else if map.copy_page(p, &mut page) {
                            &page[..]
                        } else {
                            return ScanWork::Unchanged;
                        };
                        ScanWork::new(&mut enc, &seen, bytes, || room)
                    })
                    .collect();
                let mut guard = lock(&self.store);
                let Some(store) = guard.as_mut() else {
                    gone.store(true, Ordering::Relaxed);
                    break;
                };
                let batch: Vec<(u64, Seen, &ScanWork)> = items
                    .iter()
                    .zip(&work)
                    .map(|(&(p, seen, _, _), w)| (p, seen, w))
                    .collect();
                store.install_scans(&batch);
                if self.after_op(store) {
                    events.store(true, Ordering::Relaxed);
                }
            }
            self.give_encoder(enc);
        };
        let busy = if runs.is_empty() { 1 } else { nchunks as usize };
        self.on_workers(busy, work);
        if gone.load(Ordering::Relaxed) {
            return false;
        }
        let ns = t0.elapsed().as_nanos() as u64;
        let mut ev = events.load(Ordering::Relaxed);
        if let Some(store) = lock(&self.store).as_mut() {
            store.note_scan(ns);
            ev |= self.after_op(store);
        }
        if ev {
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
        let mut ws = self.window_state();
        if self.fault.window_hidden() {
            ws = WindowState::Unknown;
        }
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
            ..Default::default()
        };
        let rss = stats::Rss::of_self();
        s.rss_bytes = rss.total;
        s.rss_anon_bytes = rss.anon;
        s.rss_shmem_bytes = rss.shmem;
        s.rss_file_bytes = rss.file;
        if let WindowState::Ok { base, size } = ws {
            s.window_base = base;
            s.logical_capacity = size;
        }
        s.set_store(&c);
        s.set_device(&self.dc);
        s.set_nominate(&self.nominate);
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
        let req = encode_request(req_type, 0, ranges);
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

    fn commit_and_scan(threads: usize) -> (Snapshot, Vec<Option<Vec<u8>>>) {
        let (d, gm) = device(
            DeviceOptions {
                threads,
                ..Default::default()
            },
            16 << 20,
        );
        let pages = 4096u64;
        for i in 0..pages {
            let p = match i % 4 {
                0 => text_page(i),
                1 => vec![(i % 7) as u8; 4096],
                2 => (0..4096u64)
                    .map(|k| (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (i % 50 + 5)) as u8)
                    .collect(),
                _ => continue,
            };
            write_window(&gm, i, &p);
        }
        // half by COMMIT (1 range per 1024 pages), the rest found by the scanner
        let r = run_request(
            &d,
            &gm,
            VCRAM_REQ_COMMIT,
            &[(BASE, 1024), (BASE + 2048 * 4096, 1024)],
        );
        assert_eq!(u32::from(r.status), VCRAM_S_OK);
        assert_eq!(u64::from(r.pages_done), 2048);
        assert!(d.scan_pass());
        let store = d.store.lock().unwrap();
        let st = store.as_ref().unwrap();
        st.verify().unwrap();
        let images = (0..pages).map(|i| st.image(i)).collect();
        drop(store);
        (d.snapshot(), images)
    }

    #[test]
    fn workers_store_the_same_as_one_thread_and_encode_each_page_once() {
        let (one, img1) = commit_and_scan(1);
        let (four, img4) = commit_and_scan(4);
        assert_eq!(img1, img4);
        for s in [&one, &four] {
            // committed: 2048 pages (written or not: an unwritten page is a zero page); found
            // by the scanner: the written non-zero pages of the other 2048 (3 in 4, less the
            // 74 that are all zero)
            assert_eq!(s.stored_pages, 2048 + 1536 - 74);
            assert_eq!(s.commit_pages, 2048);
            // every page held was encoded and stored once
            assert_eq!(s.store_ops, s.stored_pages);
        }
        assert_eq!(one.compressed_bytes, four.compressed_bytes);
        assert_eq!(one.scan_changed_pages, four.scan_changed_pages);
        // COMMIT of unchanged pages, and a second scan: nothing is encoded again
        let (d, gm) = device(
            DeviceOptions {
                threads: 2,
                ..Default::default()
            },
            4 << 20,
        );
        for i in 0..512 {
            write_window(&gm, i, &text_page(i));
        }
        let r = run_request(&d, &gm, VCRAM_REQ_COMMIT, &[(BASE, 512)]);
        assert_eq!(u32::from(r.status), VCRAM_S_OK);
        assert!(d.scan_pass());
        let r = run_request(&d, &gm, VCRAM_REQ_COMMIT, &[(BASE, 512)]);
        assert_eq!(u32::from(r.status), VCRAM_S_OK);
        let s = d.snapshot();
        assert_eq!(s.store_ops, 512);
        assert_eq!(s.commit_pages, 1024);
        assert_eq!(s.scan_changed_pages, 0);
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
