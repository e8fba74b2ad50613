//! Control socket: a Unix stream socket speaking one command per line, one JSON object per
//! reply line.
//!
//! Commands: `stats` (the [`Snapshot`](crate::stats::Snapshot)), `scan` (run one scan pass now,
//! then reply like `stats`), `ping` (`{"pong":true}`). Anything else: `{"error":"..."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, warn};

use crate::device::Device;

/// The device waiting for or serving the current frontend connection, and the one of the
/// previous connection. Until a new frontend connects, the control socket keeps answering for
/// the previous one, so statistics can be read after the VM has exited.
#[derive(Default)]
pub struct Sessions {
    pub current: Option<Arc<Device>>,
    pub last: Option<Arc<Device>>,
}

impl Sessions {
    /// Start a new connection slot; the current device becomes the last one.
    pub fn rotate(&mut self, next: Arc<Device>) {
        if let Some(cur) = self.current.take() {
            if cur.ended.load(std::sync::atomic::Ordering::Relaxed) {
                self.last = Some(cur);
            }
        }
        self.current = Some(next);
    }

    /// The device the control socket answers for.
    pub fn pick(&self) -> Option<Arc<Device>> {
        match (&self.current, &self.last) {
            (Some(c), Some(l)) if !c.connected.load(std::sync::atomic::Ordering::Relaxed) => {
                Some(l.clone())
            }
            (Some(c), _) => Some(c.clone()),
            (None, l) => l.clone(),
        }
    }
}

pub type Current = Arc<Mutex<Sessions>>;

pub fn serve(path: &Path, current: Current) -> std::io::Result<JoinHandle<()>> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let path: PathBuf = path.to_path_buf();
    std::thread::Builder::new()
        .name("vcram-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        let cur = current.clone();
                        let _ = std::thread::Builder::new()
                            .name("vcram-control-conn".into())
                            .spawn(move || {
                                if let Err(e) = handle(s, cur) {
                                    debug!("control connection: {e}");
                                }
                            });
                    }
                    Err(e) => {
                        warn!("control socket {}: {e}", path.display());
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

fn reply(cmd: &str, current: &Current) -> String {
    let dev = current.lock().unwrap_or_else(|e| e.into_inner()).pick();
    match (cmd, dev) {
        ("ping", _) => r#"{"pong":true}"#.to_string(),
        ("stats", Some(d)) => serde_json::to_string(&d.snapshot()).unwrap_or_default(),
        ("scan", Some(d)) => {
            d.scan_pass();
            serde_json::to_string(&d.snapshot()).unwrap_or_default()
        }
        ("stats" | "scan", None) => r#"{"error":"no device"}"#.to_string(),
        (c, _) if c == "timeline" || c.starts_with("timeline ") => crate::timeline::reply(c),
        (other, _) => {
            serde_json::json!({ "error": format!("unknown command {other:?}") }).to_string()
        }
    }
}

fn handle(s: UnixStream, current: Current) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut w = s.try_clone()?;
    let r = BufReader::new(s);
    for line in r.lines() {
        let line = line?;
        let cmd = line.trim();
        if cmd.is_empty() {
            continue;
        }
        let mut out = reply(cmd, &current);
        out.push('\n');
        w.write_all(out.as_bytes())?;
    }
    Ok(())
}

/// Client side: send one command, read one reply line.
pub fn request(path: &Path, cmd: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "control socket closed without a reply",
        ));
    }
    Ok(line)
}
