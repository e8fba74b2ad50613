// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! In-guest check of the test platform: NUMA layout and the untouched window.
//!
//! The launcher passes the window's base, size and node on the kernel command
//! line (`vcram.window_base=`, `vcram.window_size=`, `vcram.window_node=`).
//! Before any driver claims it, the window's node must be possible but have no
//! memory, and no `System RAM` may cover the window.

use vcram_guest::ktap::Ktap;
use vcram_guest::sysfs;

fn main() {
    let mut t = Ktap::new(6);
    let param = |k: &str| sysfs::cmdline_param(k).and_then(|v| sysfs::parse_u64(&v));
    let (base, size, node) = match (
        param("vcram.window_base"),
        param("vcram.window_size"),
        param("vcram.window_node"),
    ) {
        (Some(b), Some(s), Some(n)) => (b, s, n as u32),
        _ => {
            t.diag("vcram.window_* missing from the kernel command line; was the guest started by scripts/launch?");
            (0, 0, 1)
        }
    };
    t.diag(&format!("window base={base:#x} size={size:#x} node={node}"));

    let possible = sysfs::node_state("possible").unwrap_or_default();
    t.check("window_node_possible", possible.contains(&node), || {
        format!("node {node} not in possible nodes {possible:?}")
    });

    let has_memory = sysfs::node_state("has_memory").unwrap_or_default();
    t.check(
        "window_node_has_no_memory",
        !has_memory.contains(&node),
        || format!("node {node} already has memory: has_memory={has_memory:?}"),
    );

    let total = sysfs::node_mem_total_kib(node).unwrap_or(0);
    t.check("window_node_memtotal_zero", total == 0, || {
        format!("node{node} MemTotal is {total} kB")
    });

    t.check("boot_memory_on_node0", has_memory == [0], || {
        format!("has_memory is {has_memory:?}, expected [0]")
    });

    let ram = sysfs::system_ram_ranges().unwrap_or_default();
    let overlap = ram
        .iter()
        .any(|&(a, b)| size > 0 && a < base + size && b >= base);
    t.check("window_not_system_ram", size > 0 && !overlap, || {
        format!("System RAM ranges {ram:x?} overlap the window (or no window given)")
    });

    let cpus_on_node =
        std::fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist"))
            .unwrap_or_default();
    t.check(
        "window_node_has_no_cpus",
        cpus_on_node.trim().is_empty(),
        || format!("node{node} has CPUs {}", cpus_on_node.trim()),
    );

    std::process::exit(t.finish());
}
