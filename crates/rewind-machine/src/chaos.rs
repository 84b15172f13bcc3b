//! Chaos mode (`--chaos`): a schedule perturbed from a seed to expose races, as rr's chaos mode
//! does. It draws which hart runs next, how long its turn lasts (many short turns, some very
//! long ones), and how long a hart taking its turn does not yet see IPIs and external
//! interrupts (a delivery delay of at most that turn).
//!
//! Every draw is a hash of the seed and the machine's position at the turn's start, so the
//! schedule stays a pure function of the state: a snapshot needs nothing beyond the machine's
//! state, and a recording only the seed.

/// The schedule's draws for one seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chaos {
    seed: u64,
}

/// What a draw decides: each has its own stream.
#[derive(Clone, Copy)]
enum Draw {
    Hart = 1,
    Length = 2,
    Hold = 3,
}

/// splitmix64's finaliser: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Chaos {
    pub fn new(seed: u64) -> Chaos {
        Chaos { seed }
    }

    fn draw(&self, position: u64, what: Draw) -> u64 {
        mix(self.seed ^ mix(position ^ ((what as u64) << 56)))
    }

    /// Which of `ready` harts (at least one) takes the turn that starts at `position`.
    pub fn pick(&self, position: u64, ready: usize) -> usize {
        (self.draw(position, Draw::Hart) % ready as u64) as usize
    }

    /// How many instructions the turn that starts at `position` lasts, for a schedule whose
    /// fixed turn is `quantum`: five times in eight a short one (up to an eighth of the
    /// quantum, so turns end anywhere in short code), a quarter of the time about a quantum,
    /// and one time in eight a very long one (2 to 31 quanta, so a hart runs far ahead).
    pub fn turn_length(&self, position: u64, quantum: u64) -> u64 {
        let r = self.draw(position, Draw::Length);
        let (kind, r) = (r % 8, r >> 8);
        match kind {
            0..=4 => 1 + r % (quantum / 8).max(1),
            5 | 6 => (quantum / 2).max(1) + r % quantum,
            _ => quantum.saturating_mul(2 + r % 30),
        }
    }

    /// For how many of the first `turn` instructions of the turn that starts at `position`
    /// its hart does not see IPIs and external interrupts: half of the turns none.
    pub fn hold(&self, position: u64, turn: u64) -> u64 {
        let r = self.draw(position, Draw::Hold);
        if r & 1 == 0 {
            0
        } else {
            (r >> 1) % turn.max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Chaos;

    #[test]
    fn draws_follow_the_seed_and_the_position_only() {
        let (a, b) = (Chaos::new(1), Chaos::new(2));
        let lengths = |c: Chaos| {
            (0..64)
                .map(|p| c.turn_length(p * 977, 10_000))
                .collect::<Vec<_>>()
        };
        assert_eq!(lengths(a), lengths(Chaos::new(1)));
        assert_ne!(lengths(a), lengths(b));
        assert!((0..1000).all(|p| a.pick(p, 3) < 3));
        assert!((0..1000).all(|p| a.hold(p, 50) < 50));
    }

    #[test]
    fn turns_are_mostly_short_and_sometimes_very_long() {
        let chaos = Chaos::new(42);
        let lengths: Vec<u64> = (0..4000).map(|p| chaos.turn_length(p, 10_000)).collect();
        let short = lengths.iter().filter(|&&l| l <= 1250).count();
        let long = lengths.iter().filter(|&&l| l >= 20_000).count();
        assert!(lengths.iter().all(|&l| l >= 1));
        assert!((2200..2800).contains(&short), "{short} short turns of 4000");
        assert!((300..700).contains(&long), "{long} long turns of 4000");
        // A quantum of 1 still gives turns of at least one instruction.
        assert!((0..100).all(|p| chaos.turn_length(p, 1) >= 1));
    }
}
