// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! `vcramctl stats [--json|--prometheus] [--watch SECONDS]`: statistics of a running
//! vcram-device, read over its control socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};

use vcram_device::control;
use vcram_device::stats::{render_prometheus, render_table, Snapshot};

#[derive(Parser)]
#[command(name = "vcramctl", version, about = "Inspect a running vcram-device")]
struct Cli {
    /// The device's control socket (--control-socket of vcram-device).
    #[arg(
        long,
        short = 's',
        env = "VCRAM_CONTROL_SOCKET",
        value_name = "PATH",
        global = true
    )]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print statistics.
    Stats {
        /// One JSON object per sample.
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Prometheus text exposition format.
        #[arg(long)]
        prometheus: bool,
        /// Repeat every SECONDS seconds.
        #[arg(long, value_name = "SECONDS", value_parser = parse_secs)]
        watch: Option<f64>,
        /// Run a scan pass first (finds directly written pages now).
        #[arg(long)]
        scan: bool,
    },
    /// Check the daemon answers.
    Ping,
}

/// Longest `--watch` interval: one day.
const MAX_WATCH_SECS: f64 = 86400.0;

/// What can go wrong in `vcramctl`.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error("bad interval {0:?}: {1}")]
    NotANumber(String, std::num::ParseFloatError),
    #[error("interval {0:?} must be a positive number of seconds")]
    NotPositive(String),
    #[error("interval {0:?} is too long (at most {MAX_WATCH_SECS} seconds)")]
    TooLong(String),
    #[error("interval {0:?} is too short")]
    TooShort(String),
    #[error("cannot talk to {}: {source}", path.display())]
    Talk {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("bad reply {0:?}: {1}")]
    BadReply(String, serde_json::Error),
    #[error("device: {0}")]
    Device(serde_json::Value),
}

fn parse_secs(s: &str) -> Result<f64, CtlError> {
    let v: f64 = s
        .parse()
        .map_err(|e| CtlError::NotANumber(s.to_string(), e))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(CtlError::NotPositive(s.to_string()));
    }
    if v > MAX_WATCH_SECS {
        return Err(CtlError::TooLong(s.to_string()));
    }
    if std::time::Duration::try_from_secs_f64(v).map_or(true, |d| d.is_zero()) {
        return Err(CtlError::TooShort(s.to_string()));
    }
    Ok(v)
}

fn talk(socket: &Path, cmd: &str) -> Result<String, CtlError> {
    control::request(socket, cmd).map_err(|source| CtlError::Talk {
        path: socket.to_path_buf(),
        source,
    })
}

fn fetch(socket: &Path, cmd: &str) -> Result<(String, Snapshot), CtlError> {
    let line = talk(socket, cmd)?;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| CtlError::BadReply(line.clone(), e))?;
    if let Some(err) = v.get("error") {
        return Err(CtlError::Device(err.clone()));
    }
    let s: Snapshot = serde_json::from_value(v).map_err(|e| CtlError::BadReply(line.clone(), e))?;
    Ok((line.trim_end().to_string(), s))
}

fn main() {
    let cli = Cli::parse();
    let Some(socket) = cli.socket else {
        eprintln!("vcramctl: no control socket: pass --socket PATH or set VCRAM_CONTROL_SOCKET");
        std::process::exit(2);
    };
    let r = match cli.cmd {
        Cmd::Ping => talk(&socket, "ping").map(|l| print!("{l}")),
        Cmd::Stats {
            json,
            prometheus,
            watch,
            scan,
        } => (|| {
            let cmd = if scan { "scan" } else { "stats" };
            loop {
                let (raw, s) = fetch(&socket, cmd)?;
                if json {
                    println!("{raw}");
                } else if prometheus {
                    print!("{}", render_prometheus(&s));
                } else {
                    if watch.is_some() {
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", render_table(&s));
                }
                match watch {
                    Some(w) => std::thread::sleep(Duration::from_secs_f64(w)),
                    None => return Ok(()),
                }
            }
        })(),
    };
    if let Err(e) = r {
        eprintln!("vcramctl: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["vcramctl", "stats", "--socket", "/x", "--json"]).unwrap();
        assert_eq!(c.socket, Some(PathBuf::from("/x")));
        assert!(Cli::try_parse_from(["vcramctl", "stats", "--json", "--prometheus"]).is_err());
        assert!(Cli::try_parse_from(["vcramctl", "stats", "--watch", "0"]).is_err());
        for bad in ["1e300", "86401", "inf", "NaN", "1e-300", "-1"] {
            assert!(
                Cli::try_parse_from(["vcramctl", "stats", "--watch", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(Cli::try_parse_from(["vcramctl", "stats", "--watch", "0.5"]).is_ok());
    }
}
