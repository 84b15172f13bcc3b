//! The machine's one clock: virtual time as a function of the instruction count.
//!
//! Virtual time is piecewise linear in the instruction count. Each piece (a *segment*) starts
//! at `base_icount`, where virtual time is `base_ns`, and advances `2^shift` nanoseconds per
//! instruction:
//!
//! ```text
//! ns(icount) = base_ns + ((icount - base_icount) << shift)     for icount >= base_icount
//! ```
//!
//! A change of shift ([`Clock::set_shift`]) starts a new segment where the old one is at that
//! instant, so virtual time is continuous and never goes backwards. With a fixed shift there is
//! only the segment that starts at 0, and `ns(icount) = icount << shift`. The clock keeps only
//! its current segment: an earlier instant is extrapolated backwards (saturating at 0), which is
//! exact for a clock that never changed its shift.
//!
//! One overflow rule: computed exactly, then saturated to `u64::MAX` nanoseconds; the inverse
//! says `u64::MAX` (never) for a time no instruction count reaches.
//!
//! `mtime` runs at 10 MHz of this virtual time, as on QEMU's `virt`.

use serde::{Deserialize, Serialize};

/// Virtual nanoseconds per `mtime` tick: `mtime` runs at 10 MHz, as on QEMU's `virt`.
pub const NS_PER_MTIME_TICK: u64 = 100;

/// The largest shift (`2^10` ns, about a microsecond, per instruction), as QEMU's
/// `MAX_ICOUNT_SHIFT`.
pub const MAX_SHIFT: u32 = 10;

/// The guest clock: its current segment. Guest-visible machine state (snapshots keep it, state
/// digests include it once it differs from a fixed shift).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Clock {
    /// The instruction count at which the current segment starts.
    pub base_icount: u64,
    /// Virtual nanoseconds at `base_icount`.
    pub base_ns: u64,
    /// Virtual nanoseconds per instruction are `2^shift` in this segment.
    pub shift: u32,
}

impl Clock {
    /// The clock of a fixed shift: `ns(icount) = icount << shift`.
    pub const fn fixed(shift: u32) -> Clock {
        Clock {
            base_icount: 0,
            base_ns: 0,
            shift,
        }
    }

    /// Virtual nanoseconds at instruction count `icount`.
    pub fn ns_at(&self, icount: u64) -> u64 {
        let ns = if icount >= self.base_icount {
            (self.base_ns as u128).saturating_add(self.scaled(icount - self.base_icount))
        } else {
            (self.base_ns as u128).saturating_sub(self.scaled(self.base_icount - icount))
        };
        ns.min(u64::MAX as u128) as u64
    }

    /// `n` instructions in nanoseconds, exactly (beyond any `u64` for a shift of 64 or more,
    /// which only a crafted recording can ask for).
    fn scaled(&self, n: u64) -> u128 {
        match self.shift {
            0..64 => (n as u128) << self.shift,
            _ if n == 0 => 0,
            _ => u128::MAX,
        }
    }

    /// The first instruction count, from the start of the current segment on, at which virtual
    /// time reaches `ns` (`base_icount` for a time already past; `u64::MAX` for one never
    /// reached).
    pub fn icount_at_ns(&self, ns: u64) -> u64 {
        let Some(ahead) = ns.checked_sub(self.base_ns).filter(|&a| a > 0) else {
            return self.base_icount;
        };
        let steps = (ahead as u128).div_ceil(1u128 << self.shift.min(64));
        (self.base_icount as u128 + steps).min(u64::MAX as u128) as u64
    }

    /// `mtime` at instruction count `icount`.
    pub fn mtime_at(&self, icount: u64) -> u64 {
        self.ns_at(icount) / NS_PER_MTIME_TICK
    }

    /// The first instruction count, from the start of the current segment on, at which
    /// `mtime >= deadline` (`u64::MAX` if never).
    pub fn icount_for_mtime(&self, deadline: u64) -> u64 {
        match deadline.checked_mul(NS_PER_MTIME_TICK) {
            Some(ns) => self.icount_at_ns(ns),
            // Beyond the largest time the clock shows.
            None => u64::MAX,
        }
    }

    /// Changes the shift from instruction count `icount` on, keeping virtual time continuous:
    /// the new segment starts where the current one is at `icount`. Setting the shift it
    /// already has changes nothing.
    pub fn set_shift(&mut self, icount: u64, shift: u32) {
        if shift == self.shift {
            return;
        }
        *self = Clock {
            base_icount: icount,
            base_ns: self.ns_at(icount),
            shift,
        };
    }

    /// Whether this clock is that of a fixed `shift`, as configured: then it need not be
    /// hashed or stored, since the configuration says it all.
    pub fn is_fixed(&self, shift: u32) -> bool {
        *self == Clock::fixed(shift)
    }

    /// Why this clock cannot be the clock at instruction count `icount`, if it cannot.
    pub fn check(&self, icount: u64) -> Result<(), &'static str> {
        if self.shift > 63 {
            return Err("the clock shift is out of range");
        }
        if self.base_icount > icount {
            return Err("the clock's segment starts after the present");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_is_icount_shifted() {
        for shift in 0..=MAX_SHIFT {
            let c = Clock::fixed(shift);
            for icount in [0, 1, 7, 1000, 123_456_789] {
                assert_eq!(c.ns_at(icount), icount << shift);
                assert_eq!(c.mtime_at(icount), (icount << shift) / 100);
            }
        }
    }

    #[test]
    fn changes_of_shift_keep_time_continuous_and_monotonic() {
        let mut c = Clock::fixed(3);
        let mut last = 0;
        let mut icount = 0;
        for (step, shift) in [(1000, 5), (77, 0), (5, 10), (12345, 2), (1, 2), (3, 7)] {
            for i in icount..=icount + step {
                let ns = c.ns_at(i);
                assert!(ns >= last, "time went backwards at {i}");
                last = ns;
            }
            icount += step;
            let before = c.ns_at(icount);
            c.set_shift(icount, shift);
            assert_eq!(c.ns_at(icount), before, "continuous at the change");
            assert_eq!(c.ns_at(icount + 1), before + (1 << shift));
        }
        // The same shift again is no change at all.
        let same = c;
        c.set_shift(icount + 50, c.shift);
        assert_eq!(c, same);
        assert!(!c.is_fixed(7));
        assert!(Clock::fixed(7).is_fixed(7));
    }

    #[test]
    fn the_inverse_is_the_first_icount_reaching_a_deadline() {
        let mut c = Clock::fixed(2);
        c.set_shift(1000, 5); // base_ns 4000, 32 ns per instruction
        assert_eq!(c.base_ns, 4000);
        for ns in [0, 3999, 4000, 4001, 4031, 4032, 4033, 10_000, 1 << 40] {
            let at = c.icount_at_ns(ns);
            assert!(at >= c.base_icount);
            if ns > c.base_ns {
                assert!(c.ns_at(at) >= ns, "{ns}: reached at {at}");
                assert!(c.ns_at(at - 1) < ns, "{ns}: not first at {at}");
            } else {
                assert_eq!(at, c.base_icount, "a past time is due at once");
            }
        }
        for deadline in [41, 100, 101, 12_345_678] {
            let at = c.icount_for_mtime(deadline);
            assert!(c.mtime_at(at) >= deadline);
            assert!(at == c.base_icount || c.mtime_at(at - 1) < deadline);
        }
    }

    #[test]
    fn saturation() {
        let c = Clock::fixed(10);
        assert_eq!(c.ns_at(u64::MAX), u64::MAX);
        assert_eq!(c.ns_at(1 << 54), u64::MAX, "2^64 ns saturates");
        assert_eq!(c.ns_at((1 << 54) - 1), u64::MAX - 1023);
        assert_eq!(c.mtime_at(u64::MAX), u64::MAX / NS_PER_MTIME_TICK);
        // A time no instruction count reaches, and one just reached.
        assert_eq!(c.icount_for_mtime(u64::MAX), u64::MAX);
        assert_eq!(c.icount_for_mtime(u64::MAX / NS_PER_MTIME_TICK), 1 << 54);
        assert_eq!(Clock::fixed(0).icount_at_ns(u64::MAX), u64::MAX);
        let late = Clock {
            base_icount: u64::MAX - 10,
            base_ns: 5,
            shift: 0,
        };
        assert_eq!(late.icount_at_ns(1000), u64::MAX, "past the end of counts");
        // Backwards extrapolation stops at zero.
        let mut c = Clock::fixed(0);
        c.set_shift(10, 4);
        assert_eq!(c.ns_at(9), 0);
        assert_eq!(c.ns_at(10), 10);
        // Shifts no option gives (a crafted recording's) saturate instead of overflowing.
        for shift in [63, 64, 127, 128, 200, u32::MAX] {
            let c = Clock::fixed(shift);
            assert_eq!(c.ns_at(0), 0);
            assert_eq!(c.ns_at(1), if shift == 63 { 1 << 63 } else { u64::MAX });
            assert_eq!(c.icount_at_ns(1), 1);
            assert_eq!(c.icount_at_ns(u64::MAX), if shift == 63 { 2 } else { 1 });
        }
    }

    #[test]
    fn checks() {
        assert!(Clock::fixed(3).check(0).is_ok());
        assert!(Clock::fixed(64).check(0).is_err());
        let mut c = Clock::fixed(0);
        c.set_shift(100, 1);
        assert!(c.check(99).is_err());
        assert!(c.check(100).is_ok());
    }
}
