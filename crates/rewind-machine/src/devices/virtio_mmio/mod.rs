//! The eight virtio-mmio slots of `virt` (0x1000_1000 + n·0x1000, PLIC sources 1..=8). With no
//! device behind them they probe as QEMU's empty slots do: the magic value, version 2, and
//! device id 0, which drivers skip.

pub mod transport;

/// PLIC source of slot 0; slot n uses FIRST_IRQ + n.
pub const FIRST_IRQ: usize = 1;

/// The registers of a slot, by offset (virtio 1.x, 4.2.2).
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// The device's configuration space starts here.
    pub const CONFIG: u64 = 0x100;
}

/// The MagicValue register: "virt".
pub const MAGIC: u32 = 0x7472_6976;
/// The VendorID register: "QEMU".
pub const QEMU_VENDOR: u32 = 0x554d_4551;
/// The Version register: virtio-mmio version 2 (virtio 1.x, no legacy interface).
pub const MMIO_VERSION: u32 = 2;

/// Register read of an empty slot.
pub fn read_empty(offset: u64) -> u32 {
    match offset {
        reg::MAGIC_VALUE => MAGIC,
        reg::VERSION => MMIO_VERSION,
        reg::VENDOR_ID => QEMU_VENDOR,
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
