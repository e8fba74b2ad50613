// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Running the real `vcram-device` daemon next to a guest.

use crate::repo_root;
use serde_json::Value;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The release build of a workspace binary (`scripts/test` builds them first).
pub fn release_binary(name: &str) -> PathBuf {
    let path = repo_root().join("target/release").join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p vcram-device -p vcram-guest` (scripts/test does)",
        path.display()
    );
    path
}

/// A `vcram-device` process with its vhost-user and control sockets.
pub struct Device {
    child: Child,
    dir: PathBuf,
}

impl Device {
    /// Starts the daemon for the launcher's default window (1 GiB at 4 GiB)
    /// with extra options, e.g. `["--physical-size", "96M"]`.
    pub fn start(extra: &[&str]) -> io::Result<Device> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vcram-dev-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let mut args: Vec<String> = vec![
            "--socket".into(),
            dir.join("vhost.sock").display().to_string(),
            "--control-socket".into(),
            dir.join("ctl.sock").display().to_string(),
            "--window-base".into(),
            "0x100000000".into(),
        ];
        if !extra.contains(&"--window-size") {
            args.extend(["--window-size".into(), "1G".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(release_binary("vcram-device"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("device.log"))?)
            .spawn()?;
        let mut dev = Device { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(dev.socket().exists() && dev.control_socket().exists()) {
            if let Some(st) = dev.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "vcram-device exited ({st}): {}",
                    dev.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("vcram-device did not create its sockets"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(dev)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("vhost.sock")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("device.log")).unwrap_or_default()
    }

    /// One control-socket command (`stats`, `scan`, `ping`) and its JSON reply.
    pub fn control(&self, cmd: &str) -> io::Result<Value> {
        control(&self.control_socket(), cmd)
    }

    /// The device's statistics (what `vcramctl stats --json` prints).
    pub fn stats(&self) -> io::Result<Value> {
        self.control("stats")
    }
}

/// Sends one command to a control socket and parses the JSON reply line.
pub fn control(path: &Path, cmd: &str) -> io::Result<Value> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(s, "{cmd}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| io::Error::other(format!("{line:?}: {e}")))
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
