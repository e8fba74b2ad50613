// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Device logic, independent of vhost: page store, compression, image arena.

pub mod arena;
pub mod compress;
pub mod store;

pub use store::{Counters, ModelEvent, PageState, Scanned, Store, StoreConfig, Stored};
