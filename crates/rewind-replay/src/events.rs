//! The input event stream: `(icount, event)` pairs, encoded compactly (LEB128 deltas).

use rewind_machine::InputEvent;

use crate::format::ReadError;

/// One value from the host, entering the guest before instruction `icount`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub icount: u64,
    pub input: InputEvent,
}

const KIND_CONSOLE: u8 = 1;
const KIND_RTC_BASE: u8 = 2;
const KIND_ENTROPY: u8 = 3;
const KIND_RNG: u8 = 4;
const KIND_INPUT: u8 = 5;
const KIND_NET: u8 = 6;
/// A change of the clock's shift (`--icount-shift auto`): one byte, the new shift.
const KIND_ICOUNT_SHIFT: u8 = 7;
/// The most bytes one event may carry (the largest is a network frame).
const MAX_EVENT_BYTES: u64 = 1 << 17;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(data: &[u8], pos: &mut usize) -> Result<u64, ReadError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data
            .get(*pos)
            .ok_or_else(|| ReadError::BadPayload("an event is cut short".into()))?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ReadError::BadPayload(
        "a number in the event stream is too long".into(),
    ))
}

/// Encodes events whose instruction counts do not decrease, starting from `base`.
pub fn encode_events(events: &[Event], base: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last = base;
    for e in events {
        debug_assert!(
            e.icount >= last,
            "events must be in instruction-count order"
        );
        put_varint(&mut out, e.icount - last);
        last = e.icount;
        let bytes = match &e.input {
            InputEvent::Console(bytes) => {
                out.push(KIND_CONSOLE);
                bytes
            }
            InputEvent::Entropy(bytes) => {
                out.push(KIND_ENTROPY);
                bytes
            }
            InputEvent::Rng(bytes) => {
                out.push(KIND_RNG);
                bytes
            }
            InputEvent::Input(events) => {
                out.push(KIND_INPUT);
                put_varint(&mut out, events.len() as u64);
                for e in events {
                    out.extend_from_slice(&e.kind.to_le_bytes());
                    out.extend_from_slice(&e.code.to_le_bytes());
                    out.extend_from_slice(&e.value.to_le_bytes());
                }
                continue;
            }
            InputEvent::Net { nic, frame } => {
                out.push(KIND_NET);
                out.push(*nic);
                frame
            }
            InputEvent::RtcBase(ns) => {
                out.push(KIND_RTC_BASE);
                put_varint(&mut out, *ns);
                continue;
            }
            InputEvent::IcountShift(shift) => {
                out.push(KIND_ICOUNT_SHIFT);
                out.push(*shift);
                continue;
            }
        };
        put_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    out
}

/// Decodes what [`encode_events`] wrote; untrusted input gives an error, never a panic.
pub fn decode_events(data: &[u8], base: u64) -> Result<Vec<Event>, ReadError> {
    let mut events = Vec::new();
    let mut pos = 0;
    let mut icount = base;
    while pos < data.len() {
        let delta = get_varint(data, &mut pos)?;
        icount = icount
            .checked_add(delta)
            .ok_or_else(|| ReadError::BadPayload("an event lies past the end of time".into()))?;
        let kind = *data
            .get(pos)
            .ok_or_else(|| ReadError::BadPayload("an event is cut short".into()))?;
        pos += 1;
        let take_bytes = |pos: &mut usize| {
            let len = get_varint(data, pos)?;
            if len > MAX_EVENT_BYTES || len as usize > data.len() - *pos {
                return Err(ReadError::BadPayload("an event is cut short".into()));
            }
            let bytes = data[*pos..*pos + len as usize].to_vec();
            *pos += len as usize;
            Ok(bytes)
        };
        let input = match kind {
            KIND_CONSOLE => InputEvent::Console(take_bytes(&mut pos)?),
            KIND_ENTROPY => InputEvent::Entropy(take_bytes(&mut pos)?),
            KIND_RNG => InputEvent::Rng(take_bytes(&mut pos)?),
            KIND_INPUT => {
                let count = get_varint(data, &mut pos)?;
                if count > MAX_EVENT_BYTES / 8 || count as usize * 8 > data.len() - pos {
                    return Err(ReadError::BadPayload("an input event is cut short".into()));
                }
                let events = (0..count as usize)
                    .map(|i| {
                        let b = &data[pos + i * 8..pos + i * 8 + 8];
                        rewind_machine::EvdevEvent {
                            kind: u16::from_le_bytes([b[0], b[1]]),
                            code: u16::from_le_bytes([b[2], b[3]]),
                            value: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                        }
                    })
                    .collect();
                pos += count as usize * 8;
                InputEvent::Input(events)
            }
            KIND_RTC_BASE => InputEvent::RtcBase(get_varint(data, &mut pos)?),
            KIND_ICOUNT_SHIFT => {
                let shift = *data
                    .get(pos)
                    .ok_or_else(|| ReadError::BadPayload("an event is cut short".into()))?;
                pos += 1;
                if shift as u32 > rewind_machine::MAX_ICOUNT_SHIFT {
                    return Err(ReadError::BadPayload(format!(
                        "a change of the clock's shift to {shift} (at most {})",
                        rewind_machine::MAX_ICOUNT_SHIFT
                    )));
                }
                InputEvent::IcountShift(shift)
            }
            KIND_NET => {
                let nic = *data
                    .get(pos)
                    .ok_or_else(|| ReadError::BadPayload("an event is cut short".into()))?;
                pos += 1;
                InputEvent::Net {
                    nic,
                    frame: take_bytes(&mut pos)?,
                }
            }
            other => {
                return Err(ReadError::BadPayload(format!("unknown event kind {other}")));
            }
        };
        events.push(Event { icount, input });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let events = vec![
            Event {
                icount: 50,
                input: InputEvent::RtcBase(1_795_894_200_000_000_000),
            },
            Event {
                icount: 50,
                input: InputEvent::Entropy(vec![7; 32]),
            },
            Event {
                icount: 60,
                input: InputEvent::Rng(vec![9; 64]),
            },
            Event {
                icount: 70,
                input: InputEvent::Input(vec![
                    rewind_machine::EvdevEvent::key(30, true),
                    rewind_machine::EvdevEvent::abs(1, -5),
                ]),
            },
            Event {
                icount: 80,
                input: InputEvent::Net {
                    nic: 1,
                    frame: vec![0xab; 1514],
                },
            },
            Event {
                icount: 90,
                input: InputEvent::IcountShift(10),
            },
            Event {
                icount: 90,
                input: InputEvent::IcountShift(0),
            },
            Event {
                icount: 100,
                input: InputEvent::Console(b"ls\n".to_vec()),
            },
            Event {
                icount: 100,
                input: InputEvent::Console(vec![]),
            },
            Event {
                icount: 1 << 40,
                input: InputEvent::Console(vec![0xff; 300]),
            },
        ];
        let bytes = encode_events(&events, 50);
        assert_eq!(decode_events(&bytes, 50).unwrap(), events);
        // Every prefix of the stream is either whole events or an error, never a panic.
        for len in 0..bytes.len() {
            let _ = decode_events(&bytes[..len], 50);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_events(&[0xff; 11], 0).is_err());
        assert!(decode_events(&[0, 9], 0).is_err());
        assert!(
            decode_events(&[0, KIND_ICOUNT_SHIFT, 11], 0).is_err(),
            "shift past 10"
        );
        assert!(decode_events(&[0, KIND_ICOUNT_SHIFT], 0).is_err());
        assert!(decode_events(&[0, 1, 0xff, 0xff, 0x03], 0).is_err());
        assert!(decode_events(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 0],
            u64::MAX
        )
        .is_err());
    }
}
