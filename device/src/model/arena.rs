// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Image arena: compressed page images live in size classes of `GRANULE`-byte steps
//! (64, 128, ..., 4096 bytes). Each class is a list of 256 KiB chunks cut into equal slots.
//! Every chunk keeps its own intrusive free list (the next free slot's index is written in the
//! freed slot itself), so the arena needs no per-image metadata besides the 32-bit slot index
//! kept in the page table. Chunks are anonymous mappings, backed lazily by the OS, and a chunk
//! whose last image goes away is unmapped: the daemon's memory follows what it holds, also
//! after the guest frees a lot.

use std::ptr::NonNull;

use crate::protocol::VCRAM_PAGE_SIZE;

/// Allocation granule of images (bytes). Physical use counts images rounded up to it.
pub const GRANULE: usize = 64;
pub const NUM_CLASSES: usize = VCRAM_PAGE_SIZE as usize / GRANULE;
const CHUNK_BYTES: usize = 256 * 1024;
const NONE: u32 = u32::MAX;

/// Round an image size up to the granule.
#[inline]
pub fn rounded(size: usize) -> usize {
    size.div_ceil(GRANULE).max(1) * GRANULE
}

/// Class index (0-based) for an image of `size` bytes (1..=4096).
#[inline]
pub fn class_of(size: usize) -> usize {
    (rounded(size) / GRANULE)
        .saturating_sub(1)
        .min(NUM_CLASSES - 1)
}

/// An anonymous private mapping, unmapped on drop.
struct ChunkMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value; access goes through &self/&mut self.
unsafe impl Send for ChunkMem {}

impl ChunkMem {
    fn new(len: usize) -> Option<ChunkMem> {
        // SAFETY: a fresh anonymous mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(ChunkMem {
            ptr: NonNull::new(p as *mut u8)?,
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is our mapping, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for ChunkMem {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping exactly once.
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) };
    }
}

#[derive(Default)]
struct Chunk {
    mem: Option<ChunkMem>,
    /// Local index of the first free slot (freed before), or NONE.
    free_head: u32,
    /// Slots never handed out start here.
    next_unused: u32,
    live: u32,
    in_partial: bool,
}

struct Class {
    slot_size: usize,
    per_chunk: u32,
    chunks: Vec<Chunk>,
    /// Chunks with room (not full), as a stack; allocation takes from the top.
    partial: Vec<u32>,
    live: u64,
}

impl Class {
    fn new(slot_size: usize) -> Self {
        Class {
            slot_size,
            per_chunk: (CHUNK_BYTES / slot_size) as u32,
            chunks: Vec::new(),
            partial: Vec::new(),
            live: 0,
        }
    }

    fn split(&self, slot: u32) -> (usize, usize) {
        (
            (slot / self.per_chunk) as usize,
            (slot % self.per_chunk) as usize,
        )
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut [u8]> {
        let (c, i) = self.split(slot);
        let size = self.slot_size;
        let off = i * size;
        self.chunks
            .get_mut(c)?
            .mem
            .as_mut()?
            .bytes_mut()
            .get_mut(off..off + size)
    }

    fn slot(&self, slot: u32) -> Option<&[u8]> {
        let (c, i) = self.split(slot);
        let off = i * self.slot_size;
        self.chunks
            .get(c)?
            .mem
            .as_ref()?
            .bytes()
            .get(off..off + self.slot_size)
    }

    fn alloc(&mut self) -> Option<u32> {
        loop {
            let Some(&ci) = self.partial.last() else {
                let ci = u32::try_from(self.chunks.len()).ok()?;
                if (ci as u64 + 1) * self.per_chunk as u64 >= NONE as u64 {
                    return None;
                }
                self.chunks.push(Chunk {
                    free_head: NONE,
                    in_partial: true,
                    ..Default::default()
                });
                self.partial.push(ci);
                continue;
            };
            let per_chunk = self.per_chunk;
            let bytes = per_chunk as usize * self.slot_size;
            let slot_size = self.slot_size;
            let ch = self.chunks.get_mut(ci as usize)?;
            if ch.mem.is_none() {
                ch.mem = Some(ChunkMem::new(bytes)?);
                ch.free_head = NONE;
                ch.next_unused = 0;
                ch.live = 0;
            }
            let local = if ch.free_head != NONE {
                let local = ch.free_head;
                let off = local as usize * slot_size;
                let link = ch.mem.as_ref()?.bytes().get(off..off + 4)?;
                ch.free_head = u32::from_le_bytes([link[0], link[1], link[2], link[3]]);
                local
            } else if ch.next_unused < per_chunk {
                ch.next_unused += 1;
                ch.next_unused - 1
            } else {
                // full (should not be on the stack): drop it from there and look again
                ch.in_partial = false;
                self.partial.pop();
                continue;
            };
            ch.live += 1;
            if ch.live == per_chunk {
                ch.in_partial = false;
                self.partial.pop();
            }
            self.live += 1;
            return Some(ci * per_chunk + local);
        }
    }

    fn free(&mut self, slot: u32) {
        let (c, i) = self.split(slot);
        let size = self.slot_size;
        let Some(ch) = self.chunks.get_mut(c) else {
            return;
        };
        let Some(mem) = ch.mem.as_mut() else {
            return;
        };
        let off = i * size;
        let Some(link) = mem.bytes_mut().get_mut(off..off + 4) else {
            return;
        };
        link.copy_from_slice(&ch.free_head.to_le_bytes());
        ch.free_head = i as u32;
        ch.live = ch.live.saturating_sub(1);
        self.live = self.live.saturating_sub(1);
        if ch.live == 0 {
            // give the memory back; the chunk stays (empty) for reuse
            ch.mem = None;
            ch.free_head = NONE;
            ch.next_unused = 0;
        }
        if !ch.in_partial {
            ch.in_partial = true;
            self.partial.push(c as u32);
        }
    }

    fn mapped_chunks(&self) -> usize {
        self.chunks.iter().filter(|c| c.mem.is_some()).count()
    }
}

/// All size classes.
pub struct Arena {
    classes: Vec<Class>,
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

impl Arena {
    pub fn new() -> Self {
        Arena {
            classes: (1..=NUM_CLASSES).map(|k| Class::new(k * GRANULE)).collect(),
        }
    }

    /// Store an image; returns its slot in class `class_of(image.len())`.
    pub fn store(&mut self, image: &[u8]) -> Option<u32> {
        if image.is_empty() || image.len() > VCRAM_PAGE_SIZE as usize {
            return None;
        }
        let class = self.classes.get_mut(class_of(image.len()))?;
        let slot = class.alloc()?;
        let dst = class.slot_mut(slot)?;
        dst[..image.len()].copy_from_slice(image);
        Some(slot)
    }

    /// Release the slot holding an image of `size` bytes.
    pub fn release(&mut self, size: usize, slot: u32) {
        if let Some(class) = self.classes.get_mut(class_of(size)) {
            class.free(slot);
        }
    }

    /// The image of `size` bytes in `slot`.
    pub fn get(&self, size: usize, slot: u32) -> Option<&[u8]> {
        let class = self.classes.get(class_of(size))?;
        class.slot(slot)?.get(..size)
    }

    /// Bytes of chunk memory mapped (the arena's footprint).
    pub fn reserved_bytes(&self) -> u64 {
        self.classes
            .iter()
            .map(|c| (c.mapped_chunks() * c.per_chunk as usize * c.slot_size) as u64)
            .sum()
    }

    /// Bytes in slots currently holding images (rounded sizes).
    pub fn live_bytes(&self) -> u64 {
        self.classes
            .iter()
            .map(|c| c.live * c.slot_size as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_and_classes() {
        assert_eq!(rounded(1), 64);
        assert_eq!(rounded(64), 64);
        assert_eq!(rounded(65), 128);
        assert_eq!(rounded(4096), 4096);
        assert_eq!(class_of(1), 0);
        assert_eq!(class_of(4096), NUM_CLASSES - 1);
    }

    #[test]
    fn store_get_release_reuse() {
        let mut a = Arena::new();
        let img: Vec<u8> = (0..100u8).collect();
        let s1 = a.store(&img).unwrap();
        let s2 = a.store(&[7u8; 100]).unwrap();
        assert_ne!(s1, s2);
        assert_eq!(a.get(100, s1).unwrap(), &img[..]);
        assert_eq!(a.live_bytes(), 256);
        a.release(100, s1);
        assert_eq!(a.live_bytes(), 128);
        // freed slot is reused, and the other image is untouched
        let s3 = a.store(&[9u8; 120]).unwrap();
        assert_eq!(s3, s1);
        assert_eq!(a.get(100, s2).unwrap(), &[7u8; 100][..]);
        assert_eq!(a.get(120, s3).unwrap(), &[9u8; 120][..]);
        assert!(a.store(&[]).is_none());
        assert!(a.get(100, 1_000_000).is_none());
    }

    #[test]
    fn many_slots_span_chunks() {
        let mut a = Arena::new();
        let n = 3 * (CHUNK_BYTES / 4096) + 5;
        let slots: Vec<u32> = (0..n).map(|i| a.store(&[i as u8; 4096]).unwrap()).collect();
        for (i, s) in slots.iter().enumerate() {
            assert_eq!(a.get(4096, *s).unwrap()[4095], i as u8);
        }
        assert_eq!(a.reserved_bytes(), 4 * CHUNK_BYTES as u64);
        // free everything: all chunks are unmapped
        for s in &slots {
            a.release(4096, *s);
        }
        assert_eq!(a.reserved_bytes(), 0);
        assert_eq!(a.live_bytes(), 0);
        // and reused
        let s = a.store(&[5u8; 4096]).unwrap();
        assert_eq!(a.get(4096, s).unwrap()[0], 5);
        assert_eq!(a.reserved_bytes(), CHUNK_BYTES as u64);
    }

    #[test]
    fn churn_keeps_images_intact_and_returns_memory() {
        let mut a = Arena::new();
        let per = CHUNK_BYTES / 128;
        let mut x = 0x1234_5678u64;
        let mut live: Vec<(u32, u8)> = Vec::new();
        for round in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if live.len() < 3 * per && (!x.is_multiple_of(3) || live.is_empty()) {
                let b = (round % 251) as u8;
                let s = a.store(&[b; 100]).unwrap();
                assert!(!live.iter().any(|l| l.0 == s), "slot handed out twice");
                live.push((s, b));
            } else {
                let k = (x as usize) % live.len();
                let (s, _) = live.swap_remove(k);
                a.release(100, s);
            }
            if round % 997 == 0 {
                for (s, b) in &live {
                    assert_eq!(a.get(100, *s).unwrap(), &[*b; 100][..]);
                }
            }
        }
        assert_eq!(a.live_bytes(), live.len() as u64 * 128);
        for (s, _) in live.drain(..) {
            a.release(100, s);
        }
        assert_eq!(a.reserved_bytes(), 0);
    }
}
