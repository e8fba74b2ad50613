//! The device's timeline: a snapshot of its statistics at every interval, kept in a bounded
//! ring buffer by the daemon and served on the control socket (`timeline SEQ`: the samples
//! after SEQ), so that `vcramctl record` loses nothing between its polls.
//!
//! A [`Sample`] is one row of the CSV that `vcramctl record` writes and `vcramctl plot` reads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::control::Current;
use crate::stats::Snapshot;

/// One point of the timeline (one CSV row).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Sample {
    /// Sequence number, 1, 2, ... over the daemon's life (gaps: samples the ring dropped).
    pub seq: u64,
    /// Wall clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub session: u64,
    pub connected: bool,
    pub ratio: f64,
    pub original_bytes: u64,
    pub compressed_bytes: u64,
    pub physical_used: u64,
    pub physical_capacity: u64,
    pub logical_capacity: u64,
    /// Watermarks, percent of the physical capacity.
    pub low_watermark: u32,
    pub high_watermark: u32,
    /// 0 normal, 1 low, 2 high.
    pub pressure_level: u32,
    pub stored_pages: u64,
    pub same_pages: u64,
    pub zero_pages: u64,
    pub compressed_pages: u64,
    pub raw_pages: u64,
    pub overflow_pages: u64,
    pub discard_requests: u64,
    pub discard_pages: u64,
    pub commit_pages: u64,
    pub scans: u64,
    pub watermark_events: u64,
}

impl Sample {
    pub fn from_snapshot(seq: u64, unix_ms: u64, s: &Snapshot) -> Sample {
        Sample {
            seq,
            unix_ms,
            session: s.session,
            connected: s.connected,
            ratio: s.ratio,
            original_bytes: s.original_bytes,
            compressed_bytes: s.compressed_bytes,
            physical_used: s.physical_used,
            physical_capacity: s.physical_capacity,
            logical_capacity: s.logical_capacity,
            low_watermark: s.low_watermark,
            high_watermark: s.high_watermark,
            pressure_level: s.pressure_level,
            stored_pages: s.stored_pages,
            same_pages: s.same_pages,
            zero_pages: s.zero_pages,
            compressed_pages: s.compressed_pages,
            raw_pages: s.raw_pages,
            overflow_pages: s.overflow_pages,
            discard_requests: s.discard_requests,
            discard_pages: s.discard_pages,
            commit_pages: s.commit_pages,
            scans: s.scans,
            watermark_events: s.watermark_events,
        }
    }
}

/// A bounded ring of samples.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    next_seq: u64,
    samples: VecDeque<Sample>,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            cap: cap.max(1),
            next_seq: 1,
            samples: VecDeque::with_capacity(cap.clamp(1, 4096)),
        }
    }

    /// Append a sample of `s` taken at `unix_ms`; the oldest goes when the ring is full.
    pub fn push(&mut self, unix_ms: u64, s: &Snapshot) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.samples.len() == self.cap {
            self.samples.pop_front();
        }
        self.samples
            .push_back(Sample::from_snapshot(seq, unix_ms, s));
        seq
    }

    /// At most `max` samples with a sequence number above `after`, oldest first, and whether
    /// more follow them.
    pub fn since(&self, after: u64, max: usize) -> (Vec<Sample>, bool) {
        let start = self.samples.partition_point(|x| x.seq <= after);
        let end = self.samples.len().min(start.saturating_add(max));
        (
            self.samples.range(start..end).cloned().collect(),
            end < self.samples.len(),
        )
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }
}

/// Samples in one reply to `timeline SEQ`: the control socket bounds a reply's size (a sample
/// is about 400 bytes of JSON); a client asks again from the last one while `more` is set.
pub const MAX_PER_REPLY: usize = 1000;

/// The reply to `timeline SEQ` on the control socket.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Reply {
    pub interval_ms: u64,
    pub capacity: usize,
    pub samples: Vec<Sample>,
    /// More samples follow the last one of this reply.
    pub more: bool,
}

struct Shared {
    ring: Mutex<Ring>,
    interval_ms: u64,
}

static TIMELINE: OnceLock<Arc<Shared>> = OnceLock::new();

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Start the sampler thread of this daemon: every `interval_ms` a snapshot of the device the
/// control socket answers for goes into a ring of `capacity` samples. Once per process.
pub fn start(current: Current, interval_ms: u64, capacity: usize) -> Result<(), String> {
    if interval_ms == 0 {
        return Err("the timeline interval must be above 0 ms".into());
    }
    let shared = Arc::new(Shared {
        ring: Mutex::new(Ring::new(capacity)),
        interval_ms,
    });
    TIMELINE
        .set(shared.clone())
        .map_err(|_| "the timeline is already running".to_string())?;
    std::thread::Builder::new()
        .name("vcram-timeline".into())
        .spawn(move || loop {
            let dev = current.lock().unwrap_or_else(|e| e.into_inner()).pick();
            if let Some(d) = dev {
                let snap = d.snapshot();
                shared
                    .ring
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(now_ms(), &snap);
            }
            std::thread::sleep(Duration::from_millis(interval_ms));
        })
        .map_err(|e| format!("cannot start the timeline thread: {e}"))?;
    Ok(())
}

/// Answer a control socket command `timeline [SEQ]` (JSON, one line).
pub fn reply(cmd: &str) -> String {
    let arg = cmd.strip_prefix("timeline").unwrap_or("").trim();
    let after = if arg.is_empty() {
        Ok(0)
    } else {
        arg.parse::<u64>()
    };
    let Ok(after) = after else {
        // The input is never echoed (see control.rs).
        return r#"{"error":"timeline takes a sequence number (timeline SEQ)"}"#.to_string();
    };
    let Some(t) = TIMELINE.get() else {
        return r#"{"error":"no timeline in this daemon"}"#.to_string();
    };
    let ring = t.ring.lock().unwrap_or_else(|e| e.into_inner());
    let (samples, more) = ring.since(after, MAX_PER_REPLY);
    let r = Reply {
        interval_ms: t.interval_ms,
        capacity: ring.capacity(),
        samples,
        more,
    };
    serde_json::to_string(&r).unwrap_or_default()
}

/// One line of the device's state, for `vcramctl stats --brief` and `scripts/run --stats-every`.
pub fn render_line(s: &Snapshot) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            a as f64 * 100.0 / b as f64
        }
    };
    let level = match s.pressure_level {
        0 => "normal",
        1 => "low",
        2 => "high",
        _ => "?",
    };
    format!(
        "pages stored {} (same-filled {}, zero {}, compressed {}, raw {})  ratio {}  physical {:.1} MiB of {:.0} MiB ({:.1}%, pressure {})  discards {} pages",
        s.stored_pages,
        s.same_pages,
        s.zero_pages,
        s.compressed_pages,
        s.raw_pages,
        if s.compressed_bytes > 0 {
            format!("{:.2}x", s.ratio)
        } else {
            "-".into()
        },
        mib(s.physical_used),
        mib(s.physical_capacity),
        pct(s.physical_used, s.physical_capacity),
        level,
        s.discard_pages
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(stored: u64) -> Snapshot {
        Snapshot {
            stored_pages: stored,
            ratio: 2.5,
            physical_capacity: 1 << 20,
            ..Default::default()
        }
    }

    #[test]
    fn ring_is_bounded_and_answers_since() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            assert_eq!(r.push(1000 + i, &snap(i)), i + 1);
        }
        assert_eq!(r.len(), 3);
        let (all, more) = r.since(0, 10);
        assert!(!more);
        assert_eq!(all.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(all[0].stored_pages, 2);
        assert_eq!(all[0].unix_ms, 1002);
        assert_eq!(r.since(4, 10).0.len(), 1);
        assert!(r.since(5, 10).0.is_empty());
        assert!(r.since(99, 10).0.is_empty());
        // Bounded replies: two, then the rest.
        let (first, more) = r.since(0, 2);
        assert!(more);
        assert_eq!(first.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![3, 4]);
        let (rest, more) = r.since(4, 2);
        assert!(!more);
        assert_eq!(rest.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn reply_without_timeline_and_bad_seq() {
        // No daemon in a unit test: either no timeline or a bad argument, both as errors.
        assert!(reply("timeline x").contains("error"));
        // Like every control reply, an error never echoes the input.
        let junk = "timeline \"},{\"evil\":1,\"x\":\"";
        let r = reply(junk);
        assert!(r.contains("error"), "{r}");
        assert!(!r.contains("evil"), "{r}");
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert!(v.is_object());
    }

    #[test]
    fn line_shows_the_essentials() {
        let l = render_line(&Snapshot {
            stored_pages: 42,
            compressed_bytes: 10,
            ratio: 3.0,
            physical_used: 3 << 20,
            physical_capacity: 12 << 20,
            pressure_level: 1,
            discard_pages: 7,
            ..Default::default()
        });
        assert!(l.contains("pages stored 42"), "{l}");
        assert!(l.contains("ratio 3.00x"), "{l}");
        assert!(l.contains("25.0%"), "{l}");
        assert!(l.contains("pressure low"), "{l}");
        assert!(l.contains("discards 7 pages"), "{l}");
    }
}
