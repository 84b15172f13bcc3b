//! Playing a recording: the machine rebuilt from the recording's images, driven to any
//! instruction count with the recorded events injected where they happened and the sync
//! points checked. Used by `rewind replay` and by the debugger, which also moves backwards
//! by restoring snapshots ([`Player::save`], [`Player::restore`]).

use std::path::PathBuf;

use rewind_machine::block::DiskImage;
use rewind_machine::{BootImages, HartMark, Machine, MachineStop, Snapshot};

use crate::recording::{DriveRef, EndReason, Item, Recording, TimelineEntry};

/// Instructions run between looks at the console.
const SLICE: u64 = 1 << 22;

/// Why playing could not go on.
#[derive(Debug)]
pub enum PlayError {
    /// The machine stopped matching the recording.
    Diverged(String),
    /// The machine could not be rebuilt (a reset with bad images).
    Machine(String),
}

/// Opens the recorded disk images read-only and checks they are the recorded ones; writes
/// during the replay go to an overlay.
fn open_drives(drives: &[DriveRef], paths: &[PathBuf]) -> Result<Vec<DiskImage>, String> {
    drives
        .iter()
        .enumerate()
        .map(|(i, drive)| {
            let path = paths
                .get(i)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(&drive.path));
            let file = std::fs::File::open(&path).map_err(|e| {
                format!(
                    "cannot open disk image {} that the recording needs: {e} \
                     (give it with --drive PATH)",
                    path.display()
                )
            })?;
            drive.check(&file, &path)?;
            drop(file);
            DiskImage::open(&path, Some(&drive.format), drive.readonly, false)
        })
        .collect()
}

/// Where playing stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayStop {
    /// At the instruction count asked for.
    Reached,
    /// Earlier, before an instruction at a breakpoint of the hart.
    Breakpoint,
    /// Earlier, after an instruction that touched memory under a watchpoint of the hart.
    Watchpoint,
    /// Earlier, once the hart given to [`rewind_machine::Machine::step_hart`] executed an
    /// instruction.
    Stepped,
}

/// A position in a recording that can be returned to.
#[derive(Clone)]
pub struct Checkpoint {
    pub snapshot: Snapshot,
    /// What a debugger counts of each hart, which snapshots do not hold.
    marks: Vec<HartMark>,
    /// The first timeline entry not yet applied.
    next: usize,
    powered_off: bool,
}

impl Checkpoint {
    pub fn icount(&self) -> u64 {
        self.snapshot.icount()
    }
}

/// A recording being played.
pub struct Player {
    pub machine: Machine,
    images: BootImages,
    timeline: Vec<TimelineEntry>,
    /// The first timeline entry not yet applied.
    next: usize,
    /// Where the recording ends (its last instruction count).
    pub end: u64,
    pub end_reason: Option<EndReason>,
    /// The guest powered off (at `end`).
    powered_off: bool,
    /// Console output since the last [`Player::take_output`].
    output: Vec<u8>,
}

impl Player {
    /// The recorded machine at instruction 0, before anything ran or was injected. Disk
    /// images are found at their recorded paths, or at `drive_paths` (in order) when given,
    /// and must be the ones recorded.
    pub fn new(recording: &Recording, drive_paths: &[PathBuf]) -> Result<Player, String> {
        let image = |name| recording.image(name).map_err(|e| e.to_string());
        let images = BootImages {
            bios: image("bios")?,
            kernel: image("kernel")?,
            initrd: image("initrd")?,
            dtb: image("dtb")?,
            disks: open_drives(&recording.manifest.drives, drive_paths)?,
        };
        let mut machine = Machine::new(recording.manifest.machine.clone(), &images)
            .map_err(|e| format!("the recorded machine cannot be rebuilt: {e}"))?;
        machine.set_digest_version(recording.digest_version());
        let end = recording
            .end
            .as_ref()
            .map_or(recording.known_until, |e| e.icount);
        Ok(Player {
            machine,
            images,
            timeline: recording.timeline.clone(),
            next: 0,
            end,
            end_reason: recording.end.as_ref().map(|e| e.reason),
            powered_off: false,
            output: Vec::new(),
        })
    }

    pub fn icount(&self) -> u64 {
        self.machine.hart.state.icount
    }

    /// Console output produced since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Plays forward to instruction count `target` (at most the end), applying every event
    /// at or before it and checking every sync point on the way.
    pub fn play_to(&mut self, target: u64) -> Result<PlayStop, PlayError> {
        self.play(target, true)
    }

    /// Plays forward to instruction count `target`, stopping before the events and sync
    /// points recorded at `target` itself.
    pub fn play_to_before(&mut self, target: u64) -> Result<PlayStop, PlayError> {
        self.play(target, false)
    }

    fn play(&mut self, target: u64, inclusive: bool) -> Result<PlayStop, PlayError> {
        let target = target.min(self.end);
        while let Some(entry) = self.timeline.get(self.next) {
            if entry.icount > target || (!inclusive && entry.icount == target) {
                break;
            }
            let at = entry.icount;
            match self.advance(at)? {
                PlayStop::Reached => {}
                stopped => return Ok(stopped),
            }
            let entry = &self.timeline[self.next];
            match &entry.item {
                Item::Event(event) => {
                    if self.powered_off {
                        return Err(PlayError::Diverged(format!(
                            "the guest powered off before instruction {at}, where the recording \
                             still has input"
                        )));
                    }
                    self.machine.inject(event);
                }
                Item::Sync(expected) => {
                    let found = self.machine.digest();
                    let differences = expected.differences(&found);
                    if !differences.is_empty() {
                        let mut report = format!(
                            "the replay diverged from the recording: the state at the sync \
                             point at instruction {at} differs:"
                        );
                        for line in differences {
                            report.push_str("\n  ");
                            report.push_str(&line);
                        }
                        return Err(PlayError::Diverged(report));
                    }
                }
            }
            self.next += 1;
        }
        self.advance(target)
    }

    /// Runs to instruction count `target` exactly, as the recorded run did: idle time is
    /// skipped, resets rebuild the board. A power-off is only legitimate at the end.
    fn advance(&mut self, target: u64) -> Result<PlayStop, PlayError> {
        if self.powered_off {
            return Ok(PlayStop::Reached);
        }
        loop {
            let stop = self.machine.run(Some(target), SLICE);
            self.output.extend(self.machine.take_console_output());
            match stop {
                MachineStop::Limit => return Ok(PlayStop::Reached),
                MachineStop::Breakpoint => return Ok(PlayStop::Breakpoint),
                MachineStop::Watchpoint => return Ok(PlayStop::Watchpoint),
                MachineStop::Stepped => return Ok(PlayStop::Stepped),
                MachineStop::Slice => {}
                MachineStop::Idle { until } => {
                    let t = until.map_or(target, |u| u.min(target));
                    self.machine.skip_idle(t);
                }
                MachineStop::Reset => self
                    .machine
                    .reset(&self.images)
                    .map_err(|e| PlayError::Machine(e.to_string()))?,
                MachineStop::PowerOff(_) => {
                    let icount = self.machine.hart.state.icount;
                    // A cut recording does not say how it ended: a power-off at its last known
                    // instruction may be how.
                    let recorded_off =
                        matches!(self.end_reason, Some(EndReason::PowerOff(_)) | None);
                    if icount != self.end || !recorded_off {
                        return Err(PlayError::Diverged(format!(
                            "the guest powered off at instruction {icount}, which the recording \
                             did not"
                        )));
                    }
                    self.powered_off = true;
                    return Ok(PlayStop::Reached);
                }
            }
        }
    }

    /// Whether the guest powered off, as the recorded one did at the end.
    pub fn powered_off(&self) -> bool {
        self.powered_off
    }

    /// A checkpoint of the current position.
    pub fn save(&mut self) -> Checkpoint {
        Checkpoint {
            snapshot: self.machine.snapshot(),
            marks: self.machine.hart_marks().to_vec(),
            next: self.next,
            powered_off: self.powered_off,
        }
    }

    /// Goes back (or forward) to a checkpoint of this recording.
    pub fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), PlayError> {
        self.machine
            .restore(&checkpoint.snapshot)
            .map_err(|e| PlayError::Machine(e.to_string()))?;
        self.machine.set_hart_marks(&checkpoint.marks);
        self.next = checkpoint.next;
        self.powered_off = checkpoint.powered_off;
        self.output.clear();
        Ok(())
    }
}
