//! virtio-input (device id 18): a keyboard, an absolute pointer (tablet) or a relative mouse.
//! Events come from the host (QMP `input-send-event`) as [`crate::InputEvent::Input`]; the
//! device hands them to the driver's event buffers in order, keeping those that do not fit
//! yet. The configuration space answers the select/subsel queries Linux's driver makes.

mod device;
mod state;

pub use device::{button_code, qcode_to_key, EvdevEvent, Input, InputKind, ABS_MAX, DEVICE_ID};
pub use state::{InputState, MAX_PENDING};
