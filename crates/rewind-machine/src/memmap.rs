//! The `virt` board's physical memory map, as QEMU's `virt_memmap[]`: one table that the MMIO
//! bus routes by and the device tree takes each node's `reg` from, so the two cannot disagree.

/// What answers in a window of the physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The reset ROM (QEMU's `mrom`).
    Rom,
    /// The SiFive test finisher.
    Test,
    Rtc,
    Clint,
    Plic,
    Uart,
    /// The virtio-mmio slots, [`VIRTIO_SLOT_SIZE`] bytes each.
    Virtio,
    /// RAM (its size comes from the configuration).
    Dram,
}

/// A window of the physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub region: Region,
    pub base: u64,
    pub size: u64,
}

impl Window {
    /// The offset of `addr` in this window, if it lies there.
    pub fn offset(&self, addr: u64) -> Option<u64> {
        let offset = addr.wrapping_sub(self.base);
        (offset < self.size).then_some(offset)
    }
}

const fn window(region: Region, base: u64, size: u64) -> Window {
    Window { region, base, size }
}

/// Bytes of one virtio-mmio slot.
pub const VIRTIO_SLOT_SIZE: u64 = 0x1000;
/// How many virtio-mmio slots the board has.
pub const VIRTIO_SLOTS: u64 = 8;

pub const ROM: Window = window(Region::Rom, 0x1000, 0xf000);
pub const TEST: Window = window(Region::Test, 0x10_0000, 0x1000);
pub const RTC: Window = window(Region::Rtc, 0x10_1000, 0x1000);
pub const CLINT: Window = window(Region::Clint, 0x200_0000, 0x1_0000);
pub const PLIC: Window = window(Region::Plic, 0xc00_0000, 0x60_0000);
pub const UART: Window = window(Region::Uart, 0x1000_0000, 0x100);
pub const VIRTIO: Window = window(Region::Virtio, 0x1000_1000, VIRTIO_SLOTS * VIRTIO_SLOT_SIZE);
/// RAM's window: where it starts, and the most the board has room for.
pub const DRAM: Window = window(Region::Dram, 0x8000_0000, 64 << 30);

/// Every window, by address.
pub const MAP: [Window; 8] = [ROM, TEST, RTC, CLINT, PLIC, UART, VIRTIO, DRAM];

/// The device window holding `addr` (RAM is the hart's, not the bus's), and the offset in it.
pub fn device_at(addr: u64) -> Option<(Region, u64)> {
    MAP.iter()
        .filter(|w| w.region != Region::Dram)
        .find_map(|w| Some((w.region, w.offset(addr)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_sorted_and_disjoint() {
        for pair in MAP.windows(2) {
            assert!(
                pair[0].base + pair[0].size <= pair[1].base,
                "{:?} overlaps {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn addresses_route_to_their_window() {
        assert_eq!(device_at(0x1000_0005), Some((Region::Uart, 5)));
        assert_eq!(
            device_at(0x1000_1000 + 7 * 0x1000 + 0x70),
            Some((Region::Virtio, 0x7070))
        );
        assert_eq!(device_at(0x1000_0100), None, "the gap after the UART");
        assert_eq!(device_at(DRAM.base), None, "RAM is not a device");
        assert_eq!(device_at(0), None);
    }
}
