//! Arbitrary bytes as a recording: the reader must answer with a recording or an error, never a
//! panic, and never allocate what a length field merely claims.
//!
//! Random bytes rarely pass a chunk checksum, so the input is also used as chunk payloads
//! behind valid headers (and compressed where the format compresses), after a valid
//! configuration: that way the fuzzer reaches the event, sync point and end decoders.
//!
//! Run with `cargo fuzz run recording_reader` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_replay::{format, ChunkKind, Recording, Writer};

const MANIFEST: &str = r#"{"tool":"fuzz","machine":{"ram_base":2147483648,"ram_size":2097152,
"bootargs":null,"icount_shift":0},"images":[],"sync_interval":1000}"#;

fuzz_target!(|data: &[u8]| {
    let _ = Recording::parse(data);

    let mut writer = Writer::new(Vec::new()).unwrap();
    writer.chunk(ChunkKind::Config, MANIFEST.as_bytes()).unwrap();
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let (kind, payload) = match kind % 5 {
            0 => (ChunkKind::Events, format::compress(payload)),
            1 => (ChunkKind::Sync, format::compress(payload)),
            2 => (ChunkKind::End, format::compress(payload)),
            3 => (ChunkKind::Image, payload.to_vec()),
            _ => (ChunkKind::Config, payload.to_vec()),
        };
        writer.chunk(kind, &payload).unwrap();
    }
    let file = writer.into_inner();
    if let Ok(recording) = Recording::parse(&file) {
        for name in ["bios", "kernel", "initrd", "dtb"] {
            let _ = recording.image(name);
        }
        let _ = recording.event_counts();
    }
    // Every prefix is a cut file.
    let _ = Recording::parse(&file[..file.len() / 2]);
});
