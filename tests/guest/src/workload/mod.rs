// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! `vcram-workload`: the in-guest workload that allocates memory on a NUMA
//! node (normally the private node of the vcram expander), fills it with a
//! pattern of chosen compressibility and checks that it stays intact and in
//! place through migration, device scans, free and reuse.
//!
//! See `args::USAGE` for the command line, `pattern` for what the pages
//! contain, `report` for the output and `run` for the phases.
//!
//! Exit status: 0 every check passed; 1 a check failed (or a syscall
//! failed); 2 usage error; 3 SIGBUS while touching the buffer (or
//! MADV_POPULATE_WRITE failing with EFAULT, its SIGBUS equivalent);
//! 4 ENOMEM while allocating or filling (mmap, MADV_POPULATE_WRITE).
//! When the fill stops early, the later phases check the pages filled so
//! far, and a failure there makes the status 1. An OOM kill (SIGKILL)
//! cannot be reported by the program itself (the kernel's usual answer to
//! a bound allocation that cannot be met, also under MADV_POPULATE_WRITE);
//! `--oom-score-adj` lets a test choose whom the OOM killer takes.

pub mod args;
pub mod bench;
pub mod hash;
pub mod json;
pub mod numa;
pub mod pattern;
pub mod report;
pub mod run;
pub mod signals;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAIL: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_SIGBUS: i32 = signals::EXIT_SIGBUS;
pub const EXIT_ENOMEM: i32 = 4;

/// Runs the program on `args` (without the program name); returns the
/// exit status.
pub fn main_with_args<I, S>(args: I) -> i32
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    match args::parse(args) {
        Ok(args::Parsed::Help) => {
            print!("{}", args::USAGE);
            EXIT_OK
        }
        Ok(args::Parsed::Run(cfg)) => match &cfg.dump {
            Some(path) => run::dump(&cfg, path),
            None => run::run(&cfg),
        },
        Err(e) => {
            eprintln!("vcram-workload: {e}");
            EXIT_USAGE
        }
    }
}
