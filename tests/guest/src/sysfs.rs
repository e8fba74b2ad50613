// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Reading the guest's NUMA and memory state from procfs and sysfs.

use std::fs;
use std::io;

const NODE_DIR: &str = "/sys/devices/system/node";

/// Parses a kernel node list such as `0-2,5` into node numbers.
pub fn parse_node_list(s: &str) -> Option<Vec<u32>> {
    let s = s.trim();
    let mut out = Vec::new();
    if s.is_empty() {
        return Some(out);
    }
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// Reads a node state list, e.g. `possible`, `online`, `has_memory`.
pub fn node_state(state: &str) -> io::Result<Vec<u32>> {
    let raw = fs::read_to_string(format!("{NODE_DIR}/{state}"))?;
    parse_node_list(&raw).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad node list in {state}: {raw:?}"),
        )
    })
}

/// `MemTotal` of a node in KiB, or `None` when the node has no sysfs entry.
pub fn node_mem_total_kib(node: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("{NODE_DIR}/node{node}/meminfo")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.split_once("MemTotal:")?.1;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A `key=value` parameter from the kernel command line.
pub fn cmdline_param(key: &str) -> Option<String> {
    let cmdline = fs::read_to_string("/proc/cmdline").ok()?;
    cmdline.split_whitespace().find_map(|w| {
        let (k, v) = w.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

/// Parses a decimal or `0x` hexadecimal number.
pub fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The `System RAM` ranges of `/proc/iomem` (needs root to see addresses).
pub fn system_ram_ranges() -> io::Result<Vec<(u64, u64)>> {
    let text = fs::read_to_string("/proc/iomem")?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with(' ') && l.contains("System RAM"))
        .filter_map(|l| {
            let (range, _) = l.split_once(" : ")?;
            let (a, b) = range.trim().split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        assert_eq!(parse_node_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_node_list("0,2-4"), Some(vec![0, 2, 3, 4]));
        assert_eq!(parse_node_list(""), Some(vec![]));
        assert_eq!(parse_node_list("3-1"), None);
        assert_eq!(parse_node_list("x"), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0x100000000"), Some(1 << 32));
        assert_eq!(parse_u64("4096"), Some(4096));
        assert_eq!(parse_u64("0xzz"), None);
    }
}
