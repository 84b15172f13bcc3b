//! virtio-blk (device id 2): reads, writes, flush and the device id, completed at once (at
//! the instruction of the notify), so a disk is as deterministic as RAM.
//!
//! The disk comes from the block layer (`crate::block`): an image in some format, with the
//! recording overlay over it.

mod device;
mod state;

pub use device::{Blk, DEVICE_ID};
pub use state::BlkState;
