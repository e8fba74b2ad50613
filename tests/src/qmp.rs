// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! A minimal client for QEMU's monitor protocol (QMP) over a Unix socket.

use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events read while waiting for a command's reply, oldest first.
    events: Vec<Value>,
    /// A line read in part when a read timed out.
    partial: String,
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl Qmp {
    /// Connects (retrying until `timeout`) and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(other(format!("QMP {}: {e}", path.display())))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            events: Vec::new(),
            partial: String::new(),
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(other(format!("no QMP greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> io::Result<Value> {
        // A read that times out keeps what it read of the line for the next one.
        if self.reader.read_line(&mut self.partial)? == 0 {
            return Err(other("QMP connection closed".into()));
        }
        let line = std::mem::take(&mut self.partial);
        serde_json::from_str(&line).map_err(|e| other(format!("bad QMP message {line:?}: {e}")))
    }

    /// Waits up to `timeout` for the event `name` for which `matches` holds (events read
    /// before, while waiting for replies, count too); returns it.
    pub fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> io::Result<Value> {
        let is = |ev: &Value| ev["event"] == name && matches(ev);
        if let Some(i) = self.events.iter().position(is) {
            return Ok(self.events.remove(i));
        }
        let deadline = Instant::now() + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no QMP event {name} within {timeout:?}"),
                ));
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match self.read_message() {
                Ok(msg) if is(&msg) => break Ok(msg),
                Ok(msg) => {
                    if msg.get("event").is_some() {
                        self.events.push(msg);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => break Err(e),
            }
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))?;
        result
    }

    /// Runs a command and returns its `return` value (events are kept for
    /// [`Qmp::wait_event`]).
    pub fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        let msg = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}")?;
        loop {
            let reply = self.read_message()?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(other(format!("QMP {command}: {err}")));
            }
            if reply.get("event").is_some() {
                self.events.push(reply);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU: greets, answers every command, and sends an event before the answer to
    /// `device_del` and another one a little later.
    fn fake_qemu(path: &Path) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut w = stream.try_clone().unwrap();
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            for line in BufReader::new(stream).lines() {
                let cmd: Value = serde_json::from_str(&line.unwrap()).unwrap();
                if cmd["execute"] == "device_del" {
                    writeln!(w, r#"{{"event": "ACPI_DEVICE_OST", "data": {{}}}}"#).unwrap();
                    writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
                    std::thread::sleep(Duration::from_millis(200));
                    // one event written in two pieces
                    write!(w, r#"{{"event": "DEVICE_DELETED", "#).unwrap();
                    w.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                    writeln!(w, r#""data": {{"device": "vcram-dev"}}}}"#).unwrap();
                } else {
                    writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
                }
            }
        })
    }

    #[test]
    fn events_are_kept_and_waited_for() {
        let dir = std::env::temp_dir().join(format!("vcram-qmp-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("qmp.sock");
        let server = fake_qemu(&sock);
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
        q.execute("device_del", json!({"id": "vcram-dev"})).unwrap();
        // the event that came before the answer was kept
        let ost = q
            .wait_event("ACPI_DEVICE_OST", Duration::from_millis(1), |_| true)
            .unwrap();
        assert_eq!(ost["event"], "ACPI_DEVICE_OST");
        // one that does not match is not taken: a timeout, within about its time
        let t = Instant::now();
        let e = q
            .wait_event("DEVICE_DELETED", Duration::from_millis(100), |ev| {
                ev["data"]["device"] == "other"
            })
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // the real one, after the timeout (written in two pieces)
        let ev = q
            .wait_event("DEVICE_DELETED", Duration::from_secs(5), |ev| {
                ev["data"]["device"] == "vcram-dev"
            })
            .unwrap();
        assert_eq!(ev["data"]["device"], "vcram-dev");
        // commands still work afterwards
        q.execute("query-status", json!({})).unwrap();
        drop(q);
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
