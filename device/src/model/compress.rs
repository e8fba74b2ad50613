// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Page encoder: same-filled detection, then zstd (bulk API, one reused context), then the
//! raw-storage decision. Works on plain byte slices.

use std::io;

use crate::protocol::VCRAM_PAGE_SIZE;

const PAGE: usize = VCRAM_PAGE_SIZE as usize;

/// How one page is to be held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// Every 8-byte word of the page equals this value (little-endian read).
    Same(u64),
    /// zstd frame of this many bytes, available in [`Encoder::output`].
    Compressed(usize),
    /// Does not shrink below the raw threshold: keep the 4096 bytes as they are.
    Raw,
}

/// Returns `Some(word)` when the page consists of one repeated 8-byte word.
#[inline]
pub fn same_filled(page: &[u8]) -> Option<u64> {
    let mut words = page.chunks_exact(8);
    let first = words.next()?;
    let w0 = u64::from_le_bytes(first.try_into().ok()?);
    // Compare in blocks so the compiler vectorizes; bail out early on the first block that differs.
    for block in page.chunks_exact(64) {
        let mut acc = 0u64;
        for w in block.chunks_exact(8) {
            let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            acc |= v ^ w0;
        }
        if acc != 0 {
            return None;
        }
    }
    Some(w0)
}

/// True when every 8-byte word of `page` equals `pattern`.
#[inline]
pub fn is_filled_with(page: &[u8], pattern: u64) -> bool {
    for block in page.chunks_exact(64) {
        let mut acc = 0u64;
        for w in block.chunks_exact(8) {
            let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            acc |= v ^ pattern;
        }
        if acc != 0 {
            return false;
        }
    }
    true
}

/// A zstd compressor with its context and output buffer, reused for every page.
pub struct Encoder {
    zstd: zstd::bulk::Compressor<'static>,
    level: i32,
    raw_threshold: usize,
    out: Vec<u8>,
}

impl Encoder {
    /// `raw_threshold`: an image must be at most this many bytes, else the page is stored raw.
    pub fn new(level: i32, raw_threshold: usize) -> io::Result<Self> {
        let raw_threshold = raw_threshold.clamp(1, PAGE);
        let mut zstd = zstd::bulk::Compressor::new(level)?;
        // Pages are independent frames, exactly like `zstd -b -B4096`: no checksum; the content
        // size is written (zstd's default), so ratios compare one to one.
        zstd.include_checksum(false)?;
        Ok(Encoder {
            zstd,
            level,
            raw_threshold,
            out: vec![0u8; raw_threshold],
        })
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    pub fn raw_threshold(&self) -> usize {
        self.raw_threshold
    }

    /// Encode one page (must be 4096 bytes; anything else is stored raw).
    pub fn encode(&mut self, page: &[u8]) -> Encoded {
        if page.len() != PAGE {
            return Encoded::Raw;
        }
        if let Some(w) = same_filled(page) {
            return Encoded::Same(w);
        }
        // A destination capped at the threshold makes zstd stop as soon as the image would be
        // too large: the error is the "store raw" answer.
        match self.zstd.compress_to_buffer(page, &mut self.out[..]) {
            Ok(n) if n <= self.raw_threshold => Encoded::Compressed(n),
            _ => Encoded::Raw,
        }
    }

    /// The image produced by the last `encode` that returned `Compressed(n)`: `&output()[..n]`.
    pub fn output(&self) -> &[u8] {
        &self.out
    }
}

/// Decompress one image (tests and verification).
pub fn decode(image: &[u8]) -> io::Result<Vec<u8>> {
    zstd::bulk::decompress(image, PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_filled_detects_patterns() {
        let zero = vec![0u8; PAGE];
        assert_eq!(same_filled(&zero), Some(0));
        let mut p = vec![0u8; PAGE];
        for c in p.chunks_exact_mut(8) {
            c.copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
        }
        assert_eq!(same_filled(&p), Some(0x0123_4567_89ab_cdef));
        assert!(is_filled_with(&p, 0x0123_4567_89ab_cdef));
        p[4095] ^= 1;
        assert_eq!(same_filled(&p), None);
        assert!(!is_filled_with(&p, 0x0123_4567_89ab_cdef));
        let mut z = vec![0u8; PAGE];
        z[0] = 1;
        assert_eq!(same_filled(&z), None);
    }

    #[test]
    fn text_compresses_and_roundtrips() {
        let mut e = Encoder::new(1, 4032).unwrap();
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog 0123456789\n"
            .iter()
            .cycle()
            .take(PAGE)
            .copied()
            .collect();
        match e.encode(&text) {
            Encoded::Compressed(n) => {
                assert!(n < 200, "{n}");
                assert_eq!(decode(&e.output()[..n]).unwrap(), text);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn random_is_raw() {
        let mut e = Encoder::new(3, 4032).unwrap();
        let page = crate::testdata::random_page(1);
        assert_eq!(e.encode(&page), Encoded::Raw);
        assert_eq!(e.encode(&page[..100]), Encoded::Raw);
    }

    #[test]
    fn threshold_forces_raw() {
        // Mildly compressible page: compresses, but not below a tiny threshold.
        let mut e = Encoder::new(1, 64).unwrap();
        let page: Vec<u8> = (0..PAGE)
            .map(|i| ((i * 7) % 251) as u8 ^ (i / 97) as u8)
            .collect();
        assert_eq!(e.encode(&page), Encoded::Raw);
    }
}
