//! virtio-net (device id 1): a receive queue and a transmit queue of Ethernet frames, each
//! behind the 12-byte `virtio_net_hdr` of virtio 1.x.
//!
//! Frames for the guest come from the host as [`crate::InputEvent::Net`], so they are recorded
//! and replayed like every other input. The device holds them (guest-visible state) until the
//! driver posts receive buffers. Frames the guest sends are handed to the host and are not
//! guest state: a replay drops them, as the recording already holds the answers.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::queue::{GuestMemory, Queue, QueueError};

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

/// Frames the device holds for a driver that has no receive buffers; more are dropped, as a
/// NIC drops frames when its ring is full.
pub const MAX_PENDING: usize = 256;
/// The largest frame either way: an Ethernet frame with a 64 KiB payload.
pub const MAX_FRAME: usize = 65536 + 14;
/// The smallest frame that makes sense (an Ethernet header).
const MIN_FRAME: usize = 14;
/// Lengths of the frames the device takes.
pub const FRAME_LEN: std::ops::RangeInclusive<usize> = MIN_FRAME..=MAX_FRAME;

/// QEMU's first MAC address for a guest NIC, 52:54:00:12:34:56; NIC n adds n.
pub fn default_mac(nic: usize) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x12, 0x34, 0x56u8.wrapping_add(nic as u8)]
}

/// Guest-visible state: frames received and not yet given to the driver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    pub pending: VecDeque<Vec<u8>>,
    /// Frames dropped because `pending` was full.
    pub dropped: u64,
}

#[derive(Debug)]
pub struct Net {
    pub mac: [u8; 6],
    pub state: NetState,
    /// Frames the guest sent since the host last took them (host side, not guest state).
    pub sent: Vec<Vec<u8>>,
    /// Whether a host backend takes the frames the guest sends (a replay has none: they are
    /// dropped).
    pub host_attached: bool,
}

impl Net {
    pub fn new(mac: [u8; 6]) -> Net {
        Net {
            mac,
            state: NetState::default(),
            sent: Vec::new(),
            host_attached: false,
        }
    }

    pub fn features(&self) -> u64 {
        F_CSUM | F_GUEST_CSUM | F_MAC | F_STATUS
    }

    /// `struct virtio_net_config`: the MAC address and the link status.
    pub fn config(&self) -> Vec<u8> {
        let mut config = self.mac.to_vec();
        config.extend_from_slice(&STATUS_LINK_UP.to_le_bytes());
        config
    }

    /// Queues a frame from the host for the driver.
    pub fn queue_frame(&mut self, frame: &[u8]) {
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
    pub fn receive(
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

    /// Takes the frames the driver queued for sending; returns whether the driver wants an
    /// interrupt for the buffers given back.
    pub fn transmit(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
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
                if self.host_attached {
                    self.sent.push(frame);
                }
            }
            interrupt |= queue.push(mem, chain.head, 0)?;
        }
        Ok(interrupt)
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
        assert_eq!(net.config()[..6], [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    }
}
