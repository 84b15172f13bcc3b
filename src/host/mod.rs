//! The host side of a live run: everything that talks to the world outside the guest (the
//! terminal, network backends, QMP clients, the wall clock for `--icount-shift auto`). Its
//! input reaches the guest only through the replay layer's `Session`.

pub mod autoshift;
pub mod console;
pub mod net;
pub mod qmp;

/// What the host threads (console reader, network backends) send the live loop, on one
/// channel, so that a sleeping guest wakes for any of them.
pub enum HostEvent {
    /// Bytes typed or piped in on the console.
    Typed(Vec<u8>),
    /// `Ctrl-A x`: the user asks to quit.
    Quit,
    /// A frame from NIC `nic`'s network backend.
    Frame { nic: usize, frame: Vec<u8> },
}
