//! The eight virtio-mmio slots of `virt` (0x1000_1000 + n·0x1000, PLIC sources 1..=8). With no
//! device behind them they probe as QEMU's empty slots do: the magic value, version 2, and
//! device id 0, which drivers skip.

pub mod transport;

pub const BASE: u64 = 0x1000_1000;
pub const SLOT_SIZE: u64 = 0x1000;
pub const SLOTS: u64 = 8;
/// PLIC source of slot 0; slot n uses FIRST_IRQ + n.
pub const FIRST_IRQ: usize = 1;

const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const VENDOR_ID: u64 = 0x00c;

const MAGIC: u32 = 0x7472_6976; // "virt"
const QEMU_VENDOR: u32 = 0x554d_4551; // "QEMU"

/// Register read of an empty slot.
pub fn read_empty(offset: u64) -> u32 {
    match offset {
        MAGIC_VALUE => MAGIC,
        VERSION => 2,
        VENDOR_ID => QEMU_VENDOR,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slot_probes_as_absent_device() {
        assert_eq!(read_empty(0), 0x7472_6976);
        assert_eq!(read_empty(4), 2);
        assert_eq!(read_empty(8), 0, "device id 0: no device");
    }
}
