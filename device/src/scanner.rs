// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! The background scanner: finds pages the guest wrote directly (without COMMIT) by comparing
//! each page with what was last stored (a hash, or the fill word) and recompresses those that
//! changed. One pass per interval; the work is in [`Device::scan_pass`].

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::device::Device;

pub fn spawn(dev: Arc<Device>) -> std::io::Result<Option<JoinHandle<()>>> {
    let interval = dev.opts.scan_interval_ms;
    if interval == 0 {
        return Ok(None);
    }
    let h = std::thread::Builder::new()
        .name("vcram-scanner".into())
        .spawn(move || {
            while !dev.wait_stop(interval) {
                dev.scan_pass();
            }
        })?;
    Ok(Some(h))
}
