//! `rewind`: the command line. Standard output carries only what the guest writes to its
//! console; every message of the tool goes to standard error.

mod cmd;
mod guest;
mod host;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rewind_cpu::Engine;

/// Exit status when `--max-insns` ends a run.
const EXIT_LIMIT: u8 = 124;
/// Exit status when the guest waits forever for an interrupt nothing can raise.
const EXIT_DEADLOCK: u8 = 125;
/// Exit status for errors of the tool itself (bad options, unusable files, bad recordings).
const EXIT_ERROR: u8 = 1;
/// Exit status when a replay stops matching its recording.
const EXIT_DIVERGED: u8 = 3;
/// Exit status when a replay reached the end of a recording that was cut short.
const EXIT_CUT: u8 = 4;

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
    /// How guest code runs: `jit` compiles hot code to host code (x86-64 hosts), `interp`
    /// interprets every instruction. Both compute exactly the same thing, so a recording made
    /// with one replays with the other. [default: jit where the host supports it]
    #[arg(long, global = true, value_name = "interp|jit", value_parser = parse_engine)]
    engine: Option<Engine>,
}

fn parse_engine(s: &str) -> Result<Engine, String> {
    let engine = match s {
        "interp" => Engine::Interp,
        "jit" => Engine::Jit,
        _ => return Err("expected `interp` or `jit`".into()),
    };
    engine.check_host().map_err(|e| e.to_string())?;
    Ok(engine)
}

#[derive(Subcommand)]
enum Command {
    /// Run a machine live: the guest's console is on standard input and output. With no
    /// images given, boots the default Debian guest (fetch it with scripts/fetch-guest).
    Run(RunArgs),
    /// Run a machine live, as `run` does, and record everything that enters it into FILE,
    /// so that `rewind replay FILE` reproduces the run exactly.
    Record(RecordArgs),
    /// Replay a recording: print exactly the console output of the recorded run, checking the
    /// machine's state against the recording's sync points. Needs nothing but the file.
    /// Exit status: 0 at the end without divergence, 3 on divergence, 4 when the recording
    /// was cut short (its recorder was killed), 1 for an unusable file.
    Replay(ReplayArgs),
    /// Describe a recording: the machine, the images, the instruction count, the events.
    Inspect(InspectArgs),
    /// Serve a recording to gdb (the GDB remote protocol), stopped at instruction 0, with
    /// reverse execution: `target remote HOST:PORT` in gdb-multiarch, then stepi,
    /// reverse-stepi, continue, reverse-continue, breakpoints, and `monitor help`.
    Debug(DebugArgs),
    /// Print a gdb command file defining `seek`, `icount`, `when` and `last-write` for use with
    /// `rewind debug` (`rewind gdbinit > rewind.gdb`, then `source rewind.gdb` in gdb).
    Gdbinit,
}

#[derive(Args)]
struct DebugArgs {
    /// A recording written by `rewind record`.
    file: PathBuf,
    /// Where the recorded disk images are, in order, if not at their recorded paths.
    #[arg(long = "drive", value_name = "FILE")]
    drives: Vec<PathBuf>,
    /// Where to listen for gdb. Loopback unless told otherwise.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1234")]
    gdb: String,
    /// Memory the automatic checkpoints may hold (RAM pages and disk overlay blocks), with a K, M or G suffix.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    checkpoint_mem: u64,
}

#[derive(Args)]
struct RecordArgs {
    /// The recording to write (replaced if it exists).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// At the end, write each disk as the guest left it (the image with the recording's
    /// changes) to a new raw image, in --drive order.
    #[arg(long = "disk-out", value_name = "FILE")]
    disk_out: Vec<PathBuf>,
    /// Instructions between sync points (state hashes that let a replay detect divergence).
    #[arg(long, value_name = "N", default_value_t = 1 << 28, value_parser = clap::value_parser!(u64).range(1..))]
    sync_every: u64,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct ReplayArgs {
    /// A recording written by `rewind record`.
    file: PathBuf,
    /// Where the recorded disk images are, in order, if not at their recorded paths.
    #[arg(long = "drive", value_name = "FILE")]
    drives: Vec<PathBuf>,
    /// At the end, write each disk as the guest left it to a new raw image, in order.
    #[arg(long = "disk-out", value_name = "FILE")]
    disk_out: Vec<PathBuf>,
    /// Print a hash of the final guest state on standard error (as `run --state-hash`).
    #[arg(long)]
    state_hash: bool,
    /// Print instructions executed, wall time and MIPS on standard error at exit.
    #[arg(long)]
    stats: bool,
    /// Serve QMP on `unix:PATH` or `tcp:HOST:PORT` (loopback) during the replay: query-status,
    /// stop and cont (pause the replay), query-replay (mode `play`, instruction count), quit.
    #[arg(long, value_name = "unix:PATH|tcp:HOST:PORT")]
    qmp: Option<String>,
    /// Testing only: at instruction ICOUNT, disturb the replayed state (`xN` flips bit 0 of
    /// register N, `pc` moves the pc by 4 bytes, `ram:ADDR` flips bit 0 of the byte at ADDR).
    #[arg(long, value_name = "ICOUNT:WHAT", hide = true)]
    perturb: Option<String>,
    /// Refused with a message: the recording has the schedule (and its chaos seed).
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true)]
    chaos: Option<Option<String>>,
}

#[derive(Args)]
struct InspectArgs {
    /// A recording written by `rewind record`.
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
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
    /// A disk on virtio-blk (repeatable): a raw or qcow2 image (found from the file unless
    /// `format=` says; qcow2 compressed clusters are read, a backing file, an external data
    /// file or encryption is refused). A plain run writes to it unless `readonly=on`; a
    /// recording never does (writes go to an overlay, so the recording replays on the same
    /// image).
    #[arg(long = "drive", value_name = "FILE[,format=raw|qcow2][,readonly=on]", value_parser = parse_drive)]
    drives: Vec<DriveSpec>,
    /// Add a device in a virtio-mmio slot (repeatable): `virtio-rng` (entropy from the
    /// host), `virtio-keyboard`, `virtio-tablet` or `virtio-mouse` (fed by QMP's
    /// input-send-event); what they give the guest is recorded like every input.
    #[arg(long = "device", value_name = "NAME", value_parser = parse_device)]
    devices: Vec<rewind_machine::DeviceKind>,
    /// A network card (virtio-net) on a host backend (repeatable), in QEMU's -netdev syntax:
    /// `user[,hostfwd=tcp::HOSTPORT-:GUESTPORT]` (user-mode network: the guest is 10.0.2.15,
    /// the host 10.0.2.2, DNS 10.0.2.3, DHCP), `stream,server=on|off,addr.type=inet,addr.host=H,addr.port=P`
    /// (or addr.type=unix,addr.path=PATH), or `dgram,remote.type=inet,remote.host=H,remote.port=P[,local.…]`.
    /// Frames entering the guest are recorded; a replay opens no backend.
    #[arg(long = "netdev", value_name = "user|stream,…|dgram,…", value_parser = host::net::parse_netdev)]
    netdevs: Vec<host::net::NetdevSpec>,
    /// Harts on the board, numbered from 0 (as `-smp` of QEMU). One host thread runs them in
    /// turn, so a run stays a pure function of its inputs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    smp: u32,
    /// With several harts: instructions each hart runs in its turn, unless it waits (WFI)
    /// first.
    #[arg(long, value_name = "N", default_value_t = rewind_machine::DEFAULT_QUANTUM)]
    quantum: u64,
    /// Chaos mode, with several harts: draw from SEED which hart runs next, how long its turn
    /// lasts (many short turns, some very long) and how long it does not yet see IPIs and
    /// external interrupts, to expose races (as rr's chaos mode). Without SEED, a random one,
    /// printed. A recording keeps the seed: its replay has the same interleaving.
    #[arg(long, value_name = "SEED", num_args = 0..=1, require_equals = true)]
    chaos: Option<Option<u64>>,
    /// Guest RAM size, in bytes or with a K, M or G suffix (as `-m` of QEMU).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// Give the guest this device tree instead of the one Rewind describes (as QEMU's `-dtb`).
    #[arg(long, value_name = "FILE")]
    dtb: Option<PathBuf>,
    /// Write the device tree the guest would get to FILE and exit (as QEMU's `dumpdtb`).
    #[arg(long, value_name = "FILE")]
    dump_dtb: Option<PathBuf>,
    /// Stop after N instructions, with exit status 124.
    #[arg(long, value_name = "N")]
    max_insns: Option<u64>,
    /// Virtual nanoseconds per instruction are 2^N (0 to 10); `mtime` (10 MHz) follows from
    /// it. `auto` adjusts N as the run goes so that virtual time keeps near wall time (as
    /// QEMU's shift=auto); each change is recorded, so a replay follows the same clock.
    #[arg(long, value_name = "N|auto", default_value = "0", value_parser = parse_icount_shift)]
    icount_shift: IcountShift,
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
    /// Serve QMP, QEMU's machine protocol, on `unix:PATH` or `tcp:HOST:PORT` (loopback):
    /// qmp_capabilities, query-status, stop, cont, quit, query-replay, query-version,
    /// query-commands, input-send-event, system_powerdown (KEY_POWER on virtio-keyboard).
    #[arg(long, value_name = "unix:PATH|tcp:HOST:PORT")]
    qmp: Option<String>,
    /// Wait for gdb on HOST:PORT before the first instruction and let it drive the run
    /// (forwards: breakpoints, watchpoints, stepi, continue; record and debug the recording
    /// to go backwards).
    #[arg(long, value_name = "HOST:PORT")]
    gdb: Option<String>,
}

/// An `--icount-shift` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IcountShift {
    Fixed(u32),
    /// Follow the wall clock (`host/autoshift.rs`).
    Auto,
}

fn parse_icount_shift(text: &str) -> Result<IcountShift, String> {
    if text == "auto" {
        return Ok(IcountShift::Auto);
    }
    match text.parse::<u32>() {
        Ok(n) if n <= rewind_machine::MAX_ICOUNT_SHIFT => Ok(IcountShift::Fixed(n)),
        _ => Err(format!(
            "`{text}` is not a shift: give a number from 0 to {} or `auto`",
            rewind_machine::MAX_ICOUNT_SHIFT
        )),
    }
}

/// A `--drive` option.
#[derive(Clone, Debug)]
struct DriveSpec {
    path: PathBuf,
    /// `raw` or `qcow2`; found from the file when not given.
    format: Option<String>,
    readonly: bool,
}

fn parse_drive(text: &str) -> Result<DriveSpec, String> {
    let mut parts = text.split(',');
    let path = PathBuf::from(parts.next().unwrap_or_default());
    let mut readonly = false;
    let mut format = None;
    for option in parts {
        match option.split_once('=') {
            Some(("file", p)) => return parse_drive(&text.replacen(&format!("file={p}"), p, 1)),
            Some(("format", f @ ("raw" | "qcow2"))) => format = Some(f.to_string()),
            Some(("format", other)) => {
                return Err(format!(
                    "format={other} is not supported: give a raw or qcow2 image \
                     (qemu-img convert -O qcow2 IMAGE IMAGE.qcow2)"
                ))
            }
            Some(("readonly", "on" | "true" | "yes")) => readonly = true,
            Some(("readonly", "off" | "false" | "no")) => readonly = false,
            _ => {
                return Err(format!(
                    "unknown drive option `{option}`: use format=raw|qcow2, readonly=on"
                ))
            }
        }
    }
    if path.as_os_str().is_empty() {
        return Err("--drive needs a file".into());
    }
    Ok(DriveSpec {
        path,
        format,
        readonly,
    })
}

/// Parses a `--device` name.
fn parse_device(text: &str) -> Result<rewind_machine::DeviceKind, String> {
    match text {
        "virtio-rng" | "virtio-rng-device" => Ok(rewind_machine::DeviceKind::VirtioRng),
        "virtio-keyboard" | "virtio-keyboard-device" => {
            Ok(rewind_machine::DeviceKind::VirtioKeyboard)
        }
        "virtio-tablet" | "virtio-tablet-device" => Ok(rewind_machine::DeviceKind::VirtioTablet),
        "virtio-mouse" | "virtio-mouse-device" => Ok(rewind_machine::DeviceKind::VirtioMouse),
        _ => Err(format!(
            "unknown device `{text}`: this Rewind has virtio-rng, virtio-keyboard, \
             virtio-tablet and virtio-mouse"
        )),
    }
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
    if let Some(engine) = cli.engine {
        Engine::set_default(engine);
    }
    let result = match &cli.command {
        Command::Run(args) => cmd::live::run(args, None),
        Command::Record(args) => cmd::live::run(&args.run, Some(args)),
        Command::Replay(args) => cmd::replay::replay(args),
        Command::Inspect(args) => cmd::replay::inspect(args),
        Command::Debug(args) => cmd::replay::debug(args),
        Command::Gdbinit => {
            cmd::replay::print_stdout(cmd::replay::GDBINIT);
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("rewind: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn icount_shifts() {
        use super::{parse_icount_shift, IcountShift};
        assert_eq!(parse_icount_shift("auto"), Ok(IcountShift::Auto));
        assert_eq!(parse_icount_shift("0"), Ok(IcountShift::Fixed(0)));
        assert_eq!(parse_icount_shift("10"), Ok(IcountShift::Fixed(10)));
        assert!(parse_icount_shift("11").is_err());
        assert!(parse_icount_shift("-1").is_err());
        assert!(parse_icount_shift("Auto").is_err());
    }

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
