// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Host-side harness for vcram's end-to-end tests.
//!
//! It boots the test guest through `scripts/launch` (the same launcher a user
//! runs), hands it a script, and reads back what the guest printed on its
//! serial console: KTAP results ([`ktap`]) and the script's exit status. While
//! a guest runs, [`qmp`] talks to QEMU's monitor.

pub mod device;
pub mod guest;
pub mod ktap;
pub mod qmp;

use std::path::PathBuf;

/// The repository root (the workspace this crate lives in).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}
