// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! The daemon loop: a fresh device and backend for every frontend connection.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use log::{error, info};
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::backend::{VcramBackend, NOTIFY_EVENT};
use crate::control;
use crate::device::{Device, DeviceOptions};
use crate::scanner;

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub socket: PathBuf,
    pub control_socket: Option<PathBuf>,
    pub device: DeviceOptions,
    /// Serve one connection, then exit.
    pub once: bool,
}

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on control socket: {0}")]
    ControlSocket(control::ListenError),
    #[error("cannot listen on vhost-user socket: {0}")]
    VhostSocket(control::ListenError),
    #[error("cannot listen on vhost-user socket {}: {source}", path.display())]
    VhostListen {
        path: PathBuf,
        source: vhost::vhost_user::Error,
    },
    #[error("cannot create device: {0}")]
    Device(std::io::Error),
    #[error("cannot create vhost-user daemon: {0}")]
    VhostDaemon(vhost_user_backend::Error),
    #[error("vhost-user daemon has no worker thread")]
    NoWorker,
    #[error("cannot register the notify eventfd: {0}")]
    Notify(std::io::Error),
    #[error("cannot start scanner: {0}")]
    Scanner(std::io::Error),
}

pub fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    let current: control::Current = Arc::new(Mutex::new(control::Sessions::default()));
    if let Some(p) = &opts.control_socket {
        control::serve(p, current.clone()).map_err(DaemonError::ControlSocket)?;
        info!("control socket at {}", p.display());
    }
    let mut session = 0u64;
    loop {
        session += 1;
        let dev = Arc::new(Device::new(opts.device.clone()).map_err(DaemonError::Device)?);
        dev.session
            .store(session, std::sync::atomic::Ordering::Relaxed);
        current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rotate(dev.clone());
        let backend = Arc::new(VcramBackend::new(dev.clone()));
        let mut daemon = VhostUserDaemon::new(
            "vcram-device".to_string(),
            backend,
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(DaemonError::VhostDaemon)?;
        {
            let handlers = daemon.get_epoll_handlers();
            let h = handlers.first().ok_or(DaemonError::NoWorker)?;
            h.register_listener(
                dev.notify.as_raw_fd(),
                EventSet::IN,
                u64::from(NOTIFY_EVENT),
            )
            .map_err(DaemonError::Notify)?;
        }
        let scan = scanner::spawn(dev.clone()).map_err(DaemonError::Scanner)?;
        // vhost's listener unlinks whatever is at the path: only let it replace a stale socket.
        control::clear_stale_socket(&opts.socket).map_err(DaemonError::VhostSocket)?;
        info!("waiting for a frontend on {}", opts.socket.display());
        let res = daemon.serve(&opts.socket);
        dev.request_stop();
        if let Some(s) = scan {
            let _ = s.join();
        }
        // Drop the vhost-user handler and its worker (they hold the guest memory mappings),
        // then the device's own reference to guest memory; its statistics stay readable.
        drop(daemon);
        dev.disconnect();
        match res {
            Ok(()) => info!("frontend disconnected"),
            Err(vhost_user_backend::Error::CreateVhostUserListener(e)) => {
                return Err(DaemonError::VhostListen {
                    path: opts.socket.clone(),
                    source: e,
                });
            }
            Err(e) => error!("frontend connection ended: {e}"),
        }
        if opts.once {
            return Ok(());
        }
        info!("starting a fresh device for the next connection");
    }
}
