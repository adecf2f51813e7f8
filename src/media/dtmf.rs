//! DTMF reception: RFC 4733 telephone-events, and the SIP INFO bodies phones send instead.
//!
//! One key press is one digit, however it arrives: an event is named by its RTP timestamp
//! (every packet of one event carries the event's start timestamp, RFC 4733 §2.3.4), so the
//! repeated packets of a long press and the three end-of-event retransmissions (§2.5.1.4)
//! are the same digit, and packets arriving out of order change nothing. A press longer than
//! the 16-bit duration field is sent as segments with new timestamps and no marker bit
//! (§2.5.1.3): those continue the current digit.

/// The DTMF characters of RFC 4733 §3.2, indexed by event code: the one table for both
/// directions (received events here, sent ones in `rtp/events_out.rs`).
const EVENT_CHARS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// The DTMF character of an event code (RFC 4733 §3.2); None for the other events.
pub fn event_char(code: u8) -> Option<char> {
    EVENT_CHARS.get(usize::from(code)).copied()
}

/// The event code of a DTMF character (`0`-`9`, `*`, `#`, `A`-`D`, case-insensitive): the
/// inverse of [`event_char`].
pub fn event_code(digit: char) -> Option<u8> {
    let digit = digit.to_ascii_uppercase();
    EVENT_CHARS
        .iter()
        .position(|&c| c == digit)
        .and_then(|i| u8::try_from(i).ok())
}

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub code: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads the 4-byte payload; None if it is shorter.
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let p = payload.get(..4)?;
        Some(TelephoneEvent {
            code: p[0],
            end: p[1] & 0x80 != 0,
            volume: p[1] & 0x3f,
            duration: u16::from_be_bytes([p[2], p[3]]),
        })
    }
}

/// Turns telephone-event packets into digits, each exactly once.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    /// Timestamps of recent events (a small ring: enough to absorb retransmissions and
    /// reordering of the last few presses).
    recent: [Option<(u32, u32)>; 16],
    next: usize,
    /// The event in progress: (ssrc, timestamp, code, ended).
    current: Option<(u32, u32, u8, bool)>,
}

impl DtmfReceiver {
    pub fn new() -> DtmfReceiver {
        DtmfReceiver::default()
    }

    /// Feeds one telephone-event RTP packet; returns the digit if it starts a new press.
    pub fn on_packet(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Option<char> {
        let ev = TelephoneEvent::parse(payload)?;
        let digit = event_char(ev.code)?;
        if self.recent.contains(&Some((ssrc, timestamp))) {
            // Same event: a later packet, a retransmitted end, or a late one.
            if let Some(cur) = &mut self.current {
                if cur.0 == ssrc && cur.1 == timestamp && ev.end {
                    cur.3 = true;
                }
            }
            return None;
        }
        let continues = matches!(
            self.current,
            Some((s, t, code, ended)) if s == ssrc && code == ev.code && !ended && !marker
                && timestamp.wrapping_sub(t) < 0x8000_0000
        );
        self.recent[self.next] = Some((ssrc, timestamp));
        self.next = (self.next + 1) % self.recent.len();
        self.current = Some((ssrc, timestamp, ev.code, ev.end));
        if continues {
            None
        } else {
            Some(digit)
        }
    }
}

/// The digit of a SIP INFO body: `application/dtmf-relay` (`Signal=5`) or `application/dtmf`
/// (the digit alone).
pub fn info_digit(content_type: &str, body: &[u8]) -> Option<char> {
    let ctype = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let value = match ctype.as_str() {
        "application/dtmf-relay" => text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?,
        "application/dtmf" => text.trim(),
        _ => return None,
    };
    match value {
        "10" => Some('*'),
        "11" => Some('#'),
        v if v.len() == 1 => v.chars().next().and_then(event_code).and_then(event_char),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(code: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [code, if end { 0x80 | 10 } else { 10 }, d[0], d[1]]
    }

    #[test]
    fn a_long_press_with_three_end_packets_is_one_digit() {
        let mut r = DtmfReceiver::new();
        let mut digits = vec![];
        digits.extend(r.on_packet(1, 1000, true, &ev(5, false, 160)));
        for d in [320, 480, 640, 800, 960] {
            digits.extend(r.on_packet(1, 1000, false, &ev(5, false, d)));
        }
        for _ in 0..3 {
            digits.extend(r.on_packet(1, 1000, false, &ev(5, true, 1120)));
        }
        assert_eq!(digits, vec!['5']);
    }

    #[test]
    fn the_same_key_twice_is_two_digits() {
        let mut r = DtmfReceiver::new();
        let mut digits = vec![];
        for ts in [1000u32, 3000] {
            digits.extend(r.on_packet(1, ts, true, &ev(1, false, 160)));
            for _ in 0..3 {
                digits.extend(r.on_packet(1, ts, false, &ev(1, true, 800)));
            }
        }
        assert_eq!(digits, vec!['1', '1']);
    }

    #[test]
    fn out_of_order_and_lost_start_still_count_once() {
        let mut r = DtmfReceiver::new();
        let mut digits = vec![];
        // The end arrives before the start; the start packet of the next digit is lost.
        digits.extend(r.on_packet(1, 1000, false, &ev(11, true, 800)));
        digits.extend(r.on_packet(1, 1000, true, &ev(11, false, 160)));
        digits.extend(r.on_packet(1, 2000, false, &ev(10, false, 320)));
        digits.extend(r.on_packet(1, 2000, false, &ev(10, true, 800)));
        // A late retransmission of the first digit's end.
        digits.extend(r.on_packet(1, 1000, false, &ev(11, true, 800)));
        assert_eq!(digits, vec!['#', '*']);
    }

    #[test]
    fn a_press_split_into_segments_is_one_digit() {
        let mut r = DtmfReceiver::new();
        let mut digits = vec![];
        digits.extend(r.on_packet(1, 0, true, &ev(9, false, 65535)));
        // RFC 4733 §2.5.1.3: the next segment has a new timestamp, no marker.
        digits.extend(r.on_packet(1, 65535, false, &ev(9, false, 1000)));
        digits.extend(r.on_packet(1, 65535, false, &ev(9, true, 2000)));
        digits.extend(r.on_packet(1, 80000, true, &ev(9, false, 160)));
        assert_eq!(digits, vec!['9', '9']);
    }

    #[test]
    fn short_and_unknown_payloads_are_ignored() {
        let mut r = DtmfReceiver::new();
        assert_eq!(r.on_packet(1, 0, true, &[5, 0]), None);
        assert_eq!(r.on_packet(1, 10, true, &ev(16, false, 160)), None);
        assert_eq!(r.on_packet(1, 20, true, &ev(12, false, 160)), Some('A'));
    }

    #[test]
    fn event_codes_and_characters_are_inverse() {
        for code in 0..16u8 {
            let c = event_char(code).unwrap();
            assert_eq!(event_code(c), Some(code));
            assert_eq!(event_code(c.to_ascii_lowercase()), Some(code));
        }
        assert_eq!(event_char(16), None);
        assert_eq!(event_code('#'), Some(11));
        assert_eq!(event_code('d'), Some(15));
        for c in ['E', 'e', ' ', 'w', ',', '١', '\u{0}'] {
            assert_eq!(event_code(c), None, "{c:?}");
        }
    }

    #[test]
    fn sip_info_bodies() {
        assert_eq!(
            info_digit("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        assert_eq!(
            info_digit("application/dtmf-relay", b"Signal= #\r\n"),
            Some('#')
        );
        assert_eq!(
            info_digit("application/dtmf-relay", b"Signal=11\r\n"),
            Some('#')
        );
        assert_eq!(info_digit("application/dtmf", b"7"), Some('7'));
        assert_eq!(info_digit("application/dtmf-relay", b"Duration=160"), None);
        assert_eq!(info_digit("text/plain", b"Signal=5"), None);
        assert_eq!(info_digit("application/dtmf", b"x"), None);
    }
}
