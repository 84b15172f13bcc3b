//! State digests: a compact summary of all guest-visible state that says not only *whether*
//! two machines differ but *where*: pc, registers, CSRs, each device, and RAM by region.
//!
//! RAM is hashed page by page and the page hashes are kept, so a digest costs only the pages
//! written since the previous one (the dirty set of [`rewind_cpu::Ram`]). Disk overlays keep a
//! hash in each block, forgotten when the block is written, to the same effect.
//!
//! How device states are hashed is versioned ([`DigestVersion`]), since recordings keep
//! digests: a recording is checked with the version of its format.

use rewind_cpu::ram::PAGE_SIZE;
use rewind_cpu::Ram;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// RAM is summarised as this many region hashes (fewer for small RAM).
pub const RAM_REGIONS: usize = 128;

/// How a digest hashes device states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DigestVersion {
    /// Recording format 1: a hash of each state's `Debug` text, and all virtio slots as one
    /// entry. Only for checking format-1 recordings: slow, and it changes with any `Debug`.
    DebugText = 1,
    /// Recording format 2: xxh3 of each state's postcard encoding (postcard's wire format is
    /// specified and stable; the encoding streams into the hasher, nothing is copied), a
    /// virtio entry per slot, and a disk overlay as the hashes of its blocks.
    #[default]
    Postcard = 2,
}

/// A summary of the machine's state at one instruction count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    pub icount: u64,
    pub pc: u64,
    pub privilege: u8,
    pub x: Vec<u64>,
    pub f: Vec<u64>,
    /// CSR name and value.
    pub csrs: Vec<(String, u64)>,
    /// Device (and other hart state) name and a hash of its state.
    pub devices: Vec<(String, u64)>,
    /// Guest physical address of RAM and the size of each region.
    pub ram_base: u64,
    pub ram_region_size: u64,
    /// A hash of each RAM region.
    pub ram_regions: Vec<u64>,
    /// On a board of several harts, the registers of every hart but hart 0 (whose are above),
    /// so that a divergence names the hart and the register. Their state is hashed in
    /// `devices` already: not part of [`StateDigest::hash`]. Not in this struct's encoding,
    /// so that recordings made before it still parse: a recording writes it after the
    /// digest (see `rewind_replay`).
    #[serde(skip)]
    pub harts: Vec<HartDigest>,
}

/// One hart's registers in a [`StateDigest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartDigest {
    pub id: u64,
    pub pc: u64,
    pub privilege: u8,
    pub x: Vec<u64>,
    pub f: Vec<u64>,
    pub csrs: Vec<(String, u64)>,
}

impl HartDigest {
    /// What differs between `self` (expected) and `found`, one line each, each line starting
    /// with `prefix`: pc, privilege, registers, then CSRs by name (those `found` has beyond
    /// `self`'s are not compared: CSRs a newer rewind added since a recording was made).
    fn differences(&self, found: &HartDigest, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.pc != found.pc {
            out.push(format!(
                "{prefix}pc: expected {:#x}, found {:#x}",
                self.pc, found.pc
            ));
        }
        if self.privilege != found.privilege {
            out.push(format!(
                "{prefix}privilege: expected {}, found {}",
                self.privilege, found.privilege
            ));
        }
        let pairs = |a: &[u64], b: &[u64], file: &str, names: &[&str], out: &mut Vec<String>| {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    let name = names.get(i).map_or(String::new(), |n| format!(" ({n})"));
                    out.push(format!(
                        "{prefix}register {file}{i}{name}: expected {x:#x}, found {y:#x}"
                    ));
                }
            }
        };
        pairs(&self.x, &found.x, "x", &ABI_NAMES, &mut out);
        pairs(&self.f, &found.f, "f", &[], &mut out);
        for (name, x) in &self.csrs {
            match found.csrs.iter().find(|(n, _)| n == name) {
                Some((_, y)) if x != y => {
                    out.push(format!("{prefix}CSR {name}: expected {x:#x}, found {y:#x}"))
                }
                Some(_) => {}
                None => out.push(format!("{prefix}CSR {name}: expected {x:#x}, found none")),
            }
        }
        out
    }
}

impl StateDigest {
    /// One hash of everything in the digest.
    pub fn hash(&self) -> u64 {
        let mut h = Xxh3::new();
        h.update(&self.icount.to_le_bytes());
        h.update(&self.pc.to_le_bytes());
        h.update(&[self.privilege]);
        for v in self.x.iter().chain(&self.f).chain(&self.ram_regions) {
            h.update(&v.to_le_bytes());
        }
        for (name, v) in self.csrs.iter().chain(&self.devices) {
            h.update(name.as_bytes());
            h.update(&v.to_le_bytes());
        }
        h.digest()
    }

    /// Hart 0's registers, as a [`HartDigest`].
    fn hart0(&self) -> HartDigest {
        HartDigest {
            id: 0,
            pc: self.pc,
            privilege: self.privilege,
            x: self.x.clone(),
            f: self.f.clone(),
            csrs: self.csrs.clone(),
        }
    }

    /// What differs between `self` (expected) and `other` (found), one line each, in the order
    /// pc, privilege, registers, CSRs, devices, RAM; empty when they match. CSRs are matched
    /// by name, and those `other` has beyond `self`'s are not compared (CSRs a newer rewind
    /// added since a recording was made). On a board of several harts, the lines about a hart
    /// start with `hart N: `.
    pub fn differences(&self, other: &StateDigest) -> Vec<String> {
        let mut out = Vec::new();
        if self.icount != other.icount {
            out.push(format!(
                "instruction count: expected {}, found {}",
                self.icount, other.icount
            ));
        }
        // On a board of several harts, every line about a hart names it.
        let several = !self.harts.is_empty();
        let prefix = |id: u64| {
            if several {
                format!("hart {id}: ")
            } else {
                String::new()
            }
        };
        out.extend(self.hart0().differences(&other.hart0(), &prefix(0)));
        for ((name, x), (_, y)) in self.devices.iter().zip(&other.devices) {
            if x == y {
                continue;
            }
            // A hart's registers say more than its hash.
            let id = name
                .strip_prefix("hart ")
                .and_then(|id| id.parse::<u64>().ok());
            let registers = id.and_then(|id| {
                let of = |d: &StateDigest| d.harts.iter().find(|h| h.id == id).cloned();
                Some(of(self)?.differences(&of(other)?, &prefix(id)))
            });
            match registers {
                Some(lines) if !lines.is_empty() => out.extend(lines),
                _ => out.push(format!("device {name} state differs")),
            }
        }
        for (i, (x, y)) in self.ram_regions.iter().zip(&other.ram_regions).enumerate() {
            if x != y {
                let start = self.ram_base + i as u64 * self.ram_region_size;
                out.push(format!(
                    "RAM differs in {start:#x}..{:#x}",
                    start + self.ram_region_size
                ));
            }
        }
        fn shape(d: &StateDigest) -> (usize, usize, Vec<&str>, u64, u64, usize) {
            let names = d.devices.iter().map(|(n, _)| n.as_str()).collect();
            (
                d.x.len(),
                d.f.len(),
                names,
                d.ram_base,
                d.ram_region_size,
                d.ram_regions.len(),
            )
        }
        if out.is_empty() && shape(self) != shape(other) {
            out.push("the state differs (shapes differ: a different machine?)".into());
        }
        out
    }
}

const ABI_NAMES: [&str; 32] = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4",
    "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
    "t5", "t6",
];

/// Page hashes of RAM, brought up to date from the dirty set.
#[derive(Default)]
pub(crate) struct RamHashes {
    pages: Vec<u64>,
}

impl RamHashes {
    /// Rehashes the `dirty` pages (a bit per page) and returns the region hashes with the region size.
    pub(crate) fn update(&mut self, ram: &Ram, dirty: &[u64]) -> (u64, Vec<u64>) {
        let data = ram.contents();
        let page_hash = |p: usize| {
            let start = p * PAGE_SIZE as usize;
            xxh3_64(&data[start..start + PAGE_SIZE as usize])
        };
        if self.pages.len() != ram.pages() {
            // RAM starts zeroed, and every write since is in the dirty set.
            let zero_page = xxh3_64(&[0u8; PAGE_SIZE as usize]);
            self.pages = vec![zero_page; ram.pages()];
        }
        crate::snapshot::for_each_bit(dirty, |p| self.pages[p] = page_hash(p));
        let per_region = self.pages.len().div_ceil(RAM_REGIONS).max(1);
        let regions = self
            .pages
            .chunks(per_region)
            .map(|chunk| {
                let mut h = Xxh3::new();
                for v in chunk {
                    h.update(&v.to_le_bytes());
                }
                h.digest()
            })
            .collect();
        (per_region as u64 * PAGE_SIZE, regions)
    }
}

/// A hash of a value's `Debug` form ([`DigestVersion::DebugText`]).
pub(crate) fn debug_hash(value: &dyn std::fmt::Debug) -> u64 {
    xxh3_64(format!("{value:?}").as_bytes())
}

/// A hash of a value's postcard encoding ([`DigestVersion::Postcard`]), streamed into the
/// hasher.
pub(crate) fn state_hash<T: Serialize + ?Sized>(value: &T) -> u64 {
    struct Hasher(Xxh3);
    impl postcard::ser_flavors::Flavor for Hasher {
        type Output = u64;
        fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
            self.0.update(&[byte]);
            Ok(())
        }
        fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
            self.0.update(bytes);
            Ok(())
        }
        fn finalize(self) -> postcard::Result<u64> {
            Ok(self.0.digest())
        }
    }
    // Plain data with derived serialisation: encoding it cannot fail.
    postcard::serialize_with_flavor(value, Hasher(Xxh3::new())).unwrap_or_default()
}

/// The virtio slots as format 1 hashed them: the `Debug` text of each slot's transport state
/// and device state, with the disk overlay as a map from sector to bytes (names and shapes as
/// they were then; `Debug` of a reference is the referent's).
pub(crate) mod legacy {
    use std::collections::BTreeMap;

    use crate::devices::virtio::input::InputState;
    use crate::devices::virtio::net::NetState;
    use crate::devices::virtio::rng::RngState;
    use crate::devices::virtio::DeviceStateRef;
    use crate::devices::virtio_mmio::transport::{Transport, TransportState};

    #[derive(Debug)]
    #[allow(dead_code)] // Read through Debug only.
    enum DeviceState<'a> {
        Rng(&'a RngState),
        Blk(BlkState),
        Input(&'a InputState),
        Net(&'a NetState),
    }

    #[derive(Debug)]
    #[allow(dead_code)] // Read through Debug only.
    struct BlkState {
        overlay: BTreeMap<u64, Vec<u8>>,
    }

    /// The CLINT as a one-hart board laid it out: these digests predate boards of several
    /// harts.
    #[derive(Debug)]
    #[allow(dead_code)] // Read through Debug only.
    struct ClintState {
        msip: bool,
        mtimecmp: u64,
    }

    pub(crate) fn clint_hash(state: &crate::devices::clint::ClintState) -> u64 {
        let hart0 = state.harts.first().cloned().unwrap_or_default();
        super::debug_hash(&ClintState {
            msip: hart0.msip,
            mtimecmp: hart0.mtimecmp,
        })
    }

    pub(crate) fn virtio_hash(slots: &[Option<Transport>]) -> u64 {
        let slots: Vec<Option<(&TransportState, DeviceState)>> = slots
            .iter()
            .map(|t| {
                t.as_ref().map(|t| {
                    let device = match t.saved_state() {
                        DeviceStateRef::Rng(r) => DeviceState::Rng(r),
                        DeviceStateRef::Blk(b) => DeviceState::Blk(BlkState {
                            overlay: b.written_sectors(),
                        }),
                        DeviceStateRef::Input(i) => DeviceState::Input(i),
                        DeviceStateRef::Net(n) => DeviceState::Net(n),
                    };
                    (&t.state, device)
                })
            })
            .collect();
        super::debug_hash(&slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Machine, MachineConfig};

    /// Region hashes computed from scratch, for comparison with the incremental ones.
    fn full_regions(ram: &Ram) -> Vec<u64> {
        let mut fresh = RamHashes::default();
        let all = vec![u64::MAX; ram.pages().div_ceil(64)];
        let mut copy = Ram::new(ram.base(), ram.size());
        copy.write(ram.base(), ram.contents()).unwrap();
        fresh.update(&copy, &all).1
    }

    #[test]
    fn incremental_ram_hashes_see_every_store_including_the_fast_path() {
        // Stores a counter to 64 pages in turn, forever: sd, addi, lui, add, addi, bnez.
        let program: [u32; 13] = [
            0x801002b7, 0x02029293, 0x0202d293, 0x00000313, 0x00028e13, 0x04000e93, 0x006e3023,
            0x00130313, 0x00001f37, 0x01ee0e33, 0xfffe8e93, 0xfe0e96e3, 0xfe1ff06f,
        ];
        let mut machine = Machine::bare(MachineConfig::default()).unwrap();
        let code: Vec<u8> = program.iter().flat_map(|w| w.to_le_bytes()).collect();
        machine.ram.write(crate::RAM_BASE, &code).unwrap();
        let start = machine.digest();
        assert_eq!(start.ram_regions, full_regions(&machine.ram));
        let mut seen = vec![start.hash()];
        for budget in [200, 1000, 50, 5000] {
            machine.run(None, budget);
            let digest = machine.digest();
            assert_eq!(digest.ram_regions, full_regions(&machine.ram));
            assert!(!seen.contains(&digest.hash()), "the digest missed stores");
            seen.push(digest.hash());
        }
    }

    #[test]
    fn differences_name_what_differs() {
        let a = StateDigest {
            icount: 10,
            pc: 0x8000_0000,
            x: vec![0; 32],
            f: vec![0; 32],
            csrs: vec![("satp".into(), 0)],
            devices: vec![("uart".into(), 1)],
            ram_base: 0x8000_0000,
            ram_region_size: 0x10_0000,
            ram_regions: vec![1, 2, 3],
            ..StateDigest::default()
        };
        assert!(a.differences(&a.clone()).is_empty());
        let mut b = a.clone();
        b.pc += 4;
        b.x[10] = 7;
        b.csrs[0].1 = 8 << 60;
        b.devices[0].1 = 2;
        b.ram_regions[2] = 9;
        let d = a.differences(&b);
        assert_eq!(d.len(), 5, "{d:?}");
        assert_eq!(d[0], "pc: expected 0x80000000, found 0x80000004");
        assert_eq!(d[1], "register x10 (a0): expected 0x0, found 0x7");
        assert!(d[2].starts_with("CSR satp"));
        assert_eq!(d[3], "device uart state differs");
        assert_eq!(d[4], "RAM differs in 0x80200000..0x80300000");
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn csrs_are_matched_by_name_and_new_ones_are_not_compared() {
        let old = StateDigest {
            csrs: vec![("mstatus".into(), 1), ("satp".into(), 2)],
            ..StateDigest::default()
        };
        let mut newer = old.clone();
        newer.csrs.insert(1, ("tselect".into(), 9));
        newer.csrs.push(("tdata1".into(), 5));
        assert!(old.differences(&newer).is_empty());
        newer.csrs[2].1 = 3;
        assert_eq!(
            old.differences(&newer),
            ["CSR satp: expected 0x2, found 0x3"]
        );
        newer.csrs.remove(2);
        assert_eq!(
            old.differences(&newer),
            ["CSR satp: expected 0x2, found none"]
        );
    }

    #[test]
    fn postcard_hashes_are_stable() {
        // The format-2 digest of a value is fixed by postcard's wire format: a varint 300
        // is ac 02.
        assert_eq!(state_hash(&300u32), xxh3_64(&[0xac, 0x02]));
        assert_eq!(state_hash(&(true, 1u64)), xxh3_64(&[1, 1]));
    }
}
