// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Control socket: a Unix stream socket speaking one command per line, one JSON object per
//! reply line.
//!
//! Commands: `stats` (the [`Snapshot`](crate::stats::Snapshot)), `scan` (run one scan pass now,
//! then reply like `stats`), `ping` (`{"pong":true}`). Anything else: `{"error":"..."}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Connections held at once. At the cap a new client takes the place of the connection
    /// quiet the longest that is not being answered (nothing sent, or half a line); if every
    /// one is being answered, the new client gets an error line and is closed.
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
            max_conns: 64,
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
    listener.set_nonblocking(true).map_err(io)?;
    let path: PathBuf = path.to_path_buf();
    std::thread::Builder::new()
        .name("vcram-control".into())
        .spawn(move || Server::new(listener, path, current, limits).run())
        .map_err(io)
}

/// One client connection: at most one line being read and one reply being written.
struct Conn {
    s: UnixStream,
    /// Bytes of the line being read (at most `max_line` + 1).
    inbuf: Vec<u8>,
    /// The reply being written, and how much of it went out.
    out: Vec<u8>,
    sent: usize,
    /// Close once `out` is written.
    closing: bool,
    /// Last time the client sent something or took reply bytes.
    last: Instant,
}

impl Conn {
    fn writing(&self) -> bool {
        self.sent < self.out.len()
    }
}

/// The control server: one thread, non-blocking sockets, poll(2). Whatever the clients do,
/// it holds at most `max_conns` connections with bounded buffers, and one slow or hostile
/// client cannot hold up the others.
struct Server {
    listener: UnixListener,
    path: PathBuf,
    current: Current,
    limits: Limits,
    conns: Vec<Conn>,
}

impl Server {
    fn new(listener: UnixListener, path: PathBuf, current: Current, limits: Limits) -> Server {
        Server {
            listener,
            path,
            current,
            limits,
            conns: Vec::new(),
        }
    }

    fn run(mut self) {
        loop {
            let mut fds = Vec::with_capacity(self.conns.len() + 1);
            fds.push(libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            for c in &self.conns {
                fds.push(libc::pollfd {
                    fd: c.s.as_raw_fd(),
                    events: if c.writing() {
                        libc::POLLOUT
                    } else {
                        libc::POLLIN
                    },
                    revents: 0,
                });
            }
            // SAFETY: fds is a valid array of fds.len() pollfd structures.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 250) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    warn!("control socket {}: poll: {e}", self.path.display());
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            // Connections first (in the order of fds[1..]), then new clients.
            let conns = std::mem::take(&mut self.conns);
            let mut keep = Vec::with_capacity(conns.len());
            for (c, fd) in conns.into_iter().zip(fds.iter().skip(1)) {
                if let Some(c) = self.service(c, fd.revents) {
                    keep.push(c);
                }
            }
            self.conns = keep;
            if fds[0].revents != 0 {
                self.accept_all();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => self.admit(s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("control socket {}: {e}", self.path.display());
                    return;
                }
            }
        }
    }

    /// Take a new client. At the cap, the connection quiet the longest that is not being
    /// answered makes room, whether it sent nothing or half a line (a client that sends part
    /// of a command and stops must not hold a slot against others); if every connection is
    /// being answered, the new one is refused.
    fn admit(&mut self, mut s: UnixStream) {
        if s.set_nonblocking(true).is_err() {
            return;
        }
        if self.conns.len() >= self.limits.max_conns {
            let idle = self
                .conns
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.writing())
                .min_by_key(|(_, c)| c.last)
                .map(|(i, _)| i);
            match idle {
                Some(i) => {
                    debug!("control connection closed to make room (quiet the longest)");
                    self.conns.swap_remove(i);
                }
                None => {
                    let msg = format!("busy: {} connections in use", self.limits.max_conns);
                    let _ = s.write_all(format!("{}\n", error_json(&msg)).as_bytes());
                    debug!("control connection refused: every connection is being answered");
                    return;
                }
            }
        }
        self.conns.push(Conn {
            s,
            inbuf: Vec::new(),
            out: Vec::new(),
            sent: 0,
            closing: false,
            last: Instant::now(),
        });
    }

    /// Serve one connection after poll; None closes it.
    fn service(&self, mut c: Conn, revents: libc::c_short) -> Option<Conn> {
        let now = Instant::now();
        if c.writing() {
            if revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
                match c.s.write(&c.out[c.sent..]) {
                    Ok(0) => return None,
                    Ok(n) => {
                        c.sent += n;
                        c.last = now;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return None,
                }
            }
            if c.writing() {
                // A client that does not take its reply is dropped.
                return (now.duration_since(c.last) < self.limits.write_timeout).then_some(c);
            }
            if c.closing {
                return None;
            }
            c.out = Vec::new();
            c.sent = 0;
            // Another command may be waiting in what was read already.
            return self.next_command(c);
        }
        if revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
            let room = (self.limits.max_line + 1).saturating_sub(c.inbuf.len());
            let mut buf = [0u8; 4096];
            let take = room.clamp(1, buf.len());
            match c.s.read(&mut buf[..take]) {
                Ok(0) => return None,
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    c.last = now;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
            return self.next_command(c);
        }
        // An idle connection is closed after the read timeout.
        (now.duration_since(c.last) < self.limits.read_timeout).then_some(c)
    }

    /// If a whole line (or too much for one) was read, prepare its reply and start sending.
    fn next_command(&self, mut c: Conn) -> Option<Conn> {
        loop {
            let Some(line) = take_line(&mut c.inbuf, self.limits.max_line) else {
                return Some(c);
            };
            let mut out = match line {
                Line::Command(cmd) => {
                    let cmd = cmd.trim();
                    if cmd.is_empty() {
                        continue;
                    }
                    reply(cmd, &self.current)
                }
                Line::Fatal(msg) => {
                    c.closing = true;
                    c.inbuf = Vec::new();
                    error_json(msg)
                }
            };
            if out.len() >= self.limits.max_reply {
                out = error_json("reply too large");
            }
            out.push('\n');
            c.out = out.into_bytes();
            c.sent = 0;
            // Send at once; poll takes over if the socket is full.
            return self.service(c, libc::POLLOUT);
        }
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
        (c, _) if c == "timeline" || c.starts_with("timeline ") => crate::timeline::reply(c),
        _ => error_json("unknown command (commands: stats, scan, timeline, ping)"),
    }
}

/// What one input line turns into.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Command(String),
    /// Reply with this error, then close.
    Fatal(&'static str),
}

/// Take the first line (of at most `max` bytes plus the newline) out of `buf`. None: no whole
/// line yet, and `buf` is still short enough to hold one (so at most `max` + 1 bytes are ever
/// buffered before a decision).
fn take_line(buf: &mut Vec<u8>, max: usize) -> Option<Line> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if end <= max => {
            let mut line: Vec<u8> = buf.drain(..=end).collect();
            line.pop();
            Some(match String::from_utf8(line) {
                Ok(l) => Line::Command(l),
                Err(_) => Line::Fatal("command is not UTF-8"),
            })
        }
        None if buf.len() <= max => None,
        _ => Some(Line::Fatal("command line too long")),
    }
}

/// [`take_line`] for the randomized tests: Err(message) where the connection would be closed.
#[cfg(test)]
pub fn take_line_for_test(buf: &mut Vec<u8>, max: usize) -> Option<Result<String, &'static str>> {
    take_line(buf, max).map(|l| match l {
        Line::Command(c) => Ok(c),
        Line::Fatal(m) => Err(m),
    })
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
    fn take_line_is_bounded() {
        let mut b = vec![b'a'; 100];
        assert_eq!(
            take_line(&mut b, 100),
            None,
            "a whole line of 100 bytes may follow"
        );
        b.push(b'a');
        assert_eq!(
            take_line(&mut b, 100),
            Some(Line::Fatal("command line too long"))
        );
        let mut b = b"stats\nping\npartial".to_vec();
        assert_eq!(take_line(&mut b, 100), Some(Line::Command("stats".into())));
        assert_eq!(take_line(&mut b, 100), Some(Line::Command("ping".into())));
        assert_eq!(take_line(&mut b, 100), None);
        assert_eq!(b, b"partial");
        let mut b = b"\xff\n".to_vec();
        assert_eq!(
            take_line(&mut b, 100),
            Some(Line::Fatal("command is not UTF-8"))
        );
    }

    #[test]
    fn connections_are_capped_the_idlest_makes_room_and_idle_ones_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctl");
        serve_with(&p, sessions(), limits()).unwrap();
        let mut held: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&p).unwrap()).collect();
        for c in &mut held {
            c.write_all(b"ping\n").unwrap();
            assert!(line(c).contains("pong"));
        }
        // at the cap, a new client takes the place of the connection idle the longest
        let mut extra = UnixStream::connect(&p).unwrap();
        extra.write_all(b"ping\n").unwrap();
        assert!(line(&mut extra).contains("pong"));
        assert!(closed(&mut held[0]), "the idlest connection was not closed");
        held[1].write_all(b"ping\n").unwrap();
        assert!(
            line(&mut held[1]).contains("pong"),
            "a newer one was closed"
        );
        // idle connections are closed after the read timeout
        for c in &mut held[1..] {
            assert!(closed(c));
        }
        assert!(closed(&mut extra));
    }

    /// Many idle clients (a slow-loris): the daemon keeps one thread and bounded buffers, and a
    /// client that comes to ask is answered at once.
    #[test]
    fn many_idle_clients_do_not_lock_out_a_real_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctl");
        let lim = Limits {
            max_conns: 16,
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            ..limits()
        };
        serve_with(&p, sessions(), lim).unwrap();
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(UnixStream::connect(&p).unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut c = UnixStream::connect(&p).unwrap();
        c.write_all(b"ping\n").unwrap();
        assert!(line(&mut c).contains("pong"));
        drop(c);
        // half a command does not hold a slot either: with every held connection mid-line,
        // a real client is still answered
        let half: Vec<UnixStream> = (0..16)
            .map(|_| {
                let mut c = UnixStream::connect(&p).unwrap();
                c.write_all(b"sta").unwrap();
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut c = UnixStream::connect(&p).unwrap();
        c.write_all(b"ping\n").unwrap();
        assert!(line(&mut c).contains("pong"));
        drop(c);
        // refused, not queued, only when every held connection is being answered: clients
        // that ask for replies far beyond the socket buffers and do not read them
        let hogs: Vec<UnixStream> = (0..16)
            .map(|_| {
                let mut c = UnixStream::connect(&p).unwrap();
                c.write_all(&b"stats\n".repeat(2000)).unwrap();
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut late = UnixStream::connect(&p).unwrap();
        let r = line(&mut late);
        assert!(r.contains("busy"), "{r:?}");
        drop(hogs);
        drop(half);
        drop(idle);
        std::thread::sleep(Duration::from_millis(400));
        let mut c = UnixStream::connect(&p).unwrap();
        c.write_all(b"ping\n").unwrap();
        assert!(line(&mut c).contains("pong"));
    }

    #[test]
    fn a_client_that_never_reads_does_not_hold_up_others() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctl");
        serve_with(&p, sessions(), limits()).unwrap();
        // pipeline many commands, never read the replies: the socket buffers fill
        let mut hog = UnixStream::connect(&p).unwrap();
        hog.set_nonblocking(true).unwrap();
        let many = b"ping\n".repeat(200_000);
        let mut off = 0;
        let t0 = Instant::now();
        while off < many.len() && t0.elapsed() < Duration::from_secs(2) {
            match hog.write(&many[off..]) {
                Ok(n) => off += n,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        // others are served meanwhile
        let t1 = Instant::now();
        let mut c = UnixStream::connect(&p).unwrap();
        c.write_all(b"ping\n").unwrap();
        assert!(line(&mut c).contains("pong"));
        assert!(t1.elapsed() < Duration::from_secs(1));
        // and the hog is dropped after the write timeout
        hog.set_nonblocking(false).unwrap();
        hog.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        let t2 = Instant::now();
        loop {
            match hog.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            assert!(t2.elapsed() < Duration::from_secs(5), "hog never dropped");
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
