//! The Goldfish RTC at 0x10_1000 (PLIC source 11): nanoseconds since the Unix epoch, counted
//! as a base (the wall clock when the machine started, an input from the host) plus the
//! virtual time of the instruction count. It never reads the host clock itself.

pub const IRQ: usize = 11;

const TIME_LOW: u64 = 0x00;
const TIME_HIGH: u64 = 0x04;
const ALARM_LOW: u64 = 0x08;
const ALARM_HIGH: u64 = 0x0c;
const IRQ_ENABLED: u64 = 0x10;
const CLEAR_ALARM: u64 = 0x14;
const ALARM_STATUS: u64 = 0x18;
const CLEAR_INTERRUPT: u64 = 0x1c;

/// Guest-visible state.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RtcState {
    /// Wall-clock nanoseconds at virtual time 0 (moved by guest writes to the time).
    pub base_ns: u64,
    pub time_high_latch: u32,
    pub alarm_high: u32,
    pub alarm_ns: u64,
    pub alarm_armed: bool,
    pub irq_enabled: bool,
    pub irq_pending: bool,
}

#[derive(Default, Debug)]
pub struct Rtc {
    pub state: RtcState,
}

impl Rtc {
    pub fn new(base_ns: u64) -> Rtc {
        Rtc {
            state: RtcState {
                base_ns,
                ..RtcState::default()
            },
        }
    }

    fn now(&self, virtual_ns: u64) -> u64 {
        self.state.base_ns.wrapping_add(virtual_ns)
    }

    /// Fires the alarm if its time has come.
    pub fn update(&mut self, virtual_ns: u64) {
        if self.state.alarm_armed && self.now(virtual_ns) >= self.state.alarm_ns {
            self.state.alarm_armed = false;
            self.state.irq_pending = true;
        }
    }

    pub fn irq_level(&self) -> bool {
        self.state.irq_pending && self.state.irq_enabled
    }

    /// Virtual nanoseconds at which the armed alarm fires.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.state
            .alarm_armed
            .then(|| self.state.alarm_ns.saturating_sub(self.state.base_ns))
    }

    pub fn read(&mut self, offset: u64, virtual_ns: u64) -> u32 {
        let s = &mut self.state;
        match offset {
            TIME_LOW => {
                let now = s.base_ns.wrapping_add(virtual_ns);
                s.time_high_latch = (now >> 32) as u32;
                now as u32
            }
            TIME_HIGH => s.time_high_latch,
            ALARM_LOW => s.alarm_ns as u32,
            ALARM_HIGH => (s.alarm_ns >> 32) as u32,
            IRQ_ENABLED => s.irq_enabled as u32,
            ALARM_STATUS => s.alarm_armed as u32,
            _ => 0,
        }
    }

    pub fn write(&mut self, offset: u64, value: u32, virtual_ns: u64) {
        let s = &mut self.state;
        match offset {
            TIME_LOW => {
                let now = (s.time_high_latch as u64) << 32 | value as u64;
                s.base_ns = now.wrapping_sub(virtual_ns);
            }
            TIME_HIGH => s.time_high_latch = value,
            ALARM_LOW => {
                s.alarm_ns = (s.alarm_high as u64) << 32 | value as u64;
                s.alarm_armed = true;
                self.update(virtual_ns);
            }
            ALARM_HIGH => s.alarm_high = value,
            IRQ_ENABLED => s.irq_enabled = value & 1 != 0,
            CLEAR_ALARM => s.alarm_armed = false,
            CLEAR_INTERRUPT => s.irq_pending = false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_base_plus_virtual_time() {
        let mut rtc = Rtc::new(1_700_000_000_000_000_000);
        let low = rtc.read(TIME_LOW, 5) as u64;
        let high = rtc.read(TIME_HIGH, 999) as u64;
        assert_eq!(high << 32 | low, 1_700_000_000_000_000_005);
    }

    #[test]
    fn alarm_fires_at_its_time() {
        let mut rtc = Rtc::new(1000);
        rtc.write(IRQ_ENABLED, 1, 0);
        rtc.write(ALARM_HIGH, 0, 0);
        rtc.write(ALARM_LOW, 1500, 0);
        assert_eq!(rtc.next_deadline_ns(), Some(500));
        rtc.update(499);
        assert!(!rtc.irq_level());
        rtc.update(500);
        assert!(rtc.irq_level());
        assert_eq!(rtc.read(ALARM_STATUS, 500), 0);
        rtc.write(CLEAR_INTERRUPT, 1, 500);
        assert!(!rtc.irq_level());
    }

    #[test]
    fn guest_can_set_the_time() {
        let mut rtc = Rtc::new(0);
        rtc.write(TIME_HIGH, 1, 100);
        rtc.write(TIME_LOW, 0, 100);
        let low = rtc.read(TIME_LOW, 200) as u64;
        assert_eq!(
            (rtc.read(TIME_HIGH, 200) as u64) << 32 | low,
            (1 << 32) + 100
        );
    }
}
