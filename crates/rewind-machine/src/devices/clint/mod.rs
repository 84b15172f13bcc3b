//! The CLINT at 0x200_0000: `msip` and `mtimecmp` per hart, and `mtime`, which is derived from
//! the instruction count (see `rewind_cpu::Clock`) and so needs no state of its own.

use rewind_cpu::Clock;

const MSIP: u64 = 0x0;
const MTIMECMP: u64 = 0x4000;
const MTIME: u64 = 0xbff8;

/// Guest-visible state of a one-hart CLINT.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClintState {
    pub msip: bool,
    pub mtimecmp: u64,
}

/// At reset `mtimecmp` is 0, as on QEMU: the timer interrupt is pending until software
/// programs a deadline.
impl Default for ClintState {
    fn default() -> Self {
        ClintState {
            msip: false,
            mtimecmp: 0,
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
        match offset {
            MSIP..=0x3 => Some(read_part(self.state.msip as u64, offset, size)),
            MTIMECMP..=0x4007 => Some(read_part(self.state.mtimecmp, offset, size)),
            MTIME..=0xbfff => Some(read_part(mtime, offset, size)),
            _ => Some(0),
        }
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        match offset {
            MSIP..=0x3 => self.state.msip = write_part(0, offset, size, value) & 1 != 0,
            MTIMECMP..=0x4007 => {
                self.state.mtimecmp = write_part(self.state.mtimecmp, offset, size, value)
            }
            // mtime follows the instruction count; writes are ignored.
            _ => {}
        }
    }

    /// Whether the machine timer interrupt is pending at `mtime`.
    pub fn timer_pending(&self, mtime: u64) -> bool {
        mtime >= self.state.mtimecmp
    }

    /// The instruction count at which the timer next fires, if it has not yet.
    pub fn next_deadline(&self, now_icount: u64, clock: &Clock) -> Option<u64> {
        let at = clock.icount_for_mtime(self.state.mtimecmp);
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
            c.next_deadline(0, &Clock::fixed(0)),
            None,
            "already due at reset"
        );
        assert!(c.timer_pending(0));
        c.write(MTIMECMP, 4, 0x10);
        c.write(MTIMECMP + 4, 4, 0);
        assert_eq!(c.read(MTIMECMP, 8, 0), Some(0x10));
        // 10 MHz ticks of 100 ns; one instruction is 1 ns at shift 0.
        assert_eq!(c.next_deadline(0, &Clock::fixed(0)), Some(1600));
        assert_eq!(c.next_deadline(1600, &Clock::fixed(0)), None);
        assert!(!c.timer_pending(0xf));
        assert!(c.timer_pending(0x10));
        // At shift 2 an instruction is 4 ns.
        assert_eq!(c.next_deadline(0, &Clock::fixed(2)), Some(400));
    }

    #[test]
    fn msip_and_mtime() {
        let mut c = Clint::default();
        c.write(MSIP, 4, 0xffff_ffff);
        assert!(c.state.msip);
        assert_eq!(c.read(MSIP, 4, 0), Some(1));
        assert_eq!(c.read(MTIME, 8, 1234), Some(1234));
        assert_eq!(c.read(MTIME + 4, 4, 0x1_0000_0002), Some(1));
    }
}
