// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Statistics: counters kept by the vhost side, the snapshot served on the control socket,
//! and its renderings (human table, Prometheus text exposition).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::model::Counters;
use crate::request::Reject;

/// Counters of the request path (atomics: bumped by the vring thread, read by anyone).
#[derive(Default)]
pub struct DeviceCounters {
    pub discard_requests: AtomicU64,
    pub commit_requests: AtomicU64,
    pub reset_requests: AtomicU64,
    pub bad_requests: AtomicU64,
    pub rejects: [AtomicU64; Reject::ALL.len()],
    /// Requests whose response could not be written (buffer outside guest memory).
    pub unanswerable: AtomicU64,
    pub bad_event_buffers: AtomicU64,
    pub device_errors: AtomicU64,
    pub kicks: AtomicU64,
}

impl DeviceCounters {
    pub fn reject(&self, r: Reject) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.rejects.get(r.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[inline]
pub fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

#[inline]
pub fn inc(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// Everything `vcramctl stats` shows. Serialized as one JSON object. Missing fields read as
/// defaults, so a `vcramctl` of another version still shows what the daemon sends.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Snapshot {
    pub version: String,
    pub connected: bool,
    /// "connected", "waiting for a connection", or "disconnected (...)".
    pub frontend: String,
    /// Frontend connection number (1, 2, ...) these statistics belong to.
    pub session: u64,
    pub window_status: String,
    pub node: u32,
    pub window_base: u64,
    pub logical_capacity: u64,
    pub physical_capacity: u64,
    pub physical_used: u64,
    pub max_physical_used: u64,
    pub metadata_bytes: u64,
    pub metadata_bytes_per_page: u64,
    pub granule: u64,
    pub original_bytes: u64,
    pub compressed_bytes: u64,
    pub image_bytes: u64,
    pub arena_bytes: u64,
    pub ratio: f64,
    pub stored_pages: u64,
    pub same_pages: u64,
    pub zero_pages: u64,
    pub compressed_pages: u64,
    pub raw_pages: u64,
    pub overflow_pages: u64,
    pub overflow_pages_total: u64,
    /// Pages (re)stored from an encoding (COMMIT or scanner).
    pub store_ops: u64,
    pub reset_requests: u64,
    pub discard_requests: u64,
    pub discard_pages: u64,
    pub commit_requests: u64,
    pub commit_pages: u64,
    /// NOMINATE requests answered (protocol 1.3), entries and pages named in the answers.
    pub nominate_requests: u64,
    /// Of those, requests with a page limit (protocol 1.4).
    pub nominate_limited: u64,
    pub nominated_entries: u64,
    pub nominated_pages: u64,
    pub scans: u64,
    pub scan_pages: u64,
    pub scan_changed_pages: u64,
    pub scan_retried_pages: u64,
    pub scan_ms_last: f64,
    pub scan_ms_avg: f64,
    pub pressure_level: u32,
    pub watermark_events: u64,
    pub low_events: u64,
    pub high_events: u64,
    pub normal_events: u64,
    pub overflow_events: u64,
    pub events_generated: u64,
    pub events_delivered: u64,
    pub events_lost: u64,
    /// OVERFLOW events merged into a waiting record (contiguous runs).
    pub events_merged: u64,
    pub events_pending: u64,
    pub bad_requests: u64,
    pub rejects: BTreeMap<String, u64>,
    pub unanswerable_requests: u64,
    pub bad_event_buffers: u64,
    pub device_errors: u64,
    pub zstd_level: i32,
    pub raw_threshold: u64,
    pub low_watermark: u32,
    pub high_watermark: u32,
    pub scan_interval_ms: u64,
    pub rss_bytes: u64,
    /// Private (anonymous) resident memory: the daemon's own memory, without the guest memory
    /// it maps from the shared files.
    pub rss_anon_bytes: u64,
    /// Resident guest memory the daemon maps from the shared files (RssShmem): pages the guest
    /// wrote that a scan or COMMIT read, and the rings and request buffers.
    pub rss_shmem_bytes: u64,
    /// Resident program text and libraries (RssFile): file-backed, shared with every process
    /// that maps the same files; about 3 MiB from the start, whatever the guest does.
    pub rss_file_bytes: u64,
}

impl Snapshot {
    /// Fill the store part from the model counters.
    pub fn set_store(&mut self, c: &Counters) {
        self.physical_capacity = c.physical_capacity;
        self.physical_used = c.physical_used;
        self.max_physical_used = c.max_physical_used;
        self.metadata_bytes = c.metadata_bytes;
        self.metadata_bytes_per_page = c.metadata_bytes.checked_div(c.logical_pages).unwrap_or(0);
        self.granule = c.granule;
        self.original_bytes = c.original_bytes();
        self.compressed_bytes = c.compressed_bytes;
        self.image_bytes = c.image_bytes;
        self.arena_bytes = c.arena_bytes;
        self.ratio = if c.compressed_bytes > 0 {
            c.original_bytes() as f64 / c.compressed_bytes as f64
        } else {
            0.0
        };
        self.stored_pages = c.stored_pages;
        self.same_pages = c.same_pages;
        self.zero_pages = c.zero_pages;
        self.compressed_pages = c.compressed_pages;
        self.raw_pages = c.raw_pages;
        self.overflow_pages = c.overflow_pages;
        self.overflow_pages_total = c.overflow_pages_total;
        self.discard_pages = c.discard_pages;
        self.commit_pages = c.commit_pages;
        self.store_ops = c.store_ops;
        self.scans = c.scans;
        self.scan_pages = c.scan_pages;
        self.scan_changed_pages = c.scan_changed_pages;
        self.scan_retried_pages = c.scan_retried_pages;
        self.scan_ms_last = c.scan_ns_last as f64 / 1e6;
        self.scan_ms_avg = if c.scans > 0 {
            c.scan_ns_total as f64 / c.scans as f64 / 1e6
        } else {
            0.0
        };
        self.pressure_level = c.pressure_level;
        self.watermark_events = c.watermark_events;
        self.low_events = c.low_events;
        self.high_events = c.high_events;
        self.normal_events = c.normal_events;
        self.overflow_events = c.overflow_events;
    }

    pub fn set_nominate(&mut self, n: &crate::nominate::NominateState) {
        self.nominate_requests = get(&n.requests);
        self.nominate_limited = get(&n.limited);
        self.nominated_entries = get(&n.entries);
        self.nominated_pages = get(&n.pages);
    }

    pub fn set_device(&mut self, d: &DeviceCounters) {
        self.discard_requests = get(&d.discard_requests);
        self.commit_requests = get(&d.commit_requests);
        self.reset_requests = get(&d.reset_requests);
        self.bad_requests = get(&d.bad_requests);
        self.rejects = Reject::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    d.rejects.get(r.index()).map(get).unwrap_or(0),
                )
            })
            .collect();
        self.unanswerable_requests = get(&d.unanswerable);
        self.bad_event_buffers = get(&d.bad_event_buffers);
        self.device_errors = get(&d.device_errors);
    }
}

/// Resident memory of this process as `/proc/self/status` splits it, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
    pub shmem: u64,
    pub file: u64,
}

impl Rss {
    pub fn of_self() -> Rss {
        Self::parse(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
    }

    /// From the text of a `/proc/PID/status` (fields missing: 0).
    pub fn parse(status: &str) -> Rss {
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |k| k * 1024)
        };
        Rss {
            total: kib("VmRSS:"),
            anon: kib("RssAnon:"),
            shmem: kib("RssShmem:"),
            file: kib("RssFile:"),
        }
    }
}

fn level_name(l: u32) -> &'static str {
    match l {
        0 => "normal",
        1 => "low",
        2 => "high",
        _ => "?",
    }
}

/// Bytes in a human unit.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1}%", a as f64 * 100.0 / b as f64)
    }
}

/// The table `vcramctl stats` prints.
pub fn render_table(s: &Snapshot) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
    row(
        "device",
        format!(
            "vcram-device {}  session {}  frontend {}  window {}",
            s.version,
            s.session,
            if !s.frontend.is_empty() {
                s.frontend.as_str()
            } else if s.connected {
                "connected"
            } else {
                "not connected"
            },
            s.window_status
        ),
    );
    row(
        "window",
        format!(
            "node {}  base {:#x}  zstd level {}  raw threshold {} B",
            s.node, s.window_base, s.zstd_level, s.raw_threshold
        ),
    );
    row("logical capacity", human_bytes(s.logical_capacity));
    row("physical capacity", human_bytes(s.physical_capacity));
    row(
        "physical used",
        format!(
            "{}  ({} of capacity; pressure {}; watermarks {}%/{}%)",
            human_bytes(s.physical_used),
            pct(s.physical_used, s.physical_capacity),
            level_name(s.pressure_level),
            s.low_watermark,
            s.high_watermark
        ),
    );
    row("max physical used", human_bytes(s.max_physical_used));
    row(
        "metadata",
        format!(
            "{}  ({} B/page, granule {} B)",
            human_bytes(s.metadata_bytes),
            s.metadata_bytes_per_page,
            s.granule
        ),
    );
    row("original bytes", human_bytes(s.original_bytes));
    row(
        "compressed bytes",
        format!(
            "{}  (rounded {}, arena {})",
            human_bytes(s.compressed_bytes),
            human_bytes(s.image_bytes),
            human_bytes(s.arena_bytes)
        ),
    );
    row(
        "compression ratio",
        if s.compressed_bytes > 0 {
            format!("{:.2}x", s.ratio)
        } else {
            "-".into()
        },
    );
    row(
        "pages stored",
        format!(
            "{}  (same-filled {}, of which zero {}; compressed {}; incompressible {})",
            s.stored_pages, s.same_pages, s.zero_pages, s.compressed_pages, s.raw_pages
        ),
    );
    row(
        "overflow pages",
        format!(
            "{} now, {} total, {} events",
            s.overflow_pages, s.overflow_pages_total, s.overflow_events
        ),
    );
    row(
        "discards",
        format!("{} requests, {} pages", s.discard_requests, s.discard_pages),
    );
    row(
        "commits",
        format!("{} requests, {} pages", s.commit_requests, s.commit_pages),
    );
    row("resets", format!("{} requests", s.reset_requests));
    row(
        "nominations",
        format!(
            "{} requests ({} with a page limit), {} runs, {} pages named",
            s.nominate_requests, s.nominate_limited, s.nominated_entries, s.nominated_pages
        ),
    );
    row(
        "scans",
        format!(
            "{} scans, {} pages changed by direct writes, last {:.2} ms, avg {:.2} ms, interval {} ms",
            s.scans, s.scan_changed_pages, s.scan_ms_last, s.scan_ms_avg, s.scan_interval_ms
        ),
    );
    row(
        "watermark events",
        format!(
            "{}  (low {}, high {}, normal {})",
            s.watermark_events, s.low_events, s.high_events, s.normal_events
        ),
    );
    row(
        "events",
        format!(
            "{} generated, {} delivered, {} pending, {} lost, {} merged",
            s.events_generated,
            s.events_delivered,
            s.events_pending,
            s.events_lost,
            s.events_merged
        ),
    );
    let nonzero: Vec<String> = s
        .rejects
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    row(
        "bad requests rejected",
        if nonzero.is_empty() {
            format!("{}", s.bad_requests)
        } else {
            format!("{}  ({})", s.bad_requests, nonzero.join(", "))
        },
    );
    row(
        "bad event buffers",
        format!(
            "{}  (unanswerable requests {}, device errors {})",
            s.bad_event_buffers, s.unanswerable_requests, s.device_errors
        ),
    );
    row(
        "daemon memory",
        format!(
            "RSS {} = private {} + guest memory mapped from the shared files {} + program text and libraries {}",
            human_bytes(s.rss_bytes),
            human_bytes(s.rss_anon_bytes),
            human_bytes(s.rss_shmem_bytes),
            human_bytes(s.rss_file_bytes)
        ),
    );
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<w$}  {v}\n"));
    }
    out
}

/// Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(s: &Snapshot) -> String {
    let g = "gauge";
    let c = "counter";
    let m: Vec<(&str, &str, &str, f64)> = vec![
        (
            "vcram_up",
            "1 if a frontend is connected",
            g,
            s.connected as u8 as f64,
        ),
        (
            "vcram_window_ok",
            "1 if the window is mapped and served",
            g,
            (s.window_status == "ok") as u8 as f64,
        ),
        (
            "vcram_logical_capacity_bytes",
            "window size",
            g,
            s.logical_capacity as f64,
        ),
        (
            "vcram_physical_capacity_bytes",
            "physical capacity",
            g,
            s.physical_capacity as f64,
        ),
        (
            "vcram_physical_used_bytes",
            "physical bytes used (images rounded to the granule + metadata)",
            g,
            s.physical_used as f64,
        ),
        (
            "vcram_physical_used_max_bytes",
            "highest physical use",
            g,
            s.max_physical_used as f64,
        ),
        (
            "vcram_metadata_bytes",
            "page table bytes",
            g,
            s.metadata_bytes as f64,
        ),
        (
            "vcram_original_bytes",
            "bytes of page content held",
            g,
            s.original_bytes as f64,
        ),
        (
            "vcram_compressed_bytes",
            "exact image bytes",
            g,
            s.compressed_bytes as f64,
        ),
        (
            "vcram_image_bytes",
            "image bytes rounded to the granule",
            g,
            s.image_bytes as f64,
        ),
        (
            "vcram_arena_bytes",
            "bytes reserved by the image arena",
            g,
            s.arena_bytes as f64,
        ),
        (
            "vcram_compression_ratio",
            "original / compressed bytes",
            g,
            s.ratio,
        ),
        (
            "vcram_stored_pages",
            "pages holding data",
            g,
            s.stored_pages as f64,
        ),
        (
            "vcram_same_pages",
            "same-filled pages",
            g,
            s.same_pages as f64,
        ),
        ("vcram_zero_pages", "all-zero pages", g, s.zero_pages as f64),
        (
            "vcram_compressed_pages",
            "pages held compressed",
            g,
            s.compressed_pages as f64,
        ),
        (
            "vcram_incompressible_pages",
            "pages held raw",
            g,
            s.raw_pages as f64,
        ),
        (
            "vcram_overflow_pages",
            "pages not stored now (capacity exhausted)",
            g,
            s.overflow_pages as f64,
        ),
        (
            "vcram_overflow_pages_total",
            "page stores that overflowed",
            c,
            s.overflow_pages_total as f64,
        ),
        (
            "vcram_discard_requests_total",
            "DISCARD requests",
            c,
            s.discard_requests as f64,
        ),
        (
            "vcram_discard_pages_total",
            "pages discarded",
            c,
            s.discard_pages as f64,
        ),
        (
            "vcram_reset_requests_total",
            "RESET requests (whole window discarded)",
            c,
            s.reset_requests as f64,
        ),
        (
            "vcram_commit_requests_total",
            "COMMIT requests",
            c,
            s.commit_requests as f64,
        ),
        (
            "vcram_commit_pages_total",
            "pages committed",
            c,
            s.commit_pages as f64,
        ),
        ("vcram_scans_total", "scan passes", c, s.scans as f64),
        (
            "vcram_scan_pages_total",
            "pages scanned",
            c,
            s.scan_pages as f64,
        ),
        (
            "vcram_scan_changed_pages_total",
            "pages changed by direct writes",
            c,
            s.scan_changed_pages as f64,
        ),
        (
            "vcram_scan_last_seconds",
            "duration of the last scan",
            g,
            s.scan_ms_last / 1e3,
        ),
        (
            "vcram_pressure_level",
            "0 normal, 1 low, 2 high",
            g,
            s.pressure_level as f64,
        ),
        (
            "vcram_watermark_events_total",
            "pressure level changes",
            c,
            s.watermark_events as f64,
        ),
        (
            "vcram_events_generated_total",
            "events generated",
            c,
            s.events_generated as f64,
        ),
        (
            "vcram_events_delivered_total",
            "events delivered",
            c,
            s.events_delivered as f64,
        ),
        (
            "vcram_events_lost_total",
            "events dropped (no buffer)",
            c,
            s.events_lost as f64,
        ),
        (
            "vcram_events_merged_total",
            "OVERFLOW events merged into a waiting one",
            c,
            s.events_merged as f64,
        ),
        (
            "vcram_bad_requests_total",
            "requests rejected",
            c,
            s.bad_requests as f64,
        ),
        (
            "vcram_bad_event_buffers_total",
            "unusable eventq buffers",
            c,
            s.bad_event_buffers as f64,
        ),
        (
            "vcram_rss_bytes",
            "daemon resident set size",
            g,
            s.rss_bytes as f64,
        ),
    ];
    let mut out = String::new();
    for (name, help, ty, v) in m {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {ty}\n{name} {v}\n"
        ));
    }
    out.push_str("# HELP vcram_rejects_total requests rejected, by reason\n# TYPE vcram_rejects_total counter\n");
    for (k, v) in &s.rejects {
        out.push_str(&format!("vcram_rejects_total{{reason=\"{k}\"}} {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_parts_from_proc_status() {
        let st = "Name:\tvcram-device\nVmRSS:\t    3500 kB\nRssAnon:\t     332 kB\n\
                  RssFile:\t    3100 kB\nRssShmem:\t      68 kB\nThreads:\t3\n";
        assert_eq!(
            Rss::parse(st),
            Rss {
                total: 3500 << 10,
                anon: 332 << 10,
                shmem: 68 << 10,
                file: 3100 << 10,
            }
        );
        assert_eq!(Rss::parse("garbage"), Rss::default());
        let me = Rss::of_self();
        assert!(me.total > 0 && me.total >= me.anon + me.file);
    }

    #[test]
    fn renders() {
        let mut s = Snapshot {
            version: "x".into(),
            window_status: "ok".into(),
            ..Default::default()
        };
        let c = Counters {
            logical_pages: 10,
            metadata_bytes: 160,
            stored_pages: 4,
            compressed_bytes: 4096,
            ..Default::default()
        };
        s.set_store(&c);
        assert_eq!(s.ratio, 4.0);
        assert_eq!(s.metadata_bytes_per_page, 16);
        let d = DeviceCounters::default();
        d.reject(Reject::Overlap);
        s.set_device(&d);
        assert_eq!(s.bad_requests, 1);
        assert_eq!(s.rejects.get("overlap"), Some(&1));
        let t = render_table(&s);
        assert!(t.contains("compression ratio"));
        assert!(t.contains("4.00x"));
        assert!(t.contains("overlap 1"));
        let p = render_prometheus(&s);
        assert!(p.contains("vcram_compression_ratio 4\n"));
        assert!(p.contains("vcram_rejects_total{reason=\"overlap\"} 1"));
        let j = serde_json::to_string(&s).unwrap();
        let back: Snapshot = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        // another version's reply: missing and unknown fields are fine
        let old: Snapshot = serde_json::from_str(r#"{"stored_pages":3,"future":1}"#).unwrap();
        assert_eq!(old.stored_pages, 3);
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
