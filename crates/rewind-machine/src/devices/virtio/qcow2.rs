//! qcow2 images, read and written through the `imago` crate (a Rust library for VM disk images
//! by QEMU's block-layer maintainer), built synchronous (its `sync` feature: no async runtime).
//!
//! imago reads and writes qcow2 versions 2 and 3 in place, with compressed clusters, internal
//! snapshots (written with copy-on-write, as in QEMU) and any refcount width. What is refused
//! here before imago sees the image, with the `qemu-img` command that makes a usable one:
//! backing files and external data files (a recording hashes only the image file, so data kept
//! elsewhere could change unnoticed) and encryption (imago does not decrypt). What imago itself
//! refuses (images not closed cleanly or marked corrupt, extended L2 entries, compression types
//! other than zlib, unknown incompatible features, bad metadata) is refused with its message.
//!
//! Nothing but the image file is ever opened: it is handed to imago already open, and every
//! implicit reference goes through imago's [`DenyImplicitOpenGate`].
//!
//! imago keeps L2 tables and refcount blocks in a write-back cache, as QEMU does: they reach the
//! file at [`Qcow2::flush`] (the guest's flush) and when the last clone is dropped.
//!
//! imago (0.2.6) trusts the refcounts when it allocates clusters, and has no overlap checks:
//! writing to a corrupt or truncated image could damage it further, or abort the process (the
//! `writing_to_...` tests at the end). So before a writable open, [`check_metadata`] reads the
//! metadata and refuses the image, with the `qemu-img check -r all` that repairs it, unless the
//! refcounts count every cluster the image uses (as `qemu-img check` counts them). Reading any
//! image is safe (errors, never panics) and needs no such check.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, StorageOpenOptions};
use thiserror::Error;

/// The first four bytes of a qcow2 (and of a qcow version 1) image.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// Why an image cannot be used; [`Qcow2Error::hint`] says what to do about it.
#[derive(Debug, Error)]
pub enum Qcow2Error {
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    #[error("qcow2 with a backing file ({0}) is not supported")]
    BackingFile(String),
    #[error("qcow2 with an external data file is not supported")]
    ExternalDataFile,
    #[error("encrypted qcow2 is not supported")]
    Encrypted,
    /// imago refused the image (its message); `repair` if the header says it needs repair.
    #[error("{error}")]
    Imago { error: io::Error, repair: bool },
    /// What [`check_metadata`] found wrong, refusing a writable open.
    #[error("its qcow2 metadata is inconsistent ({0})")]
    Inconsistent(String),
}

impl Qcow2Error {
    /// What to do next about the image at `path` (a shell word).
    pub fn hint(&self, path: &str) -> Option<String> {
        let convert = format!("convert it with `qemu-img convert -O qcow2 {path} out.qcow2`");
        Some(match self {
            Qcow2Error::Io(_) => return None,
            Qcow2Error::BackingFile(_) | Qcow2Error::ExternalDataFile => convert,
            Qcow2Error::Encrypted => format!(
                "convert it to an unencrypted image with `qemu-img convert -O qcow2 {path} \
                 out.qcow2` (qemu-img(1) says how to give the key)"
            ),
            Qcow2Error::Imago { repair: true, .. } => {
                format!("run `qemu-img check -r all {path}`")
            }
            Qcow2Error::Inconsistent(_) => format!(
                "repair it with `qemu-img check -r all {path}`, or use it read-only (readonly=on)"
            ),
            Qcow2Error::Imago { repair: false, .. } => format!(
                "`qemu-img check {path}` says more, and `qemu-img convert -O qcow2 {path} \
                 out.qcow2` may make a copy that can be used"
            ),
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

/// An open qcow2 image. Clones share it (imago locks inside).
#[derive(Clone)]
pub struct Qcow2 {
    access: Arc<FormatAccess<imago::file::File>>,
    writable: bool,
}

impl fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qcow2")
            .field("size", &self.size())
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

/// Reads up to `buf.len()` bytes at `offset`; what lies past the end of the file reads as zeros.
fn read_padded(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

impl Qcow2 {
    /// Opens the qcow2 image in `file` (the file at `path`, opened for writing if `writable`).
    /// Backing files, external data files and encryption are refused from the header before
    /// imago opens the image, so a refused image is never written; a header that is not even
    /// plausible (version, cluster size) is left to imago to refuse. For writing, imago first
    /// opens it read-only (its refusals come first), then [`check_metadata`] must pass.
    pub fn open(file: &File, path: &Path, writable: bool) -> Result<Qcow2, Qcow2Error> {
        let mut h = [0u8; 104];
        read_padded(file, &mut h, 0)?;
        let version = be32(&h, 4);
        let incompatible = if version == 3 { be64(&h, 72) } else { 0 };
        if matches!(version, 2 | 3) && (9..=21).contains(&be32(&h, 20)) {
            let backing_offset = be64(&h, 8);
            if backing_offset != 0 {
                let mut name = vec![0u8; be32(&h, 16).min(1023) as usize];
                let name = match file.read_exact_at(&mut name, backing_offset) {
                    Ok(()) => format!("{:?}", String::from_utf8_lossy(&name)),
                    Err(_) => "unreadable".to_string(),
                };
                return Err(Qcow2Error::BackingFile(name));
            }
            if be32(&h, 32) != 0 {
                return Err(Qcow2Error::Encrypted);
            }
            if incompatible & INCOMPAT_DATA_FILE != 0 {
                return Err(Qcow2Error::ExternalDataFile);
            }
        }
        let refused = |error| Qcow2Error::Imago {
            error,
            repair: incompatible & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT) != 0,
        };
        // The same open file (so the same one that is hashed), buffered: imago then needs no
        // alignment of requests or buffers (`req_align` and `mem_align` are 1).
        let imago_open = |writable| {
            let options = StorageOpenOptions::new().write(writable).filename(path);
            let storage =
                imago::file::File::from_open_file(file.try_clone()?, options).map_err(refused)?;
            imago::qcow2::Qcow2::<imago::file::File>::builder(storage)
                .write(writable)
                .open(DenyImplicitOpenGate::default())
                .map_err(refused)
        };
        if writable {
            // What imago refuses is refused with its message (a read-only open writes nothing);
            // then the refcounts imago will trust are checked before it may write.
            drop(imago_open(false)?);
            check_metadata(file)?;
        }
        let image = imago_open(writable)?;
        Ok(Qcow2 {
            access: Arc::new(FormatAccess::new(image)),
            writable,
        })
    }

    /// The disk size the guest sees, in bytes.
    pub fn size(&self) -> u64 {
        self.access.size()
    }

    /// Reads `buf.len()` bytes of the disk at `offset`; a read past the end is an error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.size() => self.access.read(buf, offset),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "qcow2: cannot read {} bytes at {offset} of a {}-byte disk",
                    buf.len(),
                    self.size()
                ),
            )),
        }
    }

    /// Writes `data` to the disk at `offset` (an error if opened read-only or past the end).
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.access.write(data, offset)
    }

    /// Writes imago's cached metadata to the file and makes the file durable.
    pub fn flush(&self) -> io::Result<()> {
        self.access.flush()?;
        self.access.sync()
    }
}

/// The host offset in an L1 entry (of an L2 table) or in a standard L2 entry (of a data cluster).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// In L1 and L2 entries: the cluster's refcount is 1, so it is written in place.
const COPIED: u64 = 1 << 63;
/// In L2 entries: the cluster is compressed (the rest is a compressed cluster descriptor).
const COMPRESSED: u64 = 1 << 62;
/// QEMU's limit on the number of snapshots.
const MAX_SNAPSHOTS: u32 = 65536;
/// imago's limit on the size of L1 and refcount tables (QEMU's on L1 tables), in bytes.
const MAX_TABLE: u64 = 32 << 20;

/// What a cluster holds, for messages.
#[derive(Clone, Copy, Debug)]
enum Use {
    Header,
    RefTable,
    /// The refcount block at this index of the refcount table.
    RefBlock(u64),
    SnapshotTable,
    /// The L1 table: the image's, or snapshot n's (from 1, in the order of the table).
    L1(Option<u32>),
    /// An L2 table, found first for this guest offset.
    L2 {
        guest: u64,
        snapshot: Option<u32>,
    },
    /// A data cluster, found first for this guest offset.
    Data {
        guest: u64,
        snapshot: Option<u32>,
        compressed: bool,
    },
}

impl fmt::Display for Use {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let of = |snapshot: Option<u32>| match snapshot {
            Some(n) => format!(" in snapshot {n}"),
            None => String::new(),
        };
        match *self {
            Use::Header => write!(f, "the header"),
            Use::RefTable => write!(f, "the refcount table"),
            Use::RefBlock(i) => write!(f, "refcount block {i}"),
            Use::SnapshotTable => write!(f, "the snapshot table"),
            Use::L1(None) => write!(f, "the L1 table"),
            Use::L1(Some(n)) => write!(f, "the L1 table of snapshot {n}"),
            Use::L2 { guest, snapshot } => {
                write!(
                    f,
                    "the L2 table for guest offset {guest:#x}{}",
                    of(snapshot)
                )
            }
            Use::Data {
                guest,
                snapshot,
                compressed,
            } => {
                let compressed = if compressed { "compressed " } else { "" };
                write!(
                    f,
                    "{compressed}data of guest offset {guest:#x}{}",
                    of(snapshot)
                )
            }
        }
    }
}

fn inconsistent(what: String) -> Qcow2Error {
    Qcow2Error::Inconsistent(what)
}

/// A refcount block, and how many uses of each of its clusters in the file were found so far
/// (saturating: a lower bound past 254).
struct RefBlock {
    raw: Vec<u8>,
    uses: Vec<u8>,
}

/// An L2 table: how many L1 entries reference it, whether one in the image's L1 table does
/// (it is then written through), and whether one of those says it is not shared (COPIED).
struct L2Table {
    refs: u32,
    active: bool,
    copied: bool,
    first: Use,
}

/// The state of [`check_metadata`].
struct Check<'a> {
    file: &'a File,
    /// The file's length.
    len: u64,
    cluster_bits: u32,
    refcount_order: u32,
    reftable: Vec<u64>,
    /// The refcount blocks read so far, by their index in the refcount table.
    blocks: HashMap<u64, RefBlock>,
    /// The clusters holding metadata, and which.
    metadata: HashMap<u64, Use>,
    /// The L2 tables referenced from the L1 tables, by host offset.
    l2_tables: HashMap<u64, L2Table>,
}

/// Checks, before imago may write to the image in `file`, that the refcounts it will trust
/// when it allocates clusters count every cluster the image uses: the header, the refcount
/// table and blocks, the L1 tables (the image's and its snapshots'), the snapshot table, the L2
/// tables and the data clusters they reference (all of them in the file, every table whole).
/// Each such cluster must have a refcount block, a refcount at least the number of its uses
/// (as `qemu-img check` counts them), exactly 1 if a table entry says it is not shared
/// (COPIED), and no two kinds of metadata (or metadata and data) may share a cluster. Without
/// this, imago 0.2.6 can overwrite the header or snapshots, or overflow its stack (the process
/// aborts) when it allocates in such an image (the tests at the end).
///
/// Reads each table once; what it allocates is bounded by what the file holds.
fn check_metadata(file: &File) -> Result<(), Qcow2Error> {
    let mut h = [0u8; 104];
    read_padded(file, &mut h, 0)?;
    let version = be32(&h, 4);
    let cluster_bits = be32(&h, 20);
    let refcount_order = if version == 3 { be32(&h, 96) } else { 4 };
    // imago refused anything else already.
    if !matches!(version, 2 | 3) || !(9..=21).contains(&cluster_bits) || refcount_order > 6 {
        return Err(inconsistent(format!(
            "version {version}, cluster bits {cluster_bits}, refcount order {refcount_order}"
        )));
    }
    let mut check = Check {
        file,
        len: file.metadata()?.len(),
        cluster_bits,
        refcount_order,
        reftable: Vec::new(),
        blocks: HashMap::new(),
        metadata: HashMap::new(),
        l2_tables: HashMap::new(),
    };
    let cs = check.cluster_size();

    // The refcount table, and that every block it references is whole in the file.
    let (rt_offset, rt_clusters) = (be64(&h, 48), u64::from(be32(&h, 56)));
    check.aligned(rt_offset, Use::RefTable)?;
    let rt_size = rt_clusters << cluster_bits;
    check.not_too_large(rt_size, Use::RefTable)?;
    check.within(rt_offset, rt_size, Use::RefTable)?;
    let mut raw = vec![0u8; rt_size as usize];
    file.read_exact_at(&mut raw, rt_offset)?;
    check.reftable = raw.chunks_exact(8).map(|e| be64(e, 0)).collect();
    drop(raw);
    for (i, &entry) in check.reftable.iter().enumerate() {
        if entry & 0x1ff != 0 {
            return Err(inconsistent(format!(
                "refcount table entry {i} ({entry:#x}) has reserved bits set"
            )));
        }
        if entry != 0 {
            check.aligned(entry, Use::RefBlock(i as u64))?;
            check.within(entry, cs, Use::RefBlock(i as u64))?;
        }
    }

    check.metadata(0, 72, Use::Header, 1, false)?;
    check.metadata(rt_offset, rt_size, Use::RefTable, 1, false)?;
    for i in 0..check.reftable.len() {
        let entry = check.reftable[i];
        if entry != 0 {
            check.metadata(entry, cs, Use::RefBlock(i as u64), 1, false)?;
        }
    }

    // The image's L1 table must map the whole disk (QEMU does not open the image otherwise).
    let (size, l1_entries) = (be64(&h, 24), be32(&h, 36));
    if u64::from(l1_entries) < size.div_ceil(1 << (2 * cluster_bits - 3)) {
        return Err(inconsistent(format!(
            "the L1 table ({l1_entries} entries) is too small for the disk size ({size} bytes)"
        )));
    }
    check.l1(be64(&h, 40), l1_entries, None)?;

    let snapshots = be32(&h, 60);
    if snapshots > MAX_SNAPSHOTS {
        return Err(inconsistent(format!(
            "{snapshots} snapshots, more than the {MAX_SNAPSHOTS} QEMU allows"
        )));
    }
    if snapshots > 0 {
        let table = be64(&h, 64);
        check.aligned(table, Use::SnapshotTable)?;
        let mut l1s = Vec::new();
        let mut at = table;
        for _ in 0..snapshots {
            // Each entry starts 8-byte aligned: 40 bytes, extra data, ID and name.
            let mut e = [0u8; 40];
            at = at.checked_next_multiple_of(8).unwrap_or(u64::MAX);
            check.within(at, 40, Use::SnapshotTable)?;
            file.read_exact_at(&mut e, at)?;
            let (id, name) = (be16(&e, 12), be16(&e, 14));
            at = at.saturating_add(40 + u64::from(be32(&e, 36)) + u64::from(id) + u64::from(name));
            check.within(table, at - table, Use::SnapshotTable)?;
            l1s.push((be64(&e, 0), be32(&e, 8)));
        }
        check.metadata(table, at - table, Use::SnapshotTable, 1, false)?;
        for (n, (offset, entries)) in (1..).zip(l1s) {
            check.l1(offset, entries, Some(n))?;
        }
    }

    // The L2 tables, each read once (in file order), and the data clusters they reference,
    // counted once per L1 entry referencing the table.
    let mut tables: Vec<(u64, L2Table)> =
        std::mem::take(&mut check.l2_tables).into_iter().collect();
    tables.sort_unstable_by_key(|&(offset, _)| offset);
    for (offset, t) in &tables {
        check.metadata(*offset, cs, t.first, t.refs, t.copied)?;
    }
    let mut raw = vec![0u8; cs as usize];
    for (offset, t) in &tables {
        file.read_exact_at(&mut raw, *offset)?;
        let (guest, snapshot) = match t.first {
            Use::L2 { guest, snapshot } => (guest, snapshot),
            _ => (0, None),
        };
        for (i, entry) in raw.chunks_exact(8).enumerate() {
            let entry = be64(entry, 0);
            let what = |compressed| Use::Data {
                guest: guest.saturating_add((i as u64) << cluster_bits),
                snapshot,
                compressed,
            };
            if entry & COMPRESSED != 0 {
                // The descriptor: host offset, then the number of 512-byte sectors after the
                // one it starts in; each cluster they touch counts one use. (An offset past
                // 2^56, where imago ignores the high bits and QEMU does not, is past the end.)
                let offset_bits = 62 - (cluster_bits - 8);
                let descriptor = entry & ((1 << 62) - 1);
                let host = descriptor & ((1 << offset_bits) - 1);
                let sectors = descriptor >> offset_bits;
                let end = host + (sectors + 1) * 512 - (host & 511);
                for cluster in host >> cluster_bits..=(end - 1) >> cluster_bits {
                    check.data(cluster, t.refs, false, what(true))?;
                }
            } else if entry & OFFSET_MASK != 0 {
                let host = entry & OFFSET_MASK;
                check.aligned(host, what(false))?;
                let copied = t.active && entry & COPIED != 0;
                check.data(host >> cluster_bits, t.refs, copied, what(false))?;
            }
        }
    }
    Ok(())
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl Check<'_> {
    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn aligned(&self, offset: u64, what: Use) -> Result<(), Qcow2Error> {
        if offset & (self.cluster_size() - 1) == 0 {
            Ok(())
        } else {
            Err(inconsistent(format!(
                "{what} is at {offset:#x}, not at the start of a cluster"
            )))
        }
    }

    fn not_too_large(&self, size: u64, what: Use) -> Result<(), Qcow2Error> {
        if size <= MAX_TABLE {
            Ok(())
        } else {
            Err(inconsistent(format!(
                "{what} ({size} bytes) is larger than the {MAX_TABLE} bytes allowed"
            )))
        }
    }

    /// Whether the `size` bytes at `offset` are in the file.
    fn within(&self, offset: u64, size: u64, what: Use) -> Result<(), Qcow2Error> {
        match offset.checked_add(size) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(inconsistent(format!(
                "{what} ({size} bytes at {offset:#x}) ends past the end of the file ({} bytes)",
                self.len
            ))),
        }
    }

    /// Reads the L1 table of `entries` entries at `offset` (the image's, or that of snapshot
    /// `snapshot`), and notes the L2 tables it references.
    fn l1(&mut self, offset: u64, entries: u32, snapshot: Option<u32>) -> Result<(), Qcow2Error> {
        if entries == 0 {
            return Ok(());
        }
        let what = Use::L1(snapshot);
        let size = u64::from(entries) * 8;
        self.not_too_large(size, what)?;
        self.aligned(offset, what)?;
        self.metadata(offset, size, what, 1, false)?;
        let mut raw = vec![0u8; size as usize];
        self.file.read_exact_at(&mut raw, offset)?;
        // Each L1 entry maps cluster_size / 8 clusters.
        let span_bits = 2 * self.cluster_bits - 3;
        for (i, entry) in raw.chunks_exact(8).enumerate() {
            let entry = be64(entry, 0);
            let l2 = entry & OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            let first = Use::L2 {
                guest: (i as u64).checked_shl(span_bits).unwrap_or(u64::MAX),
                snapshot,
            };
            self.aligned(l2, first)?;
            let t = self.l2_tables.entry(l2).or_insert(L2Table {
                refs: 0,
                active: false,
                copied: false,
                first,
            });
            t.refs = t.refs.saturating_add(1);
            t.active |= snapshot.is_none();
            t.copied |= snapshot.is_none() && entry & COPIED != 0;
        }
        Ok(())
    }

    /// Notes that the `size` bytes at `offset` hold metadata (`refs` times, as for an L2 table
    /// several L1 entries reference): they must be in the file, in clusters no other metadata
    /// uses, with refcounts that count them.
    fn metadata(
        &mut self,
        offset: u64,
        size: u64,
        what: Use,
        refs: u32,
        copied: bool,
    ) -> Result<(), Qcow2Error> {
        self.within(offset, size, what)?;
        let cb = self.cluster_bits;
        for cluster in offset >> cb..=(offset + size.max(1) - 1) >> cb {
            if let Some(other) = self.metadata.insert(cluster, what) {
                return Err(inconsistent(format!(
                    "cluster {:#x} ({what}) is also {other}",
                    cluster << cb
                )));
            }
            self.count(cluster, refs, copied, what)?;
        }
        Ok(())
    }

    /// Notes that `cluster` holds data (`refs` times): it must not hold metadata, and its
    /// refcount must count it.
    fn data(&mut self, cluster: u64, refs: u32, copied: bool, what: Use) -> Result<(), Qcow2Error> {
        if let Some(other) = self.metadata.get(&cluster) {
            return Err(inconsistent(format!(
                "cluster {:#x} ({what}) is also {other}",
                cluster << self.cluster_bits
            )));
        }
        self.count(cluster, refs, copied, what)
    }

    /// Counts `refs` uses of `cluster`, which must start in the file and have a refcount block
    /// and a refcount at least its uses so far (exactly 1 if `copied`).
    fn count(
        &mut self,
        cluster: u64,
        refs: u32,
        copied: bool,
        what: Use,
    ) -> Result<(), Qcow2Error> {
        let cb = self.cluster_bits;
        let offset = cluster << cb;
        if offset >= self.len {
            return Err(inconsistent(format!(
                "cluster {offset:#x} ({what}) is past the end of the file ({} bytes)",
                self.len
            )));
        }
        let order = self.refcount_order;
        let rb_bits = cb + 3 - order;
        let index = cluster >> rb_bits;
        let first = index << rb_bits;
        let block = match self.blocks.entry(index) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let entry = usize::try_from(index)
                    .ok()
                    .and_then(|i| self.reftable.get(i))
                    .copied()
                    .unwrap_or(0);
                if entry == 0 {
                    return Err(inconsistent(format!(
                        "cluster {offset:#x} ({what}) has no refcount block"
                    )));
                }
                // Checked: whole in the file. Uses are kept for clusters in the file only.
                let mut raw = vec![0u8; 1 << cb];
                self.file.read_exact_at(&mut raw, entry)?;
                let in_file = self.len.div_ceil(1 << cb) - first;
                let uses = vec![0u8; in_file.min(1 << rb_bits) as usize];
                e.insert(RefBlock { raw, uses })
            }
        };
        let i = (cluster - first) as usize;
        let refcount = if order < 3 {
            let bit = i << order;
            let byte = block.raw.get(bit / 8).copied().unwrap_or(0);
            u64::from(byte >> (bit % 8)) & ((1 << (1 << order)) - 1)
        } else {
            let width = 1 << (order - 3);
            block
                .raw
                .get(i * width..(i + 1) * width)
                .unwrap_or(&[])
                .iter()
                .fold(0, |r, &b| r << 8 | u64::from(b))
        };
        let Some(uses) = block.uses.get_mut(i) else {
            return Err(inconsistent(format!(
                "cluster {offset:#x} ({what}) is miscounted"
            )));
        };
        let at_least = u32::from(*uses).saturating_add(refs);
        *uses = at_least.min(255) as u8;
        if refcount == 0 {
            Err(inconsistent(format!(
                "cluster {offset:#x} ({what}) has refcount 0"
            )))
        } else if u64::from(at_least) > refcount {
            Err(inconsistent(format!(
                "cluster {offset:#x} ({what}) has refcount {refcount} but {at_least} uses"
            )))
        } else if copied && refcount != 1 {
            Err(inconsistent(format!(
                "cluster {offset:#x} ({what}) is marked unshared (COPIED) but has refcount \
                 {refcount}"
            )))
        } else {
            Ok(())
        }
    }
}

/// Tests against Debian's `qemu-img` and `qemu-io` (qemu-utils): images made by QEMU read as
/// `qemu-img convert -O raw` does, and images written here pass `qemu-img check`.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::devices::virtio::blk::DiskImage;
    use std::path::PathBuf;
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
        let mut buf = vec![0u8; len];
        read_padded(&File::open(path).unwrap(), &mut buf, offset).unwrap();
        buf
    }

    /// Opens `path` as qcow2 (writing through if `writable`).
    fn open(path: &Path, writable: bool) -> Result<DiskImage, String> {
        let image = DiskImage::open(path, Some("qcow2"), !writable, writable)?;
        assert_eq!(image.format_name(), "qcow2");
        Ok(image)
    }

    fn open_err(path: &Path, writable: bool) -> String {
        match open(path, writable) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(e) => e,
        }
    }

    /// The cluster size in the header of the image at `path`.
    fn cluster_size(path: &Path) -> u64 {
        1 << be32(&read_file(path, 0, 24), 20)
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

    /// Reads of `image` equal reads of the raw file `raw` around `ranges`, at random places
    /// and across cluster boundaries: sector-aligned ones (what virtio-blk asks) and others.
    fn assert_reads_match(image: &DiskImage, raw: &Path, ranges: &[(u64, usize)], cs: u64) {
        let size = image.size;
        let mut rng = Rng::new(size ^ cs);
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
        for _ in 0..100 {
            let len = 512 * (1 + rng.below(3 * cs / 512)) as usize;
            reads.push((rng.below((size - len as u64) / 512) * 512, len));
        }
        for _ in 0..50 {
            let boundary = (1 + rng.below(size / cs - 1)) * cs;
            reads.push((boundary - 1, 2));
        }
        for (at, len) in reads {
            let mut got = vec![0xeeu8; len];
            image.read_at(&mut got, at).unwrap();
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

    /// Converts a raw disk with data around the interesting places to qcow2 with `args`, and
    /// reads it back.
    fn reads_match_qemu_img_convert(args: &[&str], size: u64, cs: u64, version: u32) {
        let dir = TempDir::new("qcow2-read");
        let (raw, img) = (dir.file("disk.raw"), dir.file("disk.qcow2"));
        let ranges = interesting(size, cs);
        make_raw(&raw, size, &ranges);
        let mut all = vec!["convert", "-f", "raw", "-O", "qcow2"];
        all.extend(args);
        all.extend([raw.to_str().unwrap(), img.to_str().unwrap()]);
        qemu_img(&all);
        let header = read_file(&img, 0, 24);
        assert_eq!((be32(&header, 4), cluster_size(&img)), (version, cs));
        let image = open(&img, false).unwrap();
        assert_eq!(image.size, size);
        assert_reads_match(&image, &raw, &ranges, cs);
        // Past the end is an error, not a panic.
        assert!(image.read_at(&mut [0u8; 2], size - 1).is_err());
        assert!(image.read_at(&mut [0u8; 1], u64::MAX).is_err());
        assert!(image.write_at(&[0u8; 1], 0).is_err(), "opened read-only");
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
    fn compressed_images_read_like_qemu_img_convert() {
        reads_match_qemu_img_convert(&["-c"], mib(64), 65536, 3);
        reads_match_qemu_img_convert(&["-c", "-o", "cluster_size=4096"], mib(16), 4096, 3);
    }

    #[test]
    fn an_empty_image_reads_as_zeros() {
        let dir = TempDir::new("qcow2-empty");
        let img = dir.file("empty.qcow2");
        qemu_img(&["create", "-f", "qcow2", img.to_str().unwrap(), "64M"]);
        let image = open(&img, false).unwrap();
        let mut buf = vec![0xffu8; mib(1) as usize];
        for at in (0..mib(64)).step_by(mib(1) as usize) {
            image.read_at(&mut buf, at).unwrap();
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

    /// Writes `ops` (offset, length) through a `DiskImage` writing through to `img`, then
    /// checks it with `qemu-img check` and compares `qemu-img convert -O raw` of it (and our
    /// reads) with what was written.
    fn check_writes(dir: &TempDir, img: &Path, ops: &[(u64, usize)]) {
        let (before, after) = (dir.file("before.raw"), dir.file("after.raw"));
        let img_s = img.to_str().unwrap();
        qemu_img(&["convert", "-O", "raw", img_s, before.to_str().unwrap()]);
        let mut model = Model {
            before,
            writes: Vec::new(),
        };
        let image = open(img, true).unwrap();
        let (size, cs) = (image.size, cluster_size(img));
        for (i, &(at, len)) in ops.iter().enumerate() {
            let data = pattern(100 + i as u64, at, len);
            image.write_at(&data, at).unwrap();
            model.writes.push((at, data));
        }
        image.flush().unwrap();
        drop(image);
        assert_clean(img);
        qemu_img(&["convert", "-O", "raw", img_s, after.to_str().unwrap()]);
        let image = open(img, false).unwrap();
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
        for (at, len) in reads {
            let expected = model.expected(at, len);
            assert!(
                read_file(&after, at, len) == expected,
                "qemu-img sees other data in {len} bytes at {at:#x}"
            );
            let mut got = vec![0u8; len];
            image.read_at(&mut got, at).unwrap();
            assert!(
                got == expected,
                "we read other data in {len} bytes at {at:#x}"
            );
        }
    }

    /// Writes: sector-aligned (as virtio-blk issues them) and not, partial clusters, across
    /// clusters and L2 tables, over earlier writes, the end.
    fn write_ops(size: u64, cs: u64) -> Vec<(u64, usize)> {
        let l2_span = cs * (cs / 8);
        let mut ops = vec![
            (1024, 3072),
            (cs - 512, 1024),
            (1000, 3000),
            (cs - 700, 1400),
            (3 * cs - 10, 2 * cs as usize + 20),
            (1536, 512),
            (1500, 100),
            (size - 512, 512),
            (size / 2 + 17, 1),
        ];
        if l2_span < size {
            ops.push((l2_span - 5120, 10_240));
        }
        ops
    }

    fn writes_pass_qemu_img_check(opts: &str, size: u64, cs: u64) {
        let dir = TempDir::new("qcow2-write");
        let img = dir.file("disk.qcow2");
        let size_s = size.to_string();
        let img_s = img.to_str().unwrap();
        qemu_img(&["create", "-f", "qcow2", "-o", opts, img_s, &size_s]);
        check_writes(&dir, &img, &write_ops(size, cs));
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
    fn writes_with_other_refcount_widths_pass_qemu_img_check() {
        writes_pass_qemu_img_check("refcount_bits=1,cluster_size=4096", mib(64), 4096);
        writes_pass_qemu_img_check("refcount_bits=64", mib(64), 65536);
    }

    #[test]
    fn writes_needing_new_refcount_blocks_and_tables_pass_qemu_img_check() {
        // 4 KiB clusters: a refcount block counts 2048 clusters (8 MiB), so 12 MiB of new data
        // needs a second block.
        let dir = TempDir::new("qcow2-refblock");
        let img = dir.file("disk.qcow2");
        let img_s = img.to_str().unwrap();
        let opts = "cluster_size=4096";
        qemu_img(&["create", "-f", "qcow2", "-o", opts, img_s, "64M"]);
        let mut ops = write_ops(mib(64), 4096);
        ops.push((mib(20) + 5, mib(12) as usize));
        check_writes(&dir, &img, &ops);

        // 512-byte clusters: the one-cluster refcount table counts 8 MiB of file, so 16 MiB of
        // data needs a larger table.
        let img = dir.file("small.qcow2");
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
        check_writes(&dir, &img, &ops);

        // With the file ending just before the last cluster of the second refcount block's
        // range, the first allocation needs that block, which lands in the third range.
        let img = dir.file("far.qcow2");
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
        check_writes(&dir, &img, &[(0, 1000), (mib(8), 3000)]);
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
        let image = open(&img, false).unwrap();
        let mut buf = vec![0u8; 3 * 65536];
        image.read_at(&mut buf, 0).unwrap();
        assert!(buf[..65536].iter().all(|&b| b == 0xaa));
        assert!(buf[65536..131072].iter().all(|&b| b == 0));
        assert!(buf[131072..].iter().all(|&b| b == 0xaa));
        drop(image);
        let ops = [
            (65536 + 100, 200),
            (524288 + 65000, 1000),
            (200_000, 100_000),
        ];
        check_writes(&dir, &img, &ops);

        // Every cluster allocated up front: written in place.
        let img = dir.file("prealloc.qcow2");
        let img_s = img.to_str().unwrap();
        let opts = "preallocation=metadata";
        qemu_img(&["create", "-f", "qcow2", "-o", opts, img_s, "16M"]);
        let len = std::fs::metadata(&img).unwrap().len();
        check_writes(&dir, &img, &write_ops(mib(16), 65536));
        assert_eq!(std::fs::metadata(&img).unwrap().len(), len);

        // Compressed clusters, rewritten.
        let raw = dir.file("data.raw");
        make_raw(&raw, mib(4), &[(0, mib(2) as usize)]);
        let img = dir.file("compressed.qcow2");
        let img_s = img.to_str().unwrap();
        qemu_img(&["convert", "-c", "-O", "qcow2", raw.to_str().unwrap(), img_s]);
        check_writes(&dir, &img, &write_ops(mib(4), 65536));
    }

    #[test]
    fn writes_to_an_image_with_a_snapshot_keep_the_snapshot() {
        let dir = TempDir::new("qcow2-snapshot");
        let img = dir.file("snap.qcow2");
        let img_s = img.to_str().unwrap();
        qemu_img(&["create", "-f", "qcow2", img_s, "16M"]);
        qemu_io(&img, &["write -P 0xaa 0 1M", "write -P 0xbb 8M 64k"]);
        let (then, now) = (dir.file("then.raw"), dir.file("now.raw"));
        qemu_img(&["convert", "-O", "raw", img_s, then.to_str().unwrap()]);
        qemu_img(&["snapshot", "-c", "one", img_s]);

        // Shared clusters are copied before they are written.
        check_writes(&dir, &img, &write_ops(mib(16), 65536));
        let args = ["convert", "-l", "snapshot.name=one", "-O", "raw", img_s];
        qemu_img(&[&args[..], &[now.to_str().unwrap()]].concat());
        assert!(std::fs::read(&now).unwrap() == std::fs::read(&then).unwrap());
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
        let convert = |p: &str| format!("`qemu-img convert -O qcow2 {p} out.qcow2`");
        qemu_img(&["create", "-f", "qcow2", base_s, "16M"]);
        qemu_img(&["create", "-f", "qcow2", "-b", base_s, "-F", "qcow2", top_s]);
        let before = std::fs::read(&top).unwrap();
        for writable in [false, true] {
            let e = open_err(&top, writable);
            assert!(
                e.contains("backing file") && e.contains("base.qcow2"),
                "{e}"
            );
            assert!(e.ends_with(&convert(top_s)), "{e}");
        }
        assert!(
            std::fs::read(&top).unwrap() == before,
            "refused, yet written"
        );

        let data = dir.file("data.qcow2");
        let data_s = data.to_str().unwrap();
        let opts = format!("data_file={}", dir.file("data.raw").display());
        qemu_img(&["create", "-f", "qcow2", "-o", &opts, data_s, "16M"]);
        let e = open_err(&data, true);
        assert!(
            e.contains("external data file") && e.ends_with(&convert(data_s)),
            "{e}"
        );

        let aes = dir.file("aes.qcow2");
        let aes_s = aes.to_str().unwrap();
        let (secret, opts) = (
            "secret,id=s,data=x",
            "encrypt.format=aes,encrypt.key-secret=s",
        );
        qemu_img(&[
            "create", "-f", "qcow2", "--object", secret, "-o", opts, aes_s, "16M",
        ]);
        let e = open_err(&aes, false);
        assert!(
            e.contains("encrypted") && e.contains(&convert(aes_s)),
            "{e}"
        );

        // What imago refuses: its message, and a qemu-img command.
        let img = dir.file("img.qcow2");
        let img_s = img.to_str().unwrap();
        for opts in ["extended_l2=on", "compression_type=zstd"] {
            qemu_img(&["create", "-f", "qcow2", "-o", opts, img_s, "16M"]);
            let e = open_err(&img, false);
            assert!(e.starts_with(&format!("disk image {img_s}: ")), "{e}");
            assert!(e.contains(&convert(img_s)), "{e}");
        }
        // Header bits: dirty and corrupt (offset 72), an unknown one, the version (4).
        let repair = format!("run `qemu-img check -r all {img_s}`");
        for (at, bits, hint) in [
            (72, 1, &repair),
            (72, 2, &repair),
            (72, 1 << 40, &convert(img_s)),
            (0, 4, &convert(img_s)),
        ] {
            qemu_img(&["create", "-f", "qcow2", img_s, "16M"]);
            patch_or(&img, at, bits);
            let e = open_err(&img, true);
            assert!(e.starts_with(&format!("disk image {img_s}: ")), "{e}");
            assert!(e.contains(hint.as_str()), "{e}");
        }
    }

    /// Opens `path` read-only and writable, and reads all of it (the first 8 MiB, and at random
    /// places): errors are fine, panics are not. Returns how many times it opened.
    fn use_all_of(path: &Path, rng: &mut Rng) -> u32 {
        let mut opened = 0;
        for writable in [false, true] {
            let Ok(image) = open(path, writable) else {
                continue;
            };
            opened += 1;
            let readable = image.size.min(mib(8));
            let mut buf = vec![0u8; 65536];
            for at in (0..readable).step_by(buf.len()) {
                let n = (readable - at).min(buf.len() as u64) as usize;
                let _ = image.read_at(&mut buf[..n], at);
            }
            for _ in 0..10 {
                let len = 512 * (1 + rng.below(20)) as usize;
                let at = rng.below(image.size.saturating_sub(len as u64) / 512) * 512;
                let _ = image.read_at(&mut buf[..len], at);
            }
            let _ = image.flush();
        }
        opened
    }

    #[test]
    fn truncated_and_garbage_images_give_errors_not_panics() {
        let dir = TempDir::new("qcow2-trunc");
        let raw = dir.file("data.raw");
        let ranges = interesting(mib(8), 4096);
        make_raw(&raw, mib(8), &ranges);
        let img = dir.file("disk.qcow2");
        let opts = "cluster_size=4096";
        qemu_img(&[
            "convert",
            "-O",
            "qcow2",
            "-o",
            opts,
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&img).unwrap();
        let cut = dir.file("cut.qcow2");
        let mut lens: Vec<usize> = vec![0, 3, 4, 50, 72, 100, 103, 104];
        lens.extend((4096..bytes.len()).step_by(4096 * 7));
        let mut rng = Rng::new(5);
        let mut opened = 0;
        for len in lens {
            std::fs::write(&cut, &bytes[..len]).unwrap();
            let file = File::open(&cut).unwrap();
            assert_eq!(is_qcow2(&file).unwrap(), len >= 4);
            if len < 4 {
                assert!(open(&cut, false)
                    .unwrap_err()
                    .contains("is not a qcow2 image"));
                continue;
            }
            opened += use_all_of(&cut, &mut rng);
        }
        assert!(
            opened > 0,
            "no truncated image opened (past the end reads as zeros)"
        );

        let mut rng = Rng::new(3);
        for header in [&b"QFI\xfb"[..], b"QFI\xfb\0\0\0\x03", b"QFI\xfb\0\0\0\x02"] {
            for _ in 0..20 {
                let mut garbage = header.to_vec();
                garbage.extend((0..rng.below(5000)).map(|_| rng.next() as u8));
                std::fs::write(&cut, &garbage).unwrap();
                assert_eq!(use_all_of(&cut, &mut rng), 0, "garbage opened");
            }
        }
    }

    /// Corrupts metadata at random: reads give errors, not panics, and so do writes where the
    /// image still opens for writing (the first 100 such images, each written in a child
    /// process so that an abort shows), which keep the header.
    #[test]
    fn random_corruptions_give_errors_not_panics() {
        let dir = TempDir::new("qcow2-fuzz");
        let raw = dir.file("data.raw");
        let size = mib(4);
        let ranges = interesting(size, 4096);
        make_raw(&raw, size, &ranges);
        let img = dir.file("disk.qcow2");
        let opts = "cluster_size=4096";
        qemu_img(&[
            "convert",
            "-O",
            "qcow2",
            "-o",
            opts,
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
        ]);
        let good = std::fs::read(&img).unwrap();
        // Where the metadata is: header, L1 table, the first L2 table, the refcount table and
        // its first block.
        let l1 = be64(&good, 40) as usize;
        let l2 = (be64(&good, l1) & 0x00ff_ffff_ffff_fe00) as usize;
        let reftable = be64(&good, 48) as usize;
        let refblock = be64(&good, reftable) as usize;
        let regions = [
            (0, 112),
            (l1, 8),
            (l2, 4096),
            (reftable, 64),
            (refblock, 4096),
        ];
        let bad = dir.file("bad.qcow2");
        let mut rng = Rng::new(11);
        let (mut opened, mut written) = (0, 0);
        for case in 0..1000 {
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
            opened += use_all_of(&bad, &mut rng);
            // Writes, where the image opens for writing, in a child process: an abort (as
            // imago's stack overflow was) must not take this process with it.
            if written < 100 && open(&bad, true).is_ok() {
                written += 1;
                let out = Command::new(std::env::current_exe().unwrap())
                    .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
                    .env(CHILD_ENV, &bad)
                    .output()
                    .unwrap();
                let ran = String::from_utf8_lossy(&out.stdout).contains("1 passed");
                let header_kept = read_file(&bad, 0, 4) == MAGIC;
                if !(out.status.success() && ran && header_kept) {
                    let keep =
                        std::env::temp_dir().join(format!("rewind-qcow2-corruption-{case}.qcow2"));
                    std::fs::write(&keep, &bytes).unwrap();
                    let status = match std::os::unix::process::ExitStatusExt::signal(&out.status) {
                        Some(signal) => format!("killed by signal {signal}"),
                        None => out.status.to_string(),
                    };
                    panic!(
                        "writing to corruption {case} (kept as {}): {status}, ran: {ran}, header \
                         kept: {header_kept}; {}",
                        keep.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        assert!(opened > 100, "only {opened} corrupted images opened");
        assert!(
            written >= 50,
            "only {written} corrupted images opened for writing"
        );
    }

    /// The environment variable that names the image [`CHILD_TEST`] writes to.
    const CHILD_ENV: &str = "REWIND_QCOW2_WRITE_TO";
    /// The test run in a child process by `random_corruptions_give_errors_not_panics`.
    const CHILD_TEST: &str =
        "devices::virtio::qcow2::tests::writes_to_the_image_in_the_environment_do_not_panic";

    /// Without [`CHILD_ENV`], nothing; with it, opens that image writable and writes to it:
    /// sectors at the start, across clusters, in the middle, at the end; errors are fine.
    #[test]
    fn writes_to_the_image_in_the_environment_do_not_panic() {
        let Some(path) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let Ok(image) = open(Path::new(&path), true) else {
            return;
        };
        let size = image.size;
        let mut rng = Rng::new(size);
        let mut ops = vec![(0, 512), (4096 - 512, 1024), (size / 2, 512)];
        ops.push((size.saturating_sub(512), 512));
        for _ in 0..4 {
            ops.push((
                rng.below(size / 512) * 512,
                512 * (1 + rng.below(16) as usize),
            ));
        }
        for (i, (at, len)) in ops.into_iter().enumerate() {
            let _ = image.write_at(&pattern(i as u64, at, len), at);
        }
        let _ = image.flush();
    }

    /// An empty 4 MiB image with 4 KiB clusters, as qemu-img makes it (header, refcount table,
    /// refcount block, L1 table: 12 KiB).
    fn small_image(dir: &TempDir) -> PathBuf {
        let img = dir.file("small.qcow2");
        let opts = "cluster_size=4096";
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            opts,
            img.to_str().unwrap(),
            "4M",
        ]);
        img
    }

    /// Opening `path` writable is refused as inconsistent, with `what` in the message and the
    /// qemu-img command that repairs it, and the file is left as it was; opening it read-only
    /// works.
    fn assert_refused_for_writing(path: &Path, what: &str) {
        let before = std::fs::read(path).unwrap();
        let p = path.to_str().unwrap();
        let e = open_err(path, true);
        assert!(
            e.starts_with(&format!(
                "disk image {p}: its qcow2 metadata is inconsistent ("
            )) && e.contains(what),
            "{e}"
        );
        assert!(
            e.ends_with(&format!(
                ": repair it with `qemu-img check -r all {p}`, or use it read-only (readonly=on)"
            )),
            "{e}"
        );
        assert!(
            std::fs::read(path).unwrap() == before,
            "refused, yet written"
        );
        let image = open(path, false).unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = image.read_at(&mut buf, 0);
    }

    // imago 0.2.6 trusts the refcounts when it allocates: writing to these two images (found
    // when writes were part of the corruption tests above) overflowed its stack (the process
    // aborted) after writing a refcount block over the header, and wrote an L2 entry over the
    // header. The check before a writable open refuses them.

    #[test]
    fn writing_to_an_image_missing_a_refcount_block_is_refused() {
        let dir = TempDir::new("qcow2-no-refblock");
        let img = small_image(&dir);
        let reftable = be64(&read_file(&img, 0, 56), 48);
        let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        file.write_all_at(&[0; 8], reftable).unwrap();
        drop(file);
        assert_refused_for_writing(&img, "cluster 0x0 (the header) has no refcount block");
        // What the message says to do makes it writable.
        qemu_img(&["check", "-r", "all", img.to_str().unwrap()]);
        check_writes(&dir, &img, &write_ops(mib(4), 4096));
    }

    #[test]
    fn writing_to_a_truncated_image_is_refused() {
        let dir = TempDir::new("qcow2-cut-refblock");
        let img = small_image(&dir);
        let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        file.set_len(8192).unwrap();
        drop(file);
        assert_refused_for_writing(
            &img,
            "refcount block 0 (4096 bytes at 0x2000) ends past the end of the file (8192 bytes)",
        );
    }

    /// The header fields the tests below patch around: cluster bits, refcount order.
    fn header_of(path: &Path) -> (u32, u32, Vec<u8>) {
        let h = read_file(path, 0, 104);
        let order = if be32(&h, 4) == 3 { be32(&h, 96) } else { 4 };
        (be32(&h, 20), order, h)
    }

    /// Where the refcount of the cluster at host offset `host` is: its byte and, for refcounts
    /// narrower than a byte, its shift in it (QEMU's layout: little-endian bit order in bytes,
    /// big-endian bytes).
    fn refcount_place(path: &Path, host: u64) -> (u64, u32, u32) {
        let (cb, order, h) = header_of(path);
        let rb_bits = cb + 3 - order;
        let cluster = host >> cb;
        let entry = be64(
            &read_file(path, be64(&h, 48) + 8 * (cluster >> rb_bits), 8),
            0,
        );
        let bit = (cluster & ((1 << rb_bits) - 1)) << order;
        (entry + bit / 8, (bit % 8) as u32, 1 << order)
    }

    /// Sets the refcount of the cluster at host offset `host` to `value`.
    fn set_refcount(path: &Path, host: u64, value: u64) {
        let (at, shift, bits) = refcount_place(path, host);
        let bytes = if bits < 8 {
            let mask = ((1u8 << bits) - 1) << shift;
            let old = read_file(path, at, 1)[0];
            vec![old & !mask | (value as u8) << shift & mask]
        } else {
            value.to_be_bytes()[8 - bits as usize / 8..].to_vec()
        };
        patch(path, at, &bytes);
    }

    fn patch(path: &Path, at: u64, bytes: &[u8]) {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(bytes, at).unwrap();
    }

    /// Where the L2 entry of guest offset `guest` is (in the image's tables), and its value.
    fn l2_entry(path: &Path, guest: u64) -> (u64, u64) {
        let (cb, _, h) = header_of(path);
        let l1 = be64(
            &read_file(path, be64(&h, 40) + 8 * (guest >> (2 * cb - 3)), 8),
            0,
        );
        let at = (l1 & OFFSET_MASK) + 8 * ((guest >> cb) & ((1 << (cb - 3)) - 1));
        (at, be64(&read_file(path, at, 8), 0))
    }

    #[test]
    fn images_whose_refcounts_do_not_count_their_clusters_are_refused_for_writing() {
        let dir = TempDir::new("qcow2-inconsistent");
        let img = dir.file("disk.qcow2");
        let img_s = img.to_str().unwrap();
        let good = dir.file("good.qcow2");
        let restore = || std::fs::copy(&good, &img).unwrap();
        // Every refcount width: a cluster written after a snapshot (refcount 1, marked
        // unshared) and one shared with the snapshot (refcount 2, used twice).
        for bits in [1, 2, 4, 8, 16, 32, 64] {
            let opts = format!("cluster_size=4096,refcount_bits={bits}");
            qemu_img(&["create", "-f", "qcow2", "-o", &opts, img_s, "4M"]);
            qemu_io(&img, &["write -P 0xaa 0 64k"]);
            if bits > 1 {
                qemu_img(&["snapshot", "-c", "one", img_s]);
            }
            qemu_io(&img, &["write -P 0xbb 1M 4k"]);
            std::fs::copy(&img, &good).unwrap();
            drop(open(&img, true).unwrap());
            let (_, entry) = l2_entry(&img, mib(1));
            assert_ne!(entry & COPIED, 0);
            let host = entry & OFFSET_MASK;
            let what = format!("cluster {host:#x} (data of guest offset 0x100000)");
            set_refcount(&img, host, 0);
            assert_refused_for_writing(&img, &format!("{what} has refcount 0"));
            if bits == 1 {
                continue;
            }
            restore();
            set_refcount(&img, host, 2);
            let e = format!("{what} is marked unshared (COPIED) but has refcount 2");
            assert_refused_for_writing(&img, &e);
            restore();
            let shared = l2_entry(&img, 0).1 & OFFSET_MASK;
            set_refcount(&img, shared, 1);
            let e =
                format!("cluster {shared:#x} (data of guest offset 0x0) has refcount 1 but 2 uses");
            assert_refused_for_writing(&img, &e);
        }

        // The snapshot's L1 table is counted.
        restore();
        let snapshots = be64(&read_file(&img, 64, 8), 0);
        let l1 = be64(&read_file(&img, snapshots, 8), 0);
        set_refcount(&img, l1, 0);
        let e = format!("cluster {l1:#x} (the L1 table of snapshot 1) has refcount 0");
        assert_refused_for_writing(&img, &e);

        // Data in metadata, data in two places at once, data past the end of the file.
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4096",
            img_s,
            "4M",
        ]);
        qemu_io(&img, &["write -P 0xaa 1M 4k"]);
        std::fs::copy(&img, &good).unwrap();
        let (at, entry) = l2_entry(&img, mib(1));
        let next = at + 8;
        let l1 = be64(&read_file(&img, 40, 8), 0);
        patch(&img, next, &(COPIED | l1).to_be_bytes());
        let e = format!("cluster {l1:#x} (data of guest offset 0x101000) is also the L1 table");
        assert_refused_for_writing(&img, &e);
        restore();
        patch(&img, next, &entry.to_be_bytes());
        let e = format!(
            "cluster {:#x} (data of guest offset 0x101000) has refcount 1 but 2 uses",
            entry & OFFSET_MASK
        );
        assert_refused_for_writing(&img, &e);
        restore();
        let len = std::fs::metadata(&img).unwrap().len();
        let past = len.next_multiple_of(4096) + 4096;
        patch(&img, next, &(COPIED | past).to_be_bytes());
        let e = format!(
            "cluster {past:#x} (data of guest offset 0x101000) is past the end of the file \
             ({len} bytes)"
        );
        assert_refused_for_writing(&img, &e);

        // A disk size the L1 table does not cover (QEMU does not open such an image).
        restore();
        patch(&img, 24, &mib(5).to_be_bytes());
        let e = "the L1 table (2 entries) is too small for the disk size (5242880 bytes)";
        assert_refused_for_writing(&img, e);
    }
}
