//! Snapshots of the whole machine: the hart's and every device's `…State`, the clock, and RAM
//! as pages shared between snapshots, so that a snapshot costs only the pages written since
//! the one before it (DESIGN.md, "State and snapshots").
//!
//! RAM pages are tracked twice over: the machine's `snapshot_base` is what RAM held at the last
//! snapshot or restore, and the dirty set says which pages may differ from it since. Restoring
//! another snapshot rewrites only those pages and the pages in which the two snapshots differ
//! (found by pointer comparison, chunk by chunk).
//!
//! Disk overlays are shared the same way, block by block: a snapshot holds the overlay's
//! blocks by reference, and a block is copied only when the guest writes it again.

use std::sync::Arc;

use rewind_cpu::ram::PAGE_SIZE;
use rewind_cpu::{Hart, HartState, TlbState};
use serde::{Deserialize, Serialize};

use crate::boot::BootLayout;
use crate::devices::clint::ClintState;
use crate::devices::finisher::Finish;
use crate::devices::plic::PlicState;
use crate::devices::rtc::RtcState;
use crate::devices::uart::{UartState, FIFO_SIZE};
use crate::devices::virtio::blk::BlkState;
use crate::devices::virtio::DeviceState;
use crate::devices::virtio_mmio::transport::TransportState;
use crate::Parked;
use crate::{HartMark, Machine, MachineConfig, MachineError};

/// Pages per shared chunk of a [`RamPages`].
const CHUNK_PAGES: usize = 512;

/// One page of RAM, or `None` for a page of zeros.
type Page = Option<Arc<[u8]>>;

/// RAM contents as pages, in chunks that snapshots share until one of them changes.
#[derive(Clone, Default)]
pub struct RamPages {
    chunks: Vec<Arc<Vec<Page>>>,
    pages: usize,
}

impl RamPages {
    /// `pages` pages of zeros.
    pub fn zeroed(pages: usize) -> RamPages {
        let zero = Arc::new(vec![None; CHUNK_PAGES]);
        RamPages {
            chunks: vec![zero; pages.div_ceil(CHUNK_PAGES)],
            pages,
        }
    }

    pub fn pages(&self) -> usize {
        self.pages
    }

    fn get(&self, page: usize) -> &Page {
        &self.chunks[page / CHUNK_PAGES][page % CHUNK_PAGES]
    }

    fn set(&mut self, page: usize, data: Page) {
        Arc::make_mut(&mut self.chunks[page / CHUNK_PAGES])[page % CHUNK_PAGES] = data;
    }

    /// How many of this snapshot's non-zero pages `base` does not share: the memory these
    /// pages cost beyond `base`'s.
    pub fn pages_beyond(&self, base: &RamPages) -> usize {
        let mut count = 0;
        self.for_each_difference(base, |page| {
            if self.get(page).is_some() {
                count += 1;
            }
        });
        count
    }

    /// Calls `f` with each page that may differ between `self` and `other` (same size).
    fn for_each_difference(&self, other: &RamPages, mut f: impl FnMut(usize)) {
        for (c, (a, b)) in self.chunks.iter().zip(&other.chunks).enumerate() {
            if Arc::ptr_eq(a, b) {
                continue;
            }
            for (i, (pa, pb)) in a.iter().zip(b.iter()).enumerate() {
                let same = match (pa, pb) {
                    (None, None) => true,
                    (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                    _ => false,
                };
                if !same {
                    f(c * CHUNK_PAGES + i);
                }
            }
        }
    }
}

/// Everything guest-visible except RAM, as plain data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineState {
    pub config: MachineConfig,
    /// The device tree's entropy, a host value given by an input event (the RTC's base, the
    /// other, is in its state).
    pub rng_seed: Vec<u8>,
    pub hart: HartState,
    pub uart: UartState,
    pub clint: ClintState,
    pub plic: PlicState,
    pub rtc: RtcState,
    pub finisher: Option<Finish>,
    /// Each virtio-mmio slot: its transport's and device's state, or `None` when empty.
    pub virtio: Vec<Option<(TransportState, DeviceState)>>,
    pub sleeping: bool,
    /// With several harts: the others, by id, each with whether it sleeps; and where the
    /// running hart's turn ends.
    pub parked: Vec<(HartState, bool)>,
    pub turn_end: u64,
    /// In chaos mode: until where the running hart does not see IPIs and external interrupts.
    pub held_until: u64,
    pub idle_skipped: u64,
    pub layout: BootLayout,
    pub dtb: Vec<u8>,
    pub dtb_addr: u64,
    pub dtb_given: bool,
    pub rom: Vec<u8>,
}

/// A machine at one instant.
#[derive(Clone)]
pub struct Snapshot {
    pub state: MachineState,
    /// The harts' cached translations (see `rewind_cpu::TlbState`): the running hart's, then
    /// the parked ones'.
    pub tlb: TlbState,
    pub parked_tlbs: Vec<TlbState>,
    pub ram: RamPages,
    /// Pages this snapshot copied (the ones written since the snapshot before it): what it
    /// costs in memory beyond what it shares.
    pub new_pages: usize,
    /// Bytes of disk overlay blocks written since the snapshot before it (the blocks it does
    /// not share with that one).
    pub new_disk_bytes: u64,
}

impl Snapshot {
    /// The instruction count it was taken at.
    pub fn icount(&self) -> u64 {
        self.state.hart.icount
    }

    /// Bytes of RAM and disk overlay this snapshot alone holds (beyond the snapshot before it).
    pub fn cost_bytes(&self) -> u64 {
        self.new_pages as u64 * PAGE_SIZE + self.new_disk_bytes
    }

    /// Bytes of RAM pages and disk overlay blocks this snapshot holds that `base` (a snapshot
    /// of the same machine) does not share.
    pub fn bytes_beyond(&self, base: &Snapshot) -> u64 {
        let pages = self.ram.pages_beyond(&base.ram) as u64 * PAGE_SIZE;
        let disks = disk_states(&self.state.virtio)
            .zip(disk_states(&base.state.virtio))
            .map(|(a, b)| a.bytes_beyond(b))
            .sum::<u64>();
        pages + disks
    }
}

/// The disk overlays of a machine's saved virtio slots, in slot order.
fn disk_states(
    virtio: &[Option<(TransportState, DeviceState)>],
) -> impl Iterator<Item = &BlkState> {
    virtio.iter().flatten().filter_map(|(_, d)| match d {
        DeviceState::Blk(b) => Some(b),
        _ => None,
    })
}

impl Machine {
    fn save_state(&self) -> MachineState {
        MachineState {
            config: self.config.clone(),
            rng_seed: self.rng_seed.clone(),
            hart: self.hart.save(),
            uart: self.bus.uart.state.clone(),
            clint: self.bus.clint.state.clone(),
            plic: self.bus.plic.state.clone(),
            rtc: self.bus.rtc.state.clone(),
            finisher: self.bus.finisher.pending(),
            virtio: self
                .bus
                .virtio
                .iter()
                .map(|t| t.as_ref().map(|t| (t.state.clone(), t.device_state())))
                .collect(),
            sleeping: self.sleeping,
            parked: self
                .parked
                .iter()
                .map(|p| (p.hart.save(), p.sleeping))
                .collect(),
            turn_end: self.turn_end,
            held_until: self.held_until,
            idle_skipped: self.idle_skipped,
            layout: self.layout,
            dtb: self.dtb.clone(),
            dtb_addr: self.dtb_addr,
            dtb_given: self.dtb_given,
            rom: self.bus.rom.clone(),
        }
    }

    /// Takes a snapshot, copying only the pages written since the last snapshot or restore.
    pub fn snapshot(&mut self) -> Snapshot {
        self.collect_dirty();
        let data = self.ram.contents();
        let mut new_pages = 0;
        let dirty = std::mem::take(&mut self.dirty_for_snapshot);
        for_each_bit(&dirty, |page| {
            let bytes = &data[page * PAGE_SIZE as usize..(page + 1) * PAGE_SIZE as usize];
            let copy: Page = if bytes.iter().all(|&b| b == 0) {
                None
            } else {
                new_pages += 1;
                Some(Arc::from(bytes))
            };
            self.snapshot_base.set(page, copy);
        });
        self.dirty_for_snapshot = vec![0; dirty.len()];
        let state = self.save_state();
        let empty = BlkState::default();
        let disks: Vec<BlkState> = disk_states(&state.virtio).cloned().collect();
        let new_disk_bytes = disks
            .iter()
            .enumerate()
            .map(|(i, d)| d.bytes_beyond(self.snapshot_disks.get(i).unwrap_or(&empty)))
            .sum();
        self.snapshot_disks = disks;
        Snapshot {
            state,
            tlb: self.hart.save_translations(),
            parked_tlbs: self
                .parked
                .iter()
                .map(|p| p.hart.save_translations())
                .collect(),
            ram: self.snapshot_base.clone(),
            new_pages,
            new_disk_bytes,
        }
    }

    /// Puts the machine in the state of `snapshot`, after checking that the snapshot is one
    /// this machine can take (same RAM, valid hart and device states). On error the machine
    /// is unchanged.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), MachineError> {
        let s = &snapshot.state;
        let invalid = |what: String| MachineError::BadSnapshot(what);
        if snapshot.ram.pages() != self.ram.pages()
            || s.config.ram_base != self.config.ram_base
            || s.config.ram_size != self.config.ram_size
        {
            return Err(invalid("it is of a machine with other RAM".into()));
        }
        let hart = Hart::restore(&s.hart).map_err(invalid)?;
        let mut parked = Vec::with_capacity(s.parked.len());
        for (state, sleeping) in &s.parked {
            let hart = Hart::restore(state)
                .map_err(|e| invalid(format!("hart {}: {e}", state.hart_id)))?;
            parked.push((hart, *sleeping));
        }
        let mut ids: Vec<u64> = std::iter::once(&hart)
            .chain(parked.iter().map(|(h, _)| h))
            .map(|h| h.state.hart_id)
            .collect();
        ids.sort_unstable();
        let sorted = s.parked.is_sorted_by_key(|(h, _)| h.hart_id);
        let harts = self.hart_count();
        if !sorted
            || ids != (0..harts as u64).collect::<Vec<_>>()
            || s.config.harts as usize != harts
            || snapshot.parked_tlbs.len() != parked.len()
        {
            return Err(invalid(format!("it is not of a board with {harts} harts")));
        }
        if s.clint.harts.len() != harts {
            return Err(invalid("its CLINT is not of this board".into()));
        }
        if s.uart.rx_fifo.len() > FIFO_SIZE {
            return Err(invalid("the UART holds more bytes than its FIFO".into()));
        }
        if s.virtio.len() != self.bus.virtio.len() {
            return Err(invalid("its virtio devices are not this machine's".into()));
        }
        for (slot, (saved, live)) in s.virtio.iter().zip(&self.bus.virtio).enumerate() {
            let checked = match (saved, live) {
                (None, None) => Ok(()),
                (Some((transport, device)), Some(t)) => t.check_state(transport, device),
                _ => Err("its virtio devices are not this machine's".into()),
            };
            checked.map_err(|e| invalid(format!("virtio slot {slot}: {e}")))?;
        }
        if !s.plic.is_valid(harts) {
            return Err(invalid("the PLIC state is out of range".into()));
        }
        if s.rom.len() as u64 > rewind_cpu::ram::MAX_ROM_LEN
            || (!s.dtb.is_empty() && !self.ram.contains(s.dtb_addr, s.dtb.len() as u64))
        {
            return Err(invalid("its ROM or device tree does not fit".into()));
        }

        // RAM: the pages written since the base, and those where the base and the snapshot
        // differ.
        self.collect_dirty();
        let mut to_write = std::mem::take(&mut self.dirty_for_snapshot);
        self.snapshot_base
            .for_each_difference(&snapshot.ram, |page| {
                to_write[page / 64] |= 1 << (page % 64)
            });
        let zeros = [0u8; PAGE_SIZE as usize];
        for_each_bit(&to_write, |page| {
            let addr = self.ram.base() + page as u64 * PAGE_SIZE;
            let bytes = snapshot.ram.get(page).as_deref().unwrap_or(&zeros);
            // In range: the snapshot has as many pages as RAM.
            let _ = self.ram.write(addr, bytes);
        });
        // Those writes made RAM equal to the snapshot's pages: not dirty for the next one.
        self.dirty_for_snapshot = vec![0; to_write.len()];
        self.collect_dirty();
        self.dirty_for_snapshot.fill(0);
        self.snapshot_base = snapshot.ram.clone();
        self.snapshot_disks = disk_states(&s.virtio).cloned().collect();

        if s.rom != self.bus.rom {
            self.ram
                .set_rom(crate::memmap::ROM.base, crate::memmap::ROM.size, &s.rom);
            self.bus.rom = s.rom.clone();
        }
        self.config = s.config.clone();
        self.rng_seed = s.rng_seed.clone();
        self.hart = hart;
        self.hart.restore_translations(&snapshot.tlb);
        let made = self.ram.code_pages_made();
        self.parked = parked
            .into_iter()
            .zip(&snapshot.parked_tlbs)
            .map(|((mut hart, sleeping), tlb)| {
                hart.restore_translations(tlb);
                Parked {
                    hart,
                    sleeping,
                    code_pages_seen: made,
                }
            })
            .collect();
        self.turn_end = s.turn_end;
        self.held_until = s.held_until;
        self.bus.uart.state = s.uart.clone();
        self.bus.clint.state = s.clint.clone();
        self.bus.plic.state = s.plic.clone();
        self.bus.rtc.state = s.rtc.clone();
        self.bus.finisher.set_pending(s.finisher);
        for (slot, saved) in self.bus.virtio.iter_mut().zip(&s.virtio) {
            if let (Some(t), Some((transport, device))) = (slot.as_mut(), saved) {
                t.state = transport.clone();
                t.set_device_state(device);
            }
        }
        self.set_clock(self.hart.state.clock);
        self.sleeping = s.sleeping;
        self.idle_skipped = s.idle_skipped;
        self.layout = s.layout;
        self.dtb = s.dtb.clone();
        self.dtb_addr = s.dtb_addr;
        self.dtb_given = s.dtb_given;
        // Console output not yet taken belongs to the abandoned timeline.
        let _ = self.bus.uart.take_output();
        // The debugger's counts are not in snapshots: its checkpoints carry their own.
        self.hart_marks = vec![HartMark::default(); harts];
        self.step_hart = None;
        Ok(())
    }
}

/// Calls `f` with the index of every set bit.
pub(crate) fn for_each_bit(bits: &[u64], mut f: impl FnMut(usize)) {
    for (i, &word) in bits.iter().enumerate() {
        let mut w = word;
        while w != 0 {
            f(i * 64 + w.trailing_zeros() as usize);
            w &= w - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Snapshot;
    use crate::block::overlay::BLOCK;
    use crate::block::test_files::TempDir;
    use crate::block::DiskImage;
    use crate::devices::virtio::blk::Blk;
    use crate::devices::virtio::DeviceState;
    use crate::devices::virtio_mmio::transport::{Transport, TransportState};
    use crate::{Machine, MachineConfig};

    fn disk(machine: &mut Machine, slot: usize) -> &mut Blk {
        let transport = machine.bus.virtio[slot].as_mut();
        transport.and_then(Transport::device_mut).expect("no disk")
    }

    fn write_disk(machine: &mut Machine, at: u64, data: &[u8]) {
        disk(machine, 7).disk.write_at(data, at).unwrap();
    }

    #[test]
    fn snapshots_share_disk_blocks_and_count_the_ones_they_do_not() {
        let dir = TempDir::new("snapshot-disk");
        let raw = dir.file("disk.raw");
        std::fs::write(&raw, vec![0x5au8; 4 << 20]).unwrap();
        let mut machine = Machine::bare(MachineConfig::default()).unwrap();
        let image = DiskImage::open(&raw, None, false, false).unwrap();
        machine.bus.virtio[7] = Some(Transport::new(Blk::new(image)));

        let first = machine.snapshot();
        assert_eq!(first.cost_bytes(), 0);
        write_disk(&mut machine, 0, &vec![1u8; 1 << 20]);
        let second = machine.snapshot();
        let at_second = machine.digest();
        assert_eq!(second.new_disk_bytes, 1 << 20);
        assert_eq!(second.bytes_beyond(&first), 1 << 20);
        // A small write costs its block, and the snapshot before keeps the old one.
        write_disk(&mut machine, 40 * BLOCK + 10, &[2u8; 100]);
        let third = machine.snapshot();
        assert_eq!((third.new_disk_bytes, third.cost_bytes()), (BLOCK, BLOCK));
        assert_eq!(third.bytes_beyond(&second), BLOCK);
        assert_eq!(third.bytes_beyond(&first), (1 << 20) + BLOCK);
        assert_eq!(machine.snapshot().new_disk_bytes, 0, "nothing written");
        assert_ne!(machine.digest(), at_second);

        machine.restore(&second).unwrap();
        assert_eq!(machine.digest(), at_second);
        write_disk(&mut machine, 0, &[3u8; 1]);
        assert_eq!(machine.snapshot().new_disk_bytes, BLOCK);
        machine.restore(&third).unwrap();
        let blk = disk(&mut machine, 7);
        let mut got = vec![0u8; 200];
        blk.disk.read_at(&mut got, 40 * BLOCK).unwrap();
        assert!(got[..10].iter().all(|&b| b == 0x5a));
        assert!(got[10..110].iter().all(|&b| b == 2) && got[110..].iter().all(|&b| b == 0x5a));
        blk.disk.read_at(&mut got, 0).unwrap();
        assert!(got.iter().all(|&b| b == 1));
    }

    /// A machine with virtio-rng (slot 7), -net (6), -keyboard (5) and -blk (4, a 4 MiB disk).
    fn machine_with_devices(dir: &TempDir, disk_size: usize) -> Machine {
        use crate::DeviceKind;
        let raw = dir.file(&format!("disk{disk_size}.raw"));
        std::fs::write(&raw, vec![0u8; disk_size]).unwrap();
        let config = MachineConfig {
            devices: vec![
                DeviceKind::VirtioRng,
                DeviceKind::VirtioNet,
                DeviceKind::VirtioKeyboard,
            ],
            ..MachineConfig::default()
        };
        let mut machine = Machine::bare(config).unwrap();
        let image = DiskImage::open(&raw, None, false, false).unwrap();
        machine.bus.virtio[4] = Some(Transport::new(Blk::new(image)));
        machine
    }

    #[test]
    fn restoring_checks_every_virtio_field_and_says_what_is_wrong() {
        use crate::devices::virtio::input::EvdevEvent;
        use crate::devices::virtio::rng::Request;
        let dir = TempDir::new("snapshot-virtio");
        let mut machine = machine_with_devices(&dir, 4 << 20);
        let good = machine.snapshot();
        let before = machine.digest();
        // A disk overlay from a larger disk, with a block past this one's end.
        let mut larger = machine_with_devices(&dir, 8 << 20);
        disk(&mut larger, 4)
            .disk
            .write_at(&[1; 512], 6 << 20)
            .unwrap();
        let larger_disk = larger.snapshot().state.virtio[4].clone().unwrap().1;

        type Craft = Box<dyn Fn(&mut Snapshot)>;
        fn slot(s: &mut Snapshot, n: usize) -> &mut (TransportState, DeviceState) {
            s.state.virtio[n].as_mut().unwrap()
        }
        let crafts: Vec<(&str, Craft)> = vec![
            // Each of these made a later step panic (a division by zero in `Queue::push`, a
            // slice out of range, an address that overflows) or broke a device's bound.
            (
                "does not fit its queue of size 0",
                Box::new(move |s| {
                    let (_, d) = slot(s, 7);
                    *d = DeviceState::Rng(crate::devices::virtio::rng::RngState {
                        pending: vec![Request {
                            head: 0,
                            wanted: 16,
                            buffers: vec![(0x8000_0000, 16)],
                        }],
                    });
                }),
            ),
            (
                "size 3 is not a power of two",
                Box::new(move |s| slot(s, 7).0.queues[0].size = 3),
            ),
            (
                "size 512 is not a power of two from 1 to 256",
                Box::new(move |s| slot(s, 6).0.queues[1].size = 512),
            ),
            (
                "descriptor table at 0x80000008 is not aligned to 16 bytes",
                Box::new(move |s| slot(s, 6).0.queues[0].desc = 0x8000_0008),
            ),
            (
                "used ring at 0xfffffffffffffffc runs past the end",
                Box::new(move |s| slot(s, 5).0.queues[0].used = u64::MAX - 3),
            ),
            (
                "available ring at 0x80000001 is not aligned",
                Box::new(move |s| slot(s, 4).0.queues[0].avail = 0x8000_0001),
            ),
            (
                "which the device does not offer",
                Box::new(move |s| slot(s, 4).0.driver_features = 1 << 40),
            ),
            (
                "queues 0x4 are notified, and it has 2",
                Box::new(move |s| slot(s, 6).0.notified = 4),
            ),
            (
                "interrupt status 0x2 has bits the device never sets",
                Box::new(move |s| slot(s, 7).0.interrupt_status = 2),
            ),
            (
                "257 received frames are pending, more than the 256",
                Box::new(move |s| {
                    let frames = vec![vec![0u8; 60]; 257];
                    slot(s, 6).1 = DeviceState::Net(crate::devices::virtio::net::NetState {
                        pending: frames.into(),
                        dropped: 0,
                    });
                }),
            ),
            (
                "a pending frame is 3 bytes",
                Box::new(move |s| {
                    slot(s, 6).1 = DeviceState::Net(crate::devices::virtio::net::NetState {
                        pending: vec![vec![0u8; 3]].into(),
                        dropped: 0,
                    });
                }),
            ),
            (
                "4097 input events are pending",
                Box::new(move |s| {
                    let events = vec![
                        EvdevEvent {
                            kind: 1,
                            code: 30,
                            value: 1
                        };
                        4097
                    ];
                    slot(s, 5).1 = DeviceState::Input(crate::devices::virtio::input::InputState {
                        pending: events.into(),
                        ..Default::default()
                    });
                }),
            ),
            ("block 96, beyond the end of the 4194304-byte disk", {
                let disk = larger_disk.clone();
                Box::new(move |s| slot(s, 4).1 = disk.clone())
            }),
            (
                "not this machine's net device with 2 queues",
                Box::new(move |s| {
                    slot(s, 6).1 = DeviceState::Rng(Default::default());
                }),
            ),
            (
                "not this machine's",
                Box::new(move |s| s.state.virtio[3] = s.state.virtio[7].clone()),
            ),
        ];
        for (expected, craft) in crafts {
            let mut bad = good.clone();
            craft(&mut bad);
            let err = machine.restore(&bad).expect_err(expected).to_string();
            assert!(err.contains(expected), "expected {expected:?} in: {err}");
            assert!(err.contains("virtio slot"), "{err}");
            assert_eq!(
                machine.digest(),
                before,
                "a refused snapshot changed the machine"
            );
        }
        machine.restore(&good).unwrap();
    }
}
