//! The host boundary of a live run (`rewind run`, `rewind record`): the one way host input
//! reaches the machine, and, when recording, the one place it is written down. [`Player`]
//! is its counterpart for replays.
//!
//! The host side (threads, terminal, pacing, network backends) hands its input to the
//! session, which holds it until the guest can take it and then injects it at the current
//! instruction count. Holding it here, outside every drive loop, means no typed byte or
//! network frame is lost when a loop returns (a debugger's stop, a guest reboot).
//!
//! [`Player`]: crate::Player

use std::collections::VecDeque;

use rewind_machine::{
    BootImages, DeviceKind, InputEvent, Machine, MachineError, MachineStop, Watchpoint,
};
use xxhash_rust::xxh3::Xxh3;

use crate::recording::{End, EndReason, RecordError, Recorder};

/// Frames a NIC may hold for its driver before the session waits for it to take them (flow
/// control instead of drops; well below the device's limit).
const NIC_BACKLOG: usize = 64;

/// A recording being written, and when its next sync point falls.
struct Recording {
    recorder: Recorder,
    sync_interval: u64,
    next_sync: u64,
}

/// A live machine and everything that enters it.
pub struct Session {
    machine: Machine,
    /// The images a guest reboot starts from again.
    images: BootImages,
    /// The host values given before the first instruction (RTC base, entropy).
    boot_inputs: Vec<InputEvent>,
    recording: Option<Recording>,
    /// Console bytes typed that the UART has not accepted yet.
    typed: VecDeque<u8>,
    /// Per NIC, frames from the host that the NIC has not taken yet.
    frames: Vec<VecDeque<Vec<u8>>>,
    console_hash: Xxh3,
    console_bytes: u64,
}

impl Session {
    /// A live run of `machine` (at instruction 0, built from `images`), given `boot_inputs`
    /// now.
    pub fn new(mut machine: Machine, images: BootImages, boot_inputs: Vec<InputEvent>) -> Session {
        for event in &boot_inputs {
            machine.inject(event);
        }
        let nics = machine
            .config
            .devices
            .iter()
            .filter(|&&kind| kind == DeviceKind::VirtioNet)
            .count();
        Session {
            machine,
            images,
            boot_inputs,
            recording: None,
            typed: VecDeque::new(),
            frames: vec![VecDeque::new(); nics],
            console_hash: Xxh3::new(),
            console_bytes: 0,
        }
    }

    /// Writes the run down from here on (which must be its start), with a sync point every
    /// `sync_interval` instructions.
    pub fn record(
        &mut self,
        mut recorder: Recorder,
        sync_interval: u64,
    ) -> Result<(), RecordError> {
        debug_assert_eq!(
            self.machine.hart.state.icount, 0,
            "a recording starts with the run"
        );
        for event in &self.boot_inputs {
            recorder.event(0, event)?;
        }
        self.recording = Some(Recording {
            recorder,
            sync_interval,
            next_sync: sync_interval,
        });
        Ok(())
    }

    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// The machine, to look at. Changing it goes through the session.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The images the machine boots (and reboots) from.
    pub fn images(&self) -> &BootImages {
        &self.images
    }

    /// A debugger's breakpoints and watchpoints (not input: they change no guest state).
    pub fn set_debug_stops(&mut self, breakpoints: Vec<u64>, watchpoints: Vec<Watchpoint>) {
        self.machine.set_debug_stops(breakpoints, watchpoints);
    }

    /// A debugger steps hart `id` (see `Machine::step_hart`).
    pub fn step_hart(&mut self, id: Option<u64>) {
        self.machine.step_hart(id);
    }

    /// Before a debugger resumes from a stop (see `Machine::resume_from_debug_stop`).
    pub fn resume_from_debug_stop(&mut self) {
        self.machine.resume_from_debug_stop();
    }

    /// Delivers host input to the guest now, and writes it down.
    pub fn inject(&mut self, event: InputEvent) -> Result<(), RecordError> {
        self.machine.inject(&event);
        if let Some(r) = &mut self.recording {
            r.recorder.event(self.machine.hart.state.icount, &event)?;
        }
        Ok(())
    }

    /// Queues console bytes typed on the host, for the guest to take when it can.
    pub fn type_console(&mut self, bytes: &[u8]) {
        self.typed.extend(bytes);
    }

    /// Whether typed bytes still wait for the guest's UART.
    pub fn typing_waits(&self) -> bool {
        !self.typed.is_empty()
    }

    /// Queues a frame from the host for NIC `nic` (a frame for a NIC the machine lacks is
    /// dropped, as a cable to no port).
    pub fn queue_frame(&mut self, nic: usize, frame: Vec<u8>) {
        if let Some(queue) = self.frames.get_mut(nic) {
            queue.push_back(frame);
        }
    }

    /// Gives the guest what waits for it, as far as it can take it: frames while the NICs'
    /// drivers keep up, typed bytes while the UART's FIFO has room.
    pub fn deliver(&mut self) -> Result<(), RecordError> {
        for nic in 0..self.frames.len() {
            while self.machine.net_pending(nic) < NIC_BACKLOG {
                let Some(frame) = self.frames[nic].pop_front() else {
                    break;
                };
                self.inject(InputEvent::Net {
                    nic: nic as u8,
                    frame,
                })?;
            }
        }
        let room = self.machine.console_room().min(self.typed.len());
        if room > 0 {
            let bytes = self.typed.drain(..room).collect();
            self.inject(InputEvent::Console(bytes))?;
        }
        Ok(())
    }

    /// Runs the machine (see [`Machine::run`]).
    pub fn run(&mut self, limit: Option<u64>, slice: u64) -> MachineStop {
        self.machine.run(limit, slice)
    }

    /// Lets an idle hart's time pass up to instruction count `until`.
    pub fn skip_idle(&mut self, until: u64) {
        self.machine.skip_idle(until);
    }

    /// Starts the board afresh from its images, as QEMU's reset does (a guest reboot).
    pub fn reset(&mut self) -> Result<(), MachineError> {
        self.machine.reset(&self.images)
    }

    /// The guest's console output since the last call (counted into the recording's end).
    pub fn take_console_output(&mut self) -> Vec<u8> {
        let out = self.machine.take_console_output();
        self.console_hash.update(&out);
        self.console_bytes += out.len() as u64;
        out
    }

    /// The frames the guest sent since the last call, by NIC.
    pub fn take_net_output(&mut self) -> Vec<(usize, Vec<u8>)> {
        self.machine.take_net_output()
    }

    /// A hash of all guest-visible state (see [`Machine::state_hash`]).
    pub fn state_hash(&mut self) -> u64 {
        self.machine.state_hash()
    }

    /// Where the next sync point falls, when recording.
    pub fn next_sync(&self) -> Option<u64> {
        self.recording.as_ref().map(|r| r.next_sync)
    }

    /// Writes a sync point if one is due at the current instruction count, unless the run
    /// ends there (`run_ends_at`: the end writes its own). Returns whether it wrote one.
    pub fn sync_if_due(&mut self, run_ends_at: Option<u64>) -> Result<bool, RecordError> {
        let icount = self.machine.hart.state.icount;
        let Some(r) = &mut self.recording else {
            return Ok(false);
        };
        if icount < r.next_sync || run_ends_at.is_some_and(|end| icount >= end) {
            return Ok(false);
        }
        let digest = self.machine.digest();
        r.recorder.sync(&digest)?;
        r.next_sync = icount.saturating_add(r.sync_interval);
        Ok(true)
    }

    /// Writes regularly, so that a killed recorder leaves most of the run behind.
    pub fn flush_if_due(&mut self) -> Result<(), RecordError> {
        match &mut self.recording {
            Some(r) => r.recorder.flush_if_due(self.machine.hart.state.icount),
            None => Ok(()),
        }
    }

    /// Completes the recording, if one is made: the final state and how the run ended.
    pub fn finish(&mut self, reason: EndReason) -> Result<(), RecordError> {
        let Some(r) = self.recording.take() else {
            return Ok(());
        };
        let digest = self.machine.digest();
        let end = End {
            icount: self.machine.hart.state.icount,
            executed: self.machine.executed(),
            reason,
            console_bytes: self.console_bytes,
            console_hash: self.console_hash.digest(),
        };
        r.recorder.finish(&digest, &end)
    }
}
