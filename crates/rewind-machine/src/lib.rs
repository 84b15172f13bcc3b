//! The `machine` layer of Rewind: QEMU's `virt` board around one hart. It owns RAM and the
//! devices, routes MMIO, derives interrupts and deadlines from the instruction count, and runs
//! the hart in slices that end exactly at the next event.

pub mod block;
pub mod boot;
pub mod devices;
pub mod digest;
pub mod fdt;
pub mod loader;
pub mod snapshot;

pub use rewind_cpu::clock::MAX_SHIFT as MAX_ICOUNT_SHIFT;
pub use rewind_cpu::Clock;
use rewind_cpu::{Exit, Hart, Mmio, Ram};
pub use rewind_cpu::{WatchKind, Watchpoint};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use boot::{BootImages, BootLayout};
use devices::clint::{self, Clint};
use devices::finisher::{self, Finish, Finisher};
use devices::plic::{self, Plic};
use devices::rtc::{self, Rtc};
use devices::uart::{self, Uart};
use devices::virtio::blk::Blk;
pub use devices::virtio::input::EvdevEvent;
use devices::virtio::input::{Input, InputKind};
use devices::virtio::net::{default_mac, Net};
use devices::virtio::rng::Rng;
use devices::virtio::DeviceState;
use devices::virtio_mmio::{self, transport::Transport};
pub use digest::DigestVersion;
pub use digest::StateDigest;
use digest::{debug_hash, state_hash, RamHashes};
use snapshot::RamPages;
pub use snapshot::{MachineState, Snapshot};

pub const RAM_BASE: u64 = 0x8000_0000;
/// The smallest RAM the board accepts.
pub const MIN_RAM: u64 = 2 << 20;
/// The largest RAM the board accepts (as far as the `virt` map leaves room for).
pub const MAX_RAM: u64 = 64 << 30;

/// A device in a virtio-mmio slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    /// virtio-rng: entropy from the host, recorded.
    VirtioRng,
    /// virtio-blk on the next disk image of [`BootImages::disks`].
    VirtioBlk,
    /// virtio-input keyboard, tablet (absolute pointer) and mouse (relative).
    VirtioKeyboard,
    VirtioTablet,
    VirtioMouse,
    /// virtio-net: frames from the host's network backend, recorded.
    VirtioNet,
}

/// How the machine is put together, and the host values it starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    pub ram_base: u64,
    pub ram_size: u64,
    pub bootargs: Option<String>,
    /// Virtual nanoseconds per instruction = 2^icount_shift at the start; with
    /// `--icount-shift auto`, [`InputEvent::IcountShift`] changes it as the run goes.
    pub icount_shift: u32,
    /// The shift follows the wall clock (`--icount-shift auto`): for reports only; the
    /// changes themselves are input events. Not written when false, so a fixed-shift
    /// manifest reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub icount_auto: bool,
    /// Devices in the virtio-mmio slots, from the last slot down (as QEMU fills them).
    #[serde(default)]
    pub devices: Vec<DeviceKind>,
    /// How far above the kernel's start the initrd goes at most: it lies at kernel +
    /// min(RAM / 2, this), as QEMU places it. A recording names it, so that one made when
    /// Rewind followed QEMU 7.2 (128 MiB; the field did not exist then) replays unchanged.
    #[serde(default = "qemu7_initrd_offset")]
    pub initrd_max_offset: u64,
    /// Wall-clock nanoseconds since the epoch that the RTC shows at virtual time 0. A host
    /// value: [`InputEvent::RtcBase`] sets it.
    #[serde(skip)]
    pub rtc_base_ns: u64,
    /// Bytes for the device tree's `/chosen/rng-seed`. A host value: [`InputEvent::Entropy`]
    /// sets it.
    #[serde(skip)]
    pub rng_seed: Vec<u8>,
}

fn qemu7_initrd_offset() -> u64 {
    128 << 20
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            ram_base: RAM_BASE,
            ram_size: 128 << 20,
            bootargs: None,
            icount_shift: 0,
            icount_auto: false,
            devices: Vec::new(),
            initrd_max_offset: 512 << 20, // QEMU 10
            rtc_base_ns: 0,
            rng_seed: Vec::new(),
        }
    }
}

#[derive(Debug, Error)]
pub enum MachineError {
    #[error("cannot use {what}: {reason}")]
    BadImage { what: String, reason: String },
    #[error("{what} ({size} bytes) does not fit in RAM at {at:#x}; give more --memory")]
    DoesNotFit { what: String, size: u64, at: u64 },
    #[error(
        "memory size {size} bytes is not usable: give --memory between 2M and 64G, in whole pages"
    )]
    BadMemorySize { size: u64 },
    #[error("the host cannot give {size} bytes of guest RAM: give less --memory")]
    OutOfMemory { size: u64 },
    #[error("the snapshot cannot be used: {0}")]
    BadSnapshot(String),
    #[error("cannot build the device tree: {0}")]
    DeviceTree(String),
    #[error("the device tree ({size} bytes) does not fit in RAM; give more --memory")]
    DeviceTreeTooBig { size: usize },
    #[error("nothing to run: give --kernel, or --bios with a firmware file")]
    NothingToRun,
}

/// A value from the host entering the guest (DESIGN.md: one boundary for the host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputEvent {
    /// Bytes received by UART0, all at once; no more than [`Machine::console_room`].
    Console(Vec<u8>),
    /// The host's wall clock: nanoseconds since the Unix epoch that the RTC shows at virtual
    /// time 0. Given before the first instruction; later, it sets the RTC as a host would.
    RtcBase(u64),
    /// Host entropy for the device tree's `/chosen/rng-seed`. Before the first instruction it
    /// rewrites the device tree in RAM; later, it is used when the board resets.
    Entropy(Vec<u8>),
    /// Host entropy for virtio-rng, no more than [`Machine::entropy_wanted`] bytes.
    Rng(Vec<u8>),
    /// Keyboard and pointer events for the virtio-input devices (each takes its kind).
    Input(Vec<EvdevEvent>),
    /// An Ethernet frame for virtio-net device `nic` (counted in the order of
    /// [`MachineConfig::devices`]).
    Net { nic: u8, frame: Vec<u8> },
    /// `--icount-shift auto`: from this instruction on, each instruction is 2^shift virtual
    /// nanoseconds (at most [`MAX_ICOUNT_SHIFT`]); virtual time goes on from where it is.
    IcountShift(u8),
}

impl InputEvent {
    /// A short name of the kind of event, for reports.
    pub fn kind_name(&self) -> &'static str {
        match self {
            InputEvent::Console(_) => "console",
            InputEvent::RtcBase(_) => "rtc_base",
            InputEvent::Entropy(_) => "entropy",
            InputEvent::Rng(_) => "rng",
            InputEvent::Input(_) => "input",
            InputEvent::Net { .. } => "net",
            InputEvent::IcountShift(_) => "icount_shift",
        }
    }
}

/// Why [`Machine::run`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The guest powered off through the test finisher, with this status.
    PowerOff(u16),
    /// The guest asked for a reboot: the host restarts the board from its images.
    Reset,
    /// The instruction limit was reached.
    Limit,
    /// The hart sleeps in WFI; nothing happens before instruction count `until` (a timer
    /// deadline), or ever, if `None`, unless input arrives. [`Machine::skip_idle`] moves on.
    Idle { until: Option<u64> },
    /// The slice asked for ended; the machine can go on.
    Slice,
    /// The next instruction is at one of the hart's breakpoints.
    Breakpoint,
    /// The last instruction touched memory under one of the hart's watchpoints.
    Watchpoint,
}

/// Devices behind the MMIO bus.
#[derive(Default)]
pub struct Bus {
    pub uart: Uart,
    pub clint: Clint,
    pub plic: Plic,
    pub rtc: Rtc,
    pub finisher: Finisher,
    /// The virtio-mmio slots' transports (`None`: an empty slot).
    pub virtio: Vec<Option<Transport>>,
    /// The slot of each virtio-net device, in NIC order (the order of
    /// [`MachineConfig::devices`]): NIC n has MAC [`default_mac`]`(n)` and takes
    /// [`InputEvent::Net`] with `nic: n`.
    nic_slots: Vec<usize>,
    rom: Vec<u8>,
    /// Log every MMIO access on standard error (`--trace-mmio`).
    pub trace: bool,
    /// A copy of the hart's clock, so that MMIO reads of time see the exact instruction
    /// count ([`Machine::set_clock`] keeps the two equal).
    clock: Clock,
}

fn in_region(addr: u64, base: u64, size: u64) -> bool {
    addr.wrapping_sub(base) < size
}

/// Reads `size` bytes at `offset` of a byte image, zero past its end.
fn read_bytes(image: &[u8], offset: u64, size: u8) -> u64 {
    let mut buf = [0u8; 8];
    for (i, b) in buf.iter_mut().take(size as usize).enumerate() {
        *b = image.get(offset as usize + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(buf)
}

impl Mmio for Bus {
    fn read(&mut self, addr: u64, size: u8, icount: u64) -> Option<u64> {
        let value = self.route_read(addr, size, icount);
        if self.trace {
            match value {
                Some(v) => eprintln!("mmio: {icount}: read{} {addr:#x} = {v:#x}", size * 8),
                None => eprintln!(
                    "mmio: {icount}: read{} {addr:#x}: nothing there (access fault)",
                    size * 8
                ),
            }
        }
        value
    }

    fn write(&mut self, addr: u64, size: u8, value: u64, icount: u64) -> bool {
        let ok = self.route_write(addr, size, value, icount);
        if self.trace {
            let outcome = if ok {
                ""
            } else {
                ": nothing there (access fault)"
            };
            eprintln!(
                "mmio: {icount}: write{} {addr:#x} <- {value:#x}{outcome}",
                size * 8
            );
        }
        ok
    }
}

impl Bus {
    /// The transport of NIC `nic`.
    fn nic(&mut self, nic: usize) -> Option<&mut Transport> {
        let slot = *self.nic_slots.get(nic)?;
        self.virtio.get_mut(slot)?.as_mut()
    }

    fn route_read(&mut self, addr: u64, size: u8, icount: u64) -> Option<u64> {
        if in_region(addr, boot::ROM_BASE, boot::ROM_SIZE) {
            return Some(read_bytes(&self.rom, addr - boot::ROM_BASE, size));
        }
        if in_region(addr, uart::BASE, uart::SIZE) {
            return Some(self.uart.read(addr - uart::BASE) as u64);
        }
        if in_region(addr, clint::BASE, clint::SIZE) {
            let mtime = self.clock.mtime_at(icount);
            return self.clint.read(addr - clint::BASE, size, mtime);
        }
        if in_region(addr, plic::BASE, plic::SIZE) {
            return Some(self.plic.read(addr - plic::BASE) as u64);
        }
        if in_region(addr, rtc::BASE, rtc::SIZE) {
            let ns = self.clock.ns_at(icount);
            return Some(self.rtc.read(addr - rtc::BASE, ns) as u64);
        }
        if in_region(
            addr,
            virtio_mmio::BASE,
            virtio_mmio::SLOT_SIZE * virtio_mmio::SLOTS,
        ) {
            let offset = (addr - virtio_mmio::BASE) % virtio_mmio::SLOT_SIZE;
            let slot = ((addr - virtio_mmio::BASE) / virtio_mmio::SLOT_SIZE) as usize;
            return Some(match self.virtio.get_mut(slot).and_then(Option::as_mut) {
                Some(t) => t.read(offset) as u64,
                None => virtio_mmio::read_empty(offset) as u64,
            });
        }
        if in_region(addr, finisher::BASE, finisher::SIZE) {
            return Some(self.finisher.read(addr - finisher::BASE, size));
        }
        None
    }

    fn route_write(&mut self, addr: u64, size: u8, value: u64, icount: u64) -> bool {
        if in_region(addr, uart::BASE, uart::SIZE) {
            self.uart.write(addr - uart::BASE, value as u8);
        } else if in_region(addr, clint::BASE, clint::SIZE) {
            self.clint.write(addr - clint::BASE, size, value);
        } else if in_region(addr, plic::BASE, plic::SIZE) {
            self.plic.write(addr - plic::BASE, value as u32);
        } else if in_region(addr, rtc::BASE, rtc::SIZE) {
            let ns = self.clock.ns_at(icount);
            self.rtc.write(addr - rtc::BASE, value as u32, ns);
        } else if in_region(addr, finisher::BASE, finisher::SIZE) {
            self.finisher.write(addr - finisher::BASE, value);
        } else if in_region(
            addr,
            virtio_mmio::BASE,
            virtio_mmio::SLOT_SIZE * virtio_mmio::SLOTS,
        ) {
            let offset = (addr - virtio_mmio::BASE) % virtio_mmio::SLOT_SIZE;
            let slot = ((addr - virtio_mmio::BASE) / virtio_mmio::SLOT_SIZE) as usize;
            // Empty slots ignore writes, as on QEMU.
            if let Some(t) = self.virtio.get_mut(slot).and_then(Option::as_mut) {
                t.write(offset, value as u32);
            }
        } else if in_region(addr, boot::ROM_BASE, boot::ROM_SIZE) {
            // The ROM ignores writes.
        } else {
            return false;
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
    pub layout: BootLayout,
    dtb: Vec<u8>,
    dtb_addr: u64,
    /// The device tree came with the images (not built from the configuration).
    dtb_given: bool,
    /// Page hashes of RAM for [`Machine::digest`].
    ram_hashes: RamHashes,
    /// RAM pages written since the last digest, and since the last snapshot or restore (one
    /// bit per page; the RAM's own dirty set feeds both).
    dirty_for_digest: Vec<u64>,
    dirty_for_snapshot: Vec<u64>,
    /// What RAM held at the last snapshot or restore (see `snapshot.rs`).
    snapshot_base: RamPages,
    /// The disk overlays at the last snapshot or restore, in slot order.
    snapshot_disks: Vec<devices::virtio::blk::BlkState>,
    /// A host backend takes the frames the guest sends ([`Machine::attach_network`]).
    network_attached: bool,
    /// How [`Machine::digest`] hashes device states (that of the recording being replayed).
    digest_version: DigestVersion,
    /// The hart executed WFI and sleeps until an interrupt is pending.
    sleeping: bool,
    /// Instruction counts skipped while the hart slept (virtual time without instructions).
    idle_skipped: u64,
}

/// Longest stretch the hart runs without the machine looking at the host.
const MAX_SLICE: u64 = 1 << 22;

impl Machine {
    /// A machine started from `images` as QEMU's `virt` would start it: in M-mode at the reset
    /// ROM, which enters the firmware (or the kernel, with no firmware) with `a0` = hart id,
    /// `a1` = device tree, `a2` = `fw_dynamic` information.
    pub fn new(config: MachineConfig, images: &BootImages) -> Result<Machine, MachineError> {
        let mut machine = Machine::bare(config)?;
        let mut disks = images.disks.iter();
        let slots = machine.bus.virtio.len();
        for (i, kind) in machine.config.devices.iter().enumerate().take(slots) {
            if *kind == DeviceKind::VirtioBlk {
                let disk = disks.next().ok_or_else(|| MachineError::BadImage {
                    what: "the disk".into(),
                    reason: "a virtio-blk device has no disk image".into(),
                })?;
                machine.bus.virtio[slots - 1 - i] = Some(Transport::new(Blk::new(disk.clone())));
            }
        }
        let initrd_max_offset = machine.config.initrd_max_offset;
        machine.layout = boot::load(&mut machine.ram, images, initrd_max_offset)?;
        machine.dtb_given = images.dtb.is_some();
        machine.place_dtb(images.dtb.clone())?;
        let entry = machine.layout.entry;
        let rom = boot::rom_image(entry, machine.dtb_addr, machine.layout.kernel_entry);
        // The hart starts in the reset ROM, whose code hands over to `entry`.
        machine.ram.set_rom(boot::ROM_BASE, boot::ROM_SIZE, &rom);
        machine.bus.rom = rom;
        machine.hart.pc = boot::ROM_BASE;
        Ok(machine)
    }

    /// A machine with empty RAM, no device tree and the hart at the start of RAM: for tests
    /// and fuzzing that put their own code in RAM.
    pub fn bare(config: MachineConfig) -> Result<Machine, MachineError> {
        if !(MIN_RAM..=MAX_RAM).contains(&config.ram_size) || !config.ram_size.is_multiple_of(4096)
        {
            return Err(MachineError::BadMemorySize {
                size: config.ram_size,
            });
        }
        let ram =
            Ram::try_new(config.ram_base, config.ram_size).ok_or(MachineError::OutOfMemory {
                size: config.ram_size,
            })?;
        let mut hart = Hart::new(0, config.ram_base);
        hart.clock = Clock::fixed(config.icount_shift);
        let dirty_words = ram.pages().div_ceil(64);
        let snapshot_base = RamPages::zeroed(ram.pages());
        let mut virtio: Vec<Option<Transport>> = (0..virtio_mmio::SLOTS).map(|_| None).collect();
        let mut nic_slots = Vec::new();
        for (i, kind) in config.devices.iter().enumerate().take(virtio.len()) {
            let slot = virtio.len() - 1 - i;
            // Disks come with the images: see `Machine::new`.
            virtio[slot] = match kind {
                DeviceKind::VirtioRng => Some(Transport::new(Rng::default())),
                DeviceKind::VirtioBlk => None,
                DeviceKind::VirtioKeyboard => Some(Transport::new(Input::new(InputKind::Keyboard))),
                DeviceKind::VirtioTablet => Some(Transport::new(Input::new(InputKind::Tablet))),
                DeviceKind::VirtioMouse => Some(Transport::new(Input::new(InputKind::Mouse))),
                DeviceKind::VirtioNet => {
                    let mac = default_mac(nic_slots.len());
                    nic_slots.push(slot);
                    Some(Transport::new(Net::new(mac)))
                }
            };
        }
        let bus = Bus {
            clock: hart.clock,
            rtc: Rtc::new(config.rtc_base_ns),
            virtio,
            nic_slots,
            ..Bus::default()
        };
        Ok(Machine {
            config,
            hart,
            ram,
            bus,
            layout: BootLayout::default(),
            dtb: Vec::new(),
            dtb_addr: 0,
            dtb_given: false,
            ram_hashes: RamHashes::default(),
            dirty_for_digest: vec![0; dirty_words],
            dirty_for_snapshot: vec![0; dirty_words],
            snapshot_base,
            snapshot_disks: Vec::new(),
            network_attached: false,
            digest_version: DigestVersion::default(),
            sleeping: false,
            idle_skipped: 0,
        })
    }

    /// Builds the device tree (unless `given`) and writes it where QEMU puts it.
    fn place_dtb(&mut self, given: Option<Vec<u8>>) -> Result<(), MachineError> {
        let dtb = match given {
            Some(dtb) => dtb,
            None => fdt::build(&self.config, &self.layout)
                .map_err(|e| MachineError::DeviceTree(e.to_string()))?,
        };
        // Where QEMU puts it: below the end of RAM (or 3 GiB), aligned down to 2 MiB.
        let base = self.config.ram_base;
        let top = (base + self.config.ram_size).min(base + (3 << 30));
        let too_big = MachineError::DeviceTreeTooBig { size: dtb.len() };
        let addr = top
            .checked_sub(dtb.len() as u64)
            .map(|a| a & !((2 << 20) - 1))
            .filter(|&a| a >= base)
            .ok_or(too_big)?;
        let overlaps_initrd = self.layout.initrd.is_some_and(|(_, end)| end > addr);
        if overlaps_initrd || self.ram.write(addr, &dtb).is_none() {
            return Err(MachineError::DeviceTreeTooBig { size: dtb.len() });
        }
        self.dtb = dtb;
        self.dtb_addr = addr;
        Ok(())
    }

    /// Builds the device tree again from the configuration and puts it in place of the old
    /// one, before the guest has started. Keeps the old one if the new one does not fit.
    fn replace_dtb(&mut self) {
        let (old, old_addr) = (std::mem::take(&mut self.dtb), self.dtb_addr);
        let _ = self.ram.write(old_addr, &vec![0; old.len()]);
        if self.place_dtb(None).is_err() {
            let _ = self.ram.write(old_addr, &old);
            (self.dtb, self.dtb_addr) = (old, old_addr);
            return;
        }
        if self.dtb_addr != old_addr {
            let rom = boot::rom_image(self.layout.entry, self.dtb_addr, self.layout.kernel_entry);
            self.ram.set_rom(boot::ROM_BASE, boot::ROM_SIZE, &rom);
            self.bus.rom = rom;
        }
    }

    /// Physical address of the device tree blob.
    pub fn dtb_addr(&self) -> u64 {
        self.dtb_addr
    }

    /// The device tree blob handed to the guest.
    pub fn dtb(&self) -> &[u8] {
        &self.dtb
    }

    fn virtual_ns(&self) -> u64 {
        self.hart.clock.ns_at(self.hart.icount)
    }

    /// The guest clock.
    pub fn clock(&self) -> Clock {
        self.hart.clock
    }

    /// Sets the guest clock, for the hart and the bus alike.
    fn set_clock(&mut self, clock: Clock) {
        self.hart.clock = clock;
        self.bus.clock = clock;
    }

    /// Drives interrupt lines from device state at the current time.
    fn update_interrupt_lines(&mut self) {
        let ns = self.virtual_ns();
        let bus = &mut self.bus;
        bus.rtc.update(ns);
        bus.plic.set_level(uart::IRQ, bus.uart.irq_level());
        bus.plic.set_level(rtc::IRQ, bus.rtc.irq_level());
        for (slot, t) in bus.virtio.iter().enumerate() {
            let level = t.as_ref().is_some_and(Transport::irq_level);
            bus.plic.set_level(virtio_mmio::FIRST_IRQ + slot, level);
        }
        let mut lines = 0;
        if bus.clint.state.msip {
            lines |= 1 << 3;
        }
        if bus.clint.timer_pending(self.hart.mtime()) {
            lines |= 1 << 7;
        }
        if bus.plic.context_pending(0) {
            lines |= 1 << 11;
        }
        if bus.plic.context_pending(1) {
            lines |= 1 << 9;
        }
        self.hart.irq_lines = lines;
    }

    /// The next instruction count at which a timer or alarm fires, if any.
    fn next_deadline(&self) -> Option<u64> {
        let now = self.hart.icount;
        let clock = &self.hart.clock;
        let rtc = self
            .bus
            .rtc
            .next_deadline_ns()
            .map(|ns| clock.icount_at_ns(ns));
        [
            self.bus.clint.next_deadline(now, clock),
            self.hart.stimecmp_deadline(),
            rtc.filter(|&d| d > now),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs until the guest stops the machine, `limit` instructions have executed in total,
    /// `slice` more instructions have run, or the hart goes idle, whichever comes first.
    pub fn run(&mut self, limit: Option<u64>, slice: u64) -> Stop {
        let slice_end = self.hart.icount.saturating_add(slice);
        loop {
            if let Some(finish) = self.bus.finisher.take() {
                return match finish {
                    Finish::Exit(code) => Stop::PowerOff(code),
                    Finish::Reset => Stop::Reset,
                };
            }
            // Devices look at the queues the driver notified (a notify ends the hart's run).
            for t in self.bus.virtio.iter_mut().flatten() {
                t.service(&mut self.ram);
            }
            let now = self.hart.icount;
            if limit.is_some_and(|l| now >= l) {
                return Stop::Limit;
            }
            if now >= slice_end {
                return Stop::Slice;
            }
            self.update_interrupt_lines();
            let deadline = self.next_deadline();
            if self.sleeping {
                if !self.hart.wakeup_pending() {
                    return Stop::Idle { until: deadline };
                }
                self.sleeping = false;
            }
            let mut end = slice_end.min(now + MAX_SLICE);
            if let Some(l) = limit {
                end = end.min(l);
            }
            if let Some(d) = deadline {
                end = end.min(d);
            }
            self.hart.take_pending_interrupt();
            match self.hart.run(&mut self.ram, &mut self.bus, end - now) {
                Exit::Wfi => self.sleeping = true,
                Exit::Breakpoint => return Stop::Breakpoint,
                Exit::Watchpoint => return Stop::Watchpoint,
                Exit::Budget | Exit::Yield => {}
            }
        }
    }

    /// Runs with nobody at the console: idle time is skipped at once. Ends at power-off,
    /// reset, the limit, or [`Stop::Idle`] with no deadline (the guest waits forever).
    pub fn run_unattended(&mut self, limit: Option<u64>) -> Stop {
        loop {
            match self.run(limit, u64::MAX) {
                Stop::Idle { until: Some(t) } => self.skip_idle(limit.map_or(t, |l| t.min(l))),
                Stop::Slice => {}
                stop => return stop,
            }
        }
    }

    /// Moves virtual time forward to instruction count `until` while the hart sleeps
    /// (the hart executes nothing; only the clock advances).
    pub fn skip_idle(&mut self, until: u64) {
        if self.sleeping && until > self.hart.icount {
            self.idle_skipped += until - self.hart.icount;
            self.hart.icount = until;
        }
    }

    /// Instructions executed (or trapped on) so far: the instruction count without the time
    /// skipped while the hart slept.
    pub fn executed(&self) -> u64 {
        self.hart.icount - self.idle_skipped
    }

    /// Whether the hart sleeps in WFI.
    pub fn is_idle(&self) -> bool {
        self.sleeping
    }

    /// Virtual nanoseconds at instruction count `icount` (the present or later).
    pub fn ns_at(&self, icount: u64) -> u64 {
        self.hart.clock.ns_at(icount)
    }

    /// The first instruction count, from the present on, at which virtual time reaches `ns`.
    pub fn icount_at_ns(&self, ns: u64) -> u64 {
        self.hart.clock.icount_at_ns(ns)
    }

    /// A summary of all guest-visible state: the hart, every device, RAM, and whether the
    /// hart sleeps. It costs only the RAM pages written since the previous digest.
    pub fn digest(&mut self) -> StateDigest {
        self.collect_dirty();
        let dirty = std::mem::replace(
            &mut self.dirty_for_digest,
            vec![0; self.ram.pages().div_ceil(64)],
        );
        let (ram_region_size, ram_regions) = self.ram_hashes.update(&self.ram, &dirty);
        let hart = &self.hart;
        let bus = &self.bus;
        let mut devices: Vec<(String, u64)> = match self.digest_version {
            DigestVersion::DebugText => [
                (
                    "hart-lines",
                    debug_hash(&(hart.irq_lines, hart.reservation_state())),
                ),
                ("sleep", debug_hash(&(self.sleeping, self.idle_skipped))),
                ("uart", debug_hash(&bus.uart.state)),
                ("clint", debug_hash(&bus.clint.state)),
                ("plic", debug_hash(&bus.plic.state)),
                ("rtc", debug_hash(&bus.rtc.state)),
                ("finisher", debug_hash(&bus.finisher)),
                // Guest-visible state only: the host's disk files are not part of it.
                ("virtio", digest::legacy::virtio_hash(&bus.virtio)),
            ]
            .into_iter()
            .map(|(name, h)| (name.to_string(), h))
            .collect(),
            DigestVersion::Postcard => {
                let reservation = hart.save().reservation;
                let mut devices: Vec<(String, u64)> = [
                    ("hart-lines", state_hash(&(hart.irq_lines, reservation))),
                    ("sleep", state_hash(&(self.sleeping, self.idle_skipped))),
                    ("uart", state_hash(&bus.uart.state)),
                    ("clint", state_hash(&bus.clint.state)),
                    ("plic", state_hash(&bus.plic.state)),
                    ("rtc", state_hash(&bus.rtc.state)),
                    ("finisher", state_hash(&bus.finisher.pending())),
                ]
                .into_iter()
                .map(|(name, h)| (name.to_string(), h))
                .collect();
                for (slot, t) in bus.virtio.iter().enumerate() {
                    if let Some(t) = t {
                        devices.push((format!("virtio{slot} ({})", t.name()), t.digest()));
                    }
                }
                devices
            }
        };
        // The clock of a fixed shift follows from the configuration; one that changed its
        // shift (`--icount-shift auto`) is state of its own. Hashed only then, so that the
        // digests of fixed-shift runs are what they always were.
        if !hart.clock.is_fixed(self.config.icount_shift) {
            let hash = match self.digest_version {
                DigestVersion::DebugText => debug_hash(&hart.clock),
                DigestVersion::Postcard => state_hash(&hart.clock),
            };
            devices.push(("clock".to_string(), hash));
        }
        StateDigest {
            icount: hart.icount,
            pc: hart.pc,
            privilege: hart.privilege,
            x: hart.x.to_vec(),
            f: hart.f.to_vec(),
            csrs: hart.csr.named_values(),
            devices,
            ram_base: self.ram.base(),
            ram_region_size,
            ram_regions,
        }
    }

    /// Makes [`Machine::digest`] hash device states as `version` says: that of the recording
    /// being checked.
    pub fn set_digest_version(&mut self, version: DigestVersion) {
        self.digest_version = version;
    }

    /// Moves the RAM's dirty pages into the machine's two dirty sets.
    fn collect_dirty(&mut self) {
        // Stores through cached translations would not mark their pages again.
        self.hart.forget_store_translations();
        for page in self.ram.take_dirty_pages() {
            self.dirty_for_digest[page / 64] |= 1 << (page % 64);
            self.dirty_for_snapshot[page / 64] |= 1 << (page % 64);
        }
    }

    /// A hash of all guest-visible state ([`Machine::digest`]): two runs that computed the
    /// same thing end with the same hash.
    pub fn state_hash(&mut self) -> u64 {
        self.digest().hash()
    }

    /// Restarts the board from `images`, as a guest-requested reset does: RAM, hart and
    /// devices start afresh, while virtual time goes on and the RTC keeps its time.
    pub fn reset(&mut self, images: &BootImages) -> Result<(), MachineError> {
        let mut fresh = Machine::new(self.config.clone(), images)?;
        // What was written to disks stays written across the reset.
        for (new, old) in fresh.bus.virtio.iter_mut().zip(&self.bus.virtio) {
            if let (Some(new), Some(old)) = (new, old) {
                if let state @ DeviceState::Blk(_) = old.device_state() {
                    new.set_device_state(&state);
                }
            }
        }
        fresh.hart.icount = self.hart.icount;
        fresh.set_clock(self.hart.clock);
        fresh.idle_skipped = self.idle_skipped;
        fresh.bus.rtc.state.base_ns = self.bus.rtc.state.base_ns;
        fresh.bus.trace = self.bus.trace;
        fresh.digest_version = self.digest_version;
        if self.network_attached {
            fresh.attach_network();
        }
        *self = fresh;
        Ok(())
    }

    /// Bytes the guest wrote to the console since the last call.
    pub fn take_console_output(&mut self) -> Vec<u8> {
        self.bus.uart.take_output()
    }

    /// Writes each virtio-blk disk as the guest sees it now to a new raw image, in the order
    /// of the disks; `paths` may be shorter than the list of disks.
    pub fn save_disks(&self, paths: &[std::path::PathBuf]) -> Result<(), String> {
        let disks = self
            .bus
            .virtio
            .iter()
            .rev()
            .flatten()
            .filter_map(Transport::device::<Blk>);
        for (blk, path) in disks.zip(paths) {
            blk.disk
                .save_to(path)
                .map_err(|e| format!("cannot write the disk image {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Keeps the frames the guest sends for [`Machine::take_net_output`] (a live run with
    /// network backends), from now on and across resets; otherwise they are dropped.
    pub fn attach_network(&mut self) {
        self.network_attached = true;
        for nic in 0..self.bus.nic_slots.len() {
            if let Some(n) = self.bus.nic(nic).and_then(Transport::device_mut::<Net>) {
                n.host_attached = true;
            }
        }
    }

    /// Frames the guest sent since the last call, with the NIC each left by.
    pub fn take_net_output(&mut self) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        for nic in 0..self.bus.nic_slots.len() {
            if let Some(n) = self.bus.nic(nic).and_then(Transport::device_mut::<Net>) {
                out.extend(std::mem::take(&mut n.sent).into_iter().map(|f| (nic, f)));
            }
        }
        out
    }

    /// Frames NIC `nic` holds for its driver (the host should wait while it holds many).
    pub fn net_pending(&mut self, nic: usize) -> usize {
        let net = self.bus.nic(nic).and_then(Transport::device_mut::<Net>);
        net.map_or(0, |n| n.pending())
    }

    /// How many bytes of host entropy virtio-rng devices wait for.
    pub fn entropy_wanted(&self) -> usize {
        self.bus
            .virtio
            .iter()
            .flatten()
            .filter_map(Transport::device::<Rng>)
            .map(Rng::wanted)
            .sum()
    }

    /// How many console bytes UART0 can take now (room in its receive FIFO).
    pub fn console_room(&self) -> usize {
        self.bus.uart.rx_space()
    }

    /// Delivers a value from the host to the guest, now (between two instructions). This is
    /// the one way host input enters the machine, so a recording of `(icount, event)` pairs
    /// and the configuration reproduce a run. Only the replay layer calls it: its `Session`
    /// (live runs, which write every event down) and `Player` (replays); the command line
    /// hands its input to a `Session` and sees the machine only through `&Machine`.
    pub fn inject(&mut self, event: &InputEvent) {
        match event {
            InputEvent::Console(bytes) => {
                for &b in bytes {
                    // Callers send no more than `console_room`; a byte past it is dropped, as a
                    // 16550 drops bytes that overrun its FIFO.
                    self.bus.uart.receive(b);
                }
            }
            InputEvent::RtcBase(ns) => {
                self.config.rtc_base_ns = *ns;
                self.bus.rtc.state.base_ns = *ns;
            }
            InputEvent::Input(events) => {
                for t in self.bus.virtio.iter_mut().flatten() {
                    t.give(&mut self.ram, |i: &mut Input, ctx| {
                        i.take_host_events(events, ctx)
                    });
                }
            }
            InputEvent::Net { nic, frame } => {
                if let Some(t) = self.bus.nic(*nic as usize) {
                    t.give(&mut self.ram, |n: &mut Net, ctx| {
                        n.take_host_frame(frame, ctx)
                    });
                }
            }
            InputEvent::Rng(bytes) => {
                let mut rest = &bytes[..];
                for t in self.bus.virtio.iter_mut().flatten() {
                    let wanted = t.device::<Rng>().map_or(0, Rng::wanted);
                    let n = wanted.min(rest.len());
                    if n > 0 {
                        t.give(&mut self.ram, |r: &mut Rng, ctx| {
                            r.fill_from_host(&rest[..n], ctx)
                        });
                        rest = &rest[n..];
                    }
                }
            }
            InputEvent::IcountShift(shift) => {
                let mut clock = self.hart.clock;
                clock.set_shift(self.hart.icount, (*shift as u32).min(MAX_ICOUNT_SHIFT));
                self.set_clock(clock);
            }
            InputEvent::Entropy(bytes) => {
                self.config.rng_seed = bytes.clone();
                let before_start = self.hart.icount == 0 && self.dtb_addr != 0;
                if before_start && !self.dtb_given {
                    self.replace_dtb();
                }
            }
        }
        // The input may raise an interrupt that wakes a sleeping hart.
        self.update_interrupt_lines();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_input_enters_through_the_uart_and_interrupts_via_the_plic() {
        let mut machine = Machine::bare(MachineConfig::default()).unwrap();
        let bus = &mut machine.bus;
        bus.uart.write(1, 0x01); // IER: receive data interrupt
        bus.plic.write(uart::IRQ as u64 * 4, 1); // priority 1
        bus.plic.write(0x2080, 1 << uart::IRQ); // enabled for hart 0's S-mode context
        assert_eq!(machine.console_room(), uart::FIFO_SIZE);
        machine.inject(&InputEvent::Console(b"hi".to_vec()));
        assert_eq!(machine.console_room(), uart::FIFO_SIZE - 2);
        assert_eq!(machine.hart.irq_lines & (1 << 9), 1 << 9, "SEIP raised");
        assert_eq!(machine.bus.uart.read(0), b'h');
        assert_eq!(machine.bus.uart.read(0), b'i');
    }

    #[test]
    fn nics_are_numbered_in_configuration_order_and_stay_attached_across_a_reset() {
        let config = MachineConfig {
            devices: vec![
                DeviceKind::VirtioNet,
                DeviceKind::VirtioRng,
                DeviceKind::VirtioNet,
            ],
            ..MachineConfig::default()
        };
        let images = BootImages {
            kernel: Some(vec![0x6f, 0, 0, 0]),
            ..BootImages::default()
        };
        let mut machine = Machine::new(config, &images).unwrap();
        let net = |machine: &Machine, slot: usize| {
            let t = machine.bus.virtio[slot].as_ref();
            t.and_then(Transport::device::<Net>).unwrap().mac
        };
        assert_eq!(
            (net(&machine, 7), net(&machine, 5)),
            (default_mac(0), default_mac(1))
        );
        machine.inject(&InputEvent::Net {
            nic: 1,
            frame: vec![0; 60],
        });
        assert_eq!((machine.net_pending(0), machine.net_pending(1)), (0, 1));
        machine.attach_network();
        machine.reset(&images).unwrap();
        let attached = |slot: usize| {
            let t = machine.bus.virtio[slot].as_ref();
            t.and_then(Transport::device::<Net>).unwrap().host_attached
        };
        assert!(attached(7) && attached(5));
    }

    #[test]
    fn a_change_of_shift_keeps_time_continuous_and_is_state() {
        let config = MachineConfig {
            icount_shift: 3,
            ..MachineConfig::default()
        };
        let mut machine = Machine::bare(config).unwrap();
        // An endless loop (`j .`) to run in.
        machine
            .ram
            .write(RAM_BASE, &0x0000_006fu32.to_le_bytes())
            .unwrap();
        machine.run(Some(1000), u64::MAX);
        let fixed = machine.digest();
        assert!(
            fixed.devices.iter().all(|(n, _)| n != "clock"),
            "a fixed clock is not hashed: fixed-shift digests stay as they were"
        );
        let before = machine.snapshot();
        machine.inject(&InputEvent::IcountShift(5));
        assert_eq!(machine.ns_at(1000), 8000, "continuous");
        assert_eq!(machine.ns_at(1001), 8032);
        assert_eq!(
            machine.bus.clock, machine.hart.clock,
            "the bus reads the same clock"
        );
        // mtime through the CLINT and the CSR agree.
        let mmio = machine.bus.read(clint::BASE + 0xbff8, 8, 1000).unwrap();
        assert_eq!(mmio, machine.hart.mtime());
        let changed = machine.digest();
        assert!(changed.devices.iter().any(|(n, _)| n == "clock"));
        assert_ne!(changed.hash(), fixed.hash());
        // Snapshots keep the clock; restoring gives the bus its copy too.
        let after = machine.snapshot();
        machine.restore(&before).unwrap();
        assert_eq!(machine.clock(), Clock::fixed(3));
        assert_eq!(machine.bus.clock, Clock::fixed(3));
        machine.restore(&after).unwrap();
        assert_eq!(machine.clock().shift, 5);
        assert_eq!(machine.bus.clock, machine.hart.clock);
        // A reset keeps virtual time going, at the shift of the moment.
        machine.run(Some(2000), u64::MAX);
        let clock = machine.clock();
        let images = BootImages {
            kernel: Some(vec![0x6f, 0, 0, 0]),
            ..BootImages::default()
        };
        machine.reset(&images).unwrap();
        assert_eq!(machine.clock(), clock);
        assert_eq!(machine.bus.clock, clock);
        assert_eq!(machine.ns_at(2000), 8000 + 1000 * 32);
    }
}
