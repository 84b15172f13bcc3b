//! The MMIO bus: which device answers at each physical address (by [`memmap::MAP`]).

use rewind_cpu::{Clock, Mmio};

use crate::devices::clint::Clint;
use crate::devices::finisher::Finisher;
use crate::devices::plic::Plic;
use crate::devices::rtc::Rtc;
use crate::devices::uart::Uart;
use crate::devices::virtio_mmio::{self, transport::Transport};
use crate::memmap::{self, Region};

/// Devices behind the MMIO bus.
#[derive(Default)]
pub struct Bus {
    pub uart: Uart,
    pub clint: Clint,
    pub plic: Plic,
    pub rtc: Rtc,
    pub finisher: Finisher,
    /// The virtio-mmio slots' transports (`None`: an empty slot).
    pub virtio: Vec<Option<Transport>>,
    /// The slot of each virtio-net device, in NIC order (the order of
    /// [`MachineConfig::devices`]): NIC n has MAC [`default_mac`]`(n)` and takes
    /// [`InputEvent::Net`] with `nic: n`.
    pub(crate) nic_slots: Vec<usize>,
    pub(crate) rom: Vec<u8>,
    /// Log every MMIO access on standard error (`--trace-mmio`).
    pub trace: bool,
    /// A copy of the hart's clock, so that MMIO reads of time see the exact instruction
    /// count ([`Machine::set_clock`] keeps the two equal).
    pub(crate) clock: Clock,
}

/// Reads `size` bytes at `offset` of a byte image, zero past its end.
fn read_bytes(image: &[u8], offset: u64, size: u8) -> u64 {
    let mut buf = [0u8; 8];
    for (i, b) in buf.iter_mut().take(size as usize).enumerate() {
        *b = image.get(offset as usize + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(buf)
}

impl Mmio for Bus {
    fn read(&mut self, addr: u64, size: u8, icount: u64) -> Option<u64> {
        let value = self.route_read(addr, size, icount);
        if self.trace {
            match value {
                Some(v) => eprintln!("mmio: {icount}: read{} {addr:#x} = {v:#x}", size * 8),
                None => eprintln!(
                    "mmio: {icount}: read{} {addr:#x}: nothing there (access fault)",
                    size * 8
                ),
            }
        }
        value
    }

    fn write(&mut self, addr: u64, size: u8, value: u64, icount: u64) -> bool {
        let ok = self.route_write(addr, size, value, icount);
        if self.trace {
            let outcome = if ok {
                ""
            } else {
                ": nothing there (access fault)"
            };
            eprintln!(
                "mmio: {icount}: write{} {addr:#x} <- {value:#x}{outcome}",
                size * 8
            );
        }
        ok
    }
}

impl Bus {
    /// The transport of NIC `nic`.
    pub(crate) fn nic(&mut self, nic: usize) -> Option<&mut Transport> {
        let slot = *self.nic_slots.get(nic)?;
        self.virtio.get_mut(slot)?.as_mut()
    }

    fn route_read(&mut self, addr: u64, size: u8, icount: u64) -> Option<u64> {
        let (region, offset) = memmap::device_at(addr)?;
        Some(match region {
            Region::Rom => read_bytes(&self.rom, offset, size),
            Region::Uart => self.uart.read(offset) as u64,
            Region::Clint => self.clint.read(offset, size, self.clock.mtime_at(icount))?,
            Region::Plic => self.plic.read(offset) as u64,
            Region::Rtc => self.rtc.read(offset, self.clock.ns_at(icount)) as u64,
            Region::Test => self.finisher.read(offset, size),
            Region::Virtio => {
                let (slot, offset) = virtio_slot(offset);
                match self.virtio.get_mut(slot).and_then(Option::as_mut) {
                    Some(t) => t.read(offset) as u64,
                    None => virtio_mmio::read_empty(offset) as u64,
                }
            }
            Region::Dram => return None,
        })
    }

    fn route_write(&mut self, addr: u64, size: u8, value: u64, icount: u64) -> bool {
        let Some((region, offset)) = memmap::device_at(addr) else {
            return false;
        };
        match region {
            // The ROM ignores writes.
            Region::Rom => {}
            Region::Uart => self.uart.write(offset, value as u8),
            Region::Clint => self.clint.write(offset, size, value),
            Region::Plic => self.plic.write(offset, value as u32),
            Region::Rtc => self
                .rtc
                .write(offset, value as u32, self.clock.ns_at(icount)),
            Region::Test => self.finisher.write(offset, value),
            Region::Virtio => {
                let (slot, offset) = virtio_slot(offset);
                // Empty slots ignore writes, as on QEMU.
                if let Some(t) = self.virtio.get_mut(slot).and_then(Option::as_mut) {
                    t.write(offset, value as u32);
                }
            }
            Region::Dram => return false,
        }
        true
    }
}

/// The slot and the offset in it of `offset` into the virtio-mmio window.
fn virtio_slot(offset: u64) -> (usize, u64) {
    (
        (offset / memmap::VIRTIO_SLOT_SIZE) as usize,
        offset % memmap::VIRTIO_SLOT_SIZE,
    )
}
