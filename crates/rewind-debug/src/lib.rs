//! The `debug` layer of Rewind: a recording served over the GDB remote protocol (the
//! `gdbstub` crate), with reverse execution: `reverse-stepi`, `reverse-continue`, and monitor
//! commands to see and move the position in the recording.

pub mod arch;
pub mod timeline;

use std::net::{TcpListener, TcpStream};

use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{self, BlockingEventLoop};
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::reverse_exec::{
    ReplayLogPosition, ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind as GdbWatchKind,
};
use gdbstub::target::ext::monitor_cmd::{outputln, ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use rewind_cpu::{WatchKind, Watchpoint};
use rewind_replay::{PlayError, Player};

use arch::{Regs, Rv64, CSRS};
use timeline::{Stopped, Timeline};

/// Instructions run between looks at the connection during a long `continue`.
const POLL_EVERY: u64 = 1 << 22;

/// Progress of a long seek or scan: a bar on the server's terminal once it takes a while,
/// and (for monitor commands) a line to gdb every second, which also keeps gdb from timing
/// out while it waits for the answer.
struct Progress<'a, 'b> {
    what: &'static str,
    from: u64,
    to: u64,
    started: std::time::Instant,
    bar: Option<indicatif::ProgressBar>,
    gdb: Option<&'a mut ConsoleOutput<'b>>,
    last_line: std::time::Instant,
}

impl<'a, 'b> Progress<'a, 'b> {
    fn new(what: &'static str, from: u64, to: u64, gdb: Option<&'a mut ConsoleOutput<'b>>) -> Self {
        let now = std::time::Instant::now();
        Progress {
            what,
            from,
            to,
            started: now,
            bar: None,
            gdb,
            last_line: now,
        }
    }

    fn update(&mut self, icount: u64) {
        let span = self.to.abs_diff(self.from).max(1);
        let done = icount.abs_diff(self.from).min(span);
        if self.bar.is_none() && self.started.elapsed() > std::time::Duration::from_millis(500) {
            let bar = indicatif::ProgressBar::new(span);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "rewind: {msg} [{bar:40}] {percent}% ({elapsed}, about {eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(self.what);
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
        if self.last_line.elapsed() >= std::time::Duration::from_secs(1) {
            self.last_line = std::time::Instant::now();
            if let Some(out) = self.gdb.as_deref_mut() {
                outputln!(out, "{}: {}%", self.what, done * 100 / span);
                out.flush();
            }
        }
    }
}

impl Drop for Progress<'_, '_> {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What gdb asked the target to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Continue,
    Step,
    ReverseContinue,
    ReverseStep,
}

/// A recording being debugged.
pub struct DebugTarget {
    timeline: Timeline,
    breakpoints: Vec<u64>,
    watchpoints: Vec<Watchpoint>,
    action: Action,
}

/// Errors that end the debugging session.
#[derive(Debug)]
pub enum DebugError {
    Play(String),
}

impl std::fmt::Display for DebugError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DebugError::Play(m) => f.write_str(m),
        }
    }
}

fn play_error(e: PlayError) -> DebugError {
    match e {
        PlayError::Diverged(m) | PlayError::Machine(m) => DebugError::Play(m),
    }
}

impl DebugTarget {
    pub fn new(player: Player, checkpoint_mem: u64) -> DebugTarget {
        DebugTarget {
            timeline: Timeline::new(player, checkpoint_mem),
            breakpoints: Vec::new(),
            watchpoints: Vec::new(),
            action: Action::Continue,
        }
    }

    pub fn timeline(&mut self) -> &mut Timeline {
        &mut self.timeline
    }

    fn sync_breakpoints(&mut self) {
        self.timeline.set_breakpoints(self.breakpoints.clone());
        self.timeline.set_watchpoints(self.watchpoints.clone());
    }

    /// Reads guest memory at a virtual address through the current translation, or as a
    /// physical address where that fails. RAM only: device registers are never touched.
    fn read_memory(&self, addr: u64, data: &mut [u8]) -> usize {
        let machine = &self.timeline.player.machine;
        let mut done = 0;
        while done < data.len() {
            let vaddr = addr.wrapping_add(done as u64);
            let in_page = (0x1000 - (vaddr & 0xfff)) as usize;
            let len = in_page.min(data.len() - done);
            let chunk = &mut data[done..done + len];
            let translated = machine.hart.debug_translate(&machine.ram, vaddr);
            let read = translated.and_then(|p| machine.ram.read_with_rom(p, chunk));
            if read.is_none() && machine.ram.read_with_rom(vaddr, chunk).is_none() {
                break;
            }
            done += len;
        }
        done
    }
}

impl Target for DebugTarget {
    type Arch = Rv64;
    type Error = DebugError;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn use_target_description_xml(&self) -> bool {
        true
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<
        gdbstub::target::ext::target_description_xml_override::TargetDescriptionXmlOverrideOps<
            '_,
            Self,
        >,
    > {
        Some(self)
    }
}

impl gdbstub::target::ext::target_description_xml_override::TargetDescriptionXmlOverride
    for DebugTarget
{
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        if annex != b"target.xml" {
            return Err(TargetError::NonFatal);
        }
        let xml = arch::target_xml();
        let bytes = xml.as_bytes();
        let start = (offset as usize).min(bytes.len());
        let end = (start + length).min(bytes.len()).min(start + buf.len());
        buf[..end - start].copy_from_slice(&bytes[start..end]);
        Ok(end - start)
    }
}

impl SingleThreadBase for DebugTarget {
    fn read_registers(&mut self, regs: &mut Regs) -> TargetResult<(), Self> {
        let hart = &self.timeline.player.machine.hart;
        regs.x = hart.x;
        regs.pc = hart.pc;
        regs.f = hart.f;
        regs.fflags = hart.csr.fflags as u32;
        regs.frm = hart.csr.frm as u32;
        regs.fcsr = (hart.csr.frm as u32) << 5 | hart.csr.fflags as u32;
        regs.csrs = CSRS
            .iter()
            .map(|&(n, _)| hart.debug_csr(n).unwrap_or(0))
            .collect();
        regs.privilege = hart.privilege as u64;
        Ok(())
    }

    fn write_registers(&mut self, _regs: &Regs) -> TargetResult<(), Self> {
        refuse_change("registers")
    }

    fn read_addrs(&mut self, start_addr: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        match self.read_memory(start_addr, data) {
            0 if !data.is_empty() => Err(TargetError::NonFatal),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, _start_addr: u64, _data: &[u8]) -> TargetResult<(), Self> {
        refuse_change("memory")
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

/// A replay must stay faithful to its recording: writes are refused, and the server says why
/// (gdb itself only shows an error code).
fn refuse_change(what: &str) -> TargetResult<(), DebugTarget> {
    eprintln!(
        "rewind: gdb tried to change {what}; a replay follows its recording and cannot be \
         changed: refused"
    );
    Err(TargetError::NonFatal)
}

impl SingleThreadResume for DebugTarget {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.action = Action::Continue;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, (), Self>> {
        Some(self)
    }

    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, (), Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for DebugTarget {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.action = Action::Step;
        Ok(())
    }
}

impl ReverseCont<()> for DebugTarget {
    fn reverse_cont(&mut self) -> Result<(), Self::Error> {
        self.action = Action::ReverseContinue;
        Ok(())
    }
}

impl ReverseStep<()> for DebugTarget {
    fn reverse_step(&mut self, _tid: ()) -> Result<(), Self::Error> {
        self.action = Action::ReverseStep;
        Ok(())
    }
}

impl Breakpoints for DebugTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

fn watch_kind(kind: GdbWatchKind) -> WatchKind {
    match kind {
        GdbWatchKind::Write => WatchKind::Write,
        GdbWatchKind::Read => WatchKind::Read,
        GdbWatchKind::ReadWrite => WatchKind::Access,
    }
}

impl HwWatchpoint for DebugTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        if len == 0 || len > 4096 {
            return Ok(false);
        }
        self.watchpoints.push(Watchpoint {
            addr,
            len,
            kind: watch_kind(kind),
        });
        self.sync_breakpoints();
        Ok(true)
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: GdbWatchKind,
    ) -> TargetResult<bool, Self> {
        let wanted = Watchpoint {
            addr,
            len,
            kind: watch_kind(kind),
        };
        let Some(i) = self.watchpoints.iter().position(|w| *w == wanted) else {
            return Ok(false);
        };
        self.watchpoints.swap_remove(i);
        self.sync_breakpoints();
        Ok(true)
    }
}

impl SwBreakpoint for DebugTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.breakpoints.push(addr);
        self.sync_breakpoints();
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(i) = self.breakpoints.iter().position(|&a| a == addr) else {
            return Ok(false);
        };
        self.breakpoints.swap_remove(i);
        self.sync_breakpoints();
        Ok(true)
    }
}

impl HwBreakpoint for DebugTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, kind: usize) -> TargetResult<bool, Self> {
        self.add_sw_breakpoint(addr, kind)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, kind: usize) -> TargetResult<bool, Self> {
        self.remove_sw_breakpoint(addr, kind)
    }
}

const MONITOR_HELP: &str = "\
Rewind monitor commands:
  icount          print the current instruction count
  seek N          move to instruction N (0 .. the end of the recording)
  checkpoints     list the checkpoints (instruction count, bytes of RAM each holds)
  last-write ADDR [LEN]
                  when memory at ADDR (LEN bytes, default 8) was last written before now:
                  the instruction count of the store and its pc
  help            this text
After `seek`, gdb's caches are stale: use the commands of `rewind gdbinit`.";

impl MonitorCmd for DebugTarget {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(cmd);
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            ["icount"] => outputln!(out, "{}", self.timeline.icount()),
            ["seek", n] => match parse_number(n) {
                Some(n) if n <= self.timeline.end() => {
                    let from = self.timeline.icount();
                    let mut progress = Progress::new("seeking", from, n, Some(&mut out));
                    self.timeline
                        .seek_reporting(n, &mut |at| progress.update(at))
                        .map_err(play_error)?;
                    drop(progress);
                    outputln!(
                        out,
                        "at instruction {} (pc {:#x})",
                        self.timeline.icount(),
                        self.timeline.player.machine.hart.pc
                    );
                }
                Some(n) => outputln!(
                    out,
                    "instruction {n} is past the end of the recording ({})",
                    self.timeline.end()
                ),
                None => outputln!(out, "seek wants an instruction count, e.g. `seek 1000`"),
            },
            ["last-write", addr, rest @ ..] if rest.len() <= 1 => {
                let len = rest.first().map_or(Some(8), |l| parse_number(l));
                match (parse_number(addr), len) {
                    (Some(addr), Some(len)) if (1..=4096).contains(&len) => {
                        let present = self.timeline.icount();
                        let mut progress =
                            Progress::new("scanning back", present, 0, Some(&mut out));
                        let found = self
                            .timeline
                            .last_write(addr, len, &mut |at| progress.update(at))
                            .map_err(play_error)?;
                        drop(progress);
                        match found {
                            Some((icount, pc)) => outputln!(out, "{icount} {pc:#x}"),
                            None => {
                                outputln!(out, "not written since the beginning of the recording")
                            }
                        }
                    }
                    _ => outputln!(out, "last-write wants an address and a length (1..4096)"),
                }
            }
            ["checkpoints"] => {
                for (icount, bytes) in self.timeline.checkpoints() {
                    outputln!(out, "{icount} {bytes}");
                }
            }
            [] | ["help"] => outputln!(out, "{MONITOR_HELP}"),
            _ => outputln!(out, "unknown command `{cmd}`; `monitor help` lists them"),
        }
        Ok(())
    }
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

enum EventLoop {}

impl BlockingEventLoop for EventLoop {
    type Target = DebugTarget;
    type Connection = TcpStream;
    type StopReason = SingleThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut DebugTarget,
        conn: &mut TcpStream,
    ) -> Result<
        run_blocking::Event<Self::StopReason>,
        run_blocking::WaitForStopReasonError<DebugError, std::io::Error>,
    > {
        let error = run_blocking::WaitForStopReasonError::Target;
        let timeline = &mut target.timeline;
        let stopped = match target.action {
            Action::Step => timeline.step().map_err(play_error).map_err(error)?,
            Action::ReverseStep => timeline.reverse_step().map_err(play_error).map_err(error)?,
            Action::ReverseContinue => {
                let present = timeline.icount();
                let mut progress = Progress::new("reverse-continue", present, 0, None);
                timeline
                    .reverse_resume(&mut |at| progress.update(at))
                    .map_err(play_error)
                    .map_err(error)?
            }
            Action::Continue => loop {
                let limit = timeline.icount().saturating_add(POLL_EVERY);
                let stopped = timeline.resume(limit).map_err(play_error).map_err(error)?;
                if stopped != Stopped::Reached {
                    break stopped;
                }
                if conn.peek().map(|b| b.is_some()).unwrap_or(true) {
                    let byte = conn
                        .read()
                        .map_err(run_blocking::WaitForStopReasonError::Connection)?;
                    return Ok(run_blocking::Event::IncomingData(byte));
                }
            },
        };
        let reason = match stopped {
            Stopped::Reached => match target.action {
                Action::Step | Action::ReverseStep => SingleThreadStopReason::DoneStep,
                _ => SingleThreadStopReason::Signal(Signal::SIGTRAP),
            },
            Stopped::Breakpoint => SingleThreadStopReason::SwBreak(()),
            Stopped::Watchpoint(addr, kind) => SingleThreadStopReason::Watch {
                tid: (),
                kind: match kind {
                    WatchKind::Write => GdbWatchKind::Write,
                    WatchKind::Read => GdbWatchKind::Read,
                    WatchKind::Access => GdbWatchKind::ReadWrite,
                },
                addr,
            },
            Stopped::Begin => SingleThreadStopReason::ReplayLog {
                tid: None,
                pos: ReplayLogPosition::Begin,
            },
            Stopped::End => SingleThreadStopReason::ReplayLog {
                tid: None,
                pos: ReplayLogPosition::End,
            },
        };
        Ok(run_blocking::Event::TargetStopped(reason))
    }

    fn on_interrupt(_target: &mut DebugTarget) -> Result<Option<Self::StopReason>, DebugError> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

/// Serves `target` to gdb clients on `listener`, one after the other, until one kills it.
pub fn serve(target: &mut DebugTarget, listener: &TcpListener) -> Result<(), String> {
    loop {
        let (stream, peer) = listener
            .accept()
            .map_err(|e| format!("cannot accept a gdb connection: {e}"))?;
        let _ = stream.set_nodelay(true);
        eprintln!("rewind: gdb connected from {peer}");
        let gdb = GdbStub::new(stream);
        match gdb.run_blocking::<EventLoop>(target) {
            Ok(DisconnectReason::Kill) => {
                eprintln!("rewind: gdb asked to kill the session; stopping");
                return Ok(());
            }
            Ok(reason) => eprintln!("rewind: gdb disconnected ({reason:?}); waiting for another"),
            Err(e) => {
                if let Some(error) = e.into_target_error() {
                    return Err(error.to_string());
                }
                eprintln!("rewind: the gdb connection failed; waiting for another");
            }
        }
    }
}
