// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! In-guest workload for the vcram expander's private node: allocate, bind,
//! fill, verify, migrate, free; KTAP or JSON report. See `--help` and
//! `vcram_guest::workload`.

fn main() {
    let code = vcram_guest::workload::main_with_args(std::env::args().skip(1));
    std::process::exit(code);
}
