// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! vcram-device: a vhost-user backend emulating a compressed-RAM (CXL) memory expander.
//!
//! - [`protocol`]: the wire format shared with the guest driver (see `PROTOCOL.md`).
//! - [`model`]: the page store, compression and image arena (no vhost dependency).
//! - [`request`]: parsing and validation of guest requests.
//! - [`device`]: one device instance; [`backend`]: the vhost-user trait implementation.
//! - [`scanner`], [`control`], [`stats`], [`daemon`], [`cli`].

pub mod backend;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod device;
pub mod events;
pub mod fault;
pub mod metrics;
pub mod model;
pub mod nominate;
pub mod observe;
pub mod plot;
#[cfg(test)]
mod proptests;
pub mod protocol;
pub mod ratelimit;
pub mod record;
pub mod request;
pub mod scanner;
pub mod stats;
#[cfg(test)]
mod testdata;
pub mod timeline;
pub mod window;
