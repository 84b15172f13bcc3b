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
//! `writing_to_...` tests in `tests/disk_images.rs`). So before a writable open,
//! [`check_metadata`] reads the metadata and refuses the image, with the `qemu-img check -r
//! all` that repairs it, unless the refcounts count every cluster the image uses (as `qemu-img
//! check` counts them). Reading any image is safe (errors, never panics) and needs no such
//! check.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, StorageOpenOptions};
use thiserror::Error;

use super::BlockBackend;

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
}

impl BlockBackend for Qcow2 {
    fn format_name(&self) -> &'static str {
        "qcow2"
    }

    fn size(&self) -> u64 {
        self.access.size()
    }

    /// Past the end is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
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

    /// An error if opened read-only or past the end.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.access.write(data, offset)
    }

    /// Writes imago's cached metadata to the file and makes the file durable.
    fn flush(&self) -> io::Result<()> {
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
/// aborts) when it allocates in such an image (the `writing_to_...` tests in
/// `tests/disk_images.rs`).
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
