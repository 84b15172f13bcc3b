//! Compiling on a thread of its own, so that the run never waits for Cranelift: a hot block
//! is interpreted until its code arrives. When code arrives changes only speed, never what the
//! guest computes, so this costs no determinism.

use super::{BlockFn, CompileError, EnterFn, Jit, JitStats, Placement, RegionBlock};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

enum Request {
    Compile {
        index: usize,
        generation: u64,
        blocks: Vec<RegionBlock>,
        placement: Placement,
    },
    /// Forget all code: the run loop has dropped every pointer to it.
    Clear,
}

/// A block's code, or why there is none.
pub(crate) struct Done {
    pub index: usize,
    /// The cache generation the block was asked for in: results for an older one are stale.
    pub generation: u64,
    pub result: Result<BlockFn, CompileError>,
}

/// The compiling thread and the channels to it.
pub(crate) struct Worker {
    requests: Option<Sender<Request>>,
    done: Receiver<(Done, JitStats)>,
    thread: Option<JoinHandle<()>>,
    pub enter: EnterFn,
    pub stats: JitStats,
    /// Requests sent whose answer has not been read.
    pub in_flight: usize,
}

impl Worker {
    /// Moves `jit` to a new thread; `None` if the host has no thread for it.
    pub(crate) fn start(mut jit: Jit) -> Option<Worker> {
        let (requests, inbox) = channel::<Request>();
        let (outbox, done) = channel();
        let enter = jit.enter;
        let thread = std::thread::Builder::new()
            .name("rewind-jit".into())
            .spawn(move || {
                for request in inbox {
                    match request {
                        Request::Compile {
                            index,
                            generation,
                            blocks,
                            placement,
                        } => {
                            let result = jit.compile(&blocks, placement);
                            let answer = Done {
                                index,
                                generation,
                                result,
                            };
                            if outbox.send((answer, jit.stats)).is_err() {
                                return;
                            }
                        }
                        Request::Clear => jit.clear(),
                    }
                }
            })
            .ok()?;
        Some(Worker {
            requests: Some(requests),
            done,
            thread: Some(thread),
            enter,
            stats: JitStats::default(),
            in_flight: 0,
        })
    }

    pub(crate) fn submit(
        &mut self,
        index: usize,
        generation: u64,
        blocks: Vec<RegionBlock>,
        placement: Placement,
    ) {
        let request = Request::Compile {
            index,
            generation,
            blocks,
            placement,
        };
        if let Some(requests) = &self.requests {
            if requests.send(request).is_ok() {
                self.in_flight += 1;
            }
        }
    }

    /// Drops all code (after the run loop dropped its pointers to it).
    pub(crate) fn clear(&mut self) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(Request::Clear);
        }
        self.stats.cache_flushes += 1;
    }

    /// The next answer, if one is there.
    pub(crate) fn try_next(&mut self) -> Option<Done> {
        let (done, stats) = self.done.try_recv().ok()?;
        self.in_flight -= 1;
        let flushes = self.stats.cache_flushes;
        self.stats = JitStats {
            cache_flushes: flushes,
            ..stats
        };
        Some(done)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; its code goes with it.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
