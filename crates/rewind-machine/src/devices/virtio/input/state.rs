use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::device::EvdevEvent;

/// Events held for a driver that does not take them.
pub const MAX_PENDING: usize = 4096;

/// Guest-visible state: the configuration selection and the events not yet delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputState {
    pub select: u8,
    pub subsel: u8,
    pub pending: VecDeque<EvdevEvent>,
}

impl InputState {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.pending.len() > MAX_PENDING {
            return Err(format!(
                "{} input events are pending, more than the {MAX_PENDING} it holds",
                self.pending.len(),
            ));
        }
        Ok(())
    }
}
