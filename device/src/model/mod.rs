//! Device logic, independent of vhost: page store, compression, image arena.

pub mod arena;
pub mod compress;
pub mod store;

pub use store::{Counters, ModelEvent, PageState, Scanned, Store, StoreConfig, Stored};
