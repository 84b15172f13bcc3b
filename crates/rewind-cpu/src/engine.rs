//! Which engine runs guest code: the interpreter, or the interpreter with hot blocks compiled
//! to host code. The choice never changes what the guest computes, only how fast: it is not
//! part of a machine's configuration or of a recording.

#[cfg(target_arch = "x86_64")]
use crate::jit::{BlockFn, CompileError, Jit, RegionBlock};
use std::sync::atomic::{AtomicU8, Ordering};

/// How guest instructions are executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Engine {
    /// Every instruction is interpreted: the reference.
    Interp = 0,
    /// Blocks that run often are compiled to host code (x86-64 hosts only).
    Jit = 1,
}

/// [`Engine::set_default`]'s choice, or `u8::MAX` for none.
static DEFAULT_ENGINE: AtomicU8 = AtomicU8::new(u8::MAX);

impl Engine {
    /// The fastest engine this host supports.
    pub fn fastest() -> Engine {
        if cfg!(target_arch = "x86_64") {
            Engine::Jit
        } else {
            Engine::Interp
        }
    }

    /// Whether this host can run the engine.
    pub fn check_host(self) -> Result<(), EngineError> {
        match self {
            Engine::Jit if !cfg!(target_arch = "x86_64") => Err(EngineError::JitUnsupportedHost),
            _ => Ok(()),
        }
    }

    /// Makes `engine` the one that RAM created from now on runs with (a process-wide choice,
    /// as it changes nothing the guest can see).
    pub fn set_default(engine: Engine) {
        DEFAULT_ENGINE.store(engine as u8, Ordering::Relaxed);
    }

    /// The engine new RAM runs with: [`Engine::fastest`] unless [`Engine::set_default`] chose.
    pub fn default_engine() -> Engine {
        match DEFAULT_ENGINE.load(Ordering::Relaxed) {
            0 => Engine::Interp,
            1 => Engine::Jit,
            _ => Engine::fastest(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Interp => "interp",
            Engine::Jit => "jit",
        }
    }
}

/// Why an engine cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The compiling engine generates x86-64 code only.
    JitUnsupportedHost,
    /// The host refused executable memory or code generation.
    JitUnavailable,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::JitUnsupportedHost => write!(
                f,
                "the compiling engine needs an x86-64 host; use --engine interp"
            ),
            EngineError::JitUnavailable => write!(
                f,
                "the host refused executable memory for the compiling engine; use --engine interp"
            ),
        }
    }
}

impl std::error::Error for EngineError {}

/// A block slot's entry in [`Compiler`]'s table: below this, how many times the block has run;
/// from it up, the address of its compiled code.
pub(crate) const FIRST_ADDRESS: usize = 4096;
/// Never compile this block (Cranelift refused it).
const NEVER: usize = FIRST_ADDRESS - 1;
/// The compiling thread is at work on this block.
const PENDING: usize = FIRST_ADDRESS - 2;

/// The compiling tier's share of the code cache: compiled code and run counts per block slot,
/// kept beside `Ram`'s decoded blocks and dropped with them.
pub(crate) struct Compiler {
    #[cfg(target_arch = "x86_64")]
    state: State,
    /// Per block slot (see `ram::block_index`): run count or compiled address.
    compiled: Vec<usize>,
    /// Runs of a block before it is compiled.
    hot_threshold: usize,
    /// Bytes of code memory; when they run out, all compiled code is dropped.
    code_cache_bytes: usize,
    /// Compile on a thread of its own (the default) rather than in the run loop.
    background: bool,
    /// Bumped whenever all code is dropped: answers from the compiling thread for an older
    /// generation are stale.
    generation: u64,
    /// The compiling thread found its code memory full: everything must be dropped.
    full: bool,
    /// Code memory was reused since the last code arrived from the compiling thread.
    reused: bool,
}

/// Runs of a block before it is compiled. Compiling a block takes about 200 µs, as long as
/// interpreting it some ten thousand times, and most blocks of a boot run only a few hundred
/// times. Measured on the Debian boot to init (6.6e8 instructions): 64 compiles 16,000 blocks
/// and spends 64% of the run compiling; 256, 7,900 blocks and 43%; 1,024, 3,500 blocks, 25%,
/// and the shortest boot; 4,096 is slower again.
const DEFAULT_HOT_THRESHOLD: usize = 1024;

impl Default for Compiler {
    fn default() -> Compiler {
        Compiler {
            #[cfg(target_arch = "x86_64")]
            state: match Engine::default_engine() {
                Engine::Interp => State::Off,
                Engine::Jit => State::Lazy,
            },
            compiled: Vec::new(),
            // Debugging switches for the compiler (see README): they change what gets compiled
            // and when, never what the guest computes.
            hot_threshold: std::env::var("REWIND_JIT_HOT")
                .ok()
                .and_then(|runs| runs.parse().ok())
                .unwrap_or(DEFAULT_HOT_THRESHOLD),
            code_cache_bytes: crate::jit::DEFAULT_CODE_CACHE,
            background: std::env::var_os("REWIND_JIT_INLINE").is_none(),
            generation: 0,
            full: false,
            reused: false,
        }
    }
}

#[cfg(target_arch = "x86_64")]
enum State {
    Off,
    /// On, and the compiler is made when the first block gets hot.
    Lazy,
    /// Compiling in the run loop.
    Inline(Box<Jit>),
    /// Compiling on a thread of its own.
    Background(crate::jit::Worker),
}

/// What the run loop should do with a block.
pub(crate) enum Plan {
    Interpret,
    #[cfg(target_arch = "x86_64")]
    Run(BlockFn),
    /// It just got hot: compile it (see [`Compiler::compile`]) and run it.
    Compile,
    /// The code cache is full: drop everything (`Ram::clear_code`) and look again.
    Flush,
}

impl Compiler {
    pub(crate) fn new(engine: Engine) -> Result<Compiler, EngineError> {
        match engine {
            Engine::Interp => Ok(Compiler {
                #[cfg(target_arch = "x86_64")]
                state: State::Off,
                ..Compiler::default()
            }),
            #[cfg(target_arch = "x86_64")]
            Engine::Jit => {
                // Made now, so that a host that cannot is told at once.
                let jit =
                    Jit::new(crate::jit::DEFAULT_CODE_CACHE).ok_or(EngineError::JitUnavailable)?;
                Ok(Compiler {
                    state: State::Inline(Box::new(jit)),
                    ..Compiler::default()
                })
            }
            #[cfg(not(target_arch = "x86_64"))]
            Engine::Jit => Err(EngineError::JitUnsupportedHost),
        }
    }

    pub(crate) fn engine(&self) -> Engine {
        #[cfg(target_arch = "x86_64")]
        if !matches!(self.state, State::Off) {
            return Engine::Jit;
        }
        Engine::Interp
    }

    #[inline(always)]
    pub(crate) fn is_on(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return !matches!(self.state, State::Off);
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    pub(crate) fn set_hot_threshold(&mut self, runs: u32) {
        self.hot_threshold = (runs as usize).min(PENDING - 1);
    }

    /// Gives the compiler `bytes` of code memory (for tests: a small cache fills and is
    /// dropped often). Call before anything is compiled.
    pub(crate) fn set_code_cache_size(&mut self, bytes: usize) {
        self.code_cache_bytes = bytes;
        #[cfg(target_arch = "x86_64")]
        if let State::Inline(jit) = &mut self.state {
            if let Some(smaller) = Jit::new(bytes) {
                **jit = smaller;
            }
        }
    }

    pub(crate) fn set_background(&mut self, background: bool) {
        self.background = background;
    }

    pub(crate) fn stats(&self) -> Option<crate::JitStats> {
        #[cfg(target_arch = "x86_64")]
        match &self.state {
            State::Inline(jit) => return Some(jit.stats),
            State::Background(worker) => return Some(worker.stats),
            _ => {}
        }
        None
    }

    /// A code page was added to the cache: room for its slots.
    pub(crate) fn add_page(&mut self) {
        if self.is_on() {
            self.compiled
                .resize(self.compiled.len() + crate::ram::SLOTS_PER_PAGE, 0);
        }
    }

    /// Drops compiled code with the decoded blocks.
    pub(crate) fn clear(&mut self) {
        self.compiled.clear();
        self.generation += 1;
        self.full = false;
        #[cfg(target_arch = "x86_64")]
        match &mut self.state {
            State::Inline(jit) => jit.clear(),
            State::Background(worker) => {
                worker.clear();
                self.reused = true;
            }
            _ => {}
        }
    }

    /// The per-slot table, for compiled code to find the blocks it jumps to, and the
    /// trampoline into compiled code. Valid until the next change to the cache.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn entry_points(&self) -> Option<(*const usize, crate::jit::EnterFn)> {
        match &self.state {
            State::Inline(jit) => Some((self.compiled.as_ptr(), jit.enter)),
            State::Background(worker) => Some((self.compiled.as_ptr(), worker.enter)),
            _ => None,
        }
    }

    /// Counts a run of the block at `index` and says how to run it.
    #[inline(always)]
    pub(crate) fn plan(&mut self, index: usize) -> Plan {
        let Some(entry) = self.compiled.get_mut(index) else {
            return Plan::Interpret;
        };
        #[cfg(target_arch = "x86_64")]
        if *entry >= FIRST_ADDRESS {
            return Plan::Run(*entry);
        }
        if *entry == NEVER {
            return Plan::Interpret;
        }
        if *entry == PENDING {
            #[cfg(target_arch = "x86_64")]
            {
                self.take_compiled();
                if self.full {
                    return Plan::Flush;
                }
            }
            return Plan::Interpret;
        }
        *entry += 1;
        if *entry > self.hot_threshold {
            Plan::Compile
        } else {
            Plan::Interpret
        }
    }

    /// Whether the block at `index` may be compiled into another's region: the compiler has
    /// not refused it.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn may_join_region(&self, index: usize) -> bool {
        self.compiled
            .get(index)
            .is_some_and(|&entry| entry != NEVER)
    }

    /// Compiles the region entered at the block at `index` (`blocks`, see `jit::region`).
    /// `None`: it stays interpreted (or the cache was full and everything was dropped: the
    /// caller must look the block up again, as after `clear`).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn compile(
        &mut self,
        index: usize,
        blocks: Vec<RegionBlock>,
    ) -> Result<Option<BlockFn>, ()> {
        if matches!(self.state, State::Lazy) {
            self.state = match Jit::new(self.code_cache_bytes) {
                Some(jit) if self.background => match crate::jit::Worker::start(jit) {
                    Some(worker) => State::Background(worker),
                    None => State::Off,
                },
                Some(jit) => State::Inline(Box::new(jit)),
                None => State::Off,
            };
        }
        let page_first_index = index - index % crate::ram::SLOTS_PER_PAGE;
        let placement = crate::jit::Placement {
            page_first_index: page_first_index as u64,
        };
        // The region's other blocks now run inside it: their counts start again, so that
        // each is compiled on its own only if it is hot where the region is not entered.
        for block in &blocks[1..] {
            let at = page_first_index + (block.page_offset / 2) as usize;
            if let Some(entry) = self.compiled.get_mut(at).filter(|e| **e < PENDING) {
                *entry = 0;
            }
        }
        let jit = match &mut self.state {
            State::Inline(jit) => jit,
            State::Background(worker) => {
                worker.submit(index, self.generation, blocks, placement);
                self.compiled[index] = PENDING;
                return Ok(None);
            }
            _ => return Ok(None),
        };
        match jit.compile(&blocks, placement) {
            Ok(f) => {
                self.compiled[index] = f;
                Ok(Some(f))
            }
            Err(CompileError::Unsupported) => {
                self.compiled[index] = NEVER;
                Ok(None)
            }
            Err(CompileError::Full) => Err(()),
        }
    }

    /// Installs the code the compiling thread has finished.
    #[cfg(target_arch = "x86_64")]
    fn take_compiled(&mut self) {
        let State::Background(worker) = &mut self.state else {
            return;
        };
        while let Some(done) = worker.try_next() {
            if done.generation != self.generation {
                continue;
            }
            let Some(entry) = self.compiled.get_mut(done.index) else {
                continue;
            };
            *entry = match done.result {
                Ok(code) => {
                    if std::mem::take(&mut self.reused) {
                        // Another thread wrote code where code ran before: a serializing
                        // instruction makes sure this core fetches the new bytes (Intel's
                        // protocol for cross-modifying code).
                        std::arch::x86_64::__cpuid(0);
                    }
                    code
                }
                Err(CompileError::Unsupported) => NEVER,
                Err(CompileError::Full) => {
                    self.full = true;
                    0
                }
            };
        }
    }
}
