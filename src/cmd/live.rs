//! Live runs (`rewind run`, `rewind record`): the guest's console on standard input and
//! output, idle time paced to the wall clock, and, when recording, every input written down.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use rewind_debug::live::{LiveEngine, LiveRun};
use rewind_debug::{DebugTarget, SessionEnd};
use rewind_machine::block::DiskImage;
use rewind_machine::{BootImages, DeviceKind, InputEvent, Machine, MachineConfig, MachineStop};
use rewind_replay::{DriveRef, EndReason, Recorder, Session};

use crate::host::autoshift::{self, AutoShift};
use crate::host::net::Backend;
use crate::host::{console, qmp, HostEvent};

use crate::{
    entropy_from_seed, guest, IcountShift, RecordArgs, RunArgs, EXIT_DEADLOCK, EXIT_LIMIT,
};

/// Instructions run between looks at the console.
const SLICE: u64 = 1 << 20;
/// The longest the live loop waits before looking for signals again.
const POLL: Duration = Duration::from_millis(100);

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// Opens the `--drive` images: for writing on a plain run (unless read-only), read-only when
/// recording (writes go to an overlay).
fn open_drives(args: &RunArgs, recording: bool) -> Result<Vec<DiskImage>, String> {
    args.drives
        .iter()
        .map(|d| {
            let writable = !recording && !d.readonly;
            DiskImage::open(&d.path, d.format.as_deref(), d.readonly, writable)
        })
        .collect()
}

/// The images and command line to boot, from the options or the default guest.
fn boot_images(args: &RunArgs) -> Result<(BootImages, Option<String>), String> {
    let dtb = args
        .dtb
        .as_ref()
        .map(|p| read_file(p, "device tree"))
        .transpose()?;
    let use_default = args.kernel.is_none() && args.bios.is_none();
    if use_default {
        let guest = guest::DefaultGuest::locate()?;
        let images = BootImages {
            bios: Some(read_file(&guest.firmware, "firmware")?),
            kernel: Some(read_file(&guest.kernel, "kernel")?),
            initrd: Some(match &args.initrd {
                Some(path) => read_file(path, "initrd")?,
                None => read_file(&guest.initrd, "initrd")?,
            }),
            dtb,
            disks: Vec::new(),
        };
        let append = args
            .append
            .clone()
            .or(Some(guest::DEFAULT_APPEND.to_string()));
        return Ok((images, append));
    }
    let bios = match args.bios.as_deref() {
        Some("none") => None,
        Some(path) => Some(read_file(&PathBuf::from(path), "firmware")?),
        None => Some(read_file(
            &guest::DefaultGuest::locate()?.firmware,
            "firmware",
        )?),
    };
    let kernel = args
        .kernel
        .as_ref()
        .map(|p| read_file(p, "kernel"))
        .transpose()?;
    let initrd = args
        .initrd
        .as_ref()
        .map(|p| read_file(p, "initrd"))
        .transpose()?;
    Ok((
        BootImages {
            bios,
            kernel,
            initrd,
            dtb,
            disks: Vec::new(),
        },
        args.append.clone(),
    ))
}

/// A chaos seed from the host's random source, for `--chaos` without one.
fn random_chaos_seed() -> u64 {
    let bytes = host_entropy();
    u64::from_le_bytes(bytes[..8].try_into().expect("32 bytes of entropy"))
}

/// Host entropy for the device tree's rng-seed.
fn host_entropy() -> Vec<u8> {
    let mut seed = vec![0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut seed);
    }
    seed
}

/// The values the host gives the machine before its first instruction: the wall clock and
/// entropy, from the host or pinned by options.
fn boot_inputs(args: &RunArgs) -> [InputEvent; 2] {
    let rtc_base_ns = args.rtc_base.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let entropy = args
        .entropy_seed
        .map_or_else(host_entropy, entropy_from_seed);
    [
        InputEvent::RtcBase(rtc_base_ns),
        InputEvent::Entropy(entropy),
    ]
}

/// A live run: its session (the machine and what enters it) and the host side around it.
struct Live<'a> {
    session: Session,
    args: &'a RunArgs,
    /// A debugger's pause: the run stops here with [`LiveEnd::Paused`].
    pause_at: Option<u64>,
    /// QMP commands, if `--qmp`.
    qmp: Option<Receiver<qmp::Request>>,
    /// Stopped by QMP `stop` (until `cont`): the guest's time stands still.
    stopped: bool,
    /// The network backends, by NIC.
    backends: Vec<Backend>,
    /// `--icount-shift auto`: when and how to change the clock's shift.
    auto: Option<AutoShift>,
}

impl Live<'_> {
    fn machine(&self) -> &Machine {
        self.session.machine()
    }

    /// Delivers host input to the guest and writes it down.
    fn inject(&mut self, event: InputEvent) -> Result<(), String> {
        self.session.inject(event).map_err(|e| e.to_string())
    }

    /// `--icount-shift auto`: moves the clock's shift towards the wall clock, if it is time to
    /// look; the change is an input event, recorded where it takes effect.
    fn adjust_shift(&mut self) -> Result<(), String> {
        let Some(auto) = &mut self.auto else {
            return Ok(());
        };
        let clock = self.session.machine().clock();
        let virtual_ns = clock.ns_at(self.session.machine().hart.state.icount);
        match auto.tick(Instant::now(), virtual_ns, clock.shift) {
            Some(shift) => self.inject(InputEvent::IcountShift(shift as u8)),
            None => Ok(()),
        }
    }

    /// Where the next run must stop: `--max-insns` or the next sync point.
    fn limit(&self) -> Option<u64> {
        let sync = self.session.next_sync();
        [self.args.max_insns, sync, self.pause_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Answers the QMP commands that arrived; returns an outcome if one ends the run.
    fn handle_qmp(&mut self) -> Result<Option<LiveEnd>, String> {
        let requests: Vec<qmp::Request> = match &self.qmp {
            Some(rx) => rx.try_iter().collect(),
            None => return Ok(None),
        };
        let mut outcome = None;
        for request in requests {
            let status = qmp::Status {
                mode: if self.session.is_recording() {
                    "record"
                } else {
                    "none"
                },
                icount: self.session.machine().hart.state.icount,
                stopped: &mut self.stopped,
                has_keyboard: self
                    .session
                    .machine()
                    .config
                    .devices
                    .contains(&DeviceKind::VirtioKeyboard),
            };
            let (answer, action) = qmp::execute(&request, status);
            match action {
                qmp::Action::None => {}
                qmp::Action::Quit => {
                    outcome = Some(LiveEnd::Quit);
                    request.answer_and_wait(answer);
                    continue;
                }
                qmp::Action::Input(batches) => {
                    for events in batches {
                        self.inject(InputEvent::Input(events))?;
                    }
                }
            }
            let _ = request.reply.send(answer);
        }
        Ok(outcome)
    }

    /// Gives virtio-rng devices the host entropy they wait for; says whether it gave any.
    fn feed_entropy(&mut self) -> Result<bool, String> {
        let wanted = self.machine().entropy_wanted().min(4096);
        if wanted == 0 {
            return Ok(false);
        }
        let mut bytes = vec![0u8; wanted];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| format!("cannot read host entropy from /dev/urandom: {e}"))?;
        self.inject(InputEvent::Rng(bytes))?;
        Ok(true)
    }

    /// Sends the frames the guest wrote to their backends.
    fn forward_frames(&mut self) {
        for (nic, frame) in self.session.take_net_output() {
            if let Some(backend) = self.backends.get_mut(nic) {
                backend.send(frame);
            }
        }
    }

    /// Takes an event from the console and network threads; returns an outcome if it ends
    /// the run.
    fn host_event(&mut self, event: HostEvent) -> Option<LiveEnd> {
        match event {
            HostEvent::Typed(bytes) => self.session.type_console(&bytes),
            HostEvent::Quit => return Some(LiveEnd::Quit),
            HostEvent::Frame { nic, frame } => self.session.queue_frame(nic, frame),
        }
        None
    }

    /// Copies the guest's console output to standard output.
    fn forward_output(&mut self) {
        let out = self.session.take_console_output();
        if out.is_empty() {
            return;
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        // A closed standard output must not stop the guest: it may still power off cleanly.
        let _ = lock.write_all(&out).and_then(|_| lock.flush());
    }

    /// After the run stopped at `limit()`: writes a sync point if one is due there. Returns
    /// whether it was a sync point (and the run should go on).
    fn sync_if_due(&mut self) -> Result<bool, String> {
        self.session
            .sync_if_due(self.args.max_insns)
            .map_err(|e| e.to_string())
    }

    /// Writes regularly, so that a killed recorder leaves most of the run behind.
    fn flush_if_due(&mut self) -> Result<(), String> {
        self.session.flush_if_due().map_err(|e| e.to_string())
    }
}

/// `rewind run` (no recording) and `rewind record`.
pub fn run(args: &RunArgs, record: Option<&RecordArgs>) -> Result<ExitCode, String> {
    let (mut images, append) = boot_images(args)?;
    images.disks = open_drives(args, record.is_some())?;
    let devices = args
        .drives
        .iter()
        .map(|_| DeviceKind::VirtioBlk)
        .chain(args.devices.iter().copied())
        .chain(args.netdevs.iter().map(|_| DeviceKind::VirtioNet))
        .collect();
    let (icount_shift, icount_auto) = match args.icount_shift {
        IcountShift::Fixed(n) => (n, false),
        IcountShift::Auto => (autoshift::INITIAL_SHIFT, true),
    };
    let config = MachineConfig {
        ram_size: args.memory,
        bootargs: append,
        icount_shift,
        icount_auto,
        devices,
        harts: args.smp,
        quantum: args.quantum,
        chaos: args
            .chaos
            .map(|seed| seed.unwrap_or_else(random_chaos_seed)),
        ..MachineConfig::default()
    };
    let chaos = config.chaos;
    let mut machine = Machine::new(config, &images).map_err(|e| e.to_string())?;
    if let (Some(seed), None) = (chaos, args.dump_dtb.as_ref()) {
        eprintln!(
            "rewind: chaos mode, seed {seed} (--chaos={seed} gives this schedule again; \
             a recording keeps it)"
        );
    }
    machine.bus.trace = args.trace_mmio;
    machine.attach_network();
    let mut session = Session::new(machine, images, boot_inputs(args).to_vec());
    if let Some(path) = &args.dump_dtb {
        std::fs::write(path, session.machine().dtb())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(r) = record {
        let recorder = start_recording(session.machine(), session.images(), r)?;
        session
            .record(recorder, r.sync_every)
            .map_err(|e| e.to_string())?;
    }
    let mut live = Live {
        session,
        args,
        pause_at: None,
        qmp: args.qmp.as_deref().map(qmp::listen).transpose()?,
        stopped: false,
        backends: Vec::new(),
        auto: icount_auto.then(|| AutoShift::new(Instant::now())),
    };
    let (host_events, input) = std::sync::mpsc::channel();
    for (nic, spec) in args.netdevs.iter().enumerate() {
        live.backends
            .push(Backend::start(spec, nic, host_events.clone())?);
    }
    console::catch_signals();
    let raw = console::RawTerminal::enable();
    console::spawn_reader(raw.is_some(), host_events);
    let started = Instant::now();
    let debugged = match &args.gdb {
        Some(address) => debug_live(&mut live, &input, address)?,
        None => None,
    };
    let outcome = loop {
        if let Some(outcome) = debugged {
            break outcome;
        }
        match drive(&mut live, &input) {
            // A reboot starts the board afresh from the same images, as QEMU's reset does.
            LiveEnd::Machine(MachineStop::Reset) => {
                if let Err(e) = live.session.reset() {
                    break LiveEnd::Error(e.to_string());
                }
            }
            outcome => break outcome,
        }
    };
    drop(raw);
    let elapsed = started.elapsed();
    let machine = live.session.machine();
    if args.stats {
        print_stats(machine, elapsed);
    }
    if args.state_hash {
        eprintln!("state hash: {:016x}", live.session.state_hash());
    }
    let machine = live.session.machine();
    let (code, reason) = match outcome {
        LiveEnd::Error(message) => return Err(message),
        // Only a debugger pauses, and it always resumes; count it as a quit if not.
        LiveEnd::Paused => (ExitCode::SUCCESS, EndReason::Quit),
        LiveEnd::Machine(MachineStop::PowerOff(code)) => {
            (ExitCode::from(code as u8), EndReason::PowerOff(code))
        }
        LiveEnd::Machine(MachineStop::Limit) => {
            eprintln!(
                "rewind: stopped after --max-insns {} instructions (pc {:#x}, {}-mode)",
                machine.hart.state.icount,
                machine.hart.state.pc,
                machine.hart.privilege_name()
            );
            (ExitCode::from(EXIT_LIMIT), EndReason::Limit)
        }
        LiveEnd::Quit => {
            eprintln!("rewind: terminated (Ctrl-A x)");
            (ExitCode::SUCCESS, EndReason::Quit)
        }
        LiveEnd::Signal => {
            eprintln!("rewind: terminated by a signal");
            (ExitCode::SUCCESS, EndReason::Signal)
        }
        LiveEnd::Deadlock | LiveEnd::Machine(_) => {
            eprintln!(
                "rewind: the hart waits for an interrupt that nothing can raise (pc {:#x}); stopping",
                machine.hart.state.pc
            );
            (ExitCode::from(EXIT_DEADLOCK), EndReason::Deadlock)
        }
    };
    live.session.finish(reason).map_err(|e| e.to_string())?;
    if let Some(r) = record {
        live.session.machine().save_disks(&r.disk_out)?;
    }
    if let Some(r) = record {
        eprintln!(
            "rewind: recorded {} to {}",
            reason.describe(),
            r.output.display()
        );
    }
    Ok(code)
}

/// A recorder for a run of `machine` (before its first instruction) booted from `images`.
fn start_recording(
    machine: &Machine,
    images: &BootImages,
    record: &RecordArgs,
) -> Result<Recorder, String> {
    let named: Vec<(String, Vec<u8>)> = [
        ("bios", images.bios.as_ref()),
        ("kernel", images.kernel.as_ref()),
        ("initrd", images.initrd.as_ref()),
        ("dtb", Some(&machine.dtb().to_vec())),
    ]
    .into_iter()
    .filter_map(|(name, data)| Some((name.to_string(), data?.clone())))
    .collect();
    let drives = record
        .run
        .drives
        .iter()
        .zip(&images.disks)
        .map(|(spec, disk)| DriveRef::describe(&spec.path, disk, spec.readonly))
        .collect::<Result<Vec<_>, String>>()?;
    Recorder::create(
        &record.output,
        format!("rewind {}", env!("CARGO_PKG_VERSION")),
        machine.config.clone(),
        record.sync_every,
        named,
        drives,
    )
    .map_err(|e| e.to_string())
}

pub fn print_stats(machine: &Machine, elapsed: Duration) {
    let insns = machine.executed();
    let secs = elapsed.as_secs_f64();
    eprintln!("executed: {insns} instructions");
    eprintln!(
        "position: {} ({:.6} s of virtual time)",
        machine.hart.state.icount,
        machine.ns_at(machine.hart.state.icount) as f64 / 1e9
    );
    eprintln!("wall time: {secs:.3} s");
    eprintln!("MIPS: {:.1}", insns as f64 / secs.max(1e-9) / 1e6);
    eprintln!("engine: {}", machine.ram.engine().name());
    if let Some(jit) = machine.ram.jit_stats() {
        eprintln!(
            "compiled: {} regions ({} with loops), {} KiB of code, {:.3} s of compiling (on a \
             thread of its own), {} cache flushes",
            jit.blocks_compiled,
            jit.loops_compiled,
            jit.code_bytes >> 10,
            jit.compile_time.as_secs_f64(),
            jit.cache_flushes
        );
    }
}

enum LiveEnd {
    Machine(MachineStop),
    Quit,
    Signal,
    Deadlock,
    Error(String),
    /// A debugger's pause was reached.
    Paused,
}

/// A live run as gdb drives it.
struct GdbDriven<'a, 'b> {
    live: &'b mut Live<'a>,
    input: &'b Receiver<HostEvent>,
    /// How the run ended while gdb drove it.
    finished: Option<LiveEnd>,
}

impl LiveRun for GdbDriven<'_, '_> {
    fn session(&self) -> &Session {
        &self.live.session
    }

    fn session_mut(&mut self) -> &mut Session {
        &mut self.live.session
    }

    fn run_until(&mut self, pause: u64) -> Option<MachineStop> {
        self.live.pause_at = Some(pause);
        let outcome = loop {
            match drive(self.live, self.input) {
                LiveEnd::Machine(MachineStop::Reset) => {
                    if let Err(e) = self.live.session.reset() {
                        break LiveEnd::Error(e.to_string());
                    }
                }
                outcome => break outcome,
            }
        };
        self.live.pause_at = None;
        match outcome {
            LiveEnd::Paused => Some(MachineStop::Limit),
            LiveEnd::Machine(
                stop @ (MachineStop::Breakpoint | MachineStop::Watchpoint | MachineStop::Stepped),
            ) => Some(stop),
            other => {
                self.finished = Some(other);
                None
            }
        }
    }

    fn exit_status(&self) -> u8 {
        match &self.finished {
            Some(LiveEnd::Machine(MachineStop::PowerOff(code))) => *code as u8,
            Some(LiveEnd::Machine(MachineStop::Limit)) => EXIT_LIMIT,
            Some(LiveEnd::Deadlock) => EXIT_DEADLOCK,
            _ => 0,
        }
    }
}

/// `--gdb`: waits for gdb before the first instruction and lets it drive the run. Returns how
/// the run ended, or `None` if gdb detached and the run goes on by itself.
fn debug_live(
    live: &mut Live,
    input: &Receiver<HostEvent>,
    address: &str,
) -> Result<Option<LiveEnd>, String> {
    let listener = std::net::TcpListener::bind(address)
        .map_err(|e| format!("cannot listen on {address} for gdb: {e}"))?;
    eprintln!("rewind: waiting for gdb on {address} (`target remote {address}`)");
    let engine = LiveEngine::new(GdbDriven {
        live,
        input,
        finished: None,
    });
    let mut target = DebugTarget::new(engine);
    let end = rewind_debug::serve_one(&mut target, &listener)?;
    let driven = target.into_engine().run;
    driven.live.session.set_debug_stops(Vec::new(), Vec::new());
    Ok(match (end, driven.finished) {
        (_, Some(outcome)) => Some(outcome),
        (SessionEnd::Killed, None) => Some(LiveEnd::Quit),
        _ => None,
    })
}

/// Runs the machine live: console output to stdout, input from the reader thread, and idle
/// time paced to the wall clock unless `--no-pacing`.
fn drive(live: &mut Live, input: &Receiver<HostEvent>) -> LiveEnd {
    match drive_inner(live, input) {
        Ok(outcome) => outcome,
        Err(message) => LiveEnd::Error(message),
    }
}

fn drive_inner(live: &mut Live, input: &Receiver<HostEvent>) -> Result<LiveEnd, String> {
    let mut input_open = true;
    let pacing = !live.args.no_pacing;
    // Wall time before this drive (a debugger's pause) is not time the guest ran.
    if let Some(auto) = &mut live.auto {
        auto.pause(Instant::now());
    }
    loop {
        if console::signalled() {
            return Ok(LiveEnd::Signal);
        }
        if let Some(outcome) = live.handle_qmp()? {
            return Ok(outcome);
        }
        if live.stopped {
            // Stopped by QMP: nothing runs and guest time stands still until `cont`.
            if let Ok(event) = input.recv_timeout(Duration::from_millis(10)) {
                if let Some(outcome) = live.host_event(event) {
                    return Ok(outcome);
                }
            }
            if let Some(auto) = &mut live.auto {
                auto.pause(Instant::now());
            }
            continue;
        }
        live.adjust_shift()?;
        // Take what has been typed; the UART accepts what fits in its FIFO.
        while let Ok(event) = input.try_recv() {
            if let Some(outcome) = live.host_event(event) {
                return Ok(outcome);
            }
        }
        live.session.deliver().map_err(|e| e.to_string())?;
        let limit = live.limit();
        let stop = live.session.run(limit, SLICE);
        live.forward_output();
        live.forward_frames();
        live.flush_if_due()?;
        let fed = live.feed_entropy()?;
        let until = match stop {
            MachineStop::Slice => continue,
            // Entropy may wake the guest: run it before waiting.
            MachineStop::Idle { .. } if fed => continue,
            MachineStop::Limit if live.sync_if_due()? => continue,
            MachineStop::Limit if live.pause_at == Some(live.machine().hart.state.icount) => {
                return Ok(LiveEnd::Paused);
            }
            MachineStop::Idle { until } => until,
            other => return Ok(LiveEnd::Machine(other)),
        };
        let until = match (until, limit) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (None, Some(l)) => Some(l),
            (t, None) => t,
        };
        if live.session.typing_waits() {
            continue; // the FIFO has room again only once the guest reads: let it run
        }
        let now = live.machine().hart.state.icount;
        // How long the guest means to sleep, in wall time (pacing), or not at all.
        let machine = live.machine();
        let wait = match until {
            Some(t) if !pacing => {
                live.session.skip_idle(t);
                continue;
            }
            Some(t) => Some(Duration::from_nanos(
                machine.ns_at(t).saturating_sub(machine.ns_at(now)),
            )),
            None if !input_open => return Ok(LiveEnd::Deadlock),
            None => None,
        };
        let waited_from = Instant::now();
        // Wait in short steps, so that a signal is seen soon.
        let event = match wait {
            Some(d) => input.recv_timeout(d.min(POLL)),
            None => input.recv_timeout(POLL),
        };
        if let Err(RecvTimeoutError::Disconnected) = event {
            // No more input can come: keep the guest's pace without waiting on it.
            input_open = false;
            let step = wait.unwrap_or_default().min(POLL);
            std::thread::sleep(step.saturating_sub(waited_from.elapsed()));
        }
        // The guest's clock moves as far as the wall's did, up to its deadline.
        let machine = live.machine();
        let woken_ns = machine
            .ns_at(now)
            .saturating_add(waited_from.elapsed().as_nanos() as u64);
        let mut woken = machine.icount_at_ns(woken_ns);
        if machine.ns_at(woken) > woken_ns {
            woken -= 1; // the last instruction count not past the wall's time
        }
        live.session
            .skip_idle(until.map_or(woken, |t| t.min(woken)));
        // Input that arrived while the guest slept arrives at the virtual time that
        // corresponds to the wall time waited.
        if let Ok(event) = event {
            if let Some(outcome) = live.host_event(event) {
                return Ok(outcome);
            }
        }
    }
}
