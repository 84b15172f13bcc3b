//! A 16550A UART (UART0 of `virt`, 0x1000_0000, PLIC source 10). Transmission is instant:
//! bytes go to a queue the host drains. Received bytes enter a 16-byte FIFO; the interrupt
//! line follows the 16550's priority rules (receive data, then transmitter empty).

use std::collections::VecDeque;

pub const IRQ: usize = 10;
pub const FIFO_SIZE: usize = 16;

const RBR_THR_DLL: u64 = 0;
const IER_DLM: u64 = 1;
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

const IER_RDI: u8 = 0x01;
const IER_THRI: u8 = 0x02;
const LCR_DLAB: u8 = 0x80;
const LSR_DR: u8 = 0x01;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const IIR_NO_INT: u8 = 0x01;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_FIFO_ENABLED: u8 = 0xc0;
const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;

/// Guest-visible state.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UartState {
    pub ier: u8,
    pub lcr: u8,
    pub mcr: u8,
    pub scr: u8,
    pub dll: u8,
    pub dlm: u8,
    pub fcr: u8,
    pub rx_fifo: VecDeque<u8>,
    /// A transmitter-empty interrupt is owed (until IIR reports it or THR is written).
    pub thr_interrupt: bool,
}

#[derive(Default, Debug)]
pub struct Uart {
    pub state: UartState,
    /// Bytes transmitted and not yet taken by the host.
    output: Vec<u8>,
}

impl Uart {
    fn interrupt_id(&self) -> u8 {
        let s = &self.state;
        if s.ier & IER_RDI != 0 && !s.rx_fifo.is_empty() {
            IIR_RDI
        } else if s.ier & IER_THRI != 0 && s.thr_interrupt {
            IIR_THRI
        } else {
            IIR_NO_INT
        }
    }

    /// Level of the interrupt line into the PLIC.
    pub fn irq_level(&self) -> bool {
        self.interrupt_id() != IIR_NO_INT
    }

    /// Room in the receive FIFO.
    pub fn rx_space(&self) -> usize {
        FIFO_SIZE.saturating_sub(self.state.rx_fifo.len())
    }

    /// Delivers one received byte; returns false (and drops nothing) when the FIFO is full.
    pub fn receive(&mut self, byte: u8) -> bool {
        if self.rx_space() == 0 {
            return false;
        }
        self.state.rx_fifo.push_back(byte);
        true
    }

    pub fn read(&mut self, offset: u64) -> u8 {
        let dlab = self.state.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => self.state.dll,
            RBR_THR_DLL => self.state.rx_fifo.pop_front().unwrap_or(0),
            IER_DLM if dlab => self.state.dlm,
            IER_DLM => self.state.ier,
            IIR_FCR => {
                let id = self.interrupt_id();
                if id == IIR_THRI {
                    self.state.thr_interrupt = false;
                }
                let fifo = if self.state.fcr & FCR_ENABLE != 0 {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                id | fifo
            }
            LCR => self.state.lcr,
            MCR => self.state.mcr,
            LSR => {
                let dr = if self.state.rx_fifo.is_empty() {
                    0
                } else {
                    LSR_DR
                };
                LSR_THRE | LSR_TEMT | dr
            }
            MSR => 0,
            SCR => self.state.scr,
            _ => 0,
        }
    }

    pub fn write(&mut self, offset: u64, value: u8) {
        let s = &mut self.state;
        let dlab = s.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => s.dll = value,
            RBR_THR_DLL => {
                self.output.push(value);
                // Transmission completes at once, so the holding register is empty again.
                s.thr_interrupt = true;
            }
            IER_DLM if dlab => s.dlm = value,
            IER_DLM => {
                let enabling_thri = value & IER_THRI != 0 && s.ier & IER_THRI == 0;
                s.ier = value & 0x0f;
                if enabling_thri {
                    s.thr_interrupt = true;
                }
            }
            IIR_FCR => {
                if value & FCR_CLEAR_RX != 0 {
                    s.rx_fifo.clear();
                }
                s.fcr = value & 0xc9;
            }
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

    #[test]
    fn receive_fifo_and_interrupts() {
        let mut u = Uart::default();
        assert!(u.receive(b'a'));
        assert!(!u.irq_level(), "receive interrupt not enabled yet");
        u.write(IER_DLM, IER_RDI);
        assert!(u.irq_level());
        assert_eq!(u.read(IIR_FCR) & 0x0f, IIR_RDI);
        assert_eq!(u.read(LSR) & LSR_DR, LSR_DR);
        assert_eq!(u.read(RBR_THR_DLL), b'a');
        assert_eq!(u.read(LSR) & LSR_DR, 0);
        assert!(!u.irq_level());
        for i in 0..FIFO_SIZE {
            assert!(u.receive(i as u8));
        }
        assert!(!u.receive(0xff), "a full FIFO refuses bytes");
        u.write(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(u.rx_space(), FIFO_SIZE);
    }

    #[test]
    fn transmitter_empty_interrupt_clears_on_iir_read() {
        let mut u = Uart::default();
        u.write(IER_DLM, IER_THRI);
        assert!(u.irq_level());
        assert_eq!(u.read(IIR_FCR) & 0x0f, IIR_THRI);
        assert!(!u.irq_level());
        u.write(RBR_THR_DLL, b'x');
        assert!(u.irq_level());
    }
}
