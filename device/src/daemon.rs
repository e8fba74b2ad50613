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

pub fn run(opts: DaemonOptions) -> Result<(), String> {
    let current: control::Current = Arc::new(Mutex::new(control::Sessions::default()));
    if let Some(p) = &opts.control_socket {
        control::serve(p, current.clone())
            .map_err(|e| format!("cannot listen on control socket {}: {e}", p.display()))?;
        info!("control socket at {}", p.display());
    }
    let mut session = 0u64;
    loop {
        session += 1;
        let dev = Arc::new(
            Device::new(opts.device.clone()).map_err(|e| format!("cannot create device: {e}"))?,
        );
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
        .map_err(|e| format!("cannot create vhost-user daemon: {e}"))?;
        {
            let handlers = daemon.get_epoll_handlers();
            let h = handlers
                .first()
                .ok_or_else(|| "vhost-user daemon has no worker thread".to_string())?;
            h.register_listener(
                dev.notify.as_raw_fd(),
                EventSet::IN,
                u64::from(NOTIFY_EVENT),
            )
            .map_err(|e| format!("cannot register the notify eventfd: {e}"))?;
        }
        let scan = scanner::spawn(dev.clone()).map_err(|e| format!("cannot start scanner: {e}"))?;
        // vhost's listener unlinks whatever is at the path: only let it replace a stale socket.
        control::clear_stale_socket(&opts.socket)
            .map_err(|e| format!("cannot listen on vhost-user socket: {e}"))?;
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
                return Err(format!(
                    "cannot listen on vhost-user socket {}: {e}",
                    opts.socket.display()
                ));
            }
            Err(e) => error!("frontend connection ended: {e}"),
        }
        if opts.once {
            return Ok(());
        }
        info!("starting a fresh device for the next connection");
    }
}
