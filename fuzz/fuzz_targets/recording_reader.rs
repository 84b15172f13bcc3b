//! Arbitrary bytes as a recording: the reader must answer with chunks or an error, never a
//! panic, and never allocate what a length field merely claims.
//!
//! Run with `cargo fuzz run recording_reader` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_replay::{decode_events, format, ChunkKind, Reader};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Reader::new(data) else {
        return;
    };
    while let Ok(Some(chunk)) = reader.next_chunk() {
        if chunk.kind == ChunkKind::Events {
            if let Ok(events) = format::decompress(&chunk.payload, 1 << 20) {
                let _ = decode_events(&events, 0);
            }
            let _ = decode_events(&chunk.payload, 0);
        }
    }
});
