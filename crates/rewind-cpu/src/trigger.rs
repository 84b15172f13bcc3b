//! The Sdtrig trigger module as QEMU 10's `virt` hart offers it: two triggers of type 2
//! (mcontrol) or 6 (mcontrol6) matching execute, load and store addresses, whose only action is
//! a breakpoint exception. No `tcontrol`, no Debug mode, no chaining, match mode 0 only.
//!
//! The trigger CSRs live in [`crate::csr::CsrState`]; the hart keeps two flags derived from them
//! (see `Hart::triggers_changed`) so that unarmed triggers cost nothing: execute triggers are
//! checked only by the checked instance of the run loop, and pages under a load/store trigger
//! never get TLB entries, so their accesses take the slow path, which checks them.

/// Number of triggers (`tselect` ignores writes of larger values, as on QEMU).
pub const TRIGGERS: usize = 2;
/// `tinfo`: every trigger supports types 2 and 6.
pub const TINFO: u64 = 1 << 2 | 1 << 6;
/// `tdata1` at reset: a type-2 trigger that matches nothing.
pub const TDATA1_RESET: u64 = 2 << 60;
/// `mcontext` bits (13 on RV64 without the H extension).
pub const MCONTEXT_MASK: u64 = 0x1fff;

pub const LOAD: u64 = 1 << 0;
pub const STORE: u64 = 1 << 1;
pub const EXECUTE: u64 = 1 << 2;
const MODE_U: u64 = 1 << 3;
const MODE_S: u64 = 1 << 4;
const MODE_M: u64 = 1 << 6;
/// mcontrol6 only: the virtualised modes (kept, as QEMU does, but never matched: no H).
const MODE_VU: u64 = 1 << 23;
const MODE_VS: u64 = 1 << 24;
const MODES: u64 = MODE_U | MODE_S | MODE_M;

fn kind(tdata1: u64) -> u64 {
    tdata1 >> 60
}

/// The size field of a type 2 or 6 `tdata1`.
fn size_encoding(tdata1: u64) -> u64 {
    match kind(tdata1) {
        2 => (tdata1 >> 21 & 3) << 2 | (tdata1 >> 16 & 3),
        _ => tdata1 >> 16 & 0xf,
    }
}

/// Bytes from `tdata2` that a load/store trigger watches: the access size named by the size
/// field, 8 for "any size" (as QEMU, which watches that window for accesses of any size).
fn window(tdata1: u64) -> u64 {
    match size_encoding(tdata1) {
        1 => 1,
        2 => 2,
        3 => 4,
        _ => 8,
    }
}

/// What a write of `value` to `tdata1` leaves there, or `None` when the write is ignored
/// (a type other than 0, 2 or 6). As QEMU: `dmode`, `action`, `match`, `chain`, `timing`,
/// `select` and `hit` read as 0, and an unsupported size (6 bytes, > 8 bytes) becomes "any".
/// Type 0 disables the trigger, as the spec requires (QEMU 10 ignores such writes; see
/// docs/qemu-departures.md).
pub(crate) fn legal_tdata1(value: u64) -> Option<u64> {
    let (size_mask, kept) = match kind(value) {
        0 => return Some(TDATA1_RESET),
        2 => (3 << 16 | 3 << 21, MODES),
        6 => (0xf << 16, MODES | MODE_VU | MODE_VS),
        _ => return None,
    };
    let size = if matches!(size_encoding(value), 0 | 1 | 2 | 3 | 5) {
        value & size_mask
    } else {
        0
    };
    Some(kind(value) << 60 | size | value & (kept | LOAD | STORE | EXECUTE))
}

/// What a write of `value` to `tdata3` (textra64) leaves there: `mhvalue` as written, and
/// `mhselect` 0 (ignore) or 4 (match `mcontext`), as QEMU maps the selects of a hart without H.
pub(crate) fn legal_tdata3(value: u64) -> u64 {
    let mhselect = if value >> 48 & 4 != 0 { 4 } else { 0 };
    value & !((1 << 51) - 1) | mhselect << 48
}

/// Whether a stored `tdata1` is one that a write could have produced (restore checks this).
pub(crate) fn valid_tdata1(tdata1: u64) -> bool {
    matches!(kind(tdata1), 2 | 6) && legal_tdata1(tdata1) == Some(tdata1)
}

/// Whether trigger `tdata1`, with textra `tdata3`, is armed for accesses `what` (a mask of
/// LOAD/STORE/EXECUTE) at privilege `privilege` with `mcontext`.
pub(crate) fn fires(tdata1: u64, tdata3: u64, what: u64, privilege: u8, mcontext: u64) -> bool {
    let mode_ok = tdata1 >> 3 & (1 << privilege) != 0;
    let textra_ok = tdata3 >> 48 & 7 != 4 || tdata3 >> 51 == mcontext;
    tdata1 & what != 0 && mode_ok && textra_ok
}

/// Whether trigger `tdata1` can fire for some access in `what` in some mode.
pub(crate) fn armed_for(tdata1: u64, what: u64) -> bool {
    tdata1 & what != 0 && tdata1 & MODES != 0
}

/// The address reported in `mtval` when a load/store trigger watching from `tdata2` fires on
/// `size` bytes at `addr`, or `None` if the access and the watched window do not overlap.
pub(crate) fn data_hit(tdata1: u64, tdata2: u64, addr: u64, size: u64) -> Option<u64> {
    let (lo, hi) = (tdata2 as u128, tdata2 as u128 + window(tdata1) as u128);
    let (a, b) = (addr as u128, addr as u128 + size as u128);
    (a < hi && lo < b).then_some(addr.max(tdata2))
}

/// Whether the window of a load/store trigger overlaps the 4 KiB page at `page`.
pub(crate) fn window_touches_page(tdata1: u64, tdata2: u64, page: u64) -> bool {
    data_hit(tdata1, tdata2, page, 4096).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tdata1_writes_keep_what_qemu_keeps() {
        // Every low bit set: modes, load/store/execute stay; size 15 is unsupported.
        assert_eq!(
            legal_tdata1(0x2fff_ffff_ffff_ffff),
            Some(0x2000_0000_0000_005f)
        );
        assert_eq!(
            legal_tdata1(0x6fff_ffff_ffff_ffff),
            Some(0x6000_0000_0180_005f)
        );
        // dmode and action are dropped.
        assert_eq!(
            legal_tdata1(0x2800_0000_0000_1041),
            Some(0x2000_0000_0000_0041)
        );
        // Type-2 size 4 (6 bytes) becomes "any"; sizes 1, 2, 3 and type-6 size 5 stay.
        assert_eq!(legal_tdata1(2 << 60 | 4 << 16 | 0x41), Some(2 << 60 | 0x41));
        assert_eq!(
            legal_tdata1(2 << 60 | 3 << 16 | 0x41),
            Some(2 << 60 | 3 << 16 | 0x41)
        );
        assert_eq!(
            legal_tdata1(6 << 60 | 5 << 16 | 0x41),
            Some(6 << 60 | 5 << 16 | 0x41)
        );
        assert_eq!(legal_tdata1(6 << 60 | 6 << 16 | 0x41), Some(6 << 60 | 0x41));
        // Unsupported types are ignored; type 0 disables.
        assert_eq!(legal_tdata1(4 << 60 | 0x41), None);
        assert_eq!(legal_tdata1(15 << 60), None);
        assert_eq!(legal_tdata1(0), Some(TDATA1_RESET));
        assert!(valid_tdata1(TDATA1_RESET) && !valid_tdata1(0) && !valid_tdata1(2 << 60 | 1 << 12));
    }

    #[test]
    fn tdata3_keeps_mhvalue_and_maps_mhselect() {
        assert_eq!(legal_tdata3(!0), 0xfffc_0000_0000_0000);
        assert_eq!(legal_tdata3(5 << 51 | 1 << 48), 5 << 51);
        assert_eq!(legal_tdata3(5 << 51 | 4 << 48), 5 << 51 | 4 << 48);
    }

    #[test]
    fn matching_follows_modes_context_and_window() {
        let t = 2 << 60 | MODE_S | LOAD;
        assert!(fires(t, 0, LOAD, 1, 0));
        assert!(!fires(t, 0, LOAD, 3, 0) && !fires(t, 0, LOAD, 0, 0) && !fires(t, 0, STORE, 1, 0));
        assert!(fires(t, 5 << 51 | 4 << 48, LOAD, 1, 5));
        assert!(!fires(t, 5 << 51 | 4 << 48, LOAD, 1, 6));
        assert_eq!(data_hit(t, 0x1000, 0x1007, 1), Some(0x1007));
        assert_eq!(data_hit(t, 0x1000, 0x1008, 1), None);
        assert_eq!(data_hit(t, 0x1000, 0xffc, 8), Some(0x1000));
        assert_eq!(data_hit(t, 0x1000, 0xff8, 8), None);
        assert_eq!(data_hit(t | 3 << 16, 0x1000, 0x1003, 1), Some(0x1003));
        assert_eq!(data_hit(t | 1 << 16, 0x1000, 0x1001, 1), None);
        assert_eq!(data_hit(t, u64::MAX - 3, u64::MAX, 1), Some(u64::MAX));
    }
}
