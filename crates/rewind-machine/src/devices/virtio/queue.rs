//! Split virtqueues (virtio 1.x, section 2.7): the walker that takes descriptor chains from
//! the available ring and returns them on the used ring. Everything in guest memory is
//! untrusted: a ring or descriptor outside RAM, a loop of descriptors or a chain longer than
//! the queue is an error for the device to report, never a panic or a hang.

use serde::{Deserialize, Serialize};

/// Guest memory as devices see it (DMA).
pub trait GuestMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()>;
    fn write(&mut self, addr: u64, buf: &[u8]) -> Option<()>;
}

impl GuestMemory for rewind_cpu::Ram {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        rewind_cpu::Ram::read(self, addr, buf)
    }

    fn write(&mut self, addr: u64, buf: &[u8]) -> Option<()> {
        rewind_cpu::Ram::write(self, addr, buf)
    }
}

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
/// The largest queue a device offers.
pub const MAX_QUEUE_SIZE: u16 = 256;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// A part of a descriptor chain: guest memory the device reads (`writable == false`) or
/// writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// One request: the chain's head index (to return it) and its segments in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub segments: Vec<Segment>,
}

impl Chain {
    /// Bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.writable)
            .map(|s| s.len as u64)
            .sum()
    }

    /// Writes `data` across the writable segments; returns how many bytes fitted.
    pub fn write_all(&self, mem: &mut dyn GuestMemory, data: &[u8]) -> Option<usize> {
        let mut done = 0;
        for s in self.segments.iter().filter(|s| s.writable) {
            if done == data.len() {
                break;
            }
            let n = (s.len as usize).min(data.len() - done);
            mem.write(s.addr, &data[done..done + n])?;
            done += n;
        }
        Some(done)
    }

    /// Reads the device-readable segments, up to `limit` bytes.
    pub fn read_all(&self, mem: &dyn GuestMemory, limit: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for s in self.segments.iter().filter(|s| !s.writable) {
            let n = (s.len as usize).min(limit - out.len());
            let start = out.len();
            out.resize(start + n, 0);
            mem.read(s.addr, &mut out[start..])?;
            if out.len() == limit {
                break;
            }
        }
        Some(out)
    }
}

/// What is wrong with a queue the driver set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// A ring or a descriptor lies outside guest RAM.
    OutOfMemory,
    /// A chain loops or is longer than the queue allows.
    BadChain,
    /// The driver made more buffers available than the queue holds.
    BadIndex,
}

/// A split virtqueue's configuration and the device's position in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// The next available-ring entry the device will take.
    pub next_avail: u16,
    /// The next used-ring entry the device will fill.
    pub next_used: u16,
    /// VIRTIO_F_EVENT_IDX was negotiated.
    pub event_idx: bool,
    /// `next_used` when the driver was last notified.
    pub signalled_used: u16,
}

/// One of a split queue's three rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    Desc,
    Avail,
    Used,
}

impl Ring {
    /// Required alignment (virtio 1.x, 2.7).
    fn align(self) -> u64 {
        match self {
            Ring::Desc => 16,
            Ring::Avail => 2,
            Ring::Used => 4,
        }
    }

    /// Bytes the ring takes for a queue of `size` (with the event-index word).
    fn len(self, size: u16) -> u64 {
        let size = size as u64;
        match self {
            Ring::Desc => 16 * size,
            Ring::Avail => 6 + 2 * size,
            Ring::Used => 6 + 8 * size,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ring::Desc => "descriptor table",
            Ring::Avail => "available ring",
            Ring::Used => "used ring",
        }
    }
}

fn read_u16(mem: &dyn GuestMemory, addr: u64) -> Result<u16, QueueError> {
    let mut b = [0u8; 2];
    mem.read(addr, &mut b).ok_or(QueueError::OutOfMemory)?;
    Ok(u16::from_le_bytes(b))
}

fn write_u16(mem: &mut dyn GuestMemory, addr: u64, v: u16) -> Result<(), QueueError> {
    mem.write(addr, &v.to_le_bytes())
        .ok_or(QueueError::OutOfMemory)
}

/// A descriptor: address, length, flags, next.
fn read_desc(
    mem: &dyn GuestMemory,
    table: u64,
    index: u64,
) -> Result<(u64, u32, u16, u16), QueueError> {
    let mut b = [0u8; 16];
    mem.read(table + index * 16, &mut b)
        .ok_or(QueueError::OutOfMemory)?;
    Ok((
        u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
        u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()),
        u16::from_le_bytes(b[12..14].try_into().unwrap_or_default()),
        u16::from_le_bytes(b[14..16].try_into().unwrap_or_default()),
    ))
}

impl Queue {
    /// Sets the size the driver chose: a power of two up to [`MAX_QUEUE_SIZE`] (split rings,
    /// 2.7). Anything else is refused and leaves the queue as it was.
    pub fn try_set_size(&mut self, size: u32) -> Result<(), String> {
        if !size.is_power_of_two() || size > MAX_QUEUE_SIZE as u32 {
            return Err(format!(
                "size {size} is not a power of two from 1 to {MAX_QUEUE_SIZE}"
            ));
        }
        self.size = size as u16;
        Ok(())
    }

    /// Sets a ring's guest address: aligned as the ring must be, and with room below 2^64 for
    /// the largest ring (so address arithmetic never wraps). Anything else is refused and
    /// leaves the queue as it was.
    pub fn try_set_address(&mut self, ring: Ring, addr: u64) -> Result<(), String> {
        check_address(ring, addr)?;
        *match ring {
            Ring::Desc => &mut self.desc,
            Ring::Avail => &mut self.avail,
            Ring::Used => &mut self.used,
        } = addr;
        Ok(())
    }

    /// A ring's guest address.
    pub fn address(&self, ring: Ring) -> u64 {
        match ring {
            Ring::Desc => self.desc,
            Ring::Avail => self.avail,
            Ring::Used => self.used,
        }
    }

    /// Checks what the setters guarantee, for a queue from a saved state: a size of 0 (never
    /// set) or one [`Queue::try_set_size`] takes, and ring addresses
    /// [`Queue::try_set_address`] takes.
    pub fn check(&self) -> Result<(), String> {
        if self.size != 0 {
            Queue::default().try_set_size(self.size as u32)?;
        }
        for ring in [Ring::Desc, Ring::Avail, Ring::Used] {
            check_address(ring, self.address(ring))?;
        }
        Ok(())
    }

    /// Takes the next available chain, if the driver made one available.
    pub fn pop(&mut self, mem: &mut dyn GuestMemory) -> Result<Option<Chain>, QueueError> {
        if !self.ready || self.size == 0 {
            return Ok(None);
        }
        let avail_idx = read_u16(mem, self.avail + 2)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(QueueError::BadIndex);
        }
        let slot = (self.next_avail % self.size) as u64;
        let head = read_u16(mem, self.avail + 4 + slot * 2)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        if self.event_idx {
            // avail_event: the driver need not notify us before it passes this index.
            let avail_event = self.used + 4 + self.size as u64 * 8;
            write_u16(mem, avail_event, self.next_avail)?;
        }
        let segments = self.walk(mem, head)?;
        Ok(Some(Chain { head, segments }))
    }

    /// The segments of the chain starting at `head`, following indirect tables.
    fn walk(&self, mem: &dyn GuestMemory, head: u16) -> Result<Vec<Segment>, QueueError> {
        let mut segments = Vec::new();
        let (mut table, mut table_len) = (self.desc, self.size as u64);
        let mut index = head as u64;
        let mut indirect = false;
        // A chain has at most `size` descriptors, indirect ones included (virtio 1.x, 2.7.5):
        // more steps than that is a loop or a hostile table, whatever length it claims.
        let mut budget = self.size as u64;
        loop {
            if index >= table_len || budget == 0 {
                return Err(QueueError::BadChain);
            }
            budget -= 1;
            let (addr, len, flags, next) = read_desc(mem, table, index)?;
            if flags & DESC_F_INDIRECT != 0 {
                // An indirect table replaces the rest of the chain (and may not nest).
                if indirect || len % 16 != 0 || len == 0 || flags & DESC_F_NEXT != 0 {
                    return Err(QueueError::BadChain);
                }
                table = addr;
                table_len = (len / 16) as u64;
                index = 0;
                indirect = true;
                continue;
            }
            segments.push(Segment {
                addr,
                len,
                writable: flags & DESC_F_WRITE != 0,
            });
            if flags & DESC_F_NEXT == 0 {
                return Ok(segments);
            }
            index = next as u64;
        }
    }

    /// Returns a chain to the driver with `len` bytes written; says whether the driver wants
    /// an interrupt for it (EVENT_IDX or the avail ring's no-interrupt flag).
    pub fn push(
        &mut self,
        mem: &mut dyn GuestMemory,
        head: u16,
        len: u32,
    ) -> Result<bool, QueueError> {
        if self.size == 0 {
            return Err(QueueError::BadIndex);
        }
        let slot = (self.next_used % self.size) as u64;
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&(head as u32).to_le_bytes());
        entry[4..].copy_from_slice(&len.to_le_bytes());
        mem.write(self.used + 4 + slot * 8, &entry)
            .ok_or(QueueError::OutOfMemory)?;
        let old = self.next_used;
        self.next_used = self.next_used.wrapping_add(1);
        write_u16(mem, self.used + 2, self.next_used)?;
        if self.event_idx {
            let used_event = read_u16(mem, self.avail + 4 + self.size as u64 * 2)?;
            // Notify if used_event lies in [old, new) (virtio 1.x, vring_need_event).
            let notify = self.next_used.wrapping_sub(used_event).wrapping_sub(1)
                < self.next_used.wrapping_sub(old);
            return Ok(notify);
        }
        let flags = read_u16(mem, self.avail)?;
        Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
    }
}

fn check_address(ring: Ring, addr: u64) -> Result<(), String> {
    if !addr.is_multiple_of(ring.align()) {
        return Err(format!(
            "its {} at {addr:#x} is not aligned to {} bytes",
            ring.name(),
            ring.align()
        ));
    }
    if addr.checked_add(ring.len(MAX_QUEUE_SIZE)).is_none() {
        return Err(format!(
            "its {} at {addr:#x} runs past the end of the address space",
            ring.name()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! A virtio driver written here, on plain memory, against the device side.
    use super::*;

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const INDIRECT: u64 = 0x4000;
    const DATA: u64 = 0x8000;
    const SIZE: u16 = 8;

    struct Memory(Vec<u8>);

    impl GuestMemory for Memory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
            let a = addr as usize;
            buf.copy_from_slice(self.0.get(a..a.checked_add(buf.len())?)?);
            Some(())
        }
        fn write(&mut self, addr: u64, buf: &[u8]) -> Option<()> {
            let a = addr as usize;
            self.0
                .get_mut(a..a.checked_add(buf.len())?)?
                .copy_from_slice(buf);
            Some(())
        }
    }

    /// The driver side: writes descriptors and makes chains available.
    struct Driver {
        mem: Memory,
        avail_idx: u16,
    }

    impl Driver {
        fn new() -> Driver {
            Driver {
                mem: Memory(vec![0; 0x10000]),
                avail_idx: 0,
            }
        }
        fn desc(&mut self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            self.mem.write(table + i as u64 * 16, &d).unwrap();
        }
        fn offer(&mut self, head: u16) {
            let slot = (self.avail_idx % SIZE) as u64;
            self.mem
                .write(AVAIL + 4 + slot * 2, &head.to_le_bytes())
                .unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.mem
                .write(AVAIL + 2, &self.avail_idx.to_le_bytes())
                .unwrap();
        }
        fn used(&self, slot: u16) -> (u32, u32) {
            let mut e = [0u8; 8];
            self.mem.read(USED + 4 + slot as u64 * 8, &mut e).unwrap();
            (
                u32::from_le_bytes(e[..4].try_into().unwrap()),
                u32::from_le_bytes(e[4..].try_into().unwrap()),
            )
        }
        fn set_used_event(&mut self, v: u16) {
            self.mem
                .write(AVAIL + 4 + SIZE as u64 * 2, &v.to_le_bytes())
                .unwrap();
        }
    }

    fn queue(event_idx: bool) -> Queue {
        Queue {
            size: SIZE,
            ready: true,
            desc: DESC,
            avail: AVAIL,
            used: USED,
            event_idx,
            ..Queue::default()
        }
    }

    #[test]
    fn chains_are_taken_in_order_and_returned_on_the_used_ring() {
        let mut d = Driver::new();
        let mut q = queue(false);
        // A request: 4 bytes to read, then 16 to write, as descriptors 3 -> 5.
        d.desc(DESC, 3, DATA, 4, DESC_F_NEXT, 5);
        d.desc(DESC, 5, DATA + 0x100, 16, DESC_F_WRITE, 0);
        d.mem.write(DATA, b"ping").unwrap();
        d.offer(3);
        assert_eq!(
            q.pop(&mut d.mem).unwrap(),
            Some(Chain {
                head: 3,
                segments: vec![
                    Segment {
                        addr: DATA,
                        len: 4,
                        writable: false
                    },
                    Segment {
                        addr: DATA + 0x100,
                        len: 16,
                        writable: true
                    },
                ],
            })
        );
        assert_eq!(q.pop(&mut d.mem).unwrap(), None, "nothing more was offered");
        let chain = Chain {
            head: 3,
            segments: q.walk(&d.mem, 3).unwrap(),
        };
        assert_eq!(chain.read_all(&d.mem, 100).unwrap(), b"ping");
        assert_eq!(chain.write_all(&mut d.mem, b"pong!").unwrap(), 5);
        assert!(
            q.push(&mut d.mem, 3, 5).unwrap(),
            "interrupts are wanted by default"
        );
        assert_eq!(d.used(0), (3, 5));
        let mut idx = [0u8; 2];
        d.mem.read(USED + 2, &mut idx).unwrap();
        assert_eq!(u16::from_le_bytes(idx), 1);
    }

    #[test]
    fn indirect_tables_are_followed() {
        let mut d = Driver::new();
        let mut q = queue(false);
        d.desc(INDIRECT, 0, DATA, 8, DESC_F_NEXT, 1);
        d.desc(INDIRECT, 1, DATA + 8, 8, DESC_F_NEXT, 2);
        d.desc(INDIRECT, 2, DATA + 16, 32, DESC_F_WRITE, 0);
        d.desc(DESC, 0, INDIRECT, 48, DESC_F_INDIRECT, 0);
        d.offer(0);
        let chain = q.pop(&mut d.mem).unwrap().unwrap();
        assert_eq!(chain.segments.len(), 3);
        assert_eq!(chain.writable_len(), 32);
        // An indirect table that claims 2^28 entries and loops is cut off at the queue size.
        d.desc(INDIRECT, 0, DATA, 8, DESC_F_NEXT, 1);
        d.desc(INDIRECT, 1, DATA, 8, DESC_F_NEXT, 0);
        d.desc(DESC, 1, INDIRECT, 0xffff_fff0, DESC_F_INDIRECT, 0);
        d.offer(1);
        assert_eq!(q.pop(&mut d.mem), Err(QueueError::BadChain));
        // Nested indirection is refused.
        d.desc(INDIRECT, 0, INDIRECT, 16, DESC_F_INDIRECT, 0);
        d.offer(0);
        assert_eq!(q.pop(&mut d.mem), Err(QueueError::BadChain));
    }

    #[test]
    fn event_idx_suppresses_interrupts_until_the_driver_asks() {
        let mut d = Driver::new();
        let mut q = queue(true);
        for i in 0..4 {
            d.desc(DESC, i, DATA + i as u64 * 16, 16, DESC_F_WRITE, 0);
            d.offer(i);
        }
        // The driver wants an interrupt only once the third buffer (index 2) is used.
        d.set_used_event(2);
        let mut wanted = Vec::new();
        for _ in 0..4 {
            let chain = q.pop(&mut d.mem).unwrap().unwrap();
            wanted.push(q.push(&mut d.mem, chain.head, 16).unwrap());
        }
        assert_eq!(wanted, [false, false, true, false]);
        // The device tells the driver how far it has read the available ring.
        let mut avail_event = [0u8; 2];
        d.mem
            .read(USED + 4 + SIZE as u64 * 8, &mut avail_event)
            .unwrap();
        assert_eq!(u16::from_le_bytes(avail_event), 4);
    }

    #[test]
    fn loops_bad_indices_and_memory_outside_ram_are_errors() {
        let mut d = Driver::new();
        let mut q = queue(false);
        d.desc(DESC, 0, DATA, 1, DESC_F_NEXT, 1);
        d.desc(DESC, 1, DATA, 1, DESC_F_NEXT, 0);
        d.offer(0);
        assert_eq!(q.pop(&mut d.mem), Err(QueueError::BadChain), "a loop");
        d.desc(DESC, 2, DATA, 1, DESC_F_NEXT, 99);
        d.offer(2);
        assert_eq!(
            q.pop(&mut d.mem),
            Err(QueueError::BadChain),
            "next past the table"
        );
        d.offer(42);
        assert_eq!(
            q.pop(&mut d.mem),
            Err(QueueError::BadChain),
            "head past the table"
        );
        d.mem
            .write(AVAIL + 2, &(q.next_avail + 100).to_le_bytes())
            .unwrap();
        assert_eq!(q.pop(&mut d.mem), Err(QueueError::BadIndex));
        let mut far = queue(false);
        far.avail = 0xffff_0000;
        assert_eq!(far.pop(&mut d.mem), Err(QueueError::OutOfMemory));
        // A chain whose buffer lies outside memory is taken, but touching it fails.
        let mut q = queue(false);
        let mut d = Driver::new();
        d.desc(DESC, 0, 0xdead_0000, 16, DESC_F_WRITE, 0);
        d.offer(0);
        let chain = q.pop(&mut d.mem).unwrap().unwrap();
        assert_eq!(chain.write_all(&mut d.mem, &[1; 16]), None);
    }

    #[test]
    fn setters_refuse_what_a_queue_cannot_be_and_leave_it_unchanged() {
        let mut q = Queue::default();
        for bad in [0, 3, 384, 512, 1 << 20] {
            assert!(q.try_set_size(bad).is_err(), "size {bad}");
        }
        assert_eq!(q.size, 0);
        q.try_set_size(MAX_QUEUE_SIZE as u32).unwrap();
        assert!(q.try_set_address(Ring::Desc, 0x1008).is_err());
        assert!(q.try_set_address(Ring::Used, 0x1002).is_err());
        assert!(q.try_set_address(Ring::Avail, u64::MAX - 1).is_err());
        assert_eq!((q.desc, q.avail, q.used), (0, 0, 0));
        q.try_set_address(Ring::Desc, 0x1010).unwrap();
        q.try_set_address(Ring::Avail, 0x2002).unwrap();
        q.try_set_address(Ring::Used, 0x3004).unwrap();
        assert_eq!((q.desc, q.avail, q.used), (0x1010, 0x2002, 0x3004));
        assert!(q.check().is_ok());
        q.size = 7;
        assert!(q.check().is_err());
        // A queue of size 0 is an error to push to, not a division by zero.
        let mut mem = Memory(vec![0; 0x10000]);
        q.size = 0;
        assert_eq!(q.push(&mut mem, 0, 0), Err(QueueError::BadIndex));
    }
}
