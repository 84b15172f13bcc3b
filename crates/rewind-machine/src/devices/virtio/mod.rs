//! Virtio devices (virtio 1.x), apart from their transport (`virtio_mmio`): the split
//! virtqueue walker shared by every device.

pub mod blk;
pub mod input;
pub mod net;
pub mod qcow2;
pub mod queue;
pub mod rng;
