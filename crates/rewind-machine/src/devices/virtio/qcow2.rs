//! qcow2 images (versions 2 and 3, QEMU's `docs/interop/qcow2.txt`), read and written in place
//! with positional I/O.
//!
//! What is supported is what `qemu-img create` and `qemu-img convert` make: a two-level map
//! (L1 → L2 → data cluster) with 16-bit refcounts. Unallocated and zero clusters read as zeros.
//! Writes allocate whole clusters at the end of the file and keep the refcounts exact, so
//! `qemu-img check` finds nothing to repair. Refused at open, with what to do instead: backing
//! files, encryption, compressed clusters, external data files, extended L2 entries, other
//! refcount widths, unknown incompatible features, images not closed cleanly, and — for
//! writing only — internal snapshots (their clusters are shared and would need copy-on-write).
//!
//! The file is untrusted: every offset is checked before it is used, metadata must lie in the
//! file (so nothing read is larger than the file), and a bad image is an error, never a panic.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use thiserror::Error;

/// The first four bytes of a qcow2 (and of a qcow version 1) image.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// An L1 or L2 entry whose cluster has refcount 1 (may be written in place).
const OFLAG_COPIED: u64 = 1 << 63;
/// An L2 entry of a compressed cluster.
const OFLAG_COMPRESSED: u64 = 1 << 62;
/// An L2 entry of a cluster that reads as zeros (version 3).
const OFLAG_ZERO: u64 = 1;
/// Bits 9..=55 of an L1 or L2 entry: the host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Host offsets must fit the entries.
const MAX_HOST: u64 = 1 << 56;
/// QEMU's limits on the tables (`QCOW_MAX_L1_SIZE`, `QCOW_MAX_REFTABLE_SIZE`).
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// L2 tables kept in memory; the cache is emptied when it would grow past this.
const L2_CACHE_BYTES: u64 = 32 << 20;
/// Clusters with a refcount that an allocation may skip before it gives up.
const MAX_SKIP: u32 = 1 << 16;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Why an image cannot be used; [`Qcow2Error::hint`] says what to do about it.
#[derive(Debug, Error)]
pub enum Qcow2Error {
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    #[error("it is truncated ({0} lies beyond the end of the file)")]
    Truncated(String),
    #[error("qcow version {0} is not supported (only qcow2 versions 2 and 3)")]
    Version(u32),
    #[error("invalid qcow2 header: {0}")]
    Header(String),
    #[error("corrupt qcow2 metadata: {0}")]
    Corrupt(String),
    #[error("qcow2 with a backing file ({0}) is not supported")]
    BackingFile(String),
    #[error("encrypted qcow2 is not supported")]
    Encrypted,
    #[error("the qcow2 image was not closed cleanly")]
    Dirty,
    #[error("the qcow2 image is marked corrupt")]
    MarkedCorrupt,
    #[error("qcow2 with an external data file is not supported")]
    ExternalDataFile,
    #[error("qcow2 with a compression type other than zlib is not supported")]
    CompressionType,
    #[error("qcow2 with extended L2 entries (subclusters) is not supported")]
    ExtendedL2,
    #[error("qcow2 with unknown incompatible features ({0:#x}) is not supported")]
    UnknownFeatures(u64),
    #[error("qcow2 with {0}-bit refcounts is not supported (only 16-bit)")]
    RefcountWidth(u64),
    #[error("qcow2 with compressed clusters is not supported")]
    Compressed,
    #[error("qcow2 with internal snapshots ({0}) cannot be written")]
    Snapshots(u32),
}

impl Qcow2Error {
    /// What to do next about the image at `path`.
    pub fn hint(&self, path: &str) -> Option<String> {
        let convert = format!("convert it with `qemu-img convert -O qcow2 {path} out.qcow2`");
        let repair = format!("run `qemu-img check -r all {path}`");
        Some(match self {
            Qcow2Error::Io(_) => return None,
            Qcow2Error::Truncated(_) | Qcow2Error::Corrupt(_) => {
                format!("`qemu-img check {path}` says more")
            }
            Qcow2Error::Header(_) => format!("`qemu-img info {path}` says what the file is"),
            Qcow2Error::Dirty | Qcow2Error::MarkedCorrupt => repair,
            Qcow2Error::Encrypted => format!(
                "convert it to an unencrypted image with `qemu-img convert -O qcow2 {path} \
                 out.qcow2` (qemu-img(1) says how to give the key)"
            ),
            Qcow2Error::RefcountWidth(_) => {
                format!("change it with `qemu-img amend -o refcount_bits=16 {path}`")
            }
            Qcow2Error::Snapshots(_) => format!(
                "use it read-only, delete them (`qemu-img snapshot -l {path}`, then -d), or \
                 {convert}"
            ),
            Qcow2Error::Version(_)
            | Qcow2Error::BackingFile(_)
            | Qcow2Error::ExternalDataFile
            | Qcow2Error::CompressionType
            | Qcow2Error::ExtendedL2
            | Qcow2Error::UnknownFeatures(_)
            | Qcow2Error::Compressed => convert,
        })
    }
}

/// Whether `file` starts with the qcow2 magic (a file shorter than it does not).
pub fn is_qcow2(file: &File) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) => Ok(magic == MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// An open qcow2 image: its geometry, its L1 table, a cache of L2 tables and, when writable,
/// its refcount table.
pub struct Qcow2 {
    file: Arc<File>,
    writable: bool,
    version: u32,
    cluster_bits: u32,
    size: u64,
    l1_offset: u64,
    /// The L1 entries that map the disk (`size` may need fewer than the table holds).
    l1: Vec<u64>,
    l2_cache: HashMap<u64, Box<[u64]>>,
    refcount_table_offset: u64,
    /// Empty unless writable.
    refcount_table: Vec<u64>,
    /// Where the next cluster is allocated: past everything the image references.
    next_free: u64,
}

impl fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qcow2")
            .field("version", &self.version)
            .field("cluster_size", &self.cluster_size())
            .field("size", &self.size)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn align_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to).saturating_mul(to)
}

fn io_error(what: &str) -> io::Error {
    io::Error::other(format!("qcow2: {what}"))
}

impl Qcow2 {
    /// Opens the image in `file` (opened for writing if `writable`) and checks its metadata:
    /// header, L1 table, every L2 table (no compressed clusters) and, when writable, the
    /// refcount table.
    pub fn open(file: Arc<File>, writable: bool) -> Result<Qcow2, Qcow2Error> {
        let file_len = file.metadata()?.len();
        let within = |offset: u64, len: u64, what: &str| -> Result<(), Qcow2Error> {
            match offset.checked_add(len) {
                Some(end) if end <= file_len => Ok(()),
                _ => Err(Qcow2Error::Truncated(what.to_string())),
            }
        };
        within(0, 72, "the header")?;
        let mut h = [0u8; 112];
        file.read_exact_at(&mut h[..72], 0)?;
        if h[..4] != MAGIC {
            return Err(Qcow2Error::Header("no qcow2 magic".into()));
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return Err(Qcow2Error::Version(version));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(Qcow2Error::Header(format!(
                "cluster bits {cluster_bits} outside 9..=21"
            )));
        }
        let cs = 1u64 << cluster_bits;
        let (incompatible, autoclear, refcount_order) = if version == 3 {
            within(0, 104, "the version 3 header")?;
            file.read_exact_at(&mut h[72..104], 72)?;
            let header_length = be32(&h, 100);
            if header_length < 104 || header_length as u64 > cs {
                return Err(Qcow2Error::Header(format!(
                    "header length {header_length} outside 104 to the cluster size"
                )));
            }
            within(0, header_length as u64, "the header")?;
            if header_length > 104 {
                file.read_exact_at(&mut h[104..105], 104)?;
            }
            (be64(&h, 72), be64(&h, 88), be32(&h, 96))
        } else {
            (0, 0, 4)
        };

        let backing_offset = be64(&h, 8);
        if backing_offset != 0 {
            let len = be32(&h, 16).min(1023) as usize;
            let mut name = vec![0u8; len];
            let name = match file.read_exact_at(&mut name, backing_offset) {
                Ok(()) => format!("{:?}", String::from_utf8_lossy(&name)),
                Err(_) => "unreadable".to_string(),
            };
            return Err(Qcow2Error::BackingFile(name));
        }
        if be32(&h, 32) != 0 {
            return Err(Qcow2Error::Encrypted);
        }
        if incompatible & !INCOMPAT_KNOWN != 0 {
            return Err(Qcow2Error::UnknownFeatures(incompatible & !INCOMPAT_KNOWN));
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Qcow2Error::ExternalDataFile);
        }
        if incompatible & INCOMPAT_EXTL2 != 0 {
            return Err(Qcow2Error::ExtendedL2);
        }
        if incompatible & INCOMPAT_COMPRESSION != 0 || h[104] != 0 {
            return Err(Qcow2Error::CompressionType);
        }
        if incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(Qcow2Error::MarkedCorrupt);
        }
        if incompatible & INCOMPAT_DIRTY != 0 {
            return Err(Qcow2Error::Dirty);
        }

        if refcount_order != 4 {
            return Err(Qcow2Error::RefcountWidth(
                1u64.checked_shl(refcount_order).unwrap_or(0),
            ));
        }

        // The L1 table must cover the disk, and lie in the file.
        let size = be64(&h, 24);
        let l1_size = be32(&h, 36) as u64;
        let l1_offset = be64(&h, 40);
        let l2_span = 1u64 << (2 * cluster_bits - 3);
        let l1_needed = size.div_ceil(l2_span);
        if l1_needed > l1_size {
            return Err(Qcow2Error::Header(format!(
                "the L1 table ({l1_size} entries) does not cover the disk size {size}"
            )));
        }
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(Qcow2Error::Header(format!(
                "the L1 table ({l1_size} entries) is too large"
            )));
        }
        if l1_size > 0 && (l1_offset == 0 || !l1_offset.is_multiple_of(cs)) {
            return Err(Qcow2Error::Header(format!(
                "the L1 table offset {l1_offset:#x} is not cluster-aligned"
            )));
        }
        within(l1_offset, l1_size * 8, "the L1 table")?;

        let refcount_table_offset = be64(&h, 48);
        let refcount_table_bytes = be32(&h, 56) as u64 * cs;
        if refcount_table_offset == 0
            || !refcount_table_offset.is_multiple_of(cs)
            || refcount_table_bytes == 0
            || refcount_table_bytes > MAX_REFTABLE_BYTES
        {
            return Err(Qcow2Error::Header(format!(
                "bad refcount table ({refcount_table_bytes} bytes at {refcount_table_offset:#x})"
            )));
        }
        within(
            refcount_table_offset,
            refcount_table_bytes,
            "the refcount table",
        )?;

        let snapshots = be32(&h, 60);
        if writable && snapshots != 0 {
            return Err(Qcow2Error::Snapshots(snapshots));
        }

        let mut q = Qcow2 {
            file,
            writable,
            version,
            cluster_bits,
            size,
            l1_offset,
            l1: Vec::new(),
            l2_cache: HashMap::new(),
            refcount_table_offset,
            refcount_table: Vec::new(),
            next_free: align_up(file_len, cs),
        };
        q.l1 = q.read_table(l1_offset, l1_needed)?.into_vec();

        // Every L2 table in the file, every data cluster starting in it, none compressed.
        let mut seen = HashSet::new();
        for i in 0..q.l1.len() {
            let l2 = q.l1[i] & OFFSET_MASK;
            if l2 == 0 || !seen.insert(l2) {
                continue;
            }
            if !l2.is_multiple_of(cs) {
                return Err(Qcow2Error::Corrupt(format!(
                    "L1 entry {i} points to an unaligned L2 table at {l2:#x}"
                )));
            }
            within(l2, cs, "an L2 table")?;
            let table = q.read_table(l2, cs / 8)?;
            for (j, &e) in table.iter().enumerate() {
                if e & OFLAG_COMPRESSED != 0 {
                    return Err(Qcow2Error::Compressed);
                }
                let host = e & OFFSET_MASK;
                if !host.is_multiple_of(cs) {
                    return Err(Qcow2Error::Corrupt(format!(
                        "L2 entry {j} of the table at {l2:#x} points to an unaligned \
                         cluster at {host:#x}"
                    )));
                }
                if host >= q.next_free {
                    return Err(Qcow2Error::Corrupt(format!(
                        "a data cluster at {host:#x} lies beyond the end of the file"
                    )));
                }
            }
            q.cache_l2(l2, table);
        }

        if writable {
            let entries = q.read_table(refcount_table_offset, refcount_table_bytes / 8)?;
            for (i, &block) in entries.iter().enumerate() {
                let in_file = matches!(block.checked_add(cs), Some(end) if end <= file_len);
                if block != 0 && (!block.is_multiple_of(cs) || !in_file) {
                    return Err(Qcow2Error::Corrupt(format!(
                        "refcount table entry {i} points to a bad refcount block at {block:#x}"
                    )));
                }
            }
            q.refcount_table = entries.into_vec();
            if autoclear != 0 {
                // What the autoclear features describe (bitmaps) is not kept up to date.
                q.file.write_all_at(&0u64.to_be_bytes(), 88)?;
            }
        }
        Ok(q)
    }

    /// The disk size the guest sees, in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Reads `buf.len()` bytes of the disk at `offset`.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_range(offset, buf.len())?;
        let cs = self.cluster_size();
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let within = at % cs;
            let n = ((cs - within) as usize).min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            let entry = self.l2_entry(at)?;
            match self.data_cluster(entry)? {
                Some(host) => self.read_padded(chunk, host + within)?,
                None => chunk.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` to the disk at `offset`, allocating clusters as needed.
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "qcow2: the image is open read-only",
            ));
        }
        self.check_range(offset, data.len())?;
        let cs = self.cluster_size();
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let n = ((cs - at % cs) as usize).min(data.len() - done);
            self.write_in_cluster(at, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn check_range(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "qcow2: access beyond the end of the disk",
            )),
        }
    }

    /// Reads `n` big-endian u64 (the caller has checked they lie in the file).
    fn read_table(&self, offset: u64, n: u64) -> io::Result<Box<[u64]>> {
        let mut bytes = vec![0u8; n as usize * 8];
        self.file.read_exact_at(&mut bytes, offset)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    /// Reads from the file, with zeros past its end (as QEMU does for a last cluster that was
    /// not written out in full).
    fn read_padded(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn cache_l2(&mut self, offset: u64, table: Box<[u64]>) {
        if (self.l2_cache.len() as u64 + 1) * self.cluster_size() > L2_CACHE_BYTES {
            self.l2_cache.clear();
        }
        self.l2_cache.insert(offset, table);
    }

    /// Which L1 entry and which entry of its L2 table map the disk offset `at`.
    fn indices(&self, at: u64) -> (usize, usize) {
        let l2_bits = self.cluster_bits - 3;
        let l1i = at >> (self.cluster_bits + l2_bits);
        let l2i = (at >> self.cluster_bits) & ((1 << l2_bits) - 1);
        (l1i as usize, l2i as usize)
    }

    /// The L2 entry for the disk offset `at` (0 if its L2 table is not allocated).
    fn l2_entry(&mut self, at: u64) -> io::Result<u64> {
        let (l1i, l2i) = self.indices(at);
        let l2 = self.l1.get(l1i).copied().unwrap_or(0) & OFFSET_MASK;
        if l2 == 0 {
            return Ok(0);
        }
        self.l2_entry_in(l2, l2i)
    }

    fn l2_entry_in(&mut self, l2: u64, l2i: usize) -> io::Result<u64> {
        if !self.l2_cache.contains_key(&l2) {
            let table = self.read_table(l2, self.cluster_size() / 8)?;
            self.cache_l2(l2, table);
        }
        self.l2_cache
            .get(&l2)
            .and_then(|t| t.get(l2i))
            .copied()
            .ok_or_else(|| io_error("L2 table lookup failed"))
    }

    /// The host cluster holding the data of an L2 entry, or None if it reads as zeros.
    fn data_cluster(&self, entry: u64) -> io::Result<Option<u64>> {
        if entry & OFLAG_COMPRESSED != 0 {
            return Err(io_error("compressed clusters are not supported"));
        }
        let host = entry & OFFSET_MASK;
        if host == 0 || (self.version == 3 && entry & OFLAG_ZERO != 0) {
            return Ok(None);
        }
        if !host.is_multiple_of(self.cluster_size()) {
            return Err(io_error("unaligned data cluster"));
        }
        Ok(Some(host))
    }

    fn write_in_cluster(&mut self, at: u64, chunk: &[u8]) -> io::Result<()> {
        let cs = self.cluster_size();
        let within = (at % cs) as usize;
        let (l1i, l2i) = self.indices(at);
        let l2 = self.l2_table_for_write(l1i)?;
        let entry = self.l2_entry_in(l2, l2i)?;
        if entry & OFLAG_COMPRESSED != 0 {
            return Err(io_error("compressed clusters are not supported"));
        }
        let host = entry & OFFSET_MASK;
        let zero = self.version == 3 && entry & OFLAG_ZERO != 0;
        if host != 0 {
            if !host.is_multiple_of(cs) {
                return Err(io_error("unaligned data cluster"));
            }
            if entry & OFLAG_COPIED == 0 && self.refcount(host)? != 1 {
                return Err(io_error(
                    "a cluster shared with a snapshot cannot be written",
                ));
            }
            if zero {
                // A preallocated zero cluster: all of it becomes data.
                let mut cluster = vec![0u8; cs as usize];
                cluster[within..within + chunk.len()].copy_from_slice(chunk);
                self.file.write_all_at(&cluster, host)?;
            } else {
                self.file.write_all_at(chunk, host + within as u64)?;
            }
            if entry != host | OFLAG_COPIED {
                self.set_l2_entry(l2, l2i, host | OFLAG_COPIED)?;
            }
            return Ok(());
        }
        // Unallocated, or zero without a cluster: a new cluster, zeros around the data (there
        // is no backing file to copy from).
        let new = self.alloc_cluster()?;
        let mut cluster = vec![0u8; cs as usize];
        cluster[within..within + chunk.len()].copy_from_slice(chunk);
        self.file.write_all_at(&cluster, new)?;
        self.set_l2_entry(l2, l2i, new | OFLAG_COPIED)
    }

    /// The L2 table of L1 entry `l1i`, allocated if there is none.
    fn l2_table_for_write(&mut self, l1i: usize) -> io::Result<u64> {
        let entry = self
            .l1
            .get(l1i)
            .copied()
            .ok_or_else(|| io_error("L1 index out of range"))?;
        let l2 = entry & OFFSET_MASK;
        if l2 != 0 {
            if entry & OFLAG_COPIED == 0 {
                if self.refcount(l2)? != 1 {
                    return Err(io_error(
                        "an L2 table shared with a snapshot cannot be written",
                    ));
                }
                self.set_l1_entry(l1i, l2 | OFLAG_COPIED)?;
            }
            return Ok(l2);
        }
        let cs = self.cluster_size();
        let new = self.alloc_cluster()?;
        self.file.write_all_at(&vec![0u8; cs as usize], new)?;
        self.cache_l2(new, vec![0u64; (cs / 8) as usize].into_boxed_slice());
        self.set_l1_entry(l1i, new | OFLAG_COPIED)?;
        Ok(new)
    }

    fn set_l1_entry(&mut self, l1i: usize, entry: u64) -> io::Result<()> {
        self.file
            .write_all_at(&entry.to_be_bytes(), self.l1_offset + l1i as u64 * 8)?;
        if let Some(e) = self.l1.get_mut(l1i) {
            *e = entry;
        }
        Ok(())
    }

    fn set_l2_entry(&mut self, l2: u64, l2i: usize, entry: u64) -> io::Result<()> {
        self.file
            .write_all_at(&entry.to_be_bytes(), l2 + l2i as u64 * 8)?;
        if let Some(e) = self.l2_cache.get_mut(&l2).and_then(|t| t.get_mut(l2i)) {
            *e = entry;
        }
        Ok(())
    }

    /// Refcounts per refcount block (16 bits each).
    fn refcounts_per_block(&self) -> u64 {
        self.cluster_size() / 2
    }

    /// Which refcount table entry counts the host cluster at `host`, and where in its block.
    fn refcount_index(&self, host: u64) -> (u64, u64) {
        let cluster = host >> self.cluster_bits;
        let per = self.refcounts_per_block();
        (cluster / per, cluster % per)
    }

    fn refcount_block(&self, table_index: u64) -> Option<u64> {
        usize::try_from(table_index)
            .ok()
            .and_then(|i| self.refcount_table.get(i))
            .copied()
    }

    fn refcount(&self, host: u64) -> io::Result<u16> {
        let (ti, i) = self.refcount_index(host);
        match self.refcount_block(ti) {
            None | Some(0) => Ok(0),
            Some(block) => {
                let mut b = [0u8; 2];
                self.file.read_exact_at(&mut b, block + i * 2)?;
                Ok(u16::from_be_bytes(b))
            }
        }
    }

    fn set_refcount(&self, block: u64, host: u64, count: u16) -> io::Result<()> {
        let (_, i) = self.refcount_index(host);
        self.file.write_all_at(&count.to_be_bytes(), block + i * 2)
    }

    /// A new cluster with refcount 1 (its contents are the caller's to write).
    fn alloc_cluster(&mut self) -> io::Result<u64> {
        let host = self.free_cluster()?;
        let block = self.refcount_block_for(host, 0)?;
        self.set_refcount(block, host, 1)?;
        Ok(host)
    }

    /// The next cluster past the end with refcount 0, not yet counted.
    fn free_cluster(&mut self) -> io::Result<u64> {
        let cs = self.cluster_size();
        for _ in 0..MAX_SKIP {
            let host = self.next_free;
            if host >= MAX_HOST - cs {
                return Err(io_error("the image is full"));
            }
            self.next_free = host + cs;
            if self.refcount(host)? == 0 {
                return Ok(host);
            }
        }
        Err(io_error("no free cluster found (bad refcounts?)"))
    }

    /// The refcount block that counts the cluster at `host`, allocated if there is none: a
    /// new block counts itself, in itself or (if it lies past what it covers) in another.
    /// Everything is written and counted before the refcount table points at it.
    fn refcount_block_for(&mut self, host: u64, depth: u32) -> io::Result<u64> {
        let (ti, _) = self.refcount_index(host);
        match self.refcount_block(ti) {
            None => {
                return Err(io_error(
                    "the refcount table is full (growing it is not supported)",
                ))
            }
            Some(0) => {}
            Some(block) => return Ok(block),
        }
        if depth > 3 {
            return Err(io_error("cannot place a new refcount block"));
        }
        let block = self.free_cluster()?;
        let (own_ti, own_i) = self.refcount_index(block);
        let counter = if own_ti == ti {
            None
        } else {
            Some(self.refcount_block_for(block, depth + 1)?)
        };
        let mut bytes = vec![0u8; self.cluster_size() as usize];
        if counter.is_none() {
            bytes[own_i as usize * 2..own_i as usize * 2 + 2].copy_from_slice(&1u16.to_be_bytes());
        }
        self.file.write_all_at(&bytes, block)?;
        if let Some(counter) = counter {
            self.set_refcount(counter, block, 1)?;
        }
        self.file
            .write_all_at(&block.to_be_bytes(), self.refcount_table_offset + ti * 8)?;
        if let Some(e) = usize::try_from(ti)
            .ok()
            .and_then(|i| self.refcount_table.get_mut(i))
        {
            *e = block;
        }
        Ok(block)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system's temporary one, removed when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("rewind-test-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a temporary directory");
            TempDir(dir)
        }

        pub(crate) fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run(program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} (Debian's qemu-utils): {e}"))
    }

    /// Runs qemu-img, which must succeed.
    pub(crate) fn qemu_img(args: &[&str]) -> Output {
        let out = run("qemu-img", args);
        assert!(
            out.status.success(),
            "qemu-img {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn qemu_io(path: &Path, commands: &[&str]) {
        let mut args = Vec::new();
        for c in commands {
            args.extend(["-c", c]);
        }
        let path = path.to_str().unwrap();
        args.push(path);
        let out = run("qemu-io", &args);
        assert!(out.status.success(), "qemu-io {args:?} failed");
    }

    /// `qemu-img check` finds neither errors nor leaks.
    fn assert_clean(path: &Path) {
        let out = run("qemu-img", &["check", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("No errors were found"),
            "qemu-img check: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// xorshift64*: reproducible test inputs.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed | 1)
        }

        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub(crate) fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    /// Bytes that depend on where they are and on `seed`, so misplaced data shows.
    pub(crate) fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let x = (offset + i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
                (x >> 29) as u8 | 1
            })
            .collect()
    }

    fn read_file(path: &Path, offset: u64, len: usize) -> Vec<u8> {
        let file = File::open(path).unwrap();
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match file
                .read_at(&mut buf[done..], offset + done as u64)
                .unwrap()
            {
                0 => break,
                n => done += n,
            }
        }
        buf
    }

    fn open(path: &Path, writable: bool) -> Result<Qcow2, Qcow2Error> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)?;
        Qcow2::open(Arc::new(file), writable)
    }

    fn mib(n: u64) -> u64 {
        n << 20
    }

    /// Ranges worth looking at for a disk of `size` with `cs`-byte clusters: starts, ends,
    /// cluster and L2 boundaries.
    fn interesting(size: u64, cs: u64) -> Vec<(u64, usize)> {
        let l2_span = cs * (cs / 8);
        let mut ranges = vec![
            (0, 5000),
            (cs - 100, 200),
            (mib(1) + 3, 200_000),
            (3 * cs - 10, 2 * cs as usize + 20),
            (size - 70_000, 70_000),
        ];
        if l2_span < size {
            ranges.push((l2_span - 3000, 6000));
        }
        ranges
    }

    /// Reads through `q` equal reads of the raw file `raw` around `ranges`, at random places
    /// and across cluster boundaries.
    fn assert_reads_match(q: &mut Qcow2, raw: &Path, ranges: &[(u64, usize)], seed: u64) {
        let size = q.size();
        let cs = q.cluster_size();
        let mut rng = Rng::new(seed);
        let mut reads: Vec<(u64, usize)> = ranges
            .iter()
            .map(|&(at, len)| {
                let start = at.saturating_sub(cs + 7);
                let end = (at + len as u64 + cs + 7).min(size);
                (start, (end - start) as usize)
            })
            .collect();
        for _ in 0..200 {
            let len = 1 + rng.below(3 * cs) as usize;
            reads.push((rng.below(size - len as u64), len));
        }
        for _ in 0..50 {
            let boundary = (1 + rng.below(size / cs - 1)) * cs;
            reads.push((boundary - 1, 2));
        }
        for (at, len) in reads {
            let mut got = vec![0xeeu8; len];
            q.read_at(&mut got, at).unwrap();
            assert!(
                got == read_file(raw, at, len),
                "{len} bytes at {at:#x} differ from the raw image"
            );
        }
    }

    /// A sparse raw disk of `size` bytes with data in `ranges`.
    fn make_raw(path: &Path, size: u64, ranges: &[(u64, usize)]) {
        let file = File::create(path).unwrap();
        file.set_len(size).unwrap();
        for &(at, len) in ranges {
            file.write_all_at(&pattern(7, at, len), at).unwrap();
        }
    }

    fn reads_match_qemu_img_convert(opts: &[&str], size: u64, cs: u64, version: u32) {
        let dir = TempDir::new("qcow2-read");
        let (raw, img) = (dir.file("disk.raw"), dir.file("disk.qcow2"));
        let ranges = interesting(size, cs);
        make_raw(&raw, size, &ranges);
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend(opts);
        args.extend([raw.to_str().unwrap(), img.to_str().unwrap()]);
        qemu_img(&args);
        let mut q = open(&img, false).unwrap();
        assert_eq!(
            (q.size(), q.cluster_size(), q.version()),
            (size, cs, version)
        );
        assert_reads_match(&mut q, &raw, &ranges, size ^ cs);
        // Past the end is an error, not a panic.
        assert!(q.read_at(&mut [0u8; 2], size - 1).is_err());
        assert!(q.read_at(&mut [0u8; 1], u64::MAX).is_err());
        assert!(q.write_at(&[0u8; 1], 0).is_err(), "opened read-only");
    }

    #[test]
    fn reads_match_qemu_img_convert_v2() {
        reads_match_qemu_img_convert(&["-o", "compat=0.10"], mib(1024), 65536, 2);
    }

    #[test]
    fn reads_match_qemu_img_convert_v3() {
        reads_match_qemu_img_convert(&[], mib(1024), 65536, 3);
    }

    #[test]
    fn reads_match_qemu_img_convert_4k_clusters() {
        reads_match_qemu_img_convert(&["-o", "cluster_size=4096"], mib(64), 4096, 3);
    }

    #[test]
    fn reads_match_qemu_img_convert_512_byte_clusters() {
        reads_match_qemu_img_convert(&["-o", "cluster_size=512,compat=0.10"], mib(16), 512, 2);
    }

    #[test]
    fn an_empty_image_reads_as_zeros() {
        let dir = TempDir::new("qcow2-empty");
        let img = dir.file("empty.qcow2");
        qemu_img(&["create", "-f", "qcow2", img.to_str().unwrap(), "64M"]);
        let mut q = open(&img, false).unwrap();
        let mut buf = vec![0xffu8; mib(1) as usize];
        for at in (0..mib(64)).step_by(mib(1) as usize) {
            q.read_at(&mut buf, at).unwrap();
            assert!(buf.iter().all(|&b| b == 0));
        }
    }

    /// The expected disk: a raw conversion of the image before the writes, with the writes.
    struct Model {
        before: PathBuf,
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl Model {
        fn expected(&self, at: u64, len: usize) -> Vec<u8> {
            let mut buf = read_file(&self.before, at, len);
            for (w, data) in &self.writes {
                let from = at.max(*w);
                let to = (at + len as u64).min(w + data.len() as u64);
                if from < to {
                    buf[(from - at) as usize..(to - at) as usize]
                        .copy_from_slice(&data[(from - w) as usize..(to - w) as usize]);
                }
            }
            buf
        }
    }

    /// Writes `ops` (offset, length) through our writer to `img`, then checks it with
    /// `qemu-img check` and compares `qemu-img convert -O raw` of it (and our reader) with
    /// what was written. Returns the number of writes that succeeded: the first that fails
    /// ends the writing (and what it wrote is not compared).
    fn check_writes(dir: &TempDir, img: &Path, ops: &[(u64, usize)]) -> usize {
        let (before, after) = (dir.file("before.raw"), dir.file("after.raw"));
        let img_s = img.to_str().unwrap();
        qemu_img(&["convert", "-O", "raw", img_s, before.to_str().unwrap()]);
        let mut model = Model {
            before,
            writes: Vec::new(),
        };
        let mut q = open(img, true).unwrap();
        let (size, cs) = (q.size(), q.cluster_size());
        let mut failed = None;
        for (i, &(at, len)) in ops.iter().enumerate() {
            let data = pattern(100 + i as u64, at, len);
            if q.write_at(&data, at).is_err() {
                failed = Some((at, at + len as u64));
                break;
            }
            model.writes.push((at, data));
        }
        q.flush().unwrap();
        drop(q);
        assert_clean(img);
        qemu_img(&["convert", "-O", "raw", img_s, after.to_str().unwrap()]);
        let mut q = open(img, false).unwrap();
        let mut rng = Rng::new(size ^ 0x55);
        let mut reads: Vec<(u64, usize)> = model
            .writes
            .iter()
            .map(|(at, data)| {
                let start = at.saturating_sub(cs + 3);
                (
                    start,
                    ((at + data.len() as u64 + cs + 3).min(size) - start) as usize,
                )
            })
            .collect();
        for _ in 0..100 {
            let len = 1 + rng.below(2 * cs) as usize;
            reads.push((rng.below(size - len as u64), len));
        }
        let unknown = |&(at, len): &(u64, usize)| {
            failed.is_some_and(|(from, to)| at < to && at + len as u64 > from)
        };
        for (at, len) in reads.into_iter().filter(|r| !unknown(r)) {
            let expected = model.expected(at, len);
            assert!(
                read_file(&after, at, len) == expected,
                "qemu-img sees other data in {len} bytes at {at:#x}"
            );
            let mut got = vec![0u8; len];
            q.read_at(&mut got, at).unwrap();
            assert!(
                got == expected,
                "we read other data in {len} bytes at {at:#x}"
            );
        }
        model.writes.len()
    }

    /// Writes: partial clusters, across clusters and L2 tables, over earlier writes, the end.
    fn write_ops(size: u64, cs: u64) -> Vec<(u64, usize)> {
        let l2_span = cs * (cs / 8);
        let mut ops = vec![
            (1000, 3000),
            (cs - 700, 1400),
            (3 * cs - 10, 2 * cs as usize + 20),
            (1500, 100),
            (size - 512, 512),
            (size / 2 + 17, 1),
        ];
        if l2_span < size {
            ops.push((l2_span - 5000, 10_000));
        }
        ops
    }

    fn writes_pass_qemu_img_check(opts: &str, size: u64, cs: u64) {
        let dir = TempDir::new("qcow2-write");
        let img = dir.file("disk.qcow2");
        let size_s = size.to_string();
        let img_s = img.to_str().unwrap();
        qemu_img(&["create", "-f", "qcow2", "-o", opts, img_s, &size_s]);
        let ops = write_ops(size, cs);
        assert_eq!(check_writes(&dir, &img, &ops), ops.len());
    }

    #[test]
    fn writes_pass_qemu_img_check_v2() {
        writes_pass_qemu_img_check("compat=0.10", mib(1024), 65536);
    }

    #[test]
    fn writes_pass_qemu_img_check_v3() {
        writes_pass_qemu_img_check("compat=1.1", mib(1024), 65536);
    }

    #[test]
    fn writes_needing_a_new_refcount_block_pass_qemu_img_check() {
        // 4 KiB clusters: a refcount block counts 2048 clusters (8 MiB), so 12 MiB of new data
        // needs a second block.
        let dir = TempDir::new("qcow2-refblock");
        let img = dir.file("disk.qcow2");
        let img_s = img.to_str().unwrap();
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4096",
            img_s,
            "64M",
        ]);
        let mut ops = write_ops(mib(64), 4096);
        ops.push((mib(20) + 5, mib(12) as usize));
        assert_eq!(check_writes(&dir, &img, &ops), ops.len());
        let bytes = std::fs::read(&img).unwrap();
        let table = be64(&bytes, 48) as usize;
        let blocks = (0..512)
            .filter(|i| be64(&bytes, table + i * 8) != 0)
            .count();
        assert_eq!(blocks, 2, "refcount blocks");
    }

    #[test]
    fn writes_into_images_written_by_qemu_pass_qemu_img_check() {
        let dir = TempDir::new("qcow2-rewrite");
        // Data, a zero cluster with its cluster kept, a zero cluster without one.
        let img = dir.file("zero.qcow2");
        let img_s = img.to_str().unwrap();
        qemu_img(&["create", "-f", "qcow2", img_s, "16M"]);
        qemu_io(
            &img,
            &[
                "write -P 0xaa 0 256k",
                "write -z 64k 64k",
                "write -z 512k 64k",
            ],
        );
        let mut q = open(&img, false).unwrap();
        let mut buf = vec![0u8; 3 * 65536];
        q.read_at(&mut buf, 0).unwrap();
        assert!(buf[..65536].iter().all(|&b| b == 0xaa));
        assert!(buf[65536..131072].iter().all(|&b| b == 0));
        assert!(buf[131072..].iter().all(|&b| b == 0xaa));
        drop(q);
        let ops = [
            (65536 + 100, 200),
            (524288 + 65000, 1000),
            (200_000, 100_000),
        ];
        assert_eq!(check_writes(&dir, &img, &ops), ops.len());

        // Every cluster allocated up front.
        let img = dir.file("prealloc.qcow2");
        let img_s = img.to_str().unwrap();
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "preallocation=metadata",
            img_s,
            "16M",
        ]);
        let len = std::fs::metadata(&img).unwrap().len();
        let ops = write_ops(mib(16), 65536);
        assert_eq!(check_writes(&dir, &img, &ops), ops.len());
        assert_eq!(
            std::fs::metadata(&img).unwrap().len(),
            len,
            "written in place"
        );
    }

    #[test]
    fn a_refcount_block_past_what_it_counts_is_counted_by_another() {
        // 512-byte clusters: a refcount block counts 256 clusters. With the file ending just
        // before the last cluster of the second block's range, the first allocation needs that
        // block, which lands in the third range and so needs the third block first.
        let dir = TempDir::new("qcow2-refblock-far");
        let img = dir.file("disk.qcow2");
        let img_s = img.to_str().unwrap();
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            img_s,
            "16M",
        ]);
        let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        file.set_len(2 * 256 * 512 - 512).unwrap();
        drop(file);
        let ops = [(0, 1000), (mib(8), 3000)];
        assert_eq!(check_writes(&dir, &img, &ops), ops.len());
        let bytes = std::fs::read(&img).unwrap();
        let table = be64(&bytes, 48) as usize;
        let blocks: Vec<u64> = (0..4).map(|i| be64(&bytes, table + i * 8)).collect();
        assert_eq!(blocks[1..], [512 * 512, 513 * 512, 0]);
    }

    #[test]
    fn a_full_refcount_table_is_an_io_error_and_the_image_stays_clean() {
        // 512-byte clusters: the one-cluster refcount table counts 8 MiB of file.
        let dir = TempDir::new("qcow2-full");
        let img = dir.file("disk.qcow2");
        let img_s = img.to_str().unwrap();
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            img_s,
            "64M",
        ]);
        let ops: Vec<(u64, usize)> = (0..16).map(|i| (i * mib(1) + 3, mib(1) as usize)).collect();
        let done = check_writes(&dir, &img, &ops);
        assert!(done > 4 && done < 9, "{done} writes succeeded");
    }

    fn open_err(path: &Path, writable: bool) -> Qcow2Error {
        match open(path, writable) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e,
        }
    }

    /// Sets bits in the big-endian u64 at `at` of the file.
    fn patch_or(path: &Path, at: u64, bits: u64) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, at).unwrap();
        file.write_all_at(&(u64::from_be_bytes(b) | bits).to_be_bytes(), at)
            .unwrap();
    }

    #[test]
    fn unsupported_images_are_refused_with_what_to_do() {
        let dir = TempDir::new("qcow2-refuse");
        let base = dir.file("base.qcow2");
        let top = dir.file("top.qcow2");
        let (base_s, top_s) = (base.to_str().unwrap(), top.to_str().unwrap());
        qemu_img(&["create", "-f", "qcow2", base_s, "16M"]);
        qemu_img(&["create", "-f", "qcow2", "-b", base_s, "-F", "qcow2", top_s]);
        let e = open_err(&top, false);
        assert!(matches!(&e, Qcow2Error::BackingFile(name) if name.contains("base.qcow2")));
        assert!(e
            .hint("X")
            .unwrap()
            .contains("qemu-img convert -O qcow2 X out.qcow2"));

        let raw = dir.file("data.raw");
        make_raw(&raw, mib(4), &[(0, mib(2) as usize)]);
        let packed = dir.file("compressed.qcow2");
        let packed_s = packed.to_str().unwrap();
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            packed_s,
        ]);
        assert!(matches!(open_err(&packed, false), Qcow2Error::Compressed));

        let narrow = dir.file("narrow.qcow2");
        let narrow_s = narrow.to_str().unwrap();
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "refcount_bits=8",
            narrow_s,
            "16M",
        ]);
        assert!(matches!(
            open_err(&narrow, false),
            Qcow2Error::RefcountWidth(8)
        ));

        // Header bits: incompatible features (offset 72), encryption (32), version (4).
        type Case = (u64, u64, fn(&Qcow2Error) -> bool);
        let cases: [Case; 7] = [
            (72, 1, |e| matches!(e, Qcow2Error::Dirty)),
            (72, 2, |e| matches!(e, Qcow2Error::MarkedCorrupt)),
            (72, 4, |e| matches!(e, Qcow2Error::ExternalDataFile)),
            (72, 16, |e| matches!(e, Qcow2Error::ExtendedL2)),
            (72, 1 << 40, |e| matches!(e, Qcow2Error::UnknownFeatures(_))),
            (32, 1 << 32, |e| matches!(e, Qcow2Error::Encrypted)),
            (0, 4, |e| matches!(e, Qcow2Error::Version(7))),
        ];
        for (at, bits, expected) in cases {
            let img = dir.file("patched.qcow2");
            qemu_img(&["create", "-f", "qcow2", img.to_str().unwrap(), "16M"]);
            patch_or(&img, at, bits);
            let e = open_err(&img, false);
            assert!(expected(&e), "{e}");
        }
        let dirty = dir.file("patched.qcow2");
        qemu_img(&["create", "-f", "qcow2", dirty.to_str().unwrap(), "16M"]);
        patch_or(&dirty, 72, 1);
        assert!(open_err(&dirty, false)
            .hint("X")
            .unwrap()
            .contains("qemu-img check -r all X"));

        // Snapshots: readable, not writable.
        let snap = dir.file("snap.qcow2");
        let snap_s = snap.to_str().unwrap();
        qemu_img(&["create", "-f", "qcow2", snap_s, "16M"]);
        qemu_img(&["snapshot", "-c", "one", snap_s]);
        assert!(matches!(open_err(&snap, true), Qcow2Error::Snapshots(1)));
        let mut q = open(&snap, false).unwrap();
        q.read_at(&mut [0u8; 4096], 0).unwrap();
    }

    #[test]
    fn truncated_and_garbage_images_are_errors() {
        let dir = TempDir::new("qcow2-trunc");
        let raw = dir.file("data.raw");
        let ranges = interesting(mib(8), 4096);
        make_raw(&raw, mib(8), &ranges);
        let img = dir.file("disk.qcow2");
        let raw_s = raw.to_str().unwrap();
        let img_s = img.to_str().unwrap();
        qemu_img(&[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            raw_s,
            img_s,
        ]);
        let bytes = std::fs::read(&img).unwrap();
        let l1_end = be64(&bytes, 40) + be32(&bytes, 36) as u64 * 8;
        let cut = dir.file("cut.qcow2");
        let mut lens: Vec<u64> = vec![0, 3, 4, 50, 72, 100, 103, 104, l1_end - 1];
        lens.extend((4096..bytes.len() as u64).step_by(4096 * 7));
        for len in lens {
            std::fs::write(&cut, &bytes[..len as usize]).unwrap();
            let file = Arc::new(File::open(&cut).unwrap());
            if len < 4 {
                assert!(!is_qcow2(&file).unwrap());
                continue;
            }
            assert!(is_qcow2(&file).unwrap());
            match Qcow2::open(file, false) {
                Ok(mut q) => {
                    assert!(len >= l1_end, "opened when cut to {len}");
                    let mut buf = vec![0u8; 65536];
                    for at in (0..q.size()).step_by(buf.len()) {
                        let _ = q.read_at(&mut buf, at);
                    }
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }

        let mut rng = Rng::new(3);
        for header in [&b"QFI\xfb"[..], b"QFI\xfb\0\0\0\x03", b"QFI\xfb\0\0\0\x02"] {
            for _ in 0..20 {
                let mut garbage = header.to_vec();
                garbage.extend((0..rng.below(5000)).map(|_| rng.next() as u8));
                std::fs::write(&cut, &garbage).unwrap();
                assert!(open(&cut, false).is_err());
            }
        }
    }

    #[test]
    fn random_corruptions_give_errors_not_panics() {
        let dir = TempDir::new("qcow2-fuzz");
        let raw = dir.file("data.raw");
        let size = mib(4);
        let ranges = interesting(size, 4096);
        make_raw(&raw, size, &ranges);
        let img = dir.file("disk.qcow2");
        let raw_s = raw.to_str().unwrap();
        let img_s = img.to_str().unwrap();
        qemu_img(&[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            raw_s,
            img_s,
        ]);
        let good = std::fs::read(&img).unwrap();
        // Where the metadata is: header, L1 table, the first L2 table, the refcount table.
        let l1 = be64(&good, 40) as usize;
        let l2 = (be64(&good, l1) & OFFSET_MASK) as usize;
        let reftable = be64(&good, 48) as usize;
        let regions = [(0, 112), (l1, 8), (l2, 4096), (reftable, 64)];
        let bad = dir.file("bad.qcow2");
        let mut rng = Rng::new(11);
        let mut opened = 0;
        for _ in 0..300 {
            let mut bytes = good.clone();
            for _ in 0..1 + rng.below(4) {
                let (start, len) = regions[rng.below(regions.len() as u64) as usize];
                let at = start + rng.below(len as u64) as usize;
                if rng.below(2) == 0 {
                    bytes[at] ^= 1 << rng.below(8);
                } else {
                    bytes[at] = rng.next() as u8;
                }
            }
            std::fs::write(&bad, &bytes).unwrap();
            for writable in [false, true] {
                let Ok(mut q) = open(&bad, writable) else {
                    continue;
                };
                opened += 1;
                let readable = q.size().min(size);
                let mut buf = vec![0u8; 65536];
                for at in (0..readable).step_by(buf.len()) {
                    let n = (readable - at).min(buf.len() as u64) as usize;
                    let _ = q.read_at(&mut buf[..n], at);
                }
                for _ in 0..10 {
                    let len = 1 + rng.below(10_000) as usize;
                    let at = rng.below(q.size().saturating_sub(len as u64));
                    let data = pattern(1, at, len);
                    if writable {
                        let _ = q.write_at(&data, at);
                    }
                    let _ = q.read_at(&mut buf[..len.min(65536)], at);
                }
            }
        }
        assert!(opened > 50, "only {opened} corrupted images opened");
    }
}
