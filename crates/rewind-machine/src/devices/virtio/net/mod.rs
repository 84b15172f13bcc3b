//! virtio-net (device id 1): a receive queue and a transmit queue of Ethernet frames, each
//! behind the 12-byte `virtio_net_hdr` of virtio 1.x.
//!
//! Frames for the guest come from the host as [`crate::InputEvent::Net`], so they are recorded
//! and replayed like every other input. The device holds them (guest-visible state) until the
//! driver posts receive buffers. Frames the guest sends are handed to the host and are not
//! guest state: a replay drops them, as the recording already holds the answers.

mod device;
mod state;

pub use device::{default_mac, Net, DEVICE_ID, F_GUEST_CSUM, HEADER_LEN};
pub use state::{NetState, FRAME_LEN, MAX_FRAME, MAX_PENDING};
