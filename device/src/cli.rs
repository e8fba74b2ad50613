// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Command line of `vcram-device`.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

use crate::daemon::DaemonOptions;
use crate::device::DeviceOptions;
use crate::protocol::VCRAM_PAGE_SIZE;
use crate::window::WindowSpec;

/// A bad option value (what the value parsers report; clap prefixes the option).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("empty size")]
    EmptySize,
    #[error("bad size {0:?}: expected a number, e.g. 512M")]
    SizeNotANumber(String),
    #[error("bad size {0:?}: {1}")]
    BadSize(String, String),
    #[error("bad size {0:?}: unknown suffix {1:?} (use K, M, G or T)")]
    UnknownSuffix(String, String),
    #[error("size {0:?} does not fit in 64 bits")]
    SizeTooLarge(String),
    #[error("bad {what} {value:?}: {reason}")]
    NotANumber {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("percentage {0} is above 100")]
    PercentAbove100(u32),
    #[error("zstd level {0} is outside {1}..={2} (0 excluded)")]
    Level(i32, i32, i32),
    #[error("queue size {0} must be a power of two")]
    QueueSize(u16),
    #[error("thread count {0} must be between 1 and {MAX_THREADS}")]
    Threads(usize),
}

fn number<T: std::str::FromStr>(what: &'static str, s: &str) -> Result<T, ValueError>
where
    T::Err: std::fmt::Display,
{
    s.trim()
        .parse()
        .map_err(|e: T::Err| ValueError::NotANumber {
            what,
            value: s.to_string(),
            reason: e.to_string(),
        })
}

/// Parse a size: decimal or 0x-hex, with an optional K/M/G/T suffix (powers of 1024; "KiB",
/// "KB" and "k" are accepted too).
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ValueError::EmptySize);
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16)
            .map_err(|e| ValueError::BadSize(s.to_string(), e.to_string()));
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(ValueError::SizeNotANumber(s.to_string()));
    }
    let n: u64 = num
        .parse()
        .map_err(|e: std::num::ParseIntError| ValueError::BadSize(s.to_string(), e.to_string()))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(ValueError::UnknownSuffix(s.to_string(), other.to_string())),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| ValueError::SizeTooLarge(s.to_string()))
}

fn parse_percent(s: &str) -> Result<u32, ValueError> {
    let v: u32 = number("percentage", s.trim().trim_end_matches('%'))?;
    if v > 100 {
        return Err(ValueError::PercentAbove100(v));
    }
    Ok(v)
}

fn parse_level(s: &str) -> Result<i32, ValueError> {
    let v: i32 = number("zstd level", s)?;
    let r = zstd::compression_level_range();
    if !r.contains(&v) || v == 0 {
        return Err(ValueError::Level(v, *r.start(), *r.end()));
    }
    Ok(v)
}

fn parse_queue_size(s: &str) -> Result<u16, ValueError> {
    let v: u16 = number("queue size", s)?;
    if v == 0 || !v.is_power_of_two() {
        return Err(ValueError::QueueSize(v));
    }
    Ok(v)
}

/// Most worker threads accepted.
pub const MAX_THREADS: usize = 256;

fn parse_threads(s: &str) -> Result<usize, ValueError> {
    let v: usize = number("thread count", s)?;
    if !(1..=MAX_THREADS).contains(&v) {
        return Err(ValueError::Threads(v));
    }
    Ok(v)
}

/// Options that contradict each other or the environment.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("--low-watermark ({low}%) must be below --high-watermark ({high}%)")]
    Watermarks { low: u32, high: u32 },
    #[error("--hysteresis ({hyst}%) must be below --low-watermark ({low}%): a pressure level clears only when use falls the hysteresis below the low watermark")]
    Hysteresis { hyst: u32, low: u32 },
    #[error("--physical-size ({physical} bytes) must be larger than the metadata of the window ({metadata} bytes: 16 bytes per 4 KiB page of --window-size)")]
    PhysicalBelowMetadata { physical: u64, metadata: u64 },
    #[error("--window-base {0:#x} is not 4 KiB aligned")]
    UnalignedBase(u64),
    #[error("--window-size {0:#x} must be a nonzero multiple of 4 KiB")]
    BadWindowSize(u64),
    #[error("--physical-size must be above 0")]
    ZeroPhysical,
    #[error("--raw-threshold {0} must be between 64 and 4096 bytes")]
    RawThreshold(u64),
    #[error("--socket {}: directory {} does not exist", socket.display(), dir.display())]
    NoSocketDir { socket: PathBuf, dir: PathBuf },
    #[error("--fault: {0}")]
    Fault(#[from] crate::fault::FaultError),
    #[error("--window-file {}: {source}", path.display())]
    WindowFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The cores this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_THREADS)
}

/// vhost-user backend emulating a compressed-RAM (CXL) memory expander.
#[derive(Parser, Debug, Clone)]
#[command(name = "vcram-device", version, about)]
#[command(group(ArgGroup::new("window").required(true).multiple(true).args(["window_base", "window_file"])))]
pub struct Cli {
    /// vhost-user socket to listen on (QEMU connects to it).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Control socket for `vcramctl` (stats).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Guest-physical base of the window (the pc-dimm), e.g. 0x100000000 or 4G.
    #[arg(long, value_name = "ADDR", value_parser = parse_size)]
    pub window_base: Option<u64>,
    /// Size of the window (logical capacity); the region found must have exactly this size.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub window_size: Option<u64>,
    /// The window's memory-backend file: the region mapped from this file (same inode) is the window.
    #[arg(long, value_name = "PATH")]
    pub window_file: Option<PathBuf>,
    /// NUMA node of the window, reported in config space.
    #[arg(long, default_value_t = 1)]
    pub node: u32,
    /// Physical capacity (default: half the window).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub physical_size: Option<u64>,
    /// zstd compression level.
    #[arg(long, default_value = "1", value_parser = parse_level, allow_hyphen_values = true)]
    pub level: i32,
    /// Low watermark, percent of physical capacity.
    #[arg(long, default_value = "75", value_parser = parse_percent)]
    pub low_watermark: u32,
    /// High watermark, percent of physical capacity.
    #[arg(long, default_value = "90", value_parser = parse_percent)]
    pub high_watermark: u32,
    /// Hysteresis, percent of physical capacity: a level clears when use falls this far below it.
    #[arg(long, default_value = "5", value_parser = parse_percent)]
    pub hysteresis: u32,
    /// Interval between scans for directly written pages, milliseconds (0: no periodic scan).
    #[arg(long, default_value_t = 1000)]
    pub scan_interval_ms: u64,
    /// Virtio device id QEMU is told to use (informational here; QEMU's `virtio-id`).
    #[arg(long, default_value_t = 6)]
    pub virtio_id: u32,
    /// Pages whose image would be larger than this are stored raw.
    #[arg(long, value_name = "SIZE", default_value = "4032", value_parser = parse_size)]
    pub raw_threshold: u64,
    /// Largest virtqueue size accepted.
    #[arg(long, default_value = "1024", value_parser = parse_queue_size)]
    pub queue_size: u16,
    /// Release the host memory of discarded runs of 64+ pages (MADV_REMOVE on the shared
    /// window file) instead of zeroing them with memset; slower per page.
    #[arg(long)]
    pub punch_holes: bool,
    /// Worker threads for scanning and compression (default: the available cores).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Inject a fault, for tests of the guest driver (repeatable): drop-requests-after=N (answer
    /// N requests per connection, then take requests off the queue without carrying them out
    /// or answering), window-delay-ms=N (report the window N ms after finding it),
    /// nominate-empty=N (answer the first N NOMINATE requests with no entry),
    /// early-events (queue 2 valid and 3 malformed events before the window is reported).
    #[arg(long = "fault", value_name = "FAULT", value_parser = crate::fault::parse_fault)]
    pub faults: Vec<crate::fault::Fault>,
    /// Serve a single frontend connection, then exit.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub observe: crate::observe::ObserveOptions,
}

impl Cli {
    /// Cross-option checks; returns the daemon options.
    pub fn into_options(self) -> Result<DaemonOptions, OptionsError> {
        if self.low_watermark >= self.high_watermark {
            return Err(OptionsError::Watermarks {
                low: self.low_watermark,
                high: self.high_watermark,
            });
        }
        if self.hysteresis >= self.low_watermark {
            return Err(OptionsError::Hysteresis {
                hyst: self.hysteresis,
                low: self.low_watermark,
            });
        }
        if let (Some(p), Some(w)) = (self.physical_size, self.window_size) {
            let meta = w / VCRAM_PAGE_SIZE * crate::model::store::METADATA_BYTES_PER_PAGE as u64;
            if p <= meta {
                return Err(OptionsError::PhysicalBelowMetadata {
                    physical: p,
                    metadata: meta,
                });
            }
        }
        if let Some(b) = self.window_base {
            if b % VCRAM_PAGE_SIZE != 0 {
                return Err(OptionsError::UnalignedBase(b));
            }
        }
        if let Some(s) = self.window_size {
            if s == 0 || s % VCRAM_PAGE_SIZE != 0 {
                return Err(OptionsError::BadWindowSize(s));
            }
        }
        if self.physical_size == Some(0) {
            return Err(OptionsError::ZeroPhysical);
        }
        if !(64..=VCRAM_PAGE_SIZE).contains(&self.raw_threshold) {
            return Err(OptionsError::RawThreshold(self.raw_threshold));
        }
        if let Some(dir) = self.socket.parent() {
            if !dir.as_os_str().is_empty() && !dir.is_dir() {
                return Err(OptionsError::NoSocketDir {
                    socket: self.socket.clone(),
                    dir: dir.to_path_buf(),
                });
            }
        }
        let mut window = WindowSpec {
            base: self.window_base,
            size: self.window_size,
            ..Default::default()
        };
        if let Some(f) = &self.window_file {
            window = window
                .with_file(f)
                .map_err(|source| OptionsError::WindowFile {
                    path: f.clone(),
                    source,
                })?;
        }
        let faults = crate::fault::FaultPlan::new(&self.faults)?;
        Ok(DaemonOptions {
            socket: self.socket,
            control_socket: self.control_socket,
            once: self.once,
            observe: self.observe,
            device: DeviceOptions {
                node: self.node,
                window,
                physical_size: self.physical_size,
                level: self.level,
                raw_threshold: self.raw_threshold as usize,
                low_watermark: self.low_watermark,
                high_watermark: self.high_watermark,
                hysteresis: self.hysteresis,
                scan_interval_ms: self.scan_interval_ms,
                queue_size: self.queue_size,
                punch_holes: self.punch_holes,
                threads: self.threads.unwrap_or_else(default_threads),
                faults,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(
            parse_size("12Q"),
            Err(ValueError::UnknownSuffix("12Q".into(), "q".into()))
        );
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("0x100000000"), Ok(1 << 32));
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("0xzz").is_err());
    }

    fn parse(args: &[&str]) -> Result<DaemonOptions, String> {
        let mut v = vec!["vcram-device"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .into_options()
            .map_err(|e| e.to_string())
    }

    /// `parse` with `--socket s --window-base 0` in front of `extra`.
    fn parse_with_base(extra: &[&str]) -> Result<DaemonOptions, String> {
        parse(&[&["--socket", "s", "--window-base", "0"], extra].concat())
    }

    #[test]
    fn good_command_line() {
        let o = parse(&[
            "--socket",
            "/tmp/x.sock",
            "--window-base",
            "4G",
            "--window-size",
            "1G",
            "--physical-size",
            "256M",
            "--level",
            "3",
            "--low-watermark",
            "60",
            "--high-watermark",
            "85%",
        ])
        .unwrap();
        assert_eq!(o.device.window.base, Some(1 << 32));
        assert_eq!(o.device.window.size, Some(1 << 30));
        assert_eq!(o.device.physical_size, Some(256 << 20));
        assert_eq!(o.device.level, 3);
        assert_eq!(o.device.high_watermark, 85);
        assert_eq!(o.device.node, 1);
        assert_eq!(o.device.threads, default_threads());
        let o = parse_with_base(&["--threads", "3"]).unwrap();
        assert_eq!(o.device.threads, 3);
        let o = parse_with_base(&["--level", "-3"]).unwrap();
        assert_eq!(o.device.level, -3);
    }

    #[test]
    fn fault_options() {
        use crate::fault::FaultPlan;
        let base = ["--socket", "s", "--window-base", "0"];
        let with = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            parse(&a)
        };
        assert!(with(&[]).unwrap().device.faults.is_empty());
        let o = with(&[
            "--fault",
            "drop-requests-after=1",
            "--fault",
            "window-delay-ms=1500",
            "--fault",
            "nominate-empty=60",
            "--fault",
            "early-events",
        ])
        .unwrap();
        assert_eq!(
            o.device.faults,
            FaultPlan {
                drop_requests_after: Some(1),
                window_delay_ms: Some(1500),
                nominate_empty: Some(60),
                early_events: true,
            }
        );
        let e = with(&["--fault", "explode"]).unwrap_err();
        assert!(
            e.contains("--fault <FAULT>") && e.contains("unknown fault \"explode\""),
            "{e}"
        );
        let e = with(&["--fault", "drop-requests-after"]).unwrap_err();
        assert!(e.contains("needs a value: drop-requests-after=N"), "{e}");
        let e = with(&["--fault", "window-delay-ms=x"]).unwrap_err();
        assert!(e.contains("bad number \"x\""), "{e}");
        let e = with(&["--fault", "early-events", "--fault", "early-events"]).unwrap_err();
        assert_eq!(e, "--fault: fault early-events given twice");
    }

    #[test]
    fn bad_command_lines() {
        let cases: &[&[&str]] = &[
            &["--window-base", "4G"],                    // no socket
            &["--socket", "s"],                          // no window
            &["--socket", "s", "--window-base", "4Q"],   // bad size
            &["--socket", "s", "--window-base", "4097"], // unaligned
            &["--socket", "s", "--window-file", "/nonexistent/window"],
            &["--socket", "/nonexistent-dir/s", "--window-base", "0"],
        ];
        for c in cases {
            let e = parse(c).unwrap_err();
            assert!(!e.is_empty(), "{c:?}");
        }
        let with_base: &[&[&str]] = &[
            &["--window-size", "100"],
            &["--level", "99"],
            &["--level", "x"],
            &["--low-watermark", "101"],
            &["--low-watermark", "90", "--high-watermark", "80"],
            &["--raw-threshold", "8K"],
            &["--queue-size", "100"],
            &["--threads", "0"],
            &["--threads", "100000"],
            &["--physical-size", "0"],
        ];
        for c in with_base {
            let e = parse_with_base(c).unwrap_err();
            assert!(!e.is_empty(), "{c:?}");
        }
        let e = parse_with_base(&["--low-watermark", "5", "--hysteresis", "50"]).unwrap_err();
        assert!(
            e.contains("--hysteresis") && e.contains("--low-watermark"),
            "{e}"
        );
        let e = parse_with_base(&["--window-size", "1G", "--physical-size", "4M"]).unwrap_err();
        assert!(e.contains("metadata"), "{e}");
        // just above the metadata is accepted
        assert!(parse_with_base(&["--window-size", "1G", "--physical-size", "5M"]).is_ok());
        let e = parse(&["--socket", "s", "--window-file", "/nonexistent/window"]).unwrap_err();
        assert!(e.contains("/nonexistent/window"), "{e}");
    }
}
