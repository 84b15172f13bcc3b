//! The default guest: Debian's riscv64 kernel, OpenSBI and a busybox initramfs, fetched and
//! built by `scripts/fetch-guest` into a cache outside the source tree.

use std::path::PathBuf;

/// Kernel command line for the default guest. `cryptomgr.notests` skips the crypto self-tests
/// that would otherwise take most of the boot.
pub const DEFAULT_APPEND: &str = "console=ttyS0 rdinit=/init quiet cryptomgr.notests";

/// Paths of the default guest's images.
pub struct DefaultGuest {
    pub firmware: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The cache folder: `$REWIND_GUEST_DIR`, else `$XDG_CACHE_HOME/rewind/debian-trixie-riscv64`,
/// else `~/.cache/rewind/debian-trixie-riscv64` (the same rule as scripts/fetch-guest).
pub fn guest_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("REWIND_GUEST_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("rewind").join("debian-trixie-riscv64")
}

impl DefaultGuest {
    /// The default guest's images, or a message saying how to fetch them.
    pub fn locate() -> Result<DefaultGuest, String> {
        let dir = guest_dir();
        let guest = DefaultGuest {
            firmware: dir.join("fw_dynamic.bin"),
            kernel: dir.join("Image"),
            initrd: dir.join("initramfs.cpio.gz"),
        };
        for path in [&guest.firmware, &guest.kernel, &guest.initrd] {
            if !path.is_file() {
                return Err(format!(
                    "the default guest is not in {} (missing {}): run scripts/fetch-guest, \
                     or give --kernel and --bios",
                    dir.display(),
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
            }
        }
        Ok(guest)
    }
}
