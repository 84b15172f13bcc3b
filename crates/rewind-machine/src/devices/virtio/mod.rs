//! Virtio devices (virtio 1.x), apart from their transport (`virtio_mmio`): what every device
//! is to the transport ([`VirtioDevice`]), the split virtqueue walker they share (`queue`), and
//! one folder per device, each with its device (`device.rs`) and its saved state (`state.rs`).
//!
//! Adding a device: a folder like the others, whose device implements [`VirtioDevice`] and
//! [`Persist`], and its line in `registry!` below; the configuration then names it with a
//! [`crate::DeviceKind`].

pub mod blk;
mod device;
pub mod input;
pub mod net;
pub mod queue;
pub mod rng;

pub use device::{AsAny, DeviceContext, Persist, SavedDevice, SavedState, VirtioDevice};
use serde::{Deserialize, Serialize};

/// Declares the saved states of the devices, one line a device: its variant in
/// [`DeviceState`], the name digests and messages give it, and its state type.
///
/// The order is part of the recording format: a digest hashes a device's state behind its
/// position here (format 2, postcard), so append, and never reorder.
macro_rules! registry {
    ($($kind:ident($name:literal, $state:ty)),* $(,)?) => {
        /// A device's saved state, one variant per kind of device.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum DeviceState {
            $($kind($state)),*
        }

        /// A device's state, borrowed: what snapshots copy and digests hash.
        #[derive(Debug, Serialize)]
        pub enum DeviceStateRef<'a> {
            $($kind(&'a $state)),*
        }

        impl DeviceStateRef<'_> {
            /// The kind of device, for messages and digests.
            pub fn name(&self) -> &'static str {
                match self {
                    $(DeviceStateRef::$kind(_) => $name),*
                }
            }

            /// The state, copied for a snapshot.
            pub fn cloned(&self) -> DeviceState {
                match *self {
                    $(DeviceStateRef::$kind(s) => DeviceState::$kind(s.clone())),*
                }
            }
        }

        $(
            impl SavedState for $state {
                fn borrowed(&self) -> DeviceStateRef<'_> {
                    DeviceStateRef::$kind(self)
                }

                fn of(saved: &DeviceState) -> Option<&Self> {
                    #[allow(unreachable_patterns)]
                    match saved {
                        DeviceState::$kind(s) => Some(s),
                        _ => None,
                    }
                }
            }
        )*
    };
}

registry! {
    Rng("rng", rng::RngState),
    Blk("blk", blk::BlkState),
    Input("input", input::InputState),
    Net("net", net::NetState),
}
