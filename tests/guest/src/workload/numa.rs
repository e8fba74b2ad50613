// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Raw NUMA syscalls (mbind, set_mempolicy, move_pages) and the anonymous
//! mapping they act on. No libnuma: it refuses private nodes.

use std::collections::BTreeMap;
use std::io;
use std::ptr;

/// Nodes a mask can name (1024 bits, as libnuma's default).
pub const MAX_NODES: u32 = 1024;
const MASK_WORDS: usize = MAX_NODES as usize / 64;

pub const MPOL_DEFAULT: i32 = 0;
pub const MPOL_BIND: i32 = 2;
/// move_pages: move pages mapped only by this process.
pub const MPOL_MF_MOVE: i32 = 1 << 1;
/// madvise: fault in writable pages without changing them (Linux 5.14).
pub const MADV_POPULATE_WRITE: i32 = 23;

/// A node mask for mbind/set_mempolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMask([u64; MASK_WORDS]);

impl NodeMask {
    pub fn from_nodes(nodes: &[u32]) -> NodeMask {
        let mut m = [0u64; MASK_WORDS];
        for &n in nodes {
            assert!(n < MAX_NODES, "node {n} out of range");
            m[n as usize / 64] |= 1 << (n % 64);
        }
        NodeMask(m)
    }

    pub fn contains(&self, node: u32) -> bool {
        node < MAX_NODES && self.0[node as usize / 64] & (1 << (node % 64)) != 0
    }

    fn as_ptr(&self) -> *const libc::c_ulong {
        self.0.as_ptr().cast()
    }

    /// The `maxnode` argument: the kernel reads `maxnode - 1` bits.
    fn maxnode() -> libc::c_ulong {
        MAX_NODES as libc::c_ulong + 1
    }
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `mbind(addr, len, mode, nodes, flags)` (the kernel checks the range).
pub fn mbind(addr: usize, len: usize, mode: i32, nodes: &NodeMask, flags: u32) -> io::Result<()> {
    // SAFETY: the kernel only reads the mask; the range is checked by it.
    check(unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            mode as libc::c_long,
            nodes.as_ptr(),
            NodeMask::maxnode(),
            flags as libc::c_ulong,
        )
    })
    .map(drop)
}

/// `set_mempolicy(mode, nodes)`; `None` passes no mask (for MPOL_DEFAULT).
pub fn set_mempolicy(mode: i32, nodes: Option<&NodeMask>) -> io::Result<()> {
    let (p, max) = match nodes {
        Some(m) => (m.as_ptr(), NodeMask::maxnode()),
        None => (ptr::null(), 0),
    };
    // SAFETY: the kernel only reads the mask.
    check(unsafe { libc::syscall(libc::SYS_set_mempolicy, mode as libc::c_long, p, max) }).map(drop)
}

/// `move_pages(0, ...)` on this process. With `nodes`, moves each page to
/// its node; without, only queries. `status` receives a node number or a
/// negative errno per page. Returns the syscall's result (the number of
/// pages that could not be moved, for moves).
pub fn move_pages(
    pages: &[*mut u8],
    nodes: Option<&[i32]>,
    status: &mut [i32],
    flags: i32,
) -> io::Result<usize> {
    assert_eq!(pages.len(), status.len());
    if let Some(n) = nodes {
        assert_eq!(n.len(), pages.len());
    }
    let np = nodes.map_or(ptr::null(), |n| n.as_ptr());
    // SAFETY: arrays have `pages.len()` entries; status is written.
    let r = check(unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0 as libc::c_long,
            pages.len() as libc::c_ulong,
            pages.as_ptr(),
            np,
            status.as_mut_ptr(),
            flags as libc::c_long,
        )
    })?;
    Ok(r as usize)
}

/// Where each page is: a node number, or a negative errno
/// (`-ENOENT`: not present).
pub fn query_nodes(pages: &[*mut u8]) -> io::Result<Vec<i32>> {
    let mut status = vec![i32::MIN; pages.len()];
    move_pages(pages, None, &mut status, 0)?;
    Ok(status)
}

/// Pages per node and per error of a move_pages status array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub per_node: BTreeMap<u32, usize>,
    /// errno (positive) -> pages
    pub errors: BTreeMap<i32, usize>,
}

impl Placement {
    pub fn from_status(status: &[i32]) -> Placement {
        let mut p = Placement::default();
        for &s in status {
            if s >= 0 {
                *p.per_node.entry(s as u32).or_default() += 1;
            } else {
                *p.errors.entry(s.saturating_neg()).or_default() += 1;
            }
        }
        p
    }

    /// Pages on a node outside `nodes`, or with an error.
    pub fn misplaced(&self, nodes: &[u32]) -> usize {
        let off: usize = self
            .per_node
            .iter()
            .filter(|(n, _)| !nodes.contains(n))
            .map(|(_, c)| c)
            .sum();
        off + self.errors.values().sum::<usize>()
    }

    pub fn absent(&self) -> usize {
        self.errors.get(&libc::ENOENT).copied().unwrap_or(0)
    }

    /// `node0=12 node1=3 absent=1 EFAULT=2`
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .per_node
            .iter()
            .map(|(n, c)| format!("node{n}={c}"))
            .collect();
        parts.extend(
            self.errors
                .iter()
                .map(|(e, c)| format!("{}={c}", errno_name(*e))),
        );
        if parts.is_empty() {
            "no pages".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Short name of an errno that move_pages reports per page.
pub fn errno_name(e: i32) -> String {
    match e {
        libc::ENOENT => "absent".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EACCES => "EACCES".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EIO => "EIO".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::E2BIG => "E2BIG".into(),
        libc::EPERM => "EPERM".into(),
        libc::EAGAIN => "EAGAIN".into(),
        e => format!("errno{e}"),
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// A private anonymous mapping; unmapped on drop unless already unmapped.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    pub fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address of every page.
    pub fn page_addrs(&self, page: usize) -> Vec<*mut u8> {
        // SAFETY: offsets stay inside the mapping.
        (0..self.len / page)
            .map(|i| unsafe { self.ptr.add(i * page) })
            .collect()
    }

    pub fn madvise(&self, advice: i32) -> io::Result<()> {
        self.madvise_range(0, self.len, advice)
    }

    pub fn madvise_range(&self, off: usize, len: usize, advice: i32) -> io::Result<()> {
        assert!(off + len <= self.len);
        // SAFETY: the range lies inside our mapping.
        let r = unsafe { libc::madvise(self.ptr.add(off).cast(), len, advice) };
        check(r as libc::c_long).map(drop)
    }

    /// Unmaps now, reporting the error (the drop ignores it).
    pub fn unmap(mut self) -> io::Result<()> {
        let (p, len) = (self.ptr, self.len);
        self.len = 0;
        // SAFETY: our own mapping, not used after this.
        let r = unsafe { libc::munmap(p.cast(), len) };
        check(r as libc::c_long).map(drop)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let m = NodeMask::from_nodes(&[0, 1, 65, 1023]);
        assert!(m.contains(0) && m.contains(1) && m.contains(65) && m.contains(1023));
        assert!(!m.contains(2) && !m.contains(64) && !m.contains(5000));
        assert_eq!(m.0[0], 0b11);
        assert_eq!(m.0[1], 0b10);
    }

    #[test]
    fn placement_counts() {
        let p = Placement::from_status(&[0, 0, 1, -libc::ENOENT, -libc::EFAULT, 1]);
        assert_eq!(p.per_node.get(&0), Some(&2));
        assert_eq!(p.per_node.get(&1), Some(&2));
        assert_eq!(p.absent(), 1);
        assert_eq!(p.misplaced(&[1]), 4);
        assert_eq!(p.misplaced(&[0, 1]), 2);
        assert_eq!(p.summary(), "node0=2 node1=2 absent=1 EFAULT=1");
        assert_eq!(Placement::default().summary(), "no pages");
    }

    /// Real syscalls on the host: node 0 always exists.
    #[test]
    fn bind_touch_query_move_on_node0() {
        let page = page_size();
        let pages = 64;
        let m = Mapping::new(pages * page).unwrap();
        mbind(
            m.ptr() as usize,
            m.len(),
            MPOL_BIND,
            &NodeMask::from_nodes(&[0]),
            0,
        )
        .unwrap();
        let addrs = m.page_addrs(page);
        // untouched: not present
        let st = query_nodes(&addrs).unwrap();
        assert!(st.iter().all(|&s| s == -libc::ENOENT), "{st:?}");
        for &a in &addrs {
            // SAFETY: inside the mapping.
            unsafe { a.write(1) };
        }
        let st = query_nodes(&addrs).unwrap();
        assert!(st.iter().all(|&s| s == 0), "{st:?}");
        let nodes = vec![0i32; pages];
        let mut status = vec![-1; pages];
        let r = move_pages(&addrs, Some(&nodes), &mut status, MPOL_MF_MOVE).unwrap();
        assert_eq!(r, 0);
        assert!(status.iter().all(|&s| s == 0), "{status:?}");
        m.madvise(libc::MADV_DONTNEED).unwrap();
        let st = query_nodes(&addrs).unwrap();
        assert!(st.iter().all(|&s| s == -libc::ENOENT), "{st:?}");
        m.unmap().unwrap();
        // a node that cannot exist
        let m = Mapping::new(page).unwrap();
        assert!(mbind(
            m.ptr() as usize,
            page,
            MPOL_BIND,
            &NodeMask::from_nodes(&[1000]),
            0
        )
        .is_err());
    }

    #[test]
    fn set_mempolicy_bind_and_reset() {
        // runs in a test thread: the policy is per thread
        set_mempolicy(MPOL_BIND, Some(&NodeMask::from_nodes(&[0]))).unwrap();
        set_mempolicy(MPOL_DEFAULT, None).unwrap();
        assert!(set_mempolicy(MPOL_BIND, Some(&NodeMask::from_nodes(&[1000]))).is_err());
    }
}
