//! Raw images: the file is the disk, byte for byte.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::BlockBackend;

#[derive(Debug)]
pub struct Raw {
    file: Arc<File>,
    /// The file's length when opened: the disk does not grow with the file.
    size: u64,
}

impl Raw {
    pub fn new(file: Arc<File>) -> io::Result<Raw> {
        let size = file.metadata()?.len();
        Ok(Raw { file, size })
    }
}

impl BlockBackend for Raw {
    fn format_name(&self) -> &'static str {
        "raw"
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
