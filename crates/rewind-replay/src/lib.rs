//! The `replay` layer of Rewind (DESIGN.md): the recording file, the input event stream, and
//! the host boundary that every input crosses: [`Session`] in live runs, [`Player`] in replays.
//!
//! A recording is a fixed header (magic, format version) followed by chunks, each with its
//! kind, length and checksum, so that a reader can tell a foreign file, a newer format, a
//! corrupted chunk and a file cut short (a killed recorder) apart, and replay a cut file up to
//! its last whole chunk.

pub mod events;
pub mod format;
pub mod player;
pub mod recording;
pub mod session;

pub use events::{decode_events, encode_events, Event};
pub use format::{Chunk, ChunkKind, ReadError, Reader, Writer, FORMAT_VERSION};
pub use player::{Checkpoint, PlayError, PlayStop, Player};
pub use recording::{
    DriveRef, End, EndReason, ImageRef, Item, Manifest, RecordError, Recorder, Recording,
    RecordingError, TimelineEntry,
};
pub use session::Session;
