//! The host memory behind guest RAM: one zero-filled anonymous mapping, on huge pages where
//! the host has them. Guests touch RAM at random (hash tables, a compressor's window, page
//! tables), and with 4 KiB host pages every such access risks a host TLB miss on top of the
//! guest's own translation. QEMU asks for huge pages on guest RAM for the same reason.

use std::ops::{Deref, DerefMut};

/// Huge pages are this large on x86-64 and AArch64 Linux; the mapping starts at a multiple.
#[cfg(unix)]
const HUGE_PAGE: usize = 2 << 20;

/// Zero-filled bytes owned by one mapping.
pub(crate) struct Backing {
    /// The mapping: `len` bytes and one huge page more, so that they can start aligned.
    #[cfg(unix)]
    map: *mut libc::c_void,
    /// Where the bytes start (huge-page aligned) and how many there are.
    #[cfg(unix)]
    bytes: *mut u8,
    #[cfg(unix)]
    len: usize,
    #[cfg(not(unix))]
    bytes: Box<[u8]>,
}

// SAFETY: `Backing` owns its mapping exclusively, as a `Box<[u8]>` owns its allocation.
#[cfg(unix)]
unsafe impl Send for Backing {}
#[cfg(unix)]
unsafe impl Sync for Backing {}

impl Backing {
    /// `len` zero bytes, or `None` if the host has no room for them.
    #[cfg(unix)]
    pub(crate) fn zeroed(len: usize) -> Option<Backing> {
        let map_len = len.checked_add(HUGE_PAGE)?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; its
        // pages read as zero until written.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        let skip = (map as usize).next_multiple_of(HUGE_PAGE) - map as usize;
        // SAFETY: `skip < HUGE_PAGE`, so `skip..skip + len` lies inside the mapping.
        let bytes = unsafe { map.cast::<u8>().add(skip) };
        // A hint only: without huge pages the memory works the same, just slower.
        #[cfg(target_os = "linux")]
        // SAFETY: advice about pages of our own mapping.
        unsafe {
            libc::madvise(bytes.cast(), len, libc::MADV_HUGEPAGE);
        }
        Some(Backing { map, bytes, len })
    }

    #[cfg(not(unix))]
    pub(crate) fn zeroed(len: usize) -> Option<Backing> {
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len).ok()?;
        bytes.resize(len, 0);
        Some(Backing {
            bytes: bytes.into_boxed_slice(),
        })
    }
}

impl Deref for Backing {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        #[cfg(unix)]
        // SAFETY: `bytes..bytes + len` is inside our mapping, readable, and lives as long as
        // `self`.
        return unsafe { std::slice::from_raw_parts(self.bytes, self.len) };
        #[cfg(not(unix))]
        &self.bytes
    }
}

impl DerefMut for Backing {
    fn deref_mut(&mut self) -> &mut [u8] {
        #[cfg(unix)]
        // SAFETY: as for `deref`, and `&mut self` makes this the only reference.
        return unsafe { std::slice::from_raw_parts_mut(self.bytes, self.len) };
        #[cfg(not(unix))]
        &mut self.bytes
    }
}

#[cfg(unix)]
impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `zeroed` with this length and is not used after.
        unsafe {
            libc::munmap(self.map, self.len + HUGE_PAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_starts_zeroed_and_keeps_what_is_written() {
        let mut memory = Backing::zeroed(3 << 20).expect("3 MiB");
        assert_eq!(memory.len(), 3 << 20);
        assert!(memory.iter().all(|&b| b == 0));
        memory[(3 << 20) - 1] = 7;
        memory[0] = 9;
        assert_eq!((memory[0], memory[(3 << 20) - 1]), (9, 7));
    }
}
