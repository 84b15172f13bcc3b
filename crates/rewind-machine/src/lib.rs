//! The `machine` layer of Rewind: QEMU's `virt` board around its harts. It owns RAM and the
//! devices, routes MMIO, derives interrupts and deadlines from the instruction count, and runs
//! the harts in turn, in slices that end exactly at the next event.
//!
//! With several harts, one host thread runs them in turn: each runs a quantum of
//! instructions (or until it waits in WFI), then the next hart with work takes over. The
//! machine's position is the number of instructions all harts have retired plus the time
//! skipped while all of them waited: guest time, timer deadlines and input events follow
//! it, and a hart that takes its turn moves its own count up to it.

pub mod block;
pub mod boot;
mod bus;
mod chaos;
mod config;
pub mod devices;
pub mod digest;
pub mod fdt;
mod input;
pub mod loader;
pub mod memmap;
pub mod snapshot;

pub use rewind_cpu::clock::MAX_SHIFT as MAX_ICOUNT_SHIFT;
pub use rewind_cpu::Clock;
use rewind_cpu::{Hart, HartExit, Ram};
pub use rewind_cpu::{WatchKind, Watchpoint};

pub use boot::{BootImages, BootLayout};
pub use bus::Bus;
pub use config::{
    DeviceKind, MachineConfig, MachineError, DEFAULT_QUANTUM, MAX_HARTS, MAX_RAM, MIN_RAM, RAM_BASE,
};
use devices::finisher::Finish;
use devices::rtc::{self, Rtc};
use devices::uart;
use devices::virtio::blk::Blk;
pub use devices::virtio::input::EvdevEvent;
use devices::virtio::input::{Input, InputKind};
use devices::virtio::net::{default_mac, Net};
use devices::virtio::rng::Rng;
use devices::virtio::DeviceState;
use devices::virtio_mmio::{self, transport::Transport};
pub use digest::DigestVersion;
use digest::{debug_hash, state_hash, RamHashes};
pub use digest::{HartDigest, StateDigest};
pub use input::InputEvent;
use snapshot::RamPages;
pub use snapshot::{MachineState, Snapshot};

/// Why [`Machine::run`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineStop {
    /// The guest powered off through the test finisher, with this status.
    PowerOff(u16),
    /// The guest asked for a reboot: the host restarts the board from its images.
    Reset,
    /// The instruction limit was reached.
    Limit,
    /// Every hart sleeps in WFI; nothing happens before instruction count `until` (a timer
    /// deadline), or ever, if `None`, unless input arrives. [`Machine::skip_idle`] moves on.
    Idle { until: Option<u64> },
    /// The slice asked for ended; the machine can go on.
    Slice,
    /// The next instruction is at a breakpoint of the hart [`Machine::stopped_hart`] names.
    Breakpoint,
    /// The last instruction touched memory under a watchpoint of the hart
    /// [`Machine::stopped_hart`] names.
    Watchpoint,
    /// The hart [`Machine::step_hart`] was given has executed its instruction.
    Stepped,
}

/// What a debugger counts of one hart: not guest state (a guest cannot see it, and snapshots
/// do not hold it), but exact from the start of a run, and kept by the debugger's
/// checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HartMark {
    /// Instructions the hart executed (or trapped on).
    pub executed: u64,
    /// The position of the last of them.
    pub last: Option<u64>,
}

/// The whole machine.
pub struct Machine {
    pub config: MachineConfig,
    /// The hart whose turn it is (or was last): its instruction count is the machine's
    /// position. On a one-hart board, the hart.
    pub hart: Hart,
    /// The other harts, by hart id, while they wait for their turn.
    parked: Vec<Parked>,
    /// With several harts: the position at which the running hart's turn ends.
    turn_end: u64,
    /// In chaos mode: until this position the running hart does not see IPIs and external
    /// interrupts ([`HELD_LINES`]).
    held_until: u64,
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
    /// Frames the guest sent, with their NIC, until [`Machine::take_net_output`] takes them.
    net_sent: Vec<(usize, Vec<u8>)>,
    /// How [`Machine::digest`] hashes device states (that of the recording being replayed).
    digest_version: DigestVersion,
    /// The running hart executed WFI and sleeps until an interrupt is pending.
    sleeping: bool,
    /// Instruction counts skipped while the hart slept (virtual time without instructions).
    idle_skipped: u64,
    /// Entropy for the device tree's `/chosen/rng-seed`: a host value, given by
    /// [`InputEvent::Entropy`].
    rng_seed: Vec<u8>,
    /// For a debugger, by hart id: what each hart executed.
    hart_marks: Vec<HartMark>,
    /// For a debugger: the run stops once this hart has executed one instruction.
    step_hart: Option<u64>,
    /// The hart the last breakpoint or watchpoint stop was of.
    stopped_hart: u64,
}

/// The interrupt lines chaos mode may hold back from a hart for a while: software (IPIs) and
/// external interrupts, M and S.
const HELD_LINES: u64 = 1 << 3 | 1 << 9 | 1 << 11;

/// Longest stretch the hart runs without the machine looking at the host.
const MAX_SLICE: u64 = 1 << 22;

/// A hart waiting for its turn.
pub(crate) struct Parked {
    hart: Hart,
    /// It executed WFI and sleeps until an interrupt is pending.
    sleeping: bool,
    /// [`Ram::code_pages_made`] when it stopped: pages that became code since may still
    /// have fast store translations in its TLB.
    code_pages_seen: u64,
}

impl Machine {
    /// A machine started from `images` as QEMU's `virt` would start it: in M-mode at the reset
    /// ROM, which enters the firmware (or the kernel, with no firmware) with `a0` = hart id,
    /// `a1` = device tree, `a2` = `fw_dynamic` information.
    pub fn new(config: MachineConfig, images: &BootImages) -> Result<Machine, MachineError> {
        Machine::started(config, images, Vec::new())
    }

    /// [`Machine::new`] with `rng_seed` already given (a reset keeps the one it had).
    fn started(
        config: MachineConfig,
        images: &BootImages,
        rng_seed: Vec<u8>,
    ) -> Result<Machine, MachineError> {
        let mut machine = Machine::bare(config)?;
        machine.rng_seed = rng_seed;
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
        machine
            .ram
            .set_rom(crate::memmap::ROM.base, crate::memmap::ROM.size, &rom);
        machine.bus.rom = rom;
        for hart in machine.harts_mut() {
            hart.state.pc = crate::memmap::ROM.base;
        }
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
        if !(1..=MAX_HARTS).contains(&config.harts) {
            return Err(MachineError::BadHartCount {
                harts: config.harts,
            });
        }
        if config.quantum == 0 {
            return Err(MachineError::BadQuantum);
        }
        if config.harts == 1 && config.chaos.is_some() {
            return Err(MachineError::ChaosOnOneHart);
        }
        let ram =
            Ram::try_new(config.ram_base, config.ram_size).ok_or(MachineError::OutOfMemory {
                size: config.ram_size,
            })?;
        let clock = Clock::fixed(config.icount_shift);
        let new_hart = |id: u32| {
            let mut hart = Hart::new(id as u64, config.ram_base);
            hart.state.clock = clock;
            hart
        };
        let hart = new_hart(0);
        let parked = (1..config.harts)
            .map(|id| Parked {
                hart: new_hart(id),
                sleeping: false,
                code_pages_seen: 0,
            })
            .collect();
        let harts = config.harts as usize;
        let dirty_words = ram.pages().div_ceil(64);
        let snapshot_base = RamPages::zeroed(ram.pages());
        let mut virtio: Vec<Option<Transport>> =
            (0..crate::memmap::VIRTIO_SLOTS).map(|_| None).collect();
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
            clock,
            rtc: Rtc::new(0),
            clint: devices::clint::Clint {
                state: devices::clint::ClintState::new(harts),
            },
            plic: devices::plic::Plic {
                state: devices::plic::PlicState::new(harts),
            },
            virtio,
            nic_slots,
            ..Bus::default()
        };
        let turn_end = Machine::turn_length(&config, 0);
        Ok(Machine {
            config,
            hart,
            parked,
            turn_end,
            held_until: 0,
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
            net_sent: Vec::new(),
            digest_version: DigestVersion::default(),
            sleeping: false,
            idle_skipped: 0,
            rng_seed: Vec::new(),
            hart_marks: vec![HartMark::default(); harts],
            step_hart: None,
            stopped_hart: 0,
        })
    }

    /// Builds the device tree (unless `given`) and writes it where QEMU puts it.
    fn place_dtb(&mut self, given: Option<Vec<u8>>) -> Result<(), MachineError> {
        let dtb = match given {
            Some(dtb) => dtb,
            None => fdt::build(&self.config, &self.layout, &self.rng_seed)
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
            self.ram
                .set_rom(crate::memmap::ROM.base, crate::memmap::ROM.size, &rom);
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
        self.hart.state.clock.ns_at(self.hart.state.icount)
    }

    /// The guest clock.
    pub fn clock(&self) -> Clock {
        self.hart.state.clock
    }

    /// Sets the guest clock, for the harts and the bus alike.
    fn set_clock(&mut self, clock: Clock) {
        for hart in self.harts_mut() {
            hart.state.clock = clock;
        }
        self.bus.clock = clock;
    }

    /// Every hart, the running one first.
    fn harts_mut(&mut self) -> impl Iterator<Item = &mut Hart> {
        std::iter::once(&mut self.hart).chain(self.parked.iter_mut().map(|p| &mut p.hart))
    }

    /// Every hart with whether it sleeps in WFI, the running one first.
    fn harts(&self) -> impl Iterator<Item = (&Hart, bool)> {
        std::iter::once((&self.hart, self.sleeping))
            .chain(self.parked.iter().map(|p| (&p.hart, p.sleeping)))
    }

    /// The hart with id `id`, if the board has it.
    pub fn hart_by_id(&self, id: u64) -> Option<&Hart> {
        self.harts().map(|(h, _)| h).find(|h| h.state.hart_id == id)
    }

    /// The hart with id `id`, if the board has it, to change.
    pub fn hart_by_id_mut(&mut self, id: u64) -> Option<&mut Hart> {
        self.harts_mut().find(|h| h.state.hart_id == id)
    }

    /// A debugger's breakpoints and watchpoints, for every hart (replacing the previous ones).
    pub fn set_debug_stops(&mut self, breakpoints: Vec<u64>, watchpoints: Vec<Watchpoint>) {
        for hart in self.harts_mut() {
            hart.set_debug_stops(breakpoints.clone(), watchpoints.clone());
        }
    }

    /// Before a debugger resumes: a breakpoint at the instruction at the present position is
    /// not reported, whichever hart executes it (with `Some`), and the last watchpoint hit is
    /// forgotten.
    pub fn exempt_breakpoint_at(&mut self, position: Option<u64>) {
        for hart in self.harts_mut() {
            hart.resume_from_breakpoint = position;
            hart.watch_hit = None;
        }
    }

    /// Before a debugger resumes from a stop: [`Machine::exempt_breakpoint_at`] the present.
    pub fn resume_from_debug_stop(&mut self) {
        self.exempt_breakpoint_at(Some(self.hart.state.icount));
    }

    /// The hart of the last [`MachineStop::Breakpoint`] or [`MachineStop::Watchpoint`].
    pub fn stopped_hart(&self) -> u64 {
        self.stopped_hart
    }

    /// The access that ended the last run with [`MachineStop::Watchpoint`]: address and kind.
    pub fn watch_hit(&self) -> Option<(u64, WatchKind)> {
        self.hart_by_id(self.stopped_hart).and_then(|h| h.watch_hit)
    }

    /// Runs stop ([`MachineStop::Stepped`]) once hart `id` has executed one instruction, or
    /// trapped on one, however long the other harts run before its turn comes; `None`
    /// cancels.
    pub fn step_hart(&mut self, id: Option<u64>) {
        self.step_hart = id;
    }

    /// What each hart executed, by id (for a debugger).
    pub fn hart_marks(&self) -> &[HartMark] {
        &self.hart_marks
    }

    /// Instructions hart `id` executed so far (0 for a hart the board lacks).
    pub fn hart_executed(&self, id: u64) -> u64 {
        self.hart_marks.get(id as usize).map_or(0, |m| m.executed)
    }

    /// Puts back what a debugger's checkpoint kept of [`Machine::hart_marks`].
    pub fn set_hart_marks(&mut self, marks: &[HartMark]) {
        if marks.len() == self.hart_marks.len() {
            self.hart_marks.copy_from_slice(marks);
        }
    }

    /// The interrupt lines of hart `id` from the CLINT and PLIC, at `mtime`.
    fn lines_of(&self, id: usize, mtime: u64) -> u64 {
        let bus = &self.bus;
        let mut lines = 0;
        if bus.clint.software_pending(id) {
            lines |= 1 << 3;
        }
        if bus.clint.timer_pending(id, mtime) {
            lines |= 1 << 7;
        }
        if bus.plic.context_pending(2 * id) {
            lines |= 1 << 11;
        }
        if bus.plic.context_pending(2 * id + 1) {
            lines |= 1 << 9;
        }
        lines
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
        let id = self.hart.state.hart_id as usize;
        let mut lines = self.lines_of(id, self.hart.mtime());
        if self.hart.state.icount < self.held_until {
            lines &= !HELD_LINES;
        }
        self.hart.state.irq_lines = lines;
    }

    /// The next instruction count at which the RTC's alarm or one of `harts`' timers fires,
    /// if any.
    fn next_deadline_of<'a>(&self, harts: impl Iterator<Item = &'a Hart>) -> Option<u64> {
        let now = self.hart.state.icount;
        let clock = &self.hart.state.clock;
        let rtc = self
            .bus
            .rtc
            .next_deadline_ns()
            .map(|ns| clock.icount_at_ns(ns))
            .filter(|&d| d > now);
        let timers = harts.flat_map(|hart| {
            let id = hart.state.hart_id as usize;
            [
                self.bus.clint.next_deadline(id, now, clock),
                hart.stimecmp_deadline(),
            ]
        });
        timers.chain([rtc]).flatten().min()
    }

    /// The next instruction count at which a timer of the running hart or the RTC's alarm
    /// fires, if any. The other harts' timers are looked at when their turn comes.
    fn next_deadline(&self) -> Option<u64> {
        self.next_deadline_of(std::iter::once(&self.hart))
    }

    /// The hart whose turn comes when the running hart's ends: one that has work (it does not
    /// sleep, or an interrupt wakes it). In the fixed schedule it is the next such hart by id,
    /// the running hart last of all; in chaos mode the seed picks it. `None` when every hart
    /// sleeps. Changes nothing.
    fn next_hart(&self) -> Option<usize> {
        let now = self.hart.state.icount;
        let count = self.hart_count();
        let current = self.hart.state.hart_id as usize;
        let mtime = self.hart.mtime();
        // Lines as the devices drive them: a held line still wakes a hart (held, it would
        // sleep through its turns while every hart waited for it).
        let has_work = |id: usize| {
            let (hart, sleeping) = self.waiting_hart(id);
            !sleeping || hart.would_wake(self.lines_of(id, mtime), now)
        };
        match self.config.chaos {
            None => (1..=count)
                .map(|step| (current + step) % count)
                .find(|&id| has_work(id)),
            Some(seed) => {
                let ready: Vec<usize> = (0..count).filter(|&id| has_work(id)).collect();
                (!ready.is_empty()).then(|| ready[chaos::Chaos::new(seed).pick(now, ready.len())])
            }
        }
    }

    /// Hart `id` (the running one or a parked one), with whether it sleeps in WFI.
    fn waiting_hart(&self, id: usize) -> (&Hart, bool) {
        if id == self.hart.state.hart_id as usize {
            (&self.hart, self.sleeping)
        } else {
            let waiting = &self.parked[self.parked_slot(id)];
            (&waiting.hart, waiting.sleeping)
        }
    }

    /// Ends the running hart's turn and gives hart `next` ([`Machine::next_hart`]) the next:
    /// for a quantum in the fixed schedule; in chaos mode the seed picks the length of the
    /// turn and how long the hart does not see IPIs and external interrupts.
    fn take_turn(&mut self, next: usize) {
        let now = self.hart.state.icount;
        let current = self.hart.state.hart_id as usize;
        let mtime = self.hart.mtime();
        let woken = if next == current {
            self.sleeping
        } else {
            // Only the hart that takes over changes: how often the others were looked at
            // must not show in their state.
            let lines = self.lines_of(next, mtime);
            let made = self.ram.code_pages_made();
            let mut taking = self.parked.remove(self.parked_slot(next));
            taking.hart.resume_at(now);
            taking.hart.state.irq_lines = lines;
            if taking.code_pages_seen != made {
                taking.hart.forget_store_translations();
            }
            let previous = Parked {
                hart: std::mem::replace(&mut self.hart, taking.hart),
                sleeping: std::mem::replace(&mut self.sleeping, false),
                code_pages_seen: made,
            };
            let back = self.parked_slot(previous.hart.state.hart_id as usize);
            self.parked.insert(back, previous);
            taking.sleeping
        };
        self.sleeping = false;
        let turn = Machine::turn_length(&self.config, now);
        self.turn_end = now.saturating_add(turn);
        // A hart an interrupt just woke sees it at once.
        self.held_until = match self.config.chaos {
            Some(seed) if !woken => now + chaos::Chaos::new(seed).hold(now, turn),
            _ => 0,
        };
    }

    /// How long the turn that starts at `position` lasts.
    fn turn_length(config: &MachineConfig, position: u64) -> u64 {
        match config.chaos {
            None => config.quantum,
            Some(seed) => chaos::Chaos::new(seed).turn_length(position, config.quantum),
        }
    }

    /// Where hart `id` is, or goes, among the parked harts (which are sorted by id).
    fn parked_slot(&self, id: usize) -> usize {
        self.parked
            .partition_point(|p| (p.hart.state.hart_id as usize) < id)
    }

    /// Runs until the guest stops the machine, `limit` instructions have executed in total,
    /// `slice` more instructions have run, or the hart goes idle, whichever comes first.
    pub fn run(&mut self, limit: Option<u64>, slice: u64) -> MachineStop {
        let slice_end = self.hart.state.icount.saturating_add(slice);
        let mut stepped = false;
        loop {
            if let Some(finish) = self.bus.finisher.take() {
                return match finish {
                    Finish::Exit(code) => MachineStop::PowerOff(code),
                    Finish::Reset => MachineStop::Reset,
                };
            }
            // Devices look at the queues the driver notified (a notify ends the hart's run).
            for t in self.bus.virtio.iter_mut().flatten() {
                t.service(&mut self.ram);
            }
            self.collect_sent();
            let now = self.hart.state.icount;
            if limit.is_some_and(|l| now >= l) {
                return MachineStop::Limit;
            }
            if now >= slice_end {
                return MachineStop::Slice;
            }
            if stepped {
                return MachineStop::Stepped;
            }
            self.update_interrupt_lines();
            let turn_over = now >= self.turn_end || (self.sleeping && !self.hart.wakeup_pending());
            if !self.parked.is_empty() && turn_over {
                let Some(next) = self.next_hart() else {
                    let harts = self.harts().map(|(h, _)| h);
                    return MachineStop::Idle {
                        until: self.next_deadline_of(harts),
                    };
                };
                // A breakpoint before the first instruction of the next turn stops the run
                // before the turn changes hands: the machine stays as a run to this position
                // leaves it, so that replay goes on from it as it would have.
                let (taking, sleeping) = self.waiting_hart(next);
                if !sleeping && taking.stops_at_breakpoint_at(now) {
                    self.stopped_hart = next as u64;
                    return MachineStop::Breakpoint;
                }
                self.take_turn(next);
            }
            let deadline = self.next_deadline();
            if self.sleeping {
                if !self.hart.wakeup_pending() {
                    return MachineStop::Idle { until: deadline };
                }
                self.sleeping = false;
            }
            let mut end = slice_end.min(now + MAX_SLICE);
            if !self.parked.is_empty() {
                end = end.min(self.turn_end);
                if self.held_until > now {
                    end = end.min(self.held_until);
                }
            }
            if let Some(l) = limit {
                end = end.min(l);
            }
            if let Some(d) = deadline {
                end = end.min(d);
            }
            let id = self.hart.state.hart_id;
            let stepping = self.step_hart == Some(id);
            if stepping {
                end = end.min(now + 1);
            }
            self.hart.take_pending_interrupt();
            let exit = self.hart.run(&mut self.ram, &mut self.bus, end - now);
            let after = self.hart.state.icount;
            if after > now {
                let mark = &mut self.hart_marks[id as usize];
                mark.executed += after - now;
                mark.last = Some(after - 1);
                if stepping {
                    self.step_hart = None;
                    stepped = true;
                }
            }
            match exit {
                HartExit::Wfi => self.sleeping = true,
                HartExit::Breakpoint => {
                    self.stopped_hart = id;
                    return MachineStop::Breakpoint;
                }
                HartExit::Watchpoint => {
                    self.stopped_hart = id;
                    return MachineStop::Watchpoint;
                }
                HartExit::Budget | HartExit::Yield => {}
            }
        }
    }

    /// Runs with nobody at the console: idle time is skipped at once. Ends at power-off,
    /// reset, the limit, or [`MachineStop::Idle`] with no deadline (the guest waits forever).
    pub fn run_unattended(&mut self, limit: Option<u64>) -> MachineStop {
        loop {
            match self.run(limit, u64::MAX) {
                MachineStop::Idle { until: Some(t) } => {
                    self.skip_idle(limit.map_or(t, |l| t.min(l)))
                }
                MachineStop::Slice => {}
                stop => return stop,
            }
        }
    }

    /// Moves virtual time forward to instruction count `until` while every hart sleeps
    /// (no hart executes anything; only the clock advances).
    pub fn skip_idle(&mut self, until: u64) {
        if self.is_idle() && until > self.hart.state.icount {
            self.idle_skipped += until - self.hart.state.icount;
            self.hart.state.icount = until;
        }
    }

    /// Instructions executed (or trapped on) so far: the instruction count without the time
    /// skipped while the hart slept.
    pub fn executed(&self) -> u64 {
        self.hart.state.icount - self.idle_skipped
    }

    /// Whether every hart sleeps in WFI.
    pub fn is_idle(&self) -> bool {
        self.harts().all(|(_, sleeping)| sleeping)
    }

    /// The harts on the board.
    pub fn hart_count(&self) -> usize {
        self.parked.len() + 1
    }

    /// Virtual nanoseconds at instruction count `icount` (the present or later).
    pub fn ns_at(&self, icount: u64) -> u64 {
        self.hart.state.clock.ns_at(icount)
    }

    /// The first instruction count, from the present on, at which virtual time reaches `ns`.
    pub fn icount_at_ns(&self, ns: u64) -> u64 {
        self.hart.state.clock.icount_at_ns(ns)
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
        // The digest's registers are hart 0's; with several harts, the others are entries of
        // their own.
        let (hart, hart0_sleeping) = self
            .harts()
            .find(|(h, _)| h.state.hart_id == 0)
            .expect("every board has hart 0");
        let bus = &self.bus;
        let mut devices: Vec<(String, u64)> = match self.digest_version {
            DigestVersion::DebugText => [
                (
                    "hart-lines",
                    debug_hash(&(hart.state.irq_lines, hart.reservation_state())),
                ),
                ("sleep", debug_hash(&(hart0_sleeping, self.idle_skipped))),
                ("uart", debug_hash(&bus.uart.state)),
                ("clint", digest::legacy::clint_hash(&bus.clint.state)),
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
                    (
                        "hart-lines",
                        state_hash(&(hart.state.irq_lines, reservation)),
                    ),
                    ("sleep", state_hash(&(hart0_sleeping, self.idle_skipped))),
                    ("uart", state_hash(&bus.uart.state)),
                    // One hart's CLINT and PLIC hash as they did before boards had more.
                    (
                        "clint",
                        match bus.clint.state.harts.as_slice() {
                            [one] => state_hash(one),
                            harts => state_hash(harts),
                        },
                    ),
                    (
                        "plic",
                        match bus.plic.state.one_hart() {
                            Some(one) => state_hash(&one),
                            None => state_hash(&bus.plic.state),
                        },
                    ),
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
                if !self.parked.is_empty() {
                    // Hart 0's own count: the digest's is the machine's position.
                    let turn = (self.hart.state.hart_id, self.turn_end, hart.state.icount);
                    let turn = match self.config.chaos {
                        None => state_hash(&turn),
                        Some(_) => state_hash(&(turn, self.held_until)),
                    };
                    devices.push(("turn".into(), turn));
                    for (other, sleeping) in self.harts().filter(|(h, _)| h.state.hart_id != 0) {
                        let name = format!("hart {}", other.state.hart_id);
                        devices.push((name, state_hash(&(&other.state, sleeping))));
                    }
                }
                devices
            }
        };
        // The clock of a fixed shift follows from the configuration; one that changed its
        // shift (`--icount-shift auto`) is state of its own. Hashed only then, so that the
        // digests of fixed-shift runs are what they always were.
        if !hart.state.clock.is_fixed(self.config.icount_shift) {
            let hash = match self.digest_version {
                DigestVersion::DebugText => debug_hash(&hart.state.clock),
                DigestVersion::Postcard => state_hash(&hart.state.clock),
            };
            devices.push(("clock".to_string(), hash));
        }
        StateDigest {
            icount: self.hart.state.icount,
            pc: hart.state.pc,
            privilege: hart.state.privilege,
            x: hart.state.x.to_vec(),
            f: hart.state.f.to_vec(),
            csrs: hart.state.csr.named_values(),
            devices,
            ram_base: self.ram.base(),
            ram_region_size,
            ram_regions,
            harts: match self.digest_version {
                DigestVersion::DebugText => Vec::new(),
                DigestVersion::Postcard => self.hart_digests(),
            },
        }
    }

    /// The registers of every hart but hart 0, by id (none on a board of one).
    fn hart_digests(&self) -> Vec<HartDigest> {
        let mut harts: Vec<HartDigest> = self
            .harts()
            .map(|(h, _)| h)
            .filter(|h| h.state.hart_id != 0)
            .map(|h| HartDigest {
                id: h.state.hart_id,
                pc: h.state.pc,
                privilege: h.state.privilege,
                x: h.state.x.to_vec(),
                f: h.state.f.to_vec(),
                csrs: h.state.csr.named_values(),
            })
            .collect();
        harts.sort_by_key(|h| h.id);
        harts
    }

    /// Makes [`Machine::digest`] hash device states as `version` says: that of the recording
    /// being checked.
    pub fn set_digest_version(&mut self, version: DigestVersion) {
        self.digest_version = version;
    }

    /// Moves the RAM's dirty pages into the machine's two dirty sets.
    fn collect_dirty(&mut self) {
        // Stores through cached translations would not mark their pages again.
        for hart in self.harts_mut() {
            hart.forget_store_translations();
        }
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
        let mut fresh = Machine::started(self.config.clone(), images, self.rng_seed.clone())?;
        // What was written to disks stays written across the reset.
        for (new, old) in fresh.bus.virtio.iter_mut().zip(&self.bus.virtio) {
            if let (Some(new), Some(old)) = (new, old) {
                if let state @ DeviceState::Blk(_) = old.device_state() {
                    new.set_device_state(&state);
                }
            }
        }
        let position = self.hart.state.icount;
        for hart in fresh.harts_mut() {
            hart.state.icount = position;
        }
        fresh.turn_end = position.saturating_add(Machine::turn_length(&fresh.config, position));
        fresh.set_clock(self.hart.state.clock);
        fresh.idle_skipped = self.idle_skipped;
        fresh.bus.rtc.state.base_ns = self.bus.rtc.state.base_ns;
        fresh.bus.trace = self.bus.trace;
        fresh.digest_version = self.digest_version;
        fresh.network_attached = self.network_attached;
        fresh.net_sent = std::mem::take(&mut self.net_sent);
        fresh.hart_marks = std::mem::take(&mut self.hart_marks);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind_cpu::Mmio;

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
        assert_eq!(
            machine.hart.state.irq_lines & (1 << 9),
            1 << 9,
            "SEIP raised"
        );
        assert_eq!(machine.bus.uart.read(0), b'h');
        assert_eq!(machine.bus.uart.read(0), b'i');
    }

    /// Two harts in quanta of 100: hart 0 counts in a loop at the start of RAM, hart 1 spins on
    /// a `j .` of its own.
    fn two_spinning_harts() -> (Machine, u64) {
        let config = MachineConfig {
            harts: 2,
            quantum: 100,
            ..MachineConfig::default()
        };
        let mut machine = Machine::bare(config).unwrap();
        let spin = RAM_BASE + 0x100;
        let code = [0x0015_0513u32, 0xffdf_f06f]; // addi a0, a0, 1; j -4
        for (i, word) in code.iter().enumerate() {
            machine
                .ram
                .write(RAM_BASE + 4 * i as u64, &word.to_le_bytes());
        }
        machine.ram.write(spin, &0x0000_006fu32.to_le_bytes()); // j .
        machine.hart_by_id_mut(1).unwrap().state.pc = spin;
        (machine, spin)
    }

    #[test]
    fn debug_stops_name_their_hart_and_leave_the_machine_as_a_run_to_their_position() {
        let (mut machine, spin) = two_spinning_harts();
        let (mut straight, _) = two_spinning_harts();
        // Hart 1's turn starts at 100: a breakpoint at its pc stops the run there, before the
        // turn changes hands.
        machine.set_debug_stops(vec![spin], Vec::new());
        assert_eq!(machine.run(None, u64::MAX), MachineStop::Breakpoint);
        assert_eq!(
            (machine.hart.state.icount, machine.stopped_hart()),
            (100, 1)
        );
        straight.run(Some(100), u64::MAX);
        assert_eq!(machine.digest().hash(), straight.digest().hash());
        // Resumed, hart 1 runs the instruction there, and stops before it again.
        machine.resume_from_debug_stop();
        assert_eq!(machine.run(None, u64::MAX), MachineStop::Breakpoint);
        assert_eq!(
            (machine.hart.state.icount, machine.stopped_hart()),
            (101, 1)
        );
        let marks = machine.hart_marks();
        assert_eq!(marks[0].executed, 100);
        assert_eq!(marks[1].last, Some(100));
        straight.run(Some(101), u64::MAX);
        assert_eq!(machine.digest().hash(), straight.digest().hash());
    }

    #[test]
    fn stepping_a_hart_waits_for_its_turn_and_runs_one_of_its_instructions() {
        let (mut machine, _) = two_spinning_harts();
        let (mut straight, _) = two_spinning_harts();
        machine.step_hart(Some(1));
        assert_eq!(machine.run(None, u64::MAX), MachineStop::Stepped);
        assert_eq!(
            machine.hart.state.icount, 101,
            "after hart 0's turn and one of hart 1's"
        );
        assert_eq!(
            machine.hart_marks(),
            [
                HartMark {
                    executed: 100,
                    last: Some(99)
                },
                HartMark {
                    executed: 1,
                    last: Some(100)
                }
            ]
        );
        straight.run(Some(101), u64::MAX);
        assert_eq!(machine.digest().hash(), straight.digest().hash());
        // Done: the next run goes on without stopping, hart 1 to the end of its turn.
        assert_eq!(machine.run(Some(300), u64::MAX), MachineStop::Limit);
        assert_eq!(machine.hart_marks()[1].executed, 100);
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
        assert!(machine.network_attached);
    }

    #[test]
    fn host_values_are_inputs_that_a_reset_keeps() {
        let images = BootImages {
            kernel: Some(vec![0x6f, 0, 0, 0]),
            ..BootImages::default()
        };
        let mut machine = Machine::new(MachineConfig::default(), &images).unwrap();
        let seed = b"entropy from the host, 32 bytes!".to_vec();
        machine.inject(&InputEvent::RtcBase(1_700_000_000_000_000_000));
        machine.inject(&InputEvent::Entropy(seed.clone()));
        let has_seed = |m: &Machine| m.dtb().windows(seed.len()).any(|w| w == seed);
        assert!(has_seed(&machine), "the device tree gets the entropy");
        let dtb = machine.dtb().to_vec();
        machine.reset(&images).unwrap();
        assert_eq!(
            machine.dtb(),
            dtb,
            "the rebooted board has the same device tree"
        );
        assert_eq!(machine.bus.rtc.state.base_ns, 1_700_000_000_000_000_000);
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
            machine.bus.clock, machine.hart.state.clock,
            "the bus reads the same clock"
        );
        // mtime through the CLINT and the CSR agree.
        let mmio = machine
            .bus
            .read(crate::memmap::CLINT.base + 0xbff8, 8, 1000)
            .unwrap();
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
        assert_eq!(machine.bus.clock, machine.hart.state.clock);
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
