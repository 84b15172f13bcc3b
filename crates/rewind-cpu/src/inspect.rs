//! Looking at a hart from outside, as a debugger does: CSR values and address translation
//! without side effects (no traps, no accessed/dirty bits, no TLB fills).

use crate::csr::num;
use crate::hart::{Hart, PRIV_M};
use crate::ram::{Ram, PAGE_SHIFT};

const PTE_V: u64 = 1;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PPN_MASK: u64 = (1 << 44) - 1;

impl Hart {
    /// The value a CSR read would give in M-mode, or `None` for a CSR that does not exist.
    pub fn debug_csr(&self, csr: u16) -> Option<u64> {
        let s = &self.state.csr;
        Some(match csr {
            num::FFLAGS => s.fflags as u64,
            num::FRM => s.frm as u64,
            num::FCSR => (s.frm as u64) << 5 | s.fflags as u64,
            0xc00 => self.mcycle(),
            0xc01 => self.mtime(),
            0xc02 => self.minstret(),
            _ => self.read_csr(csr, 0).ok()?,
        })
    }

    /// The physical address a data access at `vaddr` would reach now (the current privilege
    /// and `satp`), or `None` if it would fault.
    pub fn debug_translate(&self, ram: &Ram, vaddr: u64) -> Option<u64> {
        let mode = self.state.csr.satp >> 60;
        if self.state.privilege == PRIV_M || mode == 0 {
            return Some(vaddr);
        }
        let levels = match mode {
            8 => 3,
            9 => 4,
            _ => return None,
        };
        let va_bits = 12 + 9 * levels;
        let top = (vaddr as i64) >> (va_bits - 1);
        if top != 0 && top != -1 {
            return None;
        }
        let mut table = (self.state.csr.satp & PPN_MASK) << PAGE_SHIFT;
        for level in (0..levels).rev() {
            let vpn = (vaddr >> (12 + 9 * level)) & 0x1ff;
            let mut buf = [0u8; 8];
            ram.read(table + vpn * 8, &mut buf)?;
            let pte = u64::from_le_bytes(buf);
            if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) {
                return None;
            }
            let ppn = (pte >> 10) & PPN_MASK;
            if pte & (PTE_R | PTE_X) == 0 {
                table = ppn << PAGE_SHIFT;
                continue;
            }
            let page_mask = (1u64 << (12 + 9 * level)) - 1;
            return Some(((ppn << PAGE_SHIFT) & !page_mask) | (vaddr & page_mask));
        }
        None
    }
}
