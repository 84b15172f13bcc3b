//! Host input entering the machine (DESIGN.md: one boundary for the host): the events, and
//! how the machine takes them and tells how much it can take.

use crate::devices::virtio::input::{EvdevEvent, Input};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio_mmio::transport::Transport;
use crate::{Machine, MAX_ICOUNT_SHIFT};

/// A value from the host entering the guest (DESIGN.md: one boundary for the host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputEvent {
    /// Bytes received by UART0, all at once; no more than [`Machine::console_room`].
    Console(Vec<u8>),
    /// The host's wall clock: nanoseconds since the Unix epoch that the RTC shows at virtual
    /// time 0. Given before the first instruction; later, it sets the RTC as a host would.
    RtcBase(u64),
    /// Host entropy for the device tree's `/chosen/rng-seed`. Before the first instruction it
    /// rewrites the device tree in RAM; later, it is used when the board resets.
    Entropy(Vec<u8>),
    /// Host entropy for virtio-rng, no more than [`Machine::entropy_wanted`] bytes.
    Rng(Vec<u8>),
    /// Keyboard and pointer events for the virtio-input devices (each takes its kind).
    Input(Vec<EvdevEvent>),
    /// An Ethernet frame for virtio-net device `nic` (counted in the order of
    /// [`MachineConfig::devices`]).
    Net { nic: u8, frame: Vec<u8> },
    /// `--icount-shift auto`: from this instruction on, each instruction is 2^shift virtual
    /// nanoseconds (at most [`MAX_ICOUNT_SHIFT`]); virtual time goes on from where it is.
    IcountShift(u8),
}

impl InputEvent {
    /// A short name of the kind of event, for reports.
    pub fn kind_name(&self) -> &'static str {
        match self {
            InputEvent::Console(_) => "console",
            InputEvent::RtcBase(_) => "rtc_base",
            InputEvent::Entropy(_) => "entropy",
            InputEvent::Rng(_) => "rng",
            InputEvent::Input(_) => "input",
            InputEvent::Net { .. } => "net",
            InputEvent::IcountShift(_) => "icount_shift",
        }
    }
}

impl Machine {
    /// Keeps the frames the guest sends for [`Machine::take_net_output`] (a live run with
    /// network backends), from now on and across resets; otherwise they are dropped.
    pub fn attach_network(&mut self) {
        self.network_attached = true;
    }

    /// Frames the guest sent since the last call, with the NIC each left by.
    pub fn take_net_output(&mut self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut self.net_sent)
    }

    /// Takes what the virtio devices sent out of the machine: a NIC's frames are kept for
    /// [`Machine::take_net_output`] if a host backend takes them, dropped otherwise.
    pub(crate) fn collect_sent(&mut self) {
        for (nic, &slot) in self.bus.nic_slots.iter().enumerate() {
            let Some(t) = self.bus.virtio[slot].as_mut() else {
                continue;
            };
            let frames = t.take_sent();
            if self.network_attached {
                self.net_sent.extend(frames.into_iter().map(|f| (nic, f)));
            }
        }
    }

    /// Frames NIC `nic` holds for its driver (the host should wait while it holds many).
    pub fn net_pending(&mut self, nic: usize) -> usize {
        let net = self.bus.nic(nic).and_then(Transport::device_mut::<Net>);
        net.map_or(0, |n| n.pending())
    }

    /// How many bytes of host entropy virtio-rng devices wait for.
    pub fn entropy_wanted(&self) -> usize {
        self.bus
            .virtio
            .iter()
            .flatten()
            .filter_map(Transport::device::<Rng>)
            .map(Rng::wanted)
            .sum()
    }

    /// How many console bytes UART0 can take now (room in its receive FIFO).
    pub fn console_room(&self) -> usize {
        self.bus.uart.rx_space()
    }

    /// Delivers a value from the host to the guest, now (between two instructions). This is
    /// the one way host input enters the machine, so a recording of `(icount, event)` pairs
    /// and the configuration reproduce a run. Only the replay layer calls it: its `Session`
    /// (live runs, which write every event down) and `Player` (replays); the command line
    /// hands its input to a `Session` and sees the machine only through `&Machine`.
    pub fn inject(&mut self, event: &InputEvent) {
        match event {
            InputEvent::Console(bytes) => {
                for &b in bytes {
                    // Callers send no more than `console_room`; a byte past it is dropped, as a
                    // 16550 drops bytes that overrun its FIFO.
                    self.bus.uart.receive(b);
                }
            }
            InputEvent::RtcBase(ns) => {
                self.bus.rtc.state.base_ns = *ns;
            }
            InputEvent::Input(events) => {
                for t in self.bus.virtio.iter_mut().flatten() {
                    t.give(&mut self.ram, |i: &mut Input, ctx| {
                        i.take_host_events(events, ctx)
                    });
                }
            }
            InputEvent::Net { nic, frame } => {
                if let Some(t) = self.bus.nic(*nic as usize) {
                    t.give(&mut self.ram, |n: &mut Net, ctx| {
                        n.take_host_frame(frame, ctx)
                    });
                }
            }
            InputEvent::Rng(bytes) => {
                let mut rest = &bytes[..];
                for t in self.bus.virtio.iter_mut().flatten() {
                    let wanted = t.device::<Rng>().map_or(0, Rng::wanted);
                    let n = wanted.min(rest.len());
                    if n > 0 {
                        t.give(&mut self.ram, |r: &mut Rng, ctx| {
                            r.fill_from_host(&rest[..n], ctx)
                        });
                        rest = &rest[n..];
                    }
                }
            }
            InputEvent::IcountShift(shift) => {
                let mut clock = self.hart.state.clock;
                clock.set_shift(
                    self.hart.state.icount,
                    (*shift as u32).min(MAX_ICOUNT_SHIFT),
                );
                self.set_clock(clock);
            }
            InputEvent::Entropy(bytes) => {
                self.rng_seed = bytes.clone();
                let before_start = self.hart.state.icount == 0 && self.dtb_addr != 0;
                if before_start && !self.dtb_given {
                    self.replace_dtb();
                }
            }
        }
        self.collect_sent();
        // The input may raise an interrupt that wakes a sleeping hart.
        self.update_interrupt_lines();
    }
}
