//! The container: `REWINDRC`, a format version, then checksummed chunks.

use std::io::{self, Write};

use thiserror::Error;

pub const MAGIC: &[u8; 8] = b"REWINDRC";
/// The format this build writes; it reads this version and older ones.
///
/// - 1: sync points hash device states from their `Debug` text
///   ([`rewind_machine::DigestVersion::DebugText`]).
/// - 2: sync points hash device states from their postcard encoding, a virtio entry per slot
///   ([`rewind_machine::DigestVersion::Postcard`]). The container is unchanged.
pub const FORMAT_VERSION: u32 = 2;
const HEADER_LEN: usize = 16;
const CHUNK_HEADER_LEN: usize = 16;
/// The largest chunk payload accepted: bounds what a hostile file can make us allocate.
pub const MAX_CHUNK_LEN: u32 = 256 << 20;

/// What a chunk holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkKind {
    /// The machine configuration and tool version.
    Config = 1,
    /// An image (firmware, kernel, initrd), compressed.
    Image = 2,
    /// A run of input events, compressed.
    Events = 3,
    /// A sync point: an instruction count and the state hash there.
    Sync = 4,
    /// The end of the recording: the totals.
    End = 5,
}

impl ChunkKind {
    fn from_byte(b: u8) -> Option<ChunkKind> {
        Some(match b {
            1 => ChunkKind::Config,
            2 => ChunkKind::Image,
            3 => ChunkKind::Events,
            4 => ChunkKind::Sync,
            5 => ChunkKind::End,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub kind: ChunkKind,
    pub payload: Vec<u8>,
    /// Offset of the chunk in the file.
    pub offset: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("not a Rewind recording (it does not start with REWINDRC): give a file written by `rewind record`")]
    NotARecording,
    #[error("the recording is format version {found}, newer than this rewind reads ({supported}): use a newer rewind")]
    NewerVersion { found: u32, supported: u32 },
    #[error("the recording is corrupted: the chunk at byte {offset} fails its checksum")]
    Corrupted { offset: u64 },
    #[error("the recording is corrupted: the chunk at byte {offset} has unknown kind {kind}")]
    UnknownKind { offset: u64, kind: u8 },
    #[error("the recording is corrupted: the chunk at byte {offset} claims {len} bytes (at most {MAX_CHUNK_LEN} are allowed)")]
    TooLarge { offset: u64, len: u32 },
    #[error("the recording is corrupted: {0}")]
    BadPayload(String),
}

/// A check on a chunk's kind and length (stored in its header), so that a corrupted length
/// is told apart from a file cut short.
fn header_check(kind: u8, len: u32) -> [u8; 3] {
    let mut bytes = [0u8; 5];
    bytes[0] = kind;
    bytes[1..].copy_from_slice(&len.to_le_bytes());
    let h = xxhash_rust::xxh3::xxh3_64(&bytes);
    [h as u8, (h >> 8) as u8, (h >> 16) as u8]
}

fn checksum(kind: u8, payload: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[kind]);
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.digest()
}

/// Writes a recording chunk by chunk. Every chunk is written whole with one `write_all`, so a
/// killed writer leaves at most one partial chunk at the end.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a recording: writes the header.
    pub fn new(mut out: W) -> io::Result<Writer<W>> {
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.write_all(&header)?;
        Ok(Writer {
            out,
            written: HEADER_LEN as u64,
        })
    }

    /// Appends one chunk.
    pub fn chunk(&mut self, kind: ChunkKind, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_CHUNK_LEN)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "chunk too large"))?;
        let mut bytes = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len());
        bytes.push(kind as u8);
        bytes.extend_from_slice(&header_check(kind as u8, len));
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&checksum(kind as u8, payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        self.out.write_all(&bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads a recording held in memory, chunk by chunk.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the file was cut, if it ends in the middle of a chunk.
    cut_at: Option<u64>,
}

impl<'a> Reader<'a> {
    /// Checks the header.
    pub fn new(data: &'a [u8]) -> Result<Reader<'a>, ReadError> {
        if data.len() < HEADER_LEN || &data[..8] != MAGIC {
            return Err(ReadError::NotARecording);
        }
        let version = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
        if version > FORMAT_VERSION {
            return Err(ReadError::NewerVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if data[12..16] != [0; 4] {
            return Err(ReadError::Corrupted { offset: 0 });
        }
        Ok(Reader {
            data,
            pos: HEADER_LEN,
            cut_at: None,
        })
    }

    /// The next chunk, or `None` at the end of the file. A file that ends inside a chunk ends
    /// there too, and [`Reader::cut_at`] says where.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, ReadError> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return Ok(None);
        }
        let offset = self.pos as u64;
        if rest.len() < CHUNK_HEADER_LEN {
            self.cut_at = Some(offset);
            return Ok(None);
        }
        let kind_byte = rest[0];
        let len = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
        if rest[1..4] != header_check(kind_byte, len) {
            return Err(ReadError::Corrupted { offset });
        }
        let sum = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
        if len > MAX_CHUNK_LEN {
            return Err(ReadError::TooLarge { offset, len });
        }
        let end = CHUNK_HEADER_LEN + len as usize;
        if rest.len() < end {
            self.cut_at = Some(offset);
            return Ok(None);
        }
        let payload = &rest[CHUNK_HEADER_LEN..end];
        if checksum(kind_byte, payload) != sum {
            return Err(ReadError::Corrupted { offset });
        }
        let kind = ChunkKind::from_byte(kind_byte).ok_or(ReadError::UnknownKind {
            offset,
            kind: kind_byte,
        })?;
        self.pos += end;
        Ok(Some(Chunk {
            kind,
            payload: payload.to_vec(),
            offset,
        }))
    }

    /// Where the file was cut short, once the reader has reached that point.
    pub fn cut_at(&self) -> Option<u64> {
        self.cut_at
    }
}

/// Compresses a chunk payload.
pub fn compress(data: &[u8]) -> Vec<u8> {
    compress_at(data, 3)
}

/// Compresses at a zstd level: 1 is the fastest (about twice level 3's speed, files about a
/// tenth larger), for images that a recorder compresses while the run goes on.
pub fn compress_at(data: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(data, level).expect("compressing into memory cannot fail")
}

/// Decompresses a chunk payload of at most `limit` bytes.
pub fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, ReadError> {
    zstd::bulk::decompress(data, limit).map_err(|e| ReadError::BadPayload(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.chunk(ChunkKind::Config, b"config").unwrap();
        w.chunk(ChunkKind::Events, &compress(b"events events events"))
            .unwrap();
        w.chunk(ChunkKind::End, b"end").unwrap();
        w.into_inner()
    }

    fn read_all(data: &[u8]) -> Result<(Vec<Chunk>, Option<u64>), ReadError> {
        let mut r = Reader::new(data)?;
        let mut chunks = Vec::new();
        while let Some(c) = r.next_chunk()? {
            chunks.push(c);
        }
        Ok((chunks, r.cut_at()))
    }

    #[test]
    fn round_trip() {
        let (chunks, cut) = read_all(&sample()).unwrap();
        assert_eq!(cut, None);
        let kinds: Vec<ChunkKind> = chunks.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [ChunkKind::Config, ChunkKind::Events, ChunkKind::End]
        );
        assert_eq!(chunks[0].payload, b"config");
        assert_eq!(
            decompress(&chunks[1].payload, 1 << 20).unwrap(),
            b"events events events"
        );
    }

    #[test]
    fn a_cut_file_reads_up_to_its_last_whole_chunk() {
        let data = sample();
        for len in HEADER_LEN..data.len() {
            let (chunks, cut) = read_all(&data[..len]).unwrap();
            assert!(chunks.len() < 3, "cut at {len}");
            let whole_end = chunks.last().map_or(HEADER_LEN as u64, |c| {
                c.offset + (CHUNK_HEADER_LEN + c.payload.len()) as u64
            });
            if len as u64 == whole_end {
                assert_eq!(cut, None, "cut exactly between chunks at {len}");
            } else {
                assert_eq!(cut, Some(whole_end), "cut at {len}");
            }
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let data = sample();
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            let result = read_all(&bad);
            let intact = matches!(&result, Ok((chunks, None)) if chunks.len() == 3
                && chunks.iter().zip(read_all(&data).unwrap().0).all(|(a, b)| *a == b));
            assert!(!intact, "flipping byte {i} went unnoticed: {result:?}");
        }
    }

    #[test]
    fn foreign_and_newer_files_are_refused() {
        assert_eq!(
            read_all(b"\x7fELF....").unwrap_err(),
            ReadError::NotARecording
        );
        assert_eq!(read_all(b"").unwrap_err(), ReadError::NotARecording);
        let mut newer = sample();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            read_all(&newer).unwrap_err(),
            ReadError::NewerVersion {
                found: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            }
        );
    }

    #[test]
    fn huge_claimed_lengths_are_refused_without_allocating() {
        let mut data = sample();
        data[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let check = header_check(data[HEADER_LEN], u32::MAX);
        data[HEADER_LEN + 1..HEADER_LEN + 4].copy_from_slice(&check);
        assert!(matches!(read_all(&data), Err(ReadError::TooLarge { .. })));
    }
}
