//! Events waiting for an eventq buffer: numbered, bounded, with a count of those lost.

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
            self.lost += 1;
            self.lost_since_delivery = self.lost_since_delivery.saturating_add(1);
            return;
        }
        self.pending.push_back(rec);
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
                    addr: i as u64 * 4096,
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
        q.push(ModelEvent::Pressure { level: 1, used: 5 }, 0);
        assert_eq!(q.lost, 4);
    }
}
