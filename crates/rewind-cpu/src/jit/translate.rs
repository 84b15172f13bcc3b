//! Decoded instructions to Cranelift IR.
//!
//! Guest registers live in SSA values while the block runs: each is loaded from `Hart::x` at
//! its first use and stored back, if written, wherever the block can be left. Integer
//! instructions, branches and jumps are compiled; loads and stores look the TLB up inline and
//! call a helper on a miss; every other instruction is interpreted through a helper.

use super::region::{self, RegionBlock};
use super::{status, Hints, JitCtx};
use crate::csr::{CsrState, MSTATUS_FS};
use crate::decode::{Kind, Op};
use crate::fpu::{FLAG_NX, NAN_BOX};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F64, I16, I32, I64, I8};
use cranelift_codegen::ir::{
    AbiParam, Block, Function, InstBuilder, MemFlagsData, SigRef, Signature, Type, Value,
};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use std::mem::offset_of;

/// Entries of one TLB set, as `mmu::Tlb` lays them out: `{ vpn: u64, delta: u64 }`.
const TLB_ENTRIES: i64 = crate::mmu::TLB_ENTRIES as i64;

fn ctx_offset(offset: usize) -> i32 {
    offset as i32
}

/// The signature of every compiled block: `() -> status`, in the `tail` convention so that
/// one block can jump straight into the next. The context is in Cranelift's pinned register
/// (`r15` on x86-64) the whole time compiled code runs: no block spends an allocatable
/// register on it, or reloads it from the stack.
pub(super) fn block_signature() -> Signature {
    let mut sig = Signature::new(CallConv::Tail);
    sig.returns.push(AbiParam::new(I64));
    sig
}

/// The trampoline from Rust (the host's C convention) into a block (the `tail` convention):
/// `enter(ctx, block) -> status`. It puts the context in the pinned register, and gives the
/// register back as it found it: for Rust, it is one the callee preserves.
pub(super) fn build_enter(
    func: &mut Function,
    builder: &mut FunctionBuilderContext,
    isa: &dyn TargetIsa,
) {
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    sig.returns.push(AbiParam::new(I64));
    func.signature = sig;
    let mut b = FunctionBuilder::new(func, builder);
    let block_sig = b.import_signature(block_signature());
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let (ctx, block) = (b.block_params(entry)[0], b.block_params(entry)[1]);
    let caller_value = b.ins().get_pinned_reg(I64);
    b.ins().set_pinned_reg(ctx);
    let call = b.ins().call_indirect(block_sig, block, &[]);
    let status = b.inst_results(call)[0];
    b.ins().set_pinned_reg(caller_value);
    b.ins().return_(&[status]);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());
}

/// Where a region sits: the code-cache index of its page's first slot, so that it can find
/// the compiled blocks it jumps to in the same page.
#[derive(Clone, Copy)]
pub(crate) struct Placement {
    pub page_first_index: u64,
}

/// Fills `func` with the code of a region (see `region`): `blocks[0]` is where it is entered.
/// Returns whether the region jumps inside itself (holds a loop).
pub(super) fn build(
    func: &mut Function,
    builder: &mut FunctionBuilderContext,
    isa: &dyn TargetIsa,
    blocks: &[RegionBlock],
    placement: Placement,
    hints: &mut Hints,
) -> bool {
    let call_conv = isa.default_call_conv();
    func.signature = block_signature();

    let helper_sig = |params: usize| {
        let mut s = Signature::new(call_conv);
        s.params.extend((0..params).map(|_| AbiParam::new(I64)));
        s.returns.push(AbiParam::new(I64));
        s
    };
    let mut b = FunctionBuilder::new(func, builder);
    let load_sig = b.import_signature(helper_sig(6));
    let store_sig = b.import_signature(helper_sig(7));
    let exec_sig = b.import_signature(helper_sig(5));
    let chain_sig = b.import_signature(block_signature());
    let vars: [Variable; 32] = std::array::from_fn(|_| b.declare_var(I64));
    let icount_var = b.declare_var(I64);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let ctx = b.ins().get_pinned_reg(I64);
    let flags = MemFlagsData::trusted();
    // What the first block checks must fit the budget, or the interpreter runs the block.
    let entry_icount = b
        .ins()
        .load(I64, flags, ctx, ctx_offset(offset_of!(JitCtx, icount)));
    let end = b
        .ins()
        .load(I64, flags, ctx, ctx_offset(offset_of!(JitCtx, end)));
    let checks = region::budget_checks(blocks);
    let first_needs = checks[0].unwrap_or(blocks[0].ops.len() as u64);
    let left = b.ins().isub(end, entry_icount);
    let fits = b
        .ins()
        .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, left, first_needs as i64);
    let prologue = b.create_block();
    let too_long = b.create_block();
    b.set_cold_block(too_long);
    b.ins().brif(fits, prologue, &[], too_long, &[]);
    b.switch_to_block(too_long);
    let over = b.ins().iconst(I64, status::BUDGET as i64);
    b.ins().return_(&[over]);
    b.switch_to_block(prologue);
    let x = b
        .ins()
        .load(I64, flags, ctx, ctx_offset(offset_of!(JitCtx, x)));
    let entry_pc = b
        .ins()
        .load(I64, flags, ctx, ctx_offset(offset_of!(JitCtx, pc)));
    b.def_var(icount_var, entry_icount);
    let starts: Vec<(u64, Block, Block)> = blocks
        .iter()
        .map(|block| (block.page_offset, b.create_block(), b.create_block()))
        .collect();
    // With a jump inside the region, every register it touches lives in a variable from the
    // start, and every register it writes counts as written wherever it may be left.
    let looped = blocks.iter().any(|block| {
        region::successors(block.page_offset, &block.ops)
            .iter()
            .any(|target| starts.iter().any(|(start, ..)| start == target))
    });
    let region_regs = looped.then(|| pinned_registers(blocks));
    let mut t = Translator {
        b,
        ctx,
        x,
        entry_pc,
        entry_offset: blocks[0].page_offset,
        block_offset: blocks[0].page_offset,
        block_icount: entry_icount,
        icount_var,
        vars,
        placement,
        starts,
        checks,
        chain_sig,
        avail: 0,
        dirty: 0,
        region_regs,
        load_sig,
        store_sig,
        exec_sig,
        native_fma: isa.has_native_fma(),
        fp: FpKnown::default(),
        hints: looped.then_some(hints),
    };
    if looped {
        // Helpers change `JitCtx::pc`.
        t.store_ctx(entry_pc, offset_of!(JitCtx, region_pc));
    }
    t.reload_region_regs();
    let first_body = t.starts[0].2;
    t.b.ins().jump(first_body, &[]);
    for (i, block) in blocks.iter().enumerate() {
        t.block(i, &block.ops);
    }
    t.b.seal_all_blocks();
    t.b.finalize(isa.frontend_config());
    looped
}

/// At most this many guest registers stay in variables across a looping region's blocks.
/// Host registers are fewer than guest ones: a variable the allocator cannot keep in one is
/// spilled, and then costs a copy at every entry and exit on top of the memory access.
const PINNED_REGISTERS: usize = 8;

/// The registers a looping region keeps in variables (the most used ones, up to
/// [`PINNED_REGISTERS`]), and those of them it writes, as bit masks.
fn pinned_registers(blocks: &[RegionBlock]) -> (u32, u32) {
    let mut uses = [0u32; 32];
    let mut written = 0u32;
    for op in blocks.iter().flat_map(|block| &block.ops) {
        for r in [op.rs1, op.rs2, op.rd] {
            uses[(r & 31) as usize] += 1;
        }
        written |= 1 << (op.rd & 31);
    }
    let mut by_use: Vec<usize> = (1..32).filter(|&r| uses[r] > 0).collect();
    by_use.sort_by_key(|&r| std::cmp::Reverse(uses[r]));
    let pinned = by_use
        .iter()
        .take(PINNED_REGISTERS)
        .fold(0u32, |mask, &r| mask | 1 << r);
    (pinned, written & pinned)
}

/// Where a block goes next.
enum Target {
    /// A known distance from the block's first instruction.
    Offset(u64),
    /// A computed address.
    Dynamic(Value),
}

struct Translator<'a> {
    b: FunctionBuilder<'a>,
    ctx: Value,
    /// Address of `Hart::x`.
    x: Value,
    /// The pc of the region's first block (see [`Translator::entry_pc`]), and that block's
    /// offset in the page.
    entry_pc: Value,
    entry_offset: u64,
    /// The page offset of the block being translated, and the count before it.
    block_offset: u64,
    block_icount: Value,
    /// The count before the block being run, across jumps inside the region.
    icount_var: Variable,
    /// Each register's value, in `vars[r]` once `avail` has its bit.
    vars: [Variable; 32],
    avail: u32,
    /// Registers written since they were last stored to `Hart::x`.
    dirty: u32,
    placement: Placement,
    /// Per block of the region: its page offset, the budget check that jumps inside the
    /// region go to, and its body.
    starts: Vec<(u64, Block, Block)>,
    /// Per block of the region: how many instructions its budget check asks for, if it has
    /// one (see [`region::budget_checks`]).
    checks: Vec<Option<u64>>,
    chain_sig: SigRef,
    /// For a region with jumps inside it: the registers it keeps in variables across its
    /// blocks (see [`pinned_registers`]), and those of them it writes (stored wherever it is
    /// left). Other registers live in `Hart::x` between blocks, as in a region without loops.
    region_regs: Option<(u32, u32)>,
    load_sig: SigRef,
    store_sig: SigRef,
    exec_sig: SigRef,
    /// Whether the host computes fused multiply-adds in one instruction (Cranelift would
    /// otherwise call a library, which compiled code cannot).
    native_fma: bool,
    fp: FpKnown,
    /// In a looping region, where its loads and stores keep their page hints (see
    /// [`Translator::tlb_lookup`]).
    hints: Option<&'a mut Hints>,
}

/// What the block has established about floating point so far. It holds to the block's end:
/// inside a block, nothing clears `mstatus.FS`, `fflags` or `frm` (CSR writes and traps end
/// blocks); instructions only set FS to dirty and accrue flags.
#[derive(Default)]
struct FpKnown {
    /// An FP instruction completed, so FS is not off.
    fs_on: bool,
    /// An FP register was written, so FS is dirty.
    fs_dirty: bool,
    /// Whether the inexact flag is accrued, and whether also `frm` is round-to-nearest-even
    /// (i8 conditions, computed at the block's first FP arithmetic).
    inexact: Option<(Value, Value)>,
}

impl Translator<'_> {
    /// Accesses to the context, `Hart::x` and the TLB: aligned, and never faulting.
    fn flags() -> MemFlagsData {
        MemFlagsData::trusted()
    }

    /// Accesses to guest RAM: never faulting (the TLB proved the page is there), but guests
    /// may access memory at any alignment.
    fn guest_flags() -> MemFlagsData {
        MemFlagsData::new().with_notrap()
    }

    fn iconst(&mut self, v: u64) -> Value {
        self.b.ins().iconst(I64, v as i64)
    }

    fn get(&mut self, r: u8) -> Value {
        let r = (r & 31) as usize;
        if r == 0 {
            return self.iconst(0);
        }
        if self.avail & 1 << r != 0 {
            return self.b.use_var(self.vars[r]);
        }
        self.reload(r)
    }

    /// Loads register `r` from `Hart::x` into its variable.
    fn reload(&mut self, r: usize) -> Value {
        let v = self.b.ins().load(I64, Self::flags(), self.x, 8 * r as i32);
        self.b.def_var(self.vars[r], v);
        self.avail |= 1 << r;
        v
    }

    /// In a region with jumps inside it, loads every register it touches (at its start, and
    /// after a helper that may have written any).
    fn reload_region_regs(&mut self) {
        let Some((mut used, _)) = self.region_regs else {
            return;
        };
        while used != 0 {
            let r = used.trailing_zeros() as usize;
            used &= used - 1;
            self.reload(r);
        }
    }

    fn set(&mut self, r: u8, v: Value) {
        let r = (r & 31) as usize;
        if r != 0 {
            self.b.def_var(self.vars[r], v);
            self.avail |= 1 << r;
            self.dirty |= 1 << r;
        }
    }

    /// Stores the written registers to `Hart::x` (in the current block of code; the values
    /// stay in their variables, so this also serves side exits).
    fn store_dirty(&mut self) {
        self.store_registers(self.dirty);
    }

    /// Stores the registers of `mask` from their variables to `Hart::x`.
    fn store_registers(&mut self, mut mask: u32) {
        while mask != 0 {
            let r = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let v = self.b.use_var(self.vars[r]);
            self.b.ins().store(Self::flags(), v, self.x, 8 * r as i32);
        }
    }

    /// Translates the `i`-th block of the region.
    fn block(&mut self, i: usize, ops: &[Op]) {
        let (offset, check, body) = self.starts[i];
        self.block_offset = offset;
        if let Some((used, written)) = self.region_regs {
            // Jumps inside the region come here. A loop's head checks that what it counts
            // fits what is left of the budget, or the run loop takes over before it; other
            // blocks were counted by the head before them.
            self.b.switch_to_block(check);
            if let Some(needs) = self.checks[i] {
                let icount = self.b.use_var(self.icount_var);
                // Loaded where it is needed: kept in a register, it would take one a guest
                // register could have.
                let end = self.load_ctx_changing(offset_of!(JitCtx, end));
                let left = self.b.ins().isub(end, icount);
                let fits =
                    self.b
                        .ins()
                        .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, left, needs as i64);
                let over = self.b.create_block();
                self.b.set_cold_block(over);
                self.b.ins().brif(fits, body, &[], over, &[]);
                self.b.switch_to_block(over);
                (self.avail, self.dirty) = (used, written);
                self.store_dirty();
                let pc = self.pc_at(0);
                self.store_ctx(pc, offset_of!(JitCtx, pc));
                self.store_ctx(icount, offset_of!(JitCtx, icount));
                let ok = self.iconst(status::OK);
                self.b.ins().return_(&[ok]);
            } else {
                self.b.ins().jump(body, &[]);
            }
            (self.avail, self.dirty) = (used, written);
        }
        self.b.switch_to_block(body);
        self.block_icount = self.b.use_var(self.icount_var);
        self.fp = FpKnown::default();
        let mut at = 0u64;
        for (k, op) in ops.iter().enumerate() {
            let last = k + 1 == ops.len();
            let next = at + op.len as u64;
            self.op(op, k as u64, at, next, last);
            at = next;
        }
    }

    /// The pc of the region's first block. A looping region reads it from the context where
    /// it is needed (its exits and slow paths), leaving the host register to guest ones.
    fn entry_pc(&mut self) -> Value {
        if self.region_regs.is_none() {
            return self.entry_pc;
        }
        self.load_ctx_changing(offset_of!(JitCtx, region_pc))
    }

    /// The pc of the instruction at `offset` bytes into the block.
    fn pc_at(&mut self, offset: u64) -> Value {
        let from_entry = self
            .block_offset
            .wrapping_sub(self.entry_offset)
            .wrapping_add(offset);
        let entry_pc = self.entry_pc();
        self.b.ins().iadd_imm_s(entry_pc, from_entry as i64)
    }

    /// The count before the `k`-th instruction of the block.
    fn icount_at(&mut self, k: u64) -> Value {
        self.b.ins().iadd_imm_u(self.block_icount, k as i64)
    }

    fn store_ctx(&mut self, v: Value, offset: usize) {
        self.b
            .ins()
            .store(Self::flags(), v, self.ctx, ctx_offset(offset));
    }

    /// A field of the context that stays the same while compiled code runs (every one but
    /// those [`Translator::load_ctx_changing`] reads): Cranelift may load it once for many
    /// uses.
    fn load_ctx(&mut self, offset: usize) -> Value {
        let fixed = Self::flags().with_readonly().with_can_move();
        self.b.ins().load(I64, fixed, self.ctx, ctx_offset(offset))
    }

    /// A field of the context that compiled code or its helpers write (`pc`, `icount`,
    /// `region_pc`, `status`, the trap's), or one read here rather than kept in a register
    /// (`end`): loaded where it stands.
    fn load_ctx_changing(&mut self, offset: usize) -> Value {
        self.b
            .ins()
            .load(I64, Self::flags(), self.ctx, ctx_offset(offset))
    }

    /// Leaves the block after `retired` instructions for the one at `target`: straight into
    /// its compiled code when it is compiled and, in another page, that page's translation is
    /// in the fetch TLB (the block checks the budget itself); else back to the run loop.
    fn exit(&mut self, target: Target, retired: u64) {
        if let (Target::Offset(offset), Some((pinned, _))) = (&target, self.region_regs) {
            let in_page = self.block_offset.wrapping_add(*offset);
            if let Some(&(_, check, _)) = self.starts.iter().find(|(at, ..)| *at == in_page) {
                // The next block finds in memory what is not pinned.
                self.store_registers(self.dirty & !pinned);
                let icount = self.icount_at(retired);
                self.b.def_var(self.icount_var, icount);
                self.b.ins().jump(check, &[]);
                return;
            }
        }
        self.store_dirty();
        let pc = match target {
            Target::Offset(offset) => self.pc_at(offset),
            Target::Dynamic(pc) => pc,
        };
        self.store_ctx(pc, offset_of!(JitCtx, pc));
        let icount = self.icount_at(retired);
        self.store_ctx(icount, offset_of!(JitCtx, icount));
        let back = self.b.create_block();
        let chain_at = self.b.create_block();
        let index = self.b.append_block_param(chain_at, I64);
        match target {
            Target::Offset(offset) => {
                let in_page = self.block_offset as i64 + offset as i64;
                if (0..4096).contains(&in_page) {
                    let index =
                        self.iconst(self.placement.page_first_index + (in_page as u64 >> 1));
                    self.b.ins().jump(chain_at, &[index.into()]);
                } else {
                    self.index_in_other_page(pc, chain_at, back);
                }
            }
            Target::Dynamic(pc) => {
                let same = self.b.create_block();
                let other = self.b.create_block();
                let entry_pc = self.entry_pc();
                let other_bits = self.b.ins().bxor(pc, entry_pc);
                let other_page = self.b.ins().ushr_imm_u(other_bits, 12);
                self.b.ins().brif(other_page, other, &[], same, &[]);
                self.b.switch_to_block(same);
                let offset = self.b.ins().band_imm_u(pc, 0xfff);
                let slot = self.b.ins().ushr_imm_u(offset, 1);
                let index = self
                    .b
                    .ins()
                    .iadd_imm_u(slot, self.placement.page_first_index as i64);
                self.b.ins().jump(chain_at, &[index.into()]);
                self.b.switch_to_block(other);
                self.index_in_other_page(pc, chain_at, back);
            }
        }
        self.b.switch_to_block(chain_at);
        let table = self.load_ctx(offset_of!(JitCtx, compiled));
        let entry_offset = self.b.ins().ishl_imm_u(index, 3);
        let entry_addr = self.b.ins().iadd(table, entry_offset);
        let entry = self.b.ins().load(I64, Self::flags(), entry_addr, 0);
        let compiled = self.b.ins().icmp_imm_u(
            IntCC::UnsignedGreaterThanOrEqual,
            entry,
            crate::engine::FIRST_ADDRESS as i64,
        );
        let chain = self.b.create_block();
        self.b.ins().brif(compiled, chain, &[], back, &[]);
        self.b.switch_to_block(chain);
        self.b
            .ins()
            .return_call_indirect(self.chain_sig, entry, &[]);
        self.b.switch_to_block(back);
        let ok = self.iconst(status::OK);
        self.b.ins().return_(&[ok]);
    }

    /// Jumps to `chain_at` with the code-cache index of `pc`, which is in another page than
    /// the block: found through the fetch TLB (which holds only pages that may be executed
    /// whole) and the code page table. Goes to `back` when either does not know the page.
    fn index_in_other_page(&mut self, pc: Value, chain_at: Block, back: Block) {
        let set = self.load_ctx(offset_of!(JitCtx, exec_tlb));
        let vpn = self.b.ins().ushr_imm_u(pc, 12);
        let slot = self.b.ins().band_imm_s(vpn, TLB_ENTRIES - 1);
        let slot_offset = self.b.ins().ishl_imm_u(slot, 4);
        let tlb_entry = self.b.ins().iadd(set, slot_offset);
        let entry_vpn = self.b.ins().load(I64, Self::flags(), tlb_entry, 0);
        let delta = self.b.ins().load(I64, Self::flags(), tlb_entry, 8);
        let hit = self.b.ins().icmp(IntCC::Equal, entry_vpn, vpn);
        let mapped = self.b.create_block();
        self.b.ins().brif(hit, mapped, &[], back, &[]);
        self.b.switch_to_block(mapped);
        let ram_offset = self.b.ins().iadd(pc, delta);
        let ram_page = self.b.ins().ushr_imm_u(ram_offset, 12);
        let table = self.load_ctx(offset_of!(JitCtx, page_of));
        let at = self.b.ins().ishl_imm_u(ram_page, 2);
        let at = self.b.ins().iadd(table, at);
        let page_plus_one = self.b.ins().uload32(Self::flags(), at, 0);
        let known = self.b.create_block();
        self.b.ins().brif(page_plus_one, known, &[], back, &[]);
        self.b.switch_to_block(known);
        let page = self.b.ins().iadd_imm_s(page_plus_one, -1);
        let first = self
            .b
            .ins()
            .imul_imm_u(page, crate::ram::SLOTS_PER_PAGE as i64);
        let in_page = self.b.ins().band_imm_u(pc, 0xfff);
        let slot = self.b.ins().ushr_imm_u(in_page, 1);
        let index = self.b.ins().iadd(first, slot);
        self.b.ins().jump(chain_at, &[index.into()]);
    }

    fn op(&mut self, op: &Op, k: u64, offset: u64, next: u64, last: bool) {
        use Kind::*;
        let imm = op.imm as i64;
        match op.kind {
            Lui => {
                let v = self.iconst(imm as u64);
                self.set(op.rd, v);
            }
            Auipc => {
                let v = self.pc_at(offset.wrapping_add(imm as u64));
                self.set(op.rd, v);
            }
            Jal => {
                let link = self.pc_at(next);
                self.set(op.rd, link);
                self.exit(Target::Offset(offset.wrapping_add(imm as u64)), k + 1);
                return;
            }
            Jalr => {
                let a = self.get(op.rs1);
                let sum = self.b.ins().iadd_imm_s(a, imm);
                let target = self.b.ins().band_imm_s(sum, !1);
                let link = self.pc_at(next);
                self.set(op.rd, link);
                self.exit(Target::Dynamic(target), k + 1);
                return;
            }
            Beq | Bne | Blt | Bge | Bltu | Bgeu => {
                let cc = match op.kind {
                    Beq => IntCC::Equal,
                    Bne => IntCC::NotEqual,
                    Blt => IntCC::SignedLessThan,
                    Bge => IntCC::SignedGreaterThanOrEqual,
                    Bltu => IntCC::UnsignedLessThan,
                    _ => IntCC::UnsignedGreaterThanOrEqual,
                };
                let a = self.get(op.rs1);
                let b = self.get(op.rs2);
                let taken = self.b.ins().icmp(cc, a, b);
                let taken_block = self.b.create_block();
                let fall_block = self.b.create_block();
                self.b.ins().brif(taken, taken_block, &[], fall_block, &[]);
                self.b.switch_to_block(taken_block);
                self.exit(Target::Offset(offset.wrapping_add(imm as u64)), k + 1);
                self.b.switch_to_block(fall_block);
                self.exit(Target::Offset(next), k + 1);
                return;
            }
            Lb | Lh | Lw | Ld | Lbu | Lhu | Lwu => self.load(op, k, offset, next),
            Sb | Sh | Sw | Sd => self.store(op, k, offset, next),
            Fence => {}
            Addi | Slti | Sltiu | Xori | Ori | Andi | Slli | Srli | Srai | Addiw | Slliw
            | Srliw | Sraiw => {
                let a = self.get(op.rs1);
                let v = self.alu_imm(op.kind, a, imm);
                self.set(op.rd, v);
            }
            Add | Sub | Sll | Slt | Sltu | Xor | Srl | Sra | Or | And | Addw | Subw | Sllw
            | Srlw | Sraw | Mul | Mulh | Mulhsu | Mulhu | Div | Divu | Rem | Remu | Mulw | Divw
            | Divuw | Remw | Remuw => {
                let a = self.get(op.rs1);
                let b = self.get(op.rs2);
                let v = self.alu(op.kind, a, b);
                self.set(op.rd, v);
            }
            Flw | Fld | Fsw | Fsd => self.fp_memory(op, k, offset),
            Fadd | Fsub | Fmul | Fdiv | Fsqrt => self.fp_host(op, k, offset),
            Fmadd | Fmsub | Fnmsub | Fnmadd if self.native_fma => self.fp_host(op, k, offset),
            Fmadd | Fmsub | Fnmsub | Fnmadd | Fsgnj | Fsgnjn | Fsgnjx | Fmin | Fmax | FcvtToInt
            | FcvtFromInt | FcvtFmt | FmvToInt | FmvFromInt | Feq | Flt | Fle | Fclass => {
                self.fp_arith(op, k, offset)
            }
            _ => {
                self.interpret(op, k, offset, last);
                return;
            }
        }
        if last {
            self.exit(Target::Offset(next), k + 1);
        }
    }

    fn alu_imm(&mut self, kind: Kind, a: Value, imm: i64) -> Value {
        use Kind::*;
        let ins = self.b.ins();
        match kind {
            Addi => ins.iadd_imm_s(a, imm),
            Slti => {
                let c = ins.icmp_imm_s(IntCC::SignedLessThan, a, imm);
                self.b.ins().uextend(I64, c)
            }
            Sltiu => {
                let c = ins.icmp_imm_s(IntCC::UnsignedLessThan, a, imm);
                self.b.ins().uextend(I64, c)
            }
            Xori => ins.bxor_imm_s(a, imm),
            Ori => ins.bor_imm_s(a, imm),
            Andi => ins.band_imm_s(a, imm),
            Slli => ins.ishl_imm_u(a, imm & 63),
            Srli => ins.ushr_imm_u(a, imm & 63),
            Srai => ins.sshr_imm_u(a, imm & 63),
            Addiw => {
                let v = ins.iadd_imm_s(a, imm);
                self.sext32(v)
            }
            Slliw => {
                let v = ins.ireduce(I32, a);
                let v = self.b.ins().ishl_imm_u(v, imm & 31);
                self.b.ins().sextend(I64, v)
            }
            Srliw => {
                let v = ins.ireduce(I32, a);
                let v = self.b.ins().ushr_imm_u(v, imm & 31);
                self.b.ins().sextend(I64, v)
            }
            _ => {
                let v = ins.ireduce(I32, a);
                let v = self.b.ins().sshr_imm_u(v, imm & 31);
                self.b.ins().sextend(I64, v)
            }
        }
    }

    fn sext32(&mut self, v: Value) -> Value {
        let v = self.b.ins().ireduce(I32, v);
        self.b.ins().sextend(I64, v)
    }

    fn bool64(&mut self, c: Value) -> Value {
        self.b.ins().uextend(I64, c)
    }

    fn alu(&mut self, kind: Kind, a: Value, b: Value) -> Value {
        use Kind::*;
        match kind {
            Add => self.b.ins().iadd(a, b),
            Sub => self.b.ins().isub(a, b),
            Sll => self.b.ins().ishl(a, b),
            Srl => self.b.ins().ushr(a, b),
            Sra => self.b.ins().sshr(a, b),
            Slt => {
                let c = self.b.ins().icmp(IntCC::SignedLessThan, a, b);
                self.bool64(c)
            }
            Sltu => {
                let c = self.b.ins().icmp(IntCC::UnsignedLessThan, a, b);
                self.bool64(c)
            }
            Xor => self.b.ins().bxor(a, b),
            Or => self.b.ins().bor(a, b),
            And => self.b.ins().band(a, b),
            Addw | Subw | Sllw | Srlw | Sraw | Mulw => {
                let a32 = self.b.ins().ireduce(I32, a);
                let b32 = self.b.ins().ireduce(I32, b);
                let v = match kind {
                    Addw => self.b.ins().iadd(a32, b32),
                    Subw => self.b.ins().isub(a32, b32),
                    Sllw => self.b.ins().ishl(a32, b32),
                    Srlw => self.b.ins().ushr(a32, b32),
                    Sraw => self.b.ins().sshr(a32, b32),
                    _ => self.b.ins().imul(a32, b32),
                };
                self.b.ins().sextend(I64, v)
            }
            Mul => self.b.ins().imul(a, b),
            Mulh => self.b.ins().smulhi(a, b),
            Mulhu => self.b.ins().umulhi(a, b),
            Mulhsu => {
                // The unsigned high product, less b when a is negative.
                let hi = self.b.ins().umulhi(a, b);
                let negative = self.b.ins().sshr_imm_u(a, 63);
                let correction = self.b.ins().band(negative, b);
                self.b.ins().isub(hi, correction)
            }
            Div | Rem => self.signed_div(kind == Rem, a, b, I64),
            Divu | Remu => self.unsigned_div(kind == Remu, a, b, I64),
            Divw | Remw => {
                let a32 = self.b.ins().ireduce(I32, a);
                let b32 = self.b.ins().ireduce(I32, b);
                let v = self.signed_div(kind == Remw, a32, b32, I32);
                self.b.ins().sextend(I64, v)
            }
            _ => {
                let a32 = self.b.ins().ireduce(I32, a);
                let b32 = self.b.ins().ireduce(I32, b);
                let v = self.unsigned_div(kind == Remuw, a32, b32, I32);
                self.b.ins().sextend(I64, v)
            }
        }
    }

    /// RISC-V division never traps: x/0 = -1, x%0 = x, MIN/-1 = MIN, MIN%-1 = 0. The host's
    /// divide would trap on both, so the divisor becomes 1 there and the result is chosen.
    fn signed_div(&mut self, rem: bool, a: Value, b: Value, ty: Type) -> Value {
        let min = if ty == I32 { i32::MIN as i64 } else { i64::MIN };
        let ins = &mut self.b;
        let zero = ins.ins().icmp_imm_s(IntCC::Equal, b, 0);
        let minus_one = ins.ins().icmp_imm_s(IntCC::Equal, b, -1);
        let is_min = ins.ins().icmp_imm_s(IntCC::Equal, a, min);
        let overflow = ins.ins().band(minus_one, is_min);
        let unsafe_divisor = ins.ins().bor(zero, overflow);
        let one = ins.ins().iconst(ty, 1);
        let divisor = ins.ins().select(unsafe_divisor, one, b);
        if rem {
            let r = ins.ins().srem(a, divisor);
            ins.ins().select(zero, a, r)
        } else {
            let q = ins.ins().sdiv(a, divisor);
            let all_ones = ins.ins().iconst(ty, -1);
            ins.ins().select(zero, all_ones, q)
        }
    }

    fn unsigned_div(&mut self, rem: bool, a: Value, b: Value, ty: Type) -> Value {
        let ins = &mut self.b;
        let zero = ins.ins().icmp_imm_s(IntCC::Equal, b, 0);
        let one = ins.ins().iconst(ty, 1);
        let divisor = ins.ins().select(zero, one, b);
        if rem {
            let r = ins.ins().urem(a, divisor);
            ins.ins().select(zero, a, r)
        } else {
            let q = ins.ins().udiv(a, divisor);
            let all_ones = ins.ins().iconst(ty, -1);
            ins.ins().select(zero, all_ones, q)
        }
    }

    /// The host address of a `size`-byte access at `addr` if the TLB set at `tlb_offset` (a
    /// `JitCtx` field) has the page, branching to `hit` with it, or to `miss`.
    ///
    /// In a looping region, each access also keeps a hint: the TLB delta it used last time.
    /// The host address is computed from the hint, which does not depend on `addr`, while the
    /// TLB entry only confirms it (hit, and the same delta) on a predicted branch. A loop that
    /// chases pointers then waits for one memory load per access instead of two. A wrong
    /// hint costs a refresh; the access never uses a delta the TLB does not hold.
    fn tlb_lookup(&mut self, addr: Value, size: u64, tlb_offset: usize, hit: Block, miss: Block) {
        let set = self.load_ctx(tlb_offset);
        let vpn = self.b.ins().ushr_imm_u(addr, 12);
        let index = self.b.ins().band_imm_s(vpn, TLB_ENTRIES - 1);
        let entry_offset = self.b.ins().ishl_imm_u(index, 4);
        let entry = self.b.ins().iadd(set, entry_offset);
        let entry_vpn = self.b.ins().load(I64, Self::flags(), entry, 0);
        let delta = self.b.ins().load(I64, Self::flags(), entry, 8);
        // The page of the access's last byte must be the entry's too: an access that runs
        // into the next page misses, since that page never shares the entry's slot.
        let last_vpn = if size > 1 {
            let last = self.b.ins().iadd_imm_s(addr, size as i64 - 1);
            self.b.ins().ushr_imm_u(last, 12)
        } else {
            vpn
        };
        let hit_cond = self.b.ins().icmp(IntCC::Equal, entry_vpn, last_vpn);
        let ram = self.load_ctx(offset_of!(JitCtx, ram));
        let ram_addr = self.b.ins().iadd(ram, addr);
        let Some(hint) = self.hints.as_mut().and_then(|hints| hints.take()) else {
            let host = self.b.ins().iadd(ram_addr, delta);
            self.b.ins().brif(hit_cond, hit, &[host.into()], miss, &[]);
            return;
        };
        let hint_addr = self.iconst(hint);
        let guess = self.b.ins().load(I64, Self::flags(), hint_addr, 0);
        let same = self.b.ins().icmp(IntCC::Equal, delta, guess);
        let confirmed = self.b.ins().band(hit_cond, same);
        let guessed_host = self.b.ins().iadd(ram_addr, guess);
        let check_hit = self.b.create_block();
        let refresh = self.b.create_block();
        self.b.set_cold_block(check_hit);
        self.b.set_cold_block(refresh);
        self.b
            .ins()
            .brif(confirmed, hit, &[guessed_host.into()], check_hit, &[]);
        self.b.switch_to_block(check_hit);
        self.b.ins().brif(hit_cond, refresh, &[], miss, &[]);
        self.b.switch_to_block(refresh);
        self.b.ins().store(Self::flags(), delta, hint_addr, 0);
        let host = self.b.ins().iadd(ram_addr, delta);
        self.b.ins().jump(hit, &[host.into()]);
    }

    fn load(&mut self, op: &Op, k: u64, offset: u64, next: u64) {
        use Kind::*;
        let size: u64 = match op.kind {
            Lb | Lbu => 1,
            Lh | Lhu => 2,
            Lw | Lwu => 4,
            _ => 8,
        };
        let base = self.get(op.rs1);
        let addr = self.b.ins().iadd_imm_s(base, op.imm as i64);
        let hit = self.b.create_block();
        let host = self.b.append_block_param(hit, I64);
        let miss = self.b.create_block();
        let join = self.b.create_block();
        let value = self.b.append_block_param(join, I64);
        let not_ok = self.b.create_block();
        let stopped = self.b.create_block();
        self.b.set_cold_block(miss);
        self.b.set_cold_block(not_ok);
        self.b.set_cold_block(stopped);
        self.tlb_lookup(addr, size, offset_of!(JitCtx, read_tlb), hit, miss);

        self.b.switch_to_block(hit);
        let flags = Self::guest_flags();
        let v = match op.kind {
            Lb => self.b.ins().sload8(I64, flags, host, 0),
            Lbu => self.b.ins().uload8(I64, flags, host, 0),
            Lh => self.b.ins().sload16(I64, flags, host, 0),
            Lhu => self.b.ins().uload16(I64, flags, host, 0),
            Lw => self.b.ins().sload32(flags, host, 0),
            Lwu => self.b.ins().uload32(flags, host, 0),
            _ => self.b.ins().load(I64, flags, host, 0),
        };
        self.b.ins().jump(join, &[v.into()]);

        // The slow path leaves every register in memory, so that its exits need nothing more.
        self.b.switch_to_block(miss);
        self.store_dirty();
        let helper = self.load_ctx(offset_of!(JitCtx, load_slow));
        let size_v = self.iconst(size);
        let at = self.icount_at(k);
        let pc = self.pc_at(offset);
        let next_pc = self.pc_at(next);
        let call = self.b.ins().call_indirect(
            self.load_sig,
            helper,
            &[self.ctx, addr, size_v, at, pc, next_pc],
        );
        let raw = self.b.inst_results(call)[0];
        let loaded = self.extend_loaded(op.kind, raw);
        let st = self.load_ctx_changing(offset_of!(JitCtx, status));
        self.b.ins().brif(st, not_ok, &[], join, &[loaded.into()]);

        self.b.switch_to_block(not_ok);
        let trapped = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, st, status::TRAP as i64);
        let trap_status = self.iconst(status::TRAP);
        let trap_exit = self.b.create_block();
        self.b.set_cold_block(trap_exit);
        self.b.ins().brif(trapped, trap_exit, &[], stopped, &[]);
        self.b.switch_to_block(trap_exit);
        self.b.ins().return_(&[trap_status]);

        // The load completed but the run must stop after it: its result goes to memory too.
        self.b.switch_to_block(stopped);
        if op.rd & 31 != 0 {
            self.b
                .ins()
                .store(Self::flags(), loaded, self.x, 8 * (op.rd & 31) as i32);
        }
        let stop = self.iconst(status::STOP);
        self.b.ins().return_(&[stop]);

        self.b.switch_to_block(join);
        self.set(op.rd, value);
    }

    /// The helper returns the bytes zero-extended; signed loads extend their sign, as the
    /// fast path's loads do.
    fn extend_loaded(&mut self, kind: Kind, raw: Value) -> Value {
        let ty = match kind {
            Kind::Lb => I8,
            Kind::Lh => I16,
            Kind::Lw => I32,
            _ => return raw,
        };
        let v = self.b.ins().ireduce(ty, raw);
        self.b.ins().sextend(I64, v)
    }

    fn store(&mut self, op: &Op, k: u64, offset: u64, next: u64) {
        use Kind::*;
        let size: u64 = match op.kind {
            Sb => 1,
            Sh => 2,
            Sw => 4,
            _ => 8,
        };
        let base = self.get(op.rs1);
        let value = self.get(op.rs2);
        let addr = self.b.ins().iadd_imm_s(base, op.imm as i64);
        let hit = self.b.create_block();
        let host = self.b.append_block_param(hit, I64);
        let miss = self.b.create_block();
        let join = self.b.create_block();
        let not_ok = self.b.create_block();
        self.b.set_cold_block(miss);
        self.b.set_cold_block(not_ok);
        self.tlb_lookup(addr, size, offset_of!(JitCtx, write_tlb), hit, miss);

        self.b.switch_to_block(hit);
        let flags = Self::guest_flags();
        match size {
            1 => self.b.ins().istore8(flags, value, host, 0),
            2 => self.b.ins().istore16(flags, value, host, 0),
            4 => self.b.ins().istore32(flags, value, host, 0),
            _ => self.b.ins().store(flags, value, host, 0),
        };
        self.b.ins().jump(join, &[]);

        self.b.switch_to_block(miss);
        self.store_dirty();
        let helper = self.load_ctx(offset_of!(JitCtx, store_slow));
        let size_v = self.iconst(size);
        let at = self.icount_at(k);
        let pc = self.pc_at(offset);
        let next_pc = self.pc_at(next);
        let call = self.b.ins().call_indirect(
            self.store_sig,
            helper,
            &[self.ctx, addr, value, size_v, at, pc, next_pc],
        );
        let st = self.b.inst_results(call)[0];
        self.b.ins().brif(st, not_ok, &[], join, &[]);

        // A trap, or a stop after the store: the helper set the pc and count.
        self.b.switch_to_block(not_ok);
        self.b.ins().return_(&[st]);

        self.b.switch_to_block(join);
    }

    /// A floating-point load or store. The fast path needs FS on and a TLB hit; otherwise
    /// the interpreter runs the instruction (and raises its trap). Floating-point registers
    /// always live in `Hart::f`.
    fn fp_memory(&mut self, op: &Op, k: u64, offset: u64) {
        use Kind::*;
        let (size, is_load) = match op.kind {
            Flw => (4, true),
            Fld => (8, true),
            Fsw => (4, false),
            _ => (8, false),
        };
        // Before any branch: a register loaded here stays cached for the rest of the block.
        let base = self.get(op.rs1);
        let addr = self.b.ins().iadd_imm_s(base, op.imm as i64);
        let fs_on = self.b.create_block();
        let hit = self.b.create_block();
        let host = self.b.append_block_param(hit, I64);
        let slow = self.b.create_block();
        let join = self.b.create_block();
        self.b.set_cold_block(slow);
        match self.fs_off_check() {
            Some(fs) => self.b.ins().brif(fs, fs_on, &[], slow, &[]),
            None => self.b.ins().jump(fs_on, &[]),
        };

        self.b.switch_to_block(fs_on);
        let tlb = if is_load {
            offset_of!(JitCtx, read_tlb)
        } else {
            offset_of!(JitCtx, write_tlb)
        };
        self.tlb_lookup(addr, size, tlb, hit, slow);

        self.b.switch_to_block(hit);
        let f = self.load_ctx(offset_of!(JitCtx, f));
        let guest = Self::guest_flags();
        if is_load {
            let v = if size == 4 {
                let single = self.b.ins().uload32(guest, host, 0);
                self.b.ins().bor_imm_u(single, NAN_BOX as i64)
            } else {
                self.b.ins().load(I64, guest, host, 0)
            };
            self.b
                .ins()
                .store(Self::flags(), v, f, 8 * (op.rd & 31) as i32);
            self.mark_fs_dirty();
        } else {
            let v = self
                .b
                .ins()
                .load(I64, Self::flags(), f, 8 * (op.rs2 & 31) as i32);
            if size == 4 {
                self.b.ins().istore32(guest, v, host, 0);
            } else {
                self.b.ins().store(guest, v, host, 0);
            }
        }
        self.b.ins().jump(join, &[]);

        self.b.switch_to_block(slow);
        self.store_dirty();
        let st = self.call_helper(offset_of!(JitCtx, exec_one), op, k, offset);
        self.leave_unless_ok(st, join);
        self.b.switch_to_block(join);
        self.fp.fs_on = true;
        self.fp.fs_dirty |= is_load;
    }

    /// A nonzero value if `mstatus.FS` is on, unless the block already knows it is.
    fn fs_off_check(&mut self) -> Option<Value> {
        if self.fp.fs_on {
            return None;
        }
        let csr = self.load_ctx(offset_of!(JitCtx, csr));
        let mstatus = self.b.ins().load(
            I64,
            Self::flags(),
            csr,
            offset_of!(CsrState, mstatus) as i32,
        );
        Some(self.b.ins().band_imm_u(mstatus, MSTATUS_FS as i64))
    }

    /// Sets `mstatus.FS` to dirty, as writing an FP register does, unless the block did.
    fn mark_fs_dirty(&mut self) {
        if self.fp.fs_dirty {
            return;
        }
        let csr = self.load_ctx(offset_of!(JitCtx, csr));
        let at = offset_of!(CsrState, mstatus) as i32;
        let mstatus = self.b.ins().load(I64, Self::flags(), csr, at);
        let dirty = self.b.ins().bor_imm_u(mstatus, MSTATUS_FS as i64);
        self.b.ins().store(Self::flags(), dirty, csr, at);
    }

    /// Arithmetic in the host's floating point where it gives the soft-float result bit for
    /// bit (the conditions of `fpu::host_arith`, checked here inline); anything else goes to
    /// the interpreter's code, which also raises the traps.
    fn fp_host(&mut self, op: &Op, k: u64, offset: u64) {
        use Kind::*;
        let double = op.fmt == 1;
        let (int_ty, float_ty) = if double { (I64, F64) } else { (I32, F32) };
        let inexact = match self.fp.inexact {
            Some(known) => known,
            None => {
                let csr = self.load_ctx(offset_of!(JitCtx, csr));
                let fflags = self.b.ins().uload8(
                    I64,
                    Self::flags(),
                    csr,
                    offset_of!(CsrState, fflags) as i32,
                );
                let frm =
                    self.b
                        .ins()
                        .uload8(I64, Self::flags(), csr, offset_of!(CsrState, frm) as i32);
                let nx = self.b.ins().band_imm_u(fflags, FLAG_NX as i64);
                let nx = self.b.ins().icmp_imm_u(IntCC::NotEqual, nx, 0);
                let rne = self.b.ins().icmp_imm_u(IntCC::Equal, frm, 0);
                let both = self.b.ins().band(nx, rne);
                self.fp.inexact = Some((nx, both));
                (nx, both)
            }
        };
        let mut ok = match op.rm {
            0 => inexact.0,
            7 => inexact.1,
            _ => self.b.ins().iconst(I8, 0),
        };
        if let Some(fs) = self.fs_off_check() {
            let on = self.b.ins().icmp_imm_u(IntCC::NotEqual, fs, 0);
            ok = self.b.ins().band(ok, on);
        }
        let f = self.load_ctx(offset_of!(JitCtx, f));
        let fused = matches!(op.kind, Fmadd | Fmsub | Fnmsub | Fnmadd);
        let mut operands = Vec::with_capacity(3);
        for (i, r) in [op.rs1, op.rs2, op.rs3].into_iter().enumerate() {
            if i == 1 && op.kind == Fsqrt || i == 2 && !fused {
                break;
            }
            let bits = self
                .b
                .ins()
                .load(I64, Self::flags(), f, 8 * (r & 31) as i32);
            // Zero or normal, or (the divisor, the root) normal; a single must be NaN-boxed.
            let zero_allowed = !(op.kind == Fdiv && i == 1 || op.kind == Fsqrt);
            let fits = self.plain_operand(bits, double, zero_allowed);
            ok = self.b.ins().band(ok, fits);
            let narrow = if double {
                bits
            } else {
                self.b.ins().ireduce(I32, bits)
            };
            let value = self.b.ins().bitcast(float_ty, MemFlagsData::new(), narrow);
            operands.push(value);
        }
        if op.kind == Fsqrt {
            let zero = if double {
                self.b.ins().f64const(0.0)
            } else {
                self.b.ins().f32const(0.0)
            };
            let positive = self.b.ins().fcmp(FloatCC::GreaterThan, operands[0], zero);
            ok = self.b.ins().band(ok, positive);
        }
        let compute = self.b.create_block();
        let write = self.b.create_block();
        let slow = self.b.create_block();
        let join = self.b.create_block();
        self.b.set_cold_block(slow);
        self.b.ins().brif(ok, compute, &[], slow, &[]);

        self.b.switch_to_block(compute);
        let ins = self.b.ins();
        let r = match op.kind {
            Fadd => ins.fadd(operands[0], operands[1]),
            Fsub => ins.fsub(operands[0], operands[1]),
            Fmul => ins.fmul(operands[0], operands[1]),
            Fdiv => ins.fdiv(operands[0], operands[1]),
            Fsqrt => ins.sqrt(operands[0]),
            _ => {
                let (mut a, b, mut c) = (operands[0], operands[1], operands[2]);
                if matches!(op.kind, Fnmsub | Fnmadd) {
                    a = self.b.ins().fneg(a);
                }
                if matches!(op.kind, Fmsub | Fnmadd) {
                    c = self.b.ins().fneg(c);
                }
                self.b.ins().fma(a, b, c)
            }
        };
        // Normal and not at the edge of the range: no overflow, underflow or NaN came out.
        let magnitude = self.b.ins().fabs(r);
        let (min, max) = if double {
            (
                self.b.ins().f64const(f64::MIN_POSITIVE),
                self.b.ins().f64const(f64::MAX),
            )
        } else {
            (
                self.b.ins().f32const(f32::MIN_POSITIVE),
                self.b.ins().f32const(f32::MAX),
            )
        };
        let above = self.b.ins().fcmp(FloatCC::GreaterThan, magnitude, min);
        let finite = self.b.ins().fcmp(FloatCC::LessThanOrEqual, magnitude, max);
        let normal = self.b.ins().band(above, finite);
        self.b.ins().brif(normal, write, &[], slow, &[]);

        self.b.switch_to_block(write);
        let bits = self.b.ins().bitcast(int_ty, MemFlagsData::new(), r);
        let bits = if double {
            bits
        } else {
            let wide = self.b.ins().uextend(I64, bits);
            self.b.ins().bor_imm_u(wide, NAN_BOX as i64)
        };
        self.b
            .ins()
            .store(Self::flags(), bits, f, 8 * (op.rd & 31) as i32);
        self.mark_fs_dirty();
        self.b.ins().jump(join, &[]);

        self.b.switch_to_block(slow);
        self.call_fp_helper(op, k, offset, join);

        self.b.switch_to_block(join);
        self.fp.fs_on = true;
        self.fp.fs_dirty = true;
    }

    /// An i8 condition: the register `bits` holds a zero (if `zero_allowed`) or a normal
    /// number of the format (for a single, NaN-boxed).
    fn plain_operand(&mut self, bits: Value, double: bool, zero_allowed: bool) -> Value {
        let (mantissa_bits, exponent_mask, magnitude_shift) = if double {
            (52, 0x7ff, 1)
        } else {
            (23, 0xff, 33)
        };
        let exponent = self.b.ins().ushr_imm_u(bits, mantissa_bits);
        let exponent = self.b.ins().band_imm_u(exponent, exponent_mask);
        let biased = self.b.ins().iadd_imm_s(exponent, -1);
        let mut fits = self
            .b
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThan, biased, exponent_mask - 1);
        if zero_allowed {
            let magnitude = self.b.ins().ishl_imm_u(bits, magnitude_shift);
            let zero = self.b.ins().icmp_imm_u(IntCC::Equal, magnitude, 0);
            fits = self.b.ins().bor(fits, zero);
        }
        if !double {
            let upper = self.b.ins().ushr_imm_u(bits, 32);
            let boxed = self.b.ins().icmp_imm_u(IntCC::Equal, upper, 0xffff_ffff);
            fits = self.b.ins().band(fits, boxed);
        }
        fits
    }

    /// Floating-point arithmetic, compares, conversions and moves, through the interpreter's
    /// code called directly. Only the integer registers the instruction reads go to memory
    /// first, and only the one it writes is reloaded after.
    fn fp_arith(&mut self, op: &Op, k: u64, offset: u64) {
        use Kind::*;
        let reads_x = matches!(op.kind, FcvtFromInt | FmvFromInt);
        let writes_x = matches!(op.kind, FcvtToInt | FmvToInt | Feq | Flt | Fle | Fclass);
        let rs1 = (op.rs1 & 31) as usize;
        if reads_x && self.dirty & (1 << rs1) != 0 {
            let v = self.b.use_var(self.vars[rs1]);
            self.b.ins().store(Self::flags(), v, self.x, 8 * rs1 as i32);
            self.dirty &= !(1 << rs1);
        }
        let go_on = self.b.create_block();
        self.call_fp_helper(op, k, offset, go_on);
        self.b.switch_to_block(go_on);
        let rd = (op.rd & 31) as usize;
        if writes_x && rd != 0 {
            self.avail &= !(1 << rd);
            self.dirty &= !(1 << rd);
            if self.region_regs.is_some() {
                self.reload(rd);
            }
        }
        self.fp.fs_on = true;
        self.fp.fs_dirty |= !writes_x;
    }

    /// Runs the instruction through the `exec_fp` helper and goes on to `join`. On a trap the
    /// instruction wrote nothing: the block's registers go to memory and it returns.
    fn call_fp_helper(&mut self, op: &Op, k: u64, offset: u64, join: Block) {
        let st = self.call_helper(offset_of!(JitCtx, exec_fp), op, k, offset);
        let leave = self.b.create_block();
        self.b.set_cold_block(leave);
        self.b.ins().brif(st, leave, &[], join, &[]);
        self.b.switch_to_block(leave);
        self.store_dirty();
        self.b.ins().return_(&[st]);
    }

    /// Calls the helper at `helper` (a `JitCtx` field) with the `k`-th instruction, at
    /// `offset`; returns its status.
    fn call_helper(&mut self, helper: usize, op: &Op, k: u64, offset: u64) -> Value {
        let [lo, hi] = op.to_words();
        let helper = self.load_ctx(helper);
        let lo = self.iconst(lo);
        let hi = self.iconst(hi);
        let at = self.icount_at(k);
        let pc = self.pc_at(offset);
        let call = self
            .b
            .ins()
            .call_indirect(self.exec_sig, helper, &[self.ctx, lo, hi, at, pc]);
        self.b.inst_results(call)[0]
    }

    /// Returns `st` from the block unless it is `OK`, in which case goes on to `join`.
    fn leave_unless_ok(&mut self, st: Value, join: Block) {
        let leave = self.b.create_block();
        self.b.set_cold_block(leave);
        self.b.ins().brif(st, leave, &[], join, &[]);
        self.b.switch_to_block(leave);
        self.b.ins().return_(&[st]);
    }

    /// Hands the instruction to the interpreter. Registers go to memory first and are
    /// reloaded after, since the instruction may read or write any of them.
    fn interpret(&mut self, op: &Op, k: u64, offset: u64, last: bool) {
        self.store_dirty();
        self.dirty = 0;
        self.avail = 0;
        let st = self.call_helper(offset_of!(JitCtx, exec_one), op, k, offset);
        if last {
            // The helper set the next pc; the count is the block's to set. No chaining: the
            // instruction may have changed the translation context.
            let done = self.b.create_block();
            let leave = self.b.create_block();
            self.b.ins().brif(st, leave, &[], done, &[]);
            self.b.switch_to_block(done);
            let icount = self.icount_at(k + 1);
            self.store_ctx(icount, offset_of!(JitCtx, icount));
            self.b.ins().return_(&[st]);
            self.b.switch_to_block(leave);
            self.b.ins().return_(&[st]);
            return;
        }
        let go_on = self.b.create_block();
        self.leave_unless_ok(st, go_on);
        self.b.switch_to_block(go_on);
        self.reload_region_regs();
    }
}
