// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Test harness: runs the real `vcram-device` binary and plays QEMU + guest driver against it
//! with the `vhost` crate's `Frontend`, two memfds as guest memory (RAM at 0, the window at
//! 4 GiB), split virtqueues written by hand, and the control socket for stats.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

use vcram_device::protocol::*;
use vcram_device::stats::Snapshot;

pub const RAM_BASE: u64 = 0;
pub const RAM_SIZE: u64 = 16 << 20;
pub const WIN_BASE: u64 = 1 << 32;
pub const WIN_SIZE: u64 = 64 << 20;
pub const WIN_PAGES: u64 = WIN_SIZE / 4096;
pub const QSIZE: u16 = 256;
/// Data buffers for requests live here in RAM.
pub const DATA_BASE: u64 = 1 << 20;

pub const F_VERSION_1: u64 = 1 << 32;
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_INDIRECT: u64 = 1 << 28;
pub const F_PROTOCOL: u64 = 1 << 30;

pub struct Region {
    pub file: File,
    pub gpa: u64,
    pub size: u64,
    pub host: *mut u8,
}

impl Region {
    pub fn memfd(name: &str, gpa: u64, size: u64) -> Region {
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: plain syscalls, results checked.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create");
        let file = unsafe { File::from_raw_fd(fd) };
        Self::from_file(file, gpa, size)
    }

    pub fn from_file(file: File, gpa: u64, size: u64) -> Region {
        file.set_len(size).unwrap();
        // SAFETY: mapping a file we own, size checked by set_len.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(host, libc::MAP_FAILED);
        Region {
            file,
            gpa,
            size,
            host: host as *mut u8,
        }
    }

    pub fn info(&self) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: self.gpa,
            memory_size: self.size,
            userspace_addr: self.host as u64,
            mmap_offset: 0,
            mmap_handle: self.file.as_raw_fd(),
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(self.host as *mut libc::c_void, self.size as usize) };
    }
}

/// Guest memory as seen from the test (the "guest").
pub struct Guest {
    pub regions: Vec<Region>,
}

impl Guest {
    pub fn new() -> Guest {
        Self::with_window(WIN_SIZE)
    }

    pub fn with_window(win_size: u64) -> Guest {
        Guest {
            regions: vec![
                Region::memfd("vcram-test-ram", RAM_BASE, RAM_SIZE),
                Region::memfd("vcram-test-window", WIN_BASE, win_size),
            ],
        }
    }

    /// Host pointer to window page `idx` (for bulk writes in benchmarks).
    pub fn window_host(&self) -> *mut u8 {
        self.regions[1].host
    }

    fn ptr(&self, gpa: u64, len: usize) -> *mut u8 {
        for r in &self.regions {
            if gpa >= r.gpa && gpa + len as u64 <= r.gpa + r.size {
                return unsafe { r.host.add((gpa - r.gpa) as usize) };
            }
        }
        panic!("gpa {gpa:#x}+{len} not in guest memory");
    }

    pub fn write(&self, gpa: u64, data: &[u8]) {
        let p = self.ptr(gpa, data.len());
        // SAFETY: inside a mapping (checked by ptr()).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let p = self.ptr(gpa, len);
        let mut v = vec![0u8; len];
        // SAFETY: inside a mapping (checked by ptr()).
        unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), len) };
        v
    }

    pub fn u16(&self, gpa: u64) -> u16 {
        u16::from_le_bytes(self.read(gpa, 2).try_into().unwrap())
    }

    pub fn u32(&self, gpa: u64) -> u32 {
        u32::from_le_bytes(self.read(gpa, 4).try_into().unwrap())
    }

    pub fn host_of(&self, gpa: u64) -> u64 {
        self.ptr(gpa, 1) as u64
    }

    pub fn window_page(&self, idx: u64) -> u64 {
        WIN_BASE + idx * 4096
    }
}

/// A split virtqueue driven by the test.
pub struct Vq {
    pub index: usize,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub next_desc: u16,
    pub avail_idx: u16,
    pub last_used: u16,
    pub kick: EventFd,
    pub call: EventFd,
}

pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;
pub const VRING_DESC_F_INDIRECT: u16 = 4;

impl Vq {
    pub fn new(index: usize, size: u16) -> Vq {
        let base = 0x10000 + index as u64 * 0x20000;
        let desc = base;
        let avail = desc + 16 * size as u64;
        let used = (avail + 6 + 2 * size as u64 + 0xfff) & !0xfff;
        Vq {
            index,
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            last_used: 0,
            kick: EventFd::new(0).unwrap(),
            call: EventFd::new(0).unwrap(),
        }
    }

    pub fn write_desc(g: &Guest, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        g.write(table + 16 * i as u64, &d);
    }

    /// Add a chain of (addr, len, device-writable) buffers; returns the head index.
    /// The avail index is published at once (no kick).
    pub fn add(&mut self, g: &Guest, bufs: &[(u64, u32, bool)]) -> u16 {
        assert!(!bufs.is_empty() && bufs.len() <= self.size as usize);
        let head = self.next_desc;
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let i = (head as usize + k) % self.size as usize;
            let last = k + 1 == bufs.len();
            let next = ((i + 1) % self.size as usize) as u16;
            let mut flags = if w { VRING_DESC_F_WRITE } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT;
            }
            Self::write_desc(
                g,
                self.desc,
                i as u16,
                addr,
                len,
                flags,
                if last { 0 } else { next },
            );
        }
        self.next_desc = ((head as usize + bufs.len()) % self.size as usize) as u16;
        self.push_head(g, head);
        head
    }

    /// Add a chain through an indirect descriptor table written at `table` (in RAM).
    pub fn add_indirect(&mut self, g: &Guest, table: u64, bufs: &[(u64, u32, bool)]) -> u16 {
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let mut flags = if w { VRING_DESC_F_WRITE } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT;
            }
            Self::write_desc(
                g,
                table,
                k as u16,
                addr,
                len,
                flags,
                if last { 0 } else { k as u16 + 1 },
            );
        }
        let head = self.next_desc;
        Self::write_desc(
            g,
            self.desc,
            head,
            table,
            16 * bufs.len() as u32,
            VRING_DESC_F_INDIRECT,
            0,
        );
        self.next_desc = (head + 1) % self.size;
        self.push_head(g, head);
        head
    }

    /// Put a raw head index on the avail ring (for malformed-ring tests too).
    pub fn push_head(&mut self, g: &Guest, head: u16) {
        let slot = self.avail_idx % self.size;
        g.write(self.avail + 4 + 2 * slot as u64, &head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        g.write(self.avail + 2, &self.avail_idx.to_le_bytes());
    }

    pub fn kick(&self) {
        self.kick.write(1).unwrap();
    }

    pub fn used_idx(&self, g: &Guest) -> u16 {
        g.u16(self.used + 2)
    }

    /// Wait until `n` more used entries appear; returns them as (id, len).
    pub fn wait_used(&mut self, g: &Guest, n: u16, timeout: Duration) -> Vec<(u32, u32)> {
        let t0 = Instant::now();
        while self.used_idx(g).wrapping_sub(self.last_used) < n {
            if t0.elapsed() > timeout {
                panic!(
                    "queue {}: timed out waiting for {n} used entries (have {})",
                    self.index,
                    self.used_idx(g).wrapping_sub(self.last_used)
                );
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let mut out = Vec::new();
        for _ in 0..n {
            let slot = self.last_used % self.size;
            let e = self.used + 4 + 8 * slot as u64;
            out.push((g.u32(e), g.u32(e + 4)));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }

    /// True if no new used entry appears within `d`.
    pub fn stays_idle(&self, g: &Guest, d: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            if self.used_idx(g) != self.last_used {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// The daemon under test: this build's, or the one `VCRAM_DEVICE_BIN` names (device/TESTING.md:
/// the hostile-input tests were run against the code before the fix that way).
pub fn device_bin() -> PathBuf {
    std::env::var_os("VCRAM_DEVICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vcram-device")))
}

/// `vcramctl` under test: this build's, or the one `VCRAM_CTL_BIN` names.
pub fn ctl_bin() -> PathBuf {
    std::env::var_os("VCRAM_CTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vcramctl")))
}

/// A `/proc/PID/status` field given in kB (`RssAnon:`, `VmRSS:`), in bytes; a count
/// (`Threads:`) comes back as is times 1024.
pub fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// CPU time (user + system) the process used so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Run `vcramctl` (`ctl_bin()`) with `args`: (success, stdout, stderr).
pub fn vcramctl(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(ctl_bin()).args(args).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

pub struct Daemon {
    pub child: Child,
    pub args: Vec<String>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub control: PathBuf,
}

impl Daemon {
    pub fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vcram.sock");
        let control = dir.path().join("vcram.ctl");
        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--control-socket".into(),
            control.display().to_string(),
        ];
        if !extra
            .iter()
            .any(|a| *a == "--window-base" || *a == "--window-file")
        {
            args.extend(["--window-base".into(), format!("{WIN_BASE:#x}")]);
        }
        if !extra.contains(&"--scan-interval-ms") {
            args.extend(["--scan-interval-ms".into(), "0".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Self::spawn(&args);
        let d = Daemon {
            child,
            args,
            dir,
            socket,
            control,
        };
        d.wait_socket();
        d
    }

    fn spawn(args: &[String]) -> Child {
        Command::new(device_bin())
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Kill the daemon and start a new one on the same sockets.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.control);
        self.child = Self::spawn(&self.args);
        self.wait_socket();
    }

    pub fn wait_socket(&self) {
        let t0 = Instant::now();
        while !(self.socket.exists() && self.control.exists()) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn ctl(&self, cmd: &str) -> String {
        vcram_device::control::request(&self.control, cmd).unwrap()
    }

    pub fn stats(&self) -> Snapshot {
        serde_json::from_str(&self.ctl("stats")).unwrap()
    }

    pub fn scan(&self) -> Snapshot {
        serde_json::from_str(&self.ctl("scan")).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// QEMU's side of a connection plus the guest driver's queues.
pub struct Conn {
    pub fe: Frontend,
    pub rq: Vq,
    pub eq: Vq,
    pub data_next: u64,
}

pub fn connect(path: &Path) -> Frontend {
    let t0 = Instant::now();
    loop {
        match Frontend::connect(path, NUM_QUEUES as u64) {
            Ok(f) => return f,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(10), "connect: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub enum MemSetup {
    /// One SET_MEM_TABLE with all regions.
    Table,
    /// ADD_MEM_REG per region.
    AddRegions,
}

impl Conn {
    /// Negotiate like QEMU does, map memory, set up both queues.
    pub fn open(path: &Path, g: &Guest, mem: MemSetup) -> Conn {
        let mut fe = connect(path);
        fe.set_owner().unwrap();
        let features = fe.get_features().unwrap();
        assert_ne!(features & F_VERSION_1, 0);
        assert_ne!(features & F_EVENT_IDX, 0);
        assert_ne!(features & F_PROTOCOL, 0);
        let pf = fe.get_protocol_features().unwrap();
        assert!(pf.contains(VhostUserProtocolFeatures::CONFIG));
        assert!(pf.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS));
        assert!(pf.contains(VhostUserProtocolFeatures::REPLY_ACK));
        fe.set_protocol_features(
            VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS,
        )
        .unwrap();
        fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        assert_eq!(fe.get_queue_num().unwrap(), NUM_QUEUES as u64);
        fe.set_features(F_VERSION_1 | F_EVENT_IDX | F_INDIRECT | F_PROTOCOL)
            .unwrap();
        match mem {
            MemSetup::Table => {
                let infos: Vec<_> = g.regions.iter().map(|r| r.info()).collect();
                fe.set_mem_table(&infos).unwrap();
            }
            MemSetup::AddRegions => {
                for r in &g.regions {
                    fe.add_mem_region(&r.info()).unwrap();
                }
            }
        }
        let rq = Vq::new(0, QSIZE);
        let eq = Vq::new(1, QSIZE);
        for q in [&rq, &eq] {
            fe.set_vring_num(q.index, q.size).unwrap();
            fe.set_vring_addr(
                q.index,
                &VringConfigData {
                    queue_max_size: q.size,
                    queue_size: q.size,
                    flags: 0,
                    desc_table_addr: g.host_of(q.desc),
                    used_ring_addr: g.host_of(q.used),
                    avail_ring_addr: g.host_of(q.avail),
                    log_addr: None,
                },
            )
            .unwrap();
            fe.set_vring_base(q.index, 0).unwrap();
            fe.set_vring_call(q.index, &q.call).unwrap();
            fe.set_vring_kick(q.index, &q.kick).unwrap();
            fe.set_vring_enable(q.index, true).unwrap();
        }
        Conn {
            fe,
            rq,
            eq,
            data_next: DATA_BASE,
        }
    }

    pub fn config(&mut self, size: u32) -> Vec<u8> {
        let buf = vec![0u8; size as usize];
        let (_, payload) = self
            .fe
            .get_config(
                0,
                size,
                vhost::vhost_user::message::VhostUserConfigFlags::empty(),
                &buf,
            )
            .unwrap();
        payload
    }

    pub fn cfg(&mut self) -> VcramConfig {
        use vm_memory::ByteValued;
        *VcramConfig::from_slice(&self.config(VCRAM_CONFIG_SIZE as u32)).unwrap()
    }

    /// Reserve `len` bytes of RAM for buffers.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let a = (self.data_next + 63) & !63;
        self.data_next = a + len;
        if self.data_next > RAM_SIZE {
            self.data_next = DATA_BASE;
            return self.alloc(len);
        }
        a
    }

    /// Post a request with a header + ranges (one readable buffer) and a response buffer.
    /// Returns (head, response gpa).
    pub fn post_request(&mut self, g: &Guest, t: u32, ranges: &[(u64, u32)]) -> (u16, u64) {
        let req = request_bytes(t, ranges);
        let ra = self.alloc(req.len() as u64);
        g.write(ra, &req);
        let resp = self.alloc(24);
        g.write(resp, &[0xee; 24]);
        let head = self
            .rq
            .add(g, &[(ra, req.len() as u32, false), (resp, 24, true)]);
        (head, resp)
    }

    /// Submit one request and wait for it; returns (used len, response).
    pub fn request(&mut self, g: &Guest, t: u32, ranges: &[(u64, u32)]) -> (u32, VcramResp) {
        let (head, resp) = self.post_request(g, t, ranges);
        self.rq.kick();
        let used = self.rq.wait_used(g, 1, Duration::from_secs(20));
        assert_eq!(used[0].0, head as u32);
        (used[0].1, read_resp(g, resp))
    }

    /// Post `n` event buffers of `len` bytes; returns their addresses.
    pub fn post_event_buffers(&mut self, g: &Guest, n: usize, len: u32) -> Vec<u64> {
        let mut v = Vec::new();
        for _ in 0..n {
            let a = self.alloc(len as u64);
            g.write(a, &vec![0u8; len as usize]);
            self.eq.add(g, &[(a, len, true)]);
            v.push(a);
        }
        self.eq.kick();
        v
    }
}

/// Some of every kind of traffic: `text` pages of text written at the start of the window,
/// COMMIT of the first `commit` pages, DISCARD of `discard` pages after the text, and one
/// request of an unknown type (UNSUPPORTED).
pub fn traffic(c: &mut Conn, g: &Guest, text: u64, commit: u32, discard: u32) {
    for i in 0..text {
        g.write(g.window_page(i), &text_page(i));
    }
    let (_, r) = c.request(g, VCRAM_REQ_COMMIT, &[(g.window_page(0), commit)]);
    assert_eq!(u32::from(r.status), VCRAM_S_OK);
    let (_, r) = c.request(g, VCRAM_REQ_DISCARD, &[(g.window_page(text), discard)]);
    assert_eq!(u32::from(r.status), VCRAM_S_OK);
    let (_, r) = c.request(g, 9, &[(g.window_page(text), 2)]);
    assert_eq!(u32::from(r.status), VCRAM_S_UNSUPPORTED);
}

pub fn request_bytes(t: u32, ranges: &[(u64, u32)]) -> Vec<u8> {
    encode_request(t, 0x1234, ranges)
}

pub fn read_resp(g: &Guest, gpa: u64) -> VcramResp {
    use vm_memory::ByteValued;
    *VcramResp::from_slice(&g.read(gpa, 24)).unwrap()
}

pub fn read_event(g: &Guest, gpa: u64) -> VcramEvent {
    use vm_memory::ByteValued;
    *VcramEvent::from_slice(&g.read(gpa, VCRAM_EVENT_SIZE)).unwrap()
}

pub fn text_page(seed: u64) -> Vec<u8> {
    format!("{seed:08} the quick brown fox jumps over the lazy dog; vcram test page. ")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(4096)
        .collect()
}

#[path = "../../src/testdata.rs"]
mod testdata;
#[allow(unused_imports)] // like the dead code above: not every test crate uses it
pub use testdata::random_page;

pub const T: Duration = Duration::from_secs(20);
