// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Control socket: a Unix stream socket speaking one command per line, one JSON object per
//! reply line.
//!
//! Commands: `stats` (the [`Snapshot`](crate::stats::Snapshot)), `scan` (run one scan pass now,
//! then reply like `stats`), `ping` (`{"pong":true}`). Anything else: `{"error":"..."}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Bounds on what one client can make the daemon hold or do.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest command line accepted (bytes, without the newline). A longer one gets an error
    /// and the connection is closed; at most this much plus one byte is ever buffered.
    pub max_line: usize,
    /// Largest reply sent; a larger one is replaced by an error.
    pub max_reply: usize,
    /// Connections served at once; further clients get an error line and are closed.
    pub max_conns: usize,
    /// A connection idle this long is closed.
    pub read_timeout: Duration,
    /// A client that does not read its reply within this is dropped.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 1024,
            max_reply: 1 << 20,
            max_conns: 32,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a listening socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    #[error("another process is listening on {0}")]
    InUse(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Make `path` free for a listener: nothing there, or a stale socket (nobody accepting), which is
/// removed. A socket someone listens on, or any other kind of file, is left alone: an error.
pub fn clear_stale_socket(path: &Path) -> Result<(), ListenError> {
    use std::os::unix::fs::FileTypeExt;
    let io = |source| ListenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if !md.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ListenError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// Listen on `path` (see [`clear_stale_socket`]) and serve clients on a background thread.
pub fn serve(path: &Path, current: Current) -> Result<JoinHandle<()>, ListenError> {
    serve_with(path, current, Limits::default())
}

pub fn serve_with(
    path: &Path,
    current: Current,
    limits: Limits,
) -> Result<JoinHandle<()>, ListenError> {
    clear_stale_socket(path)?;
    let io = |source| ListenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(io)?;
    let path: PathBuf = path.to_path_buf();
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("vcram-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => accept(s, &current, &active, limits),
                    Err(e) => {
                        warn!("control socket {}: {e}", path.display());
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(io)
}

/// Releases a connection slot when the connection's thread ends (or fails to start).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept(mut s: UnixStream, current: &Current, active: &Arc<AtomicUsize>, limits: Limits) {
    let n = active.fetch_add(1, Ordering::AcqRel);
    let slot = Slot(active.clone());
    if n >= limits.max_conns {
        drop(slot);
        // Never block the accept loop on a client: one attempt, then close.
        let _ = s.set_nonblocking(true);
        let _ = s.write_all(
            format!(
                "{}\n",
                error_json(&format!("busy: {} connections already", limits.max_conns))
            )
            .as_bytes(),
        );
        debug!("control connection refused: {n} connections open");
        return;
    }
    let cur = current.clone();
    let spawned = std::thread::Builder::new()
        .name("vcram-control-conn".into())
        .spawn(move || {
            let _slot = slot;
            if let Err(e) = handle(s, cur, limits) {
                debug!("control connection: {e}");
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start a control connection thread: {e}");
    }
}

fn error_json(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

/// The reply line (without newline) to one command. Never contains the command's text.
pub fn reply(cmd: &str, current: &Current) -> String {
    let dev = current.lock().unwrap_or_else(|e| e.into_inner()).pick();
    match (cmd, dev) {
        ("ping", _) => r#"{"pong":true}"#.to_string(),
        ("stats", Some(d)) => serde_json::to_string(&d.snapshot()).unwrap_or_default(),
        ("scan", Some(d)) => {
            d.scan_pass();
            serde_json::to_string(&d.snapshot()).unwrap_or_default()
        }
        ("stats" | "scan", None) => error_json("no device"),
        _ => error_json("unknown command (commands: stats, scan, ping)"),
    }
}

/// What one input line turns into.
enum Line {
    Eof,
    Command(String),
    /// Reply with this error, then close.
    Fatal(&'static str),
}

/// Read one line of at most `max` bytes (plus the newline) from `r`.
fn read_line(r: &mut impl BufRead, max: usize) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > max {
        return Ok(Line::Fatal("command line too long"));
    }
    match String::from_utf8(buf) {
        Ok(s) => Ok(Line::Command(s)),
        Err(_) => Ok(Line::Fatal("command is not UTF-8")),
    }
}

/// [`read_line`] for the randomized tests: None at EOF, Err(message) where the connection
/// would be closed.
#[cfg(test)]
pub fn read_line_for_test(
    r: &mut impl BufRead,
    max: usize,
) -> Option<Result<String, &'static str>> {
    match read_line(r, max) {
        Ok(Line::Eof) | Err(_) => None,
        Ok(Line::Command(c)) => Some(Ok(c)),
        Ok(Line::Fatal(m)) => Some(Err(m)),
    }
}

fn handle(s: UnixStream, current: Current, limits: Limits) -> std::io::Result<()> {
    s.set_read_timeout(Some(limits.read_timeout))?;
    s.set_write_timeout(Some(limits.write_timeout))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::with_capacity(limits.max_line.clamp(64, 8192), s);
    loop {
        let (mut out, close) = match read_line(&mut r, limits.max_line)? {
            Line::Eof => return Ok(()),
            Line::Fatal(msg) => (error_json(msg), true),
            Line::Command(line) => {
                let cmd = line.trim();
                if cmd.is_empty() {
                    continue;
                }
                (reply(cmd, &current), false)
            }
        };
        if out.len() >= limits.max_reply {
            out = error_json("reply too large");
        }
        out.push('\n');
        w.write_all(out.as_bytes())?;
        if close {
            return Ok(());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Current {
        Arc::new(Mutex::new(Sessions::default()))
    }

    fn limits() -> Limits {
        Limits {
            max_line: 64,
            max_reply: 1 << 20,
            max_conns: 3,
            read_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_millis(200),
        }
    }

    /// Read one reply line (or whatever arrives until EOF/timeout).
    fn line(s: &mut UnixStream) -> String {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while let Ok(1) = s.read(&mut b) {
            out.push(b[0]);
            if b[0] == b'\n' {
                break;
            }
        }
        String::from_utf8_lossy(&out).to_string()
    }

    fn closed(s: &mut UnixStream) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 16];
        matches!(s.read(&mut b), Ok(0) | Err(_))
    }

    #[test]
    fn long_lines_are_refused_without_buffering_and_input_is_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctl");
        serve_with(&p, sessions(), limits()).unwrap();
        let mut c = UnixStream::connect(&p).unwrap();
        c.write_all(b"ping\n").unwrap();
        assert_eq!(line(&mut c), "{\"pong\":true}\n");
        // unknown command: an error that does not contain the input
        c.write_all(b"SECRET-marker-123\n").unwrap();
        let r = line(&mut c);
        assert!(r.contains("unknown command"), "{r}");
        assert!(!r.contains("SECRET"), "input echoed: {r}");
        // 1 MiB without a newline: refused once the limit is passed, connection closed
        let big = vec![b'x'; 1 << 20];
        let _ = c.write_all(&big);
        let r = line(&mut c);
        assert!(r.contains("too long"), "{r}");
        assert!(!r.contains("xxxx"), "input echoed: {r}");
        assert!(closed(&mut c));
        // not UTF-8
        let mut c = UnixStream::connect(&p).unwrap();
        c.write_all(b"\xff\xfe\n").unwrap();
        assert!(line(&mut c).contains("UTF-8"));
        // a line of exactly the limit is a command (unknown here)
        let mut c = UnixStream::connect(&p).unwrap();
        c.write_all(&[b'y'; 64]).unwrap();
        c.write_all(b"\n").unwrap();
        assert!(line(&mut c).contains("unknown command"));
    }

    #[test]
    fn read_line_is_bounded() {
        let mut r = std::io::Cursor::new(vec![b'a'; 10_000]);
        assert!(matches!(read_line(&mut r, 100).unwrap(), Line::Fatal(_)));
        assert_eq!(
            r.position(),
            101,
            "at most the limit plus one byte consumed"
        );
        let mut r = std::io::Cursor::new(b"stats\nping".to_vec());
        assert!(matches!(read_line(&mut r, 100).unwrap(), Line::Command(c) if c == "stats"));
        assert!(matches!(read_line(&mut r, 100).unwrap(), Line::Command(c) if c == "ping"));
        assert!(matches!(read_line(&mut r, 100).unwrap(), Line::Eof));
    }

    #[test]
    fn connections_are_capped_and_idle_ones_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctl");
        serve_with(&p, sessions(), limits()).unwrap();
        let mut held: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&p).unwrap()).collect();
        // each of the three is served
        for c in &mut held {
            c.write_all(b"ping\n").unwrap();
            assert!(line(c).contains("pong"));
        }
        // the fourth is refused with an error line and closed
        let mut extra = UnixStream::connect(&p).unwrap();
        let r = line(&mut extra);
        assert!(r.contains("busy"), "{r}");
        assert!(closed(&mut extra));
        // idle connections are closed after the read timeout, freeing their slots
        for c in &mut held {
            assert!(closed(c));
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut again = UnixStream::connect(&p).unwrap();
        again.write_all(b"ping\n").unwrap();
        assert!(line(&mut again).contains("pong"));
    }

    #[test]
    fn a_client_that_never_reads_does_not_pin_a_thread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctl");
        let lim = Limits {
            max_conns: 1,
            read_timeout: Duration::from_secs(30),
            ..limits()
        };
        serve_with(&p, sessions(), lim).unwrap();
        let mut c = UnixStream::connect(&p).unwrap();
        // pipeline many commands, never read the replies: the socket buffer fills, the write
        // times out and the connection (and its slot) is released
        let many = b"ping\n".repeat(200_000);
        c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(&many);
        let t0 = std::time::Instant::now();
        loop {
            let mut d = UnixStream::connect(&p).unwrap();
            let _ = d.write_all(b"ping\n");
            if line(&mut d).contains("pong") {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "slot never released"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn only_a_stale_socket_is_removed() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        // a regular file is kept, with a clear error
        let f = dir.path().join("file");
        std::fs::write(&f, b"precious").unwrap();
        let e = serve_with(&f, sessions(), limits()).unwrap_err();
        assert!(matches!(e, ListenError::NotASocket(_)));
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&f).unwrap(), b"precious");
        // a directory too
        let e = serve_with(dir.path(), sessions(), limits()).unwrap_err();
        assert!(matches!(e, ListenError::NotASocket(_)));
        // a stale socket (nobody listening) is replaced
        let s = dir.path().join("stale");
        drop(UnixListener::bind(&s).unwrap());
        assert!(std::fs::symlink_metadata(&s)
            .unwrap()
            .file_type()
            .is_socket());
        serve_with(&s, sessions(), limits()).unwrap();
        let mut c = UnixStream::connect(&s).unwrap();
        c.write_all(b"ping\n").unwrap();
        assert!(line(&mut c).contains("pong"));
        // a live socket is not taken over
        let e = serve_with(&s, sessions(), limits()).unwrap_err();
        assert!(matches!(e, ListenError::InUse(_)), "{e}");
    }
}
