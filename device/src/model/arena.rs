//! Image arena: compressed page images live in size classes of `GRANULE`-byte steps
//! (64, 128, ..., 4096 bytes). Each class is a list of 256 KiB chunks cut into equal slots;
//! freed slots form an intrusive free list (the next-free index is kept in the slot itself),
//! so the arena needs no per-image metadata besides the 32-bit slot index kept in the page
//! table. Chunk memory is allocated zeroed (lazily backed by the OS) and only grows.

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

struct Class {
    slot_size: usize,
    per_chunk: u32,
    chunks: Vec<Box<[u8]>>,
    free_head: u32,
    /// Slots handed out at least once (free ones included).
    high: u32,
    live: u64,
}

impl Class {
    fn new(slot_size: usize) -> Self {
        Class {
            slot_size,
            per_chunk: (CHUNK_BYTES / slot_size) as u32,
            chunks: Vec::new(),
            free_head: NONE,
            high: 0,
            live: 0,
        }
    }

    fn locate(&self, slot: u32) -> Option<(usize, usize)> {
        let chunk = (slot / self.per_chunk) as usize;
        let off = (slot % self.per_chunk) as usize * self.slot_size;
        if chunk < self.chunks.len() {
            Some((chunk, off))
        } else {
            None
        }
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut [u8]> {
        let (c, off) = self.locate(slot)?;
        let size = self.slot_size;
        self.chunks.get_mut(c)?.get_mut(off..off + size)
    }

    fn slot(&self, slot: u32) -> Option<&[u8]> {
        let (c, off) = self.locate(slot)?;
        self.chunks.get(c)?.get(off..off + self.slot_size)
    }

    fn alloc(&mut self) -> Option<u32> {
        if self.free_head != NONE {
            let slot = self.free_head;
            let next = {
                let s = self.slot(slot)?;
                u32::from_le_bytes([s[0], s[1], s[2], s[3]])
            };
            self.free_head = next;
            self.live += 1;
            return Some(slot);
        }
        if self.high == NONE - 1 {
            return None;
        }
        let slot = self.high;
        if slot / self.per_chunk >= self.chunks.len() as u32 {
            self.chunks
                .push(vec![0u8; self.per_chunk as usize * self.slot_size].into_boxed_slice());
        }
        self.high += 1;
        self.live += 1;
        Some(slot)
    }

    fn free(&mut self, slot: u32) {
        let head = self.free_head;
        if let Some(s) = self.slot_mut(slot) {
            s[..4].copy_from_slice(&head.to_le_bytes());
            self.free_head = slot;
            self.live = self.live.saturating_sub(1);
        }
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

    /// Bytes of chunk memory allocated (the arena's footprint).
    pub fn reserved_bytes(&self) -> u64 {
        self.classes
            .iter()
            .map(|c| (c.chunks.len() * c.per_chunk as usize * c.slot_size) as u64)
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
    }
}
