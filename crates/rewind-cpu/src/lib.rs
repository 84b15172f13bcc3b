//! The `cpu` layer of Rewind: one RV64GC hart (RV64IMAFDC, Zicsr, Zifencei; M, S and U modes;
//! Sv39/Sv48; PMP) with no I/O of its own. It sees RAM directly and everything else through
//! the [`Mmio`] trait, and counts time only in executed instructions.

pub mod clock;
pub mod csr;
pub mod decode;
mod fpu;
pub mod hart;
mod inspect;
mod mmu;
pub mod ram;
mod state;
pub mod trap;
pub mod trigger;

pub use clock::Clock;
pub use hart::{Exit, Hart, Mmio, WatchKind, Watchpoint, PRIV_M, PRIV_S, PRIV_U};
pub use ram::Ram;
pub use state::HartState;
pub use trap::{Access, Trap};
