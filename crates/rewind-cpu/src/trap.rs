//! Exception causes and the trap value that travels with them.

/// Synchronous exception codes (`mcause` without the interrupt bit).
pub mod cause {
    pub const INSN_MISALIGNED: u64 = 0;
    pub const INSN_ACCESS: u64 = 1;
    pub const ILLEGAL_INSN: u64 = 2;
    pub const BREAKPOINT: u64 = 3;
    pub const LOAD_MISALIGNED: u64 = 4;
    pub const LOAD_ACCESS: u64 = 5;
    pub const STORE_MISALIGNED: u64 = 6;
    pub const STORE_ACCESS: u64 = 7;
    pub const ECALL_FROM_U: u64 = 8;
    pub const ECALL_FROM_S: u64 = 9;
    pub const ECALL_FROM_M: u64 = 11;
    pub const INSN_PAGE_FAULT: u64 = 12;
    pub const LOAD_PAGE_FAULT: u64 = 13;
    pub const STORE_PAGE_FAULT: u64 = 15;
}

/// Interrupt numbers (bit positions in `mip`/`mie`).
pub mod irq {
    pub const SSI: u64 = 1;
    pub const MSI: u64 = 3;
    pub const STI: u64 = 5;
    pub const MTI: u64 = 7;
    pub const SEI: u64 = 9;
    pub const MEI: u64 = 11;
}

/// A synchronous exception about to be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trap {
    pub cause: u64,
    pub tval: u64,
}

impl Trap {
    pub fn new(cause: u64, tval: u64) -> Trap {
        Trap { cause, tval }
    }

    pub fn illegal(bits: u32) -> Trap {
        Trap::new(cause::ILLEGAL_INSN, bits as u64)
    }
}

/// The kind of a memory access, which decides permissions and fault causes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Load,
    Store,
    Exec,
}

impl Access {
    pub fn page_fault(self, addr: u64) -> Trap {
        let cause = match self {
            Access::Load => cause::LOAD_PAGE_FAULT,
            Access::Store => cause::STORE_PAGE_FAULT,
            Access::Exec => cause::INSN_PAGE_FAULT,
        };
        Trap::new(cause, addr)
    }

    pub fn access_fault(self, addr: u64) -> Trap {
        let cause = match self {
            Access::Load => cause::LOAD_ACCESS,
            Access::Store => cause::STORE_ACCESS,
            Access::Exec => cause::INSN_ACCESS,
        };
        Trap::new(cause, addr)
    }
}
