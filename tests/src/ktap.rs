// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! A parser for the KTAP output of in-guest tests.
//!
//! Only the top level of a document is interpreted; indented (nested) lines
//! are kept as diagnostics of the case that follows them.

/// One test case line (`ok N name` / `not ok N name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub number: usize,
    pub name: String,
    pub ok: bool,
    /// The reason after `# SKIP`, when the case was skipped.
    pub skip: Option<String>,
    /// Diagnostic (`#`) and nested lines seen before this case.
    pub diagnostics: Vec<String>,
}

/// A parsed KTAP document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub plan: Option<usize>,
    pub cases: Vec<Case>,
}

impl Report {
    /// Names of cases that did not pass (skips count as passing).
    pub fn failures(&self) -> Vec<&Case> {
        self.cases.iter().filter(|c| !c.ok).collect()
    }

    /// The case named `name`.
    pub fn case(&self, name: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.name == name)
    }

    /// Checks that every planned case ran and passed; the error lists what did not.
    pub fn all_passed(&self) -> Result<(), String> {
        let plan = self.plan.ok_or("no KTAP plan line (1..N) found")?;
        let mut problems = Vec::new();
        if self.cases.len() != plan {
            problems.push(format!(
                "plan was 1..{plan} but {} cases ran",
                self.cases.len()
            ));
        }
        for (i, c) in self.cases.iter().enumerate() {
            if c.number != i + 1 {
                problems.push(format!("case {} numbered {}", i + 1, c.number));
            }
            if !c.ok {
                problems.push(format!(
                    "not ok {} {}: {}",
                    c.number,
                    c.name,
                    c.diagnostics.join(" | ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// Parses the first KTAP document found in `text` (e.g. a whole serial log).
///
/// Lines before `KTAP version 1` (or `TAP version 13`) are ignored; the
/// document ends at the first top-level line that is not KTAP once all
/// planned cases were seen. Kernel console noise is tolerated by stripping
/// a leading `[   12.345678] ` timestamp.
pub fn parse(text: &str) -> Option<Report> {
    let mut lines = text.lines().map(strip_timestamp);
    lines.find(|l| {
        let l = l.trim_end();
        l == "KTAP version 1" || l == "TAP version 13" || l == "TAP version 14"
    })?;
    let mut report = Report::default();
    let mut pending = Vec::new();
    for line in lines {
        let line = line.trim_end();
        if let Some(plan) = line.strip_prefix("1..") {
            if report.plan.is_none() {
                report.plan = plan.trim().parse().ok();
            }
            continue;
        }
        if let Some(case) = parse_case(line) {
            report.cases.push(Case {
                diagnostics: std::mem::take(&mut pending),
                ..case
            });
            continue;
        }
        if let Some(d) = line.strip_prefix('#') {
            pending.push(d.trim().to_string());
        } else if line.starts_with(' ') || line.starts_with('\t') {
            pending.push(line.trim().to_string());
        } else if report.plan.is_some_and(|p| report.cases.len() >= p) {
            break;
        }
    }
    Some(report)
}

fn strip_timestamp(line: &str) -> &str {
    let t = line.trim_start_matches('\r');
    if let Some(rest) = t.strip_prefix('[') {
        if let Some((stamp, after)) = rest.split_once("] ") {
            if stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.') {
                return after;
            }
        }
    }
    t
}

fn parse_case(line: &str) -> Option<Case> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("ok ") {
        (true, r)
    } else if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else {
        return None;
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number = num.parse().ok()?;
    let (name, directive) = match rest.split_once('#') {
        Some((n, d)) => (n.trim(), Some(d.trim())),
        None => (rest.trim(), None),
    };
    let name = name.trim_start_matches("- ").to_string();
    let skip = directive.and_then(|d| {
        let upper = d.to_ascii_uppercase();
        upper
            .starts_with("SKIP")
            .then(|| d.get(4..).unwrap_or("").trim().to_string())
    });
    Some(Case {
        number,
        name,
        ok,
        skip,
        diagnostics: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
[    1.234] random kernel line
vcram-init: ready
KTAP version 1
1..3
# window base=0x100000000
ok 1 first
[    2.000000] # a timestamped diagnostic
not ok 2 second
ok 3 third # SKIP no device
# totals: pass:2 fail:1 missing:0
vcram-exit: 1
";

    #[test]
    fn parses_cases_plan_and_diagnostics() {
        let r = parse(DOC).unwrap();
        assert_eq!(r.plan, Some(3));
        assert_eq!(r.cases.len(), 3);
        assert!(r.cases[0].ok);
        assert_eq!(r.cases[0].diagnostics, vec!["window base=0x100000000"]);
        assert!(!r.cases[1].ok);
        assert_eq!(r.cases[1].diagnostics, vec!["a timestamped diagnostic"]);
        assert_eq!(r.cases[2].skip.as_deref(), Some("no device"));
        assert_eq!(r.failures().len(), 1);
        let err = r.all_passed().unwrap_err();
        assert!(err.contains("not ok 2 second"), "{err}");
    }

    #[test]
    fn missing_cases_fail_the_plan() {
        let r = parse("KTAP version 1\n1..2\nok 1 a\nvcram-exit: 0\n").unwrap();
        assert!(r.all_passed().unwrap_err().contains("1..2 but 1"));
    }

    #[test]
    fn no_document() {
        assert!(parse("just a boot log\n").is_none());
        let r = parse("KTAP version 1\nok 1 a\n").unwrap();
        assert!(r.all_passed().unwrap_err().contains("no KTAP plan"));
    }

    #[test]
    fn all_pass() {
        let r = parse("KTAP version 1\n1..2\nok 1 a\nok 2 - b\n").unwrap();
        assert_eq!(r.case("b").map(|c| c.number), Some(2));
        r.all_passed().unwrap();
    }
}
