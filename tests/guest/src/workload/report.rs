// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Phase results, printed as KTAP (one test case per phase) or gathered
//! into one JSON object.

use super::json::Json;
use super::signals;
use crate::ktap::{Ktap, Outcome};

/// The phases, in order; each gives exactly one KTAP test case.
pub const PHASES: [&str; 10] = [
    "alloc_bind",
    "fill",
    "verify_after_write",
    "placement",
    "migrate",
    "verify_after_migrate",
    "verify_after_scan",
    "bench",
    "free",
    "reuse_zero",
];

/// One phase's result.
#[derive(Debug, Clone)]
pub struct PhaseRecord {
    pub name: &'static str,
    pub outcome: Outcome,
    /// Wall time of the phase.
    pub ms: Option<f64>,
    /// Bytes the phase went through (for MB/s).
    pub bytes: Option<u64>,
    /// Details (also shown as KTAP diagnostics).
    pub details: Vec<(String, Json)>,
    /// Free-form diagnostics.
    pub notes: Vec<String>,
}

impl PhaseRecord {
    pub fn new(name: &'static str) -> Self {
        PhaseRecord {
            name,
            outcome: Outcome::Pass,
            ms: None,
            bytes: None,
            details: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn skip(name: &'static str, why: &str) -> Self {
        let mut r = PhaseRecord::new(name);
        r.outcome = Outcome::Skip(why.to_string());
        r
    }

    /// Records a failure (the first reason is kept as the outcome; later
    /// ones become notes).
    pub fn fail(&mut self, why: impl Into<String>) {
        let why = why.into();
        match self.outcome {
            Outcome::Fail(_) => self.notes.push(why),
            _ => self.outcome = Outcome::Fail(why),
        }
    }

    pub fn detail(&mut self, key: &str, v: impl Into<Json>) {
        self.details.push((key.to_string(), v.into()));
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    pub fn passed(&self) -> bool {
        !matches!(self.outcome, Outcome::Fail(_))
    }

    /// Decimal MB (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> Option<f64> {
        let (ms, b) = (self.ms?, self.bytes?);
        (ms > 0.0).then(|| b as f64 / 1e6 / (ms / 1e3))
    }

    pub fn status(&self) -> &'static str {
        match self.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Skip(_) => "skip",
        }
    }

    /// The KTAP diagnostic lines of this phase.
    pub fn diag_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(ms) = self.ms {
            let mut l = format!("{}: {ms:.1} ms", self.name);
            if let (Some(b), Some(r)) = (self.bytes, self.mb_per_s()) {
                l.push_str(&format!(", {:.1} MiB, {r:.1} MB/s", b as f64 / 1048576.0));
            }
            out.push(l);
        }
        if !self.details.is_empty() {
            let kv: Vec<String> = self
                .details
                .iter()
                .map(|(k, v)| match v {
                    Json::Str(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect();
            out.push(format!("{}: {}", self.name, kv.join(" ")));
        }
        out.extend(self.notes.iter().map(|n| format!("{}: {n}", self.name)));
        out
    }

    pub fn to_json(&self) -> Json {
        let mut o = Json::obj([
            ("name", Json::str(self.name)),
            ("status", Json::str(self.status())),
        ]);
        match &self.outcome {
            Outcome::Fail(w) | Outcome::Skip(w) => o.push("reason", Json::str(w.clone())),
            Outcome::Pass => {}
        }
        o.push("ms", self.ms.into());
        o.push("bytes", self.bytes.into());
        o.push("mb_per_s", self.mb_per_s().into());
        for (k, v) in &self.details {
            o.push(k, v.clone());
        }
        if !self.notes.is_empty() {
            o.push("notes", self.notes.clone().into());
        }
        o
    }
}

/// Prints or gathers the phase results.
pub struct Reporter {
    ktap: Option<Ktap>,
    pub records: Vec<PhaseRecord>,
    pub notes: Vec<String>,
    failed: usize,
}

impl Reporter {
    /// KTAP prints its header now; JSON prints everything at the end.
    pub fn new(json: bool) -> Reporter {
        signals::set_format_json(json);
        signals::set_counts(0, 0);
        signals::set_phase(0);
        Reporter {
            ktap: (!json).then(|| Ktap::new(PHASES.len())),
            records: Vec::new(),
            notes: Vec::new(),
            failed: 0,
        }
    }

    /// A general diagnostic.
    pub fn diag(&mut self, msg: &str) {
        match &self.ktap {
            Some(k) => k.diag(msg),
            None => self.notes.push(msg.to_string()),
        }
    }

    /// The phase that runs next (for the SIGBUS report).
    pub fn next_phase(&self) -> &'static str {
        PHASES.get(self.records.len()).copied().unwrap_or("done")
    }

    /// Records the next phase's result; phases must come in `PHASES` order.
    pub fn record(&mut self, rec: PhaseRecord) {
        assert_eq!(rec.name, self.next_phase(), "phases out of order");
        if !rec.passed() {
            self.failed += 1;
        }
        if let Some(k) = &mut self.ktap {
            for l in rec.diag_lines() {
                k.diag(&l);
            }
            k.result(rec.name, rec.outcome.clone());
        }
        self.records.push(rec);
        signals::set_counts(self.records.len(), self.failed);
        signals::set_phase(self.records.len());
    }

    /// Skips every phase not yet recorded.
    pub fn skip_rest(&mut self, why: &str) {
        while self.records.len() < PHASES.len() {
            let name = self.next_phase();
            self.record(PhaseRecord::skip(name, why));
        }
    }

    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.records.len() == PHASES.len()
    }

    pub fn get(&self, name: &str) -> Option<&PhaseRecord> {
        self.records.iter().find(|r| r.name == name)
    }

    /// Prints the end of the report; `summary` is a JSON object whose
    /// fields head the JSON report. Returns nothing: the caller decides the
    /// exit code (given here for the JSON report).
    pub fn finish(self, summary: Json, exit_code: i32) {
        match self.ktap {
            Some(k) => {
                let _ = k.finish();
            }
            None => {
                let mut o = match summary {
                    Json::Obj(v) => Json::Obj(v),
                    other => Json::obj([("summary", other)]),
                };
                o.push("ok", Json::Bool(exit_code == 0));
                o.push("exit_code", Json::Int(exit_code as i64));
                o.push(
                    "phases",
                    Json::Arr(self.records.iter().map(|r| r.to_json()).collect()),
                );
                o.push("notes", self.notes.into());
                println!("{o}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_record_output() {
        let mut r = PhaseRecord::new("fill");
        r.ms = Some(250.0);
        r.bytes = Some(100_000_000);
        r.detail("pages", 24414u64);
        r.detail("pattern", "mix:2");
        assert_eq!(r.mb_per_s(), Some(400.0));
        assert_eq!(
            r.diag_lines(),
            vec![
                "fill: 250.0 ms, 95.4 MiB, 400.0 MB/s".to_string(),
                "fill: pages=24414 pattern=mix:2".to_string()
            ]
        );
        assert_eq!(
            r.to_json().to_string(),
            r#"{"name":"fill","status":"pass","ms":250,"bytes":100000000,"mb_per_s":400,"pages":24414,"pattern":"mix:2"}"#
        );
        r.fail("2 pages differ");
        r.fail("and more");
        assert!(!r.passed());
        assert_eq!(r.status(), "fail");
        assert!(r
            .to_json()
            .to_string()
            .contains(r#""reason":"2 pages differ""#));
        assert!(r.to_json().to_string().contains(r#""notes":["and more"]"#));
        let s = PhaseRecord::skip("migrate", "not requested");
        assert_eq!(
            s.to_json().to_string(),
            r#"{"name":"migrate","status":"skip","reason":"not requested","ms":null,"bytes":null,"mb_per_s":null}"#
        );
    }

    #[test]
    #[should_panic(expected = "phases out of order")]
    fn order_is_enforced() {
        let mut rep = Reporter::new(true);
        rep.record(PhaseRecord::new("fill"));
    }

    #[test]
    fn counts() {
        let mut rep = Reporter::new(true);
        rep.record(PhaseRecord::new("alloc_bind"));
        let mut f = PhaseRecord::new("fill");
        f.fail("x");
        rep.record(f);
        rep.skip_rest("stopped");
        assert_eq!(rep.records.len(), PHASES.len());
        assert!(!rep.all_passed());
        assert_eq!(rep.get("reuse_zero").unwrap().status(), "skip");
    }
}
