// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Wire format shared with the guest driver. See `PROTOCOL.md` for the byte-by-byte description;
//! every constant and layout here must match that document.
//!
//! All multi-byte fields are little-endian. The structs are `#[repr(C)]` with explicit padding
//! so that their in-memory layout equals the wire layout on the little-endian hosts we support.

use vm_memory::{ByteValued, Le16, Le32, Le64};

/// "VCRM" read as a little-endian u32: bytes 0x56 0x43 0x52 0x4d.
pub const VCRAM_MAGIC: u32 = 0x4d52_4356;
/// Protocol major version. Incompatible changes bump it.
pub const VCRAM_VERSION_MAJOR: u16 = 1;
/// Protocol minor version. Compatible additions bump it.
pub const VCRAM_VERSION_MINOR: u16 = 4;

/// The device page size (bytes). Everything is counted in these pages.
pub const VCRAM_PAGE_SIZE: u64 = 4096;
pub const VCRAM_PAGE_SHIFT: u32 = 12;

/// Queue indices.
pub const REQUEST_QUEUE: u16 = 0;
pub const EVENT_QUEUE: u16 = 1;
pub const NUM_QUEUES: usize = 2;

/// Most ranges one request may carry.
pub const VCRAM_MAX_RANGES: u32 = 1024;
/// Most descriptors one request chain may have (readable + writable).
pub const VCRAM_MAX_CHAIN_DESCS: usize = 64;

// Request types.
pub const VCRAM_REQ_DISCARD: u32 = 1;
pub const VCRAM_REQ_COMMIT: u32 = 2;
/// Since 1.2: discard the whole window (the driver sends it at probe). `nr_ranges` 0.
pub const VCRAM_REQ_RESET: u32 = 3;
/// Since 1.3: name the pages that cost the device most (`nr_ranges` 0; the writable part after
/// the response holds up to `VCRAM_MAX_NOMINATIONS` `VcramNomination` entries).
pub const VCRAM_REQ_NOMINATE: u32 = 4;
/// Since 1.4: the NOMINATE header may be followed by this 8-byte block (`VcramNominateArgs`):
/// the most pages the answer may name.
pub const VCRAM_NOMINATE_ARGS_SIZE: usize = 8;
/// Most entries one NOMINATE answer carries.
pub const VCRAM_MAX_NOMINATIONS: usize = 1024;
/// Longest run of pages in one nomination entry.
pub const VCRAM_MAX_NOMINATION_PAGES: u32 = 512;

// Nomination classes (`VcramNomination::class`), worst first.
/// Written but not stored (capacity exhausted): at risk, and retried on every scan.
pub const VCRAM_NOM_OVERFLOW: u32 = 1;
/// Stored uncompressed: 4096 bytes held.
pub const VCRAM_NOM_RAW: u32 = 2;
/// Compressed, but to half a page or more (ratio below 2).
pub const VCRAM_NOM_POOR: u32 = 3;

// Status codes (response `status`).
pub const VCRAM_S_OK: u32 = 0;
/// Malformed request: header or range table short/long, bad chain layout, reserved flags set.
pub const VCRAM_S_BAD_REQUEST: u32 = 1;
/// Unknown request type.
pub const VCRAM_S_UNSUPPORTED: u32 = 2;
/// A range is unaligned, empty, wraps around or lies (partly) outside the window.
pub const VCRAM_S_OUT_OF_RANGE: u32 = 3;
/// Two ranges of the request overlap.
pub const VCRAM_S_OVERLAP: u32 = 4;
/// The device has no usable window (not yet mapped, missing, or wrong size).
pub const VCRAM_S_NO_WINDOW: u32 = 5;
/// Internal device failure (guest memory could not be accessed while executing).
pub const VCRAM_S_DEVICE_ERROR: u32 = 6;

/// `bad_range` value when no range is to blame.
pub const VCRAM_NO_RANGE: u32 = 0xffff_ffff;

// Event types.
pub const VCRAM_EVT_PRESSURE: u32 = 1;
pub const VCRAM_EVT_OVERFLOW: u32 = 2;

// Pressure levels.
pub const VCRAM_LEVEL_NORMAL: u32 = 0;
pub const VCRAM_LEVEL_LOW: u32 = 1;
pub const VCRAM_LEVEL_HIGH: u32 = 2;

// Config `status` bits.
/// The window was found with the expected size; requests are served.
pub const VCRAM_ST_WINDOW_OK: u32 = 1 << 0;
/// A region matched the window but had the wrong size (or vanished): not serving.
pub const VCRAM_ST_WINDOW_BAD: u32 = 1 << 1;
/// Physical use is at or past capacity: at least one page could not be stored.
pub const VCRAM_ST_OVERFLOW: u32 = 1 << 2;

/// Size of the config space the device defines (bytes). QEMU's `config_size` may be smaller
/// (the device then answers with a prefix) or larger (zero-filled), up to 256.
pub const VCRAM_CONFIG_SIZE: usize = 128;
pub const VCRAM_CONFIG_MAX: usize = 256;

/// Device configuration space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcramConfig {
    /// 0x00
    pub magic: Le32,
    /// 0x04
    pub version_major: Le16,
    /// 0x06
    pub version_minor: Le16,
    /// 0x08 NUMA node the window belongs to.
    pub node: Le32,
    /// 0x0c
    pub page_size: Le32,
    /// 0x10 guest-physical base of the window.
    pub window_base: Le64,
    /// 0x18 window size in bytes = logical capacity.
    pub window_size: Le64,
    /// 0x20 physical capacity in bytes.
    pub physical_capacity: Le64,
    /// 0x28 low watermark, percent of physical capacity.
    pub low_watermark: Le32,
    /// 0x2c high watermark, percent of physical capacity.
    pub high_watermark: Le32,
    /// 0x30 `VCRAM_ST_*` bits.
    pub status: Le32,
    /// 0x34 current pressure level (`VCRAM_LEVEL_*`).
    pub pressure_level: Le32,
    /// 0x38 most ranges per request.
    pub max_ranges: Le32,
    /// 0x3c size of one event record.
    pub event_size: Le32,
    /// 0x40 physical bytes in use (images rounded to the granule + metadata).
    pub physical_used: Le64,
    /// 0x48 pages holding data (same-filled + compressed + raw).
    pub stored_pages: Le64,
    /// 0x50 same-filled pages (all-zero pages included).
    pub same_pages: Le64,
    /// 0x58 sum of exact compressed image sizes (raw pages count 4096).
    pub compressed_bytes: Le64,
    /// 0x60 pages currently not stored because physical capacity ran out.
    pub overflow_pages: Le64,
    /// 0x68 pages stored raw (incompressible).
    pub raw_pages: Le64,
    /// 0x70 sequence number of the last event generated (0 = none yet).
    pub event_seq: Le64,
    /// 0x78 allocation granule of images, bytes.
    pub granule: Le32,
    /// 0x7c all-zero pages (a subset of `same_pages`), saturating at u32::MAX; since 1.1.
    pub zero_pages: Le32,
}
// SAFETY: plain old data, no padding (checked by the size test below), any bit pattern valid.
unsafe impl ByteValued for VcramConfig {}

/// Request header, first 16 device-readable bytes of a requestq chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcramReqHeader {
    /// `VCRAM_REQ_*`.
    pub req_type: Le32,
    /// Number of `VcramRange` entries that follow.
    pub nr_ranges: Le32,
    /// Opaque to the device; echoed nowhere (driver bookkeeping).
    pub tag: Le64,
}
// SAFETY: plain old data without padding.
unsafe impl ByteValued for VcramReqHeader {}

/// One page range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcramRange {
    /// Guest-physical address of the first page, 4096-aligned, inside the window.
    pub addr: Le64,
    /// Number of pages, >= 1.
    pub npages: Le32,
    /// Must be 0.
    pub reserved: Le32,
}
// SAFETY: plain old data without padding.
unsafe impl ByteValued for VcramRange {}

/// The device-readable bytes of a request, as a driver writes them: the header (`tag` as
/// given) and one range entry per `(addr, npages)`, `reserved` 0.
pub fn encode_request(req_type: u32, tag: u64, ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(VCRAM_REQ_HEADER_SIZE + ranges.len() * VCRAM_RANGE_SIZE);
    v.extend_from_slice(
        VcramReqHeader {
            req_type: req_type.into(),
            nr_ranges: (ranges.len() as u32).into(),
            tag: tag.into(),
        }
        .as_slice(),
    );
    for &(addr, npages) in ranges {
        v.extend_from_slice(
            VcramRange {
                addr: addr.into(),
                npages: npages.into(),
                reserved: 0.into(),
            }
            .as_slice(),
        );
    }
    v
}

/// Response, first 24 device-writable bytes of a requestq chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcramResp {
    /// `VCRAM_S_*`.
    pub status: Le32,
    /// Index of the first offending range, or `VCRAM_NO_RANGE`.
    pub bad_range: Le32,
    /// Pages processed (0 unless status is OK).
    pub pages_done: Le64,
    /// COMMIT: pages of this request that could not be stored (capacity exhausted).
    pub pages_overflowed: Le64,
}
// SAFETY: plain old data without padding.
unsafe impl ByteValued for VcramResp {}

/// One NOMINATE answer entry (16 bytes, device-writable, after the response).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcramNomination {
    /// Guest-physical address of the first page of the run, inside the window.
    pub addr: Le64,
    /// Pages in the run, 1 ..= `VCRAM_MAX_NOMINATION_PAGES`, all of the same class.
    pub npages: Le32,
    /// `VCRAM_NOM_*`.
    pub class: Le32,
}
// SAFETY: plain old data without padding.
unsafe impl ByteValued for VcramNomination {}

/// NOMINATE's optional argument block (since 1.4, 8 bytes, device-readable, right after the
/// header): the driver's page budget for this answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcramNominateArgs {
    /// Most pages the answer may name (sum of the entries' `npages`), >= 1.
    pub max_pages: Le32,
    /// Must be 0.
    pub reserved: Le32,
}
// SAFETY: plain old data without padding.
unsafe impl ByteValued for VcramNominateArgs {}

/// Event record written into an eventq buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcramEvent {
    /// 0x00 `VCRAM_EVT_*`.
    pub event_type: Le32,
    /// 0x04 PRESSURE: new level; OVERFLOW: 0.
    pub level: Le32,
    /// 0x08 sequence number, 1, 2, 3, ... per device instance.
    pub seq: Le64,
    /// 0x10 physical bytes used when the event was generated.
    pub physical_used: Le64,
    /// 0x18 OVERFLOW: guest-physical address of the first page not stored; else 0.
    pub addr: Le64,
    /// 0x20 OVERFLOW: pages reported by this event (a contiguous run from `addr`); else 0.
    pub npages: Le32,
    /// 0x24 events dropped (no buffer posted, queue full) just before this one.
    pub lost: Le32,
    /// 0x28 total pages not stored right now (config `overflow_pages`).
    pub overflow_total: Le64,
}
// SAFETY: plain old data without padding.
unsafe impl ByteValued for VcramEvent {}

pub const VCRAM_REQ_HEADER_SIZE: usize = std::mem::size_of::<VcramReqHeader>();
pub const VCRAM_RANGE_SIZE: usize = std::mem::size_of::<VcramRange>();
pub const VCRAM_RESP_SIZE: usize = std::mem::size_of::<VcramResp>();
pub const VCRAM_EVENT_SIZE: usize = std::mem::size_of::<VcramEvent>();
pub const VCRAM_NOMINATION_SIZE: usize = std::mem::size_of::<VcramNomination>();

impl VcramResp {
    pub fn new(status: u32, bad_range: u32, pages_done: u64, pages_overflowed: u64) -> Self {
        VcramResp {
            status: status.into(),
            bad_range: bad_range.into(),
            pages_done: pages_done.into(),
            pages_overflowed: pages_overflowed.into(),
        }
    }
}

/// Short name of a status code, for logs and tools.
pub fn status_name(status: u32) -> &'static str {
    match status {
        VCRAM_S_OK => "OK",
        VCRAM_S_BAD_REQUEST => "BAD_REQUEST",
        VCRAM_S_UNSUPPORTED => "UNSUPPORTED",
        VCRAM_S_OUT_OF_RANGE => "OUT_OF_RANGE",
        VCRAM_S_OVERLAP => "OVERLAP",
        VCRAM_S_NO_WINDOW => "NO_WINDOW",
        VCRAM_S_DEVICE_ERROR => "DEVICE_ERROR",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn sizes_match_protocol_md() {
        assert_eq!(size_of::<VcramConfig>(), VCRAM_CONFIG_SIZE);
        assert_eq!(size_of::<VcramReqHeader>(), 16);
        assert_eq!(size_of::<VcramRange>(), 16);
        assert_eq!(size_of::<VcramResp>(), 24);
        assert_eq!(size_of::<VcramEvent>(), 48);
        assert_eq!(size_of::<VcramNomination>(), 16);
        assert_eq!(offset_of!(VcramNomination, npages), 8);
        assert_eq!(offset_of!(VcramNomination, class), 12);
    }

    #[test]
    fn config_offsets_match_protocol_md() {
        assert_eq!(offset_of!(VcramConfig, magic), 0x00);
        assert_eq!(offset_of!(VcramConfig, version_major), 0x04);
        assert_eq!(offset_of!(VcramConfig, version_minor), 0x06);
        assert_eq!(offset_of!(VcramConfig, node), 0x08);
        assert_eq!(offset_of!(VcramConfig, page_size), 0x0c);
        assert_eq!(offset_of!(VcramConfig, window_base), 0x10);
        assert_eq!(offset_of!(VcramConfig, window_size), 0x18);
        assert_eq!(offset_of!(VcramConfig, physical_capacity), 0x20);
        assert_eq!(offset_of!(VcramConfig, low_watermark), 0x28);
        assert_eq!(offset_of!(VcramConfig, high_watermark), 0x2c);
        assert_eq!(offset_of!(VcramConfig, status), 0x30);
        assert_eq!(offset_of!(VcramConfig, pressure_level), 0x34);
        assert_eq!(offset_of!(VcramConfig, max_ranges), 0x38);
        assert_eq!(offset_of!(VcramConfig, event_size), 0x3c);
        assert_eq!(offset_of!(VcramConfig, physical_used), 0x40);
        assert_eq!(offset_of!(VcramConfig, stored_pages), 0x48);
        assert_eq!(offset_of!(VcramConfig, same_pages), 0x50);
        assert_eq!(offset_of!(VcramConfig, compressed_bytes), 0x58);
        assert_eq!(offset_of!(VcramConfig, overflow_pages), 0x60);
        assert_eq!(offset_of!(VcramConfig, raw_pages), 0x68);
        assert_eq!(offset_of!(VcramConfig, event_seq), 0x70);
        assert_eq!(offset_of!(VcramConfig, granule), 0x78);
        assert_eq!(offset_of!(VcramConfig, zero_pages), 0x7c);
    }

    #[test]
    fn event_offsets_match_protocol_md() {
        assert_eq!(offset_of!(VcramEvent, event_type), 0x00);
        assert_eq!(offset_of!(VcramEvent, level), 0x04);
        assert_eq!(offset_of!(VcramEvent, seq), 0x08);
        assert_eq!(offset_of!(VcramEvent, physical_used), 0x10);
        assert_eq!(offset_of!(VcramEvent, addr), 0x18);
        assert_eq!(offset_of!(VcramEvent, npages), 0x20);
        assert_eq!(offset_of!(VcramEvent, lost), 0x24);
        assert_eq!(offset_of!(VcramEvent, overflow_total), 0x28);
    }

    #[test]
    fn little_endian_bytes() {
        let c = VcramConfig {
            magic: VCRAM_MAGIC.into(),
            ..Default::default()
        };
        assert_eq!(&c.as_slice()[0..4], b"VCRM");
        let r = VcramResp::new(VCRAM_S_OVERLAP, 7, 0x0102, 0);
        assert_eq!(&r.as_slice()[0..8], &[4, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(&r.as_slice()[8..10], &[2, 1]);
    }
}
