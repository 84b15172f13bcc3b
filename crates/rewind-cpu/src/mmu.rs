//! Address translation (Sv39/Sv48 with hardware A/D updates), PMP, and the software TLB.
//!
//! The TLB is architectural state: it holds the translations the hart has cached since the
//! last `sfence.vma` that covers them, as hardware TLBs do, so that a guest that changes a
//! page-table entry without a fence sees the same (old or new) translation in every run, with
//! or without a debugger, before and after a snapshot's restore. An access that misses the
//! fast path first looks there, and walks the page table only when the TLB does not hold
//! the page.
//!
//! An entry is also the fast path: a hit needs no further check at all. That needs the whole
//! 4 KiB page to be RAM, allowed by PMP as one piece, free of watchpoints and triggers, and
//! (for stores) free of decoded instructions and already marked dirty. An entry whose page
//! lacks one of those is kept marked [`SLOW_ONLY`]: the fast path misses it, and the slow
//! path uses its translation. Such host reasons only ever move an entry between the two
//! kinds, never drop one.
//!
//! Each recently used address space (a `satp` value) keeps its own sets, as an ASID-tagged
//! TLB does: a process switch back to an address space still held costs no refills.

use crate::csr::{MSTATUS_MXR, MSTATUS_SUM, SATP_MODE_SV39, SATP_MODE_SV48};
use crate::hart::{Hart, PRIV_M, PRIV_S, PRIV_U};
use crate::pmp::PmpVerdict;
use crate::ram::{Ram, PAGE_SHIFT, PAGE_SIZE};
use crate::trap::{Access, Trap};

pub(crate) const TLB_ENTRIES: usize = 8192;

/// Set in an entry's `vpn`: the translation is held, but accesses take the slow path.
const SLOW_ONLY: u64 = 1 << 63;

/// `repr(C)`: compiled code reads entries as `{ vpn, delta }`.
#[derive(Clone, Copy)]
#[repr(C)]
struct TlbEntry {
    /// Virtual page number (with [`SLOW_ONLY`] when the fast path must miss it), or
    /// `u64::MAX` when empty.
    vpn: u64,
    /// RAM offset of the page minus its virtual address (fast entries only).
    delta: u64,
}

const EMPTY: TlbEntry = TlbEntry {
    vpn: u64::MAX,
    delta: 0,
};

impl TlbEntry {
    /// An entry that holds the translation of `vpn` for the slow path only.
    fn slow(vpn: u64) -> TlbEntry {
        TlbEntry {
            vpn: vpn | SLOW_ONLY,
            delta: 0,
        }
    }

    /// Whether the entry holds the translation of virtual page `vpn`.
    #[inline(always)]
    fn holds(&self, vpn: u64) -> bool {
        self.vpn & !SLOW_ONLY == vpn
    }

    fn is_empty(&self) -> bool {
        self.vpn == u64::MAX
    }
}

/// U, S, M, and S with SUM set.
const DATA_LEVELS: usize = 4;
/// Sets of one address space: loads and stores per data level, fetches per privilege.
const SETS: usize = 2 * DATA_LEVELS + 3;
const WRITE_SETS: std::ops::Range<usize> = DATA_LEVELS..2 * DATA_LEVELS;

/// How many filled slots a set group remembers before a flush clears every set instead.
const FILL_LOG: usize = 1024;

/// Address spaces kept besides the current one. Four in all covers a pipeline of a few
/// processes; each costs 2 MiB.
const RETAINED: usize = 3;

/// The TLB data set for accesses at effective privilege `privilege` with `mstatus.SUM` =
/// `sum` (which only S-mode sees).
pub(crate) fn data_level(privilege: u8, sum: bool) -> u8 {
    match (level_index(privilege), sum) {
        (1, true) => 3,
        (level, _) => level as u8,
    }
}

#[inline(always)]
fn level_index(privilege: u8) -> usize {
    // U = 0, S = 1, M = 3 -> 0, 1, 2
    (privilege as usize).min(2)
}

/// The set of an access kind at `level` (the data level, or the privilege for fetches).
fn set_of(access: Access, level: u8) -> usize {
    match access {
        Access::Load => level as usize,
        Access::Store => DATA_LEVELS + level as usize,
        Access::Exec => 2 * DATA_LEVELS + level_index(level),
    }
}

/// The translations of one address space.
struct Sets {
    /// Sets in the order of [`set_of`]: S-mode with `mstatus.SUM` has data sets of its own,
    /// so that Linux's toggling of SUM around every copy to or from user memory needs no
    /// flush. (On the heap, as they are large: built in place, they could overflow a stack.)
    entries: Box<[[TlbEntry; TLB_ENTRIES]]>,
    /// For each entry: the physical address of the page minus its virtual address.
    phys: Box<[[u64; TLB_ENTRIES]]>,
    /// Slots filled since the last flush, as `set * TLB_ENTRIES + index`: a flush clears these
    /// rather than all eleven sets, which matters because Linux switches address spaces at
    /// every context switch.
    filled: Vec<u32>,
    /// More slots were filled than `filled` keeps: the next flush clears everything.
    filled_overflow: bool,
}

impl Sets {
    fn new() -> Sets {
        Sets {
            entries: vec![[EMPTY; TLB_ENTRIES]; SETS].into_boxed_slice(),
            phys: vec![[0; TLB_ENTRIES]; SETS].into_boxed_slice(),
            filled: Vec::with_capacity(FILL_LOG),
            filled_overflow: false,
        }
    }

    /// A placeholder that holds no sets, while the real ones move.
    fn none() -> Sets {
        Sets {
            entries: Box::new([]),
            phys: Box::new([]),
            filled: Vec::new(),
            filled_overflow: false,
        }
    }

    fn flush(&mut self) {
        if self.filled_overflow {
            for set in self.entries.iter_mut() {
                set.fill(EMPTY);
            }
        } else {
            for &slot in &self.filled {
                let slot = slot as usize;
                self.entries[slot / TLB_ENTRIES][slot % TLB_ENTRIES] = EMPTY;
            }
        }
        self.filled.clear();
        self.filled_overflow = false;
    }

    /// Calls `f` with every entry that may be filled (those of the sets in `sets`).
    fn for_each_filled(&mut self, sets: std::ops::Range<usize>, mut f: impl FnMut(&mut TlbEntry)) {
        if self.filled_overflow {
            for set in &mut self.entries[sets] {
                set.iter_mut().for_each(&mut f);
            }
        } else {
            for &slot in &self.filled {
                let slot = slot as usize;
                if sets.contains(&(slot / TLB_ENTRIES)) {
                    f(&mut self.entries[slot / TLB_ENTRIES][slot % TLB_ENTRIES]);
                }
            }
        }
    }

    fn flush_page(&mut self, vpn: u64) {
        let index = vpn as usize & (TLB_ENTRIES - 1);
        for set in self.entries.iter_mut() {
            if set[index].holds(vpn) {
                set[index] = EMPTY;
            }
        }
    }

    fn put(&mut self, set: usize, vpn: u64, entry: TlbEntry, phys: u64) {
        let index = vpn as usize & (TLB_ENTRIES - 1);
        let slot = &mut self.entries[set][index];
        // A slot that holds something is in the log already.
        if slot.is_empty() {
            if self.filled.len() < FILL_LOG {
                self.filled.push((set * TLB_ENTRIES + index) as u32);
            } else {
                self.filled_overflow = true;
            }
        }
        *slot = entry;
        self.phys[set][index] = phys;
    }
}

/// The TLB: the current address space's sets, and those of a few recent ones.
pub(crate) struct Tlb {
    /// The `satp` value the current sets belong to.
    satp: u64,
    current: Sets,
    /// Recently left address spaces by `satp`, the most recent first.
    retained: Vec<(u64, Sets)>,
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            satp: 0,
            current: Sets::new(),
            retained: Vec::new(),
        }
    }
}

#[inline(always)]
fn lookup(set: &[TlbEntry; TLB_ENTRIES], addr: u64, size: usize) -> Option<usize> {
    let vpn = addr >> PAGE_SHIFT;
    let e = &set[vpn as usize & (TLB_ENTRIES - 1)];
    if e.vpn == vpn && (addr & (PAGE_SIZE - 1)) as usize <= PAGE_SIZE as usize - size {
        Some(addr.wrapping_add(e.delta) as usize)
    } else {
        None
    }
}

/// The ASID field of a `satp` value.
fn asid(satp: u64) -> u64 {
    (satp >> 44) & 0xffff
}

/// One saved entry: slot (`set * TLB_ENTRIES + index`), virtual page, physical delta.
type SavedEntry = (u32, u64, u64);

/// A TLB's contents, for snapshots: for each address space (the current one first), its
/// `satp` and its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlbState {
    spaces: Vec<(u64, Vec<SavedEntry>)>,
}

impl Tlb {
    fn all_sets(&mut self) -> impl Iterator<Item = &mut Sets> {
        std::iter::once(&mut self.current).chain(self.retained.iter_mut().map(|(_, s)| s))
    }

    /// Makes the address space of `satp` current (a `satp` write). Its translations from the
    /// last time it was current are still held unless a fence dropped them.
    pub(crate) fn switch(&mut self, satp: u64) {
        if satp == self.satp {
            return;
        }
        let sets = match self.retained.iter().position(|(s, _)| *s == satp) {
            Some(i) => self.retained.remove(i).1,
            None if self.retained.len() == RETAINED => {
                let mut oldest = self.retained.pop().expect("RETAINED > 0").1;
                oldest.flush();
                oldest
            }
            None => Sets::new(),
        };
        let left = std::mem::replace(&mut self.current, sets);
        self.retained.insert(0, (self.satp, left));
        self.satp = satp;
    }

    /// Drops every translation of every address space (`sfence.vma` without operands).
    pub(crate) fn flush(&mut self) {
        self.all_sets().for_each(Sets::flush);
    }

    /// Drops the translations of the address spaces with ASID `asid` (`sfence.vma x0, rs2`).
    pub(crate) fn flush_asid(&mut self, id: u64) {
        if asid(self.satp) == id {
            self.current.flush();
        }
        for (satp, sets) in &mut self.retained {
            if asid(*satp) == id {
                sets.flush();
            }
        }
    }

    /// Drops every translation of the page of `vaddr` (`sfence.vma` with an address).
    pub(crate) fn flush_page(&mut self, vaddr: u64) {
        let vpn = vaddr >> PAGE_SHIFT;
        self.all_sets().for_each(|s| s.flush_page(vpn));
    }

    /// Moves every store entry off the fast path, so that the next store to each page marks it
    /// dirty again.
    pub(crate) fn slow_writes(&mut self) {
        for sets in self.all_sets() {
            sets.for_each_filled(WRITE_SETS, |e| e.vpn |= SLOW_ONLY);
        }
    }

    /// Moves every entry off the fast path (watchpoints or triggers changed).
    pub(crate) fn slow_all(&mut self) {
        for sets in self.all_sets() {
            sets.for_each_filled(0..SETS, |e| e.vpn |= SLOW_ONLY);
        }
    }

    /// Moves store entries that reach the RAM page at `page_off` off the fast path (it now
    /// holds code).
    pub(crate) fn slow_writes_to(&mut self, page_off: usize) {
        for sets in self.all_sets() {
            sets.for_each_filled(WRITE_SETS, |e| {
                if e.vpn & SLOW_ONLY == 0
                    && (e.vpn << PAGE_SHIFT).wrapping_add(e.delta) as usize == page_off
                {
                    e.vpn |= SLOW_ONLY;
                }
            });
        }
    }

    #[inline(always)]
    pub(crate) fn read_hit(&self, level: u8, addr: u64, size: usize) -> Option<usize> {
        lookup(&self.current.entries[level as usize], addr, size)
    }

    #[inline(always)]
    pub(crate) fn write_hit(&self, level: u8, addr: u64, size: usize) -> Option<usize> {
        lookup(
            &self.current.entries[DATA_LEVELS + level as usize],
            addr,
            size,
        )
    }

    #[inline]
    pub(crate) fn exec_hit(&self, privilege: u8, addr: u64) -> Option<usize> {
        lookup(
            &self.current.entries[set_of(Access::Exec, privilege)],
            addr,
            2,
        )
    }

    /// The load and store sets of data level `level`, for compiled code.
    pub(crate) fn data_sets(&self, level: u8) -> (*const u8, *const u8) {
        let level = level as usize;
        (
            self.current.entries[level].as_ptr().cast(),
            self.current.entries[DATA_LEVELS + level].as_ptr().cast(),
        )
    }

    /// The fetch set of `privilege`, for compiled code.
    pub(crate) fn exec_set(&self, privilege: u8) -> *const u8 {
        self.current.entries[set_of(Access::Exec, privilege)]
            .as_ptr()
            .cast()
    }

    /// The physical address the TLB holds for `vaddr`, fast entry or not: `level` is the data
    /// level for loads and stores, the privilege for fetches.
    fn held(&self, level: u8, access: Access, vaddr: u64) -> Option<u64> {
        let set = set_of(access, level);
        let vpn = vaddr >> PAGE_SHIFT;
        let index = vpn as usize & (TLB_ENTRIES - 1);
        self.current.entries[set][index]
            .holds(vpn)
            .then(|| vaddr.wrapping_add(self.current.phys[set][index]))
    }

    /// Caches the translation of `vaddr`'s page to `paddr`'s page; `ram_off`, the page's RAM
    /// offset, when accesses may take the fast path.
    fn fill(&mut self, level: u8, access: Access, vaddr: u64, paddr: u64, ram_off: Option<usize>) {
        let vpn = vaddr >> PAGE_SHIFT;
        let page = vpn << PAGE_SHIFT;
        let entry = match ram_off {
            Some(off) => TlbEntry {
                vpn,
                delta: ((off as u64) & !(PAGE_SIZE - 1)).wrapping_sub(page),
            },
            None => TlbEntry::slow(vpn),
        };
        let phys = (paddr & !(PAGE_SIZE - 1)).wrapping_sub(page);
        self.current.put(set_of(access, level), vpn, entry, phys);
    }

    /// The contents, for a snapshot.
    pub(crate) fn save(&self) -> TlbState {
        let space = |satp: u64, sets: &Sets| {
            let mut entries = Vec::new();
            for (s, set) in sets.entries.iter().enumerate() {
                for (i, e) in set.iter().enumerate() {
                    if !e.is_empty() {
                        let slot = (s * TLB_ENTRIES + i) as u32;
                        entries.push((slot, e.vpn & !SLOW_ONLY, sets.phys[s][i]));
                    }
                }
            }
            (satp, entries)
        };
        let spaces = std::iter::once(space(self.satp, &self.current))
            .chain(self.retained.iter().map(|(satp, sets)| space(*satp, sets)))
            .collect();
        TlbState { spaces }
    }

    /// Takes the contents of a snapshot whose hart has `satp`, reusing this TLB's sets.
    /// Entries come back off the fast path: which pages may use it depends on the host
    /// (watchpoints, code), so the slow path decides again.
    pub(crate) fn restore(&mut self, state: &TlbState, satp: u64) {
        let mut spare: Vec<Sets> = self.retained.drain(..).map(|(_, s)| s).collect();
        let mut spaces: Vec<(u64, Sets)> = Vec::new();
        for (space_satp, entries) in state.spaces.iter().take(RETAINED + 1) {
            let mut sets = if spaces.is_empty() {
                std::mem::replace(&mut self.current, Sets::none())
            } else {
                spare.pop().unwrap_or_else(Sets::new)
            };
            sets.flush();
            for &(slot, vpn, phys) in entries {
                let (set, index) = (slot as usize / TLB_ENTRIES, slot as usize % TLB_ENTRIES);
                if set < SETS && vpn as usize & (TLB_ENTRIES - 1) == index && vpn >> 52 == 0 {
                    sets.put(set, vpn, TlbEntry::slow(vpn), phys);
                }
            }
            spaces.push((*space_satp, sets));
        }
        if spaces.is_empty() {
            self.current.flush();
            self.satp = satp;
        } else {
            let (space_satp, sets) = spaces.remove(0);
            self.satp = space_satp;
            self.current = sets;
            self.retained = spaces;
        }
        self.switch(satp);
    }
}

const PTE_V: u64 = 1 << 0;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PTE_U: u64 = 1 << 4;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;
/// Bits 63..54 (PBMT, N and reserved): none of those extensions is implemented.
const PTE_RESERVED: u64 = 0x3ff << 54;
const PPN_MASK: u64 = (1 << 44) - 1;

impl Hart {
    /// Translates `vaddr` for an access of `size` bytes that does not cross a page, checking
    /// page permissions and PMP, and fills the TLB when the whole page qualifies.
    pub(crate) fn translate(
        &mut self,
        ram: &mut Ram,
        vaddr: u64,
        access: Access,
        size: u8,
    ) -> Result<u64, Trap> {
        let privilege = if access == Access::Exec {
            self.state.privilege
        } else {
            self.data_priv
        };
        let satp_mode = self.state.csr.satp >> 60;
        // The set: the data level for loads and stores, the privilege for fetches.
        let level = match access {
            Access::Exec => privilege,
            _ => self.data_level,
        };
        let translated = privilege != PRIV_M && satp_mode != 0;
        let paddr = if !translated {
            vaddr
        } else if let Some(paddr) = self.tlb.held(level, access, vaddr) {
            paddr
        } else {
            self.walk(ram, vaddr, access, privilege, satp_mode)?
        };
        let page = paddr & !(PAGE_SIZE - 1);
        // What PMP allows on the whole page it allows on every access inside it, so one
        // check serves the access and the TLB fill.
        let whole_page_ok =
            self.pmp_check(page, PAGE_SIZE, access, privilege) == PmpVerdict::Allowed;
        if !whole_page_ok
            && self.pmp_check(paddr, size as u64, access, privilege) != PmpVerdict::Allowed
        {
            return Err(access.access_fault(vaddr));
        }
        let mut watched_page =
            !self.watchpoints.is_empty() && self.check_watchpoints(vaddr, size, access);
        if self.data_triggers_armed && access != Access::Exec {
            let what = match access {
                Access::Load => crate::trigger::LOAD,
                _ => crate::trigger::STORE,
            };
            self.data_trigger_check(vaddr, size as u64, what)?;
            watched_page |= self.data_trigger_on_page(vaddr);
        }
        // Whether later accesses to the page may skip this path (a walk in a store's
        // translation has set the dirty bit).
        let fast = ram.offset(page).filter(|&off| {
            whole_page_ok
                && !watched_page
                && (access != Access::Store || (ram.is_ram_offset(off) && !ram.is_code_page(off)))
        });
        if let (Some(off), Access::Store) = (fast, access) {
            // Fast-path stores never mark pages, so mark it now (see `Ram::dirty`): the slow
            // path's write marks it too, unless the store faults on its next page.
            ram.mark_dirty(off);
        }
        // Untranslated accesses need an entry only for the fast path.
        if translated || fast.is_some() {
            self.tlb.fill(level, access, vaddr, paddr, fast);
        }
        Ok(paddr)
    }

    /// Notes a watchpoint hit by this access (the instruction completes, then the run stops),
    /// and tells whether the page holds a watchpoint (its accesses must stay on this path).
    fn check_watchpoints(&mut self, vaddr: u64, size: u8, access: Access) -> bool {
        use crate::hart::{HartExit, WatchKind};
        let end = vaddr.wrapping_add(size as u64);
        let kind = match access {
            Access::Load => WatchKind::Read,
            Access::Store => WatchKind::Write,
            Access::Exec => return false,
        };
        let hit = self.watchpoints.iter().find(|w| {
            let overlaps = vaddr < w.addr.wrapping_add(w.len) && w.addr < end;
            overlaps && (w.kind == kind || w.kind == WatchKind::Access)
        });
        if let Some(w) = hit {
            self.watch_hit = Some((w.addr.max(vaddr), kind));
            self.request_stop(HartExit::Watchpoint);
        }
        let page = vaddr >> PAGE_SHIFT;
        self.watchpoints.iter().any(|w| {
            let first = w.addr >> PAGE_SHIFT;
            let last = w.addr.wrapping_add(w.len.max(1) - 1) >> PAGE_SHIFT;
            (first..=last).contains(&page)
        })
    }

    /// Walks the page table, setting the leaf's accessed (and for stores dirty) bit; returns
    /// the physical address.
    fn walk(
        &mut self,
        ram: &mut Ram,
        vaddr: u64,
        access: Access,
        privilege: u8,
        satp_mode: u64,
    ) -> Result<u64, Trap> {
        let levels = match satp_mode {
            SATP_MODE_SV39 => 3,
            SATP_MODE_SV48 => 4,
            _ => return Err(access.page_fault(vaddr)),
        };
        let va_bits = 12 + 9 * levels;
        // The address must be sign-extended from its top bit.
        let top = (vaddr as i64) >> (va_bits - 1);
        if top != 0 && top != -1 {
            return Err(access.page_fault(vaddr));
        }
        let mut table = (self.state.csr.satp & PPN_MASK) << PAGE_SHIFT;
        for level in (0..levels).rev() {
            let vpn = (vaddr >> (12 + 9 * level)) & 0x1ff;
            let pte_addr = table + vpn * 8;
            // Page-table reads are S-mode accesses for PMP.
            if self.pmp_check(pte_addr, 8, Access::Load, PRIV_S) != PmpVerdict::Allowed {
                return Err(access.access_fault(vaddr));
            }
            let mut buf = [0u8; 8];
            ram.read(pte_addr, &mut buf)
                .ok_or_else(|| access.access_fault(vaddr))?;
            let pte = u64::from_le_bytes(buf);
            if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) || pte & PTE_RESERVED != 0
            {
                return Err(access.page_fault(vaddr));
            }
            let ppn = (pte >> 10) & PPN_MASK;
            if pte & (PTE_R | PTE_X) == 0 {
                if level == 0 || pte & (PTE_A | PTE_D | PTE_U) != 0 {
                    return Err(access.page_fault(vaddr));
                }
                table = ppn << PAGE_SHIFT;
                continue;
            }
            // A leaf: check permissions.
            let user_page = pte & PTE_U != 0;
            let mstatus = self.state.csr.mstatus;
            let mode_ok = match privilege {
                PRIV_U => user_page,
                _ if user_page => access != Access::Exec && mstatus & MSTATUS_SUM != 0,
                _ => true,
            };
            let kind_ok = match access {
                Access::Load => {
                    pte & PTE_R != 0 || (mstatus & MSTATUS_MXR != 0 && pte & PTE_X != 0)
                }
                Access::Store => pte & PTE_W != 0,
                Access::Exec => pte & PTE_X != 0,
            };
            if !mode_ok || !kind_ok {
                return Err(access.page_fault(vaddr));
            }
            let low_ppn_mask = (1u64 << (9 * level)) - 1;
            if ppn & low_ppn_mask != 0 {
                return Err(access.page_fault(vaddr)); // misaligned superpage
            }
            let mut new_pte = pte | PTE_A;
            if access == Access::Store {
                new_pte |= PTE_D;
            }
            if new_pte != pte {
                if self.pmp_check(pte_addr, 8, Access::Store, PRIV_S) != PmpVerdict::Allowed {
                    return Err(access.access_fault(vaddr));
                }
                ram.write(pte_addr, &new_pte.to_le_bytes())
                    .ok_or_else(|| access.access_fault(vaddr))?;
            }
            let page_mask = (1u64 << (12 + 9 * level)) - 1;
            let paddr = ((ppn << PAGE_SHIFT) & !page_mask) | (vaddr & page_mask);
            return Ok(paddr);
        }
        Err(access.page_fault(vaddr))
    }

    /// PMP judgement for `[addr, addr + len)`: the lowest-numbered entry that matches any byte
    /// decides, and must cover all of them.
    #[inline]
    fn pmp_check(&self, addr: u64, len: u64, access: Access, privilege: u8) -> PmpVerdict {
        self.pmp
            .check(&self.state.csr, addr, len, access, privilege)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SV39: u64 = 8 << 60;

    fn held(tlb: &Tlb, vaddr: u64) -> Option<u64> {
        tlb.held(1, Access::Load, vaddr)
    }

    #[test]
    fn address_spaces_keep_their_translations_until_a_fence_covers_them() {
        let (a, b) = (SV39 | 1 << 44 | 0x100, SV39 | 2 << 44 | 0x200);
        let mut tlb = Tlb::default();
        tlb.switch(a);
        tlb.fill(1, Access::Load, 0x4000_0000, 0x8000_1000, Some(0x1000));
        tlb.switch(b);
        assert_eq!(held(&tlb, 0x4000_0008), None, "another address space");
        tlb.fill(1, Access::Load, 0x4000_0000, 0x8000_2000, None);
        tlb.switch(a);
        assert_eq!(held(&tlb, 0x4000_0008), Some(0x8000_1008));
        assert_eq!(tlb.read_hit(1, 0x4000_0008, 8), Some(0x1008));
        // A fence for ASID 2 leaves ASID 1's translations; one without operands drops all.
        tlb.flush_asid(2);
        tlb.switch(b);
        assert_eq!(held(&tlb, 0x4000_0000), None);
        tlb.switch(a);
        assert_eq!(held(&tlb, 0x4000_0000), Some(0x8000_1000));
        // Off the fast path, the translation is still held.
        tlb.slow_all();
        assert_eq!(tlb.read_hit(1, 0x4000_0008, 8), None);
        assert_eq!(held(&tlb, 0x4000_0008), Some(0x8000_1008));
        // A snapshot's contents come back, in another TLB, off the fast path.
        let saved = tlb.save();
        let mut restored = Tlb::default();
        restored.restore(&saved, a);
        assert_eq!(held(&restored, 0x4000_0010), Some(0x8000_1010));
        assert_eq!(restored.read_hit(1, 0x4000_0010, 8), None);
        assert_eq!(restored.save(), saved);
        tlb.flush();
        assert_eq!(held(&tlb, 0x4000_0000), None);
    }
}
