//! The `cpu` layer of Rewind: one RV64GC hart (RV64IMAFDC, Zicsr, Zifencei; M, S and U modes;
//! Sv39/Sv48; PMP) with no I/O of its own. It sees RAM directly and everything else through
//! the [`Mmio`] trait, and counts time only in executed instructions.

mod backing;
pub mod clock;
pub mod csr;
pub mod decode;
mod engine;
mod fpu;
pub mod hart;
mod inspect;
#[cfg(target_arch = "x86_64")]
mod jit;
mod mmu;
mod pmp;
pub mod ram;
mod state;
pub mod trap;
pub mod trigger;

pub use clock::Clock;
pub use engine::{Engine, EngineError};
pub use hart::{Hart, HartExit, Mmio, WatchKind, Watchpoint, PRIV_M, PRIV_S, PRIV_U};
pub use mmu::TlbState;
pub use ram::Ram;
pub use state::{HartState, Reservation};
pub use trap::{Access, Trap};

#[cfg(target_arch = "x86_64")]
pub use jit::JitStats;

/// Counters of the compiling tier (which this host does not have).
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy, Debug, Default)]
pub struct JitStats {
    pub blocks_compiled: u64,
    pub loops_compiled: u64,
    pub refused: u64,
    pub code_bytes: u64,
    pub compile_time: std::time::Duration,
    pub cache_flushes: u64,
}
