//! `rewind`: the command line. Standard output carries only what the guest writes to its
//! console; every message of the tool goes to standard error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use rewind_machine::{Machine, MachineConfig, Stop};

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
    /// Run a machine live: the guest's console is on standard output.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Firmware: `none` starts the kernel itself in M-mode, as `qemu -bios none` does.
    #[arg(long, value_name = "FILE|none", default_value = "none")]
    bios: String,
    /// The program to run: a RISC-V 64-bit ELF, loaded at its physical addresses.
    #[arg(long, value_name = "FILE")]
    kernel: PathBuf,
    /// Guest RAM size, in bytes or with a K, M or G suffix (as `-m` of QEMU).
    #[arg(long, value_name = "SIZE", default_value = "128M", value_parser = parse_size)]
    memory: u64,
    /// Kernel command line, placed in the device tree's /chosen/bootargs.
    #[arg(long, value_name = "STRING")]
    append: Option<String>,
    /// Stop after N instructions, with exit status 124.
    #[arg(long, value_name = "N")]
    max_insns: Option<u64>,
    /// Virtual nanoseconds per instruction are 2^N; `mtime` (10 MHz) follows from it.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    icount_shift: u32,
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

fn run(args: &RunArgs) -> Result<ExitCode, String> {
    if args.bios != "none" {
        return Err(format!(
            "--bios {}: booting through firmware is not supported yet; use --bios none",
            args.bios
        ));
    }
    let kernel = std::fs::read(&args.kernel)
        .map_err(|e| format!("cannot read kernel {}: {e}", args.kernel.display()))?;
    let config = MachineConfig {
        ram_size: args.memory,
        bootargs: args.append.clone(),
        icount_shift: args.icount_shift,
        ..MachineConfig::default()
    };
    let mut machine = Machine::new(config).map_err(|e| e.to_string())?;
    machine
        .load_kernel_elf(&kernel, &format!("kernel {}", args.kernel.display()))
        .map_err(|e| e.to_string())?;

    let started = Instant::now();
    let stdout = std::io::stdout();
    let stop = loop {
        let stop = machine.run(args.max_insns, 1 << 24);
        let out = machine.take_console_output();
        if !out.is_empty() {
            let mut lock = stdout.lock();
            // A closed standard output must not stop the guest: it may still power off cleanly.
            let _ = lock.write_all(&out).and_then(|_| lock.flush());
        }
        if stop != Stop::Slice {
            break stop;
        }
    };
    let elapsed = started.elapsed();
    if args.stats {
        let insns = machine.hart.icount;
        let secs = elapsed.as_secs_f64();
        eprintln!("instructions: {insns}");
        eprintln!("wall time: {secs:.3} s");
        eprintln!("MIPS: {:.1}", insns as f64 / secs.max(1e-9) / 1e6);
    }
    Ok(match stop {
        Stop::PowerOff(code) => ExitCode::from(code as u8),
        Stop::Reset => {
            eprintln!("rewind: the guest asked for a reboot, which is not supported yet; stopping");
            ExitCode::from(EXIT_ERROR)
        }
        Stop::Limit => {
            eprintln!(
                "rewind: stopped after --max-insns {} instructions (pc {:#x}, {}-mode)",
                machine.hart.icount,
                machine.hart.pc,
                machine.hart.privilege_name()
            );
            ExitCode::from(EXIT_LIMIT)
        }
        Stop::Deadlock => {
            eprintln!(
                "rewind: the hart waits for an interrupt that nothing can raise (pc {:#x}); stopping",
                machine.hart.pc
            );
            ExitCode::from(EXIT_DEADLOCK)
        }
        Stop::Slice => unreachable!("slices are consumed by the loop above"),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

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
