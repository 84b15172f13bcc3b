//! Address translation (Sv39/Sv48 with hardware A/D updates), PMP, and the software TLB.
//!
//! The TLB caches, per privilege level and access kind, a virtual page's offset into RAM.
//! An entry exists only when the whole 4 KiB page is RAM, is allowed by PMP as one piece, and
//! (for writes) already has its dirty bit set and holds no decoded instructions, so a hit needs
//! no further check at all.

use crate::csr::{MSTATUS_MXR, MSTATUS_SUM, SATP_MODE_SV39, SATP_MODE_SV48};
use crate::hart::{Hart, PRIV_M, PRIV_S, PRIV_U};
use crate::pmp::PmpVerdict;
use crate::ram::{Ram, PAGE_SHIFT, PAGE_SIZE};
use crate::trap::{Access, Trap};

pub(crate) const TLB_ENTRIES: usize = 8192;

/// `repr(C)`: compiled code reads entries as `{ vpn, delta }`.
#[derive(Clone, Copy)]
#[repr(C)]
struct TlbEntry {
    /// Virtual page number, or `u64::MAX` when empty.
    vpn: u64,
    /// RAM offset of the page minus its virtual address.
    delta: u64,
}

const EMPTY: TlbEntry = TlbEntry {
    vpn: u64::MAX,
    delta: 0,
};

/// Three privilege levels (U, S, M) × three access kinds.
pub(crate) struct Tlb {
    /// Data sets by [`data_level`]: S-mode with `mstatus.SUM` has its own, so that Linux's
    /// toggling of SUM around every copy to or from user memory needs no flush.
    /// (On the heap, as they are large: built in place, they could overflow a thread's stack.)
    read: Box<[[TlbEntry; TLB_ENTRIES]]>,
    write: Box<[[TlbEntry; TLB_ENTRIES]]>,
    exec: Box<[[TlbEntry; TLB_ENTRIES]]>,
    /// Slots filled since the last flush, as `set * TLB_ENTRIES + index` with the sets
    /// numbered read, write, exec: a flush clears these rather than all eleven sets, which
    /// matters because Linux writes `satp` at every context switch.
    filled: Vec<u32>,
    /// More slots were filled than `filled` keeps: the next flush clears everything.
    filled_overflow: bool,
}

/// How many filled slots the TLB remembers before a flush clears every set instead.
const FILL_LOG: usize = 1024;

/// U, S, M, and S with SUM set.
const DATA_LEVELS: usize = 4;

/// The TLB data set for accesses at effective privilege `privilege` with `mstatus.SUM` =
/// `sum` (which only S-mode sees).
pub(crate) fn data_level(privilege: u8, sum: bool) -> u8 {
    match (level_index(privilege), sum) {
        (1, true) => 3,
        (level, _) => level as u8,
    }
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            read: vec![[EMPTY; TLB_ENTRIES]; DATA_LEVELS].into_boxed_slice(),
            write: vec![[EMPTY; TLB_ENTRIES]; DATA_LEVELS].into_boxed_slice(),
            exec: vec![[EMPTY; TLB_ENTRIES]; 3].into_boxed_slice(),
            filled: Vec::with_capacity(FILL_LOG),
            filled_overflow: false,
        }
    }
}

#[inline(always)]
fn level_index(privilege: u8) -> usize {
    // U = 0, S = 1, M = 3 -> 0, 1, 2
    (privilege as usize).min(2)
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

impl Tlb {
    pub(crate) fn flush(&mut self) {
        if self.filled_overflow {
            for set in self
                .read
                .iter_mut()
                .chain(&mut self.write)
                .chain(&mut self.exec)
            {
                set.fill(EMPTY);
            }
        } else {
            for k in 0..self.filled.len() {
                let slot = self.filled[k] as usize;
                self.set_mut(slot / TLB_ENTRIES)[slot % TLB_ENTRIES] = EMPTY;
            }
        }
        self.filled.clear();
        self.filled_overflow = false;
    }

    /// Set `n`, numbered read sets, write sets, exec sets.
    fn set_mut(&mut self, n: usize) -> &mut [TlbEntry; TLB_ENTRIES] {
        if n < DATA_LEVELS {
            &mut self.read[n]
        } else if n < 2 * DATA_LEVELS {
            &mut self.write[n - DATA_LEVELS]
        } else {
            &mut self.exec[n - 2 * DATA_LEVELS]
        }
    }

    /// Drops every store entry.
    pub(crate) fn flush_writes(&mut self) {
        for set in &mut self.write {
            set.fill(EMPTY);
        }
    }

    /// Drops every entry for the page of `vaddr` (`sfence.vma` with an address).
    pub(crate) fn flush_page(&mut self, vaddr: u64) {
        let vpn = vaddr >> PAGE_SHIFT;
        let index = vpn as usize & (TLB_ENTRIES - 1);
        for set in self
            .read
            .iter_mut()
            .chain(&mut self.write)
            .chain(&mut self.exec)
        {
            if set[index].vpn == vpn {
                set[index] = EMPTY;
            }
        }
    }

    #[inline(always)]
    pub(crate) fn read_hit(&self, level: u8, addr: u64, size: usize) -> Option<usize> {
        lookup(&self.read[level as usize], addr, size)
    }

    #[inline(always)]
    pub(crate) fn write_hit(&self, level: u8, addr: u64, size: usize) -> Option<usize> {
        lookup(&self.write[level as usize], addr, size)
    }

    /// The load and store sets of data level `level`, for compiled code.
    pub(crate) fn data_sets(&self, level: u8) -> (*const u8, *const u8) {
        let level = level as usize;
        (
            self.read[level].as_ptr().cast(),
            self.write[level].as_ptr().cast(),
        )
    }

    /// The fetch set of `privilege`, for compiled code.
    pub(crate) fn exec_set(&self, privilege: u8) -> *const u8 {
        self.exec[level_index(privilege)].as_ptr().cast()
    }

    #[inline]
    pub(crate) fn exec_hit(&self, privilege: u8, addr: u64) -> Option<usize> {
        lookup(&self.exec[level_index(privilege)], addr, 2)
    }

    /// Caches a translation: `level` is the data level for loads and stores, the privilege's
    /// level for fetches.
    fn fill(&mut self, level: u8, access: Access, vaddr: u64, ram_off: usize) {
        let vpn = vaddr >> PAGE_SHIFT;
        let entry = TlbEntry {
            vpn,
            delta: ((ram_off as u64) & !(PAGE_SIZE - 1)).wrapping_sub(vpn << PAGE_SHIFT),
        };
        let index = vpn as usize & (TLB_ENTRIES - 1);
        let level = level as usize;
        let set = match access {
            Access::Load => level,
            Access::Store => DATA_LEVELS + level,
            Access::Exec => 2 * DATA_LEVELS + level_index(level as u8),
        };
        self.set_mut(set)[index] = entry;
        if self.filled.len() < FILL_LOG {
            self.filled.push((set * TLB_ENTRIES + index) as u32);
        } else {
            self.filled_overflow = true;
        }
    }

    /// Drops write entries that reach the RAM page at `page_off` (it now holds code).
    pub(crate) fn forget_writable(&mut self, page_off: usize) {
        for set in &mut self.write {
            for e in set.iter_mut() {
                if e.vpn != u64::MAX
                    && (e.vpn << PAGE_SHIFT).wrapping_add(e.delta) as usize == page_off
                {
                    *e = EMPTY;
                }
            }
        }
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
        let (paddr, writable_now) = if privilege == PRIV_M || satp_mode == 0 {
            (vaddr, true)
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
        if let Some(off) = ram.offset(page).filter(|_| !watched_page) {
            let fill = whole_page_ok
                && match access {
                    Access::Store => {
                        writable_now && ram.is_ram_offset(off) && !ram.is_code_page(off)
                    }
                    _ => true,
                };
            if fill {
                if access == Access::Store {
                    // Fast-path stores never mark pages, so mark it now (see `Ram::dirty`): the
                    // slow path's write marks it too, unless the store faults on its next page.
                    ram.mark_dirty(off);
                }
                let level = match access {
                    Access::Exec => privilege,
                    _ => self.data_level,
                };
                self.tlb.fill(level, access, vaddr, off);
            }
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

    /// Walks the page table. Returns the physical address and whether a store may hit the page
    /// without further A/D updates.
    fn walk(
        &mut self,
        ram: &mut Ram,
        vaddr: u64,
        access: Access,
        privilege: u8,
        satp_mode: u64,
    ) -> Result<(u64, bool), Trap> {
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
            return Ok((paddr, new_pte & PTE_D != 0));
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
