//! The SiFive test finisher (`sifive,test0`) at 0x10_0000: a guest write ends the machine.

const FINISHER_FAIL: u32 = 0x3333;
const FINISHER_PASS: u32 = 0x5555;
const FINISHER_RESET: u32 = 0x7777;

/// What a guest asked the finisher to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Finish {
    /// Power off with this exit status (0 for pass).
    Exit(u16),
    /// Reboot the machine.
    Reset,
}

#[derive(Default, Debug)]
pub struct Finisher {
    pending: Option<Finish>,
}

impl Finisher {
    /// What the guest asked for and the machine has not acted on yet.
    pub fn pending(&self) -> Option<Finish> {
        self.pending
    }

    pub fn set_pending(&mut self, pending: Option<Finish>) {
        self.pending = pending;
    }

    pub fn read(&mut self, _offset: u64, _size: u8) -> u64 {
        0
    }

    pub fn write(&mut self, offset: u64, value: u64) {
        if offset != 0 {
            return;
        }
        let value = value as u32;
        let status = (value >> 16) as u16;
        self.pending = match value & 0xffff {
            FINISHER_PASS => Some(Finish::Exit(0)),
            FINISHER_FAIL => Some(Finish::Exit(status)),
            FINISHER_RESET => Some(Finish::Reset),
            _ => self.pending,
        };
    }

    /// The request made since the last call, if any.
    pub fn take(&mut self) -> Option<Finish> {
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_fail_and_reset() {
        let mut f = Finisher::default();
        f.write(0, 0x5555);
        assert_eq!(f.take(), Some(Finish::Exit(0)));
        assert_eq!(f.take(), None);
        f.write(0, 7 << 16 | 0x3333);
        assert_eq!(f.take(), Some(Finish::Exit(7)));
        f.write(0, 0x7777);
        assert_eq!(f.take(), Some(Finish::Reset));
        f.write(0, 0x1234);
        f.write(4, 0x5555);
        assert_eq!(f.take(), None);
    }
}
