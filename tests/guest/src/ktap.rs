// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! A minimal KTAP (version 1) writer, as used by kernel selftests.

use std::io::Write;

/// Result of one test case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// Writes a KTAP document to stdout, one test case at a time.
pub struct Ktap {
    planned: usize,
    run: usize,
    failed: usize,
}

impl Ktap {
    /// Prints the header and the plan.
    pub fn new(planned: usize) -> Self {
        println!("KTAP version 1");
        println!("1..{planned}");
        let _ = std::io::stdout().flush();
        Ktap {
            planned,
            run: 0,
            failed: 0,
        }
    }

    /// Prints a diagnostic line.
    pub fn diag(&self, msg: &str) {
        for line in msg.lines() {
            println!("# {line}");
        }
    }

    /// Records one result.
    pub fn result(&mut self, name: &str, outcome: Outcome) {
        self.run += 1;
        let name = name.replace(['#', '\n'], " ");
        match outcome {
            Outcome::Pass => println!("ok {} {name}", self.run),
            Outcome::Fail(why) => {
                self.failed += 1;
                self.diag(&why);
                println!("not ok {} {name}", self.run);
            }
            Outcome::Skip(why) => println!("ok {} {name} # SKIP {why}", self.run),
        }
        let _ = std::io::stdout().flush();
    }

    /// Records a check: passes when `cond` holds, otherwise fails with `why`.
    pub fn check(&mut self, name: &str, cond: bool, why: impl FnOnce() -> String) {
        let outcome = if cond {
            Outcome::Pass
        } else {
            Outcome::Fail(why())
        };
        self.result(name, outcome);
    }

    /// Prints the totals line and returns the process exit code.
    pub fn finish(self) -> i32 {
        let missing = self.planned.saturating_sub(self.run);
        println!(
            "# totals: pass:{} fail:{} missing:{}",
            self.run - self.failed,
            self.failed,
            missing
        );
        i32::from(self.failed > 0 || missing > 0 || self.run > self.planned)
    }
}
