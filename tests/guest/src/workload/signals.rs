// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! SIGBUS reporting and the release signals of `--hold`.
//!
//! A SIGBUS while the buffer is touched (the device's window ran out of
//! physical space and the driver poisoned or refused the page) cannot be
//! recovered from without sigsetjmp, so the handler reports it in the
//! current output format with async-signal-safe writes only (no allocation,
//! no locks) and `_exit(3)`s. What it needs (the phase, the buffer, the
//! KTAP counts, the format) is kept in atomics by the main program.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// Exit status of a SIGBUS.
pub const EXIT_SIGBUS: i32 = 3;

static JSON: AtomicBool = AtomicBool::new(false);
static PHASE: AtomicUsize = AtomicUsize::new(usize::MAX);
static RUN: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);
static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static RELEASED: AtomicBool = AtomicBool::new(false);

/// The state the SIGBUS report reads.
pub fn set_format_json(json: bool) {
    JSON.store(json, Relaxed);
}
pub fn set_phase(index: usize) {
    PHASE.store(index, Relaxed);
}
pub fn set_counts(run: usize, failed: usize) {
    RUN.store(run, Relaxed);
    FAILED.store(failed, Relaxed);
}
pub fn set_buffer(base: *mut u8, len: usize, page: usize) {
    BASE.store(base as usize, Relaxed);
    LEN.store(len, Relaxed);
    PAGE.store(page, Relaxed);
}

/// A fixed-size line buffer that formats without allocating.
pub struct LineBuf {
    b: [u8; 512],
    n: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf { b: [0; 512], n: 0 }
    }
}

impl LineBuf {
    pub fn s(&mut self, s: &str) -> &mut Self {
        for &c in s.as_bytes() {
            if self.n < self.b.len() {
                self.b[self.n] = c;
                self.n += 1;
            }
        }
        self
    }
    pub fn dec(&mut self, mut v: u64) -> &mut Self {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        // digits are ASCII
        self.s(std::str::from_utf8(&d[i..]).unwrap_or("?"))
    }
    pub fn hex(&mut self, v: u64) -> &mut Self {
        self.s("0x");
        let mut started = false;
        for shift in (0..16).rev() {
            let nib = ((v >> (shift * 4)) & 0xf) as usize;
            if nib != 0 || started || shift == 0 {
                started = true;
                self.s(&"0123456789abcdef"[nib..nib + 1]);
            }
        }
        self
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
    fn write_to(&self, fd: i32) {
        let mut off = 0;
        while off < self.n {
            // SAFETY: write(2) of our own buffer; async-signal-safe.
            let r = unsafe { libc::write(fd, self.b[off..].as_ptr().cast(), self.n - off) };
            if r <= 0 {
                break;
            }
            off += r as usize;
        }
    }
}

/// What the SIGBUS report needs, read from the atomics.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub json: bool,
    pub phase: usize,
    pub run: usize,
    pub failed: usize,
    pub base: usize,
    pub len: usize,
    pub page: usize,
}

impl Snapshot {
    pub fn load() -> Snapshot {
        Snapshot {
            json: JSON.load(Relaxed),
            phase: PHASE.load(Relaxed),
            run: RUN.load(Relaxed),
            failed: FAILED.load(Relaxed),
            base: BASE.load(Relaxed),
            len: LEN.load(Relaxed),
            page: PAGE.load(Relaxed),
        }
    }
}

/// Formats the SIGBUS report (separate from the handler to be testable).
pub fn sigbus_report(out: &mut LineBuf, addr: usize, st: &Snapshot) {
    let name = super::report::PHASES
        .get(st.phase)
        .copied()
        .unwrap_or("setup");
    let (base, len, page) = (st.base, st.len, st.page);
    let inside = len > 0 && addr >= base && addr < base + len;
    let page_index = if inside {
        (addr - base) / page.max(1)
    } else {
        0
    };
    let pages = len / page.max(1);
    if st.json {
        out.s("{\"ok\":false,\"exit_code\":")
            .dec(EXIT_SIGBUS as u64)
            .s(",\"error\":{\"kind\":\"SIGBUS\",\"phase\":\"")
            .s(name)
            .s("\",\"addr\":\"")
            .hex(addr as u64)
            .s("\",\"page\":");
        if inside {
            out.dec(page_index as u64);
        } else {
            out.s("null");
        }
        out.s(",\"pages\":").dec(pages as u64).s("}}\n");
    } else {
        out.s("# SIGBUS at ").hex(addr as u64);
        if inside {
            out.s(": page ")
                .dec(page_index as u64)
                .s(" of ")
                .dec(pages as u64)
                .s(" of the buffer");
        } else {
            out.s(" (outside the buffer)");
        }
        out.s(", during ").s(name).s("\n");
        let run = st.run;
        let failed = st.failed + 1;
        out.s("not ok ").dec(run as u64 + 1).s(" ").s(name).s("\n");
        let planned = super::report::PHASES.len();
        out.s("# totals: pass:")
            .dec((run + 1 - failed) as u64)
            .s(" fail:")
            .dec(failed as u64)
            .s(" missing:")
            .dec(planned.saturating_sub(run + 1) as u64)
            .s("\n");
    }
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let mut b = LineBuf::default();
    sigbus_report(&mut b, addr, &Snapshot::load());
    b.write_to(1);
    let mut e = LineBuf::default();
    e.s("vcram-workload: SIGBUS at ")
        .hex(addr as u64)
        .s(", exit ")
        .dec(EXIT_SIGBUS as u64)
        .s("\n");
    e.write_to(2);
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(EXIT_SIGBUS) };
}

extern "C" fn on_release(_sig: libc::c_int) {
    RELEASED.store(true, Relaxed);
}

fn install(sig: i32, handler: usize, flags: i32) {
    // SAFETY: a zeroed sigaction with a valid handler is a valid argument.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Installs the SIGBUS handler.
pub fn install_sigbus() {
    let h: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_sigbus;
    install(
        libc::SIGBUS,
        h as usize,
        libc::SA_SIGINFO | libc::SA_NODEFER,
    );
}

/// Catches SIGUSR1, SIGINT and SIGTERM as "release the hold" (no
/// SA_RESTART, so a blocked poll returns).
pub fn install_release() {
    RELEASED.store(false, Relaxed);
    let h: extern "C" fn(libc::c_int) = on_release;
    for s in [libc::SIGUSR1, libc::SIGINT, libc::SIGTERM] {
        install(s, h as usize, 0);
    }
}

/// Restores the default action of the release signals.
pub fn uninstall_release() {
    for s in [libc::SIGUSR1, libc::SIGINT, libc::SIGTERM] {
        install(s, libc::SIG_DFL, 0);
    }
}

pub fn released() -> bool {
    RELEASED.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linebuf_formats() {
        let mut b = LineBuf::default();
        b.s("a")
            .dec(0)
            .s(" ")
            .dec(1234567890123)
            .s(" ")
            .hex(0)
            .s(" ")
            .hex(0x7f00_dead_b000);
        assert_eq!(b.as_bytes(), b"a0 1234567890123 0x0 0x7f00deadb000");
        let mut b = LineBuf::default();
        for _ in 0..100 {
            b.s("0123456789");
        }
        assert_eq!(b.as_bytes().len(), 512);
    }

    #[test]
    fn sigbus_reports() {
        let mut st = Snapshot {
            json: false,
            phase: 1,
            run: 1,
            failed: 0,
            base: 0x10000,
            len: 0x4000,
            page: 0x1000,
        };
        let mut b = LineBuf::default();
        sigbus_report(&mut b, 0x12345, &st);
        assert_eq!(
            std::str::from_utf8(b.as_bytes()).unwrap(),
            "# SIGBUS at 0x12345: page 2 of 4 of the buffer, during fill\n\
             not ok 2 fill\n\
             # totals: pass:1 fail:1 missing:8\n"
        );
        st.json = true;
        let mut b = LineBuf::default();
        sigbus_report(&mut b, 0x12345, &st);
        assert_eq!(
            std::str::from_utf8(b.as_bytes()).unwrap(),
            "{\"ok\":false,\"exit_code\":3,\"error\":{\"kind\":\"SIGBUS\",\"phase\":\"fill\",\"addr\":\"0x12345\",\"page\":2,\"pages\":4}}\n"
        );
        let mut b = LineBuf::default();
        sigbus_report(&mut b, 0x1, &st);
        assert!(std::str::from_utf8(b.as_bytes())
            .unwrap()
            .contains("\"page\":null"));
    }

    /// A real SIGBUS (a shared mapping of an empty file, touched) in a
    /// forked child: the handler reports it on fd 1 and exits with 3.
    #[test]
    fn real_sigbus_in_child() {
        let path = std::env::temp_dir().join(format!("vcram-sigbus-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        use std::os::fd::AsRawFd;
        let page = 4096;
        // SAFETY: a fresh shared mapping of our file; the child touches it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let mut fds = [0; 2];
        // SAFETY: plain syscalls; the child only makes async-signal-safe calls.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::dup2(fds[1], 1);
                install_sigbus();
                set_format_json(false);
                set_buffer(p.cast(), page, page);
                set_counts(1, 0);
                set_phase(1);
                std::ptr::write_volatile(p.cast::<u8>().add(100), 1);
                libc::_exit(99);
            }
            libc::close(fds[1]);
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n as usize]);
            }
            libc::close(fds[0]);
            libc::munmap(p, page);
            std::fs::remove_file(&path).unwrap();
            assert!(libc::WIFEXITED(status), "status {status:#x}");
            assert_eq!(libc::WEXITSTATUS(status), EXIT_SIGBUS);
            let out = String::from_utf8(out).unwrap();
            let want = format!(
                "# SIGBUS at {:#x}: page 0 of 1 of the buffer, during fill\nnot ok 2 fill\n",
                p as usize + 100
            );
            assert!(out.starts_with(&want), "{out}");
        }
    }
}
