//! The host side of the guest console: standard input read on a thread (raw mode when it is a
//! terminal, with QEMU's `Ctrl-A x` to quit), delivered to the machine as it comes.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use super::HostEvent;

const CTRL_A: u8 = 0x01;

/// Puts a terminal in raw mode for as long as it lives.
pub struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    /// Raw mode on standard input, if it is a terminal.
    pub fn enable() -> Option<RawTerminal> {
        // SAFETY: isatty, tcgetattr, cfmakeraw and tcsetattr are given a valid descriptor and
        // a termios struct that lives for the duration of each call.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            // Keep output post-processing so that our own messages on stderr stay readable.
            raw.c_oflag = saved.c_oflag;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the attributes saved from the same descriptor.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

/// Starts the thread that reads standard input. With `escapes` (a terminal), `Ctrl-A x` quits
/// and `Ctrl-A Ctrl-A` sends one `Ctrl-A`, as in QEMU. The end of input ends only the thread.
pub fn spawn_reader(escapes: bool, tx: Sender<HostEvent>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        let mut after_ctrl_a = false;
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut out = Vec::with_capacity(n);
            for &b in &buf[..n] {
                if !escapes {
                    out.push(b);
                } else if after_ctrl_a {
                    after_ctrl_a = false;
                    match b {
                        b'x' | b'X' => {
                            let _ = tx.send(HostEvent::Typed(std::mem::take(&mut out)));
                            let _ = tx.send(HostEvent::Quit);
                            return;
                        }
                        CTRL_A => out.push(CTRL_A),
                        _ => {}
                    }
                } else if b == CTRL_A {
                    after_ctrl_a = true;
                } else {
                    out.push(b);
                }
            }
            if !out.is_empty() && tx.send(HostEvent::Typed(out)).is_err() {
                return;
            }
        }
    });
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM end the run cleanly (a recording is completed) instead of
/// killing the process; [`signalled`] tells when one came.
pub fn catch_signals() {
    let handler: extern "C" fn(libc::c_int) = note_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_signals`].
pub fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}
