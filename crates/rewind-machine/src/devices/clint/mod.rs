//! The CLINT at 0x200_0000: `msip` and `mtimecmp` per hart, and `mtime`, which is derived from
//! the instruction count (see `rewind_cpu::Clock`) and so needs no state of its own.

use rewind_cpu::Clock;

const MSIP: u64 = 0x0;
const MTIMECMP: u64 = 0x4000;
const MTIME: u64 = 0xbff8;

/// One hart's registers in the CLINT.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClintHart {
    pub msip: bool,
    /// At reset 0, as on QEMU: the timer interrupt is pending until software programs a
    /// deadline.
    pub mtimecmp: u64,
}

/// Guest-visible state: each hart's registers, by hart id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClintState {
    pub harts: Vec<ClintHart>,
}

impl Default for ClintState {
    fn default() -> Self {
        ClintState::new(1)
    }
}

impl ClintState {
    pub fn new(harts: usize) -> ClintState {
        ClintState {
            harts: vec![ClintHart::default(); harts],
        }
    }
}

#[derive(Default, Debug)]
pub struct Clint {
    pub state: ClintState,
}

/// Reads `size` bytes at `offset` inside a 64-bit register holding `reg`.
fn read_part(reg: u64, offset: u64, size: u8) -> u64 {
    let shift = (offset & 7) * 8;
    let v = reg >> shift;
    if size >= 8 {
        v
    } else {
        v & ((1u64 << (size * 8)) - 1)
    }
}

/// Merges a write of `size` bytes at `offset` into a 64-bit register.
fn write_part(reg: u64, offset: u64, size: u8, value: u64) -> u64 {
    let shift = (offset & 7) * 8;
    let mask = if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    } << shift;
    (reg & !mask) | ((value << shift) & mask)
}

impl Clint {
    pub fn read(&self, offset: u64, size: u8, mtime: u64) -> Option<u64> {
        let harts = &self.state.harts;
        let value = match offset {
            MSIP..MTIMECMP => harts
                .get((offset / 4) as usize)
                .map_or(0, |h| read_part(h.msip as u64, offset & 3, size)),
            MTIMECMP..MTIME => harts
                .get(((offset - MTIMECMP) / 8) as usize)
                .map_or(0, |h| read_part(h.mtimecmp, offset, size)),
            MTIME.. => read_part(mtime, offset, size),
        };
        Some(value)
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        let harts = &mut self.state.harts;
        match offset {
            MSIP..MTIMECMP => {
                if let Some(h) = harts.get_mut((offset / 4) as usize) {
                    h.msip = write_part(0, offset & 3, size, value) & 1 != 0;
                }
            }
            MTIMECMP..MTIME => {
                if let Some(h) = harts.get_mut(((offset - MTIMECMP) / 8) as usize) {
                    h.mtimecmp = write_part(h.mtimecmp, offset, size, value);
                }
            }
            // mtime follows the instruction count; writes are ignored.
            MTIME.. => {}
        }
    }

    /// Whether hart `hart`'s machine software interrupt is raised.
    pub fn software_pending(&self, hart: usize) -> bool {
        self.state.harts.get(hart).is_some_and(|h| h.msip)
    }

    /// Whether hart `hart`'s machine timer interrupt is pending at `mtime`.
    pub fn timer_pending(&self, hart: usize, mtime: u64) -> bool {
        self.state
            .harts
            .get(hart)
            .is_some_and(|h| mtime >= h.mtimecmp)
    }

    /// The instruction count at which hart `hart`'s timer next fires, if it has not yet.
    pub fn next_deadline(&self, hart: usize, now_icount: u64, clock: &Clock) -> Option<u64> {
        let at = clock.icount_for_mtime(self.state.harts.get(hart)?.mtimecmp);
        (at > now_icount).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimecmp_halves_and_deadline() {
        let mut c = Clint::default();
        assert_eq!(
            c.next_deadline(0, 0, &Clock::fixed(0)),
            None,
            "already due at reset"
        );
        assert!(c.timer_pending(0, 0));
        c.write(MTIMECMP, 4, 0x10);
        c.write(MTIMECMP + 4, 4, 0);
        assert_eq!(c.read(MTIMECMP, 8, 0), Some(0x10));
        // 10 MHz ticks of 100 ns; one instruction is 1 ns at shift 0.
        assert_eq!(c.next_deadline(0, 0, &Clock::fixed(0)), Some(1600));
        assert_eq!(c.next_deadline(0, 1600, &Clock::fixed(0)), None);
        assert!(!c.timer_pending(0, 0xf));
        assert!(c.timer_pending(0, 0x10));
        // At shift 2 an instruction is 4 ns.
        assert_eq!(c.next_deadline(0, 0, &Clock::fixed(2)), Some(400));
    }

    #[test]
    fn each_hart_has_its_own_msip_and_mtimecmp() {
        let mut c = Clint {
            state: ClintState::new(2),
        };
        c.write(MSIP + 4, 4, 1);
        c.write(MTIMECMP + 8, 8, 0x20);
        assert!(!c.software_pending(0) && c.software_pending(1));
        assert_eq!(c.read(MSIP + 4, 4, 0), Some(1));
        assert_eq!(c.read(MTIMECMP + 8, 8, 0), Some(0x20));
        assert_eq!(c.read(MTIMECMP, 8, 0), Some(0), "hart 0's is apart");
        assert!(!c.timer_pending(1, 0x1f) && c.timer_pending(1, 0x20));
        // A third hart's registers do not exist: they read 0 and ignore writes.
        c.write(MSIP + 8, 4, 1);
        c.write(MTIMECMP + 16, 8, 5);
        assert_eq!(c.read(MSIP + 8, 4, 0), Some(0));
        assert_eq!(c.read(MTIMECMP + 16, 8, 0), Some(0));
        assert!(!c.software_pending(2) && !c.timer_pending(2, u64::MAX));
    }

    #[test]
    fn msip_and_mtime() {
        let mut c = Clint::default();
        c.write(MSIP, 4, 0xffff_ffff);
        assert!(c.software_pending(0));
        assert_eq!(c.read(MSIP, 4, 0), Some(1));
        assert_eq!(c.read(MTIME, 8, 1234), Some(1234));
        assert_eq!(c.read(MTIME + 4, 4, 0x1_0000_0002), Some(1));
    }
}
