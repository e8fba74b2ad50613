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
            if !used {
                // The avail index says there is work, yet no chain could be taken: the driver
                // corrupted its avail ring. Stop here instead of spinning; the next kick retries.
                self.broken_ring(queue);
                break;
            }
        }
        Ok(())
    }

    fn process_requests(&self, vring: &VringRwLock<GM>) -> io::Result<()> {
        self.serve_queue(vring, REQUEST_QUEUE, |mem| {
            let mut used = false;
            while let Some((head, chain)) = Self::pop_chain(vring, mem) {
                let len = self.dev.handle_request(&chain, &**mem);
                self.add_used(vring, head, len);
                used = true;
            }
            // Every chain is a request: there is always work for more.
            (used, true)
        })
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
