//! Which engine runs guest code: the interpreter, or the interpreter with hot blocks compiled
//! to host code. The choice never changes what the guest computes, only how fast: it is not
//! part of a machine's configuration or of a recording.

use crate::decode::Op;
#[cfg(target_arch = "x86_64")]
use crate::jit::{BlockFn, CompileError, Jit};
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

/// The compiling tier's share of the code cache: compiled code and run counts per block slot,
/// kept beside `Ram`'s decoded blocks and dropped with them.
pub(crate) struct Compiler {
    #[cfg(target_arch = "x86_64")]
    state: State,
    /// Per block slot (see `ram::block_index`): run count or compiled address.
    compiled: Vec<usize>,
    /// Runs of a block before it is compiled.
    hot_threshold: usize,
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
            hot_threshold: DEFAULT_HOT_THRESHOLD,
        }
    }
}

#[cfg(target_arch = "x86_64")]
enum State {
    Off,
    /// On, and the compiler is made when the first block gets hot.
    Lazy,
    On(Box<Jit>),
}

/// What the run loop should do with a block.
pub(crate) enum Plan {
    Interpret,
    #[cfg(target_arch = "x86_64")]
    Run(BlockFn),
    /// It just got hot: compile it (see [`Compiler::compile`]) and run it.
    Compile,
}

impl Compiler {
    pub(crate) fn new(engine: Engine) -> Result<Compiler, EngineError> {
        match engine {
            Engine::Interp => Ok(Compiler {
                #[cfg(target_arch = "x86_64")]
                state: State::Off,
                compiled: Vec::new(),
                hot_threshold: DEFAULT_HOT_THRESHOLD,
            }),
            #[cfg(target_arch = "x86_64")]
            Engine::Jit => {
                let jit = Jit::new().ok_or(EngineError::JitUnavailable)?;
                Ok(Compiler {
                    state: State::On(Box::new(jit)),
                    compiled: Vec::new(),
                    hot_threshold: DEFAULT_HOT_THRESHOLD,
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
        self.hot_threshold = (runs as usize).min(NEVER - 1);
    }

    pub(crate) fn stats(&self) -> Option<crate::JitStats> {
        #[cfg(target_arch = "x86_64")]
        if let State::On(jit) = &self.state {
            return Some(jit.stats);
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
        #[cfg(target_arch = "x86_64")]
        if let State::On(jit) = &mut self.state {
            jit.clear();
        }
    }

    /// The per-slot table, for compiled code to find the blocks it jumps to, and the
    /// trampoline into compiled code. Valid until the next change to the cache.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn entry_points(&self) -> Option<(*const usize, crate::jit::EnterFn)> {
        match &self.state {
            State::On(jit) => Some((self.compiled.as_ptr(), jit.enter)),
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
        *entry += 1;
        if *entry > self.hot_threshold {
            Plan::Compile
        } else {
            Plan::Interpret
        }
    }

    /// Compiles the block at `index`. `None`: it stays interpreted (or the cache was full and
    /// everything was dropped: the caller must look the block up again, as after `clear`).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn compile(&mut self, index: usize, ops: &[Op]) -> Result<Option<BlockFn>, ()> {
        if matches!(self.state, State::Lazy) {
            self.state = match Jit::new() {
                Some(jit) => State::On(Box::new(jit)),
                None => State::Off,
            };
        }
        let State::On(jit) = &mut self.state else {
            return Ok(None);
        };
        let slot = index % crate::ram::SLOTS_PER_PAGE;
        let placement = crate::jit::Placement {
            page_offset: 2 * slot as u64,
            page_first_index: (index - slot) as u64,
        };
        match jit.compile(ops, placement) {
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
}
