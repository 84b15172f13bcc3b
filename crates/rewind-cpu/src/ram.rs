//! Guest RAM and the cache of decoded instructions that lives beside it.
//!
//! Every page the hart has executed from owns a *code page*: one decoded [`Op`] per two-byte
//! slot, filled lazily. Writes that reach a code page through [`Ram::write`] clear the slots they
//! cover, so self-modifying code and DMA are seen at the next fetch. The hart's store fast path
//! never points at a code page (see `Hart::flush_write_tlb_for`), so every such store takes this
//! slow path.

use crate::decode::Op;

pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_SHIFT: u32 = 12;
pub(crate) const SLOTS_PER_PAGE: usize = (PAGE_SIZE / 2) as usize;

/// Guest physical memory at `base`, a whole number of pages.
pub struct Ram {
    base: u64,
    data: Box<[u8]>,
    /// Per RAM page: 1 + the index of its code page in `code` (in pages), or 0 for none.
    code_index: Vec<u32>,
    /// Decoded slots of every code page, back to back.
    code: Vec<Op>,
}

impl Ram {
    /// Zero-filled RAM of `size` bytes (rounded up to a page) at guest physical `base`.
    pub fn new(base: u64, size: u64) -> Ram {
        let size = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let pages = (size / PAGE_SIZE) as usize;
        Ram {
            base,
            data: vec![0u8; size as usize].into_boxed_slice(),
            code_index: vec![0; pages],
            code: Vec::new(),
        }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn end(&self) -> u64 {
        self.base + self.size()
    }

    /// Whether `[addr, addr + len)` lies inside RAM.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base && addr.checked_add(len).is_some_and(|end| end <= self.end())
    }

    /// Offset of a physical address inside `data`, if it is in RAM.
    #[inline(always)]
    pub(crate) fn offset(&self, addr: u64) -> Option<usize> {
        let off = addr.wrapping_sub(self.base);
        (off < self.data.len() as u64).then_some(off as usize)
    }

    #[inline(always)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Writable bytes, for stores that the TLB proved cannot touch a code page.
    #[inline(always)]
    pub(crate) fn bytes_mut_unchecked(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Reads guest memory; `None` if any byte is outside RAM.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        if !self.contains(addr, buf.len() as u64) {
            return None;
        }
        let off = (addr - self.base) as usize;
        buf.copy_from_slice(&self.data[off..off + buf.len()]);
        Some(())
    }

    /// Writes guest memory, dropping any decoded instructions it overwrites; `None` if any byte
    /// is outside RAM (and then nothing is written).
    pub fn write(&mut self, addr: u64, buf: &[u8]) -> Option<()> {
        if !self.contains(addr, buf.len() as u64) {
            return None;
        }
        let off = (addr - self.base) as usize;
        self.data[off..off + buf.len()].copy_from_slice(buf);
        self.invalidate_code(off, buf.len());
        Some(())
    }

    /// Clears decoded slots that overlap `[off, off + len)`. An instruction starting up to
    /// two bytes before the range may extend into it, so those slots go too.
    fn invalidate_code(&mut self, off: usize, len: usize) {
        if self.code.is_empty() || len == 0 {
            return;
        }
        let first = off.saturating_sub(2);
        let last = off + len - 1;
        for page in (first >> PAGE_SHIFT)..=(last >> PAGE_SHIFT) {
            let Some(&index) = self.code_index.get(page) else {
                continue;
            };
            if index == 0 {
                continue;
            }
            let page_start = page << PAGE_SHIFT;
            let base = (index as usize - 1) * SLOTS_PER_PAGE;
            let lo = (first.max(page_start) - page_start) / 2;
            let hi = (last.min(page_start + PAGE_SIZE as usize - 1) - page_start) / 2;
            self.code[base + lo..=base + hi].fill(Op::UNDECODED);
        }
    }

    /// Whether the page at `off` holds decoded instructions.
    #[inline]
    pub(crate) fn is_code_page(&self, off: usize) -> bool {
        self.code_index[off >> PAGE_SHIFT] != 0
    }

    /// Index in [`Ram::code_slots`] of the first slot of the code page for the page at `off`,
    /// creating it empty if needed; and whether it is new.
    pub(crate) fn code_page(&mut self, off: usize) -> (usize, bool) {
        let page = off >> PAGE_SHIFT;
        if self.code_index[page] == 0 {
            self.code
                .resize(self.code.len() + SLOTS_PER_PAGE, Op::UNDECODED);
            self.code_index[page] = (self.code.len() / SLOTS_PER_PAGE) as u32;
            return (self.code.len() - SLOTS_PER_PAGE, true);
        }
        ((self.code_index[page] as usize - 1) * SLOTS_PER_PAGE, false)
    }

    /// The decoded slot at `index` (see [`Ram::code_page`]).
    #[inline(always)]
    pub(crate) fn code_slot(&self, index: usize) -> Op {
        self.code[index]
    }

    #[inline]
    pub(crate) fn set_code_slot(&mut self, index: usize, op: Op) {
        self.code[index] = op;
    }

    /// Drops every decoded instruction (after RAM is replaced wholesale).
    pub fn clear_code(&mut self) {
        self.code.clear();
        self.code_index.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Kind;

    #[test]
    fn reads_and_writes_inside_ram_only() {
        let mut ram = Ram::new(0x8000_0000, 8192);
        assert!(ram.write(0x8000_0ffe, &[1, 2, 3, 4]).is_some());
        let mut buf = [0u8; 4];
        ram.read(0x8000_0ffe, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
        assert!(ram.write(0x8000_1fff, &[0, 0]).is_none());
        assert!(ram.read(0x7fff_ffff, &mut buf).is_none());
        assert!(ram.read(u64::MAX - 1, &mut buf).is_none());
    }

    #[test]
    fn writes_clear_overlapping_decoded_slots() {
        let mut ram = Ram::new(0x8000_0000, 8192);
        let (base, created) = ram.code_page(0);
        assert!(created);
        let add = Op {
            kind: Kind::Add,
            ..Op::UNDECODED
        };
        for slot in 0..SLOTS_PER_PAGE {
            ram.set_code_slot(base + slot, add);
        }
        ram.write(0x8000_0010, &[0; 4]).unwrap();
        let (again, created) = ram.code_page(0);
        assert_eq!((again, created), (base, false));
        // Slot 7 (offset 14) may hold a 4-byte instruction reaching offset 16.
        let kinds: Vec<Kind> = (6..=10).map(|s| ram.code_slot(base + s).kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Add,
                Kind::Undecoded,
                Kind::Undecoded,
                Kind::Undecoded,
                Kind::Add
            ]
        );
    }
}
