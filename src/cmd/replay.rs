//! `rewind replay` and `rewind inspect`: a recording replayed from the file alone, checked
//! against its sync points, or described.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use rewind_cpu::HartState;
use rewind_machine::Machine;
use rewind_replay::{EndReason, PlayError, Player, Recording};
use serde_json::json;
use xxhash_rust::xxh3::Xxh3;

use crate::{DebugArgs, InspectArgs, ReplayArgs, EXIT_CUT, EXIT_DIVERGED};

/// Instructions replayed between writes of console output.
const PRINT_EVERY: u64 = 1 << 24;

/// A change to the replayed state, for testing divergence detection.
enum Perturbation {
    /// Register x`N` of hart `hart`.
    Register {
        hart: u64,
        n: usize,
    },
    Pc {
        hart: u64,
    },
    Ram(u64),
}

fn parse_perturbation(text: &str) -> Result<(u64, Perturbation), String> {
    let bad = || {
        format!("--perturb `{text}`: give ICOUNT:[hartH:]xN, ICOUNT:[hartH:]pc or ICOUNT:ram:ADDR")
    };
    let (icount, what) = text.split_once(':').ok_or_else(bad)?;
    let icount = icount.parse().map_err(|_| bad())?;
    let (hart, what) = match what.strip_prefix("hart").and_then(|w| w.split_once(':')) {
        Some((id, what)) => (id.parse().map_err(|_| bad())?, what),
        None => (0, what),
    };
    let what = if what == "pc" {
        Perturbation::Pc { hart }
    } else if let Some(addr) = what.strip_prefix("ram:") {
        let addr = addr.trim_start_matches("0x");
        Perturbation::Ram(u64::from_str_radix(addr, 16).map_err(|_| bad())?)
    } else {
        let n: usize = what
            .strip_prefix('x')
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        if !(1..32).contains(&n) {
            return Err(bad());
        }
        Perturbation::Register { hart, n }
    };
    Ok((icount, what))
}

fn perturb(machine: &mut Machine, what: &Perturbation) -> Result<(), String> {
    fn hart(machine: &mut Machine, id: u64) -> Result<&mut HartState, String> {
        let harts = machine.hart_count();
        machine
            .hart_by_id_mut(id)
            .map(|hart| &mut hart.state)
            .ok_or_else(|| format!("--perturb: the board has no hart {id} (it has {harts})"))
    }
    match *what {
        Perturbation::Register { hart: id, n } => hart(machine, id)?.x[n] ^= 1,
        Perturbation::Pc { hart: id } => {
            let state = hart(machine, id)?;
            state.pc = state.pc.wrapping_add(4);
        }
        Perturbation::Ram(addr) => {
            let mut byte = [0u8];
            if machine.ram.read(addr, &mut byte).is_some() {
                let _ = machine.ram.write(addr, &[byte[0] ^ 1]);
            }
        }
    }
    eprintln!(
        "rewind: testing: perturbed the replay at instruction {}",
        machine.hart.state.icount
    );
    Ok(())
}

/// Writes the guest's console output to standard output, keeping count and hash.
struct ConsoleOut {
    hash: Xxh3,
    bytes: u64,
}

impl ConsoleOut {
    fn write(&mut self, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        self.hash.update(out);
        self.bytes += out.len() as u64;
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        let _ = lock.write_all(out).and_then(|_| lock.flush());
    }
}

/// `rewind replay FILE`.
pub fn replay(args: &ReplayArgs) -> Result<ExitCode, String> {
    if args.chaos.is_some() {
        return Err(
            "--chaos is for run and record: a replay follows the recorded schedule, \
                    chaos seed included (`rewind inspect` shows it)"
                .into(),
        );
    }
    let perturbation = args
        .perturb
        .as_deref()
        .map(parse_perturbation)
        .transpose()?;
    // Everything is read and checked before the first instruction: a bad file prints nothing.
    let recording = Recording::open(&args.file).map_err(|e| e.to_string())?;
    let mut player = Player::new(&recording, &args.drives)?;
    let mut console = ConsoleOut {
        hash: Xxh3::new(),
        bytes: 0,
    };
    let mut qmp = args
        .qmp
        .as_deref()
        .map(crate::host::qmp::listen)
        .transpose()?
        .map(|requests| QmpControl {
            requests,
            stopped: false,
        });
    let started = Instant::now();
    let result = play_all(
        &mut player,
        &mut console,
        perturbation.as_ref(),
        &recording,
        qmp.as_mut(),
    );
    let machine = &mut player.machine;
    machine.save_disks(&args.disk_out)?;
    if args.stats {
        crate::cmd::live::print_stats(machine, started.elapsed());
    }
    if args.state_hash {
        eprintln!("state hash: {:016x}", machine.state_hash());
    }
    match result {
        Ok(()) => {}
        Err(PlayError::Diverged(what)) => {
            eprintln!("rewind: {what}");
            return Ok(ExitCode::from(EXIT_DIVERGED));
        }
        Err(PlayError::Machine(message)) => return Err(message),
    }
    if let Some(at) = quit_at(&player, &recording) {
        eprintln!("rewind: replay ended by QMP quit at instruction {at}");
        return Ok(ExitCode::SUCCESS);
    }
    match &recording.end {
        Some(end) => {
            eprintln!(
                "rewind: replay complete at position {} ({} instructions executed), {} sync \
                 points matched; {}",
                end.icount,
                end.executed,
                recording.sync_points(),
                end.reason.describe()
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "rewind: the recording was cut at byte {} (its recorder was killed?): \
                 replayed up to instruction {}, its last whole chunk",
                recording.cut_at.unwrap_or(recording.file_bytes),
                recording.known_until
            );
            Ok(ExitCode::from(EXIT_CUT))
        }
    }
}

/// QMP on a replay: status, stop and cont (the replay pauses), query-replay, quit.
struct QmpControl {
    requests: std::sync::mpsc::Receiver<crate::host::qmp::Request>,
    stopped: bool,
}

impl QmpControl {
    /// Answers what arrived, waiting while stopped; returns whether `quit` came.
    fn serve(&mut self, icount: u64) -> bool {
        loop {
            let wait = std::time::Duration::from_millis(if self.stopped { 50 } else { 0 });
            let request = match self.requests.recv_timeout(wait) {
                Ok(request) => request,
                Err(_) if self.stopped && !crate::host::console::signalled() => continue,
                Err(_) => return false,
            };
            let status = crate::host::qmp::Status {
                mode: "play",
                icount,
                stopped: &mut self.stopped,
                has_keyboard: false,
            };
            let (answer, action) = crate::host::qmp::execute(&request, status);
            if let crate::host::qmp::Action::Quit = action {
                request.answer_and_wait(answer);
                return true;
            }
            let _ = request.reply.send(answer);
        }
    }
}

/// Where a replay stopped early for QMP `quit`, if it did.
fn quit_at(player: &Player, recording: &Recording) -> Option<u64> {
    let at = player.icount();
    let ended = player.powered_off() || at >= player.end;
    (!ended && recording.end.is_some()).then_some(at)
}

/// Plays the whole recording in slices, printing the console as it comes, and checks the end.
fn play_all(
    player: &mut Player,
    console: &mut ConsoleOut,
    perturbation: Option<&(u64, Perturbation)>,
    recording: &Recording,
    mut qmp: Option<&mut QmpControl>,
) -> Result<(), PlayError> {
    if let Some((at, what)) = perturbation.filter(|(at, _)| *at <= player.end) {
        player.play_to_before(*at)?;
        console.write(&player.take_output());
        perturb(&mut player.machine, what).map_err(PlayError::Machine)?;
    }
    // In steps, so that output appears as the replay goes.
    while player.icount() < player.end {
        let step = player.icount().saturating_add(PRINT_EVERY).min(player.end);
        player.play_to(step)?;
        console.write(&player.take_output());
        if player.powered_off() {
            break;
        }
        if qmp.as_mut().is_some_and(|q| q.serve(player.icount())) {
            return Ok(());
        }
    }
    player.play_to(player.end)?;
    console.write(&player.take_output());
    let Some(end) = &recording.end else {
        return Ok(());
    };
    let recorded_off = matches!(end.reason, EndReason::PowerOff(_));
    if recorded_off && !player.powered_off() {
        return Err(PlayError::Diverged(format!(
            "the recorded guest powered off at instruction {}, the replayed one did not",
            end.icount
        )));
    }
    if (console.bytes, console.hash.digest()) != (end.console_bytes, end.console_hash) {
        return Err(PlayError::Diverged(format!(
            "the console output differs from the recording's ({} bytes replayed, {} recorded)",
            console.bytes, end.console_bytes
        )));
    }
    Ok(())
}

/// Writes `text` to standard output; a reader that went away is not an error.
pub fn print_stdout(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// `rewind inspect FILE [--json]`.
pub fn inspect(args: &InspectArgs) -> Result<ExitCode, String> {
    let recording = Recording::open(&args.file).map_err(|e| e.to_string())?;
    // Everything goes out in one write at the end: a reader that stops early (`| head`)
    // is no error.
    let mut out = String::new();
    macro_rules! say {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    let manifest = &recording.manifest;
    // The position is the timeline's clock (instructions plus the time skipped while the guest
    // slept); `executed` counts only the instructions run.
    let position = recording
        .end
        .as_ref()
        .map_or(recording.known_until, |e| e.icount);
    let executed = recording.end.as_ref().map(|e| e.executed);
    let clock = recording.clock_at(position);
    let virtual_ns = clock.ns_at(position);
    let counts = recording.event_counts();
    if args.json {
        let value = json!({
            "format_version": recording.format_version,
            "tool": manifest.tool,
            "position": position,
            "executed": executed,
            "virtual_ns": virtual_ns,
            "icount_shift": clock.shift,
            "events": counts,
            "event_bytes": recording.event_bytes,
            "sync_points": recording.sync_points(),
            "sync_bytes": recording.sync_bytes,
            "image_bytes": recording.image_bytes,
            "file_bytes": recording.file_bytes,
            "images": manifest.images,
            "machine": manifest.machine,
            "end": recording.end.as_ref().map(|e| json!({
                "reason": e.reason.describe(),
                "console_bytes": e.console_bytes,
            })),
            "complete": recording.end.is_some(),
            "cut_at": recording.cut_at.filter(|_| recording.end.is_none()),
        });
        say!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values always print")
        );
        print_stdout(&out);
        return Ok(ExitCode::SUCCESS);
    }
    say!("recording:     {}", args.file.display());
    say!(
        "format:        version {}, written by {}",
        recording.format_version,
        manifest.tool
    );
    let m = &manifest.machine;
    let shift = if m.icount_auto {
        format!(
            "auto (started at {}, {} at the end)",
            m.icount_shift, clock.shift
        )
    } else {
        m.icount_shift.to_string()
    };
    say!(
        "machine:       virt, {} MiB RAM at {:#x}, icount shift {shift}",
        m.ram_size >> 20,
        m.ram_base,
    );
    if m.harts > 1 {
        let schedule = match m.chaos {
            Some(seed) => format!("chaos mode, seed {seed}"),
            None => "fixed".to_string(),
        };
        say!(
            "harts:         {}, in turns of {} instructions ({schedule})",
            m.harts,
            m.quantum
        );
    }
    if let Some(args) = &m.bootargs {
        say!("command line:  {args}");
    }
    for image in &manifest.images {
        say!(
            "image:         {:<7} {:>10} bytes  sha256 {}",
            image.name,
            image.size,
            image.sha256
        );
    }
    say!(
        "position:      {position} ({:.3} s of virtual time)",
        virtual_ns as f64 / 1e9
    );
    if let Some(executed) = executed {
        say!("executed:      {executed} instructions");
    }
    let events: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    say!(
        "events:        {} ({} bytes in the file)",
        if events.is_empty() {
            "none".to_string()
        } else {
            events.join(", ")
        },
        recording.event_bytes
    );
    say!(
        "sync points:   {} ({} bytes)",
        recording.sync_points(),
        recording.sync_bytes
    );
    match (&recording.end, recording.cut_at) {
        (Some(end), _) => say!("end:           {}", end.reason.describe()),
        (None, cut) => say!(
            "end:           none: the file was cut at byte {} (its recorder was killed?)",
            cut.unwrap_or(recording.file_bytes)
        ),
    }
    print_stdout(&out);
    Ok(ExitCode::SUCCESS)
}

/// `rewind debug FILE --gdb HOST:PORT`.
pub fn debug(args: &DebugArgs) -> Result<ExitCode, String> {
    let recording = Recording::open(&args.file).map_err(|e| e.to_string())?;
    let player = Player::new(&recording, &args.drives)?;
    let listener = std::net::TcpListener::bind(&args.gdb)
        .map_err(|e| format!("cannot listen on {} for gdb: {e}", args.gdb))?;
    eprintln!(
        "rewind: serving {} (positions 0 to {}) to gdb on {}: `target remote {}`",
        args.file.display(),
        player.end,
        args.gdb,
        args.gdb
    );
    let mut target = rewind_debug::DebugTarget::replay(player, args.checkpoint_mem);
    rewind_debug::serve(&mut target, &listener)?;
    Ok(ExitCode::SUCCESS)
}

/// gdb commands for `rewind debug`: monitor commands that move the target, followed by
/// flushing gdb's caches (gdb cannot know a monitor command moved it).
pub const GDBINIT: &str = include_str!("rewind.gdb");
