//! One RV64GC hart: architectural state and the interpreter loop.

use crate::clock::Clock;
use crate::csr::CsrState;
use crate::decode::{self, Kind, Op};
use crate::mmu::Tlb;
use crate::ram::{Ram, PAGE_SHIFT};
use crate::state::{HartState, Reservation};
use crate::trap::{cause, irq, Access, Trap};

/// Privilege levels, as encoded in `mstatus.MPP`.
pub const PRIV_U: u8 = 0;
pub const PRIV_S: u8 = 1;
pub const PRIV_M: u8 = 3;

/// Memory-mapped I/O as seen from the hart: everything at a physical address outside RAM.
///
/// `icount` is the exact instruction count of the access (instructions completed before it),
/// so a device can tell the time of the access without a clock of its own.
pub trait Mmio {
    /// Reads `size` (1, 2, 4 or 8) bytes; `None` means an access fault.
    fn read(&mut self, addr: u64, size: u8, icount: u64) -> Option<u64>;
    /// Writes `size` bytes; `false` means an access fault. Every write ends the current
    /// [`Hart::run`], so a device may change deadlines or stop the machine.
    fn write(&mut self, addr: u64, size: u8, value: u64, icount: u64) -> bool;
}

/// Why [`Hart::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HartExit {
    /// The instruction budget is spent.
    Budget,
    /// The hart executed WFI with no enabled interrupt pending: it sleeps until one is.
    Wfi,
    /// Something the machine must look at happened (an MMIO write, a CSR write that may unmask
    /// an interrupt, an xRET): the machine re-checks interrupts and deadlines.
    Yield,
    /// The next instruction is at a breakpoint (see [`Hart::breakpoints`]).
    Breakpoint,
    /// The last instruction accessed memory under a watchpoint (see [`Hart::watch_hit`]).
    Watchpoint,
}

/// What a watchpoint watches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    Read,
    Write,
    Access,
}

/// A debugger's watchpoint: `len` bytes at virtual address `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watchpoint {
    pub addr: u64,
    pub len: u64,
    pub kind: WatchKind,
}

/// What instruction fetch found at a pc.
enum Fetched {
    /// A cached block: (first op index, op count, slot index in the code cache).
    Block(usize, usize, usize),
    /// One instruction that cannot be cached.
    Single(Op),
}

/// What became of a block offered to the compiling tier.
#[cfg(target_arch = "x86_64")]
enum Compiled {
    /// It ran, and maybe blocks it jumped to: the next instruction is at `next`, and the
    /// count is `icount`.
    Ran { next: u64, icount: u64 },
    /// The instruction at `at` trapped, at count `icount`.
    Trapped { at: u64, icount: u64, trap: Trap },
    /// Compiling it found the code cache full, and every block was dropped.
    CacheDropped,
    /// It is not compiled (yet): interpret it.
    No,
}

/// Whether an instruction ends a block: it may jump, trap by design, or change privilege,
/// translation or what interrupts are enabled.
pub(crate) fn ends_block(kind: Kind) -> bool {
    use Kind::*;
    matches!(
        kind,
        Jal | Jalr
            | Beq
            | Bne
            | Blt
            | Bge
            | Bltu
            | Bgeu
            | Ecall
            | Ebreak
            | Mret
            | Sret
            | Wfi
            | SfenceVma
            | FenceI
            | Csrrw
            | Csrrs
            | Csrrc
            | Csrrwi
            | Csrrsi
            | Csrrci
            | Illegal
            | Undecoded
    )
}

/// One hart: its guest-visible state, which snapshots save whole, and caches.
pub struct Hart {
    pub state: HartState,
    /// Effective privilege of data accesses (MPRV applied).
    pub(crate) data_priv: u8,
    /// The TLB's data set for this privilege and `mstatus.SUM` (see `mmu::data_level`).
    pub(crate) data_level: u8,
    pub(crate) tlb: Box<Tlb>,
    /// The PMP CSRs decoded (see `pmp.rs`); rebuilt by [`Hart::pmp_changed`].
    pub(crate) pmp: crate::pmp::PmpMap,
    /// Virtual page number of the page instructions are fetched from, or `u64::MAX`.
    fetch_vpn: u64,
    /// Code page id of the fetch page in `Ram`'s code cache.
    fetch_page: u32,
    /// `Ram::code_epoch` when `fetch_page` was looked up.
    fetch_epoch: u64,
    /// Offset in RAM of the fetch page.
    fetch_ram_off: usize,
    /// Set by an instruction that must end the current run, with the reason.
    stop_requested: bool,
    stop_reason: HartExit,
    /// Virtual addresses where a run stops before executing the instruction (a debugger's
    /// breakpoints), sorted. Empty, they cost nothing.
    pub breakpoints: Vec<u64>,
    /// A breakpoint at this instruction count is not reported: the debugger resumes from it.
    pub resume_from_breakpoint: Option<u64>,
    /// Watchpoints: loads and stores to their pages take the slow path, which checks them.
    /// Call [`Hart::flush_translations`] after changing them.
    pub watchpoints: Vec<Watchpoint>,
    /// The access that ended the last run with [`HartExit::Watchpoint`]: address and kind.
    pub watch_hit: Option<(u64, WatchKind)>,
    /// Some Sdtrig trigger can fire on execution: runs use the loop that checks every pc.
    pub(crate) exec_triggers_armed: bool,
    /// Some Sdtrig trigger can fire on loads or stores: the pages it watches get no TLB
    /// entries, so that the slow path sees (and checks) every access to them.
    pub(crate) data_triggers_armed: bool,
}

impl Hart {
    /// A hart at reset: M-mode, all registers zero, `pc` = `reset_pc`.
    pub fn new(hart_id: u64, reset_pc: u64) -> Hart {
        let mut hart = Hart {
            state: HartState {
                x: [0; 32],
                f: [0; 32],
                pc: reset_pc,
                privilege: PRIV_M,
                icount: 0,
                csr: CsrState::default(),
                hart_id,
                clock: Clock::default(),
                irq_lines: 0,
                reservation: None,
            },
            data_priv: PRIV_M,
            data_level: crate::mmu::data_level(PRIV_M, false),
            tlb: Box::default(),
            pmp: crate::pmp::PmpMap::new(&CsrState::default()),
            fetch_vpn: u64::MAX,
            fetch_page: 0,
            fetch_epoch: 0,
            fetch_ram_off: 0,
            stop_requested: false,
            stop_reason: HartExit::Yield,
            breakpoints: Vec::new(),
            resume_from_breakpoint: None,
            watchpoints: Vec::new(),
            watch_hit: None,
            exec_triggers_armed: false,
            data_triggers_armed: false,
        };
        hart.context_changed();
        hart
    }

    /// Feeds every guest-visible part of the hart's state to `sink`, in a fixed order: for
    /// state hashes that tell whether two runs computed the same thing.
    pub fn visit_state(&self, sink: &mut dyn FnMut(&[u8])) {
        for v in self.state.x.iter().chain(&self.state.f) {
            sink(&v.to_le_bytes());
        }
        sink(&self.state.pc.to_le_bytes());
        sink(&[self.state.privilege]);
        sink(&self.state.icount.to_le_bytes());
        sink(&self.state.irq_lines.to_le_bytes());
        sink(format!("{:?}", self.state.clock).as_bytes());
        // CsrState and the reservation are plain data: their Debug form lists every field.
        sink(format!("{:?}{:?}", self.state.csr, self.state.reservation).as_bytes());
    }

    /// The LR reservation, as text (for state digests): plain data, not for interpretation.
    pub fn reservation_state(&self) -> String {
        format!("{:?}", self.state.reservation)
    }

    /// Takes cached store translations off the fast path, so that the next store to each page
    /// marks it dirty again (see [`Ram::take_dirty_pages`]).
    pub fn forget_store_translations(&mut self) {
        self.tlb.slow_writes();
    }

    /// Moves a hart that sat out while other harts ran to instruction count `position`, where
    /// it runs next: its clock and timers follow the machine's position, while `minstret`
    /// keeps counting only the instructions this hart retired.
    pub fn resume_at(&mut self, position: u64) {
        let skipped = position.saturating_sub(self.state.icount);
        let csr = &mut self.state.csr;
        if csr.mcountinhibit & crate::csr::INHIBIT_IR == 0 {
            csr.minstret_offset = csr.minstret_offset.wrapping_sub(skipped);
        }
        self.state.icount += skipped;
    }

    /// The current value of `mtime`.
    pub fn mtime(&self) -> u64 {
        self.state.clock.mtime_at(self.state.icount)
    }

    /// Effective `mip`: software-writable bits plus device lines.
    pub fn mip(&self) -> u64 {
        self.mip_with(self.state.irq_lines, self.mtime())
    }

    /// `mip` with device lines `lines` when `mtime` reads `mtime`.
    fn mip_with(&self, lines: u64, mtime: u64) -> u64 {
        let mip = self.state.csr.mip | lines;
        if self.state.csr.menvcfg & crate::csr::MENVCFG_STCE != 0 {
            // Sstc: STIP is the comparison, not the software-written bit.
            let stip = (mtime >= self.state.csr.stimecmp) as u64;
            (mip & !(1 << irq::STI)) | stip << irq::STI
        } else {
            mip
        }
    }

    /// Whether a hart sleeping in WFI would wake with device lines `lines` at instruction
    /// count `position`: [`Hart::wakeup_pending`] asked ahead of a hart's turn, changing
    /// nothing.
    pub fn would_wake(&self, lines: u64, position: u64) -> bool {
        let mtime = self.state.clock.mtime_at(position);
        self.mip_with(lines, mtime) & self.state.csr.mie != 0
    }

    /// The instruction count at which the Sstc timer next fires, if it is enabled and has not.
    pub fn stimecmp_deadline(&self) -> Option<u64> {
        if self.state.csr.menvcfg & crate::csr::MENVCFG_STCE == 0
            || self.mtime() >= self.state.csr.stimecmp
        {
            return None;
        }
        Some(self.state.clock.icount_for_mtime(self.state.csr.stimecmp))
    }

    /// Whether WFI should wake: some interrupt is pending and enabled in `mie`, whatever the
    /// global enables say.
    pub fn wakeup_pending(&self) -> bool {
        self.would_wake(self.state.irq_lines, self.state.icount)
    }

    /// The interrupt that would be taken now, if any (its number).
    pub fn pending_interrupt(&self) -> Option<u64> {
        let pending = self.mip() & self.state.csr.mie;
        if pending == 0 {
            return None;
        }
        let mstatus = self.state.csr.mstatus;
        let m_enabled = self.state.privilege < PRIV_M || mstatus & crate::csr::MSTATUS_MIE != 0;
        let s_enabled = self.state.privilege < PRIV_S
            || (self.state.privilege == PRIV_S && mstatus & crate::csr::MSTATUS_SIE != 0);
        let m_pending = if m_enabled {
            pending & !self.state.csr.mideleg
        } else {
            0
        };
        let s_pending = if s_enabled && self.state.privilege <= PRIV_S {
            pending & self.state.csr.mideleg
        } else {
            0
        };
        const ORDER: [u64; 6] = [irq::MEI, irq::MSI, irq::MTI, irq::SEI, irq::SSI, irq::STI];
        for set in [m_pending, s_pending] {
            if let Some(&n) = ORDER.iter().find(|&&n| set & (1 << n) != 0) {
                return Some(n);
            }
        }
        None
    }

    /// Takes the highest-priority pending interrupt, if any. Returns whether one was taken.
    pub fn take_pending_interrupt(&mut self) -> bool {
        match self.pending_interrupt() {
            Some(n) => {
                self.enter_trap(n, 0, true);
                true
            }
            None => false,
        }
    }

    /// Enters the trap handler for `cause` (an exception, or an interrupt number).
    pub(crate) fn enter_trap(&mut self, cause: u64, tval: u64, interrupt: bool) {
        use crate::csr::*;
        let deleg = if interrupt {
            self.state.csr.mideleg
        } else {
            self.state.csr.medeleg
        };
        let mcause = cause | (interrupt as u64) << 63;
        let epc = self.state.pc;
        let s = &mut self.state.csr;
        let (tvec, new_priv) = if self.state.privilege <= PRIV_S && (deleg >> cause) & 1 == 1 {
            s.scause = mcause;
            s.sepc = epc;
            s.stval = tval;
            let sie = s.mstatus & MSTATUS_SIE != 0;
            s.mstatus &= !(MSTATUS_SPIE | MSTATUS_SIE | MSTATUS_SPP);
            s.mstatus |= (sie as u64) << 5 | (self.state.privilege as u64 & 1) << 8;
            (s.stvec, PRIV_S)
        } else {
            s.mcause = mcause;
            s.mepc = epc;
            s.mtval = tval;
            let mie = s.mstatus & MSTATUS_MIE != 0;
            s.mstatus &= !(MSTATUS_MPIE | MSTATUS_MIE | MSTATUS_MPP);
            s.mstatus |= (mie as u64) << 7 | (self.state.privilege as u64) << 11;
            (s.mtvec, PRIV_M)
        };
        self.state.pc = if interrupt && tvec & 1 == 1 {
            (tvec & !3).wrapping_add(4 * cause)
        } else {
            tvec & !3
        };
        self.state.privilege = new_priv;
        self.context_changed();
    }

    /// Forgets everything cached about the current translation context (privilege, `mstatus`,
    /// `satp`, PMP): called whenever one of them may have changed.
    pub(crate) fn context_changed(&mut self) {
        use crate::csr::*;
        self.fetch_vpn = u64::MAX;
        let mstatus = self.state.csr.mstatus;
        self.data_priv = if self.state.privilege == PRIV_M && mstatus & MSTATUS_MPRV != 0 {
            ((mstatus & MSTATUS_MPP) >> 11) as u8
        } else {
            self.state.privilege
        };
        self.data_level = crate::mmu::data_level(self.data_priv, mstatus & MSTATUS_SUM != 0);
    }

    /// Drops all cached translations of every address space (`sfence.vma`, `mstatus.MXR`, PMP
    /// changes).
    pub fn flush_translations(&mut self) {
        self.tlb.flush();
        self.context_changed();
    }

    /// Sets a debugger's breakpoints and watchpoints (replacing the previous ones), and
    /// drops the translations that would skip a changed watchpoint.
    pub fn set_debug_stops(&mut self, mut breakpoints: Vec<u64>, watchpoints: Vec<Watchpoint>) {
        breakpoints.sort_unstable();
        breakpoints.dedup();
        self.breakpoints = breakpoints;
        if self.watchpoints != watchpoints {
            self.watchpoints = watchpoints;
            self.tlb.slow_all();
            self.context_changed();
        }
    }

    /// Decodes the PMP CSRs again after a change to them, and drops the translations that
    /// relied on the old ones.
    pub(crate) fn pmp_changed(&mut self) {
        self.pmp = crate::pmp::PmpMap::new(&self.state.csr);
        self.flush_translations();
    }

    /// Recomputes what the trigger CSRs arm, after any change to them: takes the TLB off the
    /// fast path, so that pages under a load/store trigger go through the checks.
    pub(crate) fn triggers_changed(&mut self) {
        use crate::trigger::{armed_for, EXECUTE, LOAD, STORE};
        let tdata1 = self.state.csr.tdata1;
        self.exec_triggers_armed = tdata1.iter().any(|&t| armed_for(t, EXECUTE));
        self.data_triggers_armed = tdata1.iter().any(|&t| armed_for(t, LOAD | STORE));
        self.tlb.slow_all();
        self.context_changed();
    }

    /// Whether an execute trigger fires on the instruction at `pc` (before it executes).
    #[cold]
    fn exec_trigger_hit(&self, pc: u64) -> bool {
        let s = &self.state.csr;
        (0..crate::trigger::TRIGGERS).any(|i| {
            s.tdata2[i] == pc
                && crate::trigger::fires(
                    s.tdata1[i],
                    s.tdata3[i],
                    crate::trigger::EXECUTE,
                    self.state.privilege,
                    s.mcontext,
                )
        })
    }

    /// The breakpoint exception of a load/store trigger that fires on `size` bytes at virtual
    /// address `vaddr` (`what` = LOAD and/or STORE), reporting the first watched byte accessed.
    pub(crate) fn data_trigger_check(&self, vaddr: u64, size: u64, what: u64) -> Result<(), Trap> {
        let s = &self.state.csr;
        for i in 0..crate::trigger::TRIGGERS {
            if !crate::trigger::fires(
                s.tdata1[i],
                s.tdata3[i],
                what,
                self.state.privilege,
                s.mcontext,
            ) {
                continue;
            }
            if let Some(tval) = crate::trigger::data_hit(s.tdata1[i], s.tdata2[i], vaddr, size) {
                return Err(Trap::new(cause::BREAKPOINT, tval));
            }
        }
        Ok(())
    }

    /// Whether a load/store trigger watches any byte of the page at `vaddr`.
    pub(crate) fn data_trigger_on_page(&self, vaddr: u64) -> bool {
        use crate::trigger::{armed_for, window_touches_page, LOAD, STORE};
        let page = vaddr & !0xfff;
        let s = &self.state.csr;
        (0..crate::trigger::TRIGGERS).any(|i| {
            armed_for(s.tdata1[i], LOAD | STORE)
                && window_touches_page(s.tdata1[i], s.tdata2[i], page)
        })
    }

    pub(crate) fn request_stop(&mut self, reason: HartExit) {
        // A plain yield never hides a more specific reason given by the same instruction
        // (a watched store to a page that holds code, say).
        if !(self.stop_requested && reason == HartExit::Yield) {
            self.stop_reason = reason;
        }
        self.stop_requested = true;
    }

    #[inline(always)]
    pub(crate) fn set_x(&mut self, rd: u8, value: u64) {
        if rd != 0 {
            self.state.x[(rd & 31) as usize] = value;
        }
    }

    #[inline(always)]
    pub(crate) fn rs1(&self, op: &Op) -> u64 {
        self.state.x[(op.rs1 & 31) as usize]
    }

    #[inline(always)]
    fn rs2(&self, op: &Op) -> u64 {
        self.state.x[(op.rs2 & 31) as usize]
    }

    /// Runs at most `budget` instructions; see [`HartExit`] for why it may stop sooner.
    pub fn run<M: Mmio>(&mut self, ram: &mut Ram, mmio: &mut M, budget: u64) -> HartExit {
        if self.breakpoints.is_empty() && !self.exec_triggers_armed {
            self.run_checked::<false, M>(ram, mmio, budget)
        } else {
            if self.at_breakpoint(self.state.pc)
                && self.resume_from_breakpoint != Some(self.state.icount)
            {
                return HartExit::Breakpoint;
            }
            self.run_checked::<true, M>(ram, mmio, budget)
        }
    }

    /// Whether a run of this hart that starts at position `position` stops at once at a
    /// breakpoint, before any interrupt is taken: asked before the hart takes its turn.
    pub fn stops_at_breakpoint_at(&self, position: u64) -> bool {
        !self.breakpoints.is_empty()
            && self.at_breakpoint(self.state.pc)
            && self.resume_from_breakpoint != Some(position)
    }

    #[inline(always)]
    fn at_breakpoint(&self, pc: u64) -> bool {
        self.breakpoints.binary_search(&pc).is_ok()
    }

    /// Whether the run stops before the instruction at `pc` for a debugger breakpoint. A plain
    /// yield asked for by the instruction just run (a store to a page of code) must not hide
    /// it: when the run also ends at its budget there, the breakpoint would never be seen.
    #[inline(always)]
    fn stops_at_breakpoint(&self, pc: u64) -> bool {
        (!self.stop_requested || self.stop_reason == HartExit::Yield) && self.at_breakpoint(pc)
    }

    /// The run loop; with `BREAKPOINTS`, it stops before any instruction at a breakpoint and
    /// checks execute triggers before every instruction (a separate instance, so runs without
    /// breakpoints or armed triggers pay nothing for them).
    fn run_checked<const BREAKPOINTS: bool, M: Mmio>(
        &mut self,
        ram: &mut Ram,
        mmio: &mut M,
        budget: u64,
    ) -> HartExit {
        let end = self.state.icount.saturating_add(budget);
        self.stop_requested = false;
        // pc and icount live in registers; memory gets them on every way out, and icount
        // before each instruction (a store only) for devices, counters and traps to read.
        let mut pc = self.state.pc;
        let mut icount = self.state.icount;
        'blocks: while icount < end {
            // An execute trigger outranks every exception of the instruction, fetch faults too.
            if BREAKPOINTS && self.exec_triggers_armed && self.exec_trigger_hit(pc) {
                self.state.icount = icount;
                icount += 1;
                pc = self.finish_insn(Err(Trap::new(cause::BREAKPOINT, pc)), pc);
                if self.stops_at_breakpoint(pc) {
                    self.request_stop(HartExit::Breakpoint);
                    break 'blocks;
                }
                continue;
            }
            let (start, len) = match self.lookup_block(ram, pc) {
                Ok(Fetched::Block(start, len, index)) => {
                    if !BREAKPOINTS && ram.code.engine.is_on() && (end - icount) as usize >= len {
                        #[cfg(target_arch = "x86_64")]
                        match self.run_compiled(ram, mmio, index, pc, icount, end) {
                            Compiled::Ran {
                                next,
                                icount: after,
                            } => {
                                icount = after;
                                pc = next;
                                if self.stop_requested {
                                    break 'blocks;
                                }
                                continue 'blocks;
                            }
                            Compiled::Trapped {
                                at,
                                icount: after,
                                trap,
                            } => {
                                icount = after + 1;
                                pc = self.finish_insn(Err(trap), at);
                                continue 'blocks;
                            }
                            Compiled::CacheDropped => continue 'blocks,
                            Compiled::No => {}
                        }
                    }
                    (start, len)
                }
                Ok(Fetched::Single(op)) => {
                    self.state.icount = icount;
                    let result = self.exec(op, pc, ram, mmio);
                    icount += 1;
                    pc = self.finish_insn(result, pc);
                    if BREAKPOINTS && self.stops_at_breakpoint(pc) {
                        self.request_stop(HartExit::Breakpoint);
                    }
                    if self.stop_requested {
                        break 'blocks;
                    }
                    continue;
                }
                Err(trap) => {
                    icount += 1;
                    pc = self.finish_insn(Err(trap), pc);
                    if BREAKPOINTS && self.stops_at_breakpoint(pc) {
                        self.request_stop(HartExit::Breakpoint);
                        break 'blocks;
                    }
                    continue;
                }
            };
            // Within a block every instruction but the last falls through to the next one.
            let count = len.min((end - icount) as usize);
            for index in start..start + count {
                if BREAKPOINTS
                    && index != start
                    && self.exec_triggers_armed
                    && self.exec_trigger_hit(pc)
                {
                    // The next pass of 'blocks takes the trigger's exception.
                    continue 'blocks;
                }
                let op = ram.op(index);
                self.state.icount = icount;
                let result = self.exec(op, pc, ram, mmio);
                icount += 1;
                match result {
                    Ok(next) => pc = next,
                    Err(trap) => {
                        pc = self.finish_insn(Err(trap), pc);
                        if BREAKPOINTS && self.stops_at_breakpoint(pc) {
                            self.request_stop(HartExit::Breakpoint);
                            break 'blocks;
                        }
                        continue 'blocks;
                    }
                }
                if BREAKPOINTS && self.stops_at_breakpoint(pc) {
                    self.request_stop(HartExit::Breakpoint);
                }
                if self.stop_requested {
                    break 'blocks;
                }
            }
        }
        self.state.pc = pc;
        self.state.icount = icount;
        if self.stop_requested {
            self.stop_reason
        } else {
            HartExit::Budget
        }
    }

    /// Runs the block at code-cache slot `index` (which fits the budget) as compiled code,
    /// compiling its region first if it just got hot. Compiled code goes on into the blocks it
    /// jumps to while they fit the budget (`end`).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run_compiled<M: Mmio>(
        &mut self,
        ram: &mut Ram,
        mmio: &mut M,
        index: usize,
        pc: u64,
        icount: u64,
        end: u64,
    ) -> Compiled {
        use crate::engine::Plan;
        use crate::jit::{self, status, JitCtx};
        let block = match ram.code.engine.plan(index) {
            Plan::Interpret => return Compiled::No,
            Plan::Run(block) => block,
            Plan::Flush => {
                ram.clear_code();
                return Compiled::CacheDropped;
            }
            Plan::Compile => {
                let blocks = ram.region(index);
                match ram.code.engine.compile(index, blocks) {
                    Ok(Some(block)) => block,
                    Ok(None) => return Compiled::No,
                    Err(()) => {
                        // The code cache is full: start it afresh.
                        ram.clear_code();
                        return Compiled::CacheDropped;
                    }
                }
            }
        };
        let Some((compiled, enter)) = ram.code.engine.entry_points() else {
            return Compiled::No;
        };
        let (read_tlb, write_tlb) = self.tlb.data_sets(self.data_level);
        let mut ctx = JitCtx {
            x: self.state.x.as_mut_ptr(),
            ram: ram.bytes_mut_unchecked().as_mut_ptr(),
            read_tlb,
            write_tlb,
            pc,
            icount,
            region_pc: 0,
            end,
            compiled,
            exec_tlb: self.tlb.exec_set(self.state.privilege),
            page_of: ram.code_page_numbers(),
            status: 0,
            trap_cause: 0,
            trap_tval: 0,
            hart: self as *mut Hart,
            ram_obj: ram as *mut Ram,
            mmio: (mmio as *mut M).cast(),
            load_slow: jit::load_slow::<M> as *const () as usize,
            store_slow: jit::store_slow::<M> as *const () as usize,
            exec_one: jit::exec_one::<M> as *const () as usize,
            f: self.state.f.as_mut_ptr(),
            csr: &mut self.state.csr,
            exec_fp: jit::exec_fp as *const () as usize,
        };
        // SAFETY: `block` is compiled code for these ops, entered through the trampoline made
        // for it; the context points at this hart, RAM and bus, which nothing else touches until
        // it returns, and at helpers instantiated for this `M`.
        let outcome = unsafe { enter(&mut ctx, block) };
        match outcome {
            status::TRAP => Compiled::Trapped {
                at: ctx.pc,
                icount: ctx.icount,
                trap: Trap::new(ctx.trap_cause, ctx.trap_tval),
            },
            // A region asks for more than its first block (see `jit::region::budget_checks`):
            // when that does not fit, nothing ran, and the interpreter runs the block.
            status::BUDGET if ctx.icount == icount => Compiled::No,
            _ => Compiled::Ran {
                next: ctx.pc,
                icount: ctx.icount,
            },
        }
    }

    /// Whether an instruction asked the run to stop.
    #[inline(always)]
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_requested
    }

    /// The pc after an instruction: its successor, or the trap handler.
    #[inline(always)]
    fn finish_insn(&mut self, result: Result<u64, Trap>, pc: u64) -> u64 {
        match result {
            Ok(next) => next,
            Err(trap) => {
                self.state.pc = pc;
                self.enter_trap(trap.cause, trap.tval, false);
                self.state.pc
            }
        }
    }

    /// Executes exactly one instruction (or takes the trap it causes).
    pub fn step<M: Mmio>(&mut self, ram: &mut Ram, mmio: &mut M) -> HartExit {
        self.run(ram, mmio, 1)
    }

    /// The decoded block starting at `pc`, decoding it on first use.
    #[inline(always)]
    fn lookup_block(&mut self, ram: &mut Ram, pc: u64) -> Result<Fetched, Trap> {
        if pc >> PAGE_SHIFT != self.fetch_vpn || ram.code_epoch() != self.fetch_epoch {
            self.refill_fetch(ram, pc)?;
        }
        let slot = (pc as usize & 0xfff) >> 1;
        if let Some((start, len)) = ram.block_at(self.fetch_page, slot) {
            return Ok(Fetched::Block(
                start,
                len,
                crate::ram::block_index(self.fetch_page, slot),
            ));
        }
        self.build_block(ram, pc, slot)
    }

    #[cold]
    fn refill_fetch(&mut self, ram: &mut Ram, pc: u64) -> Result<(), Trap> {
        let off = match self.tlb.exec_hit(self.state.privilege, pc) {
            Some(off) => off,
            None => {
                let paddr = self.translate(ram, pc, Access::Exec, 2)?;
                ram.offset(paddr)
                    .ok_or_else(|| Access::Exec.access_fault(pc))?
            }
        };
        let page_off = off & !0xfff;
        let (page, created) = ram.code_page(page_off);
        if created {
            // Stores to this page must now take the slow path, which drops its blocks.
            self.tlb.slow_writes_to(page_off);
        }
        self.fetch_vpn = pc >> PAGE_SHIFT;
        self.fetch_page = page;
        self.fetch_ram_off = page_off;
        self.fetch_epoch = ram.code_epoch();
        Ok(())
    }

    /// Decodes the block starting at `pc` (in the current fetch page) and caches it.
    #[cold]
    fn build_block(&mut self, ram: &mut Ram, pc: u64, slot: usize) -> Result<Fetched, Trap> {
        const MAX_BLOCK: usize = 64;
        let mut ops = Vec::with_capacity(16);
        let mut offset = pc as usize & 0xfff;
        loop {
            let at = self.fetch_ram_off + offset;
            let bytes = ram.bytes();
            let low = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
            let op = if decode::insn_len(low) == 2 {
                decode::decode(low as u32)
            } else if offset != 0xffe {
                let high = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
                decode::decode(low as u32 | (high as u32) << 16)
            } else if ops.is_empty() {
                return self.fetch_straddling(ram, pc, low).map(Fetched::Single);
            } else {
                break;
            };
            ops.push(op);
            offset += op.len as usize;
            if ends_block(op.kind) || ops.len() == MAX_BLOCK || offset >= 0x1000 {
                break;
            }
        }
        let (start, len) = ram.insert_block(self.fetch_page, slot, &ops);
        Ok(Fetched::Block(
            start,
            len,
            crate::ram::block_index(self.fetch_page, slot),
        ))
    }

    /// A 32-bit instruction whose halves lie in two pages: its upper half comes through the
    /// translation of the next page, and it is not cached (that mapping may change alone).
    #[cold]
    fn fetch_straddling(&mut self, ram: &mut Ram, pc: u64, low: u16) -> Result<Op, Trap> {
        let next = pc.wrapping_add(2);
        let paddr = self.translate(ram, next, Access::Exec, 2)?;
        let mut high = [0u8; 2];
        ram.read(paddr, &mut high)
            .ok_or_else(|| Access::Exec.access_fault(next))?;
        Ok(decode::decode(
            low as u32 | (u16::from_le_bytes(high) as u32) << 16,
        ))
    }

    /// Executes `op` at `pc` and returns the address of the next instruction.
    #[inline(always)]
    pub(crate) fn exec<M: Mmio>(
        &mut self,
        op: Op,
        pc: u64,
        ram: &mut Ram,
        mmio: &mut M,
    ) -> Result<u64, Trap> {
        use Kind::*;
        let imm = op.imm as i64 as u64;
        let next = pc.wrapping_add(op.len as u64);
        macro_rules! alu {
            ($e:expr) => {{
                let v = $e;
                self.set_x(op.rd, v);
                next
            }};
        }
        macro_rules! branch {
            ($cond:expr) => {{
                if $cond {
                    pc.wrapping_add(imm)
                } else {
                    next
                }
            }};
        }
        macro_rules! load {
            ($n:literal, $conv:expr) => {{
                let addr = self.rs1(&op).wrapping_add(imm);
                let v = self.load::<$n, M>(ram, mmio, addr)?;
                let conv: fn(u64) -> u64 = $conv;
                self.set_x(op.rd, conv(v));
                next
            }};
        }
        macro_rules! store {
            ($n:literal) => {{
                let addr = self.rs1(&op).wrapping_add(imm);
                self.store::<$n, M>(ram, mmio, addr, self.rs2(&op))?;
                next
            }};
        }
        let a = self.rs1(&op);
        let b = self.rs2(&op);
        Ok(match op.kind {
            Addi => alu!(a.wrapping_add(imm)),
            Add => alu!(a.wrapping_add(b)),
            Lui => alu!(imm),
            Auipc => alu!(pc.wrapping_add(imm)),
            Jal => {
                self.set_x(op.rd, next);
                pc.wrapping_add(imm)
            }
            Jalr => {
                let target = a.wrapping_add(imm) & !1;
                self.set_x(op.rd, next);
                target
            }
            Beq => branch!(a == b),
            Bne => branch!(a != b),
            Blt => branch!((a as i64) < (b as i64)),
            Bge => branch!((a as i64) >= (b as i64)),
            Bltu => branch!(a < b),
            Bgeu => branch!(a >= b),
            Lb => load!(1, |v| v as i8 as i64 as u64),
            Lh => load!(2, |v| v as i16 as i64 as u64),
            Lw => load!(4, |v| v as i32 as i64 as u64),
            Ld => load!(8, |v| v),
            Lbu => load!(1, |v| v),
            Lhu => load!(2, |v| v),
            Lwu => load!(4, |v| v),
            Sb => store!(1),
            Sh => store!(2),
            Sw => store!(4),
            Sd => store!(8),
            Slti => alu!(((a as i64) < (imm as i64)) as u64),
            Sltiu => alu!((a < imm) as u64),
            Xori => alu!(a ^ imm),
            Ori => alu!(a | imm),
            Andi => alu!(a & imm),
            Slli => alu!(a << (imm & 63)),
            Srli => alu!(a >> (imm & 63)),
            Srai => alu!(((a as i64) >> (imm & 63)) as u64),
            Sub => alu!(a.wrapping_sub(b)),
            Sll => alu!(a << (b & 63)),
            Slt => alu!(((a as i64) < (b as i64)) as u64),
            Sltu => alu!((a < b) as u64),
            Xor => alu!(a ^ b),
            Srl => alu!(a >> (b & 63)),
            Sra => alu!(((a as i64) >> (b & 63)) as u64),
            Or => alu!(a | b),
            And => alu!(a & b),
            Addiw => alu!(sext32(a.wrapping_add(imm))),
            Slliw => alu!(sext32(a << (imm & 31))),
            Srliw => alu!(sext32((a as u32 >> (imm & 31)) as u64)),
            Sraiw => alu!(((a as i32) >> (imm & 31)) as i64 as u64),
            Addw => alu!(sext32(a.wrapping_add(b))),
            Subw => alu!(sext32(a.wrapping_sub(b))),
            Sllw => alu!(sext32(a << (b & 31))),
            Srlw => alu!(sext32((a as u32 >> (b & 31)) as u64)),
            Sraw => alu!(((a as i32) >> (b & 31)) as i64 as u64),
            Mul => alu!(a.wrapping_mul(b)),
            Mulh => alu!(((a as i64 as i128 * b as i64 as i128) >> 64) as u64),
            Mulhsu => alu!(((a as i64 as i128 * b as i128) >> 64) as u64),
            Mulhu => alu!(((a as u128 * b as u128) >> 64) as u64),
            Div => alu!(match (a as i64, b as i64) {
                (_, 0) => u64::MAX,
                (x, y) => x.wrapping_div(y) as u64,
            }),
            Divu => alu!(a.checked_div(b).unwrap_or(u64::MAX)),
            Rem => alu!(match (a as i64, b as i64) {
                (x, 0) => x as u64,
                (x, y) => x.wrapping_rem(y) as u64,
            }),
            Remu => alu!(if b == 0 { a } else { a % b }),
            Mulw => alu!(sext32((a as u32).wrapping_mul(b as u32) as u64)),
            Divw => alu!(match (a as i32, b as i32) {
                (_, 0) => u64::MAX,
                (x, y) => x.wrapping_div(y) as i64 as u64,
            }),
            Divuw => alu!(match (a as u32, b as u32) {
                (_, 0) => u64::MAX,
                (x, y) => sext32((x / y) as u64),
            }),
            Remw => alu!(match (a as i32, b as i32) {
                (x, 0) => x as i64 as u64,
                (x, y) => x.wrapping_rem(y) as i64 as u64,
            }),
            Remuw => alu!(match (a as u32, b as u32) {
                (x, 0) => sext32(x as u64),
                (x, y) => sext32((x % y) as u64),
            }),
            Fence => next,
            FenceI => {
                // Stores already drop the decoded instructions they overwrite; only the fetch
                // page cache needs refreshing.
                self.fetch_vpn = u64::MAX;
                next
            }
            Ecall => {
                let cause = match self.state.privilege {
                    PRIV_U => cause::ECALL_FROM_U,
                    PRIV_S => cause::ECALL_FROM_S,
                    _ => cause::ECALL_FROM_M,
                };
                return Err(Trap::new(cause, 0));
            }
            // The spec allows 0 or the pc in mtval; QEMU 10 (our reference) and Spike write the pc.
            Ebreak => return Err(Trap::new(cause::BREAKPOINT, pc)),
            Mret => self.exec_mret(op)?,
            Sret => self.exec_sret(op)?,
            Wfi => self.exec_wfi(op, next)?,
            SfenceVma => {
                if self.state.privilege == PRIV_U
                    || (self.state.privilege == PRIV_S
                        && self.state.csr.mstatus & crate::csr::MSTATUS_TVM != 0)
                {
                    return Err(Trap::illegal(raw_bits(&op)));
                }
                // With an address, only that page's translations go (in every address space);
                // superpage entries are cached per 4 KiB page, so this is exact. With only an
                // ASID, that address space's.
                match (op.rs1, op.rs2) {
                    (0, 0) => self.tlb.flush(),
                    (0, _) => self.tlb.flush_asid(b & 0xffff),
                    _ => self.tlb.flush_page(a),
                }
                self.context_changed();
                next
            }
            Csrrw | Csrrs | Csrrc | Csrrwi | Csrrsi | Csrrci => self.exec_csr(op, next)?,
            AmoW | AmoD => self.exec_amo(op, ram, mmio, next)?,
            Flw | Fld | Fsw | Fsd => self.exec_fp_mem(op, ram, mmio, next)?,
            Illegal | Undecoded => return Err(Trap::illegal(raw_bits(&op))),
            _ => self.exec_fp(op, next)?,
        })
    }

    fn exec_mret(&mut self, op: Op) -> Result<u64, Trap> {
        use crate::csr::*;
        if self.state.privilege != PRIV_M {
            return Err(Trap::illegal(raw_bits(&op)));
        }
        let s = &mut self.state.csr;
        let mpp = ((s.mstatus & MSTATUS_MPP) >> 11) as u8;
        let mpie = s.mstatus & MSTATUS_MPIE != 0;
        s.mstatus &= !(MSTATUS_MIE | MSTATUS_MPP);
        s.mstatus |= (mpie as u64) << 3 | MSTATUS_MPIE;
        if mpp != PRIV_M {
            s.mstatus &= !MSTATUS_MPRV;
        }
        self.state.privilege = mpp;
        let target = s.mepc;
        self.context_changed();
        self.yield_if_interrupt_enabled();
        Ok(target)
    }

    fn exec_sret(&mut self, op: Op) -> Result<u64, Trap> {
        use crate::csr::*;
        if self.state.privilege == PRIV_U
            || (self.state.privilege == PRIV_S && self.state.csr.mstatus & MSTATUS_TSR != 0)
        {
            return Err(Trap::illegal(raw_bits(&op)));
        }
        let s = &mut self.state.csr;
        let spp = ((s.mstatus & MSTATUS_SPP) >> 8) as u8;
        let spie = s.mstatus & MSTATUS_SPIE != 0;
        s.mstatus &= !(MSTATUS_SIE | MSTATUS_SPP);
        s.mstatus |= (spie as u64) << 1 | MSTATUS_SPIE;
        s.mstatus &= !MSTATUS_MPRV;
        self.state.privilege = spp;
        let target = s.sepc;
        self.context_changed();
        self.yield_if_interrupt_enabled();
        Ok(target)
    }

    /// Ends the run if an interrupt is now pending and enabled, so that the machine takes it
    /// before the next instruction. The interrupt lines the hart sees are current: a device
    /// changes them only through an MMIO write, a notify or a timer deadline, each of which
    /// ends the run, or between runs. So an instruction that enables interrupts (xRET, a CSR
    /// write) costs a return to the machine only when one is waiting (Linux toggles
    /// `sstatus.SIE` in every spinlock and returns with `sret` from every trap).
    fn yield_if_interrupt_enabled(&mut self) {
        if self.pending_interrupt().is_some() {
            self.request_stop(HartExit::Yield);
        }
    }

    fn exec_wfi(&mut self, op: Op, next: u64) -> Result<u64, Trap> {
        let tw = self.state.csr.mstatus & crate::csr::MSTATUS_TW != 0;
        if self.state.privilege == PRIV_U || (self.state.privilege == PRIV_S && tw) {
            return Err(Trap::illegal(raw_bits(&op)));
        }
        self.request_stop(if self.wakeup_pending() {
            HartExit::Yield
        } else {
            HartExit::Wfi
        });
        Ok(next)
    }

    fn exec_csr(&mut self, op: Op, next: u64) -> Result<u64, Trap> {
        use Kind::*;
        let csr = (op.imm as u32 & 0xfff) as u16;
        let operand = match op.kind {
            Csrrwi | Csrrsi | Csrrci => op.rs1 as u64,
            _ => self.rs1(&op),
        };
        let bits = raw_bits(&op);
        let (read, write) = match op.kind {
            Csrrw | Csrrwi => (op.rd != 0, Some(operand)),
            _ => (true, (op.rs1 != 0).then_some(operand)),
        };
        self.check_csr_access(csr, write.is_some(), bits)?;
        let old = if read || write.is_some() && op.kind != Csrrw && op.kind != Csrrwi {
            self.read_csr(csr, bits)?
        } else {
            0
        };
        if let Some(v) = write {
            // Setting or clearing bits of `mip` starts from its software-writable bits, not
            // the value read: a device line read there (an external SEIP, say) must not
            // latch into them (privileged spec, "Machine Interrupt Registers").
            let base = if csr == crate::csr::num::MIP {
                self.state.csr.mip
            } else {
                old
            };
            let new = match op.kind {
                Csrrw | Csrrwi => v,
                Csrrs | Csrrsi => base | v,
                _ => base & !v,
            };
            self.write_csr(csr, new, bits)?;
            if crate::csr::moves_timer_deadline(csr) || crate::csr::affects_triggers(csr) {
                self.request_stop(HartExit::Yield);
            } else if crate::csr::may_unmask_interrupts(csr) {
                self.yield_if_interrupt_enabled();
            }
        }
        self.set_x(op.rd, old);
        Ok(next)
    }

    fn exec_amo<M: Mmio>(
        &mut self,
        op: Op,
        ram: &mut Ram,
        mmio: &mut M,
        next: u64,
    ) -> Result<u64, Trap> {
        let addr = self.rs1(&op);
        let size: u8 = if op.kind == Kind::AmoD { 8 } else { 4 };
        let sext = |v: u64| if size == 4 { sext32(v) } else { v };
        let src = self.rs2(&op);
        match op.rm {
            0x02 => {
                // LR
                if addr & (size as u64 - 1) != 0 {
                    return Err(Trap::new(cause::LOAD_MISALIGNED, addr));
                }
                let paddr = self.translate(ram, addr, Access::Load, size)?;
                let v = self
                    .phys_read(ram, mmio, paddr, size)
                    .ok_or_else(|| Access::Load.access_fault(addr))?;
                self.state.reservation = Some(Reservation {
                    addr: paddr,
                    value: v,
                });
                self.set_x(op.rd, sext(v));
            }
            0x03 => {
                // SC
                if addr & (size as u64 - 1) != 0 {
                    return Err(Trap::new(cause::STORE_MISALIGNED, addr));
                }
                let paddr = self.translate(ram, addr, Access::Store, size)?;
                let held = self.state.reservation.take();
                let current = self.phys_read(ram, mmio, paddr, size);
                let ok = matches!(held, Some(r) if r.addr == paddr && Some(r.value) == current);
                if ok && !self.phys_write(ram, mmio, paddr, size, src) {
                    return Err(Access::Store.access_fault(addr));
                }
                self.set_x(op.rd, !ok as u64);
            }
            f => {
                if addr & (size as u64 - 1) != 0 {
                    return Err(Trap::new(cause::STORE_MISALIGNED, addr));
                }
                let paddr = self.translate(ram, addr, Access::Store, size)?;
                if self.data_triggers_armed {
                    // An AMO also loads: load triggers fire on it too (as on QEMU).
                    self.data_trigger_check(addr, size as u64, crate::trigger::LOAD)?;
                }
                let old = self
                    .phys_read(ram, mmio, paddr, size)
                    .ok_or_else(|| Access::Store.access_fault(addr))?;
                let (a, b) = (sext(old), sext(src));
                let new = match f {
                    0x01 => b,
                    0x00 => a.wrapping_add(b),
                    0x04 => a ^ b,
                    0x0c => a & b,
                    0x08 => a | b,
                    0x10 => (a as i64).min(b as i64) as u64,
                    0x14 => (a as i64).max(b as i64) as u64,
                    0x18 => a.min(b),
                    _ => a.max(b),
                };
                if !self.phys_write(ram, mmio, paddr, size, new) {
                    return Err(Access::Store.access_fault(addr));
                }
                self.set_x(op.rd, a);
            }
        }
        Ok(next)
    }

    /// A load through the TLB fast path, or the slow path on a miss.
    #[inline(always)]
    pub(crate) fn load<const N: usize, M: Mmio>(
        &mut self,
        ram: &mut Ram,
        mmio: &mut M,
        addr: u64,
    ) -> Result<u64, Trap> {
        if let Some(off) = self.tlb.read_hit(self.data_level, addr, N) {
            if let Some(b) = ram.bytes().get(off..off + N) {
                let mut buf = [0u8; 8];
                buf[..N].copy_from_slice(b);
                return Ok(u64::from_le_bytes(buf));
            }
        }
        self.load_slow(ram, mmio, addr, N as u8)
    }

    /// A store through the TLB fast path (never a code page), or the slow path.
    #[inline(always)]
    pub(crate) fn store<const N: usize, M: Mmio>(
        &mut self,
        ram: &mut Ram,
        mmio: &mut M,
        addr: u64,
        value: u64,
    ) -> Result<(), Trap> {
        if let Some(off) = self.tlb.write_hit(self.data_level, addr, N) {
            if let Some(b) = ram.bytes_mut_unchecked().get_mut(off..off + N) {
                b.copy_from_slice(&value.to_le_bytes()[..N]);
                return Ok(());
            }
        }
        self.store_slow(ram, mmio, addr, N as u8, value)
    }

    #[cold]
    pub(crate) fn load_slow<M: Mmio>(
        &mut self,
        ram: &mut Ram,
        mmio: &mut M,
        addr: u64,
        size: u8,
    ) -> Result<u64, Trap> {
        let pieces = self.translate_span(ram, addr, size, Access::Load)?;
        let mut value = 0u64;
        let mut shift = 0;
        for (paddr, len) in pieces.into_iter().flatten() {
            let part = if len == size {
                self.phys_read(ram, mmio, paddr, len)
            } else {
                self.phys_read_bytes(ram, mmio, paddr, len)
            }
            .ok_or_else(|| Access::Load.access_fault(addr))?;
            value |= part << shift;
            shift += 8 * len as u32;
        }
        Ok(value)
    }

    #[cold]
    pub(crate) fn store_slow<M: Mmio>(
        &mut self,
        ram: &mut Ram,
        mmio: &mut M,
        addr: u64,
        size: u8,
        value: u64,
    ) -> Result<(), Trap> {
        let pieces = self.translate_span(ram, addr, size, Access::Store)?;
        let mut rest = value;
        for (paddr, len) in pieces.into_iter().flatten() {
            let ok = if len == size {
                self.phys_write(ram, mmio, paddr, len, rest)
            } else {
                (0..len).all(|i| self.phys_write(ram, mmio, paddr + i as u64, 1, rest >> (8 * i)))
            };
            if !ok {
                return Err(Access::Store.access_fault(addr));
            }
            rest = rest.checked_shr(8 * len as u32).unwrap_or(0);
        }
        Ok(())
    }

    /// Translates an access that may straddle a page boundary: both pages are checked before
    /// anything is read or written, so a fault leaves memory untouched.
    fn translate_span(
        &mut self,
        ram: &mut Ram,
        addr: u64,
        size: u8,
        access: Access,
    ) -> Result<[Option<(u64, u8)>; 2], Trap> {
        let in_page = 0x1000 - (addr & 0xfff);
        if in_page >= size as u64 {
            let paddr = self.translate(ram, addr, access, size)?;
            return Ok([Some((paddr, size)), None]);
        }
        let first = in_page as u8;
        let second_addr = addr.wrapping_add(in_page);
        let p1 = self.translate(ram, addr, access, first)?;
        let p2 = self.translate(ram, second_addr, access, size - first)?;
        Ok([Some((p1, first)), Some((p2, size - first))])
    }

    fn phys_read_bytes<M: Mmio>(
        &mut self,
        ram: &mut Ram,
        mmio: &mut M,
        paddr: u64,
        len: u8,
    ) -> Option<u64> {
        let mut v = 0;
        for i in 0..len {
            v |= self.phys_read(ram, mmio, paddr + i as u64, 1)? << (8 * i);
        }
        Some(v)
    }

    /// Reads physical memory: RAM directly, anything else through MMIO.
    pub(crate) fn phys_read<M: Mmio>(
        &mut self,
        ram: &mut Ram,
        mmio: &mut M,
        paddr: u64,
        size: u8,
    ) -> Option<u64> {
        if let Some(off) = ram
            .offset(paddr)
            .filter(|_| ram.contains(paddr, size as u64))
        {
            let bytes = ram.bytes();
            return Some(match size {
                1 => bytes[off] as u64,
                2 => u16::from_le_bytes([bytes[off], bytes[off + 1]]) as u64,
                4 => u32::from_le_bytes(bytes[off..off + 4].try_into().ok()?) as u64,
                _ => u64::from_le_bytes(bytes[off..off + 8].try_into().ok()?),
            });
        }
        if ram.contains(paddr, 1) {
            return None;
        }
        mmio.read(paddr, size, self.state.icount)
    }

    /// Writes physical memory: RAM (dropping decoded instructions), or MMIO, which ends the run.
    pub(crate) fn phys_write<M: Mmio>(
        &mut self,
        ram: &mut Ram,
        mmio: &mut M,
        paddr: u64,
        size: u8,
        value: u64,
    ) -> bool {
        if ram.contains(paddr, size as u64) {
            let epoch = ram.code_epoch();
            let ok = ram
                .write(paddr, &value.to_le_bytes()[..size as usize])
                .is_some();
            if ram.code_epoch() != epoch {
                // Code was overwritten, perhaps later in the running block: start afresh.
                self.request_stop(HartExit::Yield);
            }
            return ok;
        }
        if ram.contains(paddr, 1) {
            return false;
        }
        self.request_stop(HartExit::Yield);
        mmio.write(paddr, size, value, self.state.icount)
    }
}

#[inline(always)]
pub(crate) fn sext32(v: u64) -> u64 {
    v as u32 as i32 as i64 as u64
}

/// The instruction bits reported in `mtval` for an illegal instruction, as QEMU reports them.
#[inline]
pub(crate) fn raw_bits(op: &Op) -> u32 {
    op.raw
}
