//! The block layer: disk images on the host, apart from the device that shows them to the
//! guest (virtio-blk).
//!
//! A [`BlockBackend`] is a disk in some file format: [`raw`] (the file is the disk) or
//! [`qcow2`] (through the `imago` crate). [`DiskImage::open`] picks the backend for a file.
//! While recording or replaying, the image is never written: the guest's writes go to the
//! recording [`overlay`], which is guest-visible state (it is in snapshots and digests). A plain
//! run may write through to the image instead.

pub mod overlay;
pub mod qcow2;
pub mod raw;

use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use overlay::{Overlay, OverlayState};
use qcow2::{Qcow2, Qcow2Error};
use raw::Raw;

/// Bytes per sector: the unit of virtio-blk requests and of the overlay.
pub const SECTOR: u64 = 512;

/// A disk in one file format. Backends are shared handles on their file (clones of a
/// [`DiskImage`] share one), so every access takes `&self`.
pub trait BlockBackend: Debug + Send + Sync {
    /// The format's name, as `--drive format=` takes it.
    fn format_name(&self) -> &'static str;
    /// The disk size the guest sees, in bytes (for qcow2, not the file's size).
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes of the disk (not of the file) at `offset`; past the end is an
    /// error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `data` to the disk at `offset`, in the image file itself.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the writes so far durable.
    fn flush(&self) -> io::Result<()>;
}

/// A disk image on the host, and how the machine may use it. Build it with
/// [`DiskImage::open`].
#[derive(Clone, Debug)]
pub struct DiskImage {
    /// The image file, as opened (what recordings hash).
    pub file: Arc<File>,
    pub readonly: bool,
    /// Write to the image itself (a plain run); otherwise writes stay in the overlay.
    pub write_through: bool,
    backend: Arc<dyn BlockBackend>,
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
        let backend: Arc<dyn BlockBackend> = if use_qcow2 {
            Arc::new(Qcow2::open(&file, path, writable).map_err(|e| {
                let mut message = format!("disk image {p}: {e}");
                if let Some(hint) = e.hint(&shell_quoted(&p.to_string())) {
                    message += &format!(": {hint}");
                }
                if format.is_none() && matches!(e, Qcow2Error::Imago { .. }) {
                    message += " (it starts with the qcow2 magic; to use the file itself as \
                                a raw disk, give its format as raw)";
                }
                message
            })?)
        } else {
            Arc::new(
                Raw::new(file.clone()).map_err(|e| format!("cannot read disk image {p}: {e}"))?,
            )
        };
        Ok(DiskImage {
            file,
            readonly,
            write_through,
            backend,
        })
    }
}

/// The image through its format.
impl BlockBackend for DiskImage {
    fn format_name(&self) -> &'static str {
        self.backend.format_name()
    }

    fn size(&self) -> u64 {
        self.backend.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.backend.read_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.backend.write_at(data, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.backend.flush()
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

/// Temporary files and test data, shared with the crate's integration tests.
#[cfg(test)]
#[path = "../../tests/common/mod.rs"]
#[allow(dead_code)]
pub(crate) mod test_files;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_commands_are_quoted_for_the_shell() {
        assert_eq!(shell_quoted("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quoted("/tmp/x.qcow2"), "/tmp/x.qcow2");
    }
}
