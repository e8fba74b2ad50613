// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Engine benchmark on 4 KiB pages of a file (or synthetic data without one).
//!
//! `cargo bench -p vcram-device --bench engine -- [FILE...]`
//! Environment: `VCRAM_BENCH_LEVEL` (zstd level, default 1), `VCRAM_BENCH_SECS` (time per
//! measurement, default 3). Prints `key value` lines (for bench/compare.sh) and a summary.

use std::time::{Duration, Instant};

use vcram_device::model::store::METADATA_BYTES_PER_PAGE;
use vcram_device::model::{Store, StoreConfig};

const PAGE: usize = 4096;

fn synthetic() -> Vec<u8> {
    // 32 MiB: text-like, zero and random pages
    let mut v = Vec::with_capacity(32 << 20);
    let mut x = 0x1234_5678_9abc_def0u64;
    let words = [
        "memory ",
        "page ",
        "compress ",
        "device ",
        "the ",
        "of ",
        "node ",
        "kernel ",
        "zstd ",
    ];
    while v.len() < 32 << 20 {
        match (v.len() / PAGE) % 8 {
            0 => v.extend(std::iter::repeat_n(0u8, PAGE)),
            1 => {
                for _ in 0..PAGE {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v.push(x as u8);
                }
            }
            _ => {
                let start = v.len();
                while v.len() - start < PAGE {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
                }
                v.truncate(start + PAGE);
            }
        }
    }
    v
}

/// Run `f` over and over for `secs`; return the best time of one pass.
fn best<F: FnMut()>(secs: f64, mut f: F) -> Duration {
    let t_end = Instant::now() + Duration::from_secs_f64(secs);
    let mut best = Duration::MAX;
    let mut n = 0;
    while n < 2 || Instant::now() < t_end {
        let t0 = Instant::now();
        f();
        best = best.min(t0.elapsed());
        n += 1;
    }
    best
}

fn main() {
    let files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let level: i32 = std::env::var("VCRAM_BENCH_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let secs: f64 = std::env::var("VCRAM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let inputs: Vec<(String, Vec<u8>)> = if files.is_empty() {
        vec![("synthetic".to_string(), synthetic())]
    } else {
        files
            .iter()
            .map(|f| (f.clone(), std::fs::read(f).expect("read input")))
            .collect()
    };
    for (name, mut data) in inputs {
        data.truncate(data.len() / PAGE * PAGE);
        let pages = data.len() / PAGE;
        let mb = data.len() as f64 / 1e6;
        println!("file {name}");
        println!("level {level}");
        println!("pages {pages}");

        // 1. zstd alone, one reused context, like `zstd -b -B4096`
        let mut c = zstd::bulk::Compressor::new(level).unwrap();
        let mut out = vec![0u8; zstd::zstd_safe::compress_bound(PAGE)];
        let mut zsize = 0usize;
        let t = best(secs, || {
            zsize = 0;
            for p in data.chunks_exact(PAGE) {
                zsize += c.compress_to_buffer(p, &mut out[..]).unwrap();
            }
        });
        println!("zstd_lib_mbps {:.1}", mb / t.as_secs_f64());
        println!("zstd_lib_ratio {:.4}", data.len() as f64 / zsize as f64);

        // 2. the device store path: same-filled check, compress, raw decision, hash, arena
        let cfg = StoreConfig {
            base: 0,
            pages: pages as u64,
            physical_capacity: u64::MAX / 2,
            level,
            raw_threshold: 4032,
            low_watermark: 99,
            high_watermark: 100,
            hysteresis: 1,
        };
        let mut store = Store::new(cfg.clone()).unwrap();
        let t = best(secs, || {
            for (i, p) in data.chunks_exact(PAGE).enumerate() {
                store.store_page(i as u64, p);
            }
        });
        let cn = store.counters();
        println!("store_mbps {:.1}", mb / t.as_secs_f64());
        println!(
            "store_ratio {:.4}",
            data.len() as f64 / cn.compressed_bytes.max(1) as f64
        );
        println!(
            "store_ratio_physical {:.4}",
            data.len() as f64 / (cn.image_bytes + cn.metadata_bytes).max(1) as f64
        );
        println!("same_pages {}", cn.same_pages);
        println!("raw_pages {}", cn.raw_pages);
        println!("compressed_pages {}", cn.compressed_pages);
        println!("image_bytes {}", cn.image_bytes);
        println!("arena_bytes {}", cn.arena_bytes);
        println!("metadata_bytes_per_page {METADATA_BYTES_PER_PAGE}");
        // granule overhead
        let exact = cn.compressed_bytes;
        println!(
            "granule_overhead_pct {:.2}",
            (cn.image_bytes as f64 - exact as f64) * 100.0 / exact.max(1) as f64
        );

        // 3. scanning unchanged pages
        let mut scratch = vec![0u8; PAGE];
        let t = best(secs, || {
            for (i, p) in data.chunks_exact(PAGE).enumerate() {
                store.scan_page(i as u64, p, &mut scratch);
            }
        });
        assert_eq!(store.counters().scan_changed_pages, 0);
        println!("scan_gbps {:.2}", data.len() as f64 / 1e9 / t.as_secs_f64());
        let t = best(secs, || {
            let mut acc = 0u64;
            for p in data.chunks_exact(PAGE) {
                acc ^= xxhash_rust::xxh3::xxh3_64(p);
            }
            std::hint::black_box(acc);
        });
        println!("xxh3_gbps {:.2}", data.len() as f64 / 1e9 / t.as_secs_f64());

        // 4. DISCARD in the model alone (no guest memory zeroing)
        let mut s = Store::new(cfg.clone()).unwrap();
        for (i, p) in data.chunks_exact(PAGE).enumerate() {
            s.store_page(i as u64, p);
        }
        let t0 = Instant::now();
        s.discard_range(0, pages as u64);
        println!(
            "model_discard_mpages_per_s {:.1}",
            pages as f64 / 1e6 / t0.elapsed().as_secs_f64()
        );
        println!();
    }
}
