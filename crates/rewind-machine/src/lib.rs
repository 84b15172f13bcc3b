//! The `machine` layer of Rewind: QEMU's `virt` board around one hart. It owns RAM and the
//! devices, routes MMIO, derives interrupts and deadlines from the instruction count, and runs
//! the hart in slices that end exactly at the next event.

pub mod devices;
pub mod fdt;
pub mod loader;

use rewind_cpu::{Exit, Hart, Mmio, Ram};
use thiserror::Error;

use devices::clint::{self, Clint};
use devices::finisher::{self, Finish, Finisher};
use devices::uart::{self, Uart};

pub const RAM_BASE: u64 = 0x8000_0000;
/// The smallest RAM the board accepts.
pub const MIN_RAM: u64 = 2 << 20;
/// The largest RAM the board accepts (as far as the `virt` map leaves room for).
pub const MAX_RAM: u64 = 64 << 30;

/// How the machine is put together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    pub ram_base: u64,
    pub ram_size: u64,
    pub bootargs: Option<String>,
    /// Virtual nanoseconds per instruction = 2^icount_shift.
    pub icount_shift: u32,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            ram_base: RAM_BASE,
            ram_size: 128 << 20,
            bootargs: None,
            icount_shift: 0,
        }
    }
}

#[derive(Debug, Error)]
pub enum MachineError {
    #[error("cannot use {what}: {reason}")]
    BadImage { what: String, reason: String },
    #[error("memory size {size} bytes is not usable: give --memory between 2M and 64G")]
    BadMemorySize { size: u64 },
    #[error("cannot build the device tree: {0}")]
    DeviceTree(String),
    #[error("the device tree ({size} bytes) does not fit in RAM; give more --memory")]
    DeviceTreeTooBig { size: usize },
}

/// Why [`Machine::run`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The guest powered off through the test finisher, with this status.
    PowerOff(u16),
    /// The guest asked for a reboot (not supported yet: the run ends).
    Reset,
    /// The instruction limit was reached.
    Limit,
    /// The hart waits for an interrupt that nothing can raise any more.
    Deadlock,
    /// The slice asked for ended; the machine can go on.
    Slice,
}

/// Devices behind the MMIO bus.
#[derive(Default)]
pub struct Bus {
    pub uart: Uart,
    pub clint: Clint,
    pub finisher: Finisher,
    /// The hart's clock parameters, so MMIO reads of `mtime` see the exact time.
    icount_shift: u32,
}

impl Mmio for Bus {
    fn read(&mut self, addr: u64, size: u8, icount: u64) -> Option<u64> {
        match addr {
            a if (uart::BASE..uart::BASE + uart::SIZE).contains(&a) => {
                Some(self.uart.read(a - uart::BASE) as u64)
            }
            a if (clint::BASE..clint::BASE + clint::SIZE).contains(&a) => {
                let mtime = Hart::mtime_at(icount, self.icount_shift);
                self.clint.read(a - clint::BASE, size, mtime)
            }
            a if (finisher::BASE..finisher::BASE + finisher::SIZE).contains(&a) => {
                Some(self.finisher.read(a - finisher::BASE, size))
            }
            _ => None,
        }
    }

    fn write(&mut self, addr: u64, size: u8, value: u64, _icount: u64) -> bool {
        match addr {
            a if (uart::BASE..uart::BASE + uart::SIZE).contains(&a) => {
                self.uart.write(a - uart::BASE, value as u8)
            }
            a if (clint::BASE..clint::BASE + clint::SIZE).contains(&a) => {
                self.clint.write(a - clint::BASE, size, value)
            }
            a if (finisher::BASE..finisher::BASE + finisher::SIZE).contains(&a) => {
                self.finisher.write(a - finisher::BASE, value)
            }
            _ => return false,
        }
        true
    }
}

/// The whole machine.
pub struct Machine {
    pub config: MachineConfig,
    pub hart: Hart,
    pub ram: Ram,
    pub bus: Bus,
    dtb_addr: u64,
    /// The hart executed WFI and sleeps until an interrupt is pending.
    sleeping: bool,
}

/// Longest stretch the hart runs without the machine looking at the host.
const MAX_SLICE: u64 = 1 << 22;

impl Machine {
    /// A machine with empty RAM and its device tree in place; load images next.
    pub fn new(config: MachineConfig) -> Result<Machine, MachineError> {
        if !(MIN_RAM..=MAX_RAM).contains(&config.ram_size) || !config.ram_size.is_multiple_of(4096)
        {
            return Err(MachineError::BadMemorySize {
                size: config.ram_size,
            });
        }
        let mut ram = Ram::new(config.ram_base, config.ram_size);
        let dtb = fdt::build(&config).map_err(|e| MachineError::DeviceTree(e.to_string()))?;
        // Where QEMU puts it: below the end of RAM (or 3 GiB), aligned down to 2 MiB.
        let top = (config.ram_base + config.ram_size).min(config.ram_base + (3 << 30));
        let dtb_addr = top
            .checked_sub(dtb.len() as u64)
            .map(|a| a & !((2 << 20) - 1))
            .filter(|&a| a >= config.ram_base)
            .ok_or(MachineError::DeviceTreeTooBig { size: dtb.len() })?;
        ram.write(dtb_addr, &dtb)
            .ok_or(MachineError::DeviceTreeTooBig { size: dtb.len() })?;
        let mut hart = Hart::new(0, config.ram_base);
        hart.icount_shift = config.icount_shift;
        let bus = Bus {
            icount_shift: config.icount_shift,
            ..Bus::default()
        };
        Ok(Machine {
            config,
            hart,
            ram,
            bus,
            dtb_addr,
            sleeping: false,
        })
    }

    /// Physical address of the device tree blob.
    pub fn dtb_addr(&self) -> u64 {
        self.dtb_addr
    }

    /// Loads a bare-metal ELF and points the hart at it as QEMU's reset ROM would:
    /// M-mode, `a0` = hart id, `a1` = device tree.
    pub fn load_kernel_elf(&mut self, bytes: &[u8], what: &str) -> Result<u64, MachineError> {
        let entry = loader::load_elf(&mut self.ram, bytes, what)?;
        self.hart.pc = entry;
        self.hart.x[10] = self.hart.hart_id;
        self.hart.x[11] = self.dtb_addr;
        // QEMU's reset vector leaves the entry address in t0.
        self.hart.x[5] = entry;
        Ok(entry)
    }

    /// Drives device interrupt lines into the hart from device state at the current time.
    fn update_interrupt_lines(&mut self) {
        let mtime = self.hart.mtime();
        let mut lines = 0;
        if self.bus.clint.state.msip {
            lines |= 1 << 3;
        }
        if self.bus.clint.timer_pending(mtime) {
            lines |= 1 << 7;
        }
        self.hart.irq_lines = lines;
    }

    /// Runs until the guest stops the machine, `limit` instructions have executed in total, or
    /// `slice` more instructions have run (then [`Stop::Slice`]), whichever comes first.
    pub fn run(&mut self, limit: Option<u64>, slice: u64) -> Stop {
        let slice_end = self.hart.icount.saturating_add(slice);
        loop {
            if let Some(finish) = self.bus.finisher.take() {
                return match finish {
                    Finish::Exit(code) => Stop::PowerOff(code),
                    Finish::Reset => Stop::Reset,
                };
            }
            let now = self.hart.icount;
            if limit.is_some_and(|l| now >= l) {
                return Stop::Limit;
            }
            if now >= slice_end {
                return Stop::Slice;
            }
            self.update_interrupt_lines();
            let deadline = self.bus.clint.next_deadline(now, self.hart.icount_shift);
            let mut end = slice_end.min(now + MAX_SLICE);
            if let Some(l) = limit {
                end = end.min(l);
            }
            if let Some(d) = deadline {
                end = end.min(d);
            }
            if self.sleeping {
                if self.hart.wakeup_pending() {
                    self.sleeping = false;
                } else if deadline.is_some() {
                    // Nothing happens until the next deadline: virtual time jumps there.
                    self.hart.icount = end;
                    continue;
                } else {
                    return Stop::Deadlock;
                }
            }
            self.hart.take_pending_interrupt();
            if self.hart.run(&mut self.ram, &mut self.bus, end - now) == Exit::Wfi {
                self.sleeping = true;
            }
        }
    }

    /// Bytes the guest wrote to the console since the last call.
    pub fn take_console_output(&mut self) -> Vec<u8> {
        self.bus.uart.take_output()
    }
}
