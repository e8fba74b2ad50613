// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Shared helpers for the programs that run inside the vcram test guest.
//!
//! They are built statically (`-C target-feature=+crt-static`) and put into
//! the initramfs by `scripts/build-initramfs`; results go to the serial
//! console as KTAP, which the host harness (`vcram-e2e`) parses.

pub mod ktap;
pub mod sysfs;
pub mod workload;
