//! The connection to gdb: a TCP stream, with the packets gdbstub 0.7 cannot parse mended on
//! the way in.
//!
//! gdbstub drops the whole connection on a packet it cannot parse. A bare `qSupported` (no
//! `:` and no features; legal in the protocol, and what gdb's `maint packet qSupported`
//! sends) is one: it arrives here as `qSupported:multiprocess-`, which means the same thing
//! (the client announces no features), so gdbstub answers it like any other.
//!
//! It also notes what gdb says of threads that gdbstub does not pass on ([`ThreadHints`]).

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::TcpStream;
use std::rc::Rc;

use gdbstub::common::Tid;
use gdbstub::conn::{Connection, ConnectionExt};

/// Packet bodies rewritten before gdbstub sees them: (as sent, as gdbstub gets it).
const MENDED: &[(&[u8], &[u8])] = &[(b"qSupported", b"qSupported:multiprocess-")];

/// Longest packet read whole in search of a body to mend; longer ones pass on unchanged.
const MAX_PACKET: usize = 64 * 1024;

pub struct GdbConnection {
    stream: TcpStream,
    /// Bytes read from the stream and not yet given to gdbstub.
    ready: VecDeque<u8>,
    hints: Rc<ThreadHints>,
}

/// What gdb's packets tell of its threads beyond what gdbstub passes on to the target.
#[derive(Debug, Default)]
pub struct ThreadHints {
    /// The last `Hc` packet named one thread. gdbstub hands "any thread" (`Hc0`, which gdb
    /// sends before stepping backwards with every thread resumed) to the target as the first
    /// thread, which the target could not tell from thread 1 named.
    pub thread_named: Cell<bool>,
    /// gdb's selected thread, as far as the protocol shows: the thread gdb asked about last
    /// with `T` (is it alive?), which it does when the user selects a thread (`thread N`) and
    /// when it goes back to the thread it was stepping, even when it has that thread's
    /// registers already and reads nothing; or, set by the target, the thread of a stop.
    pub selected: Cell<Option<Tid>>,
}

impl GdbConnection {
    pub fn new(stream: TcpStream, hints: Rc<ThreadHints>) -> GdbConnection {
        GdbConnection {
            stream,
            ready: VecDeque::new(),
            hints,
        }
    }

    fn read_byte(&mut self) -> io::Result<u8> {
        self.stream.set_nonblocking(false)?;
        let mut byte = [0u8];
        self.stream.read_exact(&mut byte)?;
        Ok(byte[0])
    }

    /// After a `$`: reads the packet through its checksum and queues it, mended if needed.
    fn read_packet(&mut self) -> io::Result<()> {
        let mut body = Vec::new();
        loop {
            let byte = self.read_byte()?;
            if byte == b'#' || body.len() >= MAX_PACKET {
                if let Some(thread) = body.strip_prefix(b"Hc") {
                    self.hints.thread_named.set(one_thread(thread).is_some());
                } else if let Some(thread) = body.strip_prefix(b"T") {
                    if let Some(tid) = one_thread(thread) {
                        self.hints.selected.set(Some(tid));
                    }
                }
                let tail = if byte == b'#' {
                    vec![byte, self.read_byte()?, self.read_byte()?]
                } else {
                    vec![byte]
                };
                let packet = match MENDED.iter().find(|(sent, _)| *sent == body.as_slice()) {
                    Some((_, mended)) if byte == b'#' => framed(mended),
                    _ => [b"$".as_slice(), &body, &tail].concat(),
                };
                self.ready.extend(packet);
                return Ok(());
            }
            body.push(byte);
        }
    }
}

/// The thread a thread id of the protocol (`TID` or `pPID.TID`, in hex) names, if it names
/// one: not 0 (any) or -1 (all).
fn one_thread(id: &[u8]) -> Option<Tid> {
    let tid = match id.strip_prefix(b"p") {
        Some(both) => both.splitn(2, |&b| b == b'.').nth(1)?,
        None => id,
    };
    Tid::new(usize::from_str_radix(std::str::from_utf8(tid).ok()?, 16).ok()?)
}

/// `$body#checksum`.
fn framed(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    [b"$".as_slice(), body, format!("#{sum:02x}").as_bytes()].concat()
}

impl Connection for GdbConnection {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.stream.write(byte)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Connection::write_all(&mut self.stream, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Connection::flush(&mut self.stream)
    }

    fn on_session_start(&mut self) -> io::Result<()> {
        self.stream.on_session_start()
    }
}

impl ConnectionExt for GdbConnection {
    fn read(&mut self) -> io::Result<u8> {
        if self.ready.is_empty() {
            let byte = self.read_byte()?;
            if byte != b'$' {
                return Ok(byte);
            }
            self.read_packet()?;
        }
        Ok(self.ready.pop_front().expect("a packet was queued"))
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        match self.ready.front() {
            Some(&byte) => Ok(Some(byte)),
            None => ConnectionExt::peek(&mut self.stream),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_matches_gdb_checksums() {
        // `$qSupported#37` is what gdb sends for `maint packet qSupported`.
        assert_eq!(framed(b"qSupported"), b"$qSupported#37");
        assert_eq!(framed(b"g"), b"$g#67");
    }

    #[test]
    fn any_and_all_threads_are_told_from_one() {
        for (id, one) in [
            (&b"0"[..], None),
            (b"-1", None),
            (b"p1.0", None),
            (b"p1.-1", None),
            (b"p1", None),
            (b"2", Some(2)),
            (b"p1.3", Some(3)),
            (b"p01.0a", Some(10)),
        ] {
            let one = one.and_then(Tid::new);
            assert_eq!(one_thread(id), one, "{}", String::from_utf8_lossy(id));
        }
    }
}
