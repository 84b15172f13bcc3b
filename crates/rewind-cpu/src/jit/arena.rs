//! Executable memory for compiled blocks: one mapping, filled front to back and emptied all at
//! once, as QEMU's translation buffer is. A bounded size keeps a long boot's memory bounded.

use std::ptr::NonNull;

/// A readable, writable and executable mapping that code is appended to.
pub(super) struct Arena {
    base: NonNull<u8>,
    size: usize,
    used: usize,
}

// SAFETY: the arena owns its mapping; nothing else points into it except compiled-code pointers
// kept by the same code cache, which moves with it.
unsafe impl Send for Arena {}

impl Arena {
    /// Maps `size` bytes; `None` if the host refuses (then the interpreter runs everything).
    pub(super) fn new(size: usize) -> Option<Arena> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Arena {
            base: NonNull::new(ptr.cast())?,
            size,
            used: 0,
        })
    }

    /// Copies `code` in, 16-byte aligned; returns its address, or `None` when the arena is full.
    pub(super) fn push(&mut self, code: &[u8]) -> Option<usize> {
        let start = self.used.next_multiple_of(16);
        let end = start.checked_add(code.len())?;
        if end > self.size {
            return None;
        }
        // SAFETY: `start..end` lies inside the mapping, and no compiled code runs while the
        // cache is being filled (compilation happens between blocks).
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.base.as_ptr().add(start), code.len());
        }
        self.used = end;
        Some(self.base.as_ptr() as usize + start)
    }

    /// Forgets all code. Whoever holds pointers into the arena must drop them first.
    pub(super) fn clear(&mut self) {
        self.used = 0;
        // SAFETY: gives the pages back to the kernel (they read as zero afterwards); the
        // mapping itself stays.
        unsafe {
            libc::madvise(self.base.as_ptr().cast(), self.size, libc::MADV_DONTNEED);
        }
    }

    pub(super) fn used(&self) -> usize {
        self.used
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this size and is not used after drop.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.size);
        }
    }
}
