//! The recording overlay: the disk as the guest sees it, an image on the host that is never
//! written while recording or replaying, with the guest's writes over it. The overlay is
//! guest-visible state (in snapshots and digests), shared block by block between the snapshots
//! that hold it. A plain run may write through to the image instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::{BlockBackend, DiskImage, SECTOR};

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
pub struct OverlayState {
    overlay: BTreeMap<u64, Arc<Block>>,
}

impl std::fmt::Debug for OverlayState {
    // Not the bytes: an overlay may hold gigabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayState")
            .field("blocks", &self.overlay.len())
            .field("hash", &self.hash())
            .finish()
    }
}

impl OverlayState {
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
    pub fn bytes_beyond(&self, base: &OverlayState) -> u64 {
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

/// A disk image with the overlay over it.
#[derive(Debug)]
pub struct Overlay {
    image: DiskImage,
    state: OverlayState,
}

impl Overlay {
    /// The image as it is, nothing written yet.
    pub fn new(image: DiskImage) -> Overlay {
        Overlay {
            image,
            state: OverlayState::default(),
        }
    }

    /// The disk size in bytes.
    pub fn size(&self) -> u64 {
        self.image.size()
    }

    /// Whether the guest may not write at all.
    pub fn readonly(&self) -> bool {
        self.image.readonly
    }

    /// The blocks written, for snapshots.
    pub fn state(&self) -> &OverlayState {
        &self.state
    }

    /// Puts back blocks written (a state [`OverlayState::validate`] accepted for this disk).
    pub fn set_state(&mut self, state: OverlayState) {
        self.state = state;
    }

    /// Reads the disk as the guest sees it: overlay over base.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
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

    /// Writes `data` at `offset`: to the overlay, or to the image when writing through.
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if self.image.write_through {
            return self.image.write_at(data, offset);
        }
        // The overlay holds whole sectors: a write into a last, partial sector fails (as the
        // base image cannot give that whole sector).
        let size = self.size();
        let whole = size / SECTOR * SECTOR;
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
                    let len = block_len(index, size) as usize;
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

    /// Makes writes durable: those written through to the image (the overlay's need nothing).
    pub fn flush(&self) -> io::Result<()> {
        if self.image.write_through {
            self.image.flush()
        } else {
            Ok(())
        }
    }

    /// Writes the disk as the guest sees it (the base image with the overlay's sectors) to a
    /// new raw image at `path`: how the changes of a recording or a replay are kept.
    pub fn save_to(&self, path: &Path) -> io::Result<()> {
        let out = File::create(path)?;
        let size = self.size();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < size {
            let n = (size - offset).min(buf.len() as u64) as usize;
            self.read_at(&mut buf[..n], offset)?;
            out.write_all_at(&buf[..n], offset)?;
            offset += n as u64;
        }
        out.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_files::{pattern, TempDir};

    #[test]
    fn the_overlay_keeps_blocks_and_the_sectors_written_in_them() {
        let dir = TempDir::new("blk-blocks");
        let raw = dir.file("disk.raw");
        // 1 MiB and 300 bytes: the last sector is partial.
        let base = pattern(3, 0, (1 << 20) + 300);
        std::fs::write(&raw, &base).unwrap();
        let mut disk = Overlay::new(DiskImage::open(&raw, None, false, false).unwrap());
        let empty = disk.state.hash();
        // Within a sector, across sectors and across blocks.
        let writes = [
            (100u64, 10usize),
            (BLOCK - 700, 1400),
            (5 * BLOCK + 512, 512),
        ];
        let mut expected = base.clone();
        for (i, &(at, len)) in writes.iter().enumerate() {
            let data = pattern(10 + i as u64, at, len);
            disk.write_at(&data, at).unwrap();
            expected[at as usize..at as usize + len].copy_from_slice(&data);
        }
        let mut got = vec![0u8; 1 << 20];
        disk.read_at(&mut got, 0).unwrap();
        assert!(got[..] == expected[..1 << 20]);
        // Format 1's sector map: each sector written, with the base's bytes around the write.
        let sectors = disk.state.written_sectors();
        let keys: Vec<u64> = sectors.keys().copied().collect();
        assert_eq!(keys, [0, 126, 127, 128, 129, 5 * 128 + 1]);
        for (s, bytes) in &sectors {
            let at = (s * SECTOR) as usize;
            assert!(bytes[..] == expected[at..at + 512], "sector {s}");
        }
        assert_eq!(disk.state.overlay.len(), 3);
        assert!(disk.state.validate(disk.size()).is_ok());
        // The hash follows every write, and only the written block is hashed again.
        let before = disk.state.hash();
        assert_ne!(before, empty);
        let shared = disk.state.clone();
        disk.write_at(&[1], 5 * BLOCK + 512).unwrap();
        assert_ne!(disk.state.hash(), before);
        assert_eq!(shared.hash(), before, "a write changed a shared block");
        let unchanged =
            |a: &OverlayState, b: &OverlayState, i| Arc::ptr_eq(&a.overlay[&i], &b.overlay[&i]);
        assert!(unchanged(&disk.state, &shared, 0) && !unchanged(&disk.state, &shared, 5));
        assert_eq!(disk.state.bytes_beyond(&shared), BLOCK);
        assert_eq!(shared.bytes_beyond(&OverlayState::default()), 3 * BLOCK);
        // The disk's last whole sector takes writes; its partial one does not.
        assert!(disk.write_at(&[7; 512], (1 << 20) - 512).is_ok());
        assert!(disk.write_at(&[7; 1], 1 << 20).is_err());
        assert!(disk.state.validate(disk.size()).is_ok());
        assert!(disk.state.validate(BLOCK).is_err(), "blocks past the end");
    }
}
