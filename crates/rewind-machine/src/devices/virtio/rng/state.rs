use serde::{Deserialize, Serialize};

use crate::devices::virtio::queue::Queue;

/// A request taken from the queue and not yet answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub head: u16,
    /// Bytes the request can take.
    pub wanted: u32,
    /// Its writable buffers: address and length.
    pub buffers: Vec<(u64, u32)>,
}

/// Guest-visible state: the requests not yet answered, in the order the driver made them
/// available.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    pub pending: Vec<Request>,
}

impl RngState {
    /// Every pending request fits the request queue: a head within it, no more buffers than it
    /// has descriptors.
    pub(super) fn check(&self, queue: &Queue) -> Result<(), String> {
        let size = queue.size;
        for req in &self.pending {
            if req.head >= size || req.buffers.len() > size as usize {
                return Err(format!(
                    "a pending entropy request (head {}, {} buffers) does not fit its queue of \
                     size {size}",
                    req.head,
                    req.buffers.len()
                ));
            }
        }
        Ok(())
    }
}
