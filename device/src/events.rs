// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Events waiting for an eventq buffer: numbered, bounded, with a count of those lost.
//!
//! While records wait, an OVERFLOW that continues the run of the newest waiting OVERFLOW is
//! merged into it (no new record, no new number). When the backlog is full, a PRESSURE event
//! takes the place of the newest waiting OVERFLOW, or if there is none of the newest waiting
//! PRESSURE (an older level), which is then counted as lost: the newest level change is never
//! the record that is dropped (the driver pauses and resumes on it). The driver
//! learns of every loss from `lost` in the next record it gets and from the gap in `seq`.

use std::collections::VecDeque;

use crate::model::ModelEvent;
use crate::protocol::{VcramEvent, VCRAM_EVT_OVERFLOW, VCRAM_EVT_PRESSURE};

/// Events kept while the driver has no buffer posted.
pub const EVENT_BACKLOG: usize = 256;

#[derive(Default)]
pub struct EventQueue {
    pending: VecDeque<VcramEvent>,
    seq: u64,
    lost_since_delivery: u32,
    pub generated: u64,
    pub delivered: u64,
    pub lost: u64,
    /// OVERFLOW events merged into a waiting record.
    pub merged: u64,
}

impl EventQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queue a model event; `overflow_total` is the store's current overflow page count.
    pub fn push(&mut self, ev: ModelEvent, overflow_total: u64) {
        if let ModelEvent::Overflow { addr, npages, used } = ev {
            if self.merge_overflow(addr, npages, used, overflow_total) {
                self.merged += 1;
                return;
            }
        }
        self.seq += 1;
        self.generated += 1;
        let mut rec = VcramEvent {
            seq: self.seq.into(),
            overflow_total: overflow_total.into(),
            ..Default::default()
        };
        match ev {
            ModelEvent::Pressure { level, used } => {
                rec.event_type = VCRAM_EVT_PRESSURE.into();
                rec.level = level.into();
                rec.physical_used = used.into();
            }
            ModelEvent::Overflow { addr, npages, used } => {
                rec.event_type = VCRAM_EVT_OVERFLOW.into();
                rec.addr = addr.into();
                rec.npages = npages.into();
                rec.physical_used = used.into();
            }
        }
        if self.pending.len() >= EVENT_BACKLOG {
            // A level change must reach the driver: it takes the place of the newest waiting
            // OVERFLOW, or else of the newest waiting PRESSURE (an older level, superseded).
            let victim = if u32::from(rec.event_type) == VCRAM_EVT_PRESSURE {
                self.pending
                    .iter()
                    .rposition(|r| u32::from(r.event_type) == VCRAM_EVT_OVERFLOW)
                    .or_else(|| {
                        self.pending
                            .iter()
                            .rposition(|r| u32::from(r.event_type) == VCRAM_EVT_PRESSURE)
                    })
            } else {
                None
            };
            self.lost += 1;
            self.lost_since_delivery = self.lost_since_delivery.saturating_add(1);
            match victim {
                Some(i) => {
                    self.pending.remove(i);
                }
                None => return,
            }
        }
        self.pending.push_back(rec);
    }

    /// Queue a record as it is, numbered like the others (fault injection: `--fault`).
    pub fn push_record(&mut self, mut rec: VcramEvent) {
        self.seq += 1;
        self.generated += 1;
        rec.seq = self.seq.into();
        self.pending.push_back(rec);
    }

    /// Merges an overflow run into the newest waiting record if that is an OVERFLOW ending
    /// where the run starts. True if merged.
    fn merge_overflow(&mut self, addr: u64, npages: u32, used: u64, overflow_total: u64) -> bool {
        let Some(last) = self.pending.back_mut() else {
            return false;
        };
        if u32::from(last.event_type) != VCRAM_EVT_OVERFLOW {
            return false;
        }
        let (start, n) = (u64::from(last.addr), u32::from(last.npages));
        let Some(total) = n.checked_add(npages) else {
            return false;
        };
        if start + u64::from(n) * crate::protocol::VCRAM_PAGE_SIZE != addr {
            return false;
        }
        last.npages = total.into();
        last.physical_used = used.into();
        last.overflow_total = overflow_total.into();
        true
    }

    /// The next record to deliver (not removed until [`EventQueue::delivered`]).
    pub fn peek(&self) -> Option<VcramEvent> {
        let mut rec = *self.pending.front()?;
        rec.lost = self.lost_since_delivery.into();
        Some(rec)
    }

    /// The record returned by `peek` was written to the driver.
    pub fn pop_delivered(&mut self) {
        if self.pending.pop_front().is_some() {
            self.delivered += 1;
            self.lost_since_delivery = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_backlog_and_lost() {
        let mut q = EventQueue::new();
        for i in 0..(EVENT_BACKLOG + 3) {
            q.push(
                ModelEvent::Overflow {
                    addr: i as u64 * 8192,
                    npages: 1,
                    used: 0,
                },
                i as u64,
            );
        }
        assert_eq!(q.len(), EVENT_BACKLOG);
        assert_eq!(q.lost, 3);
        let e = q.peek().unwrap();
        assert_eq!(u64::from(e.seq), 1);
        assert_eq!(u32::from(e.lost), 3);
        assert_eq!(u32::from(e.event_type), VCRAM_EVT_OVERFLOW);
        q.pop_delivered();
        let e = q.peek().unwrap();
        assert_eq!(u64::from(e.seq), 2);
        assert_eq!(u32::from(e.lost), 0);
        assert_eq!(q.last_seq(), EVENT_BACKLOG as u64 + 3);
        // room for one again
        q.push(ModelEvent::Pressure { level: 2, used: 5 }, 0);
        assert_eq!(q.lost, 3);
        assert_eq!(q.len(), EVENT_BACKLOG);
        // Full: a level change pushes out the newest waiting OVERFLOW.
        q.push(ModelEvent::Pressure { level: 1, used: 5 }, 0);
        assert_eq!(q.lost, 4);
        assert_eq!(q.len(), EVENT_BACKLOG);
        let types: Vec<u32> = q.pending.iter().map(|r| u32::from(r.event_type)).collect();
        assert_eq!(&types[types.len() - 2..], [VCRAM_EVT_PRESSURE; 2]);
        // Full and nothing but the new OVERFLOW to drop: it is the one lost.
        q.push(
            ModelEvent::Overflow {
                addr: 1 << 40,
                npages: 1,
                used: 0,
            },
            0,
        );
        assert_eq!(q.lost, 5);
        assert_eq!(q.len(), EVENT_BACKLOG);
        assert_eq!(
            u32::from(q.peek().unwrap().lost),
            2,
            "lost since the last delivery"
        );
    }

    #[test]
    fn pressure_is_never_dropped_for_older_pressure_records() {
        // The backlog fills with level changes only (no OVERFLOW to give way): the newest level
        // must still be waiting, so the driver ends at the device's current level.
        let mut q = EventQueue::new();
        for i in 0..(EVENT_BACKLOG + 5) {
            let level = (i % 3) as u32;
            q.push(
                ModelEvent::Pressure {
                    level,
                    used: i as u64,
                },
                0,
            );
        }
        assert_eq!(q.len(), EVENT_BACKLOG);
        assert_eq!(q.lost, 5);
        let mut last = None;
        let mut prev_seq = 0;
        while let Some(e) = q.peek() {
            assert!(u64::from(e.seq) > prev_seq, "delivered in seq order");
            prev_seq = u64::from(e.seq);
            last = Some(e);
            q.pop_delivered();
        }
        let last = last.unwrap();
        let newest = ((EVENT_BACKLOG + 4) % 3) as u32;
        assert_eq!(
            u32::from(last.level),
            newest,
            "the newest level is delivered last"
        );
        assert_eq!(u64::from(last.seq), q.last_seq());
        assert_eq!(u64::from(last.physical_used), (EVENT_BACKLOG + 4) as u64);
        // An OVERFLOW arriving at a full backlog of PRESSURE records is the one lost.
        for i in 0..EVENT_BACKLOG {
            q.push(
                ModelEvent::Pressure {
                    level: (i % 2) as u32,
                    used: 0,
                },
                0,
            );
        }
        q.push(overflow(0x1000, 1), 1);
        assert_eq!(q.len(), EVENT_BACKLOG);
        assert!(q
            .pending
            .iter()
            .all(|r| u32::from(r.event_type) == VCRAM_EVT_PRESSURE));
    }

    fn overflow(addr: u64, npages: u32) -> ModelEvent {
        ModelEvent::Overflow {
            addr,
            npages,
            used: addr,
        }
    }

    #[test]
    fn contiguous_overflows_merge_while_waiting() {
        let mut q = EventQueue::new();
        q.push(overflow(0x1000, 2), 2);
        q.push(overflow(0x3000, 3), 5);
        assert_eq!((q.len(), q.last_seq(), q.merged), (1, 1, 1));
        let e = q.peek().unwrap();
        assert_eq!(
            (u64::from(e.addr), u32::from(e.npages)),
            (0x1000, 5),
            "one run of 5 pages"
        );
        assert_eq!(u64::from(e.overflow_total), 5);
        assert_eq!(u64::from(e.physical_used), 0x3000);
        // Not contiguous, or after another type: a new record.
        q.push(overflow(0x9000, 1), 6);
        q.push(ModelEvent::Pressure { level: 2, used: 1 }, 6);
        q.push(overflow(0xa000, 1), 7);
        assert_eq!((q.len(), q.last_seq(), q.merged), (4, 4, 1));
        // Once delivered, a record is not extended any more.
        let mut q = EventQueue::new();
        q.push(overflow(0x1000, 1), 1);
        q.pop_delivered();
        q.push(overflow(0x2000, 1), 2);
        assert_eq!((q.len(), q.last_seq()), (1, 2));
        // npages would wrap: a new record.
        q.push(overflow(0x3000, u32::MAX), 3);
        assert_eq!((q.len(), q.last_seq()), (2, 3));
    }
}
