// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! The vhost-user backend: feature negotiation, config space, and the two virtqueues.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::{debug, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_queue::QueueT;
use vm_memory::{ByteValued, GuestAddressSpace, GuestMemoryLoadGuard};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::device::Device;
use crate::protocol::*;
use crate::request::{Chain, Desc};
use crate::rl_warn;
use crate::stats;
use crate::window::{GuestMem, GM};

/// Epoll id of the device's own notification eventfd (ids 0..=NUM_QUEUES are taken by the
/// queues and the exit event).
pub const NOTIFY_EVENT: u16 = NUM_QUEUES as u16 + 1;

/// Guest memory as a queue is served from it.
type Mem = GuestMemoryLoadGuard<GuestMem>;

pub struct VcramBackend {
    pub dev: Arc<Device>,
    event_idx: AtomicBool,
}

impl VcramBackend {
    pub fn new(dev: Arc<Device>) -> Self {
        VcramBackend {
            dev,
            event_idx: AtomicBool::new(false),
        }
    }

    fn collect(chain: impl Iterator<Item = virtio_queue::desc::split::Descriptor>) -> Chain {
        Chain::collect(chain.map(|d| {
            (
                Desc {
                    addr: d.addr().0,
                    len: d.len(),
                    writable: d.is_write_only(),
                },
                d.has_next(),
            )
        }))
    }

    /// Put a chain on the used ring. A failure (head index out of range, used ring outside guest
    /// memory) is the driver's doing: count it, warn, and go on with the next chain.
    fn add_used(&self, vring: &VringRwLock<GM>, head: u16, len: u32) -> bool {
        match vring.add_used(head, len) {
            Ok(()) => true,
            Err(e) => {
                stats::inc(&self.dev.dc.device_errors, 1);
                rl_warn!(
                    self.dev.warn,
                    "cannot complete descriptor chain {head}: {e}"
                );
                false
            }
        }
    }

    /// Take the next chain off the queue: its head index and its descriptors.
    fn pop_chain(vring: &VringRwLock<GM>, mem: &Mem) -> Option<(u16, Chain)> {
        let chain = vring
            .get_mut()
            .get_queue_mut()
            .pop_descriptor_chain(mem.clone())?;
        Some((chain.head_index(), Self::collect(chain)))
    }

    /// Serve a queue: `drain` takes the chains it can (through `pop_chain`) and returns whether
    /// it completed any and whether it still has work for more chains. The used ring is then
    /// signalled if the driver wants it; with EVENT_IDX, notifications are re-enabled and the
    /// queue drained again as long as the driver added chains meanwhile.
    fn serve_queue(
        &self,
        vring: &VringRwLock<GM>,
        queue: u16,
        mut drain: impl FnMut(&Mem) -> (bool, bool),
    ) -> io::Result<()> {
        let Some(gm) = self.dev.mem() else {
            return Ok(());
        };
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let mut idle = 0;
        loop {
            if event_idx {
                vring.disable_notification().map_err(io::Error::other)?;
            }
            let mem = gm.memory();
            let (used, pending) = drain(&mem);
            if used && vring.needs_notification().map_err(io::Error::other)? {
                vring.signal_used_queue()?;
            }
            if !event_idx || !pending || !vring.enable_notification().map_err(io::Error::other)? {
                break;
            }
            if used {
                idle = 0;
                continue;
            }
            // The avail index says there is work, yet this drain took no chain. Once is the
            // normal EVENT_IDX race: the driver added chains after the drain found none and
            // before notifications were re-enabled; drain again. Twice in a row: the driver
            // corrupted its avail ring. Stop instead of spinning; the next kick retries.
            idle += 1;
            if idle >= 2 {
                self.broken_ring(queue);
                break;
            }
        }
        Ok(())
    }

    fn process_requests(&self, vring: &VringRwLock<GM>) -> io::Result<()> {
        self.serve_queue(vring, REQUEST_QUEUE, |mem| self.drain_requests(vring, mem))
    }

    /// Execute every request chain available; returns (completed any, wants more chains).
    fn drain_requests(&self, vring: &VringRwLock<GM>, mem: &Mem) -> (bool, bool) {
        let mut used = false;
        while let Some((head, chain)) = Self::pop_chain(vring, mem) {
            if self.dev.fault.drop_request() {
                continue;
            }
            let len = self.dev.handle_request(&chain, &**mem);
            self.add_used(vring, head, len);
            used = true;
        }
        // Every chain is a request: there is always work for more.
        (used, true)
    }

    fn broken_ring(&self, queue: u16) {
        stats::inc(&self.dev.dc.device_errors, 1);
        rl_warn!(
            self.dev.warn,
            "queue {queue}: avail ring index is inconsistent (more entries than the queue size?); waiting for the driver"
        );
    }

    fn deliver_events(&self, vring: &VringRwLock<GM>) -> io::Result<()> {
        {
            let st = vring.get_ref();
            if !st.get_queue().ready() || !st.is_enabled() {
                return Ok(());
            }
        }
        self.serve_queue(vring, EVENT_QUEUE, |mem| {
            let mut used = false;
            let mut q = self.dev.events.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(rec) = q.peek() {
                let Some((head, chain)) = Self::pop_chain(vring, mem) else {
                    break;
                };
                let descs = &chain.descs;
                let readable = descs.iter().any(|d| !d.writable);
                let room = crate::request::writable_len(descs);
                let written = if readable
                    || !chain.complete
                    || descs.len() > VCRAM_MAX_CHAIN_DESCS
                    || room < VCRAM_EVENT_SIZE as u64
                {
                    None
                } else {
                    crate::request::scatter(descs, &**mem, rec.as_slice())
                };
                match written {
                    Some(n) => {
                        if self.add_used(vring, head, n) {
                            q.pop_delivered();
                        }
                    }
                    None => {
                        stats::inc(&self.dev.dc.bad_event_buffers, 1);
                        rl_warn!(
                            self.dev.warn,
                            "unusable eventq buffer (head {head}: {} descriptors, {room} writable bytes, readable part: {readable}, cut short: {}); returned unused",
                            descs.len(),
                            !chain.complete
                        );
                        self.add_used(vring, head, 0);
                    }
                }
                used = true;
            }
            // Events left over want more buffers.
            (used, !q.is_empty())
        })
    }
}

impl VhostUserBackend for VcramBackend {
    type Bitmap = ();
    type Vring = VringRwLock<GM>;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        self.dev.opts.queue_size as usize
    }

    fn features(&self) -> u64 {
        self.dev.connected.store(true, Ordering::Relaxed);
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        debug!("features acked: {features:#x}");
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let bytes = self.dev.config_bytes();
        let start = offset as usize;
        match start.checked_add(size as usize) {
            Some(end) if end <= bytes.len() => bytes[start..end].to_vec(),
            _ => {
                warn!("GET_CONFIG beyond the config space (offset {offset}, size {size})");
                Vec::new()
            }
        }
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        // The config space is read-only; QEMU re-sends it on some paths. Ignore.
        debug!("SET_CONFIG ignored (offset {offset}, {} bytes)", buf.len());
        Ok(())
    }

    fn update_memory(&self, mem: GM) -> io::Result<()> {
        self.dev.update_memory(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        // An error returned from here would stop the vring worker thread for good; a broken
        // ring (bad used-ring address, ...) is the driver's fault: log it and keep serving.
        if let Err(e) = self.dispatch(device_event, evset, vrings) {
            stats::inc(&self.dev.dc.device_errors, 1);
            rl_warn!(
                self.dev.warn,
                "virtqueue processing failed (event {device_event}): {e}"
            );
        }
        Ok(())
    }
}

impl VcramBackend {
    fn dispatch(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock<GM>],
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            warn!("unexpected event set {evset:?} for event {device_event}");
            return Ok(());
        }
        stats::inc(&self.dev.dc.kicks, 1);
        match device_event {
            REQUEST_QUEUE => {
                if let Some(v) = vrings.get(REQUEST_QUEUE as usize) {
                    self.process_requests(v)?;
                }
                // Requests may have raised events.
                if let Some(v) = vrings.get(EVENT_QUEUE as usize) {
                    self.deliver_events(v)?;
                }
            }
            EVENT_QUEUE => {
                if let Some(v) = vrings.get(EVENT_QUEUE as usize) {
                    self.deliver_events(v)?;
                }
            }
            NOTIFY_EVENT => {
                let _ = self.dev.notify.read();
                if let Some(v) = vrings.get(EVENT_QUEUE as usize) {
                    self.deliver_events(v)?;
                }
            }
            other => warn!("unknown device event {other}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceOptions;

    #[test]
    fn config_reads_any_window_of_the_256_bytes() {
        let dev = Arc::new(Device::new(DeviceOptions::default()).unwrap());
        let b = VcramBackend::new(dev);
        let full = b.get_config(0, 256);
        assert_eq!(full.len(), 256);
        assert_eq!(&full[0..4], b"VCRM");
        assert_eq!(b.get_config(4, 8), full[4..12].to_vec());
        assert_eq!(b.get_config(0, 64), full[..64].to_vec());
        assert!(full[VCRAM_CONFIG_SIZE..].iter().all(|x| *x == 0));
        // beyond the config space: an empty answer (the frontend sees an error)
        assert!(b.get_config(250, 10).is_empty());
        assert!(b.get_config(u32::MAX, 4).is_empty());
        // writes are ignored
        b.set_config(0, &[0xff; 8]).unwrap();
        assert_eq!(&b.get_config(0, 4)[..], b"VCRM");
    }

    use crate::device::tests::{device, BASE};
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const QSIZE: u16 = 64;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;

    /// A backend with a 1 MiB window, and a vring laid out by the mock queue at 0.
    fn setup(physical: u64) -> (VcramBackend, GM, VringRwLock<GM>) {
        let (dev, gm) = device(
            DeviceOptions {
                physical_size: Some(physical),
                ..Default::default()
            },
            1 << 20,
        );
        let vring = VringRwLock::new(gm.clone(), QSIZE).unwrap();
        {
            let m = gm.memory();
            let mock = MockSplitQueue::new(&*m, QSIZE);
            vring.set_queue_size(QSIZE);
            vring
                .set_queue_info(
                    mock.desc_table_addr().0,
                    mock.avail_addr().0,
                    mock.used_addr().0,
                )
                .unwrap();
        }
        vring.set_queue_ready(true);
        vring.set_enabled(true);
        (VcramBackend::new(Arc::new(dev)), gm, vring)
    }

    fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    /// Post one request chain at descriptor `slot` (request at 0x8000 + slot * 0x100, response
    /// at 0x40000 + slot * 0x20).
    /// (Creating a `MockSplitQueue` zeroes the ring indices: one per test.)
    fn post_request(
        mock: &MockSplitQueue<'_, crate::window::GuestMem>,
        gm: &GM,
        slot: u16,
        req_type: u32,
        ranges: &[(u64, u32)],
    ) -> u64 {
        let m = gm.memory();
        let req = encode_request(req_type, 0, ranges);
        let ra = 0x8000 + u64::from(slot) * 0x100;
        let resp = 0x40000 + u64::from(slot) * 0x20;
        m.write_slice(&req, GuestAddress(ra)).unwrap();
        mock.add_desc_chains(
            &[
                raw(ra, req.len() as u32, F_NEXT, slot + 1),
                raw(resp, 24, F_WRITE, 0),
            ],
            slot,
        )
        .unwrap();
        resp
    }

    fn used_entries(gm: &GM, vring: &VringRwLock<GM>) -> Vec<(u32, u32)> {
        let m = gm.memory();
        let used = vring.get_ref().get_queue().used_ring();
        let idx: u16 = m.read_obj(GuestAddress(used + 2)).unwrap();
        (0..idx)
            .map(|i| {
                let e = GuestAddress(used + 4 + 8 * u64::from(i));
                (
                    m.read_obj(e).unwrap(),
                    m.read_obj(GuestAddress(e.0 + 4)).unwrap(),
                )
            })
            .collect()
    }

    fn resp(gm: &GM, at: u64) -> VcramResp {
        gm.memory().read_obj(GuestAddress(at)).unwrap()
    }

    #[test]
    fn request_loop_on_the_mock_queue() {
        let (b, gm, vring) = setup(512 << 10);
        let page = vec![0x5au8; 4096];
        gm.memory()
            .write_slice(&page, GuestAddress(BASE + 4096))
            .unwrap();
        let m = gm.memory();
        let mock = MockSplitQueue::new(&*m, QSIZE);
        let r0 = post_request(&mock, &gm, 0, VCRAM_REQ_COMMIT, &[(BASE + 4096, 1)]);
        let r1 = post_request(&mock, &gm, 2, VCRAM_REQ_DISCARD, &[(BASE + 4096, 1)]);
        let r2 = post_request(&mock, &gm, 4, 77, &[(BASE, 1)]);
        b.process_requests(&vring).unwrap();
        assert_eq!(used_entries(&gm, &vring), vec![(0, 24), (2, 24), (4, 24)]);
        assert_eq!(u32::from(resp(&gm, r0).status), VCRAM_S_OK);
        assert_eq!(u64::from(resp(&gm, r0).pages_done), 1);
        assert_eq!(u32::from(resp(&gm, r1).status), VCRAM_S_OK);
        assert_eq!(u32::from(resp(&gm, r2).status), VCRAM_S_UNSUPPORTED);
        let mut back = vec![1u8; 4096];
        gm.memory()
            .read_slice(&mut back, GuestAddress(BASE + 4096))
            .unwrap();
        assert!(back.iter().all(|x| *x == 0), "DISCARD zeroed the page");
        assert_eq!(stats::get(&b.dev.dc.device_errors), 0);
        assert_eq!(stats::get(&b.dev.dc.commit_requests), 1);
    }

    /// The driver adds a chain after a drain found the ring empty and before notifications
    /// are re-enabled: that is the normal EVENT_IDX race, not a device error.
    #[test]
    fn event_idx_race_is_not_a_device_error() {
        let (b, gm, vring) = setup(512 << 10);
        b.set_event_idx(true);
        vring.set_queue_event_idx(true);
        let m = gm.memory();
        let mock = MockSplitQueue::new(&*m, QSIZE);
        let mut calls = 0;
        let mut at = 0;
        b.serve_queue(&vring, REQUEST_QUEUE, |mem| {
            calls += 1;
            if calls == 1 {
                at = post_request(&mock, &gm, 0, VCRAM_REQ_DISCARD, &[(BASE, 1)]);
                return (false, true);
            }
            b.drain_requests(&vring, mem)
        })
        .unwrap();
        assert_eq!(used_entries(&gm, &vring), vec![(0, 24)]);
        assert_eq!(u32::from(resp(&gm, at).status), VCRAM_S_OK);
        assert_eq!(stats::get(&b.dev.dc.device_errors), 0);
        assert_eq!(calls, 2);
    }

    /// An avail index far ahead of the ring: reported once as a device error, no spinning.
    #[test]
    fn corrupted_avail_index_is_reported_and_does_not_spin() {
        let (b, gm, vring) = setup(512 << 10);
        b.set_event_idx(true);
        vring.set_queue_event_idx(true);
        let avail = vring.get_ref().get_queue().avail_ring();
        gm.memory()
            .write_obj(1000u16, GuestAddress(avail + 2))
            .unwrap();
        b.process_requests(&vring).unwrap();
        assert_eq!(stats::get(&b.dev.dc.device_errors), 1);
        assert!(used_entries(&gm, &vring).is_empty());
    }

    #[test]
    fn event_loop_on_the_mock_queue() {
        // physical capacity just above the metadata (4 KiB for 1 MiB): the metadata alone is
        // past both watermarks, so a PRESSURE event is waiting
        let (b, gm, vring) = setup(4096 + 64);
        assert!(!b.dev.events.lock().unwrap().is_empty());
        {
            let m = gm.memory();
            let mock = MockSplitQueue::new(&*m, QSIZE);
            mock.add_desc_chains(
                &[
                    // readable: unusable, returned with len 0
                    raw(0x50000, 48, 0, 0),
                    // 2 x 24 writable bytes: the record is scattered
                    raw(0x50100, 24, F_WRITE | F_NEXT, 2),
                    raw(0x50200, 24, F_WRITE, 0),
                    // spare buffer
                    raw(0x50300, 48, F_WRITE, 0),
                ],
                0,
            )
            .unwrap();
        }
        b.deliver_events(&vring).unwrap();
        assert_eq!(used_entries(&gm, &vring), vec![(0, 0), (1, 48)]);
        let m = gm.memory();
        let mut rec = [0u8; 48];
        m.read_slice(&mut rec[..24], GuestAddress(0x50100)).unwrap();
        m.read_slice(&mut rec[24..], GuestAddress(0x50200)).unwrap();
        let ev = VcramEvent::from_slice(&rec).copied().unwrap();
        assert_eq!(u32::from(ev.event_type), VCRAM_EVT_PRESSURE);
        assert_eq!(u32::from(ev.level), VCRAM_LEVEL_HIGH);
        assert_eq!(u64::from(ev.seq), 1);
        assert_eq!(stats::get(&b.dev.dc.bad_event_buffers), 1);
        assert!(b.dev.events.lock().unwrap().is_empty());
    }

    /// NOMINATE (protocol 1.3) on the mock queue: the answer is the response and the entries
    /// (used length 24 + 16 per entry); a chain without room for one entry is refused, as is
    /// one with ranges, and the loop goes on.
    #[test]
    fn nominate_on_the_mock_queue() {
        let (b, gm, vring) = setup(512 << 10);
        let mut rnd = 0x2545_f491_4f6c_dd1du64;
        let mut page = vec![0u8; 4096];
        for c in page.chunks_mut(8) {
            rnd ^= rnd << 13;
            rnd ^= rnd >> 7;
            rnd ^= rnd << 17;
            c.copy_from_slice(&rnd.to_le_bytes());
        }
        for p in [5u64, 6, 7] {
            gm.memory()
                .write_slice(&page, GuestAddress(BASE + p * 4096))
                .unwrap();
        }
        assert!(b.dev.scan_pass());
        let m = gm.memory();
        let mock = MockSplitQueue::new(&*m, QSIZE);
        let hdr = |nr: u32| {
            VcramReqHeader {
                req_type: VCRAM_REQ_NOMINATE.into(),
                nr_ranges: nr.into(),
                tag: 0.into(),
            }
            .as_slice()
            .to_vec()
        };
        m.write_slice(&hdr(0), GuestAddress(0x8000)).unwrap();
        let mut with_range = hdr(1);
        with_range.extend_from_slice(&[0u8; 16]);
        m.write_slice(&with_range, GuestAddress(0x8100)).unwrap();
        mock.add_desc_chains(
            &[
                // 0: room for 4 entries
                raw(0x8000, 16, F_NEXT, 1),
                raw(0x40000, 24 + 4 * 16, F_WRITE, 0),
                // 2: room for none
                raw(0x8000, 16, F_NEXT, 3),
                raw(0x41000, 24 + 15, F_WRITE, 0),
                // 4: a range where none may be
                raw(0x8100, 32, F_NEXT, 5),
                raw(0x42000, 4096, F_WRITE, 0),
            ],
            0,
        )
        .unwrap();
        b.process_requests(&vring).unwrap();
        assert_eq!(
            used_entries(&gm, &vring),
            vec![(0, 24 + 16), (2, 24), (4, 24)]
        );
        let r = resp(&gm, 0x40000);
        assert_eq!(u32::from(r.status), VCRAM_S_OK);
        assert_eq!(u64::from(r.pages_done), 3);
        let e: VcramNomination = m.read_obj(GuestAddress(0x40000 + 24)).unwrap();
        assert_eq!(u64::from(e.addr), BASE + 5 * 4096);
        assert_eq!(u32::from(e.npages), 3);
        assert_eq!(u32::from(e.class), VCRAM_NOM_RAW);
        assert_eq!(u32::from(resp(&gm, 0x41000).status), VCRAM_S_BAD_REQUEST);
        assert_eq!(u32::from(resp(&gm, 0x42000).status), VCRAM_S_BAD_REQUEST);
        let s = b.dev.snapshot();
        assert_eq!(s.nominate_requests, 1);
        assert_eq!(s.rejects.get("nominate_no_room"), Some(&1));
        assert_eq!(s.rejects.get("bad_range_count"), Some(&1));
    }

    #[test]
    fn features_and_protocol_features() {
        let dev = Arc::new(Device::new(DeviceOptions::default()).unwrap());
        let b = VcramBackend::new(dev.clone());
        assert!(!dev.connected.load(Ordering::Relaxed));
        let f = b.features();
        assert!(dev.connected.load(Ordering::Relaxed));
        assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);
        assert_ne!(f & (1 << VIRTIO_RING_F_EVENT_IDX), 0);
        assert_ne!(f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(), 0);
        let pf = b.protocol_features();
        assert!(pf.contains(VhostUserProtocolFeatures::CONFIG));
        assert!(pf.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS));
        assert!(pf.contains(VhostUserProtocolFeatures::MQ));
        assert_eq!(b.num_queues(), 2);
        assert_eq!(b.max_queue_size(), 1024);
    }
}
