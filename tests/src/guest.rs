// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Booting the test guest through `scripts/launch`.

use crate::{ktap, qmp::Qmp, repo_root};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Guests run one at a time: the machine has two cores and TCG is slow.
static GUEST_LOCK: Mutex<()> = Mutex::new(());

fn guest_lock() -> MutexGuard<'static, ()> {
    GUEST_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh directory for one launch (sockets, logs, the guest script).
fn fresh_dir() -> io::Result<PathBuf> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vcram-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Panics with a useful message if `scripts/setup` has not been run.
pub fn require_platform() {
    let env = repo_root().join("images/out/platform.env");
    assert!(
        env.exists(),
        "{} is missing: run scripts/setup first (the end-to-end tests boot the real guest)",
        env.display()
    );
}

/// How to launch the guest.
#[derive(Debug, Clone)]
pub struct Launch {
    args: Vec<String>,
    timeout: u64,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            args: Vec::new(),
            timeout: 300,
        }
    }
}

impl Launch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a raw `scripts/launch` argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn window_size(self, size: &str) -> Self {
        self.arg("--window-size").arg(size)
    }

    pub fn device_socket(self, path: &Path) -> Self {
        self.arg("--device-socket").arg(path.display().to_string())
    }

    pub fn timeout(mut self, secs: u64) -> Self {
        self.timeout = secs;
        self
    }

    fn command(&self, dir: &Path, script: &str) -> io::Result<Command> {
        let script_path = dir.join("guest-script.sh");
        fs::write(&script_path, script)?;
        let mut cmd = Command::new(repo_root().join("scripts/launch"));
        cmd.arg("--script")
            .arg(&script_path)
            .arg("--run-dir")
            .arg(dir)
            .arg("--keep")
            .arg("--quiet")
            .arg("--timeout")
            .arg(self.timeout.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("launch.log"))?);
        Ok(cmd)
    }

    /// Boots the guest, runs `script` in it and waits until it powers off.
    pub fn run_script(&self, script: &str) -> io::Result<Run> {
        let _guard = guest_lock();
        let dir = fresh_dir()?;
        let start = Instant::now();
        let status = self.command(&dir, script)?.status()?;
        let run = Run::collect(&dir, status, start.elapsed());
        let _ = fs::remove_dir_all(&dir);
        Ok(run)
    }

    /// Boots the guest with `script` and returns while it runs.
    pub fn spawn_script(&self, script: &str) -> io::Result<Running> {
        let guard = guest_lock();
        let dir = fresh_dir()?;
        let child = self.command(&dir, script)?.spawn()?;
        Ok(Running {
            child: Some(child),
            dir,
            start: Instant::now(),
            _guard: guard,
        })
    }
}

/// What a finished launch left behind.
#[derive(Debug)]
pub struct Run {
    /// The launcher's exit status (the guest script's status in script mode).
    pub status: ExitStatus,
    /// Everything the guest printed on its serial console.
    pub serial: String,
    /// What the launcher printed (its `vcram-launch:` lines and errors).
    pub launcher: String,
    pub elapsed: Duration,
    /// Where the launch kept its sockets and logs (removed once done).
    pub run_dir: PathBuf,
}

impl Run {
    fn collect(dir: &Path, status: ExitStatus, elapsed: Duration) -> Run {
        Run {
            status,
            serial: fs::read_to_string(dir.join("serial.log")).unwrap_or_default(),
            launcher: fs::read_to_string(dir.join("launch.log")).unwrap_or_default(),
            elapsed,
            run_dir: dir.to_path_buf(),
        }
    }

    /// The KTAP report the guest printed.
    pub fn ktap(&self) -> Option<ktap::Report> {
        ktap::parse(&self.serial)
    }

    /// `key=value` facts from the launcher's `vcram-launch:` lines.
    pub fn info(&self) -> HashMap<String, String> {
        launcher_info(&self.launcher)
    }

    /// The KTAP report, which must have exactly `cases` cases, all passed,
    /// and a zero exit status; panics with the whole transcript otherwise.
    pub fn expect_ktap_passed(&self, cases: usize) -> ktap::Report {
        let report = self
            .ktap()
            .unwrap_or_else(|| panic!("no KTAP\n{}", self.transcript()));
        report
            .all_passed()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.transcript()));
        assert_eq!(report.cases.len(), cases, "{}", self.transcript());
        assert_eq!(self.status.code(), Some(0), "{}", self.transcript());
        report
    }

    /// Panics if the guest console shows a kernel warning, bug or panic.
    pub fn expect_clean_console(&self) {
        for bad in [
            "BUG:",
            "WARNING:",
            "bad page",
            "Oops",
            "Kernel panic",
            "KASAN",
        ] {
            assert!(
                !self.serial.contains(bad),
                "guest console shows {bad:?}\n{}",
                self.serial
            );
        }
    }

    /// Serial and launcher output, for assertion messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- launcher (status {:?}) ---\n{}\n--- serial ---\n{}",
            self.status.code(),
            self.launcher,
            self.serial
        )
    }
}

/// Parses the `key=value` words of every `vcram-launch:` line.
pub fn launcher_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("vcram-launch: "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A guest that is still running.
pub struct Running {
    child: Option<Child>,
    dir: PathBuf,
    start: Instant,
    _guard: MutexGuard<'static, ()>,
}

impl Running {
    pub fn serial(&self) -> String {
        fs::read_to_string(self.dir.join("serial.log")).unwrap_or_default()
    }

    pub fn launcher(&self) -> String {
        fs::read_to_string(self.dir.join("launch.log")).unwrap_or_default()
    }

    pub fn run_dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until the serial console shows `needle`.
    pub fn wait_for_serial(&mut self, needle: &str, timeout: Duration) -> io::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.serial().contains(needle) {
                return Ok(self.start.elapsed());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(st) = child.try_wait()? {
                    return Err(io::Error::other(format!(
                        "launcher exited ({st}) before {needle:?} appeared\n{}\n{}",
                        self.launcher(),
                        self.serial()
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{needle:?} not seen within {timeout:?}\n{}", self.serial()),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connects to the guest's QMP socket.
    pub fn qmp(&self) -> io::Result<Qmp> {
        Qmp::connect(&self.dir.join("qmp.sock"), Duration::from_secs(30))
    }

    /// Waits for the launcher to exit (at most `timeout`, then kills it).
    pub fn wait(mut self, timeout: Duration) -> io::Result<Run> {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("child present until wait");
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() >= deadline {
                terminate(&mut child);
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok(Run::collect(&self.dir, status, self.start.elapsed()))
    }
}

fn terminate(child: &mut Child) {
    // SIGTERM lets the launcher stop QEMU and clean up.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
