//! virtio-rng (device id 4): one request queue whose buffers the device fills with entropy.
//! The entropy comes from the host as [`crate::InputEvent::Rng`], so it is recorded and
//! replayed like every other input: the device only says how many bytes it waits for.

use serde::{Deserialize, Serialize};

use super::queue::{Chain, GuestMemory, Queue, QueueError};

pub const DEVICE_ID: u32 = 4;

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

#[derive(Debug, Default)]
pub struct Rng {
    pub state: RngState,
}

impl Rng {
    /// Takes the available buffers of the request queue.
    pub fn notify(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), QueueError> {
        while let Some(chain) = queue.pop(mem)? {
            let wanted = chain.writable_len().min(u32::MAX as u64) as u32;
            let buffers = chain
                .segments
                .iter()
                .filter(|s| s.writable)
                .map(|s| (s.addr, s.len))
                .collect();
            self.state.pending.push(Request {
                head: chain.head,
                wanted,
                buffers,
            });
        }
        Ok(())
    }

    /// Bytes the device waits for from the host.
    pub fn wanted(&self) -> usize {
        self.state.pending.iter().map(|r| r.wanted as usize).sum()
    }

    /// Answers pending requests, in order, with host entropy; returns whether the driver
    /// wants an interrupt.
    pub fn fill(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
        mut bytes: &[u8],
    ) -> Result<bool, QueueError> {
        let mut interrupt = false;
        while !bytes.is_empty() && !self.state.pending.is_empty() {
            let Request {
                head,
                wanted,
                buffers,
            } = self.state.pending.remove(0);
            let n = (wanted as usize).min(bytes.len());
            let chain = Chain {
                head,
                segments: buffers
                    .iter()
                    .map(|&(addr, len)| super::queue::Segment {
                        addr,
                        len,
                        writable: true,
                    })
                    .collect(),
            };
            let written = chain
                .write_all(mem, &bytes[..n])
                .ok_or(QueueError::OutOfMemory)?;
            bytes = &bytes[n..];
            interrupt |= queue.push(mem, head, written as u32)?;
        }
        Ok(interrupt)
    }
}
