//! A driver doing anything at all to the virtio devices: register writes through the
//! virtio-mmio transport, arbitrary bytes in guest RAM (rings, descriptors, packets), notifies,
//! and frames, entropy and input events from the host, in any order. Every device must answer
//! with used buffers or DEVICE_NEEDS_RESET, never panic or hang.
//!
//! Run with `cargo fuzz run virtio_devices` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_cpu::Ram;
use rewind_machine::devices::virtio::input::{EvdevEvent, Input, InputKind};
use rewind_machine::devices::virtio::net::{default_mac, Net};
use rewind_machine::devices::virtio::rng::Rng;
use rewind_machine::devices::virtio_mmio::transport::Transport;

const RAM_BASE: u64 = 0x8000_0000;
const RAM_SIZE: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mut transport = match data[0] % 4 {
        0 => Transport::new(Net::new(default_mac(0))),
        1 => Transport::new(Rng::default()),
        2 => Transport::new(Input::new(InputKind::Keyboard)),
        _ => Transport::new(Input::new(InputKind::Tablet)),
    };
    let mut ram = Ram::new(RAM_BASE, RAM_SIZE);
    // Operations of 8 bytes: a kind, then its arguments.
    for op in data[1..].chunks_exact(8) {
        let arg = u32::from_le_bytes([op[4], op[5], op[6], op[7]]);
        let near_ram = RAM_BASE + (arg as u64 % RAM_SIZE);
        match op[0] % 8 {
            // A register write; queue addresses land in RAM more often than not.
            0 | 1 => {
                let offset = u16::from_le_bytes([op[1], op[2]]) as u64 % 0x200 & !3;
                let value = match offset {
                    0x080 | 0x090 | 0x0a0 if op[3] & 1 == 0 => near_ram as u32,
                    0x084 | 0x094 | 0x0a4 if op[3] & 1 == 0 => (near_ram >> 32) as u32,
                    _ => arg,
                };
                transport.write(offset, value);
            }
            2 => {
                let _ = transport.read(u16::from_le_bytes([op[1], op[2]]) as u64 % 0x200);
            }
            // Guest RAM: four bytes anywhere.
            3 | 4 => {
                let at = RAM_BASE + (u16::from_le_bytes([op[1], op[2]]) as u64 % RAM_SIZE);
                let _ = ram.write(at, &op[4..8]);
            }
            5 => transport.service(&mut ram),
            6 => {
                let frame = vec![op[1]; (arg % 2048) as usize];
                transport.give(&mut ram, |n: &mut Net, ctx| n.take_host_frame(&frame, ctx));
                transport.give(&mut ram, |r: &mut Rng, ctx| r.fill_from_host(&op[1..8], ctx));
            }
            _ => {
                let event = EvdevEvent {
                    kind: op[1] as u16 % 4,
                    code: u16::from_le_bytes([op[2], op[3]]),
                    value: arg as i32,
                };
                transport.give(&mut ram, |i: &mut Input, ctx| i.take_host_events(&[event], ctx));
            }
        }
        let _ = transport.irq_level();
    }
    let _ = transport.device_state();
});
