//! The compiling tier: hot decoded blocks become host machine code, generated with Cranelift.
//!
//! A compiled block is the same block the interpreter runs (straight-line code inside one page,
//! ending at the first instruction that may change control flow or the translation context),
//! so the two engines agree on where blocks start and end and on every instruction count. The
//! interpreter stays the reference: compiled code computes integer instructions and the fast
//! path of loads and stores (integer and floating-point) itself, calls the interpreter's
//! floating-point arithmetic directly (no integer register goes to memory for it), and hands
//! everything else (page walks, MMIO, traps, CSRs, atomics) to the interpreter one instruction
//! at a time through helpers.
//!
//! A block runs only when the whole of it fits the remaining budget, so runs stop at exactly
//! the instruction count asked for; a block that does not fit runs in the interpreter. Inside
//! a region with loops, a loop's head checks for the longest way to the next head, and the
//! blocks on the way check nothing (see `region::budget_checks`).
//!
//! Compiled code does not depend on the virtual address it runs at (the pc comes in through
//! [`JitCtx`]), because one physical page of code may be mapped at several addresses.

mod arena;
pub(crate) mod region;
mod translate;
mod worker;

pub(crate) use region::RegionBlock;
pub(crate) use translate::Placement;
pub(crate) use worker::Worker;

use crate::csr::CsrState;
use crate::decode::Op;
use crate::hart::{Hart, Mmio};
use crate::ram::Ram;
use crate::trap::Trap;
use arena::Arena;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use std::time::{Duration, Instant};

/// Bytes of host code kept before the whole cache is dropped and rebuilt on demand.
pub(crate) const DEFAULT_CODE_CACHE: usize = 64 << 20;

/// Words where the loads and stores of looping regions keep their page hints (see
/// `translate::Translator::tlb_lookup`): handed out front to back, and afresh when the code
/// cache is emptied. A hint is only ever a guess that compiled code checks against the TLB,
/// so any value in any word is safe.
pub(crate) struct Hints {
    words: Box<[u64]>,
    used: usize,
}

/// Hints kept: a region with a loop has at most a few dozen accesses, and a long boot
/// compiles a few thousand such regions between flushes of the code cache.
const HINT_WORDS: usize = 1 << 16;

impl Hints {
    fn new() -> Hints {
        Hints {
            words: vec![0; HINT_WORDS].into_boxed_slice(),
            used: 0,
        }
    }

    /// The address of a fresh word, or `None` when all are taken (the access then goes
    /// without a hint).
    pub(crate) fn take(&mut self) -> Option<u64> {
        let word = self.words.get_mut(self.used)?;
        self.used += 1;
        Some(word as *mut u64 as u64)
    }

    fn clear(&mut self) {
        self.used = 0;
    }
}

/// What compiled code and its helpers share. Compiled code finds fields by their offsets.
#[repr(C)]
pub(crate) struct JitCtx {
    /// `Hart::x`.
    pub x: *mut u64,
    /// Start of `Ram`'s bytes: TLB entries hold offsets from here.
    pub ram: *mut u8,
    /// The TLB sets for loads and stores at the current data level.
    pub read_tlb: *const u8,
    pub write_tlb: *const u8,
    /// In: the pc of the block's first instruction. Out: the next pc, or the pc of the
    /// instruction that trapped.
    pub pc: u64,
    /// In: the instruction count before the block. Out: after it (a trapping instruction
    /// not counted). Blocks that chain update it for the next one.
    pub icount: u64,
    /// The pc of the first block of the looping region running, which keeps it here.
    pub region_pc: u64,
    /// The run's budget ends at this count: a block that does not fit returns `BUDGET`.
    pub end: u64,
    /// The code cache's per-slot table (see `engine::Compiler`), where blocks find the
    /// compiled code of the blocks they jump to.
    pub compiled: *const usize,
    /// For jumps to other pages: the TLB set for fetches at the current privilege, and
    /// `Ram`'s code page numbers (plus one, 0 = none) by RAM page.
    pub exec_tlb: *const u8,
    pub page_of: *const u32,
    /// A load helper's outcome (see `Status`).
    pub status: u64,
    /// The trap that ended the block, when it returned `TRAP`.
    pub trap_cause: u64,
    pub trap_tval: u64,
    pub hart: *mut Hart,
    pub ram_obj: *mut Ram,
    pub mmio: *mut u8,
    /// Helpers, instantiated for the run's `Mmio` type.
    pub load_slow: usize,
    pub store_slow: usize,
    pub exec_one: usize,
    /// Floating point: `Hart::f`, the CSRs (FS, fflags, frm) and the helper for arithmetic.
    pub f: *mut u64,
    pub csr: *mut CsrState,
    pub exec_fp: usize,
}

/// What a compiled block or a helper returns.
pub(crate) mod status {
    /// Carry on (a block: it ran to its end; the pc is in the context).
    pub const OK: u64 = 0;
    /// An instruction trapped: `trap_cause`/`trap_tval`, at `pc`, after `retired` others.
    pub const TRAP: u64 = 1;
    /// The instruction asked the run to stop (see `Hart::request_stop`): the block ends after it.
    pub const STOP: u64 = 2;
    /// The block at `pc` does not fit the budget: nothing of it ran.
    pub const BUDGET: u64 = 3;
}

/// A compiled block's address. Blocks use Cranelift's `tail` convention, so Rust enters them
/// through [`Jit::enter`].
pub(crate) type BlockFn = usize;

/// The trampoline from Rust into a block: `(ctx, block) -> status`.
pub(crate) type EnterFn = unsafe extern "C" fn(*mut JitCtx, BlockFn) -> u64;

/// Why a block was not compiled.
pub(crate) enum CompileError {
    /// The code cache is full: drop it and compile again.
    Full,
    /// Cranelift could not (or the result needs relocation): leave the block to the
    /// interpreter.
    Unsupported,
}

/// Counters of the compiling tier, for `--stats` and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct JitStats {
    /// Regions compiled (see [`region`]), and how many of them hold a loop.
    pub blocks_compiled: u64,
    pub loops_compiled: u64,
    /// Regions Cranelift could not compile (left to the interpreter): a code generator bug.
    pub refused: u64,
    pub code_bytes: u64,
    pub compile_time: Duration,
    pub cache_flushes: u64,
}

/// The compiler and the memory its code lives in.
pub(crate) struct Jit {
    isa: OwnedTargetIsa,
    ctx: cranelift_codegen::Context,
    builder: cranelift_frontend::FunctionBuilderContext,
    arena: Arena,
    /// The trampoline, in its own small arena that is never cleared.
    _enter_arena: Arena,
    hints: Hints,
    pub enter: EnterFn,
    pub stats: JitStats,
    /// `perf`'s map of JIT code (`/tmp/perf-PID.map`), written when `REWIND_PERF_MAP` is set,
    /// so that a profile names compiled blocks.
    perf_map: Option<std::fs::File>,
    /// Where each region's host code is written, when `REWIND_JIT_DUMP` names a directory.
    dump_dir: Option<std::path::PathBuf>,
}

impl Jit {
    /// A compiler for this host with `code_bytes` of code memory, or `None` where Cranelift
    /// or executable memory is unavailable.
    pub(crate) fn new(code_bytes: usize) -> Option<Jit> {
        let mut flags = settings::builder();
        // `speed` (Cranelift's e-graph rewrites, GVN) against `none`: the SHA-256 kernel
        // 0.21-0.31 s -> 0.14-0.20 s; compiling a Debian boot's 3,400 blocks stays near 1 s, on
        // the compiling thread.
        flags.set("opt_level", "speed").ok()?;
        // Cranelift's tail calls, which blocks use to jump into each other, need them.
        flags.enable("preserve_frame_pointers").ok()?;
        // The context lives in it (see `translate::block_signature`).
        flags.enable("enable_pinned_reg").ok()?;
        // Checking the IR of every block costs compile time: debug builds only.
        let verify = if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        };
        flags.set("enable_verifier", verify).ok()?;
        let isa = cranelift_native::builder()
            .ok()?
            .finish(settings::Flags::new(flags))
            .ok()?;
        let mut ctx = cranelift_codegen::Context::new();
        let mut builder = cranelift_frontend::FunctionBuilderContext::new();
        translate::build_enter(&mut ctx.func, &mut builder, &*isa);
        let code = ctx.compile(&*isa, &mut ControlPlane::default()).ok()?;
        if !code.buffer.relocs().is_empty() {
            return None;
        }
        let mut enter_arena = Arena::new(4096)?;
        let enter = enter_arena.push(code.code_buffer())?;
        // SAFETY: the arena holds the trampoline `build_enter` made, whose signature in the
        // host's C convention is `EnterFn`'s.
        let enter = unsafe { std::mem::transmute::<usize, EnterFn>(enter) };
        Some(Jit {
            isa,
            ctx,
            builder,
            arena: Arena::new(code_bytes)?,
            _enter_arena: enter_arena,
            hints: Hints::new(),
            enter,
            stats: JitStats::default(),
            perf_map: std::env::var_os("REWIND_PERF_MAP").and_then(|_| {
                let path = format!("/tmp/perf-{}.map", std::process::id());
                std::fs::File::create(path).ok()
            }),
            dump_dir: std::env::var_os("REWIND_JIT_DUMP").map(std::path::PathBuf::from),
        })
    }

    /// Compiles a region (see [`region`]); returns its entry point.
    pub(crate) fn compile(
        &mut self,
        blocks: &[RegionBlock],
        placement: translate::Placement,
    ) -> Result<BlockFn, CompileError> {
        let started = Instant::now();
        self.ctx.clear();
        let mut looped = false;
        // A code generator bug must cost speed, never the run: such a block is interpreted.
        let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            looped = translate::build(
                &mut self.ctx.func,
                &mut self.builder,
                &*self.isa,
                blocks,
                placement,
                &mut self.hints,
            );
            self.ctx
                .compile(&*self.isa, &mut ControlPlane::default())
                .is_ok()
        }));
        if !matches!(compiled, Ok(true)) {
            self.stats.refused += 1;
            // The builder context may be left half-used after a panic.
            self.builder = cranelift_frontend::FunctionBuilderContext::new();
            return Err(CompileError::Unsupported);
        }
        let code = self.ctx.compiled_code().ok_or(CompileError::Unsupported)?;
        if !code.buffer.relocs().is_empty() {
            return Err(CompileError::Unsupported);
        }
        let addr = self
            .arena
            .push(code.code_buffer())
            .ok_or(CompileError::Full)?;
        if let Some(map) = &mut self.perf_map {
            use std::io::Write;
            let kinds: Vec<_> = blocks[0]
                .ops
                .iter()
                .map(|op| format!("{:?}", op.kind))
                .collect();
            let _ = writeln!(
                map,
                "{addr:x} {:x} rv:{}+{:x}:{}{}",
                code.code_buffer().len(),
                placement.page_first_index,
                blocks[0].page_offset,
                kinds.join(","),
                match blocks.len() {
                    1 => String::new(),
                    n => format!(" (+{} blocks)", n - 1),
                }
            );
        }
        if let Some(dir) = &self.dump_dir {
            let name = format!(
                "{addr:x}-{:x}+{:x}.bin",
                placement.page_first_index, blocks[0].page_offset
            );
            let _ = std::fs::write(dir.join(name), code.code_buffer());
        }
        self.stats.blocks_compiled += 1;
        self.stats.loops_compiled += looped as u64;
        self.stats.code_bytes = self.arena.used() as u64;
        self.stats.compile_time += started.elapsed();
        Ok(addr)
    }

    /// Drops all compiled code; the caller drops every pointer to it first.
    pub(crate) fn clear(&mut self) {
        self.arena.clear();
        self.hints.clear();
        self.stats.cache_flushes += 1;
        self.stats.code_bytes = 0;
    }
}

/// Reborrows the parts of a run from the context. Sound because the run loop that built the
/// context does not touch them while compiled code (and so a helper) runs.
///
/// # Safety
/// `ctx` must come from `Hart::run_jit_block`, with `M` the run's `Mmio` type.
unsafe fn parts<'a, M: Mmio>(
    ctx: *mut JitCtx,
) -> (&'a mut JitCtx, &'a mut Hart, &'a mut Ram, &'a mut M) {
    let ctx = &mut *ctx;
    let hart = &mut *ctx.hart;
    let ram = &mut *ctx.ram_obj;
    let mmio = &mut *(ctx.mmio as *mut M);
    (ctx, hart, ram, mmio)
}

/// The instruction at `pc`, with `icount` instructions before it, trapped: the block ends
/// before it.
fn report_trap(ctx: &mut JitCtx, trap: Trap, pc: u64, icount: u64) -> u64 {
    ctx.trap_cause = trap.cause;
    ctx.trap_tval = trap.tval;
    ctx.pc = pc;
    ctx.icount = icount;
    status::TRAP
}

/// The instruction with `icount` instructions before it asked the run to stop: the block
/// ends after it.
fn report_stop(ctx: &mut JitCtx, next: u64, icount: u64) -> u64 {
    ctx.pc = next;
    ctx.icount = icount + 1;
    status::STOP
}

/// A load that missed the TLB: the instruction at `pc` with `icount` before it, then `next`.
/// Returns the value; `ctx.status` says whether it trapped or asked to stop.
pub(crate) unsafe extern "C" fn load_slow<M: Mmio>(
    ctx: *mut JitCtx,
    addr: u64,
    size: u64,
    icount: u64,
    pc: u64,
    next: u64,
) -> u64 {
    let (ctx, hart, ram, mmio) = parts::<M>(ctx);
    hart.state.icount = icount;
    match hart.load_slow(ram, mmio, addr, size as u8) {
        Ok(value) => {
            ctx.status = if hart.stop_requested() {
                report_stop(ctx, next, icount)
            } else {
                status::OK
            };
            value
        }
        Err(trap) => {
            ctx.status = report_trap(ctx, trap, pc, icount);
            0
        }
    }
}

/// A store that missed the TLB (or goes to a page of code); returns a `status`.
pub(crate) unsafe extern "C" fn store_slow<M: Mmio>(
    ctx: *mut JitCtx,
    addr: u64,
    value: u64,
    size: u64,
    icount: u64,
    pc: u64,
    next: u64,
) -> u64 {
    let (ctx, hart, ram, mmio) = parts::<M>(ctx);
    hart.state.icount = icount;
    match hart.store_slow(ram, mmio, addr, size as u8, value) {
        Ok(()) if hart.stop_requested() => report_stop(ctx, next, icount),
        Ok(()) => status::OK,
        Err(trap) => report_trap(ctx, trap, pc, icount),
    }
}

/// Interprets one instruction (given as `Op::to_words`) at `pc`, with `icount` before it.
/// Sets `ctx.pc` to the next instruction; on a trap or a stop, also the count, as at the end
/// of a block. Returns a `status`.
pub(crate) unsafe extern "C" fn exec_one<M: Mmio>(
    ctx: *mut JitCtx,
    lo: u64,
    hi: u64,
    icount: u64,
    pc: u64,
) -> u64 {
    let (ctx, hart, ram, mmio) = parts::<M>(ctx);
    hart.state.icount = icount;
    match hart.exec(Op::from_words([lo, hi]), pc, ram, mmio) {
        Ok(next) if hart.stop_requested() => report_stop(ctx, next, icount),
        Ok(next) => {
            ctx.pc = next;
            status::OK
        }
        Err(trap) => report_trap(ctx, trap, pc, icount),
    }
}

/// A floating-point instruction other than a load or store (given as `Op::to_words`) at
/// `pc`, with `icount` before it. It touches no memory, so it needs no `Mmio`; integer
/// registers it reads are in `Hart::x` (the block stored them). Returns a `status`.
pub(crate) unsafe extern "C" fn exec_fp(
    ctx: *mut JitCtx,
    lo: u64,
    hi: u64,
    icount: u64,
    pc: u64,
) -> u64 {
    let ctx = &mut *ctx;
    let hart = &mut *ctx.hart;
    match hart.exec_fp(Op::from_words([lo, hi]), pc) {
        Ok(_) => status::OK,
        Err(trap) => report_trap(ctx, trap, pc, icount),
    }
}
