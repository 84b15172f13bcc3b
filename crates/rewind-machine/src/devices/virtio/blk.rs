//! virtio-blk (device id 2): reads, writes, flush and the device id, completed at once (at
//! the instruction of the notify), so a disk is as deterministic as RAM.
//!
//! The disk is a base image on the host, never written while recording or replaying: writes
//! then go to an overlay of changed sectors, which is guest-visible state (it is in snapshots
//! and digests). A plain run may write through to the image instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::queue::{Chain, GuestMemory, Queue, QueueError};

pub const DEVICE_ID: u32 = 2;
pub const SECTOR: u64 = 512;
/// Segments per request the driver may use (config `seg_max`).
pub const SEG_MAX: u32 = 126;

pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// A disk image on the host.
#[derive(Clone, Debug)]
pub struct DiskImage {
    pub file: Arc<File>,
    pub size: u64,
    pub readonly: bool,
    /// Write to the image itself (a plain run); otherwise writes stay in the overlay.
    pub write_through: bool,
}

/// Guest-visible state: the sectors written (when not writing through).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkState {
    pub overlay: BTreeMap<u64, Vec<u8>>,
}

#[derive(Debug)]
pub struct Blk {
    pub state: BlkState,
    pub image: DiskImage,
}

impl Blk {
    pub fn new(image: DiskImage) -> Blk {
        Blk {
            state: BlkState::default(),
            image,
        }
    }

    pub fn features(&self) -> u64 {
        let ro = if self.image.readonly { F_RO } else { 0 };
        F_SEG_MAX | F_BLK_SIZE | F_FLUSH | ro
    }

    /// The configuration space: capacity, size_max, seg_max, geometry, blk_size.
    pub fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 0x18];
        c[0..8].copy_from_slice(&(self.image.size / SECTOR).to_le_bytes());
        c[0x0c..0x10].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[0x14..0x18].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        c
    }

    /// Serves every available request; says whether the driver wants an interrupt.
    pub fn notify(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let mut interrupt = false;
        while let Some(chain) = queue.pop(mem)? {
            let written = self.serve(&chain, mem)?;
            interrupt |= queue.push(mem, chain.head, written)?;
        }
        Ok(interrupt)
    }

    /// One request: header, data, status byte. Returns the bytes written to the driver.
    fn serve(&mut self, chain: &Chain, mem: &mut dyn GuestMemory) -> Result<u32, QueueError> {
        let segs = &chain.segments;
        let (Some(header), Some(status)) = (segs.first(), segs.last()) else {
            return Err(QueueError::BadChain);
        };
        if header.writable
            || header.len < 16
            || !status.writable
            || status.len < 1
            || segs.len() < 2
        {
            return Err(QueueError::BadChain);
        }
        let mut h = [0u8; 16];
        mem.read(header.addr, &mut h)
            .ok_or(QueueError::OutOfMemory)?;
        let kind = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        let data = &segs[1..segs.len() - 1];
        let mut written = 0u32;
        let status_byte = match kind {
            T_IN | T_OUT => {
                let mut offset = sector.checked_mul(SECTOR);
                let mut result = S_OK;
                for seg in data {
                    let Some(at) = offset.filter(|&o| {
                        o.checked_add(seg.len as u64)
                            .is_some_and(|end| end <= self.image.size)
                    }) else {
                        result = S_IOERR;
                        break;
                    };
                    let mut buf = vec![0u8; seg.len as usize];
                    if kind == T_IN {
                        if !seg.writable || self.read(at, &mut buf).is_err() {
                            result = S_IOERR;
                            break;
                        }
                        mem.write(seg.addr, &buf).ok_or(QueueError::OutOfMemory)?;
                        written += seg.len;
                    } else {
                        if seg.writable || self.image.readonly {
                            result = S_IOERR;
                            break;
                        }
                        mem.read(seg.addr, &mut buf)
                            .ok_or(QueueError::OutOfMemory)?;
                        if self.write(at, &buf).is_err() {
                            result = S_IOERR;
                            break;
                        }
                    }
                    offset = Some(at + seg.len as u64);
                }
                result
            }
            T_FLUSH => {
                if self.image.write_through && self.image.file.sync_data().is_err() {
                    S_IOERR
                } else {
                    S_OK
                }
            }
            T_GET_ID => {
                let id = b"rewind-virtio-blk\0\0\0";
                if let Some(seg) = data.iter().find(|s| s.writable) {
                    let n = (seg.len as usize).min(id.len());
                    mem.write(seg.addr, &id[..n])
                        .ok_or(QueueError::OutOfMemory)?;
                    written += n as u32;
                }
                S_OK
            }
            _ => S_UNSUPP,
        };
        mem.write(status.addr, &[status_byte])
            .ok_or(QueueError::OutOfMemory)?;
        Ok(written + 1)
    }

    /// Writes the disk as the guest sees it (the base image with the overlay's sectors) to a
    /// new raw image at `path`: how the changes of a recording or a replay are kept.
    pub fn save_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let out = File::create(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < self.image.size {
            let n = (self.image.size - offset).min(buf.len() as u64) as usize;
            self.read(offset, &mut buf[..n])?;
            out.write_all_at(&buf[..n], offset)?;
            offset += n as u64;
        }
        out.sync_all()
    }

    /// Reads the disk as the guest sees it: overlay over base.
    fn read(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.image.file.read_exact_at(buf, offset)?;
        if self.state.overlay.is_empty() {
            return Ok(());
        }
        let first = offset / SECTOR;
        let last = (offset + buf.len() as u64).div_ceil(SECTOR);
        for (&s, data) in self.state.overlay.range(first..last) {
            let sector_start = s * SECTOR;
            let from = sector_start.max(offset);
            let to = (sector_start + SECTOR).min(offset + buf.len() as u64);
            buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                &data[(from - sector_start) as usize..(to - sector_start) as usize],
            );
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if self.image.write_through {
            return self.image.file.write_all_at(data, offset);
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let s = at / SECTOR;
            let within = (at % SECTOR) as usize;
            let n = (SECTOR as usize - within).min(rest.len());
            if !self.state.overlay.contains_key(&s) {
                let mut sector = vec![0u8; SECTOR as usize];
                self.image.file.read_exact_at(&mut sector, s * SECTOR)?;
                self.state.overlay.insert(s, sector);
            }
            if let Some(sector) = self.state.overlay.get_mut(&s) {
                sector[within..within + n].copy_from_slice(&rest[..n]);
            }
            at += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }
}
