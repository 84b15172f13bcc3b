//! A live run driven by gdb (`rewind run --gdb`): forwards only, while the console, the
//! recording and the host side go on as without gdb.

use rewind_cpu::Watchpoint;
use rewind_machine::{Machine, MachineStop};
use rewind_replay::Session;

use crate::timeline::DebugStop;
use crate::{DebugError, Engine, POLL_EVERY};

/// The host side of a live run, which the debugger lets run.
pub trait LiveRun {
    fn session(&self) -> &Session;
    fn session_mut(&mut self) -> &mut Session;
    /// Runs (with the console, pacing and backends as usual) until instruction count
    /// `pause`, a debug stop, or the end of the run. `None`: the run ended (and the host
    /// side keeps how, and says it with [`LiveRun::exit_status`]).
    fn run_until(&mut self, pause: u64) -> Option<MachineStop>;
    /// The status the run ended with, as gdb is told (`W` packet).
    fn exit_status(&self) -> u8;
}

/// The debugger's engine over a live run.
pub struct LiveEngine<R> {
    pub run: R,
    ended: bool,
}

impl<R: LiveRun> LiveEngine<R> {
    pub fn new(run: R) -> LiveEngine<R> {
        LiveEngine { run, ended: false }
    }

    /// Runs to instruction count `pause`, or to a stop on the way.
    fn run_to(&mut self, pause: u64) -> DebugStop {
        if self.ended {
            return DebugStop::Exited(self.run.exit_status());
        }
        self.run.session_mut().resume_from_debug_stop();
        let stopped = self.run.run_until(pause);
        let machine = self.run.session().machine();
        let hart = machine.stopped_hart();
        match stopped {
            Some(MachineStop::Breakpoint) => DebugStop::Breakpoint { hart },
            Some(MachineStop::Watchpoint) => match machine.watch_hit() {
                Some((addr, kind)) => DebugStop::Watchpoint { addr, kind, hart },
                None => DebugStop::Breakpoint { hart },
            },
            Some(_) => DebugStop::Reached,
            None => {
                self.ended = true;
                DebugStop::Exited(self.run.exit_status())
            }
        }
    }
}

impl<R: LiveRun> Engine for LiveEngine<R> {
    fn machine(&self) -> &Machine {
        self.run.session().machine()
    }

    fn set_stops(&mut self, breakpoints: Vec<u64>, watchpoints: Vec<Watchpoint>) {
        self.run
            .session_mut()
            .set_debug_stops(breakpoints, watchpoints);
    }

    fn step(&mut self, hart: u64) -> Result<DebugStop, DebugError> {
        let machine = self.machine();
        let before = machine.hart_executed(hart);
        let pause = machine.hart.state.icount.saturating_add(POLL_EVERY);
        let running = &machine.hart;
        let (breakpoints, watchpoints) = (running.breakpoints.clone(), running.watchpoints.clone());
        // The one instruction runs even if a breakpoint is on the next.
        self.set_stops(Vec::new(), watchpoints.clone());
        self.run.session_mut().step_hart(Some(hart));
        let stopped = self.run_to(pause);
        self.run.session_mut().step_hart(None);
        self.set_stops(breakpoints, watchpoints);
        Ok(match stopped {
            DebugStop::Reached if self.machine().hart_executed(hart) > before => DebugStop::Stepped,
            stopped => stopped,
        })
    }

    fn resume(&mut self) -> Result<DebugStop, DebugError> {
        let pause = self.machine().hart.state.icount.saturating_add(POLL_EVERY);
        Ok(self.run_to(pause))
    }
}
