//! Guest RAM and the cache of decoded code that lives beside it.
//!
//! Code is decoded once into *blocks*: runs of straight-line instructions inside one page,
//! ending at the first instruction that may change control flow or the translation context.
//! Blocks are found through the page they start in (a *code page*: one entry per two-byte
//! slot). A write to a code page through [`Ram::write`] drops that page's blocks and bumps an
//! epoch the hart checks before each block, so self-modifying code and DMA are seen at once.
//! The hart's store fast path never points at a code page, so every such store takes that path.

use crate::backing::Backing;
use crate::decode::Op;

pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_SHIFT: u32 = 12;
pub(crate) const SLOTS_PER_PAGE: usize = (PAGE_SIZE / 2) as usize;
/// Room kept after RAM for a read-only region (the reset ROM), so that placing one never
/// moves RAM.
pub const MAX_ROM_LEN: u64 = 64 << 10;
/// Decoded ops kept before the whole cache is dropped and rebuilt on demand.
const MAX_CACHED_OPS: usize = 1 << 22;

#[derive(Default)]
pub(crate) struct CodeCache {
    /// Per RAM page: 1 + its code page id, or 0.
    page_of: Vec<u32>,
    /// Per code page, per slot: the block starting there as `first op << 32 | op count`, or 0
    /// (a block has at least one op). One load finds a block.
    entries: Vec<u64>,
    /// Ops as `Op::to_words`, so the hot loop unpacks them in registers.
    ops: Vec<[u64; 2]>,
    /// Per code page: which of its 64-byte chunks hold decoded instructions. A write that
    /// misses them leaves the page's blocks alone, so data beside code costs no decoding.
    chunks: Vec<u64>,
    epoch: u64,
    /// How many times a page became code: a hart whose store translations predate a change
    /// here may write to code without noticing (see [`Ram::code_pages_made`]).
    made: u64,
    /// The compiling tier, when it is on (see [`crate::Engine`]).
    pub(crate) engine: crate::engine::Compiler,
}

/// Guest physical memory at `base`, a whole number of pages, and optionally a read-only
/// region elsewhere (the reset ROM) that the hart can fetch from and read directly. Its bytes
/// follow RAM's in `data`; it is never written through [`Ram::write`].
pub struct Ram {
    base: u64,
    /// RAM bytes.
    size: u64,
    /// ROM base and length (0 when there is none).
    rom_base: u64,
    rom_len: u64,
    data: Backing,
    pub(crate) code: CodeCache,
    /// One bit per RAM page written since [`Ram::take_dirty_pages`] last ran. The hart's store
    /// fast path never marks pages: a page gets its bit when a store TLB entry for it is
    /// filled, so whoever takes the dirty set must also drop the hart's store entries.
    dirty: Vec<u64>,
}

impl Ram {
    /// Zero-filled RAM of `size` bytes (rounded up to a page) at guest physical `base`.
    /// Panics if the host cannot give that much memory: see [`Ram::try_new`].
    pub fn new(base: u64, size: u64) -> Ram {
        Ram::try_new(base, size).expect("the host has memory for this RAM")
    }

    /// Zero-filled RAM, or `None` if the host cannot give that much memory. Pages are only
    /// backed by host memory once written.
    pub fn try_new(base: u64, size: u64) -> Option<Ram> {
        let size = size.checked_next_multiple_of(PAGE_SIZE)?;
        let pages = (size / PAGE_SIZE) as usize;
        let data = Backing::zeroed(usize::try_from(size.checked_add(MAX_ROM_LEN)?).ok()?)?;
        Some(Ram {
            base,
            size,
            rom_base: 0,
            rom_len: 0,
            data,
            code: CodeCache {
                page_of: vec![0; data_pages(size)],
                ..CodeCache::default()
            },
            dirty: vec![0; pages.div_ceil(64)],
        })
    }

    /// Number of RAM pages.
    pub fn pages(&self) -> usize {
        (self.size / PAGE_SIZE) as usize
    }

    /// Notes that the RAM page holding offset `off` may be written.
    #[inline]
    pub(crate) fn mark_dirty(&mut self, off: usize) {
        let page = off >> PAGE_SHIFT;
        if let Some(word) = self.dirty.get_mut(page / 64) {
            *word |= 1 << (page % 64);
        }
    }

    /// The RAM pages (indices from the start of RAM) written since the last call, in order;
    /// clears the set. Call [`crate::Hart::forget_store_translations`] at the same time, or
    /// later stores through cached translations go unseen.
    pub fn take_dirty_pages(&mut self) -> Vec<usize> {
        let mut pages = Vec::new();
        for (i, word) in self.dirty.iter_mut().enumerate() {
            let mut bits = std::mem::take(word);
            while bits != 0 {
                pages.push(i * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
        pages
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn end(&self) -> u64 {
        self.base + self.size()
    }

    /// All of RAM (not the ROM), for hashing and saving.
    pub fn contents(&self) -> &[u8] {
        &self.data[..self.size as usize]
    }

    /// Whether `[addr, addr + len)` lies inside RAM.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base && addr.checked_add(len).is_some_and(|end| end <= self.end())
    }

    /// Offset of a physical address inside `data`, if it is in RAM.
    #[inline(always)]
    pub(crate) fn offset(&self, addr: u64) -> Option<usize> {
        let off = addr.wrapping_sub(self.base);
        if off < self.size {
            return Some(off as usize);
        }
        let rom = addr.wrapping_sub(self.rom_base);
        (rom < self.rom_len).then(|| (self.size + rom) as usize)
    }

    /// Whether a RAM offset (from `offset`) is in RAM proper rather than the ROM.
    #[inline]
    pub(crate) fn is_ram_offset(&self, off: usize) -> bool {
        (off as u64) < self.size
    }

    /// Places a read-only region of whole pages at `base` (outside RAM), holding `bytes`, at
    /// most [`MAX_ROM_LEN`] long. Replaces any previous one; decoded code is dropped, so call
    /// it before running.
    pub fn set_rom(&mut self, base: u64, len: u64, bytes: &[u8]) {
        let len = len
            .max(bytes.len() as u64)
            .next_multiple_of(PAGE_SIZE)
            .min(MAX_ROM_LEN);
        let rom = &mut self.data[self.size as usize..];
        rom.fill(0);
        let n = bytes.len().min(len as usize);
        rom[..n].copy_from_slice(&bytes[..n]);
        self.rom_base = base;
        self.rom_len = len;
        self.clear_code();
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

    /// Reads RAM or the read-only region (the reset ROM); `None` if any byte is outside both.
    pub fn read_with_rom(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        if self.read(addr, buf).is_some() {
            return Some(());
        }
        let rom = addr.checked_sub(self.rom_base)?;
        if rom.checked_add(buf.len() as u64)? > self.rom_len {
            return None;
        }
        let off = (self.size + rom) as usize;
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
        if !buf.is_empty() {
            for page in (off >> PAGE_SHIFT)..=((off + buf.len() - 1) >> PAGE_SHIFT) {
                self.dirty[page / 64] |= 1 << (page % 64);
            }
        }
        self.invalidate_code(off, buf.len());
        Some(())
    }

    /// Drops the blocks of every code page whose instructions `[off, off + len)` overwrites.
    fn invalidate_code(&mut self, off: usize, len: usize) {
        if self.code.ops.is_empty() || len == 0 {
            return;
        }
        let end = off + len;
        for page in (off >> PAGE_SHIFT)..=((end - 1) >> PAGE_SHIFT) {
            let Some(p) = self.code.page_of.get_mut(page) else {
                continue;
            };
            if *p == 0 {
                continue;
            }
            let page_start = page << PAGE_SHIFT;
            let written = chunk_mask(
                off.max(page_start) - page_start,
                end.min(page_start + PAGE_SIZE as usize) - page_start,
            );
            if self.code.chunks[*p as usize - 1] & written != 0 {
                *p = 0;
                self.code.epoch += 1;
            }
        }
    }

    /// Changes whenever cached blocks are dropped; a hart holding a code page id must look it
    /// up again when this differs from what it saw.
    #[inline(always)]
    pub(crate) fn code_epoch(&self) -> u64 {
        self.code.epoch
    }

    /// Counts pages becoming code. The hart that decodes a page takes its own stores to it
    /// off the fast path; with several harts, one that sat out must do the same for pages
    /// made while it waited (see [`crate::Hart::forget_store_translations`]).
    pub fn code_pages_made(&self) -> u64 {
        self.code.made
    }

    /// Whether the page at `off` holds decoded instructions.
    #[inline]
    /// Code page numbers plus one (0: none) by RAM page, for compiled code; the table never
    /// moves (it has one entry per RAM page from the start).
    pub(crate) fn code_page_numbers(&self) -> *const u32 {
        self.code.page_of.as_ptr()
    }

    pub(crate) fn is_code_page(&self, off: usize) -> bool {
        self.code.page_of[off >> PAGE_SHIFT] != 0
    }

    /// The code page id for the RAM page at `off`, created if needed; and whether it is new.
    pub(crate) fn code_page(&mut self, off: usize) -> (u32, bool) {
        if self.code.ops.len() > MAX_CACHED_OPS {
            self.clear_code();
        }
        let c = &mut self.code;
        let page = off >> PAGE_SHIFT;
        if c.page_of[page] == 0 {
            c.entries.resize(c.entries.len() + SLOTS_PER_PAGE, 0);
            c.chunks.push(0);
            c.engine.add_page();
            c.page_of[page] = (c.entries.len() / SLOTS_PER_PAGE) as u32;
            c.made += 1;
            return (c.page_of[page] - 1, true);
        }
        (c.page_of[page] - 1, false)
    }

    /// The block starting at `slot` of code page `page`: (first op index, op count).
    #[inline(always)]
    pub(crate) fn block_at(&self, page: u32, slot: usize) -> Option<(usize, usize)> {
        let entry = self.code.entries[block_index(page, slot)];
        (entry != 0).then_some(((entry >> 32) as usize, entry as u32 as usize))
    }

    /// Stores a non-empty block starting at `slot` of code page `page`; returns
    /// (first op index, op count).
    pub(crate) fn insert_block(&mut self, page: u32, slot: usize, ops: &[Op]) -> (usize, usize) {
        let c = &mut self.code;
        let start = c.ops.len();
        c.ops.extend(ops.iter().map(|op| op.to_words()));
        c.entries[block_index(page, slot)] = (start as u64) << 32 | ops.len() as u64;
        let bytes: usize = ops.iter().map(|op| op.len as usize).sum();
        c.chunks[page as usize] |= chunk_mask(2 * slot, (2 * slot + bytes).min(PAGE_SIZE as usize));
        (start, ops.len())
    }

    #[inline(always)]
    pub(crate) fn op(&self, index: usize) -> Op {
        Op::from_words(self.code.ops[index])
    }

    /// The region (see `jit::region`) entered at the block at slot `index`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn region(&self, index: usize) -> Vec<crate::jit::RegionBlock> {
        let slot = index % SLOTS_PER_PAGE;
        let page_first_index = index - slot;
        crate::jit::region::form(2 * slot as u64, |offset| {
            let at = page_first_index + (offset / 2) as usize;
            let entry = self.code.entries[at];
            if entry == 0 || at != index && !self.code.engine.may_join_region(at) {
                return None;
            }
            let (start, len) = ((entry >> 32) as usize, entry as u32 as usize);
            Some((start..start + len).map(|i| self.op(i)).collect())
        })
    }

    /// Drops every decoded instruction (after RAM is replaced wholesale), and the code
    /// compiled from them.
    pub fn clear_code(&mut self) {
        self.code.page_of.fill(0);
        self.code.entries.clear();
        self.code.ops.clear();
        self.code.chunks.clear();
        self.code.epoch += 1;
        self.code.engine.clear();
    }

    /// Chooses the engine that runs this RAM's code; see [`crate::Engine`].
    pub fn set_engine(&mut self, engine: crate::Engine) -> Result<(), crate::EngineError> {
        self.clear_code();
        self.code.engine = crate::engine::Compiler::new(engine)?;
        Ok(())
    }

    /// The engine in use.
    pub fn engine(&self) -> crate::Engine {
        self.code.engine.engine()
    }

    /// How many runs of a block make it worth compiling (tests use 0, to compile everything).
    pub fn set_hot_threshold(&mut self, runs: u32) {
        self.code.engine.set_hot_threshold(runs);
    }

    /// Bytes of memory for compiled code (64 MiB unless set); when they run out, all compiled
    /// code is dropped and compiling starts again. Drops what is compiled now.
    pub fn set_code_cache_size(&mut self, bytes: usize) {
        self.clear_code();
        self.code.engine.set_code_cache_size(bytes);
    }

    /// Whether hot blocks are compiled on a thread of their own (the default), or in the run
    /// loop (tests, so that a block is compiled exactly when it gets hot).
    pub fn set_background_compilation(&mut self, background: bool) {
        self.code.engine.set_background(background);
    }

    /// Counters of the compiling tier, if it is on.
    pub fn jit_stats(&self) -> Option<crate::JitStats> {
        self.code.engine.stats()
    }
}

/// The 64-byte chunks of a page that bytes `start..end` of it (`start < end <= 4096`) touch,
/// as bits.
fn chunk_mask(start: usize, end: usize) -> u64 {
    let (first, last) = (start / 64, (end - 1) / 64);
    (u64::MAX >> (63 - last)) & (u64::MAX << first)
}

/// Index of a block's slot in the code cache's per-slot tables.
#[inline(always)]
pub(crate) fn block_index(page: u32, slot: usize) -> usize {
    page as usize * SLOTS_PER_PAGE + slot
}

/// Pages of RAM and ROM room together.
fn data_pages(ram_size: u64) -> usize {
    ((ram_size + MAX_ROM_LEN) / PAGE_SIZE) as usize
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
    fn writes_drop_the_code_pages_they_touch() {
        let mut ram = Ram::new(0x8000_0000, 3 * PAGE_SIZE);
        let add = Op {
            kind: Kind::Add,
            len: 4,
            ..Op::UNDECODED
        };
        let (page0, created) = ram.code_page(0);
        assert!(created);
        let (page1, _) = ram.code_page(PAGE_SIZE as usize);
        let block = ram.insert_block(page0, 3, &[add, add]);
        ram.insert_block(page1, 0, &[add]);
        assert_eq!(ram.block_at(page0, 3), Some(block));
        assert_eq!(block.1, 2);
        assert_eq!(ram.block_at(page0, 4), None);
        let epoch = ram.code_epoch();
        // A write to the data page leaves code alone, and so does one beside the code.
        ram.write(0x8000_2000, &[1]).unwrap();
        ram.write(0x8000_0000 + 64, &[1; 64]).unwrap();
        assert_eq!(ram.code_epoch(), epoch);
        assert!(ram.is_code_page(0));
        // One into a chunk that holds code drops the page.
        ram.write(0x8000_0000 + 6 + 4 * 2 - 1, &[1]).unwrap();
        assert_ne!(ram.code_epoch(), epoch);
        assert!(!ram.is_code_page(0));
        let (page0, _) = ram.code_page(0);
        ram.insert_block(page0, 3, &[add, add]);
        let epoch = ram.code_epoch();
        // A write straddling pages 0 and 1 drops page 1, whose code it reaches, not page 0.
        ram.write(0x8000_0ffe, &[0; 4]).unwrap();
        assert_ne!(ram.code_epoch(), epoch);
        assert!(ram.is_code_page(0));
        assert!(!ram.is_code_page(PAGE_SIZE as usize));
        assert!(ram.code_page(PAGE_SIZE as usize).1);
    }

    #[test]
    fn writes_mark_their_pages_dirty_until_taken() {
        let mut ram = Ram::new(0x8000_0000, 200 * PAGE_SIZE);
        assert!(ram.take_dirty_pages().is_empty());
        ram.write(0x8000_0ffe, &[1, 2, 3]).unwrap();
        ram.write(0x8000_0000 + 130 * PAGE_SIZE, &[1]).unwrap();
        ram.mark_dirty(64 * PAGE_SIZE as usize + 5);
        assert_eq!(ram.take_dirty_pages(), [0, 1, 64, 130]);
        assert!(ram.take_dirty_pages().is_empty());
    }
}
