use crate::devices::virtio::queue::{Chain, GuestMemory, Queue, QueueError, Segment};
use crate::devices::virtio::{DeviceContext, Persist, VirtioDevice};

use super::state::{Request, RngState};

pub const DEVICE_ID: u32 = 4;

#[derive(Debug, Default)]
pub struct Rng {
    pub state: RngState,
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn queue_count(&self) -> usize {
        1
    }

    fn reset(&mut self) {
        *self = Rng::default();
    }

    fn notify(&mut self, notified: u32, ctx: DeviceContext<'_>) -> Result<bool, QueueError> {
        match ctx.queues {
            [requests, ..] if notified & 1 != 0 => {
                self.take_requests(requests, ctx.mem).map(|()| false)
            }
            _ => Ok(false),
        }
    }
}

impl Persist for Rng {
    type State = RngState;

    fn state(&self) -> &RngState {
        &self.state
    }

    fn set_state(&mut self, state: RngState) {
        self.state = state;
    }

    fn check_state(&self, state: &RngState, queues: &[Queue]) -> Result<(), String> {
        queues.first().map_or(Ok(()), |q| state.check(q))
    }
}

impl Rng {
    /// Takes the available buffers of the request queue.
    fn take_requests(
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

    /// Answers pending requests, in order, with host entropy.
    pub fn fill_from_host(
        &mut self,
        bytes: &[u8],
        ctx: DeviceContext<'_>,
    ) -> Option<Result<bool, QueueError>> {
        let queue = ctx.queues.first_mut()?;
        Some(self.fill(queue, ctx.mem, bytes))
    }

    fn fill(
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
                    .map(|&(addr, len)| Segment {
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
