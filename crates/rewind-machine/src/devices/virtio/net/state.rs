use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Frames the device holds for a driver that has no receive buffers; more are dropped, as a
/// NIC drops frames when its ring is full.
pub const MAX_PENDING: usize = 256;
/// The largest frame either way: an Ethernet frame with a 64 KiB payload.
pub const MAX_FRAME: usize = 65536 + 14;
/// The smallest frame that makes sense (an Ethernet header).
pub(super) const MIN_FRAME: usize = 14;
/// Lengths of the frames the device takes.
pub const FRAME_LEN: std::ops::RangeInclusive<usize> = MIN_FRAME..=MAX_FRAME;

/// Guest-visible state: frames received and not yet given to the driver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    pub pending: VecDeque<Vec<u8>>,
    /// Frames dropped because `pending` was full.
    pub dropped: u64,
}

impl NetState {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.pending.len() > MAX_PENDING {
            return Err(format!(
                "{} received frames are pending, more than the {MAX_PENDING} it holds",
                self.pending.len(),
            ));
        }
        if let Some(f) = self.pending.iter().find(|f| !FRAME_LEN.contains(&f.len())) {
            return Err(format!(
                "a pending frame is {} bytes, outside {FRAME_LEN:?}",
                f.len(),
            ));
        }
        Ok(())
    }
}
