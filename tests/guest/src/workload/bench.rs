// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Sequential read and write bandwidth over the buffer.

use std::hint::black_box;
use std::time::Instant;

/// One read pass: sums the buffer as u64 words (four accumulators).
///
/// # Safety
/// `ptr..ptr+len` must be mapped and readable, `ptr` 8-byte aligned.
pub unsafe fn read_pass(ptr: *const u8, len: usize) -> u64 {
    let words = std::slice::from_raw_parts(black_box(ptr).cast::<u64>(), len / 8);
    let mut acc = [0u64; 4];
    let mut chunks = words.chunks_exact(4);
    for c in &mut chunks {
        for j in 0..4 {
            acc[j] = acc[j].wrapping_add(c[j]);
        }
    }
    for (j, &w) in chunks.remainder().iter().enumerate() {
        acc[j] = acc[j].wrapping_add(w);
    }
    black_box(acc[0] ^ acc[1] ^ acc[2] ^ acc[3])
}

/// One write pass: fills the buffer with `byte`.
///
/// # Safety
/// `ptr..ptr+len` must be mapped and writable.
pub unsafe fn write_pass(ptr: *mut u8, len: usize, byte: u8) {
    std::ptr::write_bytes(black_box(ptr), byte, len);
    black_box(ptr);
}

/// Runs `passes` passes; returns each pass's MB/s (10^6 bytes per second).
///
/// # Safety
/// As `read_pass`/`write_pass`.
pub unsafe fn run(ptr: *mut u8, len: usize, write: bool, passes: u32) -> Vec<f64> {
    (0..passes)
        .map(|i| {
            let t = Instant::now();
            if write {
                write_pass(ptr, len, 0x5a ^ i as u8);
            } else {
                read_pass(ptr, len);
            }
            let s = t.elapsed().as_secs_f64().max(1e-9);
            len as f64 / 1e6 / s
        })
        .collect()
}

/// Median of the values (mean of the middle two for even counts).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_read_and_write() {
        let mut v = vec![0u64; 1 << 15];
        let p = v.as_mut_ptr().cast::<u8>();
        let len = v.len() * 8;
        unsafe {
            write_pass(p, len, 1);
            assert_eq!(read_pass(p, len), 0);
            let r = run(p, len, true, 3);
            assert_eq!(r.len(), 3);
            assert!(r.iter().all(|&x| x > 0.0));
            assert!(run(p, len, false, 2).iter().all(|&x| x > 0.0));
        }
        assert!(v.iter().all(|&w| w == u64::from_ne_bytes([0x5a ^ 2; 8])));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
