//! A guest that sets up virtqueues any way at all: arbitrary bytes as guest RAM and as the
//! queue's configuration. The walker must answer with chains or errors, never panic or hang.
//!
//! Run with `cargo fuzz run virtqueue` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_machine::devices::virtio::queue::{GuestMemory, Queue};

struct Memory(Vec<u8>);

impl GuestMemory for Memory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        let a = usize::try_from(addr).ok()?;
        buf.copy_from_slice(self.0.get(a..a.checked_add(buf.len())?)?);
        Some(())
    }
    fn write(&mut self, addr: u64, buf: &[u8]) -> Option<()> {
        let a = usize::try_from(addr).ok()?;
        self.0.get_mut(a..a.checked_add(buf.len())?)?.copy_from_slice(buf);
        Some(())
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let word = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]);
    let mut queue = Queue {
        size: word(0) % 512,
        ready: true,
        desc: word(2) as u64,
        avail: word(4) as u64,
        used: word(6) as u64,
        next_avail: word(8),
        event_idx: data[10] & 1 != 0,
        ..Queue::default()
    };
    let mut memory = Memory(data[16..].to_vec());
    memory.0.resize(memory.0.len().max(4096), 0);
    for _ in 0..64 {
        match queue.pop(&mut memory) {
            Ok(Some(chain)) => {
                let _ = chain.read_all(&memory, 1 << 16);
                let _ = chain.write_all(&mut memory, &[0xaa; 64]);
                let _ = queue.push(&mut memory, chain.head, 64);
            }
            _ => break,
        }
    }
});
