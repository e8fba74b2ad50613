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
