//! `rewind`: the command line. Standard output carries only what the guest writes to its
//! console; every message of the tool goes to standard error.

mod console;
mod guest;

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, Parser, Subcommand};
use console::ConsoleEvent;
use rewind_machine::{BootImages, InputEvent, Machine, MachineConfig, Stop};

/// Exit status when `--max-insns` ends a run.
const EXIT_LIMIT: u8 = 124;
/// Exit status when the guest waits forever for an interrupt nothing can raise.
const EXIT_DEADLOCK: u8 = 125;
/// Exit status for errors of the tool itself (bad options, unusable files).
const EXIT_ERROR: u8 = 1;

#[derive(Parser)]
#[command(
    name = "rewind",
    version,
    about = "A RISC-V machine (QEMU virt compatible) whose runs are deterministic",
    long_about = "Rewind emulates an RV64GC machine laid out like QEMU's `virt` board. \
                  Guest time comes only from the instruction count, so a run is a pure \
                  function of its configuration, images and inputs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a machine live: the guest's console is on standard input and output. With no
    /// images given, boots the default Debian guest (fetch it with scripts/fetch-guest).
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Firmware: an OpenSBI fw_dynamic/fw_jump binary or ELF, loaded at the start of RAM;
    /// `none` starts the kernel itself in M-mode, as `qemu -bios none` does.
    /// [default: the default guest's OpenSBI]
    #[arg(long, value_name = "FILE|none")]
    bios: Option<String>,
    /// The kernel: a RISC-V Linux Image (Debian's EFI-stub Image too) or a RISC-V 64-bit ELF.
    /// [default: the default guest's kernel]
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// An initial RAM disk for the kernel. [default: the default guest's, with the default kernel]
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// Kernel command line, placed in the device tree's /chosen/bootargs.
    #[arg(long, value_name = "STRING")]
    append: Option<String>,
    /// Guest RAM size, in bytes or with a K, M or G suffix (as `-m` of QEMU).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// Write the device tree the guest would get to FILE and exit (as QEMU's `dumpdtb`).
    #[arg(long, value_name = "FILE")]
    dump_dtb: Option<PathBuf>,
    /// Stop after N instructions, with exit status 124.
    #[arg(long, value_name = "N")]
    max_insns: Option<u64>,
    /// Virtual nanoseconds per instruction are 2^N; `mtime` (10 MHz) follows from it.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    icount_shift: u32,
    /// Do not pace idle time to the wall clock: when the guest waits, jump to its next timer.
    #[arg(long)]
    no_pacing: bool,
    /// Log every access to device registers (MMIO) on standard error.
    #[arg(long)]
    trace_mmio: bool,
    /// Pin the RTC's start instead of reading the host clock: seconds since the Unix epoch,
    /// or a UTC date `YYYY-MM-DD[THH:MM:SS]`.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    rtc_base: Option<u64>,
    /// Pin the guest's entropy (the device tree's rng-seed) to bytes derived from N instead of
    /// the host's random source.
    #[arg(long, value_name = "N")]
    entropy_seed: Option<u64>,
    /// Print a hash of the final guest state (CPU, devices, RAM) on standard error at exit:
    /// runs that computed the same thing print the same hash.
    #[arg(long)]
    state_hash: bool,
    /// Print instructions executed, wall time and MIPS on standard error at exit.
    #[arg(long)]
    stats: bool,
}

/// Parses `512M`, `1G`, `65536`, `64K` into bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let value: u64 = digits.parse().map_err(|_| {
        format!("`{text}` is not a size: write a number with an optional K, M or G")
    })?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("unknown size suffix `{unit}`: use K, M or G")),
    };
    value
        .checked_shl(shift)
        .filter(|v| v >> shift == value)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses seconds since the epoch, or a UTC `YYYY-MM-DD[THH:MM:SS[Z]]`, into nanoseconds.
fn parse_time(text: &str) -> Result<u64, String> {
    let bad =
        || format!("`{text}` is not a time: give seconds since 1970 or YYYY-MM-DD[THH:MM:SS]");
    if let Ok(seconds) = text.parse::<u64>() {
        return seconds.checked_mul(1_000_000_000).ok_or_else(bad);
    }
    let text = text.trim_end_matches('Z');
    let (date, time) = text.split_once(['T', ' ']).unwrap_or((text, "00:00:00"));
    let numbers =
        |s: &str, sep: char| -> Option<Vec<i64>> { s.split(sep).map(|n| n.parse().ok()).collect() };
    let (Some(d), Some(t)) = (numbers(date, '-'), numbers(time, ':')) else {
        return Err(bad());
    };
    let (&[y, m, day], &[hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return Err(bad());
    };
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..61).contains(&ss)
    {
        return Err(bad());
    }
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + hh * 3600 + mm * 60 + ss) as u64) * 1_000_000_000)
}

/// 32 bytes of rng-seed from a number (splitmix64), for reproducible runs.
fn entropy_from_seed(seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..4)
        .flat_map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match run(&args) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("rewind: {message}");
                ExitCode::from(EXIT_ERROR)
            }
        },
    }
}

fn read_file(path: &PathBuf, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// The images and command line to boot, from the options or the default guest.
fn boot_images(args: &RunArgs) -> Result<(BootImages, Option<String>), String> {
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
        },
        args.append.clone(),
    ))
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

fn run(args: &RunArgs) -> Result<ExitCode, String> {
    let (images, append) = boot_images(args)?;
    let rtc_base_ns = args.rtc_base.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let config = MachineConfig {
        ram_size: args.memory,
        bootargs: append,
        icount_shift: args.icount_shift,
        rtc_base_ns,
        rng_seed: args
            .entropy_seed
            .map_or_else(host_entropy, entropy_from_seed),
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config, &images).map_err(|e| e.to_string())?;
    machine.bus.trace = args.trace_mmio;
    if let Some(path) = &args.dump_dtb {
        std::fs::write(path, machine.dtb())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }

    let raw = console::RawTerminal::enable();
    let input = console::spawn_reader(raw.is_some());
    let started = Instant::now();
    let stop = loop {
        match drive(&mut machine, args, &input) {
            // A reboot starts the board afresh from the same images, as QEMU's reset does.
            Outcome::Stopped(Stop::Reset) => {
                // The RTC keeps counting across the reset.
                let elapsed_ns = machine.ns_at(machine.hart.icount);
                let config = MachineConfig {
                    rtc_base_ns: machine.bus.rtc.state.base_ns.wrapping_add(elapsed_ns),
                    ..machine.config.clone()
                };
                machine = Machine::new(config, &images).map_err(|e| e.to_string())?;
                machine.bus.trace = args.trace_mmio;
            }
            outcome => break outcome,
        }
    };
    drop(raw);
    let elapsed = started.elapsed();
    if args.stats {
        let insns = machine.executed();
        let secs = elapsed.as_secs_f64();
        eprintln!("instructions: {insns}");
        eprintln!(
            "virtual time: {:.6} s",
            machine.ns_at(machine.hart.icount) as f64 / 1e9
        );
        eprintln!("wall time: {secs:.3} s");
        eprintln!("MIPS: {:.1}", insns as f64 / secs.max(1e-9) / 1e6);
    }
    if args.state_hash {
        eprintln!("state hash: {:016x}", machine.state_hash());
    }
    Ok(match stop {
        Outcome::Stopped(Stop::PowerOff(code)) => ExitCode::from(code as u8),
        Outcome::Stopped(Stop::Limit) => {
            eprintln!(
                "rewind: stopped after --max-insns {} instructions (pc {:#x}, {}-mode)",
                machine.hart.icount,
                machine.hart.pc,
                machine.hart.privilege_name()
            );
            ExitCode::from(EXIT_LIMIT)
        }
        Outcome::Quit => {
            eprintln!("rewind: terminated (Ctrl-A x)");
            ExitCode::SUCCESS
        }
        Outcome::Deadlock | Outcome::Stopped(_) => {
            eprintln!(
                "rewind: the hart waits for an interrupt that nothing can raise (pc {:#x}); stopping",
                machine.hart.pc
            );
            ExitCode::from(EXIT_DEADLOCK)
        }
    })
}

enum Outcome {
    Stopped(Stop),
    Quit,
    Deadlock,
}

/// Instructions run between looks at the console.
const SLICE: u64 = 1 << 20;

/// Runs the machine live: console output to stdout, input from the reader thread, and idle
/// time paced to the wall clock unless `--no-pacing`.
fn drive(machine: &mut Machine, args: &RunArgs, input: &Receiver<ConsoleEvent>) -> Outcome {
    let stdout = std::io::stdout();
    let mut pending: VecDeque<u8> = VecDeque::new();
    let mut input_open = true;
    loop {
        // Take what has been typed; the UART accepts what fits in its FIFO.
        while let Ok(event) = input.try_recv() {
            match event {
                ConsoleEvent::Input(bytes) => pending.extend(bytes),
                ConsoleEvent::Quit => return Outcome::Quit,
            }
        }
        let room = machine.console_room().min(pending.len());
        if room > 0 {
            machine.inject(&InputEvent::Console(pending.drain(..room).collect()));
        }
        let stop = machine.run(args.max_insns, SLICE);
        let out = machine.take_console_output();
        if !out.is_empty() {
            let mut lock = stdout.lock();
            // A closed standard output must not stop the guest: it may still power off cleanly.
            let _ = lock.write_all(&out).and_then(|_| lock.flush());
        }
        let until = match stop {
            Stop::Slice => continue,
            Stop::Idle { until } => until,
            other => return Outcome::Stopped(other),
        };
        let until = match (until, args.max_insns) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (None, Some(l)) => Some(l),
            (t, None) => t,
        };
        if !pending.is_empty() {
            continue; // the FIFO has room again only once the guest reads: let it run
        }
        let now = machine.hart.icount;
        // How long the guest means to sleep, in wall time (pacing), or not at all.
        let wait = match until {
            Some(t) if args.no_pacing => {
                machine.skip_idle(t);
                continue;
            }
            Some(t) => Some(Duration::from_nanos(
                machine.ns_at(t).saturating_sub(machine.ns_at(now)),
            )),
            None if !input_open => return Outcome::Deadlock,
            None => None,
        };
        let waited_from = Instant::now();
        let event = match wait {
            Some(d) => input.recv_timeout(d),
            None => input.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(ConsoleEvent::Input(bytes)) => {
                // Input arrived while the guest slept: it arrives at the virtual time that
                // corresponds to the wall time waited.
                let slept_ns = waited_from.elapsed().as_nanos() as u64;
                let slept = slept_ns >> machine.config.icount_shift;
                let target = until.map_or(now + slept, |t| t.min(now + slept));
                machine.skip_idle(target);
                pending.extend(bytes);
            }
            Ok(ConsoleEvent::Quit) => return Outcome::Quit,
            Err(RecvTimeoutError::Timeout) => machine.skip_idle(until.unwrap_or(now)),
            Err(RecvTimeoutError::Disconnected) => {
                input_open = false;
                if let Some(t) = until {
                    // No more input can come: keep the guest's pace without waiting on it.
                    let remaining = wait
                        .unwrap_or_default()
                        .saturating_sub(waited_from.elapsed());
                    std::thread::sleep(remaining);
                    machine.skip_idle(t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn times() {
        use super::parse_time;
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(
            parse_time("2000-03-01T00:00:00Z"),
            Ok(951_868_800_000_000_000)
        );
        assert_eq!(
            parse_time("2026-11-28T19:30:00"),
            Ok(1_795_894_200_000_000_000)
        );
        assert!(parse_time("2026-13-01").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn entropy_seeds_are_reproducible_and_distinct() {
        use super::entropy_from_seed;
        assert_eq!(entropy_from_seed(7), entropy_from_seed(7));
        assert_ne!(entropy_from_seed(7), entropy_from_seed(8));
        assert_eq!(entropy_from_seed(7).len(), 32);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
