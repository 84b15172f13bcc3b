//! A whole recording: the manifest (machine configuration and image hashes), the embedded
//! images, the timeline of input events and sync points, and how the run ended.
//!
//! [`Recorder`] writes one while a run goes on, a whole chunk per write, so a recorder that is
//! killed leaves a file that reads up to its last whole chunk. [`Recording::parse`] reads one
//! back and checks all of it (checksums, order, image hashes) before anything is replayed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rewind_machine::block::{BlockBackend, DiskImage};
use rewind_machine::{InputEvent, MachineConfig, StateDigest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::events::{decode_events, encode_events, get_varint, put_varint, Event};
use crate::format::{compress, compress_at, decompress, ChunkKind, ReadError, Reader, Writer};

/// Pending events are written out when they reach this many.
const FLUSH_EVENTS: usize = 4096;
/// ... or when the oldest unwritten one is this old, so a killed recorder loses little.
const FLUSH_AGE: Duration = Duration::from_secs(1);
/// Largest decompressed events chunk accepted.
const MAX_EVENTS_CHUNK: usize = 64 << 20;
/// Largest decompressed sync or end chunk accepted.
const MAX_SMALL_CHUNK: usize = 1 << 20;

/// An image the recorded machine started from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// `bios`, `kernel`, `initrd` or `dtb`.
    pub name: String,
    pub size: u64,
    /// SHA-256 of the contents, in hex (what `sha256sum` prints).
    pub sha256: String,
}

/// A disk image a recording needs, by reference: replay finds it at `path` (or where the
/// user says) and refuses one whose size or hash differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveRef {
    pub path: String,
    /// How the image is read: `raw` or `qcow2` (recordings before qcow2 support: raw).
    #[serde(default = "raw_format")]
    pub format: String,
    /// The image file's length in bytes.
    pub size: u64,
    pub sha256: String,
    pub readonly: bool,
}

fn raw_format() -> String {
    "raw".into()
}

impl DriveRef {
    /// The reference to the disk image at `path`, opened as `disk`, before anything wrote to
    /// it (the path is made absolute, so a replay finds it from anywhere).
    pub fn describe(path: &Path, disk: &DiskImage, readonly: bool) -> Result<DriveRef, String> {
        let (size, sha256) = measure(&disk.file, path)?;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(DriveRef {
            path: path.display().to_string(),
            format: disk.format_name().to_string(),
            size,
            sha256,
            readonly,
        })
    }

    /// Checks that `file` (found at `path`) is the image recorded: same size, same hash.
    pub fn check(&self, file: &File, path: &Path) -> Result<(), String> {
        let (size, sha256) = measure(file, path)?;
        if size != self.size || sha256 != self.sha256 {
            return Err(format!(
                "the disk image {} is not the one recorded (size {size}, sha256 {sha256}; the \
                 recording needs size {}, sha256 {}): give the original with --drive PATH",
                path.display(),
                self.size,
                self.sha256
            ));
        }
        Ok(())
    }
}

/// A disk image file's length and SHA-256.
fn measure(file: &File, path: &Path) -> Result<(u64, String), String> {
    let cannot_read = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let size = file.metadata().map_err(cannot_read)?.len();
    Ok((size, sha256_file(file).map_err(cannot_read)?))
}

/// SHA-256 of a whole file, in hex.
pub fn sha256_file(file: &File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// What a recording starts with: enough to rebuild the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The program and version that wrote it.
    pub tool: String,
    pub machine: MachineConfig,
    pub images: Vec<ImageRef>,
    /// Instructions between sync points.
    pub sync_interval: u64,
    /// Disk images, in the order of the machine's virtio-blk devices.
    #[serde(default)]
    pub drives: Vec<DriveRef>,
}

/// Why a recorded run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// The guest powered off, with this status.
    PowerOff(u16),
    /// The user quit (`Ctrl-A x`).
    Quit,
    /// The recorder got SIGINT or SIGTERM.
    Signal,
    /// `--max-insns` was reached.
    Limit,
    /// The guest waited for an interrupt nothing could raise.
    Deadlock,
}

impl EndReason {
    pub fn describe(&self) -> String {
        match self {
            EndReason::PowerOff(code) => format!("the guest powered off (status {code})"),
            EndReason::Quit => "the user quit (Ctrl-A x)".into(),
            EndReason::Signal => "the recorder was interrupted (SIGINT or SIGTERM)".into(),
            EndReason::Limit => "the instruction limit (--max-insns)".into(),
            EndReason::Deadlock => "the guest waited forever for an interrupt".into(),
        }
    }
}

/// The last chunk of a complete recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// The instruction count (the clock) at the end.
    pub icount: u64,
    /// Instructions executed (the clock without time skipped while the hart slept).
    pub executed: u64,
    pub reason: EndReason,
    /// How many bytes the guest wrote to its console, and their hash (xxh3).
    pub console_bytes: u64,
    pub console_hash: u64,
}

/// What happens at one point of a recorded run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A value from the host enters the guest.
    Event(InputEvent),
    /// The machine's state must match this digest.
    Sync(Box<StateDigest>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineEntry {
    pub icount: u64,
    pub item: Item,
}

#[derive(Debug, Error)]
pub enum RecordingError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the recording is corrupted: {0}")]
    Invalid(String),
    #[error("the recording was cut at byte {cut_at}, before {what}: nothing can be replayed")]
    CutTooEarly { cut_at: u64, what: &'static str },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn invalid(message: impl Into<String>) -> RecordingError {
    RecordingError::Invalid(message.into())
}

/// SHA-256 in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An embedded image as stored: its hash, and its bytes compressed.
struct StoredImage {
    compressed: Vec<u8>,
}

/// A recording read back and checked.
pub struct Recording {
    pub format_version: u32,
    pub manifest: Manifest,
    images: BTreeMap<String, StoredImage>,
    /// Events and sync points in the order they happened.
    pub timeline: Vec<TimelineEntry>,
    /// How the run ended; `None` if the file was cut.
    pub end: Option<End>,
    /// Where the file was cut (a killed recorder), if it was.
    pub cut_at: Option<u64>,
    /// The instruction count up to which the timeline is known to be complete.
    pub known_until: u64,
    /// Bytes of the file taken by the event stream (events chunks, with their headers).
    pub event_bytes: u64,
    /// Bytes taken by sync points.
    pub sync_bytes: u64,
    /// Bytes taken by embedded images.
    pub image_bytes: u64,
    pub file_bytes: u64,
}

impl Recording {
    /// Reads a recording file.
    pub fn open(path: &Path) -> Result<Recording, RecordingError> {
        let data = std::fs::read(path).map_err(|source| RecordingError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Recording::parse(&data)
    }

    /// How this recording's sync points hash the machine's state.
    pub fn digest_version(&self) -> rewind_machine::DigestVersion {
        match self.format_version {
            ..=1 => rewind_machine::DigestVersion::DebugText,
            _ => rewind_machine::DigestVersion::Postcard,
        }
    }

    /// Parses and checks a whole recording held in memory. Untrusted input gives an error,
    /// never a panic.
    pub fn parse(data: &[u8]) -> Result<Recording, RecordingError> {
        let mut reader = Reader::new(data)?;
        let format_version = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
        let first = reader.next_chunk()?;
        let manifest: Manifest = match first {
            Some(chunk) if chunk.kind == ChunkKind::Config => {
                serde_json::from_slice(&chunk.payload)
                    .map_err(|e| invalid(format!("its configuration does not parse: {e}")))?
            }
            Some(chunk) => {
                return Err(invalid(format!(
                    "it starts with a {:?} chunk instead of its configuration",
                    chunk.kind
                )))
            }
            None => {
                return Err(RecordingError::CutTooEarly {
                    cut_at: reader.cut_at().unwrap_or(16),
                    what: "its configuration",
                })
            }
        };
        if manifest.sync_interval == 0 {
            return Err(invalid("its sync interval is 0"));
        }
        let mut recording = Recording {
            format_version,
            manifest,
            images: BTreeMap::new(),
            timeline: Vec::new(),
            end: None,
            cut_at: None,
            known_until: 0,
            event_bytes: 0,
            sync_bytes: 0,
            image_bytes: 0,
            file_bytes: data.len() as u64,
        };
        while let Some(chunk) = reader.next_chunk()? {
            if recording.end.is_some() {
                return Err(invalid(format!(
                    "a chunk follows its end (at byte {})",
                    chunk.offset
                )));
            }
            let size = 16 + chunk.payload.len() as u64;
            match chunk.kind {
                ChunkKind::Config => return Err(invalid("it has two configurations")),
                ChunkKind::Image => {
                    recording.image_bytes += size;
                    recording.add_image(&chunk.payload)?;
                }
                ChunkKind::Events => {
                    recording.event_bytes += size;
                    recording.add_events(&chunk.payload)?;
                }
                ChunkKind::Sync => {
                    recording.sync_bytes += size;
                    let payload = decompress(&chunk.payload, MAX_SMALL_CHUNK)?;
                    let digest = decode_sync(&payload)
                        .map_err(|e| invalid(format!("a sync point does not parse: {e}")))?;
                    recording.advance_to(digest.icount)?;
                    recording.timeline.push(TimelineEntry {
                        icount: digest.icount,
                        item: Item::Sync(Box::new(digest)),
                    });
                }
                ChunkKind::End => {
                    let payload = decompress(&chunk.payload, MAX_SMALL_CHUNK)?;
                    let end: End = postcard::from_bytes(&payload)
                        .map_err(|e| invalid(format!("its end does not parse: {e}")))?;
                    recording.advance_to(end.icount)?;
                    recording.end = Some(end);
                }
            }
        }
        recording.cut_at = reader.cut_at();
        if recording.end.is_none() && recording.cut_at.is_none() {
            // A recorder killed exactly between two chunks.
            recording.cut_at = Some(data.len() as u64);
        }
        for image in &recording.manifest.images {
            if !recording.images.contains_key(&image.sha256) {
                return match recording.cut_at {
                    Some(cut_at) if recording.timeline.is_empty() => {
                        Err(RecordingError::CutTooEarly {
                            cut_at,
                            what: "its images",
                        })
                    }
                    _ => Err(invalid(format!("the {} image is missing", image.name))),
                };
            }
        }
        Ok(recording)
    }

    /// Notes that the timeline reaches `icount`, which must not go back in time.
    fn advance_to(&mut self, icount: u64) -> Result<(), RecordingError> {
        if icount < self.known_until {
            return Err(invalid(format!(
                "its timeline goes back from instruction {} to {icount}",
                self.known_until
            )));
        }
        self.known_until = icount;
        Ok(())
    }

    fn add_image(&mut self, payload: &[u8]) -> Result<(), RecordingError> {
        let hash = payload
            .get(..64)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| invalid("an image chunk has no hash"))?
            .to_string();
        if !self.manifest.images.iter().any(|i| i.sha256 == hash) {
            return Err(invalid("it holds an image its configuration does not name"));
        }
        self.images.insert(
            hash,
            StoredImage {
                compressed: payload[64..].to_vec(),
            },
        );
        Ok(())
    }

    fn add_events(&mut self, payload: &[u8]) -> Result<(), RecordingError> {
        let payload = decompress(payload, MAX_EVENTS_CHUNK)?;
        let mut pos = 0;
        let from = get_varint(&payload, &mut pos)?;
        let to = get_varint(&payload, &mut pos)?;
        if from < self.known_until || to < from {
            return Err(invalid(format!(
                "an events chunk covers {from}..{to}, out of order after {}",
                self.known_until
            )));
        }
        for event in decode_events(&payload[pos..], from)? {
            if event.icount > to {
                return Err(invalid("an event lies outside its chunk"));
            }
            self.timeline.push(TimelineEntry {
                icount: event.icount,
                item: Item::Event(event.input),
            });
        }
        self.known_until = to;
        Ok(())
    }

    /// The embedded image called `name` (`bios`, `kernel`, `initrd`, `dtb`), decompressed and
    /// checked against its hash; `None` if the recorded machine had none.
    pub fn image(&self, name: &str) -> Result<Option<Vec<u8>>, RecordingError> {
        let Some(image) = self.manifest.images.iter().find(|i| i.name == name) else {
            return Ok(None);
        };
        let stored = self
            .images
            .get(&image.sha256)
            .ok_or_else(|| invalid(format!("the {name} image is missing")))?;
        let size = usize::try_from(image.size)
            .ok()
            .filter(|&s| s <= rewind_machine::MAX_RAM as usize)
            .ok_or_else(|| invalid(format!("the {name} image claims {} bytes", image.size)))?;
        let data = decompress(&stored.compressed, size)?;
        if data.len() != size || sha256_hex(&data) != image.sha256 {
            return Err(invalid(format!("the {name} image does not match its hash")));
        }
        Ok(Some(data))
    }

    /// Counts of events by kind.
    pub fn event_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut counts = BTreeMap::new();
        for entry in &self.timeline {
            if let Item::Event(e) = &entry.item {
                *counts.entry(e.kind_name()).or_default() += 1;
            }
        }
        counts
    }

    /// The guest clock at instruction count `position`: the configured shift, changed by
    /// every shift event (`--icount-shift auto`) up to there, as the replay applies them.
    pub fn clock_at(&self, position: u64) -> rewind_machine::Clock {
        let mut clock = rewind_machine::Clock::fixed(self.manifest.machine.icount_shift);
        for entry in self.timeline.iter().take_while(|e| e.icount <= position) {
            if let Item::Event(InputEvent::IcountShift(shift)) = entry.item {
                clock.set_shift(entry.icount, shift as u32);
            }
        }
        clock
    }

    /// Number of sync points.
    pub fn sync_points(&self) -> usize {
        self.timeline
            .iter()
            .filter(|e| matches!(e.item, Item::Sync(_)))
            .count()
    }
}

#[derive(Debug, Error)]
#[error("cannot write the recording {path}: {source}")]
pub struct RecordError {
    pub path: String,
    pub source: std::io::Error,
}

/// A sync point's payload: the digest, then (on boards of several harts) the registers of the
/// harts besides hart 0. A recording made before the harts were written has nothing after the
/// digest, and an older reader ignores what follows it.
fn encode_sync(digest: &StateDigest) -> Vec<u8> {
    let mut payload = postcard::to_allocvec(digest).expect("a digest always serialises");
    if !digest.harts.is_empty() {
        payload.extend(postcard::to_allocvec(&digest.harts).expect("registers always serialise"));
    }
    payload
}

/// Reads what [`encode_sync`] wrote.
fn decode_sync(payload: &[u8]) -> postcard::Result<StateDigest> {
    let (mut digest, rest): (StateDigest, _) = postcard::take_from_bytes(payload)?;
    if !rest.is_empty() {
        digest.harts = postcard::from_bytes(rest)?;
    }
    Ok(digest)
}

/// Writes a recording as the run goes.
pub struct Recorder {
    out: Option<Writer<File>>,
    /// Hashing and compressing the images takes a while: a thread does it while the run
    /// starts, and hands the file back before the first events are written.
    preparing: Option<JoinHandle<std::io::Result<Writer<File>>>>,
    path: String,
    pending: Vec<Event>,
    /// The instruction count the next events chunk starts at.
    chunk_from: u64,
    /// When the oldest pending event (or the last chunk) was noted.
    last_flush: Instant,
}

impl Recorder {
    /// Creates `path`; the manifest and the images (each distinct one once) are written by
    /// a thread meanwhile.
    pub fn create(
        path: &Path,
        tool: String,
        machine: MachineConfig,
        sync_interval: u64,
        images: Vec<(String, Vec<u8>)>,
        drives: Vec<DriveRef>,
    ) -> Result<Recorder, RecordError> {
        let error = |source| RecordError {
            path: path.display().to_string(),
            source,
        };
        let file = File::create(path).map_err(error)?;
        let mut out = Writer::new(file).map_err(error)?;
        let preparing = std::thread::spawn(move || {
            let refs: Vec<ImageRef> = images
                .iter()
                .map(|(name, data)| ImageRef {
                    name: name.clone(),
                    size: data.len() as u64,
                    sha256: sha256_hex(data),
                })
                .collect();
            let manifest = Manifest {
                tool,
                machine,
                images: refs.clone(),
                sync_interval,
                drives,
            };
            let json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
            out.chunk(ChunkKind::Config, &json)?;
            let mut written = std::collections::BTreeSet::new();
            for (r, (_, data)) in refs.iter().zip(&images) {
                if written.insert(r.sha256.clone()) {
                    let mut payload = r.sha256.clone().into_bytes();
                    payload.extend_from_slice(&compress_at(data, 1));
                    out.chunk(ChunkKind::Image, &payload)?;
                }
            }
            Ok(out)
        });
        Ok(Recorder {
            out: None,
            preparing: Some(preparing),
            path: path.display().to_string(),
            pending: Vec::new(),
            chunk_from: 0,
            last_flush: Instant::now(),
        })
    }

    fn error(&self, source: std::io::Error) -> RecordError {
        RecordError {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends a chunk, once the manifest and images are out.
    fn chunk(&mut self, kind: ChunkKind, payload: &[u8]) -> Result<(), RecordError> {
        if let Some(thread) = self.preparing.take() {
            let prepared = thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the image writer failed")));
            self.out = Some(prepared.map_err(|e| self.error(e))?);
        }
        let out = self
            .out
            .as_mut()
            .expect("the writer is back once preparing is done");
        out.chunk(kind, payload).map_err(|e| self.error(e))
    }

    /// Notes an input event; written out in a chunk soon.
    pub fn event(&mut self, icount: u64, input: &InputEvent) -> Result<(), RecordError> {
        if self.pending.is_empty() {
            self.last_flush = Instant::now();
        }
        self.pending.push(Event {
            icount,
            input: input.clone(),
        });
        if self.pending.len() >= FLUSH_EVENTS {
            self.flush(icount)?;
        }
        Ok(())
    }

    /// Writes an events chunk if events have waited long enough, or if nothing was written
    /// for a while: the chunk also tells a reader of a cut file how far the run got.
    pub fn flush_if_due(&mut self, icount: u64) -> Result<(), RecordError> {
        if self.last_flush.elapsed() >= FLUSH_AGE {
            self.flush(icount)?;
        }
        Ok(())
    }

    /// Writes the pending events as a chunk that covers the run up to `icount`.
    pub fn flush(&mut self, icount: u64) -> Result<(), RecordError> {
        self.last_flush = Instant::now();
        if self.pending.is_empty() && icount == self.chunk_from {
            return Ok(());
        }
        let mut raw = Vec::new();
        put_varint(&mut raw, self.chunk_from);
        put_varint(&mut raw, icount);
        raw.extend(encode_events(&self.pending, self.chunk_from));
        // Level 1: a network download puts tens of MB of incompressible frames here, and
        // this runs on the live loop.
        self.chunk(ChunkKind::Events, &compress_at(&raw, 1))?;
        self.pending.clear();
        self.chunk_from = icount;
        Ok(())
    }

    /// Writes a sync point (after the events before it).
    pub fn sync(&mut self, digest: &StateDigest) -> Result<(), RecordError> {
        self.flush(digest.icount)?;
        self.chunk(ChunkKind::Sync, &compress(&encode_sync(digest)))
    }

    /// Writes the final sync point and the end, completing the file.
    pub fn finish(mut self, digest: &StateDigest, end: &End) -> Result<(), RecordError> {
        self.sync(digest)?;
        let payload = postcard::to_allocvec(end).expect("an end always serialises");
        self.chunk(ChunkKind::End, &compress(&payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_at(icount: u64) -> StateDigest {
        StateDigest {
            icount,
            pc: 0x8000_0000 + icount,
            x: vec![icount; 32],
            ..StateDigest::default()
        }
    }

    #[test]
    fn sync_points_carry_every_hart_and_old_ones_still_read() {
        let mut digest = digest_at(7);
        digest.harts = (1..4)
            .map(|id| rewind_machine::HartDigest {
                id,
                pc: 0x8000_0000 + id,
                x: vec![id; 32],
                csrs: vec![("mhartid".into(), id)],
                ..Default::default()
            })
            .collect();
        assert_eq!(decode_sync(&encode_sync(&digest)).unwrap(), digest);
        // A sync point written before the harts were: the digest alone.
        let old = postcard::to_allocvec(&digest_at(7)).unwrap();
        assert_eq!(decode_sync(&old).unwrap(), digest_at(7));
        // Damaged registers after the digest are an error, not a panic.
        let mut damaged = encode_sync(&digest);
        damaged.truncate(damaged.len() - 3);
        assert!(decode_sync(&damaged).is_err());
    }

    /// A recording with two images (one twice), events around two sync points, and an end.
    fn sample(path: &Path) -> Vec<u8> {
        let kernel = vec![0x13u8; 100_000];
        let images = vec![
            ("kernel".to_string(), kernel.clone()),
            ("initrd".to_string(), kernel),
            ("dtb".to_string(), b"dtb".to_vec()),
        ];
        let mut r = Recorder::create(
            path,
            "test".into(),
            MachineConfig::default(),
            100,
            images,
            vec![],
        )
        .unwrap();
        r.event(0, &InputEvent::RtcBase(5)).unwrap();
        r.event(0, &InputEvent::Entropy(vec![1; 32])).unwrap();
        r.event(40, &InputEvent::Console(b"ls\n".to_vec())).unwrap();
        r.sync(&digest_at(100)).unwrap();
        r.event(100, &InputEvent::Console(b"x".to_vec())).unwrap();
        r.flush(150).unwrap();
        r.event(170, &InputEvent::Console(b"y".to_vec())).unwrap();
        let end = End {
            icount: 180,
            executed: 170,
            reason: EndReason::PowerOff(0),
            console_bytes: 3,
            console_hash: 9,
        };
        r.finish(&digest_at(180), &end).unwrap();
        std::fs::read(path).unwrap()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("rewind-{}-{name}", std::process::id()))
    }

    #[test]
    fn what_is_recorded_reads_back_in_order() {
        let path = temp("round-trip.rwd");
        let data = sample(&path);
        let _ = std::fs::remove_file(&path);
        let rec = Recording::parse(&data).unwrap();
        assert_eq!(rec.cut_at, None);
        assert_eq!(rec.end.as_ref().unwrap().icount, 180);
        let order: Vec<(u64, &str)> = rec
            .timeline
            .iter()
            .map(|e| match &e.item {
                Item::Event(input) => (e.icount, input.kind_name()),
                Item::Sync(_) => (e.icount, "sync"),
            })
            .collect();
        assert_eq!(
            order,
            [
                (0, "rtc_base"),
                (0, "entropy"),
                (40, "console"),
                (100, "sync"),
                (100, "console"),
                (170, "console"),
                (180, "sync"),
            ]
        );
        assert_eq!(rec.image("kernel").unwrap().unwrap(), vec![0x13; 100_000]);
        assert_eq!(rec.image("initrd").unwrap().unwrap(), vec![0x13; 100_000]);
        assert_eq!(rec.image("dtb").unwrap().unwrap(), b"dtb");
        assert_eq!(rec.image("bios").unwrap(), None);
        // The two identical images are stored once.
        assert!(rec.image_bytes < 2_000, "{}", rec.image_bytes);
        assert_eq!(rec.event_counts()["console"], 3);
        assert_eq!(rec.sync_points(), 2);
    }

    #[test]
    fn every_prefix_is_a_cut_recording_or_an_error() {
        let path = temp("prefixes.rwd");
        let data = sample(&path);
        let _ = std::fs::remove_file(&path);
        let mut last_known = 0;
        for len in 0..data.len() {
            match Recording::parse(&data[..len]) {
                Ok(rec) => {
                    assert!(rec.end.is_none() && rec.cut_at.is_some(), "prefix {len}");
                    assert!(rec.known_until >= last_known, "prefix {len}");
                    last_known = rec.known_until;
                }
                Err(e) => assert!(
                    matches!(
                        e,
                        RecordingError::CutTooEarly { .. }
                            | RecordingError::Read(ReadError::NotARecording)
                    ),
                    "prefix {len}: {e}"
                ),
            }
        }
        assert_eq!(
            last_known, 180,
            "the last prefix knows everything but the end"
        );
    }

    #[test]
    fn chunks_out_of_order_are_corruption() {
        let mut w = Writer::new(Vec::new()).unwrap();
        let manifest = Manifest {
            tool: "test".into(),
            machine: MachineConfig::default(),
            images: vec![],
            sync_interval: 10,
            drives: vec![],
        };
        w.chunk(ChunkKind::Config, &serde_json::to_vec(&manifest).unwrap())
            .unwrap();
        let sync = |icount| compress(&postcard::to_allocvec(&digest_at(icount)).unwrap());
        w.chunk(ChunkKind::Sync, &sync(50)).unwrap();
        w.chunk(ChunkKind::Sync, &sync(20)).unwrap();
        let err = Recording::parse(&w.into_inner()).err().unwrap();
        assert!(err.to_string().contains("goes back"), "{err}");
    }
}
