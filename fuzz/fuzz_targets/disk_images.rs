//! Arbitrary bytes as a disk image: opened as qcow2 (read-only, then for writing), read and,
//! when the open for writing is allowed, written. Every outcome must be an error or a working
//! disk, never a panic or an abort (imago, under us, trusts refcounts when it allocates; the
//! metadata check before a writable open is what keeps such images away from it).
//!
//! Seed it with small real images: `fuzz/seed-disk-images` writes some to
//! `fuzz/corpus/disk_images`; then `cargo fuzz run disk_images` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_machine::block::{BlockBackend, DiskImage};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("rewind-fuzz-disk-{}.img", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(disk) = DiskImage::open(&path, Some("qcow2"), true, false) {
        let mut sector = [0u8; 512];
        for offset in [0, disk.size() / 2, disk.size().saturating_sub(512)] {
            let _ = disk.read_at(&mut sector, offset & !511);
        }
    }
    if let Ok(disk) = DiskImage::open(&path, Some("qcow2"), false, true) {
        let size = disk.size();
        let seed = data.iter().fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(b as u64));
        for offset in [0, seed % size.max(1), size.saturating_sub(4096)] {
            let _ = disk.write_at(&[0x5a; 4096], offset & !511);
        }
        let _ = disk.flush();
    }
    let _ = std::fs::remove_file(&path);
});
