//! Prometheus exporter: `vcram-device --metrics-listen ADDR:PORT` serves `GET /metrics` in the
//! text exposition format (version 0.0.4).
//!
//! The metrics are generated from the [`Snapshot`] through serde, field by field, so that a field
//! added to the snapshot is exported without anyone listing it here: numbers and booleans
//! become `vcram_<field>` (cumulative fields, listed in [`COUNTERS`], a counter
//! `vcram_<field>_total`, everything else a gauge), maps become one labelled series per key
//! (`vcram_rejects_total{key="..."}`), and the text fields become labels of `vcram_info`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use log::{debug, info, warn};
use serde_json::Value;

use crate::control::Current;
use crate::stats::Snapshot;

/// Snapshot fields that only ever grow while a frontend session lasts (Prometheus counters).
pub const COUNTERS: &[&str] = &[
    "overflow_pages_total",
    "discard_requests",
    "discard_pages",
    "commit_requests",
    "commit_pages",
    "reset_requests",
    "nominate_requests",
    "nominate_limited",
    "nominated_entries",
    "nominated_pages",
    "store_ops",
    "scans",
    "scan_pages",
    "scan_changed_pages",
    "scan_retried_pages",
    "watermark_events",
    "low_events",
    "high_events",
    "normal_events",
    "overflow_events",
    "events_generated",
    "events_delivered",
    "events_lost",
    "events_merged",
    "bad_requests",
    "rejects",
    "unanswerable_requests",
    "bad_event_buffers",
    "device_errors",
];

fn metric_name(field: &str) -> String {
    let mut n = String::from("vcram_");
    n.extend(field.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    if COUNTERS.contains(&field) && !n.ends_with("_total") {
        n.push_str("_total");
    }
    n
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The text exposition of a snapshot: every field of it.
pub fn render(s: &Snapshot) -> String {
    let v = serde_json::to_value(s).unwrap_or(Value::Null);
    let Value::Object(fields) = v else {
        return String::new();
    };
    let mut out = String::new();
    let mut labels = Vec::new();
    for (field, value) in &fields {
        let name = metric_name(field);
        let kind = if COUNTERS.contains(&field.as_str()) {
            "counter"
        } else {
            "gauge"
        };
        match value {
            Value::String(text) => {
                labels.push(format!("{field}=\"{}\"", escape_label(text)));
            }
            Value::Object(map) => {
                out.push_str(&format!(
                    "# HELP {name} vcram-device statistic {field}, by key\n# TYPE {name} {kind}\n"
                ));
                for (k, x) in map {
                    if let Some(n) = number(x) {
                        out.push_str(&format!("{name}{{key=\"{}\"}} {n}\n", escape_label(k)));
                    }
                }
            }
            x => {
                if let Some(n) = number(x) {
                    out.push_str(&format!(
                        "# HELP {name} vcram-device statistic {field}\n# TYPE {name} {kind}\n{name} {n}\n"
                    ));
                }
            }
        }
    }
    out.push_str(
        "# HELP vcram_info vcram-device text statistics as labels\n# TYPE vcram_info gauge\n",
    );
    out.push_str(&format!("vcram_info{{{}}} 1\n", labels.join(",")));
    out
}

/// Bind `addr` now (so that a port in use is an error at start-up) and serve `/metrics` from
/// the device the control socket answers for, on a thread of its own.
pub fn serve(addr: SocketAddr, current: Current) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| format!("--metrics-listen {addr}: cannot listen: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("vcram-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = handle(s, &current) {
                            debug!("metrics connection: {e}");
                        }
                    }
                    Err(e) => {
                        warn!("metrics listener: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    info!("metrics at http://{local}/metrics");
    Ok(local)
}

fn respond(w: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

fn handle(s: TcpStream, current: &Current) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut request = String::new();
    r.read_line(&mut request)?;
    // Read (and ignore) the headers, up to the empty line; bounded.
    let mut n = 0;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() || n > 100 {
            break;
        }
        n += 1;
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let dev = current.lock().unwrap_or_else(|e| e.into_inner()).pick();
            let body = match dev {
                Some(d) => render(&d.snapshot()),
                None => "# no device yet\n".to_string(),
            };
            respond(
                &mut w,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
        }
        ("GET", _) => respond(
            &mut w,
            "404 Not Found",
            "text/plain",
            "vcram-device serves /metrics only\n",
        ),
        _ => respond(
            &mut w,
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics only\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_exported() {
        let s = Snapshot {
            version: "9.9".into(),
            frontend: "conn \"x\"".into(),
            connected: true,
            physical_used: 1234,
            ratio: 2.5,
            discard_pages: 7,
            rejects: [("unsupported".to_string(), 3)].into_iter().collect(),
            ..Default::default()
        };
        let text = render(&s);
        let v = serde_json::to_value(&s).unwrap();
        for (field, value) in v.as_object().unwrap() {
            if value.is_string() {
                assert!(text.contains(&format!("{field}=\"")), "{field} missing");
            } else {
                let name = metric_name(field);
                assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
            }
        }
        assert!(text.contains("\nvcram_physical_used 1234\n"), "{text}");
        assert!(text.contains("\nvcram_ratio 2.5\n"), "{text}");
        assert!(text.contains("\nvcram_connected 1\n"), "{text}");
        assert!(text
            .contains("# TYPE vcram_discard_pages_total counter\nvcram_discard_pages_total 7\n"));
        assert!(text.contains("vcram_rejects_total{key=\"unsupported\"} 3\n"));
        assert!(text.contains("frontend=\"conn \\\"x\\\"\""), "{text}");
        assert!(text.contains("version=\"9.9\""));
        // The counter list names real fields only.
        for c in COUNTERS {
            assert!(
                v.get(*c).is_some(),
                "COUNTERS names {c}, not a snapshot field"
            );
        }
    }
}
