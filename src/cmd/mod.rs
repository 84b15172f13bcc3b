//! The `rewind` subcommands: `run` and `record` (live runs), `replay`, `inspect` and `debug`.

pub mod live;
pub mod replay;
