//! Moving through a recording in both directions: a [`Player`] plus checkpoints taken as it
//! goes, within a memory budget. Going back to instruction `n` restores the last checkpoint
//! at or before `n` and plays forward; reverse-continue plays the segments before the present,
//! newest first, noting breakpoint hits (DESIGN.md, "Reverse execution").

use std::collections::BTreeMap;

use rewind_cpu::{WatchKind, Watchpoint};
use rewind_replay::{Checkpoint, PlayError, PlayStop, Player};

/// Checkpoints are taken at multiples of this many instructions when first passing there:
/// going back anywhere replays at most this far.
pub const DEFAULT_SPACING: u64 = 1 << 24;

/// Told the instruction count reached, now and then during long operations.
pub type Report<'a> = &'a mut dyn FnMut(u64);

/// Where a forward or backward run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugStop {
    /// At the instruction count asked for (or, stepping, not yet where asked).
    Reached,
    /// The hart asked to step executed one instruction, or went back over one.
    Stepped,
    /// Before an instruction at a breakpoint, which `hart` runs next.
    Breakpoint {
        hart: u64,
    },
    /// After an instruction of `hart` that touched watched memory: the address and the
    /// access.
    Watchpoint {
        addr: u64,
        kind: WatchKind,
        hart: u64,
    },
    /// At the beginning of the recording (going back) or its end (going forward).
    Begin,
    End,
    /// A live guest exited (powered off) with this status.
    Exited(u8),
}

/// The store [`Timeline::last_write`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastWrite {
    /// The position of the store.
    pub icount: u64,
    pub pc: u64,
    /// The hart that executed it.
    pub hart: u64,
}

pub struct Timeline {
    pub player: Player,
    checkpoints: BTreeMap<u64, Checkpoint>,
    /// Bytes of RAM pages and disk overlay blocks each checkpoint keeps alive: its own new
    /// ones, plus those of dropped checkpoints before it that it still shares.
    costs: BTreeMap<u64, u64>,
    spacing: u64,
    /// Bytes of RAM and disk overlay the checkpoints may hold.
    budget: u64,
    /// Breakpoints (virtual addresses), sorted.
    breakpoints: Vec<u64>,
    watchpoints: Vec<Watchpoint>,
}

impl Timeline {
    pub fn new(mut player: Player, budget: u64) -> Timeline {
        let mut checkpoints = BTreeMap::new();
        let first = player.save();
        let costs = BTreeMap::from([(0, first.snapshot.cost_bytes())]);
        checkpoints.insert(0, first);
        Timeline {
            player,
            checkpoints,
            costs,
            spacing: DEFAULT_SPACING,
            budget,
            breakpoints: Vec::new(),
            watchpoints: Vec::new(),
        }
    }

    pub fn icount(&self) -> u64 {
        self.player.icount()
    }

    pub fn end(&self) -> u64 {
        self.player.end
    }

    /// The breakpoints armed from now on (`Hart::set_debug_stops` sorts them when armed).
    pub fn set_breakpoints(&mut self, breakpoints: Vec<u64>) {
        self.breakpoints = breakpoints;
    }

    pub fn set_watchpoints(&mut self, watchpoints: Vec<Watchpoint>) {
        self.watchpoints = watchpoints;
    }

    /// Gives every hart the breakpoints and watchpoints (or none), after any restore.
    fn arm(&mut self, stops: bool) {
        let (breakpoints, watchpoints) = if stops {
            (self.breakpoints.clone(), self.watchpoints.clone())
        } else {
            (Vec::new(), Vec::new())
        };
        self.player
            .machine
            .set_debug_stops(breakpoints, watchpoints);
    }

    /// What stopped the last run early.
    fn stop_kind(&self, played: PlayStop) -> DebugStop {
        let machine = &self.player.machine;
        let hart = machine.stopped_hart();
        match (played, machine.watch_hit()) {
            (PlayStop::Watchpoint, Some((addr, kind))) => {
                DebugStop::Watchpoint { addr, kind, hart }
            }
            (PlayStop::Reached, _) => DebugStop::Reached,
            (PlayStop::Stepped, _) => DebugStop::Stepped,
            _ => DebugStop::Breakpoint { hart },
        }
    }

    /// Takes checkpoints every `spacing` instructions from now on (tests, tuning).
    pub fn set_spacing(&mut self, spacing: u64) {
        self.spacing = spacing.max(1);
    }

    /// Checkpoints as (instruction count, bytes of RAM pages it keeps alive).
    pub fn checkpoints(&self) -> Vec<(u64, u64)> {
        self.costs.iter().map(|(&i, &c)| (i, c)).collect()
    }

    /// Bytes of RAM pages and disk overlay blocks all checkpoints keep alive (an upper bound).
    pub fn checkpoint_bytes(&self) -> u64 {
        self.costs.values().sum()
    }

    /// Plays forward to `target`, with or without breakpoints, taking checkpoints on the way.
    fn forward(&mut self, target: u64, stops: bool) -> Result<PlayStop, PlayError> {
        self.forward_reporting(target, stops, &mut |_| {})
    }

    fn forward_reporting(
        &mut self,
        target: u64,
        stops: bool,
        report: Report,
    ) -> Result<PlayStop, PlayError> {
        self.arm(stops);
        // The instruction at the current position runs even if it is at a breakpoint.
        self.player.machine.resume_from_debug_stop();
        let target = target.min(self.end());
        loop {
            let now = self.icount();
            let next_checkpoint = (now / self.spacing + 1) * self.spacing;
            let played = self.player.play_to(target.min(next_checkpoint))?;
            if played != PlayStop::Reached {
                return Ok(played);
            }
            let now = self.icount();
            report(now);
            if now == next_checkpoint && !self.checkpoints.contains_key(&now) {
                let checkpoint = self.player.save();
                self.costs.insert(now, checkpoint.snapshot.cost_bytes());
                self.checkpoints.insert(now, checkpoint);
                self.keep_within_budget();
            }
            if now >= target || self.player.powered_off() {
                return Ok(PlayStop::Reached);
            }
        }
    }

    /// Drops checkpoints far from the present until they fit the budget: every other one,
    /// starting with the oldest, so they stay dense near the present and sparse far back.
    fn keep_within_budget(&mut self) {
        while self.checkpoint_bytes() > self.budget && self.checkpoints.len() > 2 {
            let now = self.icount();
            let keys: Vec<u64> = self.checkpoints.keys().copied().collect();
            // The checkpoint whose neighbours are closest relative to its distance from now
            // is the least useful: drop it.
            let victim = keys
                .windows(3)
                .map(|w| (w[1], (w[2] - w[0]) as f64 / (now.abs_diff(w[1]) + 1) as f64))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(k, _)| k);
            let Some(k) = victim else { break };
            self.checkpoints.remove(&k);
            self.costs.remove(&k);
            // The next checkpoint now costs the pages and disk blocks it does not share with
            // the one before.
            let prev = self.checkpoints.range(..k).next_back();
            let next = self.checkpoints.range(k..).next();
            if let (Some((_, prev)), Some((&n, next))) = (prev, next) {
                let bytes = next.snapshot.bytes_beyond(&prev.snapshot);
                self.costs.insert(n, bytes);
            }
        }
    }

    /// Goes to instruction count `target` (clamped to the recording).
    pub fn seek(&mut self, target: u64) -> Result<(), PlayError> {
        self.seek_reporting(target, &mut |_| {})
    }

    /// [`Timeline::seek`], telling `report` how far it got now and then.
    pub fn seek_reporting(&mut self, target: u64, report: Report) -> Result<(), PlayError> {
        let target = target.min(self.end());
        if target < self.icount() || self.closer_checkpoint(target) {
            let (_, checkpoint) = self
                .checkpoints
                .range(..=target)
                .next_back()
                .expect("there is always a checkpoint at 0");
            let checkpoint = checkpoint.clone();
            self.player.restore(&checkpoint)?;
        }
        self.forward_reporting(target, false, report)?;
        Ok(())
    }

    /// Whether a checkpoint lies between the present and `target`, so restoring it is quicker
    /// than playing from here.
    fn closer_checkpoint(&self, target: u64) -> bool {
        self.checkpoints
            .range(..=target)
            .next_back()
            .is_some_and(|(&k, _)| k > self.icount())
    }

    /// Forward until hart `hart` has executed one more instruction ([`DebugStop::Stepped`]),
    /// the other harts moving as the schedule moves them; or to `limit` (then
    /// [`DebugStop::Reached`]: call again to go on), or the end.
    pub fn step(&mut self, hart: u64, limit: u64) -> Result<DebugStop, PlayError> {
        if self.icount() >= self.end() {
            return Ok(DebugStop::End);
        }
        let before = self.player.machine.hart_executed(hart);
        self.player.machine.step_hart(Some(hart));
        let played = self.forward(limit, false);
        self.player.machine.step_hart(None);
        played?;
        Ok(if self.player.machine.hart_executed(hart) > before {
            DebugStop::Stepped
        } else if self.icount() >= self.end() {
            DebugStop::End
        } else {
            DebugStop::Reached
        })
    }

    /// Back to where hart `hart` had executed one instruction fewer: just before its last
    /// instruction, or the beginning.
    pub fn reverse_step(&mut self, hart: u64) -> Result<DebugStop, PlayError> {
        let marks = self.player.machine.hart_marks();
        match marks.get(hart as usize).and_then(|m| m.last) {
            Some(last) => {
                self.seek(last)?;
                Ok(DebugStop::Stepped)
            }
            None => {
                self.seek(0)?;
                Ok(DebugStop::Begin)
            }
        }
    }

    /// Forward until a breakpoint, a watchpoint or `limit` (an instruction count), whichever
    /// comes first. A watchpoint stops before the instruction that accesses the memory (gdb
    /// steps over it, as RISC-V watchpoints are not continuable); the access by the
    /// instruction at the present does not count, so a resume always moves on.
    pub fn resume(&mut self, limit: u64) -> Result<DebugStop, PlayError> {
        let start = self.icount();
        if start >= self.end() {
            return Ok(DebugStop::End);
        }
        loop {
            let played = self.forward(limit, true)?;
            let stopped = match played {
                PlayStop::Reached if self.icount() >= self.end() => DebugStop::End,
                played => self.stop_kind(played),
            };
            let DebugStop::Watchpoint { .. } = stopped else {
                return Ok(stopped);
            };
            let access_at = self.icount() - 1;
            if access_at > start {
                self.seek(access_at)?;
                return Ok(stopped);
            }
        }
    }

    /// When memory at `[addr, addr + len)` was last written before the present, or `None` if
    /// not since the beginning. The position does not change.
    pub fn last_write(
        &mut self,
        addr: u64,
        len: u64,
        report: Report,
    ) -> Result<Option<LastWrite>, PlayError> {
        let present = self.icount();
        let saved = (
            std::mem::take(&mut self.breakpoints),
            std::mem::replace(
                &mut self.watchpoints,
                vec![Watchpoint {
                    addr,
                    len,
                    kind: WatchKind::Write,
                }],
            ),
        );
        let found = self.reverse_resume(report);
        (self.breakpoints, self.watchpoints) = saved;
        let answer = match found? {
            DebugStop::Watchpoint { hart, .. } => {
                // The stop is just after the store: the store is the instruction before.
                let at = self.icount() - 1;
                self.seek(at)?;
                let writer = self.player.machine.hart_by_id(hart);
                Some(LastWrite {
                    icount: at,
                    pc: writer.map_or(0, |h| h.state.pc),
                    hart,
                })
            }
            _ => None,
        };
        self.seek(present)?;
        Ok(answer)
    }

    /// Back to the last breakpoint or watchpoint hit before the present, or the beginning.
    /// A breakpoint hit is the moment before the instruction at it; a watchpoint hit is the
    /// moment after the access, as going forward.
    pub fn reverse_resume(&mut self, report: Report) -> Result<DebugStop, PlayError> {
        let present = self.icount();
        let mut segment_end = present;
        while segment_end > 0 {
            let (&start, checkpoint) = self
                .checkpoints
                .range(..segment_end)
                .next_back()
                .expect("there is always a checkpoint at 0");
            report(start);
            let checkpoint = checkpoint.clone();
            self.player.restore(&checkpoint)?;
            self.arm(true);
            self.player.machine.exempt_breakpoint_at(None);
            let mut last_hit = None;
            loop {
                let played = self.player.play_to(segment_end)?;
                let now = self.icount();
                let kind = self.stop_kind(played);
                // A breakpoint at the segment's end belongs to the next segment; an access
                // that ends there belongs to this one, unless it is the present.
                let counts = match kind {
                    DebugStop::Breakpoint { .. } => now < segment_end,
                    DebugStop::Watchpoint { .. } => now <= segment_end && now < present,
                    _ => false,
                };
                if counts {
                    last_hit = Some((now, kind));
                }
                if played == PlayStop::Reached || now >= segment_end {
                    break;
                }
                self.player.machine.resume_from_debug_stop();
            }
            if let Some((hit, kind)) = last_hit {
                self.seek(hit)?;
                return Ok(kind);
            }
            segment_end = start;
        }
        self.seek(0)?;
        Ok(DebugStop::Begin)
    }
}
