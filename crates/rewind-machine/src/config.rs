//! What a machine is made of: RAM size, devices, command line, clock shift. The host's
//! values (RTC base, entropy) are inputs (see `input.rs`), not configuration.

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const RAM_BASE: u64 = crate::memmap::DRAM.base;
/// The smallest RAM the board accepts.
pub const MIN_RAM: u64 = 2 << 20;
/// The largest RAM the board accepts (as far as the `virt` map leaves room for).
pub const MAX_RAM: u64 = crate::memmap::DRAM.size;
/// The most harts a board may have (`--smp`).
pub const MAX_HARTS: u32 = 32;
/// Instructions a hart runs before the next hart takes its turn, unless it waits first.
/// Debian's boot on four harts (`bench/boot.sh`'s, no pacing) took 3.59 s with 1,000, 2.80 s
/// with 10,000 and 2.60 s with 100,000; a longer turn also makes a hart that spins on another
/// (a lock, an IPI's answer) wait longer, up to three turns on four harts.
pub const DEFAULT_QUANTUM: u64 = 10_000;

/// A device in a virtio-mmio slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    /// virtio-rng: entropy from the host, recorded.
    VirtioRng,
    /// virtio-blk on the next disk image of [`BootImages::disks`].
    VirtioBlk,
    /// virtio-input keyboard, tablet (absolute pointer) and mouse (relative).
    VirtioKeyboard,
    VirtioTablet,
    VirtioMouse,
    /// virtio-net: frames from the host's network backend, recorded.
    VirtioNet,
}

/// How the machine is put together. The host's values (the RTC's base, the device tree's
/// entropy) are not configuration but inputs: [`InputEvent::RtcBase`], [`InputEvent::Entropy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    pub ram_base: u64,
    pub ram_size: u64,
    pub bootargs: Option<String>,
    /// Virtual nanoseconds per instruction = 2^icount_shift at the start; with
    /// `--icount-shift auto`, [`InputEvent::IcountShift`] changes it as the run goes.
    pub icount_shift: u32,
    /// The shift follows the wall clock (`--icount-shift auto`): for reports only; the
    /// changes themselves are input events. Not written when false, so a fixed-shift
    /// manifest reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub icount_auto: bool,
    /// Devices in the virtio-mmio slots, from the last slot down (as QEMU fills them).
    #[serde(default)]
    pub devices: Vec<DeviceKind>,
    /// How far above the kernel's start the initrd goes at most: it lies at kernel +
    /// min(RAM / 2, this), as QEMU places it. A recording names it, so that one made when
    /// Rewind followed QEMU 7.2 (128 MiB; the field did not exist then) replays unchanged.
    #[serde(default = "qemu7_initrd_offset")]
    pub initrd_max_offset: u64,
    /// Harts on the board (`--smp`), numbered from 0. Not written when 1, so a one-hart
    /// manifest reads as before.
    #[serde(default = "one_hart", skip_serializing_if = "is_one_hart")]
    pub harts: u32,
    /// With several harts: instructions each runs in its turn (`--quantum`).
    #[serde(default = "default_quantum")]
    pub quantum: u64,
    /// Chaos mode (`--chaos`): the seed the schedule is drawn from (see `chaos.rs`); `None`
    /// for the fixed schedule, and then not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<u64>,
}

fn one_hart() -> u32 {
    1
}

fn is_one_hart(harts: &u32) -> bool {
    *harts == 1
}

fn default_quantum() -> u64 {
    DEFAULT_QUANTUM
}

fn qemu7_initrd_offset() -> u64 {
    128 << 20
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            ram_base: RAM_BASE,
            ram_size: 128 << 20,
            bootargs: None,
            icount_shift: 0,
            icount_auto: false,
            devices: Vec::new(),
            initrd_max_offset: 512 << 20, // QEMU 10
            harts: 1,
            quantum: DEFAULT_QUANTUM,
            chaos: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum MachineError {
    #[error("cannot use {what}: {reason}")]
    BadImage { what: String, reason: String },
    #[error("{what} ({size} bytes) does not fit in RAM at {at:#x}; give more --memory")]
    DoesNotFit { what: String, size: u64, at: u64 },
    #[error(
        "memory size {size} bytes is not usable: give --memory between 2M and 64G, in whole pages"
    )]
    BadMemorySize { size: u64 },
    #[error("the host cannot give {size} bytes of guest RAM: give less --memory")]
    OutOfMemory { size: u64 },
    #[error("the snapshot cannot be used: {0}")]
    BadSnapshot(String),
    #[error("cannot build the device tree: {0}")]
    DeviceTree(String),
    #[error("the device tree ({size} bytes) does not fit in RAM; give more --memory")]
    DeviceTreeTooBig { size: usize },
    #[error("cannot make a board of {harts} harts: give --smp between 1 and {MAX_HARTS}")]
    BadHartCount { harts: u32 },
    #[error("a quantum of 0 instructions lets no hart run: give --quantum 1 or more")]
    BadQuantum,
    #[error(
        "chaos mode perturbs how harts take turns, and one hart has none: give --smp 2 or more"
    )]
    ChaosOnOneHart,
    #[error("nothing to run: give --kernel, or --bios with a firmware file")]
    NothingToRun,
}
