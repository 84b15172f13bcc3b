//! The `virt` board's devices, one folder each: the device, its state, its tests.

pub mod clint;
pub mod finisher;
pub mod plic;
pub mod rtc;
pub mod uart;
pub mod virtio;
pub mod virtio_mmio;
