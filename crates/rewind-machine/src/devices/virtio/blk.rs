//! virtio-blk (device id 2): reads, writes, flush and the device id, completed at once (at
//! the instruction of the notify), so a disk is as deterministic as RAM.
//!
//! The disk is a base image on the host, never written while recording or replaying: writes
//! then go to an overlay of changed sectors, which is guest-visible state (it is in snapshots
//! and digests). A plain run may write through to the image instead.
//!
//! An image is raw (the file is the disk) or qcow2 (`qcow2.rs`, through the `imago` crate);
//! every access goes through [`DiskImage::read_at`] and [`DiskImage::write_at`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::qcow2::{self, Qcow2, Qcow2Error};
use super::queue::{Chain, GuestMemory, Queue, QueueError};

pub const DEVICE_ID: u32 = 2;
pub const SECTOR: u64 = 512;
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

/// A disk image on the host. Build it with [`DiskImage::open`].
#[derive(Clone, Debug)]
pub struct DiskImage {
    pub file: Arc<File>,
    /// The disk size the guest sees, in bytes (for qcow2, not the file's size).
    pub size: u64,
    pub readonly: bool,
    /// Write to the image itself (a plain run); otherwise writes stay in the overlay.
    pub write_through: bool,
    pub format: DiskFormat,
}

/// How the file holds the disk.
#[derive(Clone, Debug)]
pub enum DiskFormat {
    /// The file is the disk, byte for byte.
    Raw,
    /// A qcow2 image, shared by the clones of the `DiskImage`.
    Qcow2(Qcow2),
}

impl DiskImage {
    /// Opens the image at `path`, for writing only if `write_through && !readonly`. `format`
    /// is "raw" or "qcow2"; without it, a file that starts with the qcow2 magic is qcow2 and
    /// any other is raw. A qcow2 file given as "raw" is used as raw bytes (as in QEMU).
    pub fn open(
        path: &Path,
        format: Option<&str>,
        readonly: bool,
        write_through: bool,
    ) -> Result<DiskImage, String> {
        let p = path.display();
        let writable = write_through && !readonly;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| format!("cannot open disk image {p}: {e}"))?;
        let file = Arc::new(file);
        let is_qcow2 =
            qcow2::is_qcow2(&file).map_err(|e| format!("cannot read disk image {p}: {e}"))?;
        let use_qcow2 = match format {
            None => is_qcow2,
            Some("raw") => false,
            Some("qcow2") if is_qcow2 => true,
            Some("qcow2") => {
                return Err(format!(
                    "disk image {p} is not a qcow2 image (it does not start with the qcow2 \
                     magic): give its format as raw, or leave the format out to detect it"
                ))
            }
            Some(other) => {
                return Err(format!(
                    "disk image {p}: unknown format {other:?}: the formats are raw and qcow2"
                ))
            }
        };
        let (size, format) = if use_qcow2 {
            let q = Qcow2::open(&file, path, writable).map_err(|e| {
                let mut message = format!("disk image {p}: {e}");
                if let Some(hint) = e.hint(&shell_quoted(&p.to_string())) {
                    message += &format!(": {hint}");
                }
                if format.is_none() && matches!(e, Qcow2Error::Imago { .. }) {
                    message += " (it starts with the qcow2 magic; to use the file itself as \
                                a raw disk, give its format as raw)";
                }
                message
            })?;
            (q.size(), DiskFormat::Qcow2(q))
        } else {
            let len = file
                .metadata()
                .map_err(|e| format!("cannot read disk image {p}: {e}"))?
                .len();
            (len, DiskFormat::Raw)
        };
        Ok(DiskImage {
            file,
            size,
            readonly,
            write_through,
            format,
        })
    }

    /// "raw" or "qcow2".
    pub fn format_name(&self) -> &'static str {
        match self.format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2(_) => "qcow2",
        }
    }

    /// Reads `buf.len()` bytes of the disk (not of the file) at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.format {
            DiskFormat::Raw => self.file.read_exact_at(buf, offset),
            DiskFormat::Qcow2(q) => q.read_at(buf, offset),
        }
    }

    /// Writes `data` to the disk at `offset`: to the image file itself.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match &self.format {
            DiskFormat::Raw => self.file.write_all_at(data, offset),
            DiskFormat::Qcow2(q) => q.write_at(data, offset),
        }
    }

    /// Makes the writes so far durable.
    pub fn flush(&self) -> io::Result<()> {
        match &self.format {
            DiskFormat::Raw => self.file.sync_data(),
            DiskFormat::Qcow2(q) => q.flush(),
        }
    }
}

/// `path` as a shell word, for commands in messages.
fn shell_quoted(path: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !path.is_empty() && path.chars().all(plain) {
        path.to_string()
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}

/// Bytes per overlay block: the unit the overlay copies from the base image, shares between
/// snapshots (copy on write) and rehashes for digests. 64 KiB (128 sectors) keeps a GiB of
/// writes to 16k blocks while a small write copies little.
pub const BLOCK: u64 = 64 << 10;
/// Sectors per block: one bit each in [`Block::written`].
pub const BLOCK_SECTORS: u64 = BLOCK / SECTOR;

/// One block of the overlay: the disk's bytes there (the base image's, with the guest's writes
/// over them), and which sectors the guest wrote.
#[derive(Clone, Serialize, Deserialize)]
pub struct Block {
    data: Vec<u8>,
    written: u128,
    /// A hash of `data` and `written`, computed when a digest first needs it and forgotten on
    /// every write: blocks not written since the last digest are not hashed again. Snapshots
    /// share blocks, and with them their hashes.
    #[serde(skip)]
    hash: std::sync::OnceLock<u64>,
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        self.written == other.written && self.data == other.data
    }
}

impl Eq for Block {}

impl Block {
    fn hash(&self) -> u64 {
        *self.hash.get_or_init(|| {
            let mut h = Xxh3::new();
            h.update(&self.written.to_le_bytes());
            h.update(&self.data);
            h.digest()
        })
    }
}

/// Guest-visible state: the blocks written (when not writing through), shared between the
/// snapshots that hold them until one of them is written again.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkState {
    overlay: BTreeMap<u64, Arc<Block>>,
}

impl std::fmt::Debug for BlkState {
    // Not the bytes: an overlay may hold gigabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlkState")
            .field("blocks", &self.overlay.len())
            .field("hash", &self.hash())
            .finish()
    }
}

impl BlkState {
    /// Whether the guest wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.overlay.is_empty()
    }

    /// A hash of the overlay (block numbers, written sectors and contents). It rehashes only
    /// the blocks written since the last call.
    pub fn hash(&self) -> u64 {
        let mut h = Xxh3::new();
        for (&index, block) in &self.overlay {
            h.update(&index.to_le_bytes());
            h.update(&block.hash().to_le_bytes());
        }
        h.digest()
    }

    /// The overlay as format 1 held it: each sector written, with its contents (for the
    /// digests of format-1 recordings).
    pub fn written_sectors(&self) -> BTreeMap<u64, Vec<u8>> {
        let mut sectors = BTreeMap::new();
        for (&index, block) in &self.overlay {
            let sector_bytes = block.data.chunks_exact(SECTOR as usize);
            for (i, bytes) in sector_bytes.enumerate() {
                if block.written & (1 << i) != 0 {
                    sectors.insert(index * BLOCK_SECTORS + i as u64, bytes.to_vec());
                }
            }
        }
        sectors
    }

    /// Bytes of blocks this overlay holds that `base` does not share: what it costs in memory
    /// beyond `base`.
    pub fn bytes_beyond(&self, base: &BlkState) -> u64 {
        self.overlay
            .iter()
            .filter(|(index, block)| {
                base.overlay
                    .get(index)
                    .is_none_or(|b| !Arc::ptr_eq(b, block))
            })
            .map(|(_, block)| block.data.len() as u64)
            .sum()
    }

    /// Checks that the overlay fits a disk of `size` bytes: every block inside it, as long as
    /// the disk's whole sectors there, and written sectors only within it.
    pub fn validate(&self, size: u64) -> Result<(), String> {
        for (&index, block) in &self.overlay {
            let len = block_len(index, size);
            if len == 0 {
                return Err(format!(
                    "its disk overlay has block {index}, beyond the end of the {size}-byte disk"
                ));
            }
            let sectors = len / SECTOR;
            let allowed = if sectors >= 128 {
                u128::MAX
            } else {
                (1u128 << sectors) - 1
            };
            if block.data.len() as u64 != len || block.written & !allowed != 0 || block.written == 0
            {
                return Err(format!(
                    "its disk overlay block {index} is not the disk's block there ({} bytes, \
                     written sectors {:#x}, where the disk has {len} bytes)",
                    block.data.len(),
                    block.written
                ));
            }
        }
        Ok(())
    }
}

/// Bytes of block `index` on a disk of `size` bytes: whole sectors only (0 past the end).
fn block_len(index: u64, size: u64) -> u64 {
    let end = size / SECTOR * SECTOR;
    index
        .checked_mul(BLOCK)
        .map_or(0, |start| end.saturating_sub(start).min(BLOCK))
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
        let writes = if self.image.readonly {
            F_RO
        } else {
            F_DISCARD | F_WRITE_ZEROES
        };
        F_SEG_MAX | F_BLK_SIZE | F_FLUSH | writes
    }

    /// The configuration space: capacity, size_max, seg_max, geometry, blk_size, topology,
    /// writeback, num_queues, and the discard and write-zeroes limits.
    pub fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 0x3c];
        let mut put = |at: usize, v: u32| c[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(0x0c, SEG_MAX);
        put(0x14, SECTOR as u32);
        put(0x24, MAX_RANGE_SECTORS); // max_discard_sectors
        put(0x28, MAX_RANGES); // max_discard_seg
        put(0x2c, 1); // discard_sector_alignment
        put(0x30, MAX_RANGE_SECTORS); // max_write_zeroes_sectors
        put(0x34, MAX_RANGES); // max_write_zeroes_seg
        c[0..8].copy_from_slice(&(self.image.size / SECTOR).to_le_bytes());
        c
    }

    /// Discard (advisory: the data may stay, which the spec allows, so it is a no-op that
    /// keeps disks deterministic) and write-zeroes: the ranges are in the readable segments.
    fn serve_ranges(
        &mut self,
        kind: u32,
        data: &[super::queue::Segment],
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
        if self.image.readonly || ranges.is_empty() || ranges.len() > MAX_RANGES as usize {
            return Ok(S_IOERR);
        }
        for &(sector, count) in &ranges {
            let end = sector
                .checked_add(count as u64)
                .and_then(|e| e.checked_mul(SECTOR));
            if count > MAX_RANGE_SECTORS || end.is_none_or(|e| e > self.image.size) {
                return Ok(S_IOERR);
            }
        }
        if kind == T_WRITE_ZEROES {
            for (sector, count) in ranges {
                let zeros = vec![0u8; count as usize * SECTOR as usize];
                if self.write(sector * SECTOR, &zeros).is_err() {
                    return Ok(S_IOERR);
                }
            }
        }
        Ok(S_OK)
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
                if self.image.write_through && self.image.flush().is_err() {
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

    /// Writes the disk as the guest sees it (the base image with the overlay's sectors) to a
    /// new raw image at `path`: how the changes of a recording or a replay are kept.
    pub fn save_to(&self, path: &Path) -> io::Result<()> {
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
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.image.read_at(buf, offset)?;
        if self.state.overlay.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let blocks = offset / BLOCK..end.div_ceil(BLOCK);
        for (&index, block) in self.state.overlay.range(blocks) {
            let block_start = index * BLOCK;
            let from = block_start.max(offset);
            let to = (block_start + block.data.len() as u64).min(end);
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                    &block.data[(from - block_start) as usize..(to - block_start) as usize],
                );
            }
        }
        Ok(())
    }

    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.image.write_through {
            return self.image.write_at(data, offset);
        }
        // The overlay holds whole sectors: a write into a last, partial sector fails (as the
        // base image cannot give that whole sector).
        let whole = self.image.size / SECTOR * SECTOR;
        if offset.saturating_add(data.len() as u64) > whole {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a write past the disk's last whole sector",
            ));
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK as usize - within).min(rest.len());
            let block = match self.state.overlay.entry(index) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let len = block_len(index, self.image.size) as usize;
                    let bytes = if within == 0 && n == len {
                        // The write covers the block: nothing of the base shows through.
                        rest[..n].to_vec()
                    } else {
                        let mut bytes = vec![0u8; len];
                        self.image.read_at(&mut bytes, index * BLOCK)?;
                        bytes
                    };
                    e.insert(Arc::new(Block {
                        data: bytes,
                        written: 0,
                        hash: Default::default(),
                    }))
                }
            };
            // Copies the block if a snapshot shares it.
            let block = Arc::make_mut(block);
            block.hash = Default::default();
            block.data[within..within + n].copy_from_slice(&rest[..n]);
            let first = within as u64 / SECTOR;
            let last = (within + n - 1) as u64 / SECTOR;
            for sector in first..=last {
                block.written |= 1 << sector;
            }
            at += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::qcow2::tests::{pattern, qemu_img, TempDir};

    fn open_err(path: &Path, format: Option<&str>) -> String {
        match DiskImage::open(path, format, false, true) {
            Ok(image) => panic!("opened as {}", image.format_name()),
            Err(e) => e,
        }
    }

    #[test]
    fn open_detects_and_checks_the_format() {
        let dir = TempDir::new("blk-open");
        let raw = dir.file("disk.raw");
        std::fs::write(&raw, pattern(1, 0, 8192)).unwrap();
        let img = dir.file("disk.qcow2");
        let img_s = img.to_str().unwrap();
        qemu_img(&["create", "-f", "qcow2", img_s, "32M"]);
        let file_len = std::fs::metadata(&img).unwrap().len();

        let image = DiskImage::open(&raw, None, false, false).unwrap();
        assert_eq!((image.format_name(), image.size), ("raw", 8192));
        let image = DiskImage::open(&img, None, true, false).unwrap();
        assert_eq!((image.format_name(), image.size), ("qcow2", 32 << 20));
        let image = DiskImage::open(&img, Some("qcow2"), false, true).unwrap();
        assert_eq!(image.format_name(), "qcow2");
        // A qcow2 file taken as raw is its bytes, as in QEMU.
        let image = DiskImage::open(&img, Some("raw"), false, false).unwrap();
        assert_eq!((image.format_name(), image.size), ("raw", file_len));

        assert!(open_err(&raw, Some("qcow2")).contains("is not a qcow2 image"));
        assert!(open_err(&raw, Some("vmdk")).contains("unknown format \"vmdk\""));
        assert!(open_err(&dir.file("missing"), None).contains("cannot open disk image"));

        let top = dir.file("top.qcow2");
        let top_s = top.to_str().unwrap();
        qemu_img(&["create", "-f", "qcow2", "-b", img_s, "-F", "qcow2", top_s]);
        let e = open_err(&top, None);
        assert!(e.starts_with(&format!("disk image {top_s}: qcow2 with a backing file")));
        assert!(e.ends_with(&format!(
            "is not supported: convert it with `qemu-img convert -O qcow2 {top_s} out.qcow2`"
        )));

        let mut garbage = b"QFI\xfb\0\0\0\x03".to_vec();
        garbage.resize(200, 0xff);
        let bad = dir.file("bad.img");
        std::fs::write(&bad, &garbage).unwrap();
        assert!(open_err(&bad, None).contains("give its format as raw"));
        assert_eq!(shell_quoted("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quoted("/tmp/x.qcow2"), "/tmp/x.qcow2");
        assert_eq!(
            DiskImage::open(&bad, Some("raw"), false, false)
                .unwrap()
                .size,
            200
        );
    }

    #[test]
    fn a_qcow2_disk_writes_to_the_overlay_or_through_to_the_image() {
        let dir = TempDir::new("blk-qcow2");
        let img = dir.file("disk.qcow2");
        let img_s = img.to_str().unwrap();
        qemu_img(&["create", "-f", "qcow2", img_s, "8M"]);
        let data = pattern(5, 70_000, 100_000);

        // Recording: the image stays as it was, the overlay holds the write.
        let before = std::fs::read(&img).unwrap();
        let mut blk = Blk::new(DiskImage::open(&img, None, false, false).unwrap());
        blk.write(70_000, &data).unwrap();
        assert!(!blk.state.overlay.is_empty());
        let mut got = vec![0u8; data.len()];
        blk.read(70_000, &mut got).unwrap();
        assert!(got == data);
        let saved = dir.file("saved.raw");
        blk.save_to(&saved).unwrap();
        let disk = std::fs::read(&saved).unwrap();
        assert_eq!(disk.len(), 8 << 20);
        assert!(disk[70_000..170_000] == data[..] && disk[..70_000].iter().all(|&b| b == 0));
        assert!(std::fs::read(&img).unwrap() == before);

        // Read-only: not even a plain run writes.
        let image = DiskImage::open(&img, None, true, true).unwrap();
        assert!(image.write_at(&data, 0).is_err());

        // A plain run: the image itself.
        let mut blk = Blk::new(DiskImage::open(&img, None, false, true).unwrap());
        blk.write(70_000, &data).unwrap();
        assert!(blk.state.overlay.is_empty());
        blk.image.flush().unwrap();
        drop(blk);
        let out = qemu_img(&["check", img_s]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("No errors were found"));
        let blk = Blk::new(DiskImage::open(&img, None, true, false).unwrap());
        let mut got = vec![0u8; data.len()];
        blk.read(70_000, &mut got).unwrap();
        assert!(got == data);
    }

    /// A request as a driver lays it out in RAM: header, one readable data segment, status.
    fn request(ram: &mut rewind_cpu::Ram, kind: u32, payload: &[u8]) -> Chain {
        let base = 0x8000_0000;
        let mut header = kind.to_le_bytes().to_vec();
        header.resize(16, 0);
        ram.write(base, &header).unwrap();
        ram.write(base + 0x100, payload).unwrap();
        let seg = |addr, len, writable| super::super::queue::Segment {
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
        blk.read(0, &mut disk).unwrap();
        assert!(disk[2 * 512..5 * 512].iter().all(|&b| b == 0));
        assert!(disk[100 * 512..101 * 512].iter().all(|&b| b == 0));
        assert!(disk[..2 * 512]
            .iter()
            .chain(&disk[5 * 512..100 * 512])
            .all(|&b| b == 0xab));
        // Discard is advisory: the data stays.
        assert_eq!(status(&mut blk, &mut ram, T_DISCARD, &range(10, 8)), S_OK);
        let mut sector = vec![0u8; 512];
        blk.read(10 * 512, &mut sector).unwrap();
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

    #[test]
    fn the_overlay_keeps_blocks_and_the_sectors_written_in_them() {
        let dir = TempDir::new("blk-blocks");
        let raw = dir.file("disk.raw");
        // 1 MiB and 300 bytes: the last sector is partial.
        let base = pattern(3, 0, (1 << 20) + 300);
        std::fs::write(&raw, &base).unwrap();
        let mut blk = Blk::new(DiskImage::open(&raw, None, false, false).unwrap());
        let empty = blk.state.hash();
        // Within a sector, across sectors and across blocks.
        let writes = [
            (100u64, 10usize),
            (BLOCK - 700, 1400),
            (5 * BLOCK + 512, 512),
        ];
        let mut expected = base.clone();
        for (i, &(at, len)) in writes.iter().enumerate() {
            let data = pattern(10 + i as u64, at, len);
            blk.write(at, &data).unwrap();
            expected[at as usize..at as usize + len].copy_from_slice(&data);
        }
        let mut disk = vec![0u8; 1 << 20];
        blk.read(0, &mut disk).unwrap();
        assert!(disk[..] == expected[..1 << 20]);
        // Format 1's sector map: each sector written, with the base's bytes around the write.
        let sectors = blk.state.written_sectors();
        let keys: Vec<u64> = sectors.keys().copied().collect();
        assert_eq!(keys, [0, 126, 127, 128, 129, 5 * 128 + 1]);
        for (s, bytes) in &sectors {
            let at = (s * SECTOR) as usize;
            assert!(bytes[..] == expected[at..at + 512], "sector {s}");
        }
        assert_eq!(blk.state.overlay.len(), 3);
        assert!(blk.state.validate(blk.image.size).is_ok());
        // The hash follows every write, and only the written block is hashed again.
        let before = blk.state.hash();
        assert_ne!(before, empty);
        let shared = blk.state.clone();
        blk.write(5 * BLOCK + 512, &[1]).unwrap();
        assert_ne!(blk.state.hash(), before);
        assert_eq!(shared.hash(), before, "a write changed a shared block");
        let unchanged = |a: &BlkState, b: &BlkState, i| Arc::ptr_eq(&a.overlay[&i], &b.overlay[&i]);
        assert!(unchanged(&blk.state, &shared, 0) && !unchanged(&blk.state, &shared, 5));
        assert_eq!(blk.state.bytes_beyond(&shared), BLOCK);
        assert_eq!(shared.bytes_beyond(&BlkState::default()), 3 * BLOCK);
        // The disk's last whole sector takes writes; its partial one does not.
        assert!(blk.write((1 << 20) - 512, &[7; 512]).is_ok());
        assert!(blk.write(1 << 20, &[7; 1]).is_err());
        assert!(blk.state.validate(blk.image.size).is_ok());
        assert!(blk.state.validate(BLOCK).is_err(), "blocks past the end");
    }
}
