//! The `debug` layer of Rewind: a recording served over the GDB remote protocol (the
//! `gdbstub` crate), with reverse execution: `reverse-stepi`, `reverse-continue`, and monitor
//! commands to see and move the position in the recording; and a live run, forwards only
//! ([`live`]).
//!
//! Each hart is a gdb thread (thread N + 1 is hart N). As in rr, `stepi` runs until the
//! selected thread's hart has executed one more instruction and `reverse-stepi` goes back to
//! where it had executed one fewer, the other harts moving as the schedule moved them; a
//! breakpoint or watchpoint stops whichever hart hits it, and the stop names that thread.

pub mod arch;
mod conn;
pub mod live;
pub mod timeline;

use std::net::TcpListener;
use std::rc::Rc;

use gdbstub::common::{Signal, Tid};
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{self, BlockingEventLoop};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::reverse_exec::{
    ReplayLogPosition, ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind as GdbWatchKind,
};
use gdbstub::target::ext::monitor_cmd::{outputln, ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use rewind_cpu::{Hart, WatchKind, Watchpoint};
use rewind_machine::Machine;
use rewind_replay::{PlayError, Player};

use arch::{Regs, Rv64, CSRS};
use conn::{GdbConnection, ThreadHints};
use timeline::{DebugStop, Timeline};

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

/// What gdb asked the target to do next; steps are of one hart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Continue,
    Step(u64),
    ReverseContinue,
    ReverseStep(u64),
}

/// The gdb thread of hart `hart` (thread ids start at 1).
fn thread_of(hart: u64) -> Tid {
    Tid::new(hart as usize + 1).unwrap_or(Tid::MIN)
}

/// The hart of gdb thread `tid`.
fn hart_of(tid: Tid) -> u64 {
    tid.get() as u64 - 1
}

/// What the debugger drives: a replay (both ways, with monitor commands to move in it) or a
/// live machine (forwards only).
pub trait Engine {
    fn machine(&self) -> &Machine;
    fn set_stops(&mut self, breakpoints: Vec<u64>, watchpoints: Vec<Watchpoint>);
    /// Forward until hart `hart` has executed one more instruction ([`DebugStop::Stepped`]),
    /// or for a while ([`DebugStop::Reached`]: the server looks at the connection and asks
    /// again).
    fn step(&mut self, hart: u64) -> Result<DebugStop, DebugError>;
    /// Forward until a stop, or for a while (then [`DebugStop::Reached`]), so that the server
    /// can look at the connection in between.
    fn resume(&mut self) -> Result<DebugStop, DebugError>;
    /// The timeline of a replay, for going backwards; `None` for a live machine.
    fn timeline(&mut self) -> Option<&mut Timeline> {
        None
    }
}

impl Engine for Timeline {
    fn machine(&self) -> &Machine {
        &self.player.machine
    }

    fn set_stops(&mut self, breakpoints: Vec<u64>, watchpoints: Vec<Watchpoint>) {
        self.set_breakpoints(breakpoints);
        self.set_watchpoints(watchpoints);
    }

    fn step(&mut self, hart: u64) -> Result<DebugStop, DebugError> {
        let limit = self.icount().saturating_add(POLL_EVERY);
        Timeline::step(self, hart, limit).map_err(play_error)
    }

    fn resume(&mut self) -> Result<DebugStop, DebugError> {
        let limit = self.icount().saturating_add(POLL_EVERY);
        Timeline::resume(self, limit).map_err(play_error)
    }

    fn timeline(&mut self) -> Option<&mut Timeline> {
        Some(self)
    }
}

/// A machine being debugged.
pub struct DebugTarget<E: Engine> {
    engine: E,
    breakpoints: Vec<u64>,
    watchpoints: Vec<Watchpoint>,
    action: Action,
    /// The hart gdb steps with the next resume, if any.
    stepping: Option<u64>,
    /// What gdb's packets tell of its threads (see `conn.rs`).
    hints: Rc<ThreadHints>,
    /// The step under way is of a thread gdb named: its own business (stepping a thread
    /// over a breakpoint, say), after which gdb goes on with the thread it had selected, so
    /// its stop does not select its thread.
    named_step: bool,
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

impl DebugTarget<Timeline> {
    /// A recording to debug, from its first instruction.
    pub fn replay(player: Player, checkpoint_mem: u64) -> DebugTarget<Timeline> {
        DebugTarget::new(Timeline::new(player, checkpoint_mem))
    }
}

impl<E: Engine> DebugTarget<E> {
    pub fn new(engine: E) -> DebugTarget<E> {
        DebugTarget {
            engine,
            breakpoints: Vec::new(),
            watchpoints: Vec::new(),
            action: Action::Continue,
            stepping: None,
            hints: Rc::default(),
            named_step: false,
        }
    }

    pub fn engine(&mut self) -> &mut E {
        &mut self.engine
    }

    pub fn into_engine(self) -> E {
        self.engine
    }

    fn sync_breakpoints(&mut self) {
        self.engine
            .set_stops(self.breakpoints.clone(), self.watchpoints.clone());
    }

    /// Hart `hart`, or the running one if the board has no such hart.
    fn hart(&self, hart: u64) -> &Hart {
        let machine = self.engine.machine();
        machine.hart_by_id(hart).unwrap_or(&machine.hart)
    }

    /// The id of [`DebugTarget::hart`]: a thread that is no hart of the board (from a client
    /// that makes one up) stands for the running hart.
    fn hart_id(&self, hart: u64) -> u64 {
        self.hart(hart).state.hart_id
    }

    /// Reads guest memory at a virtual address through hart `hart`'s translation, or as a
    /// physical address where that fails. RAM only: device registers are never touched.
    fn read_memory(&self, hart: u64, addr: u64, data: &mut [u8]) -> usize {
        let machine = self.engine.machine();
        let hart = self.hart(hart);
        let mut done = 0;
        while done < data.len() {
            let vaddr = addr.wrapping_add(done as u64);
            let in_page = (0x1000 - (vaddr & 0xfff)) as usize;
            let len = in_page.min(data.len() - done);
            let chunk = &mut data[done..done + len];
            let translated = hart.debug_translate(&machine.ram, vaddr);
            let read = translated.and_then(|p| machine.ram.read_with_rom(p, chunk));
            if read.is_none() && machine.ram.read_with_rom(vaddr, chunk).is_none() {
                break;
            }
            done += len;
        }
        done
    }
}

impl<E: Engine> Target for DebugTarget<E> {
    type Arch = Rv64;
    type Error = DebugError;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
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

impl<E: Engine> gdbstub::target::ext::target_description_xml_override::TargetDescriptionXmlOverride
    for DebugTarget<E>
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

impl<E: Engine> MultiThreadBase for DebugTarget<E> {
    fn read_registers(&mut self, regs: &mut Regs, tid: Tid) -> TargetResult<(), Self> {
        let hart = self.hart(hart_of(tid));
        regs.x = hart.state.x;
        regs.pc = hart.state.pc;
        regs.f = hart.state.f;
        regs.fflags = hart.state.csr.fflags as u32;
        regs.frm = hart.state.csr.frm as u32;
        regs.fcsr = (hart.state.csr.frm as u32) << 5 | hart.state.csr.fflags as u32;
        regs.csrs = CSRS
            .iter()
            .map(|&(n, _)| hart.debug_csr(n).unwrap_or(0))
            .collect();
        regs.privilege = hart.state.privilege as u64;
        Ok(())
    }

    fn write_registers(&mut self, _regs: &Regs, _tid: Tid) -> TargetResult<(), Self> {
        refuse_change::<E>("registers")
    }

    fn read_addrs(
        &mut self,
        start_addr: u64,
        data: &mut [u8],
        tid: Tid,
    ) -> TargetResult<usize, Self> {
        match self.read_memory(hart_of(tid), start_addr, data) {
            0 if !data.is_empty() => Err(TargetError::NonFatal),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, _start_addr: u64, _data: &[u8], _tid: Tid) -> TargetResult<(), Self> {
        refuse_change::<E>("memory")
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        for hart in 0..self.engine.machine().hart_count() {
            thread_is_active(thread_of(hart as u64));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl<E: Engine> ThreadExtraInfo for DebugTarget<E> {
    fn thread_extra_info(&self, tid: Tid, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let text = format!("hart {}", hart_of(tid));
        let n = text.len().min(buf.len());
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        Ok(n)
    }
}

/// A replay must stay faithful to its recording: writes are refused, and the server says why
/// (gdb itself only shows an error code).
fn refuse_change<E: Engine>(what: &str) -> TargetResult<(), DebugTarget<E>> {
    eprintln!(
        "rewind: gdb tried to change {what}; a replay follows its recording and cannot be \
         changed: refused"
    );
    Err(TargetError::NonFatal)
}

impl<E: Engine> MultiThreadResume for DebugTarget<E> {
    fn resume(&mut self) -> Result<(), Self::Error> {
        self.action = match self.stepping {
            Some(hart) => Action::Step(self.hart_id(hart)),
            None => Action::Continue,
        };
        self.named_step = self.stepping.is_some();
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.stepping = None;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, Tid, Self>> {
        match self.engine.timeline() {
            Some(_) => Some(self),
            None => None,
        }
    }

    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, Tid, Self>> {
        match self.engine.timeline() {
            Some(_) => Some(self),
            None => None,
        }
    }
}

impl<E: Engine> MultiThreadSingleStep for DebugTarget<E> {
    fn set_resume_action_step(
        &mut self,
        tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        self.stepping = Some(hart_of(tid));
        Ok(())
    }
}

/// gdb resumes one thread alone to step it over a breakpoint (on RISC-V it steps with
/// breakpoints of its own). The harts cannot be held: the recording fixed when each runs, and
/// a live run must stay replayable. So the others move on as the schedule moves them, and a
/// breakpoint they hit on the way is reported.
impl<E: Engine> MultiThreadSchedulerLocking for DebugTarget<E> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl<E: Engine> ReverseCont<Tid> for DebugTarget<E> {
    fn reverse_cont(&mut self) -> Result<(), Self::Error> {
        self.named_step = false;
        self.action = Action::ReverseContinue;
        Ok(())
    }
}

impl<E: Engine> ReverseStep<Tid> for DebugTarget<E> {
    fn reverse_step(&mut self, tid: Tid) -> Result<(), Self::Error> {
        // Unless scheduler locking is on, gdb resumes every thread when it steps backwards,
        // and names none (`Hc0`): then the thread to step is gdb's selected one, as far as
        // the connection saw it (see `ThreadHints::selected`).
        self.named_step = self.hints.thread_named.get();
        let hart = match (self.named_step, self.hints.selected.get()) {
            (false, Some(selected)) => hart_of(selected),
            _ => hart_of(tid),
        };
        self.action = Action::ReverseStep(self.hart_id(hart));
        Ok(())
    }
}

impl<E: Engine> Breakpoints for DebugTarget<E> {
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

impl<E: Engine> HwWatchpoint for DebugTarget<E> {
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

impl<E: Engine> SwBreakpoint for DebugTarget<E> {
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

impl<E: Engine> HwBreakpoint for DebugTarget<E> {
    fn add_hw_breakpoint(&mut self, addr: u64, kind: usize) -> TargetResult<bool, Self> {
        self.add_sw_breakpoint(addr, kind)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, kind: usize) -> TargetResult<bool, Self> {
        self.remove_sw_breakpoint(addr, kind)
    }
}

const LIVE_MONITOR_HELP: &str = "\
Rewind monitor commands (live run):
  icount          print the current instruction count (the position; with several harts,
                  then the instructions each hart executed)
  help            this text
Record the run (rewind record) and debug the recording (rewind debug) to go backwards.";

const MONITOR_HELP: &str = "\
Rewind monitor commands:
  icount          print the current instruction count (the position; with several harts,
                  then the instructions each hart executed)
  seek N          move to instruction N (0 .. the end of the recording)
  checkpoints     list the checkpoints (instruction count, bytes of RAM each holds)
  last-write ADDR [LEN]
                  when memory at ADDR (LEN bytes, default 8) was last written before now:
                  the instruction count of the store and its pc (and, with several harts,
                  the hart that stored)
  help            this text
After `seek`, gdb's caches are stale: use the commands of `rewind gdbinit`.";

impl<E: Engine> MonitorCmd for DebugTarget<E> {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(cmd);
        let words: Vec<&str> = cmd.split_whitespace().collect();
        if let ["icount"] = words.as_slice() {
            let machine = self.engine.machine();
            outputln!(out, "{}", machine.hart.state.icount);
            if machine.hart_count() > 1 {
                for (hart, mark) in machine.hart_marks().iter().enumerate() {
                    outputln!(out, "hart {hart}: {} instructions", mark.executed);
                }
            }
            return Ok(());
        }
        let Some(timeline) = self.engine.timeline() else {
            match words.as_slice() {
                [] | ["help"] => outputln!(out, "{LIVE_MONITOR_HELP}"),
                _ => outputln!(
                    out,
                    "`{cmd}` works on recordings (rewind debug); a live run has only `icount`"
                ),
            }
            return Ok(());
        };
        match words.as_slice() {
            ["seek", n] => match parse_number(n) {
                Some(n) if n <= timeline.end() => {
                    let from = timeline.icount();
                    let mut progress = Progress::new("seeking", from, n, Some(&mut out));
                    timeline
                        .seek_reporting(n, &mut |at| progress.update(at))
                        .map_err(play_error)?;
                    drop(progress);
                    outputln!(
                        out,
                        "at instruction {} (pc {:#x})",
                        timeline.icount(),
                        timeline.player.machine.hart.state.pc
                    );
                }
                Some(n) => outputln!(
                    out,
                    "instruction {n} is past the end of the recording ({})",
                    timeline.end()
                ),
                None => outputln!(out, "seek wants an instruction count, e.g. `seek 1000`"),
            },
            ["last-write", addr, rest @ ..] if rest.len() <= 1 => {
                let len = rest.first().map_or(Some(8), |l| parse_number(l));
                match (parse_number(addr), len) {
                    (Some(addr), Some(len)) if (1..=4096).contains(&len) => {
                        let present = timeline.icount();
                        let mut progress =
                            Progress::new("scanning back", present, 0, Some(&mut out));
                        let found = timeline
                            .last_write(addr, len, &mut |at| progress.update(at))
                            .map_err(play_error)?;
                        drop(progress);
                        let several = timeline.player.machine.hart_count() > 1;
                        match found {
                            Some(w) if several => {
                                outputln!(out, "{} {:#x} hart {}", w.icount, w.pc, w.hart)
                            }
                            Some(w) => outputln!(out, "{} {:#x}", w.icount, w.pc),
                            None => {
                                outputln!(out, "not written since the beginning of the recording")
                            }
                        }
                    }
                    _ => outputln!(out, "last-write wants an address and a length (1..4096)"),
                }
            }
            ["checkpoints"] => {
                for (icount, bytes) in timeline.checkpoints() {
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

struct EventLoop<E>(std::marker::PhantomData<E>);

impl<E: Engine> BlockingEventLoop for EventLoop<E> {
    type Target = DebugTarget<E>;
    type Connection = GdbConnection;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut DebugTarget<E>,
        conn: &mut GdbConnection,
    ) -> Result<
        run_blocking::Event<Self::StopReason>,
        run_blocking::WaitForStopReasonError<DebugError, std::io::Error>,
    > {
        let error = run_blocking::WaitForStopReasonError::Target;
        let engine = &mut target.engine;
        let stopped = match (target.action, engine.timeline()) {
            (Action::ReverseStep(hart), Some(timeline)) => timeline
                .reverse_step(hart)
                .map_err(play_error)
                .map_err(error)?,
            (Action::ReverseContinue, Some(timeline)) => {
                let present = timeline.icount();
                let mut progress = Progress::new("reverse-continue", present, 0, None);
                timeline
                    .reverse_resume(&mut |at| progress.update(at))
                    .map_err(play_error)
                    .map_err(error)?
            }
            // gdb only goes backwards where reverse execution was advertised.
            (Action::ReverseStep(_) | Action::ReverseContinue, None) => DebugStop::Begin,
            (Action::Step(_) | Action::Continue, _) => loop {
                let stopped = match target.action {
                    Action::Step(hart) => engine.step(hart),
                    _ => engine.resume(),
                }
                .map_err(error)?;
                if stopped != DebugStop::Reached {
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
        // The thread the stop is of: the hart that hit, or stepped; else the running one.
        let hart = match (stopped, target.action) {
            (DebugStop::Breakpoint { hart } | DebugStop::Watchpoint { hart, .. }, _) => hart,
            (_, Action::Step(hart) | Action::ReverseStep(hart)) => hart,
            _ => engine.machine().hart.state.hart_id,
        };
        let tid = thread_of(hart);
        if !target.named_step {
            target.hints.selected.set(Some(tid));
        }
        let reason = match stopped {
            DebugStop::Reached | DebugStop::Stepped => MultiThreadStopReason::SignalWithThread {
                tid,
                signal: Signal::SIGTRAP,
            },
            DebugStop::Breakpoint { .. } => MultiThreadStopReason::SwBreak(tid),
            DebugStop::Watchpoint { addr, kind, .. } => MultiThreadStopReason::Watch {
                tid,
                kind: match kind {
                    WatchKind::Write => GdbWatchKind::Write,
                    WatchKind::Read => GdbWatchKind::Read,
                    WatchKind::Access => GdbWatchKind::ReadWrite,
                },
                addr,
            },
            DebugStop::Begin => MultiThreadStopReason::ReplayLog {
                tid: Some(tid),
                pos: ReplayLogPosition::Begin,
            },
            DebugStop::End => MultiThreadStopReason::ReplayLog {
                tid: Some(tid),
                pos: ReplayLogPosition::End,
            },
            DebugStop::Exited(code) => MultiThreadStopReason::Exited(code),
        };
        Ok(run_blocking::Event::TargetStopped(reason))
    }

    fn on_interrupt(target: &mut DebugTarget<E>) -> Result<Option<Self::StopReason>, DebugError> {
        let tid = thread_of(target.engine.machine().hart.state.hart_id);
        target.hints.selected.set(Some(tid));
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid,
            signal: Signal::SIGINT,
        }))
    }
}

/// How a gdb session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// gdb detached or the connection dropped.
    Detached,
    /// gdb asked to kill the target.
    Killed,
    /// The guest exited while gdb watched.
    Exited,
}

/// Serves `target` to one gdb client on `listener`.
pub fn serve_one<E: Engine>(
    target: &mut DebugTarget<E>,
    listener: &TcpListener,
) -> Result<SessionEnd, String> {
    let (stream, peer) = listener
        .accept()
        .map_err(|e| format!("cannot accept a gdb connection: {e}"))?;
    let _ = stream.set_nodelay(true);
    eprintln!("rewind: gdb connected from {peer}");
    // What an earlier client selected means nothing to this one.
    target.hints = Rc::default();
    let gdb = GdbStub::new(GdbConnection::new(stream, target.hints.clone()));
    match gdb.run_blocking::<EventLoop<E>>(target) {
        Ok(DisconnectReason::Kill) => Ok(SessionEnd::Killed),
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {
            Ok(SessionEnd::Exited)
        }
        Ok(DisconnectReason::Disconnect) => Ok(SessionEnd::Detached),
        Err(e) => {
            let message = e.to_string();
            match e.into_target_error() {
                Some(error) => Err(error.to_string()),
                None => {
                    eprintln!("rewind: the gdb connection failed: {message}");
                    Ok(SessionEnd::Detached)
                }
            }
        }
    }
}

/// Serves `target` to gdb clients on `listener`, one after the other, until one kills it.
pub fn serve<E: Engine>(target: &mut DebugTarget<E>, listener: &TcpListener) -> Result<(), String> {
    loop {
        match serve_one(target, listener)? {
            SessionEnd::Killed => {
                eprintln!("rewind: gdb asked to kill the session; stopping");
                return Ok(());
            }
            _ => eprintln!("rewind: gdb disconnected; waiting for another"),
        }
    }
}
