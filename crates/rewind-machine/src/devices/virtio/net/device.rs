use crate::devices::virtio::queue::{GuestMemory, Queue, QueueError};
use crate::devices::virtio::{DeviceContext, Persist, VirtioDevice};

use super::state::{NetState, MAX_FRAME, MAX_PENDING, MIN_FRAME};

pub const DEVICE_ID: u32 = 1;

/// The device completes partial checksums of frames the guest sends.
const F_CSUM: u64 = 1 << 0;
/// The driver may skip checking the checksums of received frames.
pub const F_GUEST_CSUM: u64 = 1 << 1;
const F_MAC: u64 = 1 << 5;
const F_STATUS: u64 = 1 << 16;

/// `virtio_net_hdr` with `num_buffers` (always present with VERSION_1).
pub const HEADER_LEN: usize = 12;
const HDR_F_NEEDS_CSUM: u8 = 1;
const HDR_F_DATA_VALID: u8 = 2;
const STATUS_LINK_UP: u16 = 1;

/// QEMU's first MAC address for a guest NIC, 52:54:00:12:34:56; NIC n adds n.
pub fn default_mac(nic: usize) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x12, 0x34, 0x56u8.wrapping_add(nic as u8)]
}

#[derive(Debug)]
pub struct Net {
    pub mac: [u8; 6],
    pub state: NetState,
}

impl Net {
    pub fn new(mac: [u8; 6]) -> Net {
        Net {
            mac,
            state: NetState::default(),
        }
    }

    /// Queues a frame from the host for the driver, and moves what the driver's receive
    /// buffers can take into them.
    pub fn take_host_frame(
        &mut self,
        frame: &[u8],
        ctx: DeviceContext<'_>,
    ) -> Option<Result<bool, QueueError>> {
        let rx = ctx.queues.first_mut()?;
        self.queue_frame(frame);
        if ctx.needs_reset || !rx.ready {
            return None;
        }
        Some(self.receive(rx, ctx.mem, checksums_valid(ctx.driver_features)))
    }

    fn queue_frame(&mut self, frame: &[u8]) {
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            return;
        }
        if self.state.pending.len() >= MAX_PENDING {
            self.state.dropped += 1;
        } else {
            self.state.pending.push_back(frame.to_vec());
        }
    }

    /// Frames held for the driver.
    pub fn pending(&self) -> usize {
        self.state.pending.len()
    }

    /// Moves held frames into the receive buffers the driver posted, in order; returns
    /// whether the driver wants an interrupt.
    fn receive(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
        checksums_valid: bool,
    ) -> Result<bool, QueueError> {
        let mut interrupt = false;
        while !self.state.pending.is_empty() {
            let Some(chain) = queue.pop(mem)? else {
                break;
            };
            let frame = self.state.pending.pop_front().unwrap_or_default();
            let mut packet = vec![0u8; HEADER_LEN];
            if checksums_valid {
                packet[0] = HDR_F_DATA_VALID;
            }
            packet[10..12].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
            packet.extend_from_slice(&frame);
            // A frame larger than the buffer is dropped (the buffer comes back empty), as the
            // driver sized its buffers for the frames it accepts.
            let written = if chain.writable_len() >= packet.len() as u64 {
                chain
                    .write_all(mem, &packet)
                    .ok_or(QueueError::OutOfMemory)?
            } else {
                self.state.dropped += 1;
                0
            };
            interrupt |= queue.push(mem, chain.head, written as u32)?;
        }
        Ok(interrupt)
    }

    /// Sends the frames the driver queued to `to_host`; returns whether the driver wants an
    /// interrupt for the buffers given back.
    fn transmit(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
        to_host: &mut Vec<Vec<u8>>,
    ) -> Result<bool, QueueError> {
        let mut interrupt = false;
        while let Some(chain) = queue.pop(mem)? {
            let packet = chain
                .read_all(mem, HEADER_LEN + MAX_FRAME)
                .ok_or(QueueError::OutOfMemory)?;
            if packet.len() >= HEADER_LEN + MIN_FRAME {
                let (header, frame) = packet.split_at(HEADER_LEN);
                let mut frame = frame.to_vec();
                if header[0] & HDR_F_NEEDS_CSUM != 0 {
                    let start = u16::from_le_bytes([header[6], header[7]]) as usize;
                    let offset = u16::from_le_bytes([header[8], header[9]]) as usize;
                    complete_checksum(&mut frame, start, offset);
                }
                to_host.push(frame);
            }
            interrupt |= queue.push(mem, chain.head, 0)?;
        }
        Ok(interrupt)
    }
}

/// Whether the driver lets received frames skip its checksum checks.
fn checksums_valid(driver_features: u64) -> bool {
    driver_features & F_GUEST_CSUM != 0
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        F_CSUM | F_GUEST_CSUM | F_MAC | F_STATUS
    }

    /// A receive queue and a transmit queue.
    fn queue_count(&self) -> usize {
        2
    }

    /// `struct virtio_net_config`: the MAC address and the link status.
    fn read_config(&self) -> Vec<u8> {
        let mut config = self.mac.to_vec();
        config.extend_from_slice(&STATUS_LINK_UP.to_le_bytes());
        config
    }

    fn reset(&mut self) {
        self.state = NetState::default();
    }

    fn notify(&mut self, notified: u32, ctx: DeviceContext<'_>) -> Result<bool, QueueError> {
        let [rx, tx] = ctx.queues else {
            return Ok(false);
        };
        let sent = if notified & 2 != 0 {
            self.transmit(tx, ctx.mem, ctx.to_host)
        } else {
            Ok(false)
        };
        let valid = checksums_valid(ctx.driver_features);
        sent.and_then(|a| Ok(a | self.receive(rx, ctx.mem, valid)?))
    }
}

impl Persist for Net {
    type State = NetState;

    fn state(&self) -> &NetState {
        &self.state
    }

    fn set_state(&mut self, state: NetState) {
        self.state = state;
    }

    fn check_state(&self, state: &NetState, _queues: &[Queue]) -> Result<(), String> {
        state.check()
    }
}

/// Puts the Internet checksum of `frame[start..]` at `start + offset`, where the driver left
/// the pseudo-header's partial sum (VIRTIO_NET_HDR_F_NEEDS_CSUM). Out-of-range positions leave
/// the frame as it is.
fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) {
    let at = start.saturating_add(offset);
    if start >= frame.len() || at.saturating_add(2) > frame.len() {
        return;
    }
    let mut sum: u32 = 0;
    for pair in frame[start..].chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[at..at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_checksum_makes_the_sum_check() {
        // A UDP-like payload: checksum field at offset 6 holds the partial sum 0x1234.
        let mut frame = vec![0u8; 14];
        frame.extend_from_slice(&[0x00, 0x35, 0x04, 0x00, 0x00, 0x0d, 0x12, 0x34, 1, 2, 3]);
        complete_checksum(&mut frame, 14, 6);
        // The receiver adds the pseudo-header (the partial sum the driver left) back in.
        let mut sum: u32 = 0x1234;
        for pair in frame[14..].chunks(2) {
            sum += u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "a correct checksum sums to all ones");
        assert_ne!(frame[20..22], [0x12, 0x34]);
        // Positions past the frame change nothing.
        let before = frame.clone();
        complete_checksum(&mut frame, 14, 100);
        complete_checksum(&mut frame, 1000, 0);
        assert_eq!(frame, before);
    }

    #[test]
    fn frames_beyond_the_limit_are_dropped_and_counted() {
        let mut net = Net::new(default_mac(0));
        for _ in 0..MAX_PENDING + 3 {
            net.queue_frame(&[0u8; 60]);
        }
        net.queue_frame(&[0u8; 4]); // too short: ignored
        assert_eq!(net.pending(), MAX_PENDING);
        assert_eq!(net.state.dropped, 3);
        assert_eq!(net.read_config()[..6], [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    }
}
