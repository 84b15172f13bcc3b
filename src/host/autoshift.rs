//! `--icount-shift auto`: the host side of a clock that keeps up with the wall clock.
//!
//! As QEMU's `icount_adjust` does, every [`PERIOD`] of wall time the live loop compares the
//! guest's virtual time with the wall time the run has been running, and moves the shift one
//! step towards keeping them together: down when virtual time is ahead (and not falling
//! back), up when it is behind (and not catching up), within `0..=MAX_ICOUNT_SHIFT`, with
//! QEMU's hysteresis ([`WOBBLE`]). Each change is a host input, injected and recorded at the
//! instruction count where it happens, so a replay follows the same clock without ever
//! looking at the host's.
//!
//! Why every 100 ms: it is QEMU's period, which its hysteresis is tuned for; a change takes
//! effect at once and virtual time drifts at most a few tenths of a second from the wall
//! before the next look, so looking more often would not keep them closer (the hysteresis
//! waits for 100 ms of drift anyway) but would write more events (at most 10 a second now, a
//! few bytes each). The live loop looks between slices of at most 2^20 instructions, a few
//! milliseconds, so the period is kept to within that.

use std::time::{Duration, Instant};

use rewind_machine::MAX_ICOUNT_SHIFT;

/// Wall time between looks at the clocks.
pub const PERIOD: Duration = Duration::from_millis(100);
/// How far virtual time may stray before a change (QEMU's `ICOUNT_WOBBLE`), in nanoseconds.
pub const WOBBLE: i128 = 100_000_000;
/// The shift a run under `auto` starts with (QEMU's initial guess: 8 ns, 125 MIPS).
pub const INITIAL_SHIFT: u32 = 3;

/// Wall time counted while the guest runs, and the decisions taken on it.
pub struct AutoShift {
    /// Wall time the guest has been running (pauses of a debugger or QMP `stop` left out).
    running: Duration,
    /// When `running` was last brought up to date.
    last: Instant,
    /// `running` at the next look.
    next_look: Duration,
    /// Virtual minus wall time at the last look, in nanoseconds.
    last_delta: i128,
}

impl AutoShift {
    pub fn new(now: Instant) -> AutoShift {
        AutoShift {
            running: Duration::ZERO,
            last: now,
            next_look: PERIOD,
            last_delta: 0,
        }
    }

    /// The wall time since the last call does not count (the guest did not run: stopped by
    /// QMP, or paused by a debugger between two drives).
    pub fn pause(&mut self, now: Instant) {
        self.last = now;
    }

    /// Called from the live loop: counts the wall time since the last call and, once a
    /// [`PERIOD`] has passed, says the shift to change to, if any. `virtual_ns` is the guest's
    /// virtual time now (virtual time 0 is when the run started).
    pub fn tick(&mut self, now: Instant, virtual_ns: u64, shift: u32) -> Option<u32> {
        self.running += now.saturating_duration_since(self.last);
        self.last = now;
        if self.running < self.next_look {
            return None;
        }
        self.next_look = self.running + PERIOD;
        let delta = virtual_ns as i128 - self.running.as_nanos() as i128;
        let new = decide(delta, self.last_delta, shift);
        self.last_delta = delta;
        (new != shift).then_some(new)
    }
}

/// QEMU's rule: virtual time ahead by `delta` ns (behind if negative), `last_delta` at the
/// look before; returns the shift to use.
pub fn decide(delta: i128, last_delta: i128, shift: u32) -> u32 {
    if delta > 0 && last_delta + WOBBLE < delta * 2 && shift > 0 {
        // Ahead, and not falling back fast enough: slow the guest's clock.
        shift - 1
    } else if delta < 0 && last_delta - WOBBLE > delta * 2 && shift < MAX_ICOUNT_SHIFT {
        // Behind, and not catching up fast enough: speed it up.
        shift + 1
    } else {
        shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i128 = 1_000_000;

    #[test]
    fn the_shift_moves_one_step_towards_the_wall_clock_within_bounds() {
        assert_eq!(decide(500 * MS, 400 * MS, 3), 2, "ahead: slower");
        assert_eq!(decide(-500 * MS, -400 * MS, 3), 4, "behind: faster");
        assert_eq!(decide(500 * MS, 400 * MS, 0), 0, "no shift below 0");
        assert_eq!(decide(-500 * MS, -400 * MS, 10), 10, "no shift above 10");
        assert_eq!(decide(20 * MS, 0, 3), 3, "within the wobble: no change");
        assert_eq!(decide(-20 * MS, 0, 3), 3);
        // Far ahead but falling back fast: leave it.
        assert_eq!(decide(200 * MS, 600 * MS, 3), 3);
    }

    #[test]
    fn a_guest_whose_clock_runs_at_twice_the_wall_slows_down_and_pauses_do_not_count() {
        let start = Instant::now();
        let mut auto = AutoShift::new(start);
        let mut shift = INITIAL_SHIFT;
        let mut changes = Vec::new();
        // Virtual time runs at 2^(shift - 2) times the wall (a 250-MIPS guest).
        let mut virtual_ns = 0u64;
        for ms in 1..=3000u64 {
            virtual_ns += (1_000_000u64 << shift) >> 2;
            if let Some(new) = auto.tick(start + Duration::from_millis(ms), virtual_ns, shift) {
                changes.push((ms, new));
                shift = new;
            }
        }
        assert_eq!(changes.first().map(|c| c.1), Some(2), "{changes:?}");
        assert!(
            changes.iter().all(|&(_, s)| (1..=3).contains(&s)),
            "{changes:?}"
        );
        // A long pause (a debugger) does not count as the guest falling behind.
        let later = start + Duration::from_secs(3600);
        auto.pause(later);
        assert_eq!(
            auto.tick(later + Duration::from_millis(1), virtual_ns, shift),
            None
        );
        assert!(auto.running < Duration::from_secs(4));
    }
}
