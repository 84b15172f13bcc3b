//! The virtio-blk device: requests served from the disk as the block layer shows it.

use crate::block::{DiskImage, Overlay, SECTOR};
use crate::devices::virtio::queue::{Chain, GuestMemory, Queue, QueueError, Segment};
use crate::devices::virtio::{DeviceContext, Persist, VirtioDevice};

use super::state::BlkState;

pub const DEVICE_ID: u32 = 2;
/// Segments per request the driver may use (config `seg_max`).
pub const SEG_MAX: u32 = 126;

pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;
/// Sectors one discard or write-zeroes range may cover (config `max_*_sectors`): 1 MiB, so a
/// request never holds more than that in the overlay at once.
const MAX_RANGE_SECTORS: u32 = 2048;
/// Ranges per discard or write-zeroes request (config `max_*_seg`).
const MAX_RANGES: u32 = 16;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

#[derive(Debug)]
pub struct Blk {
    /// The disk as the guest sees it: the image with the overlay of what the guest wrote.
    pub disk: Overlay,
}

impl Blk {
    pub fn new(image: DiskImage) -> Blk {
        Blk {
            disk: Overlay::new(image),
        }
    }

    /// Discard (advisory: the data may stay, which the spec allows, so it is a no-op that
    /// keeps disks deterministic) and write-zeroes: the ranges are in the readable segments.
    fn serve_ranges(
        &mut self,
        kind: u32,
        data: &[Segment],
        mem: &dyn GuestMemory,
    ) -> Result<u8, QueueError> {
        let mut ranges = Vec::new();
        for seg in data {
            if seg.writable || seg.len % 16 != 0 {
                return Ok(S_IOERR);
            }
            let mut buf = vec![0u8; seg.len as usize];
            mem.read(seg.addr, &mut buf)
                .ok_or(QueueError::OutOfMemory)?;
            ranges.extend(buf.chunks_exact(16).map(|r| {
                let sector = u64::from_le_bytes(r[0..8].try_into().unwrap_or_default());
                let count = u32::from_le_bytes(r[8..12].try_into().unwrap_or_default());
                (sector, count)
            }));
        }
        if self.disk.readonly() || ranges.is_empty() || ranges.len() > MAX_RANGES as usize {
            return Ok(S_IOERR);
        }
        for &(sector, count) in &ranges {
            let end = sector
                .checked_add(count as u64)
                .and_then(|e| e.checked_mul(SECTOR));
            if count > MAX_RANGE_SECTORS || end.is_none_or(|e| e > self.disk.size()) {
                return Ok(S_IOERR);
            }
        }
        if kind == T_WRITE_ZEROES {
            for (sector, count) in ranges {
                let zeros = vec![0u8; count as usize * SECTOR as usize];
                if self.disk.write_at(&zeros, sector * SECTOR).is_err() {
                    return Ok(S_IOERR);
                }
            }
        }
        Ok(S_OK)
    }

    /// Serves every available request; says whether the driver wants an interrupt.
    fn serve_all(
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
                            .is_some_and(|end| end <= self.disk.size())
                    }) else {
                        result = S_IOERR;
                        break;
                    };
                    let mut buf = vec![0u8; seg.len as usize];
                    if kind == T_IN {
                        if !seg.writable || self.disk.read_at(&mut buf, at).is_err() {
                            result = S_IOERR;
                            break;
                        }
                        mem.write(seg.addr, &buf).ok_or(QueueError::OutOfMemory)?;
                        written += seg.len;
                    } else {
                        if seg.writable || self.disk.readonly() {
                            result = S_IOERR;
                            break;
                        }
                        mem.read(seg.addr, &mut buf)
                            .ok_or(QueueError::OutOfMemory)?;
                        if self.disk.write_at(&buf, at).is_err() {
                            result = S_IOERR;
                            break;
                        }
                    }
                    offset = Some(at + seg.len as u64);
                }
                result
            }
            T_FLUSH => {
                if self.disk.flush().is_err() {
                    S_IOERR
                } else {
                    S_OK
                }
            }
            T_DISCARD | T_WRITE_ZEROES => self.serve_ranges(kind, data, mem)?,
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
}

impl VirtioDevice for Blk {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        let writes = if self.disk.readonly() {
            F_RO
        } else {
            F_DISCARD | F_WRITE_ZEROES
        };
        F_SEG_MAX | F_BLK_SIZE | F_FLUSH | writes
    }

    fn queue_count(&self) -> usize {
        1
    }

    /// Capacity, size_max, seg_max, geometry, blk_size, topology, writeback, num_queues, and
    /// the discard and write-zeroes limits.
    fn read_config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 0x3c];
        let mut put = |at: usize, v: u32| c[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(0x0c, SEG_MAX);
        put(0x14, SECTOR as u32);
        put(0x24, MAX_RANGE_SECTORS); // max_discard_sectors
        put(0x28, MAX_RANGES); // max_discard_seg
        put(0x2c, 1); // discard_sector_alignment
        put(0x30, MAX_RANGE_SECTORS); // max_write_zeroes_sectors
        put(0x34, MAX_RANGES); // max_write_zeroes_seg
        c[0..8].copy_from_slice(&(self.disk.size() / SECTOR).to_le_bytes());
        c
    }

    /// What was written to the disk stays written.
    fn reset(&mut self) {}

    fn notify(&mut self, notified: u32, ctx: DeviceContext<'_>) -> Result<bool, QueueError> {
        match ctx.queues {
            [requests, ..] if notified & 1 != 0 => self.serve_all(requests, ctx.mem),
            _ => Ok(false),
        }
    }
}

impl Persist for Blk {
    type State = BlkState;

    fn state(&self) -> &BlkState {
        self.disk.state()
    }

    fn set_state(&mut self, state: BlkState) {
        self.disk.set_state(state);
    }

    fn check_state(&self, state: &BlkState, _queues: &[Queue]) -> Result<(), String> {
        state.validate(self.disk.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_files::TempDir;

    /// A request as a driver lays it out in RAM: header, one readable data segment, status.
    fn request(ram: &mut rewind_cpu::Ram, kind: u32, payload: &[u8]) -> Chain {
        let base = 0x8000_0000;
        let mut header = kind.to_le_bytes().to_vec();
        header.resize(16, 0);
        ram.write(base, &header).unwrap();
        ram.write(base + 0x100, payload).unwrap();
        let seg = |addr, len, writable| Segment {
            addr,
            len,
            writable,
        };
        Chain {
            head: 0,
            segments: vec![
                seg(base, 16, false),
                seg(base + 0x100, payload.len() as u32, false),
                seg(base + 0x1000, 1, true),
            ],
        }
    }

    fn range(sector: u64, count: u32) -> Vec<u8> {
        let mut r = sector.to_le_bytes().to_vec();
        r.extend_from_slice(&count.to_le_bytes());
        r.extend_from_slice(&0u32.to_le_bytes());
        r
    }

    #[test]
    fn write_zeroes_zeroes_and_discard_keeps_data_within_the_limits() {
        let dir = TempDir::new("blk-zeroes");
        let raw = dir.file("disk.raw");
        std::fs::write(&raw, vec![0xabu8; 1 << 20]).unwrap();
        let mut ram = rewind_cpu::Ram::new(0x8000_0000, 1 << 16);
        let mut blk = Blk::new(DiskImage::open(&raw, None, false, false).unwrap());
        assert_ne!(blk.features() & (F_DISCARD | F_WRITE_ZEROES), 0);
        let status = |blk: &mut Blk, ram: &mut rewind_cpu::Ram, kind, payload: &[u8]| {
            let chain = request(ram, kind, payload);
            blk.serve(&chain, ram).unwrap();
            let mut s = [0xffu8];
            ram.read(0x8000_1000, &mut s).unwrap();
            s[0]
        };
        let two = [range(2, 3), range(100, 1)].concat();
        assert_eq!(status(&mut blk, &mut ram, T_WRITE_ZEROES, &two), S_OK);
        let mut disk = vec![0u8; 1 << 20];
        blk.disk.read_at(&mut disk, 0).unwrap();
        assert!(disk[2 * 512..5 * 512].iter().all(|&b| b == 0));
        assert!(disk[100 * 512..101 * 512].iter().all(|&b| b == 0));
        assert!(disk[..2 * 512]
            .iter()
            .chain(&disk[5 * 512..100 * 512])
            .all(|&b| b == 0xab));
        // Discard is advisory: the data stays.
        assert_eq!(status(&mut blk, &mut ram, T_DISCARD, &range(10, 8)), S_OK);
        let mut sector = vec![0u8; 512];
        blk.disk.read_at(&mut sector, 10 * 512).unwrap();
        assert!(sector.iter().all(|&b| b == 0xab));
        // Past the end, too long, or not whole ranges: an I/O error and no change.
        for bad in [
            range(2047, 2),
            range(0, MAX_RANGE_SECTORS + 1),
            vec![0u8; 15],
        ] {
            assert_eq!(status(&mut blk, &mut ram, T_WRITE_ZEROES, &bad), S_IOERR);
        }
        assert_eq!(
            std::fs::read(&raw).unwrap(),
            vec![0xabu8; 1 << 20],
            "the image changed"
        );
        // A read-only disk offers neither.
        let ro = Blk::new(DiskImage::open(&raw, None, true, false).unwrap());
        assert_eq!(ro.features() & (F_DISCARD | F_WRITE_ZEROES), 0);
    }
}
