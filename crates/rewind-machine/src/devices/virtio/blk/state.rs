/// The device's guest-visible state is its disk's overlay: the blocks the guest wrote.
pub type BlkState = crate::block::OverlayState;
