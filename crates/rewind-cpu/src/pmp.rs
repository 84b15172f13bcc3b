//! Physical memory protection. The entries are decoded into disjoint ranges once per change
//! of a PMP CSR, so the check on every TLB refill and page-table read is a short scan; an
//! access that straddles two ranges takes the spec's entry-by-entry check.

use crate::csr::{CsrState, PMP_ENTRIES};
use crate::hart::PRIV_M;
use crate::trap::Access;
use std::cell::Cell;

/// How PMP judges a physical range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PmpVerdict {
    Allowed,
    Denied,
}

/// The bytes `[lo, hi)` entry `i` matches, or `None` when it is off or matches nothing.
fn entry_range(csr: &CsrState, i: usize) -> Option<(u64, u64)> {
    let cfg = csr.pmpcfg[i];
    let (lo, hi) = match (cfg >> 3) & 3 {
        0 => return None,
        1 => {
            let lo = if i == 0 { 0 } else { csr.pmpaddr[i - 1] << 2 };
            (lo, csr.pmpaddr[i] << 2)
        }
        2 => (csr.pmpaddr[i] << 2, (csr.pmpaddr[i] << 2) + 4),
        _ => {
            let a = csr.pmpaddr[i];
            let ones = a.trailing_ones();
            if ones >= 54 {
                (0, u64::MAX)
            } else {
                let size = 1u64 << (ones + 3);
                let base = (a & !((1u64 << ones) - 1)) << 2;
                (base, base.saturating_add(size))
            }
        }
    };
    (lo < hi).then_some((lo, hi))
}

/// The verdict of the entry with configuration `cfg` that matches a whole access, or of no
/// entry (`None`): M-mode may, S and U may not (16 entries are implemented).
fn verdict(cfg: Option<u8>, access: Access, privilege: u8) -> PmpVerdict {
    let allowed = match cfg {
        None => privilege == PRIV_M,
        Some(cfg) if privilege == PRIV_M && cfg & 0x80 == 0 => true,
        Some(cfg) => {
            let bit = match access {
                Access::Load => 1,
                Access::Store => 2,
                Access::Exec => 4,
            };
            cfg & bit != 0
        }
    };
    if allowed {
        PmpVerdict::Allowed
    } else {
        PmpVerdict::Denied
    }
}

/// The spec's check of `len` bytes at `addr`: the lowest-numbered entry that matches any of
/// them decides, and fails the access if it does not match all of them.
fn check_entries(csr: &CsrState, addr: u64, len: u64, access: Access, privilege: u8) -> PmpVerdict {
    let end = addr.saturating_add(len);
    for i in 0..PMP_ENTRIES {
        let Some((lo, hi)) = entry_range(csr, i) else {
            continue;
        };
        if end <= lo || addr >= hi {
            continue;
        }
        if addr < lo || end > hi {
            return PmpVerdict::Denied; // partial match
        }
        return verdict(Some(csr.pmpcfg[i]), access, privilege);
    }
    verdict(None, access, privilege)
}

/// One piece of the address space and the configuration of the entry that decides every
/// access inside it (`None`: no entry matches there).
#[derive(Clone, Copy, Debug)]
struct Piece {
    hi: u64,
    cfg: Option<u8>,
}

/// The PMP entries as disjoint pieces covering the address space in order.
#[derive(Clone, Debug)]
pub(crate) struct PmpMap {
    /// Sorted by `hi`; each piece starts where the previous one ends (the first at 0) and
    /// the last ends at `u64::MAX`.
    pieces: Vec<Piece>,
    /// No entry is on, so M-mode may access anything.
    none_on: bool,
    /// The piece the last check found: page walks and TLB refills check address after
    /// address in the same piece (RAM), so it is tried first.
    last: Cell<usize>,
}

impl PmpMap {
    pub(crate) fn new(csr: &CsrState) -> PmpMap {
        let ranges: Vec<(usize, u64, u64)> = (0..PMP_ENTRIES)
            .filter_map(|i| entry_range(csr, i).map(|(lo, hi)| (i, lo, hi)))
            .collect();
        let mut bounds: Vec<u64> = ranges.iter().flat_map(|&(_, lo, hi)| [lo, hi]).collect();
        bounds.extend([0, u64::MAX]);
        bounds.sort_unstable();
        bounds.dedup();
        // No entry straddles a bound, so an entry that overlaps a piece holds all of it.
        let mut pieces: Vec<(Option<usize>, Piece)> = Vec::new();
        for w in bounds.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            let decider = ranges.iter().find(|&&(_, a, b)| a <= lo && hi <= b);
            let entry = decider.map(|&(i, _, _)| i);
            match pieces.last_mut() {
                // Only pieces of the same entry merge: an access across two entries that
                // happen to agree is still a partial match.
                Some((last, piece)) if *last == entry => piece.hi = hi,
                _ => pieces.push((
                    entry,
                    Piece {
                        hi,
                        cfg: entry.map(|i| csr.pmpcfg[i]),
                    },
                )),
            }
        }
        PmpMap {
            pieces: pieces.into_iter().map(|(_, p)| p).collect(),
            none_on: ranges.is_empty(),
            last: Cell::new(0),
        }
    }

    /// The verdict on `len` bytes at `addr` for `access` at `privilege`, as the spec's
    /// entry-by-entry check of `csr` (which this map was built from) gives it.
    #[inline]
    pub(crate) fn check(
        &self,
        csr: &CsrState,
        addr: u64,
        len: u64,
        access: Access,
        privilege: u8,
    ) -> PmpVerdict {
        if self.none_on && privilege == PRIV_M {
            return PmpVerdict::Allowed;
        }
        let end = addr.saturating_add(len);
        let mut at = self.last.get();
        let lo = |k: usize| if k == 0 { 0 } else { self.pieces[k - 1].hi };
        let inside = |k: usize| {
            self.pieces
                .get(k)
                .is_some_and(|p| lo(k) <= addr && addr < p.hi)
        };
        if !inside(at) {
            at = self.pieces.partition_point(|p| p.hi <= addr);
            self.last.set(at);
        }
        if let Some(piece) = self.pieces.get(at) {
            if end <= piece.hi {
                return verdict(piece.cfg, access, privilege);
            }
        }
        check_entries(csr, addr, len, access, privilege)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the test needs no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn the_map_agrees_with_the_entry_by_entry_check() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let mut csr = CsrState::default();
            for i in 0..PMP_ENTRIES {
                if rng.next().is_multiple_of(3) {
                    csr.pmpcfg[i] = (rng.next() & 0x9f) as u8;
                    // Small addresses, so that entries overlap and touch.
                    csr.pmpaddr[i] = match rng.next() % 4 {
                        0 => rng.next() & 0xfff,
                        1 => (rng.next() & 0xff) << 4 | 0x7,
                        2 => u64::MAX >> 10,
                        _ => rng.next() & ((1 << 54) - 1),
                    };
                }
            }
            let map = PmpMap::new(&csr);
            for _ in 0..200 {
                let addr = match rng.next() % 3 {
                    0 => rng.next() & 0x7fff,
                    1 => rng.next() & ((1 << 56) - 1),
                    _ => u64::MAX - (rng.next() & 0xff),
                };
                let len = [1, 2, 4, 8, 4096][(rng.next() % 5) as usize];
                let access = [Access::Load, Access::Store, Access::Exec][(rng.next() % 3) as usize];
                let privilege = [0, 1, 3][(rng.next() % 3) as usize];
                assert_eq!(
                    map.check(&csr, addr, len, access, privilege),
                    check_entries(&csr, addr, len, access, privilege),
                    "{csr:?} {addr:#x}+{len} {access:?} at {privilege}"
                );
            }
        }
    }
}
