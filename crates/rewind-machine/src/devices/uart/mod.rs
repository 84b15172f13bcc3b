//! A 16550A UART (UART0 of `virt`, 0x1000_0000): transmit for now. Bytes the guest sends are
//! queued for the host console; the line status always reports an empty transmitter.

pub const BASE: u64 = 0x1000_0000;
pub const SIZE: u64 = 0x100;

const RBR_THR_DLL: u64 = 0;
const IER_DLM: u64 = 1;
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

const LCR_DLAB: u8 = 0x80;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
/// IIR: no interrupt pending, FIFOs enabled.
const IIR_NONE: u8 = 0x01;

/// Guest-visible registers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UartState {
    pub ier: u8,
    pub lcr: u8,
    pub mcr: u8,
    pub scr: u8,
    pub dll: u8,
    pub dlm: u8,
    pub fcr: u8,
}

#[derive(Default, Debug)]
pub struct Uart {
    pub state: UartState,
    /// Bytes transmitted and not yet taken by the host.
    output: Vec<u8>,
}

impl Uart {
    pub fn read(&mut self, offset: u64) -> u8 {
        let s = &self.state;
        let dlab = s.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => s.dll,
            RBR_THR_DLL => 0,
            IER_DLM if dlab => s.dlm,
            IER_DLM => s.ier,
            IIR_FCR => IIR_NONE | if s.fcr & 1 != 0 { 0xc0 } else { 0 },
            LCR => s.lcr,
            MCR => s.mcr,
            LSR => LSR_THRE | LSR_TEMT,
            MSR => 0,
            SCR => s.scr,
            _ => 0,
        }
    }

    pub fn write(&mut self, offset: u64, value: u8) {
        let s = &mut self.state;
        let dlab = s.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => s.dll = value,
            RBR_THR_DLL => self.output.push(value),
            IER_DLM if dlab => s.dlm = value,
            IER_DLM => s.ier = value & 0x0f,
            IIR_FCR => s.fcr = value,
            LCR => s.lcr = value,
            MCR => s.mcr = value & 0x1f,
            SCR => s.scr = value,
            _ => {}
        }
    }

    /// Takes the bytes transmitted since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmits_and_keeps_divisor_apart() {
        let mut u = Uart::default();
        u.write(RBR_THR_DLL, b'h');
        u.write(LCR, LCR_DLAB);
        u.write(RBR_THR_DLL, 0x12);
        u.write(IER_DLM, 0x34);
        assert_eq!((u.read(RBR_THR_DLL), u.read(IER_DLM)), (0x12, 0x34));
        u.write(LCR, 0x03);
        u.write(RBR_THR_DLL, b'i');
        assert_eq!(u.take_output(), b"hi");
        assert_eq!(u.read(LSR) & LSR_THRE, LSR_THRE);
        assert_eq!(u.read(IER_DLM), 0);
    }
}
