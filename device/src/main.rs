// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
use clap::Parser;
use log::{error, info};

use vcram_device::cli::Cli;

fn main() {
    // virtio_queue logs every malformed ring access at error level, unthrottled; the device
    // reports those conditions itself, rate-limited.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,virtio_queue=off"),
    )
    .init();
    let cli = Cli::parse();
    let virtio_id = cli.virtio_id;
    let opts = match cli.into_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vcram-device: {e}");
            std::process::exit(2);
        }
    };
    info!(
        "vcram-device {}: window {}, node {}, virtio-id {} (set on the QEMU side), zstd level {}",
        env!("CARGO_PKG_VERSION"),
        opts.device.window.describe(),
        opts.device.node,
        virtio_id,
        opts.device.level
    );
    if let Err(e) = vcram_device::daemon::run(opts) {
        error!("{e}");
        std::process::exit(1);
    }
}
