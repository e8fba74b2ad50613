// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Page checksums and the seeded pseudo-random generator.
//!
//! The checksum is a 64-bit hash over a page's 8-byte words in four
//! independent lanes (so the multiplications overlap), each lane
//! `h = rotl((h ^ w) * K, 31)`, folded with a murmur-style finaliser. Every
//! step is a bijection of the lane state, so a change in one word always
//! changes the result; it is a corruption check, not a cryptographic hash.

const K: u64 = 0x9E37_79B9_7F4A_7C15;
const LANE_SEEDS: [u64; 4] = [
    0x243F_6A88_85A3_08D3,
    0x1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0,
    0x082E_FA98_EC4E_6C89,
];

#[inline(always)]
fn lane(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(K).rotate_left(31)
}

/// Murmur3's 64-bit finaliser.
#[inline]
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// Hashes a byte slice (normally one page). Trailing bytes that do not
/// fill a word are mixed in as a zero-padded word; the length is mixed in too.
pub fn hash_bytes(data: &[u8]) -> u64 {
    let mut h = LANE_SEEDS;
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        for (i, hi) in h.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap());
            *hi = lane(*hi, w);
        }
    }
    let rest = chunks.remainder();
    for (i, c) in rest.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        h[i] = lane(h[i], u64::from_le_bytes(b));
    }
    let mut out = data.len() as u64;
    for x in h {
        out = fmix64(out ^ x).wrapping_add(K);
    }
    fmix64(out)
}

/// Hashes the memory at `ptr..ptr+len` (one page of the workload buffer).
///
/// # Safety
/// `ptr` must be valid for reads of `len` bytes.
pub unsafe fn hash_raw(ptr: *const u8, len: usize) -> u64 {
    hash_bytes(std::slice::from_raw_parts(ptr, len))
}

/// SplitMix64: a small, fast, seeded generator (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator for one page, independent of the others: the contents of
    /// page `index` depend only on `(seed, index)`.
    pub fn for_page(seed: u64, index: u64) -> Self {
        SplitMix64(fmix64(seed ^ index.wrapping_mul(K)).wrapping_add(index))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(K);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&v[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_deterministic_and_sensitive() {
        let mut page = vec![0u8; 4096];
        let h0 = hash_bytes(&page);
        assert_eq!(h0, hash_bytes(&page));
        // every single-bit flip changes the hash
        for byte in (0..4096).step_by(37) {
            for bit in [0, 3, 7] {
                page[byte] ^= 1 << bit;
                assert_ne!(hash_bytes(&page), h0, "byte {byte} bit {bit}");
                page[byte] ^= 1 << bit;
            }
        }
        // swapping two words changes it too
        page[0] = 1;
        let a = hash_bytes(&page);
        page[0] = 0;
        page[8] = 1;
        assert_ne!(hash_bytes(&page), a);
        // length matters
        assert_ne!(hash_bytes(&[0u8; 4]), hash_bytes(&[0u8; 5]));
        assert_ne!(hash_bytes(&[]), hash_bytes(&[0u8; 8]));
    }

    #[test]
    fn prng_is_seeded_and_spread() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut p0 = SplitMix64::for_page(1, 0);
        let mut p1 = SplitMix64::for_page(1, 1);
        assert_ne!(p0.next_u64(), p1.next_u64());
        // bytes roughly uniform
        let mut buf = vec![0u8; 1 << 16];
        SplitMix64::new(42).fill(&mut buf);
        let ones: u32 = buf.iter().map(|b| b.count_ones()).sum();
        let frac = ones as f64 / (buf.len() * 8) as f64;
        assert!((0.49..0.51).contains(&frac), "{frac}");
        let mut r = SplitMix64::new(3);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }
}
