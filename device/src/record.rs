//! `vcramctl record`: copy the daemon's timeline ([`crate::timeline`]) into a CSV file, one row
//! per sample, for a number of seconds or until interrupted (SIGINT, SIGTERM).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::control;
use crate::timeline::Reply;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM end the recording (after one last poll) instead of the process.
pub fn stop_on_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn fetch(socket: &Path, after: u64) -> Result<Reply, String> {
    let line = control::request(socket, &format!("timeline {after}"))
        .map_err(|e| format!("cannot talk to {}: {e}", socket.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("bad reply {line:?}: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!("device: {e}"));
    }
    serde_json::from_value(v).map_err(|e| format!("bad timeline reply: {e}"))
}

/// Record into `out` (created or truncated) for `seconds` (None: until a signal), polling
/// twice per timeline interval. With `history`, the samples the ring already holds come
/// first. Returns the number of rows written.
pub fn record(
    socket: &Path,
    out: &Path,
    seconds: Option<f64>,
    history: bool,
) -> Result<u64, String> {
    let mut first = fetch(socket, 0)?;
    let mut last = 0;
    if !history {
        // Start after the newest sample the ring holds.
        loop {
            last = first.samples.last().map(|s| s.seq).unwrap_or(last);
            if !first.more {
                break;
            }
            first = fetch(socket, last)?;
        }
    }
    let mut w = csv::Writer::from_path(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let poll = Duration::from_millis((first.interval_ms / 2).clamp(10, 1000));
    let start = Instant::now();
    let mut rows = 0u64;
    let mut header_done = false;
    loop {
        let done = STOP.load(Ordering::SeqCst)
            || seconds.is_some_and(|s| start.elapsed().as_secs_f64() >= s);
        // Everything new, in bounded replies.
        loop {
            let r = fetch(socket, last)?;
            if let (Some(f), true) = (r.samples.first(), last > 0) {
                if f.seq > last + 1 {
                    log::warn!(
                        "timeline: {} samples were dropped by the daemon's ring before they could be recorded",
                        f.seq - last - 1
                    );
                }
            }
            for s in &r.samples {
                w.serialize(s)
                    .map_err(|e| format!("{}: {e}", out.display()))?;
                last = s.seq;
                rows += 1;
                header_done = true;
            }
            if !r.more || r.samples.is_empty() {
                break;
            }
        }
        w.flush().map_err(|e| format!("{}: {e}", out.display()))?;
        if done {
            break;
        }
        std::thread::sleep(poll);
    }
    if !header_done {
        // No sample yet: still a CSV with its header, so readers see what is missing.
        drop(w);
        let mut w = csv::Writer::from_path(out).map_err(|e| format!("{}: {e}", out.display()))?;
        w.write_record(header())
            .and_then(|_| w.flush().map_err(csv::Error::from))
            .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(rows)
}

/// The CSV header (the field names of a sample, in order).
pub fn header() -> Vec<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.serialize(crate::timeline::Sample::default());
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect()
}
