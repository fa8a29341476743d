//! The on-disk record format shared by journals and snapshots.
//!
//! A file is a sequence of frames: `[len: u32 LE][crc32: u32 LE][payload: len bytes]`.
//! The payload is a tag byte then its body: `P` + a session as JSON (the session's new
//! state) or `R` + 16 bytes of session id (removed). A frame whose length runs past the
//! end of the file or whose checksum does not match marks a torn write: reading stops
//! there. A frame that is whole and checksummed but cannot be decoded (written by a
//! version with other rules, or damaged before it was sealed) is no torn write: it is
//! returned as [`Record::Unreadable`] and reading goes on after it, so one bad record
//! never hides the ones that follow.

use sessiond_core::{Session, SessionId};

/// One decoded frame.
#[derive(Debug)]
pub enum Record {
    /// A session's new state.
    Put(Box<Session>),
    /// A session removed.
    Remove(SessionId),
    /// A whole, checksummed frame whose payload cannot be decoded.
    Unreadable(Unreadable),
}

/// A frame that is whole but cannot be decoded, kept as found.
#[derive(Debug)]
pub struct Unreadable {
    /// Where the frame starts in its file.
    pub offset: u64,
    /// The session it belongs to, when its id can still be read.
    pub id: Option<SessionId>,
    /// The payload (tag byte and body).
    pub payload: Vec<u8>,
    /// Why it cannot be decoded.
    pub error: String,
}

/// The id at the start of a `P` payload (`{"id":"<uuid>"...`, as
/// [`Session::write_json`] writes it), read without decoding the rest.
fn leading_id(body: &[u8]) -> Option<SessionId> {
    let text = body.strip_prefix(b"{\"id\":\"")?.get(..36)?;
    std::str::from_utf8(text).ok()?.parse().ok()
}

const HEADER: usize = 8;

/// Appends a frame holding `session`'s state to `buf`.
pub fn encode_put(buf: &mut Vec<u8>, session: &Session) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf.push(b'P');
    session.write_json(buf);
    seal(buf, start);
}

/// Appends a frame recording that `id` was removed.
pub fn encode_remove(buf: &mut Vec<u8>, id: SessionId) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf.push(b'R');
    buf.extend_from_slice(&id.as_u128().to_be_bytes());
    seal(buf, start);
}

fn seal(buf: &mut [u8], start: usize) {
    let payload = &buf[start + HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What reading a file found.
#[derive(Debug)]
pub struct Decoded {
    /// The valid frames, in order.
    pub records: Vec<Record>,
    /// Bytes of valid frames from the start; anything after is a torn tail.
    pub valid_len: u64,
    /// Whether the file had bytes after the last valid frame.
    pub torn: bool,
}

/// Decodes every valid frame of `bytes`, stopping at the first torn or corrupt one.
pub fn decode_all(bytes: &[u8]) -> Decoded {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(pos + HEADER..pos + HEADER + len) else {
            break;
        };
        if len == 0 || crc32fast::hash(payload) != crc {
            break;
        }
        let unreadable = |id, error: String| {
            Record::Unreadable(Unreadable {
                offset: pos as u64,
                id,
                payload: payload.to_vec(),
                error,
            })
        };
        let record = match payload[0] {
            b'P' => match serde_json::from_slice::<Session>(&payload[1..]) {
                Ok(s) => Record::Put(Box::new(s)),
                Err(e) => unreadable(leading_id(&payload[1..]), e.to_string()),
            },
            b'R' if payload.len() == 17 => {
                let id = u128::from_be_bytes(payload[1..17].try_into().expect("16 bytes"));
                Record::Remove(SessionId::from_u128(id))
            }
            tag => unreadable(None, format!("unknown record type {tag}")),
        };
        records.push(record);
        pos += HEADER + len;
    }
    Decoded {
        records,
        valid_len: pos as u64,
        torn: pos != bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sessiond_core::{Actor, Client, CloseReason, JsonObject, Privileges, Timestamp, TokenHash};

    use super::*;

    fn bare() -> Session {
        Session {
            id: SessionId::new(),
            token_hash: TokenHash(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            app: Arc::from("shop"),
            user: None,
            privileges: Privileges::default(),
            info: JsonObject::empty(),
            data: JsonObject::empty(),
            client: Client::default(),
            created_at: Timestamp(1_700_000_000_000),
            last_activity_at: Timestamp(1_700_000_000_500),
            last_heartbeat_at: Timestamp(1_700_000_000_000),
            idle_timeout_s: 1800,
            lifetime_s: 86_400,
            heartbeat: None,
            retention_s: 0,
            counts_seat: false,
            bind_ip: false,
            closed: None,
            version: 0,
        }
    }

    /// A session with storage and a user, closed.
    fn used() -> Session {
        let data = serde_json::json!({"cart": {"items": [1, 2]}, "n": 41});
        let mut s = Session {
            user: Some("zoé".into()),
            data: JsonObject::from_value(&data).unwrap(),
            ..bare()
        };
        s.close(
            CloseReason::Logout,
            Actor::User,
            Timestamp(1_700_000_001_000),
        );
        s
    }

    #[test]
    fn frames_read_back() {
        for s in [bare(), used()] {
            let mut frames = Vec::new();
            encode_put(&mut frames, &s);
            encode_remove(&mut frames, s.id);
            let d = decode_all(&frames);
            assert!(!d.torn);
            assert!(matches!(&d.records[0], Record::Put(back) if **back == s));
            assert!(matches!(d.records[1], Record::Remove(id) if id == s.id));
        }
    }

    /// A frame as the writer seals it, around any payload.
    fn sealed(payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0; HEADER];
        buf.extend_from_slice(payload);
        seal(&mut buf, 0);
        buf
    }

    #[test]
    fn a_whole_frame_that_cannot_be_decoded_is_returned_and_reading_goes_on() {
        let s = used();
        let mut bad = b"P".to_vec();
        s.write_json(&mut bad);
        bad.truncate(bad.len() - 1); // no closing brace: whole and checksummed, not JSON
        let mut file = sealed(&bad);
        let bad_len = file.len() as u64;
        file.extend(sealed(b"Xjunk"));
        encode_remove(&mut file, s.id);
        let d = decode_all(&file);
        assert!(!d.torn, "nothing was torn");
        assert_eq!(d.valid_len, file.len() as u64);
        assert!(matches!(&d.records[0], Record::Unreadable(u)
            if u.offset == 0 && u.id == Some(s.id) && u.payload == bad));
        assert!(matches!(&d.records[1], Record::Unreadable(u)
            if u.offset == bad_len && u.id.is_none() && u.error.contains("unknown record type")));
        assert!(matches!(d.records[2], Record::Remove(id) if id == s.id));
    }
}
