// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Page contents for tests, shared by the unit tests (`crate::testdata`) and the integration
//! tests (`tests/common` includes this file by path). Not part of the library.

/// A 4096-byte page of xorshift noise (incompressible), the same for the same seed.
pub fn random_page(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
