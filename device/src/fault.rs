// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Fault injection for tests of the guest driver: `vcram-device --fault FAULT` (repeatable).
//!
//! | FAULT | what the device does |
//! | --- | --- |
//! | `drop-requests-after=N` | answers the first N requests of each frontend connection, then takes every further request off the requestq and neither carries it out nor answers it (a device that stopped answering; 0: from the first) |
//! | `window-delay-ms=N` | reports the window (config `status` WINDOW_OK, `window_base`, `window_size`) only N ms after it found it |
//! | `nominate-empty=N` | answers the first N NOMINATE requests of each frontend connection with no entry (nothing worth moving), as a device whose costly pages are all busy would; the later ones as usual |
//! | `early-events` | queues five events as soon as it finds the window, before it reports it: OVERFLOW of the window's first page (valid), three malformed ones (unknown type 99, PRESSURE level 7, OVERFLOW one page past the window) and PRESSURE NORMAL (valid) |
//!
//! Everything here is per frontend connection (one [`FaultState`] per device instance).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::warn;

use crate::protocol::{VcramEvent, VCRAM_EVT_OVERFLOW, VCRAM_EVT_PRESSURE};

/// The names `--fault` accepts, for messages.
pub const FAULT_NAMES: &str =
    "drop-requests-after=N, window-delay-ms=N, nominate-empty=N, early-events";

/// One `--fault` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    DropRequestsAfter(u64),
    WindowDelayMs(u64),
    NominateEmpty(u64),
    EarlyEvents,
}

/// A `--fault` value that is not one of [`FAULT_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("unknown fault {0:?} (known: {FAULT_NAMES})")]
    Unknown(String),
    #[error("fault {0} needs a value: {0}=N")]
    MissingValue(&'static str),
    #[error("fault {0} takes no value")]
    UnexpectedValue(&'static str),
    #[error("fault {name}: bad number {value:?}: {reason}")]
    BadNumber {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("fault {0} given twice")]
    Duplicate(&'static str),
}

fn value(name: &'static str, v: Option<&str>) -> Result<u64, FaultError> {
    let v = v.ok_or(FaultError::MissingValue(name))?;
    v.trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| FaultError::BadNumber {
            name,
            value: v.to_string(),
            reason: e.to_string(),
        })
}

/// Parses one `--fault` value (clap's value parser).
pub fn parse_fault(s: &str) -> Result<Fault, FaultError> {
    let (name, v) = match s.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v)),
        None => (s.trim(), None),
    };
    match name {
        "drop-requests-after" => Ok(Fault::DropRequestsAfter(value("drop-requests-after", v)?)),
        "window-delay-ms" => Ok(Fault::WindowDelayMs(value("window-delay-ms", v)?)),
        "nominate-empty" => Ok(Fault::NominateEmpty(value("nominate-empty", v)?)),
        "early-events" => match v {
            None => Ok(Fault::EarlyEvents),
            Some(_) => Err(FaultError::UnexpectedValue("early-events")),
        },
        _ => Err(FaultError::Unknown(s.to_string())),
    }
}

/// The faults of a device, from every `--fault` option.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub drop_requests_after: Option<u64>,
    pub window_delay_ms: Option<u64>,
    pub nominate_empty: Option<u64>,
    pub early_events: bool,
}

impl FaultPlan {
    /// Combines `--fault` options; each fault at most once.
    pub fn new(faults: &[Fault]) -> Result<FaultPlan, FaultError> {
        let mut p = FaultPlan::default();
        for f in faults {
            match *f {
                Fault::DropRequestsAfter(n) => {
                    if p.drop_requests_after.replace(n).is_some() {
                        return Err(FaultError::Duplicate("drop-requests-after"));
                    }
                }
                Fault::WindowDelayMs(n) => {
                    if p.window_delay_ms.replace(n).is_some() {
                        return Err(FaultError::Duplicate("window-delay-ms"));
                    }
                }
                Fault::NominateEmpty(n) => {
                    if p.nominate_empty.replace(n).is_some() {
                        return Err(FaultError::Duplicate("nominate-empty"));
                    }
                }
                Fault::EarlyEvents => {
                    if std::mem::replace(&mut p.early_events, true) {
                        return Err(FaultError::Duplicate("early-events"));
                    }
                }
            }
        }
        Ok(p)
    }

    pub fn is_empty(&self) -> bool {
        *self == FaultPlan::default()
    }
}

/// The faults of one device instance and what they have done so far.
#[derive(Debug, Default)]
pub struct FaultState {
    plan: FaultPlan,
    requests: AtomicU64,
    /// Requests taken off the queue and never answered.
    pub dropped: AtomicU64,
    nominations: AtomicU64,
    /// NOMINATE requests answered empty by `nominate-empty`.
    pub emptied: AtomicU64,
    window_found: Mutex<Option<Instant>>,
}

impl FaultState {
    pub fn new(plan: FaultPlan) -> FaultState {
        FaultState {
            plan,
            ..Default::default()
        }
    }

    /// A request was taken off the requestq: true if it is to be dropped (neither carried out
    /// nor answered).
    pub fn drop_request(&self) -> bool {
        let Some(after) = self.plan.drop_requests_after else {
            return false;
        };
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        if n < after {
            return false;
        }
        if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            warn!("fault drop-requests-after={after}: request {} and every later one is dropped unanswered", n + 1);
        }
        true
    }

    /// A NOMINATE is to be answered: true if `nominate-empty` makes it an empty answer.
    pub fn empty_nomination(&self) -> bool {
        let Some(n) = self.plan.nominate_empty else {
            return false;
        };
        if self.nominations.fetch_add(1, Ordering::Relaxed) >= n {
            return false;
        }
        if self.emptied.fetch_add(1, Ordering::Relaxed) == 0 {
            warn!("fault nominate-empty={n}: the first {n} NOMINATE requests are answered with no entry");
        }
        true
    }

    /// The device found its window (once per instance). Returns the events that
    /// `early-events` queues (without sequence numbers), empty without that fault.
    pub fn window_found(&self, base: u64, size: u64) -> Vec<VcramEvent> {
        let mut found = self.window_found.lock().unwrap_or_else(|e| e.into_inner());
        if found.is_some() {
            return Vec::new();
        }
        *found = Some(Instant::now());
        if !self.plan.early_events {
            return Vec::new();
        }
        let ev = |t: u32, level: u32, addr: u64, npages: u32| VcramEvent {
            event_type: t.into(),
            level: level.into(),
            addr: addr.into(),
            npages: npages.into(),
            ..Default::default()
        };
        warn!("fault early-events: 2 valid and 3 malformed events queued before the window is reported");
        vec![
            ev(VCRAM_EVT_OVERFLOW, 0, base, 1),
            ev(99, 0, 0, 0),
            ev(VCRAM_EVT_PRESSURE, 7, 0, 0),
            ev(VCRAM_EVT_OVERFLOW, 0, base + size, 1),
            ev(VCRAM_EVT_PRESSURE, 0, 0, 0),
        ]
    }

    /// True while `window-delay-ms` hides a window that was found.
    pub fn window_hidden(&self) -> bool {
        let Some(ms) = self.plan.window_delay_ms else {
            return false;
        };
        match *self.window_found.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(t) => t.elapsed() < Duration::from_millis(ms),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault_and_refuses_bad_ones() {
        assert_eq!(
            parse_fault("drop-requests-after=3"),
            Ok(Fault::DropRequestsAfter(3))
        );
        assert_eq!(
            parse_fault("window-delay-ms=1500"),
            Ok(Fault::WindowDelayMs(1500))
        );
        assert_eq!(parse_fault("early-events"), Ok(Fault::EarlyEvents));
        assert_eq!(
            parse_fault("drop-requests-after"),
            Err(FaultError::MissingValue("drop-requests-after"))
        );
        assert!(matches!(
            parse_fault("drop-requests-after=-1"),
            Err(FaultError::BadNumber { .. })
        ));
        assert!(matches!(
            parse_fault("window-delay-ms=soon"),
            Err(FaultError::BadNumber { .. })
        ));
        assert_eq!(
            parse_fault("early-events=1"),
            Err(FaultError::UnexpectedValue("early-events"))
        );
        let e = parse_fault("crash").unwrap_err();
        assert_eq!(e, FaultError::Unknown("crash".into()));
        assert!(e.to_string().contains(FAULT_NAMES), "{e}");
        assert_eq!(
            FaultPlan::new(&[Fault::EarlyEvents, Fault::EarlyEvents]),
            Err(FaultError::Duplicate("early-events"))
        );
        assert_eq!(
            FaultPlan::new(&[Fault::DropRequestsAfter(1), Fault::DropRequestsAfter(2)]),
            Err(FaultError::Duplicate("drop-requests-after"))
        );
        assert!(FaultPlan::new(&[]).unwrap().is_empty());
    }

    #[test]
    fn drops_requests_after_n() {
        let f = FaultState::new(FaultPlan::new(&[Fault::DropRequestsAfter(2)]).unwrap());
        let drops: Vec<bool> = (0..5).map(|_| f.drop_request()).collect();
        assert_eq!(drops, [false, false, true, true, true]);
        assert_eq!(f.dropped.load(Ordering::Relaxed), 3);
        let none = FaultState::new(FaultPlan::default());
        assert!((0..100).all(|_| !none.drop_request()));
    }

    #[test]
    fn empties_the_first_n_nominations() {
        assert_eq!(parse_fault("nominate-empty=2"), Ok(Fault::NominateEmpty(2)));
        assert_eq!(
            parse_fault("nominate-empty"),
            Err(FaultError::MissingValue("nominate-empty"))
        );
        assert!(matches!(
            parse_fault("nominate-empty=x"),
            Err(FaultError::BadNumber { .. })
        ));
        assert_eq!(
            FaultPlan::new(&[Fault::NominateEmpty(1), Fault::NominateEmpty(1)]),
            Err(FaultError::Duplicate("nominate-empty"))
        );
        let f = FaultState::new(FaultPlan::new(&[Fault::NominateEmpty(2)]).unwrap());
        let e: Vec<bool> = (0..4).map(|_| f.empty_nomination()).collect();
        assert_eq!(e, [true, true, false, false]);
        assert_eq!(f.emptied.load(Ordering::Relaxed), 2);
        let none = FaultState::new(FaultPlan::default());
        assert!((0..10).all(|_| !none.empty_nomination()));
    }

    #[test]
    fn hides_the_window_for_the_delay() {
        let f = FaultState::new(FaultPlan::new(&[Fault::WindowDelayMs(150)]).unwrap());
        assert!(!f.window_hidden(), "nothing found yet, nothing to hide");
        assert!(f.window_found(1 << 32, 1 << 30).is_empty());
        assert!(f.window_hidden());
        std::thread::sleep(Duration::from_millis(200));
        assert!(!f.window_hidden());
        let none = FaultState::new(FaultPlan::default());
        none.window_found(0, 4096);
        assert!(!none.window_hidden());
    }

    #[test]
    fn early_events_once_per_instance() {
        let f = FaultState::new(FaultPlan::new(&[Fault::EarlyEvents]).unwrap());
        let evs = f.window_found(1 << 32, 1 << 30);
        let kinds: Vec<(u32, u32, u64, u32)> = evs
            .iter()
            .map(|e| {
                (
                    u32::from(e.event_type),
                    u32::from(e.level),
                    u64::from(e.addr),
                    u32::from(e.npages),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (VCRAM_EVT_OVERFLOW, 0, 1 << 32, 1),
                (99, 0, 0, 0),
                (VCRAM_EVT_PRESSURE, 7, 0, 0),
                (VCRAM_EVT_OVERFLOW, 0, (1 << 32) + (1 << 30), 1),
                (VCRAM_EVT_PRESSURE, 0, 0, 0),
            ]
        );
        assert!(f.window_found(1 << 32, 1 << 30).is_empty());
    }
}
