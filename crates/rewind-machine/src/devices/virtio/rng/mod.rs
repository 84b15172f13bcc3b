//! virtio-rng (device id 4): one request queue whose buffers the device fills with entropy.
//! The entropy comes from the host as [`crate::InputEvent::Rng`], so it is recorded and
//! replayed like every other input: the device only says how many bytes it waits for.

mod device;
mod state;

pub use device::{Rng, DEVICE_ID};
pub use state::{Request, RngState};
