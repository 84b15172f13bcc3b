//! The PLIC at 0xc00_0000 (`sifive,plic-1.0.0`): 95 sources, two contexts per hart
//! (M-mode external interrupt, then S-mode), as on QEMU's `virt`.

/// Source numbers 1..=NUM_SOURCES - 1 exist; 0 means "none".
pub const NUM_SOURCES: usize = 96;
/// Contexts per hart: M-mode external interrupts, then S-mode.
pub const CONTEXTS_PER_HART: usize = 2;
pub const MAX_PRIORITY: u32 = 7;

const PENDING_BASE: u64 = 0x1000;
const ENABLE_BASE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT_BASE: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;
const WORDS: usize = NUM_SOURCES / 32;

/// Guest-visible state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlicState {
    #[serde(with = "serde_big_array::BigArray")]
    pub priority: [u32; NUM_SOURCES],
    /// Level of each source's input line.
    pub level: [u32; WORDS],
    /// Pending bits (set by a line going high, cleared by a claim).
    pub pending: [u32; WORDS],
    /// Claimed and not yet completed.
    pub in_service: [u32; WORDS],
    /// Per context (hart `c / 2`, M-mode if `c` is even): enabled sources and threshold.
    pub enable: Vec<[u32; WORDS]>,
    pub threshold: Vec<u32>,
}

/// [`PlicState`] of a one-hart board, laid out as it was before boards had several harts:
/// its encoding is what the state digests of one-hart recordings hash.
#[derive(serde::Serialize)]
pub struct OneHartPlic {
    #[serde(with = "serde_big_array::BigArray")]
    priority: [u32; NUM_SOURCES],
    level: [u32; WORDS],
    pending: [u32; WORDS],
    in_service: [u32; WORDS],
    enable: [[u32; WORDS]; CONTEXTS_PER_HART],
    threshold: [u32; CONTEXTS_PER_HART],
}

impl PlicState {
    /// The state at reset of a PLIC serving `harts` harts.
    pub fn new(harts: usize) -> PlicState {
        let contexts = harts * CONTEXTS_PER_HART;
        PlicState {
            priority: [0; NUM_SOURCES],
            level: [0; WORDS],
            pending: [0; WORDS],
            in_service: [0; WORDS],
            enable: vec![[0; WORDS]; contexts],
            threshold: vec![0; contexts],
        }
    }

    /// Whether every priority and threshold is in range, only existing sources are set, and
    /// the contexts are those of `harts` harts: a restored state must be one the PLIC could
    /// have reached.
    pub fn is_valid(&self, harts: usize) -> bool {
        let in_range = |p: &u32| *p <= MAX_PRIORITY;
        let no_source_zero = |words: &[u32; WORDS]| words[0] & 1 == 0;
        let contexts = harts * CONTEXTS_PER_HART;
        self.enable.len() == contexts
            && self.threshold.len() == contexts
            && self.priority.iter().all(in_range)
            && self.threshold.iter().all(in_range)
            && [&self.level, &self.pending, &self.in_service]
                .into_iter()
                .chain(self.enable.iter())
                .all(no_source_zero)
    }

    /// The one-hart layout, if this PLIC serves one hart.
    pub fn one_hart(&self) -> Option<OneHartPlic> {
        Some(OneHartPlic {
            priority: self.priority,
            level: self.level,
            pending: self.pending,
            in_service: self.in_service,
            enable: self.enable.as_slice().try_into().ok()?,
            threshold: self.threshold.as_slice().try_into().ok()?,
        })
    }
}

impl Default for PlicState {
    fn default() -> Self {
        PlicState::new(1)
    }
}

#[derive(Default, Debug)]
pub struct Plic {
    pub state: PlicState,
}

impl Plic {
    /// Drives the input line of `source` (level-triggered, as virt's devices are).
    pub fn set_level(&mut self, source: usize, high: bool) {
        if source == 0 || source >= NUM_SOURCES {
            return;
        }
        let (word, bit) = (source / 32, 1u32 << (source % 32));
        let s = &mut self.state;
        if high {
            s.level[word] |= bit;
            if s.in_service[word] & bit == 0 {
                s.pending[word] |= bit;
            }
        } else {
            s.level[word] &= !bit;
            s.pending[word] &= !bit;
        }
    }

    /// The best pending, enabled source for `context` above its threshold, if any.
    fn best(&self, context: usize) -> Option<usize> {
        let s = &self.state;
        if context >= s.threshold.len()
            || (0..WORDS).all(|w| s.pending[w] & s.enable[context][w] == 0)
        {
            return None;
        }
        let mut best = None;
        let mut best_priority = s.threshold[context];
        for source in 1..NUM_SOURCES {
            let (word, bit) = (source / 32, 1u32 << (source % 32));
            if s.pending[word] & s.enable[context][word] & bit != 0
                && s.priority[source] > best_priority
            {
                best = Some(source);
                best_priority = s.priority[source];
            }
        }
        best
    }

    /// Whether `context` (hart `context / 2`, M-mode if even, S-mode if odd) has an interrupt
    /// to take.
    pub fn context_pending(&self, context: usize) -> bool {
        self.best(context).is_some()
    }

    pub fn read(&mut self, offset: u64) -> u32 {
        let s = &self.state;
        match offset {
            o if o < PENDING_BASE => s.priority.get((o / 4) as usize).copied().unwrap_or(0),
            o if o < ENABLE_BASE => s
                .pending
                .get(((o - PENDING_BASE) / 4) as usize)
                .copied()
                .unwrap_or(0),
            o if o < CONTEXT_BASE => {
                let context = ((o - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let word = ((o - ENABLE_BASE) % ENABLE_STRIDE / 4) as usize;
                s.enable
                    .get(context)
                    .and_then(|e| e.get(word))
                    .copied()
                    .unwrap_or(0)
            }
            o => {
                let context = ((o - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if context >= s.threshold.len() {
                    return 0;
                }
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => s.threshold[context],
                    4 => self.claim(context),
                    _ => 0,
                }
            }
        }
    }

    fn claim(&mut self, context: usize) -> u32 {
        let Some(source) = self.best(context) else {
            return 0;
        };
        let (word, bit) = (source / 32, 1u32 << (source % 32));
        self.state.pending[word] &= !bit;
        self.state.in_service[word] |= bit;
        source as u32
    }

    pub fn write(&mut self, offset: u64, value: u32) {
        let s = &mut self.state;
        match offset {
            o if o < PENDING_BASE => {
                if let Some(p) = s.priority.get_mut((o / 4) as usize) {
                    if o >= 4 {
                        *p = value & MAX_PRIORITY;
                    }
                }
            }
            o if o < ENABLE_BASE => {} // pending bits are read-only
            o if o < CONTEXT_BASE => {
                let context = ((o - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let word = ((o - ENABLE_BASE) % ENABLE_STRIDE / 4) as usize;
                if let Some(e) = s.enable.get_mut(context).and_then(|e| e.get_mut(word)) {
                    // Source 0 does not exist.
                    *e = if word == 0 { value & !1 } else { value };
                }
            }
            o => {
                let context = ((o - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if context >= s.threshold.len() {
                    return;
                }
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => s.threshold[context] = value & MAX_PRIORITY,
                    4 => {
                        // Completion: the source may fire again; a line still high re-pends.
                        let source = value as usize;
                        if source > 0 && source < NUM_SOURCES {
                            let (word, bit) = (source / 32, 1u32 << (source % 32));
                            if s.enable[context][word] & bit != 0 {
                                s.in_service[word] &= !bit;
                                if s.level[word] & bit != 0 {
                                    s.pending[word] |= bit;
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enable(plic: &mut Plic, context: usize, source: usize) {
        let off = ENABLE_BASE + context as u64 * ENABLE_STRIDE + (source / 32) as u64 * 4;
        let old = plic.read(off);
        plic.write(off, old | 1 << (source % 32));
    }

    #[test]
    fn claim_complete_and_priorities() {
        let mut plic = Plic::default();
        plic.write(10 * 4, 1);
        plic.write(11 * 4, 3);
        enable(&mut plic, 1, 10);
        enable(&mut plic, 1, 11);
        let claim = CONTEXT_BASE + CONTEXT_STRIDE + 4;
        plic.set_level(10, true);
        plic.set_level(11, true);
        assert!(plic.context_pending(1));
        assert!(!plic.context_pending(0), "not enabled for M-mode");
        // Highest priority first.
        assert_eq!(plic.read(claim), 11);
        assert_eq!(plic.read(claim), 10);
        assert_eq!(plic.read(claim), 0);
        assert!(!plic.context_pending(1));
        // Completing 11 while its line is still high makes it pending again.
        plic.write(claim, 11);
        assert_eq!(plic.read(PENDING_BASE), 1 << 11);
        plic.set_level(11, false);
        assert!(!plic.context_pending(1));
    }

    #[test]
    fn threshold_masks_lower_priorities() {
        let mut plic = Plic::default();
        plic.write(10 * 4, 2);
        enable(&mut plic, 0, 10);
        plic.set_level(10, true);
        plic.write(CONTEXT_BASE, 2);
        assert!(!plic.context_pending(0));
        plic.write(CONTEXT_BASE, 1);
        assert!(plic.context_pending(0));
        assert_eq!(plic.read(CONTEXT_BASE), 1);
    }
}
