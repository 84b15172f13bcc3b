//! The MMIO bus: which device answers at each physical address.

use rewind_cpu::{Clock, Mmio};

use crate::boot;
use crate::devices::clint::{self, Clint};
use crate::devices::finisher::{self, Finisher};
use crate::devices::plic::{self, Plic};
use crate::devices::rtc::{self, Rtc};
use crate::devices::uart::{self, Uart};
use crate::devices::virtio_mmio::{self, transport::Transport};

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

fn in_region(addr: u64, base: u64, size: u64) -> bool {
    addr.wrapping_sub(base) < size
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
        if in_region(addr, boot::ROM_BASE, boot::ROM_SIZE) {
            return Some(read_bytes(&self.rom, addr - boot::ROM_BASE, size));
        }
        if in_region(addr, uart::BASE, uart::SIZE) {
            return Some(self.uart.read(addr - uart::BASE) as u64);
        }
        if in_region(addr, clint::BASE, clint::SIZE) {
            let mtime = self.clock.mtime_at(icount);
            return self.clint.read(addr - clint::BASE, size, mtime);
        }
        if in_region(addr, plic::BASE, plic::SIZE) {
            return Some(self.plic.read(addr - plic::BASE) as u64);
        }
        if in_region(addr, rtc::BASE, rtc::SIZE) {
            let ns = self.clock.ns_at(icount);
            return Some(self.rtc.read(addr - rtc::BASE, ns) as u64);
        }
        if in_region(
            addr,
            virtio_mmio::BASE,
            virtio_mmio::SLOT_SIZE * virtio_mmio::SLOTS,
        ) {
            let offset = (addr - virtio_mmio::BASE) % virtio_mmio::SLOT_SIZE;
            let slot = ((addr - virtio_mmio::BASE) / virtio_mmio::SLOT_SIZE) as usize;
            return Some(match self.virtio.get_mut(slot).and_then(Option::as_mut) {
                Some(t) => t.read(offset) as u64,
                None => virtio_mmio::read_empty(offset) as u64,
            });
        }
        if in_region(addr, finisher::BASE, finisher::SIZE) {
            return Some(self.finisher.read(addr - finisher::BASE, size));
        }
        None
    }

    fn route_write(&mut self, addr: u64, size: u8, value: u64, icount: u64) -> bool {
        if in_region(addr, uart::BASE, uart::SIZE) {
            self.uart.write(addr - uart::BASE, value as u8);
        } else if in_region(addr, clint::BASE, clint::SIZE) {
            self.clint.write(addr - clint::BASE, size, value);
        } else if in_region(addr, plic::BASE, plic::SIZE) {
            self.plic.write(addr - plic::BASE, value as u32);
        } else if in_region(addr, rtc::BASE, rtc::SIZE) {
            let ns = self.clock.ns_at(icount);
            self.rtc.write(addr - rtc::BASE, value as u32, ns);
        } else if in_region(addr, finisher::BASE, finisher::SIZE) {
            self.finisher.write(addr - finisher::BASE, value);
        } else if in_region(
            addr,
            virtio_mmio::BASE,
            virtio_mmio::SLOT_SIZE * virtio_mmio::SLOTS,
        ) {
            let offset = (addr - virtio_mmio::BASE) % virtio_mmio::SLOT_SIZE;
            let slot = ((addr - virtio_mmio::BASE) / virtio_mmio::SLOT_SIZE) as usize;
            // Empty slots ignore writes, as on QEMU.
            if let Some(t) = self.virtio.get_mut(slot).and_then(Option::as_mut) {
                t.write(offset, value as u32);
            }
        } else if in_region(addr, boot::ROM_BASE, boot::ROM_SIZE) {
            // The ROM ignores writes.
        } else {
            return false;
        }
        true
    }
}
