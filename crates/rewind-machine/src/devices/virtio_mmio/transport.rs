//! The virtio-mmio version 2 transport (virtio 1.x, section 4.2): register decode by
//! offset, feature negotiation, queue setup and the interrupt status, for any device behind
//! it ([`VirtioDevice`]).

use serde::{Deserialize, Serialize};

use super::{reg, MAGIC, MMIO_VERSION, QEMU_VENDOR};
use crate::devices::virtio::queue::{GuestMemory, Queue, QueueError, Ring, MAX_QUEUE_SIZE};
use crate::devices::virtio::{DeviceContext, DeviceState, DeviceStateRef, VirtioDevice};

pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 64;
/// InterruptStatus bit: a used buffer.
const INT_USED: u32 = 1;

/// Guest-visible transport state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub queues: Vec<Queue>,
    pub interrupt_status: u32,
    pub status: u32,
    /// Queues notified and not yet serviced (a bit per queue).
    pub notified: u32,
}

#[derive(Debug)]
pub struct Transport {
    pub state: TransportState,
    device: Box<dyn VirtioDevice>,
    /// What the device sent out of the machine since the machine last took it (host side,
    /// not guest state: see [`Transport::take_sent`]).
    sent: Vec<Vec<u8>>,
}

impl Transport {
    /// A transport for `device`, as at power-on.
    pub fn new(device: impl VirtioDevice + 'static) -> Transport {
        Transport {
            state: TransportState {
                queues: vec![Queue::default(); device.queue_count()],
                ..TransportState::default()
            },
            device: Box::new(device),
            sent: Vec::new(),
        }
    }

    /// What the device sent out of the machine (a NIC's frames) since the last call.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent)
    }

    /// The device, if it is a `D`.
    pub fn device<D: VirtioDevice + 'static>(&self) -> Option<&D> {
        self.device.as_ref().as_any().downcast_ref()
    }

    /// The device, if it is a `D`, for host-side work that touches no queue.
    pub fn device_mut<D: VirtioDevice + 'static>(&mut self) -> Option<&mut D> {
        self.device.as_mut().as_any_mut().downcast_mut()
    }

    fn device_features(&self) -> u64 {
        F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX | self.device.features()
    }

    /// The device's state, for snapshots.
    pub fn device_state(&self) -> DeviceState {
        self.device.saved_state().cloned()
    }

    /// Puts back a device state that [`Transport::check_state`] accepted.
    pub fn set_device_state(&mut self, state: &DeviceState) {
        self.device.restore_saved_state(state);
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        let sel = self.state.queue_sel as usize;
        self.state.queues.get_mut(sel)
    }

    /// Back to the state after power-on, as a write of 0 to Status asks.
    fn reset(&mut self) {
        let queues = self.state.queues.len();
        self.state = TransportState {
            queues: vec![Queue::default(); queues],
            ..TransportState::default()
        };
        self.device.reset();
    }

    pub fn read(&mut self, offset: u64) -> u32 {
        let s = &self.state;
        let sel_queue = s.queues.get(s.queue_sel as usize);
        match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => QEMU_VENDOR,
            reg::DEVICE_FEATURES => match s.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => sel_queue.map_or(0, |_| MAX_QUEUE_SIZE as u32),
            reg::QUEUE_READY => sel_queue.is_some_and(|q| q.ready) as u32,
            reg::INTERRUPT_STATUS => s.interrupt_status,
            reg::STATUS => s.status,
            reg::CONFIG_GENERATION => 0,
            reg::CONFIG.. => {
                let config = self.device.read_config();
                let at = (offset - reg::CONFIG) as usize;
                let mut word = [0u8; 4];
                for (i, b) in word.iter_mut().enumerate() {
                    *b = config.get(at + i).copied().unwrap_or(0);
                }
                u32::from_le_bytes(word)
            }
            _ => 0,
        }
    }

    pub fn write(&mut self, offset: u64, value: u32) {
        let features_ok = self.state.status & STATUS_FEATURES_OK != 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.state.device_features_sel = value,
            reg::DRIVER_FEATURES if !features_ok => {
                let shift = match self.state.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let mask = 0xffff_ffffu64 << shift;
                let offered = self.device_features();
                self.state.driver_features =
                    (self.state.driver_features & !mask) | (((value as u64) << shift) & offered);
            }
            reg::DRIVER_FEATURES_SEL => self.state.driver_features_sel = value,
            reg::QUEUE_SEL => self.state.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(q) = self.queue() {
                    // Other sizes are ignored.
                    let _ = q.try_set_size(value);
                }
            }
            reg::QUEUE_READY => {
                let event_idx = self.state.driver_features & F_EVENT_IDX != 0;
                if let Some(q) = self.queue() {
                    q.ready = value & 1 != 0;
                    q.event_idx = event_idx;
                }
            }
            reg::QUEUE_NOTIFY if (value as usize) < self.state.queues.len() => {
                self.state.notified |= 1 << value;
            }
            reg::INTERRUPT_ACK => self.state.interrupt_status &= !value,
            reg::CONFIG.. => self.device.write_config(offset - reg::CONFIG, value as u8),
            reg::STATUS => {
                if value == 0 {
                    self.reset();
                } else {
                    self.state.status = value;
                }
            }
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => {
                let high = offset & 4 != 0;
                if let Some(q) = self.queue() {
                    let ring = match offset & !4 {
                        reg::QUEUE_DESC_LOW => Ring::Desc,
                        reg::QUEUE_DRIVER_LOW => Ring::Avail,
                        _ => Ring::Used,
                    };
                    let old = q.address(ring);
                    let new = if high {
                        (old & 0xffff_ffff) | (value as u64) << 32
                    } else {
                        (old & !0xffff_ffff) | value as u64
                    };
                    // Misaligned addresses, and those whose ring would wrap, are ignored.
                    let _ = q.try_set_address(ring, new);
                }
            }
            _ => {}
        }
    }

    /// Checks a saved state before it replaces this transport's (restored state is untrusted):
    /// the same kind of device with as many queues, features the driver acknowledged among
    /// those offered, queues and rings as the register setters allow, and device state within
    /// the device's limits. Says what is wrong.
    pub fn check_state(&self, saved: &TransportState, device: &DeviceState) -> Result<(), String> {
        if !self.device.is_state_of_kind(device) || saved.queues.len() != self.state.queues.len() {
            return Err(format!(
                "it is not this machine's {} device with {} queues",
                self.name(),
                self.state.queues.len()
            ));
        }
        let offered = self.device_features();
        if saved.driver_features & !offered != 0 {
            return Err(format!(
                "the driver acknowledged features {:#x}, which the device does not offer \
                 (it offers {offered:#x})",
                saved.driver_features & !offered
            ));
        }
        if saved.notified >> saved.queues.len() != 0 {
            return Err(format!(
                "queues {:#x} are notified, and it has {}",
                saved.notified,
                saved.queues.len()
            ));
        }
        if saved.interrupt_status & !INT_USED != 0 {
            return Err(format!(
                "its interrupt status {:#x} has bits the device never sets",
                saved.interrupt_status
            ));
        }
        for (i, q) in saved.queues.iter().enumerate() {
            q.check().map_err(|e| format!("queue {i}: {e}"))?;
        }
        self.device.check_saved_state(device, &saved.queues)
    }

    /// The device's kind, for messages.
    pub fn name(&self) -> &'static str {
        self.device.saved_state().name()
    }

    /// A hash of the guest-visible state ([`crate::DigestVersion::Postcard`]): the transport's
    /// and the device's, a disk overlay as its own (incremental) hash, the host's disk file not
    /// at all.
    pub fn digest(&self) -> u64 {
        use crate::digest::state_hash;
        let s = &self.state;
        match self.device.saved_state() {
            // The tag is the variant's, as the other devices' encodings carry it.
            DeviceStateRef::Blk(b) => state_hash(&(s, 1u8, b.hash())),
            device => state_hash(&(s, device)),
        }
    }

    /// The device's state, borrowed (format 1's digest hashes it in its own way).
    pub(crate) fn saved_state(&self) -> DeviceStateRef<'_> {
        self.device.saved_state()
    }

    /// Whether the interrupt line is raised.
    pub fn irq_level(&self) -> bool {
        self.state.interrupt_status != 0
    }

    /// Looks at the queues the driver notified. A queue the driver broke puts the device in
    /// DEVICE_NEEDS_RESET, as the spec asks, instead of touching memory further.
    pub fn service(&mut self, mem: &mut dyn GuestMemory) {
        let notified = std::mem::take(&mut self.state.notified);
        if notified == 0 || self.needs_reset() {
            return;
        }
        let ctx = DeviceContext {
            queues: &mut self.state.queues,
            mem,
            driver_features: self.state.driver_features,
            needs_reset: false,
            to_host: &mut self.sent,
        };
        let result = self.device.notify(notified, ctx);
        self.signal(result);
    }

    /// Host input for the device, if it is a `D`: `work` hands it over, and returns what the
    /// device did with its queues, if it touched them.
    pub fn give<D: VirtioDevice + 'static>(
        &mut self,
        mem: &mut dyn GuestMemory,
        work: impl FnOnce(&mut D, DeviceContext<'_>) -> Option<Result<bool, QueueError>>,
    ) {
        let needs_reset = self.needs_reset();
        let Some(device) = self.device.as_mut().as_any_mut().downcast_mut::<D>() else {
            return;
        };
        let ctx = DeviceContext {
            queues: &mut self.state.queues,
            mem,
            driver_features: self.state.driver_features,
            needs_reset,
            to_host: &mut self.sent,
        };
        if let Some(result) = work(device, ctx) {
            self.signal(result);
        }
    }

    fn needs_reset(&self) -> bool {
        self.state.status & STATUS_NEEDS_RESET != 0
    }

    /// Tells the driver what work on the queues came to: a used buffer it wants to hear of
    /// raises the interrupt; a queue it broke sets DEVICE_NEEDS_RESET.
    fn signal(&mut self, result: Result<bool, QueueError>) {
        match result {
            Ok(true) => self.state.interrupt_status |= INT_USED,
            Ok(false) => {}
            Err(_) => self.state.status |= STATUS_NEEDS_RESET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::rng::Rng;
    use rewind_cpu::Ram;

    const RAM: u64 = 0x8000_0000;
    const DESC: u64 = RAM + 0x1000;
    const AVAIL: u64 = RAM + 0x2000;
    const USED: u64 = RAM + 0x3000;
    const BUF: u64 = RAM + 0x4000;

    fn entropy_wanted(t: &Transport) -> usize {
        t.device::<Rng>().unwrap().wanted()
    }

    fn set_queue(t: &mut Transport, desc: u64) {
        t.write(0x030, 0);
        t.write(0x038, 8);
        for (offset, addr) in [(0x080, desc), (0x090, AVAIL), (0x0a0, USED)] {
            t.write(offset, addr as u32);
            t.write(offset + 4, (addr >> 32) as u32);
        }
        t.write(0x044, 1);
    }

    #[test]
    fn a_driver_sets_up_virtio_rng_and_gets_entropy() {
        let mut ram = Ram::new(RAM, 1 << 20);
        let mut t = Transport::new(Rng::default());
        assert_eq!(t.read(0x000), 0x7472_6976);
        assert_eq!(t.read(0x004), 2);
        assert_eq!(t.read(0x008), 4);
        t.write(0x014, 1);
        assert_eq!(t.read(0x010), 1, "VERSION_1 (feature bit 32)");
        // The driver accepts VERSION_1 and asks for a feature not offered: it is dropped.
        t.write(0x024, 1);
        t.write(0x020, 1 | 2);
        assert_eq!(t.state.driver_features, F_VERSION_1);
        t.write(0x070, 1 | 2 | 8);
        set_queue(&mut t, DESC);
        assert_eq!(t.read(0x044), 1);
        // One 16-byte writable buffer, made available and notified.
        let mut desc = [0u8; 16];
        desc[..8].copy_from_slice(&BUF.to_le_bytes());
        desc[8..12].copy_from_slice(&16u32.to_le_bytes());
        desc[12..14].copy_from_slice(&2u16.to_le_bytes());
        ram.write(DESC, &desc).unwrap();
        ram.write(AVAIL + 2, &1u16.to_le_bytes()).unwrap();
        t.write(0x050, 0);
        assert_eq!(
            entropy_wanted(&t),
            0,
            "nothing happens before the machine services it"
        );
        t.service(&mut ram);
        assert_eq!(entropy_wanted(&t), 16);
        t.give(&mut ram, |r: &mut Rng, ctx| {
            r.fill_from_host(&[0x5a; 16], ctx)
        });
        let mut got = [0u8; 16];
        ram.read(BUF, &mut got).unwrap();
        assert_eq!(got, [0x5a; 16]);
        assert_eq!(entropy_wanted(&t), 0);
        assert!(t.irq_level());
        assert_eq!(t.read(0x060), 1);
        t.write(0x064, 1);
        assert!(!t.irq_level());
        // A reset forgets the queue.
        t.write(0x070, 0);
        assert_eq!(t.read(0x044), 0);
        assert_eq!(t.read(0x070), 0);
    }

    #[test]
    fn digests_hash_each_device_behind_its_tag_in_the_registry() {
        use crate::devices::virtio::input::{Input, InputKind};
        use crate::devices::virtio::net::{default_mac, Net};
        use crate::digest::state_hash;
        // Format 2 recordings keep these hashes: rng is 0, blk 1, input 2, net 3.
        let rng = Transport::new(Rng::default());
        let input = Transport::new(Input::new(InputKind::Mouse));
        let net = Transport::new(Net::new(default_mac(0)));
        let tagged = |t: &Transport, tag: u8| match t.saved_state() {
            DeviceStateRef::Rng(s) => state_hash(&(&t.state, tag, s)),
            DeviceStateRef::Input(s) => state_hash(&(&t.state, tag, s)),
            DeviceStateRef::Net(s) => state_hash(&(&t.state, tag, s)),
            DeviceStateRef::Blk(_) => unreachable!(),
        };
        assert_eq!(rng.digest(), tagged(&rng, 0));
        assert_eq!(input.digest(), tagged(&input, 2));
        assert_eq!(net.digest(), tagged(&net, 3));
    }

    #[test]
    fn a_queue_outside_ram_sets_needs_reset_and_nothing_else() {
        let mut ram = Ram::new(RAM, 1 << 20);
        let mut t = Transport::new(Rng::default());
        t.write(0x070, 1 | 2 | 8);
        set_queue(&mut t, 0x10);
        t.write(0x050, 0);
        t.service(&mut ram);
        // The avail ring is in RAM (index 0: nothing available); make one available.
        ram.write(AVAIL + 2, &1u16.to_le_bytes()).unwrap();
        t.write(0x050, 0);
        t.service(&mut ram);
        assert_ne!(t.read(0x070) & STATUS_NEEDS_RESET, 0);
        assert_eq!(entropy_wanted(&t), 0);
        assert!(!t.irq_level());
    }
}
