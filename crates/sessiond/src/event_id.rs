//! [`EventId`]: the `id:` of an app event stream's frames, `<epoch>-<seq>`, and the
//! reading of a `Last-Event-ID` header back into one.
//!
//! The epoch is drawn at random when the server starts ([`EventId::random_epoch`]), so
//! two nodes behind a balancer, or two runs of one node, never share one; the sequence
//! numbers the events this run has seen, in the order it saw them. An id therefore names
//! one event of one run of one node, and only that run can say what followed it. Ids of
//! the form used before epochs (a bare number) name no run that can still be found.
//!
//! Reading a header never fails the request: a browser's `EventSource` sends back
//! whatever it last received, so a value that is not an id of this format becomes
//! [`NotAnId`], and the stream starts with a `resync` event instead of a 4xx.

use std::fmt;

/// The longest `Last-Event-ID` read as an id. Ours are at most 37 bytes (16 hex digits,
/// a dash, 20 decimal digits); anything longer is not one of ours and is not looked at.
pub const MAX_LAST_EVENT_ID_BYTES: usize = 64;

/// The id of one event of an app event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    /// The run of the node that numbered the event.
    pub epoch: u64,
    /// The event's number in that run (0: before the first event).
    pub seq: u64,
}

/// Why a `Last-Event-ID` is not an [`EventId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnId {
    /// A bare number: an id of the format sent before ids carried an epoch.
    Legacy,
    /// Anything else: not an id a sessiond server sends, or longer than
    /// [`MAX_LAST_EVENT_ID_BYTES`].
    Malformed,
}

impl EventId {
    /// A fresh epoch from the OS random number generator, for a server that starts.
    pub fn random_epoch() -> u64 {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("the OS random number generator is unavailable");
        u64::from_le_bytes(b)
    }

    /// Reads a `Last-Event-ID` header value: `<16 hex digits>-<decimal>`, ASCII blanks
    /// around it ignored. Any input gives an answer; none panics.
    pub fn parse(value: &[u8]) -> Result<EventId, NotAnId> {
        if value.len() > MAX_LAST_EVENT_ID_BYTES {
            return Err(NotAnId::Malformed);
        }
        let value = value.trim_ascii();
        if decimal(value).is_some() {
            return Err(NotAnId::Legacy);
        }
        let Some(dash) = value.iter().position(|&b| b == b'-') else {
            return Err(NotAnId::Malformed);
        };
        let (epoch, seq) = (&value[..dash], &value[dash + 1..]);
        match (hex16(epoch), decimal(seq)) {
            (Some(epoch), Some(seq)) => Ok(EventId { epoch, seq }),
            _ => Err(NotAnId::Malformed),
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.epoch, self.seq)
    }
}

/// Exactly 16 hex digits, as an epoch.
fn hex16(text: &[u8]) -> Option<u64> {
    if text.len() != 16 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()
}

/// One or more decimal digits (no sign) that fit a u64.
fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_back_what_it_writes() {
        for (epoch, seq) in [(0, 0), (1, 2), (0xdead_beef, 42), (u64::MAX, u64::MAX)] {
            let id = EventId { epoch, seq };
            let text = id.to_string();
            assert!(text.len() <= 37, "{text}");
            assert_eq!(EventId::parse(text.as_bytes()), Ok(id), "{text}");
        }
        assert_eq!(
            EventId { epoch: 10, seq: 7 }.to_string(),
            "000000000000000a-7"
        );
    }

    #[test]
    fn surrounding_blanks_and_upper_case_hex_are_read() {
        assert_eq!(
            EventId::parse(b" 00000000000000AB-3\t"),
            Ok(EventId {
                epoch: 0xab,
                seq: 3
            })
        );
    }

    #[test]
    fn what_is_not_an_id() {
        for legacy in [&b"0"[..], b"17", b" 42 ", b"18446744073709551615"] {
            assert_eq!(EventId::parse(legacy), Err(NotAnId::Legacy), "{legacy:?}");
        }
        let long = format!("{}-1", "0".repeat(MAX_LAST_EVENT_ID_BYTES));
        for bad in [
            &b""[..],
            b"   ",
            b"-",
            b"abc",
            b"18446744073709551616", // over u64: not a number we could have sent
            b"000000000000000a-",
            b"-5",
            b"000000000000000a--5",
            b"000000000000000a-+5",
            b"000000000000000a-5-6",
            b"00000000000000a-5", // 15 digits
            b"0000000000000000a-5",
            b"000000000000000g-5",
            b"+00000000000000a-5",
            b"000000000000000a-18446744073709551616",
            b"000000000000000a-5 6",
            "000000000000000a-٣".as_bytes(),
            b"\xff\xfe-1",
            long.as_bytes(),
        ] {
            assert_eq!(EventId::parse(bad), Err(NotAnId::Malformed), "{bad:?}");
        }
    }

    /// The text of an id as [`EventId`]'s `Display` spells it: lower-case hex, no
    /// leading zeros in the sequence, no blanks around.
    fn canonical(text: &[u8]) -> String {
        let text = String::from_utf8(text.trim_ascii().to_vec()).unwrap();
        let (epoch, seq) = text.split_once('-').unwrap();
        let seq = seq.trim_start_matches('0');
        let seq = if seq.is_empty() { "0" } else { seq };
        format!("{}-{seq}", epoch.to_ascii_lowercase())
    }

    proptest! {
        /// Any header value gets an answer, and an id is only ever what its text says.
        #[test]
        fn any_value_is_answered(value in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(id) = EventId::parse(&value) {
                prop_assert!(value.len() <= MAX_LAST_EVENT_ID_BYTES);
                prop_assert_eq!(canonical(&value), id.to_string());
            }
        }

        /// Near misses of real ids (one byte changed, cut off, or added) never panic and
        /// never read as another id than the text says.
        #[test]
        fn mutated_ids(epoch in any::<u64>(), seq in any::<u64>(), at in 0usize..40,
                       byte in any::<u8>(), how in 0u8..3) {
            let mut text = EventId { epoch, seq }.to_string().into_bytes();
            let at = at.min(text.len());
            match how {
                0 if at < text.len() => text[at] = byte,
                1 => text.truncate(at),
                _ => text.insert(at, byte),
            }
            if let Ok(id) = EventId::parse(&text) {
                prop_assert_eq!(canonical(&text), id.to_string());
            }
        }
    }
}
