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
        match self.run.run_until(pause) {
            Some(MachineStop::Breakpoint) => DebugStop::Breakpoint,
            Some(MachineStop::Watchpoint) => match self.run.session().machine().hart.watch_hit {
                Some((addr, kind)) => DebugStop::Watchpoint(addr, kind),
                None => DebugStop::Breakpoint,
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

    fn step(&mut self) -> Result<DebugStop, DebugError> {
        let hart = &self.machine().hart;
        let next = hart.state.icount + 1;
        let (breakpoints, watchpoints) = (hart.breakpoints.clone(), hart.watchpoints.clone());
        // The one instruction runs even if a breakpoint is on the next.
        self.set_stops(Vec::new(), watchpoints.clone());
        let stopped = self.run_to(next);
        self.set_stops(breakpoints, watchpoints);
        Ok(stopped)
    }

    fn resume(&mut self) -> Result<DebugStop, DebugError> {
        let pause = self.machine().hart.state.icount.saturating_add(POLL_EVERY);
        Ok(self.run_to(pause))
    }
}
