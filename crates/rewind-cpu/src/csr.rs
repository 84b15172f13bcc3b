//! Control and status registers: state, access rules and WARL behaviour (following QEMU's
//! `virt` board where the specification leaves a choice).

use crate::hart::{Hart, PRIV_M, PRIV_S, PRIV_U};
use crate::trap::Trap;
use crate::trigger::{self, TRIGGERS};

pub const MSTATUS_SIE: u64 = 1 << 1;
pub const MSTATUS_MIE: u64 = 1 << 3;
pub const MSTATUS_SPIE: u64 = 1 << 5;
pub const MSTATUS_MPIE: u64 = 1 << 7;
pub const MSTATUS_SPP: u64 = 1 << 8;
pub const MSTATUS_MPP: u64 = 3 << 11;
pub const MSTATUS_FS: u64 = 3 << 13;
pub const MSTATUS_MPRV: u64 = 1 << 17;
pub const MSTATUS_SUM: u64 = 1 << 18;
pub const MSTATUS_MXR: u64 = 1 << 19;
pub const MSTATUS_TVM: u64 = 1 << 20;
pub const MSTATUS_TW: u64 = 1 << 21;
pub const MSTATUS_TSR: u64 = 1 << 22;
/// UXL = SXL = 2 (64-bit), read-only.
const MSTATUS_XLEN: u64 = 2 << 32 | 2 << 34;
/// Bits that a stored mstatus may hold (SD is computed on reads).
pub(crate) const MSTATUS_STORED: u64 = MSTATUS_WRITABLE | MSTATUS_XLEN | MSTATUS_SD;
const MSTATUS_SD: u64 = 1 << 63;

const MSTATUS_WRITABLE: u64 = MSTATUS_SIE
    | MSTATUS_MIE
    | MSTATUS_SPIE
    | MSTATUS_MPIE
    | MSTATUS_SPP
    | MSTATUS_MPP
    | MSTATUS_FS
    | MSTATUS_MPRV
    | MSTATUS_SUM
    | MSTATUS_MXR
    | MSTATUS_TVM
    | MSTATUS_TW
    | MSTATUS_TSR;
const SSTATUS_VISIBLE: u64 = MSTATUS_SIE
    | MSTATUS_SPIE
    | MSTATUS_SPP
    | MSTATUS_FS
    | MSTATUS_SUM
    | MSTATUS_MXR
    | 3 << 32
    | MSTATUS_SD;

/// RV64 with A, C, D, F, I, M, S, U.
pub const MISA: u64 = 2 << 62 | 1 | 1 << 2 | 1 << 3 | 1 << 5 | 1 << 8 | 1 << 12 | 1 << 18 | 1 << 20;

/// menvcfg.STCE: Sstc's stimecmp drives STIP.
pub const MENVCFG_STCE: u64 = 1 << 63;

const MIP_SSIP: u64 = 1 << 1;
const MIP_STIP: u64 = 1 << 5;
const MIP_SEIP: u64 = 1 << 9;
const S_INTERRUPTS: u64 = MIP_SSIP | MIP_STIP | MIP_SEIP;
const ALL_INTERRUPTS: u64 = S_INTERRUPTS | 1 << 3 | 1 << 7 | 1 << 11;
/// Exceptions that may be delegated to S-mode (as QEMU: not ECALL from M).
const DELEGABLE_EXCEPTIONS: u64 = 0xb3ff;

pub const SATP_MODE_BARE: u64 = 0;
pub const SATP_MODE_SV39: u64 = 8;
pub const SATP_MODE_SV48: u64 = 9;

pub const PMP_ENTRIES: usize = 16;

/// `mcountinhibit` bits that stop `mcycle` and `minstret`.
pub const INHIBIT_CY: u64 = 1 << 0;
pub const INHIBIT_IR: u64 = 1 << 2;
/// Writable `mcountinhibit` bits, as QEMU 10's `virt` hart: CY, IR and the 16 counters
/// mhpmcounter3..18 (which read 0 here).
const MCOUNTINHIBIT_WRITABLE: u64 = 0x7fffd;

/// CSR numbers used by name elsewhere.
pub mod num {
    pub const FFLAGS: u16 = 0x001;
    pub const FRM: u16 = 0x002;
    pub const FCSR: u16 = 0x003;
    pub const SSTATUS: u16 = 0x100;
    pub const SIE: u16 = 0x104;
    pub const STVEC: u16 = 0x105;
    pub const SCOUNTEREN: u16 = 0x106;
    pub const SENVCFG: u16 = 0x10a;
    pub const SSCRATCH: u16 = 0x140;
    pub const SEPC: u16 = 0x141;
    pub const SCAUSE: u16 = 0x142;
    pub const STVAL: u16 = 0x143;
    pub const SIP: u16 = 0x144;
    pub const STIMECMP: u16 = 0x14d;
    pub const SATP: u16 = 0x180;
    pub const MSTATUS: u16 = 0x300;
    pub const MISA: u16 = 0x301;
    pub const MEDELEG: u16 = 0x302;
    pub const MIDELEG: u16 = 0x303;
    pub const MIE: u16 = 0x304;
    pub const MTVEC: u16 = 0x305;
    pub const MCOUNTEREN: u16 = 0x306;
    pub const MENVCFG: u16 = 0x30a;
    pub const MCOUNTINHIBIT: u16 = 0x320;
    pub const MSCRATCH: u16 = 0x340;
    pub const MEPC: u16 = 0x341;
    pub const MCAUSE: u16 = 0x342;
    pub const MTVAL: u16 = 0x343;
    pub const MIP: u16 = 0x344;
    pub const PMPCFG0: u16 = 0x3a0;
    pub const PMPADDR0: u16 = 0x3b0;
    pub const TSELECT: u16 = 0x7a0;
    pub const TDATA1: u16 = 0x7a1;
    pub const TDATA2: u16 = 0x7a2;
    pub const TDATA3: u16 = 0x7a3;
    pub const TINFO: u16 = 0x7a4;
    pub const MCONTEXT: u16 = 0x7a8;
    pub const MCYCLE: u16 = 0xb00;
    pub const MINSTRET: u16 = 0xb02;
    pub const CYCLE: u16 = 0xc00;
    pub const TIME: u16 = 0xc01;
    pub const INSTRET: u16 = 0xc02;
    pub const MVENDORID: u16 = 0xf11;
    pub const MARCHID: u16 = 0xf12;
    pub const MIMPID: u16 = 0xf13;
    pub const MHARTID: u16 = 0xf14;
    pub const MCONFIGPTR: u16 = 0xf15;
}

/// Every CSR value that is guest-visible state. Counters are stored as offsets from the
/// instruction count so that they need no work per instruction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CsrState {
    pub mstatus: u64,
    pub medeleg: u64,
    pub mideleg: u64,
    pub mie: u64,
    /// Software-writable pending bits; device lines are in `Hart::irq_lines`.
    pub mip: u64,
    pub mtvec: u64,
    pub mcounteren: u64,
    pub mcountinhibit: u64,
    pub mscratch: u64,
    pub mepc: u64,
    pub mcause: u64,
    pub mtval: u64,
    pub menvcfg: u64,
    pub stvec: u64,
    pub scounteren: u64,
    pub sscratch: u64,
    pub sepc: u64,
    pub scause: u64,
    pub stval: u64,
    pub senvcfg: u64,
    pub satp: u64,
    /// Sstc: supervisor timer compare (STIP follows `time >= stimecmp` when `menvcfg.STCE`).
    pub stimecmp: u64,
    pub fflags: u8,
    pub frm: u8,
    pub pmpcfg: [u8; PMP_ENTRIES],
    pub pmpaddr: [u64; PMP_ENTRIES],
    /// `mcycle - icount`, changed by writes to `mcycle`; while `mcountinhibit.CY` is set,
    /// the frozen value of `mcycle` itself.
    pub mcycle_offset: u64,
    /// `minstret - icount`, changed by writes to `minstret`; while `mcountinhibit.IR` is set,
    /// the frozen value of `minstret` itself.
    pub minstret_offset: u64,
    /// Sdtrig (see `trigger.rs`): the selected trigger, always below `TRIGGERS`.
    pub tselect: u64,
    pub tdata1: [u64; TRIGGERS],
    pub tdata2: [u64; TRIGGERS],
    pub tdata3: [u64; TRIGGERS],
    pub mcontext: u64,
}

impl Default for CsrState {
    /// The CSRs at reset: zero, but for the triggers' type.
    fn default() -> Self {
        CsrState {
            mstatus: 0,
            medeleg: 0,
            mideleg: 0,
            mie: 0,
            mip: 0,
            mtvec: 0,
            mcounteren: 0,
            mcountinhibit: 0,
            mscratch: 0,
            mepc: 0,
            mcause: 0,
            mtval: 0,
            menvcfg: 0,
            stvec: 0,
            scounteren: 0,
            sscratch: 0,
            sepc: 0,
            scause: 0,
            stval: 0,
            senvcfg: 0,
            satp: 0,
            stimecmp: 0,
            fflags: 0,
            frm: 0,
            pmpcfg: [0; PMP_ENTRIES],
            pmpaddr: [0; PMP_ENTRIES],
            mcycle_offset: 0,
            minstret_offset: 0,
            tselect: 0,
            tdata1: [trigger::TDATA1_RESET; TRIGGERS],
            tdata2: [0; TRIGGERS],
            tdata3: [0; TRIGGERS],
            mcontext: 0,
        }
    }
}

impl CsrState {
    /// Every field with its CSR name, in a fixed order: for reports that say which CSR
    /// differs, and for debuggers. PMP configuration bytes are packed as `pmpcfg0`/`pmpcfg2`.
    pub fn named_values(&self) -> Vec<(String, u64)> {
        let packed = |half: &[u8]| half.iter().rev().fold(0u64, |acc, &b| acc << 8 | b as u64);
        let mut values: Vec<(String, u64)> = [
            ("mstatus", self.mstatus),
            ("medeleg", self.medeleg),
            ("mideleg", self.mideleg),
            ("mie", self.mie),
            ("mip", self.mip),
            ("mtvec", self.mtvec),
            ("mcounteren", self.mcounteren),
            ("mcountinhibit", self.mcountinhibit),
            ("mscratch", self.mscratch),
            ("mepc", self.mepc),
            ("mcause", self.mcause),
            ("mtval", self.mtval),
            ("menvcfg", self.menvcfg),
            ("stvec", self.stvec),
            ("scounteren", self.scounteren),
            ("sscratch", self.sscratch),
            ("sepc", self.sepc),
            ("scause", self.scause),
            ("stval", self.stval),
            ("senvcfg", self.senvcfg),
            ("satp", self.satp),
            ("stimecmp", self.stimecmp),
            ("fflags", self.fflags as u64),
            ("frm", self.frm as u64),
            ("pmpcfg0", packed(&self.pmpcfg[..8])),
            ("pmpcfg2", packed(&self.pmpcfg[8..])),
            ("mcycle_offset", self.mcycle_offset),
            ("minstret_offset", self.minstret_offset),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        values.extend(
            self.pmpaddr
                .iter()
                .enumerate()
                .map(|(i, &v)| (format!("pmpaddr{i}"), v)),
        );
        values.push(("tselect".to_string(), self.tselect));
        for i in 0..TRIGGERS {
            values.push((format!("tdata1[{i}]"), self.tdata1[i]));
            values.push((format!("tdata2[{i}]"), self.tdata2[i]));
            values.push((format!("tdata3[{i}]"), self.tdata3[i]));
        }
        values.push(("mcontext".to_string(), self.mcontext));
        values
    }
}

/// Whether writing `csr` can change which interrupt is pending and enabled: after such a
/// write, [`Hart::run`] ends if an interrupt is now to be taken.
pub fn may_unmask_interrupts(csr: u16) -> bool {
    use num::*;
    matches!(csr, MSTATUS | SSTATUS | MIE | SIE | MIP | SIP | MIDELEG)
}

/// Whether writing `csr` can move when a timer fires: such writes end [`Hart::run`], so that
/// the machine works the run's budget out again.
pub fn moves_timer_deadline(csr: u16) -> bool {
    use num::*;
    matches!(csr, MENVCFG | STIMECMP)
}

/// Whether writing `csr` can arm or disarm a trigger: such writes end [`Hart::run`] too, so
/// that the next run picks the loop that checks execute triggers.
pub fn affects_triggers(csr: u16) -> bool {
    use num::*;
    matches!(csr, TSELECT | TDATA1 | TDATA2 | TDATA3 | MCONTEXT)
}

impl Hart {
    /// Privilege and read-only checks shared by every CSR instruction.
    pub(crate) fn check_csr_access(&self, csr: u16, write: bool, bits: u32) -> Result<(), Trap> {
        let min_priv = ((csr >> 8) & 3) as u8;
        let read_only = csr >> 10 == 3;
        if self.state.privilege < min_priv || (write && read_only) {
            return Err(Trap::illegal(bits));
        }
        if csr == num::SATP
            && self.state.privilege == PRIV_S
            && self.state.csr.mstatus & MSTATUS_TVM != 0
        {
            return Err(Trap::illegal(bits));
        }
        Ok(())
    }

    fn fs_enabled(&self) -> bool {
        self.state.csr.mstatus & MSTATUS_FS != 0
    }

    /// Reads a counter, honouring `mcounteren`/`scounteren` below M-mode.
    fn read_counter(&self, index: u16, bits: u32) -> Result<u64, Trap> {
        let bit = 1u64 << index;
        let allowed = match self.state.privilege {
            PRIV_M => true,
            PRIV_S => self.state.csr.mcounteren & bit != 0,
            _ => self.state.csr.mcounteren & bit != 0 && self.state.csr.scounteren & bit != 0,
        };
        if !allowed {
            return Err(Trap::illegal(bits));
        }
        Ok(match index {
            0 => self.mcycle(),
            1 => self.mtime(),
            2 => self.minstret(),
            _ => 0,
        })
    }

    /// `mcycle`: it counts instructions, like `minstret`, unless `mcountinhibit.CY` stops it.
    pub fn mcycle(&self) -> u64 {
        counter(
            self.state.icount,
            self.state.csr.mcycle_offset,
            self.state.csr.mcountinhibit & INHIBIT_CY != 0,
        )
    }

    /// `minstret`, unless `mcountinhibit.IR` stops it.
    pub fn minstret(&self) -> u64 {
        counter(
            self.state.icount,
            self.state.csr.minstret_offset,
            self.state.csr.mcountinhibit & INHIBIT_IR != 0,
        )
    }

    /// A counter write: the value the next instruction reads (the writing one does not count).
    fn write_counter(&self, offset: &mut u64, inhibited: bool, value: u64) {
        *offset = if inhibited {
            value
        } else {
            value.wrapping_sub(self.state.icount + 1)
        };
    }

    /// `mcountinhibit` writes: a counter that stops keeps its value after this instruction
    /// (which counts); one that restarts gives that value to the next instruction.
    fn write_mcountinhibit(&mut self, value: u64) {
        let old = self.state.csr.mcountinhibit;
        let new = value & MCOUNTINHIBIT_WRITABLE;
        let next = self.state.icount + 1;
        for (bit, offset) in [
            (INHIBIT_CY, &mut self.state.csr.mcycle_offset),
            (INHIBIT_IR, &mut self.state.csr.minstret_offset),
        ] {
            match (old & bit != 0, new & bit != 0) {
                (false, true) => *offset = next.wrapping_add(*offset),
                (true, false) => *offset = offset.wrapping_sub(next),
                _ => {}
            }
        }
        self.state.csr.mcountinhibit = new;
    }

    fn selected_trigger(&self) -> usize {
        self.state.csr.tselect as usize % TRIGGERS
    }

    pub(crate) fn read_csr(&self, csr: u16, bits: u32) -> Result<u64, Trap> {
        use num::*;
        let s = &self.state.csr;
        let illegal = Err(Trap::illegal(bits));
        Ok(match csr {
            FFLAGS | FRM | FCSR if !self.fs_enabled() => return illegal,
            FFLAGS => s.fflags as u64,
            FRM => s.frm as u64,
            FCSR => (s.frm as u64) << 5 | s.fflags as u64,
            0xc00..=0xc1f => return self.read_counter(csr - 0xc00, bits),
            SSTATUS => self.read_mstatus() & SSTATUS_VISIBLE,
            SIE => s.mie & s.mideleg,
            STVEC => s.stvec,
            SCOUNTEREN => s.scounteren,
            SENVCFG => s.senvcfg,
            SSCRATCH => s.sscratch,
            SEPC => s.sepc,
            SCAUSE => s.scause,
            STVAL => s.stval,
            SIP => self.mip() & s.mideleg,
            SATP => s.satp,
            STIMECMP => s.stimecmp,
            MSTATUS => self.read_mstatus(),
            num::MISA => self::MISA,
            MEDELEG => s.medeleg,
            MIDELEG => s.mideleg,
            MIE => s.mie,
            MTVEC => s.mtvec,
            MCOUNTEREN => s.mcounteren,
            MENVCFG => s.menvcfg,
            MCOUNTINHIBIT => s.mcountinhibit,
            MSCRATCH => s.mscratch,
            MEPC => s.mepc,
            MCAUSE => s.mcause,
            MTVAL => s.mtval,
            MIP => self.mip(),
            0x3a0..=0x3a3 => {
                let index = (csr - PMPCFG0) as usize;
                if index % 2 == 1 {
                    return illegal;
                }
                let bytes: [u8; 8] = s.pmpcfg[index * 4..index * 4 + 8]
                    .try_into()
                    .unwrap_or_default();
                u64::from_le_bytes(bytes)
            }
            0x3b0..=0x3bf => s.pmpaddr[(csr - PMPADDR0) as usize],
            MCYCLE => self.mcycle(),
            MINSTRET => self.minstret(),
            0xb03..=0xb1f | 0x323..=0x33f => 0,
            TSELECT => s.tselect,
            TDATA1 => s.tdata1[self.selected_trigger()],
            TDATA2 => s.tdata2[self.selected_trigger()],
            TDATA3 => s.tdata3[self.selected_trigger()],
            TINFO => trigger::TINFO,
            MCONTEXT => s.mcontext,
            MVENDORID | MARCHID | MIMPID | MCONFIGPTR => 0,
            MHARTID => self.state.hart_id,
            _ => return illegal,
        })
    }

    pub fn read_mstatus(&self) -> u64 {
        let m = self.state.csr.mstatus | MSTATUS_XLEN;
        if m & MSTATUS_FS == MSTATUS_FS {
            m | MSTATUS_SD
        } else {
            m
        }
    }

    pub(crate) fn write_csr(&mut self, csr: u16, value: u64, bits: u32) -> Result<(), Trap> {
        use num::*;
        let illegal = Err(Trap::illegal(bits));
        match csr {
            FFLAGS | FRM | FCSR if !self.fs_enabled() => return illegal,
            FFLAGS => {
                self.state.csr.fflags = (value & 0x1f) as u8;
                self.mark_fs_dirty();
            }
            FRM => {
                self.state.csr.frm = (value & 7) as u8;
                self.mark_fs_dirty();
            }
            FCSR => {
                self.state.csr.fflags = (value & 0x1f) as u8;
                self.state.csr.frm = ((value >> 5) & 7) as u8;
                self.mark_fs_dirty();
            }
            SSTATUS => {
                let mask = SSTATUS_VISIBLE & MSTATUS_WRITABLE;
                self.write_mstatus((self.state.csr.mstatus & !mask) | (value & mask));
            }
            SIE => {
                let mask = self.state.csr.mideleg;
                self.state.csr.mie = (self.state.csr.mie & !mask) | (value & mask);
            }
            STVEC => write_tvec(&mut self.state.csr.stvec, value),
            SCOUNTEREN => self.state.csr.scounteren = value & 0xffff_ffff,
            SENVCFG => self.state.csr.senvcfg = value & 1,
            SSCRATCH => self.state.csr.sscratch = value,
            SEPC => self.state.csr.sepc = value & !1,
            SCAUSE => self.state.csr.scause = value,
            STVAL => self.state.csr.stval = value,
            STIMECMP => self.state.csr.stimecmp = value,
            SIP => {
                let mask = self.state.csr.mideleg & MIP_SSIP;
                self.state.csr.mip = (self.state.csr.mip & !mask) | (value & mask);
            }
            SATP => {
                let mode = value >> 60;
                if matches!(mode, SATP_MODE_BARE | SATP_MODE_SV39 | SATP_MODE_SV48) {
                    // As QEMU: all 16 ASID bits are writable; an unsupported mode ignores the write.
                    // The write itself fences nothing: the address space keeps what it held.
                    self.state.csr.satp = value;
                    self.tlb.switch(value);
                    self.context_changed();
                }
            }
            MSTATUS => self.write_mstatus(value),
            num::MISA => {}
            MEDELEG => self.state.csr.medeleg = value & DELEGABLE_EXCEPTIONS,
            MIDELEG => self.state.csr.mideleg = value & S_INTERRUPTS,
            MIE => self.state.csr.mie = value & ALL_INTERRUPTS,
            MTVEC => write_tvec(&mut self.state.csr.mtvec, value),
            MCOUNTEREN => self.state.csr.mcounteren = value & 0xffff_ffff,
            MENVCFG => self.state.csr.menvcfg = value & (1 | MENVCFG_STCE),
            MCOUNTINHIBIT => self.write_mcountinhibit(value),
            MSCRATCH => self.state.csr.mscratch = value,
            MEPC => self.state.csr.mepc = value & !1,
            MCAUSE => self.state.csr.mcause = value,
            MTVAL => self.state.csr.mtval = value,
            MIP => {
                let mask = S_INTERRUPTS;
                self.state.csr.mip = (self.state.csr.mip & !mask) | (value & mask);
            }
            0x3a0..=0x3a3 => {
                let index = (csr - PMPCFG0) as usize;
                if index % 2 == 1 {
                    return illegal;
                }
                for (i, byte) in value.to_le_bytes().iter().enumerate() {
                    self.write_pmpcfg(index * 4 + i, *byte);
                }
                self.pmp_changed();
            }
            0x3b0..=0x3bf => {
                self.write_pmpaddr((csr - PMPADDR0) as usize, value);
                self.pmp_changed();
            }
            MCYCLE => {
                let mut offset = self.state.csr.mcycle_offset;
                let inhibited = self.state.csr.mcountinhibit & INHIBIT_CY != 0;
                self.write_counter(&mut offset, inhibited, value);
                self.state.csr.mcycle_offset = offset;
            }
            MINSTRET => {
                let mut offset = self.state.csr.minstret_offset;
                let inhibited = self.state.csr.mcountinhibit & INHIBIT_IR != 0;
                self.write_counter(&mut offset, inhibited, value);
                self.state.csr.minstret_offset = offset;
            }
            0xb03..=0xb1f | 0x323..=0x33f => {}
            // As QEMU: values at or above the number of triggers leave tselect unchanged.
            TSELECT if value < TRIGGERS as u64 => self.state.csr.tselect = value,
            TSELECT => {}
            TDATA1 => {
                let i = self.selected_trigger();
                if let Some(v) = trigger::legal_tdata1(value) {
                    self.state.csr.tdata1[i] = v;
                }
                self.triggers_changed();
            }
            TDATA2 => {
                let i = self.selected_trigger();
                self.state.csr.tdata2[i] = value;
                self.triggers_changed();
            }
            TDATA3 => {
                let i = self.selected_trigger();
                self.state.csr.tdata3[i] = trigger::legal_tdata3(value);
                self.triggers_changed();
            }
            TINFO => {}
            MCONTEXT => {
                self.state.csr.mcontext = value & trigger::MCONTEXT_MASK;
                self.triggers_changed();
            }
            _ => return illegal,
        }
        Ok(())
    }

    fn write_mstatus(&mut self, value: u64) {
        let old = self.state.csr.mstatus;
        let mut new = (old & !MSTATUS_WRITABLE) | (value & MSTATUS_WRITABLE);
        // MPP = 2 is reserved: keep the previous mode (WARL).
        if new & MSTATUS_MPP == 2 << 11 {
            new = (new & !MSTATUS_MPP) | (old & MSTATUS_MPP);
        }
        self.state.csr.mstatus = new;
        // MPRV, MPP and SUM select the TLB set (by effective privilege and SUM, in
        // context_changed), so only MXR, which changes what every set may hold, flushes.
        if (old ^ new) & MSTATUS_MXR != 0 {
            self.flush_translations();
        } else {
            self.context_changed();
        }
    }

    pub(crate) fn mark_fs_dirty(&mut self) {
        self.state.csr.mstatus |= MSTATUS_FS;
    }

    fn write_pmpcfg(&mut self, index: usize, value: u8) {
        if self.state.csr.pmpcfg[index] & 0x80 != 0 {
            return; // locked
        }
        // R = 0 with W = 1 is reserved: as QEMU, drop such writes' W bit.
        let mut v = value & 0x9f;
        if v & 3 == 2 {
            v &= !2;
        }
        self.state.csr.pmpcfg[index] = v;
    }

    fn write_pmpaddr(&mut self, index: usize, value: u64) {
        let locked = self.state.csr.pmpcfg[index] & 0x80 != 0;
        let next_locks_tor = self
            .state
            .csr
            .pmpcfg
            .get(index + 1)
            .is_some_and(|&c| c & 0x80 != 0 && (c >> 3) & 3 == 1);
        if locked || next_locks_tor {
            return;
        }
        self.state.csr.pmpaddr[index] = value & ((1 << 54) - 1);
    }

    /// Privilege mode name, for messages.
    pub fn privilege_name(&self) -> &'static str {
        match self.state.privilege {
            PRIV_U => "U",
            PRIV_S => "S",
            _ => "M",
        }
    }
}

/// A counter stored as an offset from `icount`, or as its frozen value while inhibited.
fn counter(icount: u64, offset: u64, inhibited: bool) -> u64 {
    if inhibited {
        offset
    } else {
        icount.wrapping_add(offset)
    }
}

/// `mtvec`/`stvec`: modes 2 and 3 are reserved, and as on QEMU such a write is ignored.
fn write_tvec(reg: &mut u64, value: u64) {
    if value & 3 < 2 {
        *reg = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inhibited_counters_stop_and_resume_where_they_stopped() {
        let mut hart = Hart::new(0, 0x8000_0000);
        hart.state.icount = 100;
        let before = hart.minstret();
        // csrw mcountinhibit at icount 100: it counts, then minstret stops.
        hart.write_csr(num::MCOUNTINHIBIT, INHIBIT_IR, 0).unwrap();
        hart.state.icount = 500;
        assert_eq!(hart.minstret(), before + 1);
        assert_eq!(hart.mcycle(), 500, "mcycle keeps counting without CY");
        hart.write_csr(num::MCOUNTINHIBIT, 0, 0).unwrap();
        hart.state.icount = 501;
        assert_eq!(
            hart.minstret(),
            before + 1,
            "the restarting write does not count"
        );
        hart.state.icount = 511;
        assert_eq!(hart.minstret(), before + 11);
        // A write while inhibited is what the counter holds until it restarts.
        hart.write_csr(num::MCOUNTINHIBIT, !0, 0).unwrap();
        assert_eq!(hart.state.csr.mcountinhibit, 0x7fffd);
        hart.write_csr(num::MCYCLE, 42, 0).unwrap();
        hart.state.icount = 900;
        assert_eq!(hart.mcycle(), 42);
        assert_eq!(hart.read_csr(num::CYCLE, 0), Ok(42));
    }

    #[test]
    fn trigger_csrs_are_warl_like_qemu() {
        let mut hart = Hart::new(0, 0x8000_0000);
        assert_eq!(hart.read_csr(num::TINFO, 0), Ok(0x44));
        assert_eq!(hart.read_csr(num::TDATA1, 0), Ok(2 << 60));
        hart.write_csr(num::TSELECT, 1, 0).unwrap();
        hart.write_csr(num::TSELECT, 2, 0).unwrap();
        assert_eq!(hart.read_csr(num::TSELECT, 0), Ok(1));
        hart.write_csr(num::TDATA1, 2 << 60 | 1 << 6 | 4, 0)
            .unwrap();
        assert!(hart.exec_triggers_armed && !hart.data_triggers_armed);
        hart.write_csr(num::TDATA1, 4 << 60 | 1, 0).unwrap();
        assert_eq!(hart.read_csr(num::TDATA1, 0), Ok(2 << 60 | 1 << 6 | 4));
        hart.write_csr(num::TDATA1, 0, 0).unwrap();
        assert!(!hart.exec_triggers_armed);
        assert_eq!(hart.state.csr.tdata1, [2 << 60; 2]);
        let names: Vec<String> = hart
            .state
            .csr
            .named_values()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names[0], "mstatus");
        assert_eq!(
            names[names.len() - 8..],
            [
                "tselect",
                "tdata1[0]",
                "tdata2[0]",
                "tdata3[0]",
                "tdata1[1]",
                "tdata2[1]",
                "tdata3[1]",
                "mcontext"
            ]
        );
    }
}
