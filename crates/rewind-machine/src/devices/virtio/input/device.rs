use serde::{Deserialize, Serialize};

use crate::devices::virtio::queue::{GuestMemory, Queue, QueueError};
use crate::devices::virtio::{DeviceContext, Persist, VirtioDevice};

use super::state::InputState;

pub const DEVICE_ID: u32 = 18;

const EV_SYN: u16 = 0;
const EV_KEY: u16 = 1;
const EV_REL: u16 = 2;
const EV_ABS: u16 = 3;
const EV_REP: u16 = 0x14;
const BTN_LEFT: u16 = 0x110;
const BTN_MIDDLE: u16 = 0x112;
const BTN_RIGHT: u16 = 0x111;
/// The largest absolute coordinate of the tablet (as QEMU's).
pub const ABS_MAX: u32 = 0x7fff;

const CFG_ID_NAME: u8 = 0x01;
const CFG_ID_SERIAL: u8 = 0x02;
const CFG_ID_DEVIDS: u8 = 0x03;
const CFG_PROP_BITS: u8 = 0x10;
const CFG_EV_BITS: u8 = 0x11;
const CFG_ABS_INFO: u8 = 0x12;

/// Which input device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputKind {
    Keyboard,
    Tablet,
    Mouse,
}

/// One evdev event: type, code, value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvdevEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl EvdevEvent {
    pub const SYN: EvdevEvent = EvdevEvent {
        kind: EV_SYN,
        code: 0,
        value: 0,
    };

    pub fn key(code: u16, down: bool) -> EvdevEvent {
        EvdevEvent {
            kind: EV_KEY,
            code,
            value: down as i32,
        }
    }

    pub fn rel(axis: u16, value: i32) -> EvdevEvent {
        EvdevEvent {
            kind: EV_REL,
            code: axis,
            value,
        }
    }

    pub fn abs(axis: u16, value: i32) -> EvdevEvent {
        EvdevEvent {
            kind: EV_ABS,
            code: axis,
            value,
        }
    }
}

#[derive(Debug)]
pub struct Input {
    pub kind: InputKind,
    pub state: InputState,
}

/// A bitmap with the given bits set, trimmed to its last non-zero byte.
fn bitmap(bits: impl IntoIterator<Item = u16>) -> Vec<u8> {
    let mut map = vec![0u8; 128];
    for b in bits {
        if let Some(byte) = map.get_mut(b as usize / 8) {
            *byte |= 1 << (b % 8);
        }
    }
    let len = map.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    map.truncate(len);
    map
}

impl Input {
    pub fn new(kind: InputKind) -> Input {
        Input {
            kind,
            state: InputState::default(),
        }
    }

    /// Whether events of this evdev type belong to this device.
    pub fn takes(&self, event: &EvdevEvent) -> bool {
        match (self.kind, event.kind) {
            (_, EV_SYN) => true,
            (InputKind::Keyboard, EV_KEY) => event.code < BTN_LEFT,
            (InputKind::Tablet | InputKind::Mouse, EV_KEY) => event.code >= BTN_LEFT,
            (InputKind::Tablet, EV_ABS) => true,
            (InputKind::Mouse, EV_REL) => true,
            _ => false,
        }
    }

    /// The answer to the current select/subsel query.
    fn config_data(&self) -> Vec<u8> {
        let s = &self.state;
        match (s.select, self.kind) {
            (CFG_ID_NAME, InputKind::Keyboard) => b"QEMU Virtio Keyboard".to_vec(),
            (CFG_ID_NAME, InputKind::Tablet) => b"QEMU Virtio Tablet".to_vec(),
            (CFG_ID_NAME, InputKind::Mouse) => b"QEMU Virtio Mouse".to_vec(),
            (CFG_ID_SERIAL, _) => b"rewind".to_vec(),
            (CFG_ID_DEVIDS, _) => {
                // BUS_VIRTUAL, vendor, product, version.
                [0x06u16, 0x0627, self.kind as u16 + 1, 1]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            (CFG_PROP_BITS, _) => Vec::new(),
            (CFG_EV_BITS, kind) => match (s.subsel as u16, kind) {
                (EV_KEY, InputKind::Keyboard) => bitmap(1..BTN_LEFT),
                (EV_REP, InputKind::Keyboard) => bitmap([0]),
                (EV_KEY, _) => bitmap([BTN_LEFT, BTN_RIGHT, BTN_MIDDLE]),
                (EV_REL, InputKind::Mouse) => bitmap([0, 1, 8]),
                (EV_ABS, InputKind::Tablet) => bitmap([0, 1]),
                _ => Vec::new(),
            },
            (CFG_ABS_INFO, InputKind::Tablet) if s.subsel <= 1 => [0, ABS_MAX, 0, 0, 0]
                .iter()
                .flat_map(|v: &u32| v.to_le_bytes())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Queues the host's events of this device's kind, and delivers what the driver's
    /// buffers can take.
    pub fn take_host_events(
        &mut self,
        events: &[EvdevEvent],
        ctx: DeviceContext<'_>,
    ) -> Option<Result<bool, QueueError>> {
        let queue = ctx.queues.first_mut()?;
        let mine: Vec<EvdevEvent> = events
            .iter()
            .filter(|e| e.kind != 0 && self.takes(e))
            .copied()
            .chain(std::iter::once(EvdevEvent::SYN))
            .collect();
        if mine.len() < 2 || ctx.needs_reset {
            return None;
        }
        // Bounded, so a guest that never reads cannot make the host hold events forever.
        for e in mine {
            if self.state.pending.len() < super::MAX_PENDING {
                self.state.pending.push_back(e);
            }
        }
        Some(self.deliver(queue, ctx.mem))
    }

    /// Fills available event buffers with pending events; says whether to interrupt.
    fn deliver(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let mut interrupt = false;
        while let Some(event) = self.state.pending.front().copied() {
            let Some(chain) = queue.pop(mem)? else {
                break;
            };
            let mut bytes = [0u8; 8];
            bytes[0..2].copy_from_slice(&event.kind.to_le_bytes());
            bytes[2..4].copy_from_slice(&event.code.to_le_bytes());
            bytes[4..8].copy_from_slice(&event.value.to_le_bytes());
            let written = chain
                .write_all(mem, &bytes)
                .ok_or(QueueError::OutOfMemory)?;
            self.state.pending.pop_front();
            interrupt |= queue.push(mem, chain.head, written as u32)?;
        }
        Ok(interrupt)
    }
}

impl VirtioDevice for Input {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    /// An event queue and a status queue.
    fn queue_count(&self) -> usize {
        2
    }

    /// Select, subsel, size, 5 reserved bytes, then the data.
    fn read_config(&self) -> Vec<u8> {
        let data = self.config_data();
        let mut c = vec![
            self.state.select,
            self.state.subsel,
            data.len() as u8,
            0,
            0,
            0,
            0,
            0,
        ];
        c.extend_from_slice(&data);
        c.resize(8 + 128, 0);
        c
    }

    fn write_config(&mut self, offset: u64, value: u8) {
        match offset {
            0 => self.state.select = value,
            1 => self.state.subsel = value,
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.state = InputState::default();
    }

    fn notify(&mut self, notified: u32, ctx: DeviceContext<'_>) -> Result<bool, QueueError> {
        let [events, status] = ctx.queues else {
            return Ok(false);
        };
        // Status (LEDs) is taken and returned; events go into the event buffers.
        let mut drained = Ok(false);
        if notified & 2 != 0 {
            while let Ok(Some(chain)) = status.pop(ctx.mem) {
                drained = status.push(ctx.mem, chain.head, 0);
                if drained.is_err() {
                    break;
                }
            }
        }
        drained.and_then(|a| Ok(a | self.deliver(events, ctx.mem)?))
    }
}

impl Persist for Input {
    type State = InputState;

    fn state(&self) -> &InputState {
        &self.state
    }

    fn set_state(&mut self, state: InputState) {
        self.state = state;
    }

    fn check_state(&self, state: &InputState, _queues: &[Queue]) -> Result<(), String> {
        state.check()
    }
}

/// Linux key codes for QMP's qcodes (the ones a keyboard needs most).
pub fn qcode_to_key(qcode: &str) -> Option<u16> {
    const LETTERS: &str = "qwertyuiop";
    const HOME: &str = "asdfghjkl";
    const BOTTOM: &str = "zxcvbnm";
    if qcode.len() == 1 {
        let c = qcode.chars().next()?;
        if let Some(i) = LETTERS.find(c) {
            return Some(16 + i as u16);
        }
        if let Some(i) = HOME.find(c) {
            return Some(30 + i as u16);
        }
        if let Some(i) = BOTTOM.find(c) {
            return Some(44 + i as u16);
        }
        if let Some(d) = c.to_digit(10) {
            return Some(if d == 0 { 11 } else { 1 + d as u16 });
        }
    }
    Some(match qcode {
        "esc" => 1,
        "minus" => 12,
        "equal" => 13,
        "backspace" => 14,
        "tab" => 15,
        "bracket_left" => 26,
        "bracket_right" => 27,
        "ret" => 28,
        "ctrl" => 29,
        "semicolon" => 39,
        "apostrophe" => 40,
        "grave_accent" => 41,
        "shift" => 42,
        "backslash" => 43,
        "comma" => 51,
        "dot" => 52,
        "slash" => 53,
        "shift_r" => 54,
        "alt" => 56,
        "spc" => 57,
        "caps_lock" => 58,
        "f1" => 59,
        "f2" => 60,
        "f3" => 61,
        "f4" => 62,
        "f5" => 63,
        "f6" => 64,
        "f7" => 65,
        "f8" => 66,
        "f9" => 67,
        "f10" => 68,
        "f11" => 87,
        "f12" => 88,
        "ctrl_r" => 97,
        "alt_r" => 100,
        "home" => 102,
        "up" => 103,
        "pgup" => 104,
        "left" => 105,
        "right" => 106,
        "end" => 107,
        "down" => 108,
        "pgdn" => 109,
        "insert" => 110,
        "delete" => 111,
        _ => return None,
    })
}

/// Linux button codes for QMP's button names.
pub fn button_code(name: &str) -> Option<u16> {
    match name {
        "left" => Some(BTN_LEFT),
        "right" => Some(BTN_RIGHT),
        "middle" => Some(BTN_MIDDLE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(dev: &mut Input, select: u8, subsel: u8) -> Vec<u8> {
        dev.write_config(0, select);
        dev.write_config(1, subsel);
        let c = dev.read_config();
        c[8..8 + c[2] as usize].to_vec()
    }

    #[test]
    fn the_configuration_answers_what_linux_asks() {
        let mut kbd = Input::new(InputKind::Keyboard);
        assert_eq!(query(&mut kbd, CFG_ID_NAME, 0), b"QEMU Virtio Keyboard");
        let keys = query(&mut kbd, CFG_EV_BITS, EV_KEY as u8);
        let key_a = qcode_to_key("a").unwrap();
        assert_eq!(key_a, 30);
        assert_ne!(keys[key_a as usize / 8] & (1 << (key_a % 8)), 0);
        assert!(query(&mut kbd, CFG_EV_BITS, EV_ABS as u8).is_empty());
        let mut tablet = Input::new(InputKind::Tablet);
        let info = query(&mut tablet, CFG_ABS_INFO, 0);
        assert_eq!(u32::from_le_bytes(info[4..8].try_into().unwrap()), ABS_MAX);
        assert_eq!(query(&mut tablet, CFG_EV_BITS, EV_ABS as u8), [0b11]);
        assert!(
            query(&mut tablet, 0x7f, 0).is_empty(),
            "unknown selects are empty"
        );
    }

    #[test]
    fn each_device_takes_its_own_events() {
        let kbd = Input::new(InputKind::Keyboard);
        let mouse = Input::new(InputKind::Mouse);
        let key = EvdevEvent::key(30, true);
        let click = EvdevEvent::key(button_code("left").unwrap(), true);
        let wheel = EvdevEvent::rel(8, -1);
        assert!(kbd.takes(&key) && !kbd.takes(&click) && !kbd.takes(&wheel));
        assert!(mouse.takes(&click) && mouse.takes(&wheel) && !mouse.takes(&key));
        assert_eq!(qcode_to_key("0"), Some(11));
        assert_eq!(qcode_to_key("ret"), Some(28));
        assert_eq!(qcode_to_key("no-such-key"), None);
    }
}
