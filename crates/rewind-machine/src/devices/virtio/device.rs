//! What a virtio device is to its transport, after Firecracker's `VirtioDevice`: an id, the
//! features it offers, its queues and configuration space, what a reset and a notify do, and
//! its saved state.

use std::any::Any;
use std::fmt::Debug;

use super::queue::{GuestMemory, Queue, QueueError};
use super::{DeviceState, DeviceStateRef};

/// What a device works on when the transport hands it work: its queues (as many as
/// [`VirtioDevice::queue_count`]), guest memory, and what the driver negotiated.
pub struct DeviceContext<'a> {
    pub queues: &'a mut [Queue],
    pub mem: &'a mut dyn GuestMemory,
    /// The features the driver acknowledged.
    pub driver_features: u64,
    /// The device is in DEVICE_NEEDS_RESET: it must not touch its queues until a reset.
    pub needs_reset: bool,
    /// What the device sends out of the machine (a NIC's frames): the machine hands it to
    /// the host's backend, or drops it when there is none (a replay).
    pub to_host: &'a mut Vec<Vec<u8>>,
}

/// The device side of a virtio device; the transport owns the queues and the registers.
///
/// Work on queues returns whether the driver wants a used-buffer interrupt, or a
/// [`QueueError`] for a queue the driver broke, which the transport turns into
/// DEVICE_NEEDS_RESET.
pub trait VirtioDevice: AsAny + SavedDevice + Debug + Send {
    /// The virtio device id (virtio 1.x, section 5).
    fn device_id(&self) -> u32;

    /// The device's own feature bits; the transport adds those of the transport and the
    /// queues (VERSION_1, INDIRECT_DESC, EVENT_IDX).
    fn features(&self) -> u64 {
        0
    }

    /// How many queues the device has.
    fn queue_count(&self) -> usize;

    /// The configuration space, as the driver reads it (zeros past its end).
    fn read_config(&self) -> Vec<u8> {
        Vec::new()
    }

    /// A byte the driver wrote to the configuration space, at `offset` in it.
    fn write_config(&mut self, _offset: u64, _value: u8) {}

    /// Back to the state after power-on (the transport resets the queues).
    fn reset(&mut self);

    /// The driver notified the queues whose bits are set in `notified`.
    fn notify(&mut self, notified: u32, ctx: DeviceContext<'_>) -> Result<bool, QueueError>;
}

/// A device's guest-visible state, as a plain struct that snapshots keep (firecracker's
/// `Persist`). Restored state is untrusted: [`Persist::check_state`] sees it first.
pub trait Persist {
    type State: SavedState;

    fn state(&self) -> &Self::State;

    /// Puts back a state [`Persist::check_state`] accepted.
    fn set_state(&mut self, state: Self::State);

    /// Says what is wrong with a saved state for this device with these queues (the
    /// transport checked the queues themselves), if anything.
    fn check_state(&self, _state: &Self::State, _queues: &[Queue]) -> Result<(), String> {
        Ok(())
    }
}

/// A state type listed in the registry (`registry!` in `mod.rs`).
pub trait SavedState: Clone + 'static {
    fn borrowed(&self) -> DeviceStateRef<'_>;
    /// The state in `saved`, if it is of this kind.
    fn of(saved: &DeviceState) -> Option<&Self>;
}

/// [`Persist`] for a device behind `dyn VirtioDevice`, through the registry's enums.
pub trait SavedDevice {
    fn saved_state(&self) -> DeviceStateRef<'_>;
    /// Whether `saved` is a state of this kind of device.
    fn is_state_of_kind(&self, saved: &DeviceState) -> bool;
    /// [`Persist::check_state`], for a state of this kind.
    fn check_saved_state(&self, saved: &DeviceState, queues: &[Queue]) -> Result<(), String>;
    /// Puts back a state of this kind; one of another kind is ignored.
    fn restore_saved_state(&mut self, saved: &DeviceState);
}

impl<T: Persist> SavedDevice for T {
    fn saved_state(&self) -> DeviceStateRef<'_> {
        self.state().borrowed()
    }

    fn is_state_of_kind(&self, saved: &DeviceState) -> bool {
        T::State::of(saved).is_some()
    }

    fn check_saved_state(&self, saved: &DeviceState, queues: &[Queue]) -> Result<(), String> {
        T::State::of(saved).map_or(Ok(()), |s| self.check_state(s, queues))
    }

    fn restore_saved_state(&mut self, saved: &DeviceState) {
        if let Some(s) = T::State::of(saved) {
            self.set_state(s.clone());
        }
    }
}

/// The concrete device behind `dyn VirtioDevice`, for what only one kind of device does (host
/// input for it).
pub trait AsAny {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

// Not for every `Any`: a `Box<dyn VirtioDevice>` would then answer for itself.
impl<T: VirtioDevice + 'static> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
