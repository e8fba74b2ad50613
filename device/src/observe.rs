//! Options of the daemon's observers: the timeline ring ([`crate::timeline`]) and the
//! Prometheus exporter ([`crate::metrics`]). Flattened into the command line.

use std::net::SocketAddr;

use clap::Args;

use crate::control::Current;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ObserveOptions {
    /// Serve Prometheus metrics over HTTP at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9477).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Interval of the timeline's samples (`vcramctl record`), milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub timeline_interval_ms: u64,
    /// Samples the timeline keeps (a ring buffer; the oldest go first).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub timeline_samples: u64,
}

impl Default for ObserveOptions {
    fn default() -> Self {
        ObserveOptions {
            metrics_listen: None,
            timeline_interval_ms: 1000,
            timeline_samples: 3600,
        }
    }
}

/// Start the timeline and, when asked for, the metrics listener.
pub fn start(o: &ObserveOptions, current: &Current) -> Result<(), String> {
    if let Some(addr) = o.metrics_listen {
        crate::metrics::serve(addr, current.clone())?;
    }
    crate::timeline::start(
        current.clone(),
        o.timeline_interval_ms,
        o.timeline_samples as usize,
    )
}
