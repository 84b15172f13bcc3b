//! `rewind replay` and `rewind inspect`: a recording replayed from the file alone, checked
//! against its sync points, or described.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use rewind_machine::{BootImages, Machine, Stop};
use rewind_replay::{EndReason, Item, Recording};
use serde_json::json;
use xxhash_rust::xxh3::Xxh3;

use crate::{InspectArgs, ReplayArgs, EXIT_CUT, EXIT_DIVERGED};

/// Instructions run between writes of console output.
const SLICE: u64 = 1 << 22;

/// A change to the replayed state, for testing divergence detection.
enum Perturbation {
    Register(usize),
    Pc,
    Ram(u64),
}

fn parse_perturbation(text: &str) -> Result<(u64, Perturbation), String> {
    let bad = || format!("--perturb `{text}`: give ICOUNT:xN, ICOUNT:pc or ICOUNT:ram:ADDR");
    let (icount, what) = text.split_once(':').ok_or_else(bad)?;
    let icount = icount.parse().map_err(|_| bad())?;
    let what = if what == "pc" {
        Perturbation::Pc
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
        Perturbation::Register(n)
    };
    Ok((icount, what))
}

/// Why a replay could not go on.
enum Failure {
    /// The replayed machine stopped matching the recording.
    Diverged(String),
    /// The machine could not be rebuilt (a reset with bad images).
    Error(String),
}

/// The replayed machine and its console.
struct Replayer {
    machine: Machine,
    images: BootImages,
    console_hash: Xxh3,
    console_bytes: u64,
}

impl Replayer {
    fn forward_output(&mut self) {
        let out = self.machine.take_console_output();
        if out.is_empty() {
            return;
        }
        self.console_hash.update(&out);
        self.console_bytes += out.len() as u64;
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        let _ = lock.write_all(&out).and_then(|_| lock.flush());
    }

    /// Runs to instruction count `target` exactly, as the recorded run did: idle time is
    /// skipped, resets rebuild the board. Returns the guest's power-off status if it powered
    /// off on the way (only legitimate exactly at `target`).
    fn advance(&mut self, target: u64) -> Result<Option<u16>, Failure> {
        loop {
            let stop = self.machine.run(Some(target), SLICE);
            self.forward_output();
            match stop {
                Stop::Limit => return Ok(None),
                Stop::Slice => {}
                Stop::Idle { until } => {
                    let t = until.map_or(target, |u| u.min(target));
                    self.machine.skip_idle(t);
                }
                Stop::Reset => self
                    .machine
                    .reset(&self.images)
                    .map_err(|e| Failure::Error(e.to_string()))?,
                Stop::PowerOff(code) => {
                    if self.machine.hart.icount != target {
                        return Err(Failure::Diverged(format!(
                            "the guest powered off at instruction {}, but the recording goes on to {target}",
                            self.machine.hart.icount
                        )));
                    }
                    return Ok(Some(code));
                }
            }
        }
    }

    fn perturb(&mut self, what: &Perturbation) {
        let hart = &mut self.machine.hart;
        match *what {
            Perturbation::Register(n) => hart.x[n] ^= 1,
            Perturbation::Pc => hart.pc = hart.pc.wrapping_add(4),
            Perturbation::Ram(addr) => {
                let mut byte = [0u8];
                if self.machine.ram.read(addr, &mut byte).is_some() {
                    let _ = self.machine.ram.write(addr, &[byte[0] ^ 1]);
                }
            }
        }
        eprintln!(
            "rewind: testing: perturbed the replay at instruction {}",
            self.machine.hart.icount
        );
    }
}

/// `rewind replay FILE`.
pub fn replay(args: &ReplayArgs) -> Result<ExitCode, String> {
    let mut perturbation = args
        .perturb
        .as_deref()
        .map(parse_perturbation)
        .transpose()?;
    // Everything is read and checked before the first instruction: a bad file prints nothing.
    let recording = Recording::open(&args.file).map_err(|e| e.to_string())?;
    let image = |name| recording.image(name).map_err(|e| e.to_string());
    let images = BootImages {
        bios: image("bios")?,
        kernel: image("kernel")?,
        initrd: image("initrd")?,
        dtb: image("dtb")?,
    };
    let machine = Machine::new(recording.manifest.machine.clone(), &images)
        .map_err(|e| format!("the recorded machine cannot be rebuilt: {e}"))?;
    let mut replayer = Replayer {
        machine,
        images,
        console_hash: Xxh3::new(),
        console_bytes: 0,
    };
    let started = Instant::now();
    let result = replay_timeline(&recording, &mut replayer, &mut perturbation);
    let machine = &mut replayer.machine;
    if args.stats {
        crate::live::print_stats(machine, started.elapsed());
    }
    if args.state_hash {
        eprintln!("state hash: {:016x}", machine.state_hash());
    }
    match result {
        Ok(()) => {}
        Err(Failure::Diverged(what)) => {
            eprintln!("rewind: {what}");
            return Ok(ExitCode::from(EXIT_DIVERGED));
        }
        Err(Failure::Error(message)) => return Err(message),
    }
    match (&recording.end, recording.cut_at) {
        (Some(end), _) => {
            eprintln!(
                "rewind: replay complete: {} instructions, {} sync points matched; {}",
                end.icount,
                recording.sync_points(),
                end.reason.describe()
            );
            Ok(ExitCode::SUCCESS)
        }
        (None, cut_at) => {
            eprintln!(
                "rewind: the recording was cut at byte {} (its recorder was killed?): \
                 replayed up to instruction {}, its last whole chunk",
                cut_at.unwrap_or(recording.file_bytes),
                recording.known_until
            );
            Ok(ExitCode::from(EXIT_CUT))
        }
    }
}

fn replay_timeline(
    recording: &Recording,
    replayer: &mut Replayer,
    perturbation: &mut Option<(u64, Perturbation)>,
) -> Result<(), Failure> {
    let powered_off = |icount: u64| {
        Failure::Diverged(format!(
            "the guest powered off at instruction {icount}, before the recording's end"
        ))
    };
    let mut perturb_before = |replayer: &mut Replayer, icount: u64| -> Result<(), Failure> {
        if let Some((at, what)) = perturbation.take_if(|(at, _)| *at <= icount) {
            if replayer.advance(at)?.is_some() {
                return Err(powered_off(at));
            }
            replayer.perturb(&what);
        }
        Ok(())
    };
    let mut off_at = None;
    for entry in &recording.timeline {
        perturb_before(replayer, entry.icount)?;
        if off_at.is_none() {
            off_at = replayer.advance(entry.icount)?.map(|_| entry.icount);
        }
        match &entry.item {
            Item::Event(event) => {
                if off_at.is_some() {
                    return Err(powered_off(entry.icount));
                }
                replayer.machine.inject(event);
            }
            Item::Sync(expected) => {
                let found = replayer.machine.digest();
                if found != **expected {
                    let mut report = format!(
                        "the replay diverged from the recording: the state at the sync point at \
                         instruction {} differs:",
                        expected.icount
                    );
                    for line in expected.differences(&found) {
                        report.push_str("\n  ");
                        report.push_str(&line);
                    }
                    return Err(Failure::Diverged(report));
                }
            }
        }
    }
    let Some(end) = &recording.end else {
        perturb_before(replayer, recording.known_until)?;
        if off_at.is_none() && replayer.advance(recording.known_until)?.is_some() {
            return Err(powered_off(recording.known_until));
        }
        return Ok(());
    };
    perturb_before(replayer, end.icount)?;
    let powered_off_at_end = off_at.is_some() || replayer.advance(end.icount)?.is_some();
    match (end.reason, powered_off_at_end) {
        (EndReason::PowerOff(_), false) => {
            return Err(Failure::Diverged(format!(
                "the recorded guest powered off at instruction {}, the replayed one did not",
                end.icount
            )))
        }
        (reason, true) if !matches!(reason, EndReason::PowerOff(_)) => {
            return Err(Failure::Diverged(format!(
                "the replayed guest powered off at instruction {}, where the recording ended \
                 because {}",
                end.icount,
                reason.describe()
            )))
        }
        _ => {}
    }
    if (replayer.console_bytes, replayer.console_hash.digest())
        != (end.console_bytes, end.console_hash)
    {
        return Err(Failure::Diverged(format!(
            "the console output differs from the recording's ({} bytes replayed, {} recorded)",
            replayer.console_bytes, end.console_bytes
        )));
    }
    Ok(())
}

/// `rewind inspect FILE [--json]`.
pub fn inspect(args: &InspectArgs) -> Result<ExitCode, String> {
    let recording = Recording::open(&args.file).map_err(|e| e.to_string())?;
    let manifest = &recording.manifest;
    let instructions = recording
        .end
        .as_ref()
        .map_or(recording.known_until, |e| e.icount);
    let virtual_ns = instructions
        .checked_shl(manifest.machine.icount_shift)
        .unwrap_or(u64::MAX);
    let counts = recording.event_counts();
    if args.json {
        let value = json!({
            "format_version": recording.format_version,
            "tool": manifest.tool,
            "instructions": instructions,
            "executed": recording.end.as_ref().map(|e| e.executed),
            "virtual_ns": virtual_ns,
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
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values always print")
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("recording:     {}", args.file.display());
    println!(
        "format:        version {}, written by {}",
        recording.format_version, manifest.tool
    );
    let m = &manifest.machine;
    println!(
        "machine:       virt, {} MiB RAM at {:#x}, icount shift {}",
        m.ram_size >> 20,
        m.ram_base,
        m.icount_shift
    );
    if let Some(args) = &m.bootargs {
        println!("command line:  {args}");
    }
    for image in &manifest.images {
        println!(
            "image:         {:<7} {:>10} bytes  sha256 {}",
            image.name, image.size, image.sha256
        );
    }
    println!(
        "instructions:  {instructions} ({:.3} s of virtual time)",
        virtual_ns as f64 / 1e9
    );
    let events: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "events:        {} ({} bytes in the file)",
        if events.is_empty() {
            "none".to_string()
        } else {
            events.join(", ")
        },
        recording.event_bytes
    );
    println!(
        "sync points:   {} ({} bytes)",
        recording.sync_points(),
        recording.sync_bytes
    );
    match (&recording.end, recording.cut_at) {
        (Some(end), _) => println!("end:           {}", end.reason.describe()),
        (None, cut) => println!(
            "end:           none: the file was cut at byte {} (its recorder was killed?)",
            cut.unwrap_or(recording.file_bytes)
        ),
    }
    Ok(ExitCode::SUCCESS)
}
