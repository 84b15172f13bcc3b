//! The virtio-mmio version 2 transport (virtio 1.x, section 4.2): register decode by
//! offset, feature negotiation, queue setup and the interrupt status, apart from the device
//! behind it.

use serde::{Deserialize, Serialize};

use crate::devices::virtio::blk::{self, Blk, BlkState, DiskImage};
use crate::devices::virtio::input::{self, EvdevEvent, Input, InputKind, InputState};
use crate::devices::virtio::net::{self, Net, NetState};
use crate::devices::virtio::queue::{GuestMemory, Queue, Ring, MAX_QUEUE_SIZE};
use crate::devices::virtio::rng::{self, Rng, RngState};

const MAGIC: u32 = 0x7472_6976; // "virt"
const QEMU_VENDOR: u32 = 0x554d_4551; // "QEMU"

pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 64;
/// InterruptStatus bit: a used buffer.
const INT_USED: u32 = 1;

/// The device behind a transport.
#[derive(Debug)]
pub enum Device {
    Rng(Rng),
    Blk(Blk),
    Input(Input),
    Net(Net),
}

/// A device's guest-visible state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceState {
    Rng(RngState),
    Blk(BlkState),
    Input(InputState),
    Net(NetState),
}

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
    pub device: Device,
}

impl Transport {
    pub fn rng() -> Transport {
        Transport {
            state: TransportState {
                queues: vec![Queue::default()],
                ..TransportState::default()
            },
            device: Device::Rng(Rng::default()),
        }
    }

    pub fn blk(image: DiskImage) -> Transport {
        Transport {
            state: TransportState {
                queues: vec![Queue::default()],
                ..TransportState::default()
            },
            device: Device::Blk(Blk::new(image)),
        }
    }

    /// A virtio-input device: an event queue and a status queue.
    pub fn input(kind: InputKind) -> Transport {
        Transport {
            state: TransportState {
                queues: vec![Queue::default(), Queue::default()],
                ..TransportState::default()
            },
            device: Device::Input(Input::new(kind)),
        }
    }

    /// A virtio-net device: a receive queue and a transmit queue.
    pub fn net(mac: [u8; 6]) -> Transport {
        Transport {
            state: TransportState {
                queues: vec![Queue::default(), Queue::default()],
                ..TransportState::default()
            },
            device: Device::Net(Net::new(mac)),
        }
    }

    fn device_id(&self) -> u32 {
        match self.device {
            Device::Rng(_) => rng::DEVICE_ID,
            Device::Blk(_) => blk::DEVICE_ID,
            Device::Input(_) => input::DEVICE_ID,
            Device::Net(_) => net::DEVICE_ID,
        }
    }

    fn device_features(&self) -> u64 {
        let own = match &self.device {
            Device::Rng(_) | Device::Input(_) => 0,
            Device::Blk(b) => b.features(),
            Device::Net(n) => n.features(),
        };
        F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX | own
    }

    /// The device's state, for snapshots.
    pub fn device_state(&self) -> DeviceState {
        match &self.device {
            Device::Rng(r) => DeviceState::Rng(r.state.clone()),
            Device::Blk(b) => DeviceState::Blk(b.state.clone()),
            Device::Input(i) => DeviceState::Input(i.state.clone()),
            Device::Net(n) => DeviceState::Net(n.state.clone()),
        }
    }

    /// Puts back a device state of the same kind; `false` if the kinds differ.
    pub fn set_device_state(&mut self, state: &DeviceState) -> bool {
        match (&mut self.device, state) {
            (Device::Rng(r), DeviceState::Rng(s)) => r.state = s.clone(),
            (Device::Blk(b), DeviceState::Blk(s)) => b.state = s.clone(),
            (Device::Input(i), DeviceState::Input(s)) => i.state = s.clone(),
            (Device::Net(n), DeviceState::Net(s)) => n.state = s.clone(),
            _ => return false,
        }
        true
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
        match &mut self.device {
            Device::Rng(r) => *r = Rng::default(),
            // What was written to the disk stays written.
            Device::Blk(_) => {}
            Device::Input(i) => i.state = InputState::default(),
            Device::Net(n) => {
                n.state = NetState::default();
                n.sent.clear();
            }
        }
    }

    pub fn read(&mut self, offset: u64) -> u32 {
        let s = &self.state;
        let sel_queue = s.queues.get(s.queue_sel as usize);
        match offset {
            0x000 => MAGIC,
            0x004 => 2,
            0x008 => self.device_id(),
            0x00c => QEMU_VENDOR,
            0x010 => match s.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            0x034 => sel_queue.map_or(0, |_| MAX_QUEUE_SIZE as u32),
            0x044 => sel_queue.is_some_and(|q| q.ready) as u32,
            0x060 => s.interrupt_status,
            0x070 => s.status,
            0x0fc => 0,
            0x100.. => {
                let config = match &self.device {
                    Device::Blk(b) => b.config(),
                    Device::Input(i) => i.config(),
                    Device::Net(n) => n.config(),
                    Device::Rng(_) => Vec::new(),
                };
                let at = (offset - 0x100) as usize;
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
            0x014 => self.state.device_features_sel = value,
            0x020 if !features_ok => {
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
            0x024 => self.state.driver_features_sel = value,
            0x030 => self.state.queue_sel = value,
            0x038 => {
                if let Some(q) = self.queue() {
                    // Other sizes are ignored.
                    let _ = q.try_set_size(value);
                }
            }
            0x044 => {
                let event_idx = self.state.driver_features & F_EVENT_IDX != 0;
                if let Some(q) = self.queue() {
                    q.ready = value & 1 != 0;
                    q.event_idx = event_idx;
                }
            }
            0x050 if (value as usize) < self.state.queues.len() => {
                self.state.notified |= 1 << value;
            }
            0x064 => self.state.interrupt_status &= !value,
            0x100.. => {
                if let Device::Input(i) = &mut self.device {
                    i.config_write(offset - 0x100, value as u8);
                }
            }
            0x070 => {
                if value == 0 {
                    self.reset();
                } else {
                    self.state.status = value;
                }
            }
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 => {
                let high = offset & 4 != 0;
                if let Some(q) = self.queue() {
                    let ring = match offset & !4 {
                        0x080 => Ring::Desc,
                        0x090 => Ring::Avail,
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
        let kind_matches =
            std::mem::discriminant(device) == std::mem::discriminant(&self.device_state_kind());
        if !kind_matches || saved.queues.len() != self.state.queues.len() {
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
        match (device, &self.device) {
            (DeviceState::Rng(r), _) => {
                let size = saved.queues[0].size;
                for req in &r.pending {
                    if req.head >= size || req.buffers.len() > size as usize {
                        return Err(format!(
                            "a pending entropy request (head {}, {} buffers) does not fit its \
                             queue of size {size}",
                            req.head,
                            req.buffers.len()
                        ));
                    }
                }
            }
            (DeviceState::Blk(b), Device::Blk(blk)) => b.validate(blk.image.size)?,
            (DeviceState::Input(i), _) if i.pending.len() > input::MAX_PENDING => {
                return Err(format!(
                    "{} input events are pending, more than the {} it holds",
                    i.pending.len(),
                    input::MAX_PENDING
                ));
            }
            (DeviceState::Net(n), _) => {
                if n.pending.len() > net::MAX_PENDING {
                    return Err(format!(
                        "{} received frames are pending, more than the {} it holds",
                        n.pending.len(),
                        net::MAX_PENDING
                    ));
                }
                if let Some(f) = n
                    .pending
                    .iter()
                    .find(|f| !net::FRAME_LEN.contains(&f.len()))
                {
                    return Err(format!(
                        "a pending frame is {} bytes, outside {:?}",
                        f.len(),
                        net::FRAME_LEN
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An empty state of this device's kind (its variant is what matters).
    fn device_state_kind(&self) -> DeviceState {
        match &self.device {
            Device::Rng(_) => DeviceState::Rng(RngState::default()),
            Device::Blk(_) => DeviceState::Blk(BlkState::default()),
            Device::Input(_) => DeviceState::Input(InputState::default()),
            Device::Net(_) => DeviceState::Net(NetState::default()),
        }
    }

    /// The device's kind, for messages.
    pub fn name(&self) -> &'static str {
        match self.device {
            Device::Rng(_) => "rng",
            Device::Blk(_) => "blk",
            Device::Input(_) => "input",
            Device::Net(_) => "net",
        }
    }

    /// A hash of the guest-visible state ([`crate::DigestVersion::Postcard`]): the transport's
    /// and the device's, a disk overlay as its own (incremental) hash, the host's disk file not
    /// at all.
    pub fn digest(&self) -> u64 {
        use crate::digest::state_hash;
        let s = &self.state;
        match &self.device {
            Device::Rng(r) => state_hash(&(s, 0u8, &r.state)),
            Device::Blk(b) => state_hash(&(s, 1u8, b.state.hash())),
            Device::Input(i) => state_hash(&(s, 2u8, &i.state)),
            Device::Net(n) => state_hash(&(s, 3u8, &n.state)),
        }
    }

    /// Whether the interrupt line is raised.
    pub fn irq_level(&self) -> bool {
        self.state.interrupt_status != 0
    }

    /// Looks at the queues the driver notified. A queue the driver broke puts the device in
    /// DEVICE_NEEDS_RESET, as the spec asks, instead of touching memory further.
    pub fn service(&mut self, mem: &mut dyn GuestMemory) {
        let notified = std::mem::take(&mut self.state.notified);
        if notified == 0 || self.state.status & STATUS_NEEDS_RESET != 0 {
            return;
        }
        let result = match (&mut self.device, self.state.queues.as_mut_slice()) {
            (Device::Input(i), [events, status]) => {
                // Status (LEDs) is taken and returned; events go into the event buffers.
                let mut drained = Ok(false);
                if notified & 2 != 0 {
                    while let Ok(Some(chain)) = status.pop(mem) {
                        drained = status.push(mem, chain.head, 0);
                        if drained.is_err() {
                            break;
                        }
                    }
                }
                drained.and_then(|a| Ok(a | i.deliver(events, mem)?))
            }
            (Device::Net(n), [rx, tx]) => {
                let valid = self.state.driver_features & net::F_GUEST_CSUM != 0;
                let sent = if notified & 2 != 0 {
                    n.transmit(tx, mem)
                } else {
                    Ok(false)
                };
                sent.and_then(|a| Ok(a | n.receive(rx, mem, valid)?))
            }
            (Device::Rng(r), [q, ..]) if notified & 1 != 0 => r.notify(q, mem).map(|()| false),
            (Device::Blk(b), [q, ..]) if notified & 1 != 0 => b.notify(q, mem),
            _ => Ok(false),
        };
        match result {
            Ok(true) => self.state.interrupt_status |= INT_USED,
            Ok(false) => {}
            Err(_) => self.state.status |= STATUS_NEEDS_RESET,
        }
    }

    /// Entropy bytes the device waits for.
    pub fn entropy_wanted(&self) -> usize {
        match &self.device {
            Device::Rng(r) => r.wanted(),
            Device::Blk(_) | Device::Input(_) | Device::Net(_) => 0,
        }
    }

    /// A frame from the host for a network device.
    pub fn give_frame(&mut self, mem: &mut dyn GuestMemory, frame: &[u8]) {
        let valid = self.state.driver_features & net::F_GUEST_CSUM != 0;
        let (Device::Net(n), Some(rx)) = (&mut self.device, self.state.queues.first_mut()) else {
            return;
        };
        n.queue_frame(frame);
        if self.state.status & STATUS_NEEDS_RESET != 0 || !rx.ready {
            return;
        }
        match n.receive(rx, mem, valid) {
            Ok(true) => self.state.interrupt_status |= INT_USED,
            Ok(false) => {}
            Err(_) => self.state.status |= STATUS_NEEDS_RESET,
        }
    }

    /// Host input events for an input device: those of its kind are queued and delivered.
    pub fn give_input(&mut self, mem: &mut dyn GuestMemory, events: &[EvdevEvent]) {
        let (Device::Input(i), Some(q)) = (&mut self.device, self.state.queues.first_mut()) else {
            return;
        };
        let mine: Vec<EvdevEvent> = events
            .iter()
            .filter(|e| e.kind != 0 && i.takes(e))
            .copied()
            .chain(std::iter::once(EvdevEvent::SYN))
            .collect();
        if mine.len() < 2 || self.state.status & STATUS_NEEDS_RESET != 0 {
            return;
        }
        match i.push_events(&mine, q, mem) {
            Ok(true) => self.state.interrupt_status |= INT_USED,
            Ok(false) => {}
            Err(_) => self.state.status |= STATUS_NEEDS_RESET,
        }
    }

    /// Host entropy for the device.
    pub fn give_entropy(&mut self, mem: &mut dyn GuestMemory, bytes: &[u8]) {
        let (Device::Rng(r), Some(q)) = (&mut self.device, self.state.queues.first_mut()) else {
            return;
        };
        match r.fill(q, mem, bytes) {
            Ok(true) => self.state.interrupt_status |= INT_USED,
            Ok(false) => {}
            Err(_) => self.state.status |= STATUS_NEEDS_RESET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_cpu::Ram;

    const RAM: u64 = 0x8000_0000;
    const DESC: u64 = RAM + 0x1000;
    const AVAIL: u64 = RAM + 0x2000;
    const USED: u64 = RAM + 0x3000;
    const BUF: u64 = RAM + 0x4000;

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
        let mut t = Transport::rng();
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
            t.entropy_wanted(),
            0,
            "nothing happens before the machine services it"
        );
        t.service(&mut ram);
        assert_eq!(t.entropy_wanted(), 16);
        t.give_entropy(&mut ram, &[0x5a; 16]);
        let mut got = [0u8; 16];
        ram.read(BUF, &mut got).unwrap();
        assert_eq!(got, [0x5a; 16]);
        assert_eq!(t.entropy_wanted(), 0);
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
    fn a_queue_outside_ram_sets_needs_reset_and_nothing_else() {
        let mut ram = Ram::new(RAM, 1 << 20);
        let mut t = Transport::rng();
        t.write(0x070, 1 | 2 | 8);
        set_queue(&mut t, 0x10);
        t.write(0x050, 0);
        t.service(&mut ram);
        // The avail ring is in RAM (index 0: nothing available); make one available.
        ram.write(AVAIL + 2, &1u16.to_le_bytes()).unwrap();
        t.write(0x050, 0);
        t.service(&mut ram);
        assert_ne!(t.read(0x070) & STATUS_NEEDS_RESET, 0);
        assert_eq!(t.entropy_wanted(), 0);
        assert!(!t.irq_level());
    }
}
