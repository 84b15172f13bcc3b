//! A hart's guest-visible state as plain data, for snapshots: saved with [`Hart::save`] and
//! rebuilt with [`Hart::restore`], which treats the state as untrusted and checks it first.

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::csr::{self, CsrState};
use crate::hart::{Hart, PRIV_M, PRIV_S, PRIV_U};
use crate::mmu::TlbState;
use crate::trigger::{self, TRIGGERS};

/// Everything about a hart that the guest can observe; caches (TLB, decoded blocks) excluded.
/// The hart holds its state in this form, so saving is a copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartState {
    pub x: [u64; 32],
    /// Floating-point registers as raw bits (singles NaN-boxed).
    pub f: [u64; 32],
    pub pc: u64,
    pub privilege: u8,
    /// Instructions executed (including ones that trapped) plus idle time skipped in WFI,
    /// in instruction units: the one clock of the machine.
    pub icount: u64,
    pub csr: CsrState,
    pub hart_id: u64,
    /// Virtual time as a function of `icount` (the machine keeps the bus's copy in step).
    pub clock: Clock,
    /// Interrupt lines driven by devices (MTIP, MSIP, MEIP, SEIP), ORed into `mip`.
    pub irq_lines: u64,
    pub reservation: Option<Reservation>,
}

/// An LR reservation: the address and the value loaded. As on QEMU, SC succeeds when the
/// reservation is held and memory still holds that value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub addr: u64,
    pub value: u64,
}

impl Hart {
    pub fn save(&self) -> HartState {
        self.state.clone()
    }

    /// The TLB's contents. They are guest-visible (a page-table change without a fence may
    /// still use them), but not hashed in state digests, which predate them.
    pub fn save_translations(&self) -> TlbState {
        self.tlb.save()
    }

    /// Puts back the TLB contents saved with the state this hart was restored from.
    pub fn restore_translations(&mut self, saved: &TlbState) {
        self.tlb.restore(saved, self.state.csr.satp);
        self.context_changed();
    }

    /// A hart in exactly the saved state, with empty caches; an error says which invariant
    /// the state breaks.
    pub fn restore(state: &HartState) -> Result<Hart, String> {
        check(state)?;
        let mut hart = Hart::new(state.hart_id, state.pc);
        hart.state = state.clone();
        hart.tlb.restore(&TlbState::default(), state.csr.satp);
        hart.pmp_changed();
        hart.triggers_changed();
        Ok(hart)
    }
}

fn check(s: &HartState) -> Result<(), String> {
    let c = &s.csr;
    let mode = c.satp >> 60;
    let problems = [
        (s.x[0] != 0, "x0 is not zero"),
        (s.pc & 1 != 0, "pc is not 2-byte aligned"),
        (
            ![PRIV_U, PRIV_S, PRIV_M].contains(&s.privilege),
            "the privilege level does not exist",
        ),
        (
            c.frm > 7 || c.fflags > 0x1f,
            "fcsr has bits that do not exist",
        ),
        (
            ![
                csr::SATP_MODE_BARE,
                csr::SATP_MODE_SV39,
                csr::SATP_MODE_SV48,
            ]
            .contains(&mode),
            "satp names a translation mode this hart lacks",
        ),
        (
            c.mstatus & !csr::MSTATUS_STORED != 0,
            "mstatus has bits that cannot be set",
        ),
        (
            s.clock.check(s.icount).is_err(),
            "the clock does not fit the instruction count",
        ),
        (
            c.tselect >= TRIGGERS as u64,
            "tselect names a trigger that does not exist",
        ),
        (
            !c.tdata1.iter().all(|&t| trigger::valid_tdata1(t)),
            "a trigger's tdata1 holds a value no write can produce",
        ),
        (
            !c.tdata3.iter().all(|&t| trigger::legal_tdata3(t) == t),
            "a trigger's tdata3 holds a value no write can produce",
        ),
        (
            c.mcontext & !trigger::MCONTEXT_MASK != 0,
            "mcontext has bits that do not exist",
        ),
    ];
    match problems.iter().find(|(bad, _)| *bad) {
        Some((_, what)) => Err(format!("the hart state is not valid: {what}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_restores_to_the_same_state_and_bad_ones_are_refused() {
        let mut hart = Hart::new(0, 0x8000_0000);
        hart.state.x[5] = 7;
        hart.state.csr.satp = 8 << 60 | 0x1234;
        hart.state.privilege = PRIV_S;
        hart.state.csr.tselect = 1;
        hart.state.csr.tdata1[1] = 6 << 60 | 1 << 4 | 1;
        hart.state.csr.tdata2[1] = 0x8000_1000;
        let state = hart.save();
        let restored = Hart::restore(&state).unwrap();
        assert!(restored.data_triggers_armed && !restored.exec_triggers_armed);
        assert_eq!(Hart::restore(&state).unwrap().save(), state);
        for broken in [
            HartState {
                privilege: 2,
                ..state.clone()
            },
            HartState {
                pc: 0x8000_0001,
                ..state.clone()
            },
            {
                let mut s = state.clone();
                s.x[0] = 1;
                s
            },
            {
                let mut s = state.clone();
                s.csr.satp = 5 << 60;
                s
            },
            {
                let mut s = state.clone();
                s.csr.tselect = 2;
                s
            },
            {
                let mut s = state.clone();
                s.csr.tdata1[1] = 0;
                s
            },
            {
                let mut s = state.clone();
                s.csr.tdata3[0] = 1;
                s
            },
        ] {
            assert!(Hart::restore(&broken).is_err());
        }
    }
}
