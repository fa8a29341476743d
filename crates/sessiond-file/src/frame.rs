//! The on-disk record format shared by journals and snapshots.
//!
//! A file is a sequence of frames: `[len: u32 LE][crc32: u32 LE][payload: len bytes]`.
//! The payload is a tag byte then its body: `P` + a session as JSON (the session's new
//! state), `R` + 16 bytes of session id (removed), `E` + `{"session":…,"deliveries":[…]}`
//! (a session's new state and the webhook deliveries its change owes, in one frame so
//! that a torn write keeps both or neither), `H` + a webhook delivery as JSON (its new
//! state) or `h` + 16 bytes of delivery id (done). A frame whose length runs past the
//! end of the file or whose checksum does not match marks a torn write: reading stops
//! there. A frame that is whole and checksummed but cannot be decoded (written by a
//! version with other rules, or damaged before it was sealed) is no torn write: it is
//! returned as [`Record::Unreadable`] and reading goes on after it, so one bad record
//! never hides the ones that follow.

use sessiond_core::hooks::{Delivery, HookId};
use sessiond_core::{Session, SessionId};

/// One decoded frame.
#[derive(Debug)]
pub enum Record {
    /// A session's new state.
    Put(Box<Session>),
    /// A session's new state and the webhook deliveries its change owes.
    PutHooked(Box<Session>, Vec<Delivery>),
    /// A session removed.
    Remove(SessionId),
    /// A webhook delivery's new state.
    Hook(Box<Delivery>),
    /// A webhook delivery done.
    Unhook(HookId),
    /// A whole, checksummed frame whose payload cannot be decoded.
    Unreadable(Unreadable),
    /// The end of a batch (see [`encode_commit`]).
    Commit,
    /// Bytes holding no valid frame where valid records follow (see [`decode_all`]),
    /// in their place among the records.
    Damaged(Damaged),
}

/// Damaged bytes of a file.
#[derive(Debug)]
pub struct Damaged {
    /// Where they start in the file.
    pub offset: u64,
    /// The bytes, as found.
    pub bytes: Vec<u8>,
    /// Sessions whose state may have been in them (an id found after a `P` tag): their
    /// last state cannot be known, so they are left out rather than shown as they were
    /// before (a damaged logout must not bring a session back).
    pub ids: Vec<SessionId>,
}

impl Damaged {
    fn new(bytes: &[u8], from: usize, to: usize) -> Damaged {
        let range = &bytes[from..to];
        let ids = [&b"P"[..], HOOKED]
            .into_iter()
            .flat_map(|tag| {
                (0..range.len().saturating_sub(tag.len()))
                    .filter(move |i| {
                        range[*i..].starts_with(tag)
                            && range[i + tag.len()..].starts_with(b"{\"id\":\"")
                    })
                    .filter_map(move |i| leading_id(&range[i + tag.len()..]))
            })
            .collect();
        Damaged {
            offset: from as u64,
            bytes: range.to_vec(),
            ids,
        }
    }

    /// The tail of the file at `path` from byte `from`, which no valid frame follows,
    /// where none may be torn.
    pub fn tail(path: &std::path::Path, from: u64) -> std::io::Result<Damaged> {
        let bytes = std::fs::read(path)?;
        Ok(Damaged::new(&bytes, from as usize, bytes.len()))
    }
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

/// How an `E` frame's payload starts, up to the session's JSON.
const HOOKED: &[u8] = b"E{\"session\":";

/// Appends a frame holding `session`'s state and the deliveries its change owes.
pub fn encode_put_hooked(buf: &mut Vec<u8>, session: &Session, deliveries: &[Delivery]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf.extend_from_slice(HOOKED);
    session.write_json(buf);
    buf.extend_from_slice(b",\"deliveries\":");
    serde_json::to_writer(&mut *buf, deliveries).expect("plain data serialises");
    buf.push(b'}');
    seal(buf, start);
}

/// The body of an `E` frame.
#[derive(serde::Deserialize)]
struct Hooked {
    session: Box<Session>,
    deliveries: Vec<Delivery>,
}

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

/// Appends a frame holding a webhook delivery's state to `buf`.
pub fn encode_hook(buf: &mut Vec<u8>, d: &Delivery) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf.push(b'H');
    serde_json::to_writer(&mut *buf, d).expect("plain data serialises");
    seal(buf, start);
}

/// Appends a frame recording that delivery `id` is done.
pub fn encode_unhook(buf: &mut Vec<u8>, id: HookId) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf.push(b'h');
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

/// Appends the marker that ends a batch: the writer seals every batch with one. A
/// batch is acknowledged only once written and synced, and the writer starts the next
/// batch only after that, so a record found after a batch's marker proves that batch
/// complete: damage before it is damage to acknowledged data, not a write cut short.
pub fn encode_commit(buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf.push(b'C');
    seal(buf, start);
}

/// What reading a file found, as a list ([`decode_all`]).
#[cfg(test)]
#[derive(Debug)]
pub struct Decoded {
    /// The valid frames, in order.
    pub records: Vec<Record>,
    /// Bytes of valid frames from the start; anything after is a torn tail.
    pub valid_len: u64,
    /// Whether the file had bytes after the last valid frame.
    pub torn: bool,
}

/// The frame at `pos`, if one starts there whole and checksummed.
fn frame_at(bytes: &[u8], pos: usize) -> Option<&[u8]> {
    let header = bytes.get(pos..pos + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let payload = bytes.get(pos + HEADER..(pos + HEADER).checked_add(len)?)?;
    (len > 0 && crc32fast::hash(payload) == crc).then_some(payload)
}

/// Whether a frame this writer writes could start at `pos`, judged from its header and
/// first bytes before any checksum is computed: the search for the next frame after bad
/// bytes would otherwise checksum up to 4 GiB at every position. A session record
/// starts `P{"id":"`, which JSON text never holds unescaped elsewhere.
fn plausible(bytes: &[u8], pos: usize) -> bool {
    let Some(header) = bytes.get(pos..(pos + HEADER + 8).min(bytes.len())) else {
        return false;
    };
    if header.len() <= HEADER {
        return false;
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    match &header[HEADER..] {
        [b'R', ..] => len == 17,
        [b'C', ..] => len == 1,
        body => body == b"P{\"id\":\"" && len as usize <= bytes.len() - pos - HEADER,
    }
}

/// Whether the file at `path` starts with a whole, checksummed frame (only its first
/// frame is read).
pub fn file_starts_with_frame(path: &std::path::Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut first = vec![0u8; HEADER];
    if len < HEADER as u64 {
        return Ok(false);
    }
    f.read_exact(&mut first)?;
    let payload = u64::from(u32::from_le_bytes(first[..4].try_into().expect("4 bytes")));
    if payload > len - HEADER as u64 {
        return Ok(false);
    }
    // At most the file's length: a header's claim allocates nothing beyond the file.
    first.resize(HEADER + payload as usize, 0);
    f.read_exact(&mut first[HEADER..])?;
    Ok(frame_at(&first, 0).is_some())
}

/// Decodes a frame's payload, found at `offset`.
fn decode(payload: &[u8], offset: u64) -> Record {
    let unreadable = |id, error: String| {
        Record::Unreadable(Unreadable {
            offset,
            id,
            payload: payload.to_vec(),
            error,
        })
    };
    match payload[0] {
        b'P' => match serde_json::from_slice::<Session>(&payload[1..]) {
            Ok(s) => Record::Put(Box::new(s)),
            Err(e) => unreadable(leading_id(&payload[1..]), e.to_string()),
        },
        b'R' if payload.len() == 17 => {
            let id = u128::from_be_bytes(payload[1..17].try_into().expect("16 bytes"));
            Record::Remove(SessionId::from_u128(id))
        }
        b'C' if payload.len() == 1 => Record::Commit,
        b'E' => match serde_json::from_slice::<Hooked>(&payload[1..]) {
            Ok(h) => Record::PutHooked(h.session, h.deliveries),
            Err(e) => unreadable(
                payload.strip_prefix(HOOKED).and_then(leading_id),
                e.to_string(),
            ),
        },
        b'H' => match serde_json::from_slice::<Delivery>(&payload[1..]) {
            Ok(d) => Record::Hook(Box::new(d)),
            Err(e) => unreadable(None, e.to_string()),
        },
        b'h' if payload.len() == 17 => {
            let id = u128::from_be_bytes(payload[1..17].try_into().expect("16 bytes"));
            Record::Unhook(HookId::from_u128(id))
        }
        tag => unreadable(None, format!("unknown record type {tag}")),
    }
}

/// Decodes every frame of `bytes` from `pos` on, stopping at the first bad one, giving
/// each record to `each` as it is read. Returns where they end.
/// `base` is where `bytes` starts in its file (records say where they were found).
fn run<E>(
    bytes: &[u8],
    mut pos: usize,
    base: u64,
    each: &mut impl FnMut(Record) -> Result<(), E>,
) -> Result<usize, E> {
    while let Some(payload) = frame_at(bytes, pos) {
        each(decode(payload, base + pos as u64))?;
        pos += HEADER + payload.len();
    }
    Ok(pos)
}

/// How a file read by [`decode_file`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Bytes of valid frames from the start; anything after is a torn tail.
    pub valid_len: u64,
    /// Whether the file has bytes after the last valid frame.
    pub torn: bool,
    /// Whether those bytes are all zeros (a journal's preallocated room).
    pub padding: bool,
}

/// The piece of a file read at a time by [`decode_file`].
const PIECE: usize = 1 << 20;

/// [`decode_from`] on the file at `path`, read a piece at a time: a file of valid
/// frames ending in zeros (every journal) is never held whole in memory, so a restart
/// needs about the memory of the sessions it loads, not of the files it reads. Where a
/// bad frame is followed by anything but zeros (a torn write, damage), the file is read
/// whole and judged as [`decode_from`] does.
pub fn decode_file<E: From<std::io::Error>>(
    path: &std::path::Path,
    complete: bool,
    each: impl FnMut(Record) -> Result<(), E>,
) -> Result<Ending, E> {
    decode_file_by(path, complete, PIECE, each)
}

/// [`decode_file`], reading `piece` bytes at a time.
fn decode_file_by<E: From<std::io::Error>>(
    path: &std::path::Path,
    complete: bool,
    piece: usize,
    mut each: impl FnMut(Record) -> Result<(), E>,
) -> Result<Ending, E> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = Vec::with_capacity(piece);
    // Where `buf` starts in the file.
    let mut base = 0u64;
    let bad = loop {
        let pos = run(&buf, 0, base, &mut each)?;
        buf.drain(..pos);
        base += pos as u64;
        // The frame at `base` is bad, or not whole in `buf`: read on if the file holds
        // what it needs (its header, then the length it claims).
        let read = base + buf.len() as u64;
        let need = match buf.get(..4) {
            Some(h) => HEADER as u64 + u64::from(u32::from_le_bytes(h.try_into().expect("4"))),
            None => HEADER as u64,
        };
        if need <= buf.len() as u64 || base + need > len || read == len {
            break base;
        }
        let more = (need - buf.len() as u64).max(piece as u64).min(len - read);
        let at = buf.len();
        buf.resize(at + more as usize, 0);
        f.read_exact(&mut buf[at..])?;
    };
    if bad == len {
        return Ok(Ending {
            valid_len: len,
            torn: false,
            padding: true,
        });
    }
    // Zeros to the end: the preallocated room, read a piece at a time.
    let mut zeros = buf.iter().all(|b| *b == 0);
    let mut read = base + buf.len() as u64;
    while zeros && read < len {
        let n = (len - read).min(piece as u64) as usize;
        buf.resize(n, 0);
        f.read_exact(&mut buf[..n])?;
        zeros = buf.iter().all(|b| *b == 0);
        read += n as u64;
    }
    if zeros {
        return Ok(Ending {
            valid_len: bad,
            torn: true,
            padding: true,
        });
    }
    drop(buf);
    let bytes = std::fs::read(path)?;
    let (valid_len, torn) = decode_from(&bytes, bad as usize, complete, each)?;
    let padding = bytes[valid_len as usize..].iter().all(|b| *b == 0);
    Ok(Ending {
        valid_len,
        torn,
        padding,
    })
}

/// Decodes every valid frame of `bytes` into a list ([`decode_from`]).
#[cfg(test)]
pub fn decode_all(bytes: &[u8], complete: bool) -> Decoded {
    let mut records = Vec::new();
    let (valid_len, torn) = decode_from(bytes, 0, complete, |r| {
        records.push(r);
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    Decoded {
        records,
        valid_len,
        torn,
    }
}

/// Decodes every valid frame of `bytes` from `pos` on (where a frame starts or a bad one
/// is found), giving each record to `each` in file order as it is read. Returns the
/// bytes of valid frames from the start (anything after is a torn tail) and whether the
/// file had bytes after the last valid frame.
///
/// Where a frame is torn or fails its checksum, the rest is searched for the next
/// valid frame. If what follows proves the bad bytes' batch complete (a batch marker
/// with a record after it), or the file is `complete` (a snapshot: written whole and
/// synced before it was named), the bad bytes are damage: a [`Record::Damaged`] in
/// their place, and reading goes on. Otherwise they are the torn tail of the
/// last batch, which was never acknowledged: reading stops there.
fn decode_from<E>(
    bytes: &[u8],
    pos: usize,
    complete: bool,
    mut each: impl FnMut(Record) -> Result<(), E>,
) -> Result<(u64, bool), E> {
    let mut pos = run(bytes, pos, 0, &mut each)?;
    while pos < bytes.len() {
        // Zeros are the journal's preallocated room, never a frame: skip them quickly.
        let next = (pos + 1..bytes.len()).find(|q| {
            // One byte first: most positions (the zeros of the preallocated room) end here.
            matches!(bytes.get(q + HEADER), Some(b'P' | b'R' | b'C'))
                && plausible(bytes, *q)
                && frame_at(bytes, *q).is_some()
        });
        let Some(next) = next else { break };
        // Damage is rare: what follows it is held until it proves the damage is not a
        // torn tail.
        let mut after = Vec::new();
        let end = run(bytes, next, 0, &mut |r| {
            after.push(r);
            Ok::<(), E>(())
        })?;
        let proven = complete
            || after
                .iter()
                .position(|r| matches!(r, Record::Commit))
                .is_some_and(|i| i + 1 < after.len());
        if !proven {
            break;
        }
        each(Record::Damaged(Damaged::new(bytes, pos, next)))?;
        for r in after {
            each(r)?;
        }
        pos = end;
    }
    Ok((pos as u64, pos != bytes.len()))
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
            let d = decode_all(&frames, false);
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

    /// Two batches as the writer writes them: `a`, marker; `b`, marker.
    fn two_batches(a: &Session, b: &Session) -> (Vec<u8>, usize) {
        let mut file = Vec::new();
        encode_put(&mut file, a);
        let first_len = file.len();
        encode_commit(&mut file);
        encode_put(&mut file, b);
        encode_commit(&mut file);
        (file, first_len)
    }

    #[test]
    fn damage_in_a_batch_a_later_batch_followed_is_damage_and_reading_goes_on() {
        let (a, b) = (used(), bare());
        let (mut file, first_len) = two_batches(&a, &b);
        file[first_len / 2] ^= 0x55; // a bit flip inside a's frame
        let d = decode_all(&file, false);
        assert!(!d.torn);
        assert!(
            matches!(&d.records[0], Record::Damaged(x)
            if x.offset == 0 && x.ids == vec![a.id]),
            "{:?}",
            d.records[0]
        );
        assert!(d
            .records
            .iter()
            .any(|r| matches!(r, Record::Put(s) if s.id == b.id)));
        assert_eq!(d.valid_len, file.len() as u64);
    }

    #[test]
    fn damage_in_the_last_batch_is_a_torn_write_and_cut() {
        let (a, b) = (used(), bare());
        let (mut file, first_len) = two_batches(&a, &b);
        let second = first_len + HEADER + 1; // where b's frame starts
        file[second + HEADER + 4] ^= 0x55;
        let d = decode_all(&file, false);
        assert!(d.torn, "b's batch never completed: a torn write");
        assert_eq!(d.valid_len, second as u64);
        assert!(d.records.iter().all(|r| !matches!(r, Record::Damaged(_))));
        // The same bytes in a snapshot (written whole) are damage.
        let mut snapshot = Vec::new();
        encode_put(&mut snapshot, &a);
        let cut = snapshot.len();
        encode_put(&mut snapshot, &b);
        encode_put(&mut snapshot, &a);
        snapshot[cut + HEADER + 60] ^= 0x55; // past the id
        let d = decode_all(&snapshot, true);
        assert!(d
            .records
            .iter()
            .any(|r| matches!(r, Record::Damaged(x) if x.ids == vec![b.id])));
        assert!(!d.torn);
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
        let d = decode_all(&file, false);
        assert!(!d.torn, "nothing was torn");
        assert_eq!(d.valid_len, file.len() as u64);
        assert!(matches!(&d.records[0], Record::Unreadable(u)
            if u.offset == 0 && u.id == Some(s.id) && u.payload == bad));
        assert!(matches!(&d.records[1], Record::Unreadable(u)
            if u.offset == bad_len && u.id.is_none() && u.error.contains("unknown record type")));
        assert!(matches!(d.records[2], Record::Remove(id) if id == s.id));
    }

    /// One piece of a generated file.
    #[derive(Debug, Clone)]
    enum Piece {
        Put(u16),
        Remove,
        Commit,
        Garbage(Vec<u8>),
        Zeros(u16),
        /// A put frame cut after this many bytes (a torn write).
        Cut(u16),
        /// A put frame with one byte changed (damage).
        Flipped(u16),
        /// A whole, checksummed frame that cannot be decoded.
        Undecodable,
    }

    fn piece() -> impl proptest::strategy::Strategy<Value = Piece> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0u16..400).prop_map(Piece::Put),
            2 => Just(Piece::Remove),
            3 => Just(Piece::Commit),
            1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Piece::Garbage),
            2 => (1u16..3000).prop_map(Piece::Zeros),
            1 => (1u16..200).prop_map(Piece::Cut),
            1 => (0u16..200).prop_map(Piece::Flipped),
            1 => Just(Piece::Undecodable),
        ]
    }

    fn put_frame(n: u16) -> Vec<u8> {
        let mut s = bare();
        s.data = JsonObject::from_value(&serde_json::json!({"pad": "x".repeat(n.into())})).unwrap();
        let mut out = Vec::new();
        encode_put(&mut out, &s);
        out
    }

    fn build(pieces: &[Piece]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            match p {
                Piece::Put(n) => out.extend(put_frame(*n)),
                Piece::Remove => encode_remove(&mut out, SessionId::from_u128(7)),
                Piece::Commit => encode_commit(&mut out),
                Piece::Garbage(g) => out.extend(g),
                Piece::Zeros(n) => out.extend(std::iter::repeat_n(0, (*n).into())),
                Piece::Cut(k) => {
                    let f = put_frame(*k);
                    out.extend(&f[..(*k as usize).min(f.len() - 1)]);
                }
                Piece::Undecodable => out.extend(sealed(b"Xjunk")),
                Piece::Flipped(at) => {
                    let mut f = put_frame(20);
                    let i = *at as usize % f.len();
                    f[i] ^= 0x5a;
                    out.extend(f);
                }
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// A file read a piece at a time gives the records, in order, and the ending
        /// that reading it whole gives, whatever it holds (frames, a torn write, damage,
        /// garbage, the zeros of preallocated room) and wherever the pieces cut it.
        #[test]
        fn a_file_read_in_pieces_reads_as_a_whole(
            pieces in proptest::collection::vec(piece(), 0..24),
            complete in proptest::bool::ANY,
        ) {
            let bytes = build(&pieces);
            let whole = decode_all(&bytes, complete);
            let path = std::env::temp_dir().join(format!(
                "sessiond-frames-{}-{:?}.log",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&path, &bytes).unwrap();
            for by in [HEADER + 1, 64, 1000, PIECE] {
                let mut records = Vec::new();
                let end = decode_file_by(&path, complete, by, |r| {
                    records.push(r);
                    Ok::<(), std::io::Error>(())
                })
                .unwrap();
                proptest::prop_assert_eq!(format!("{records:?}"), format!("{:?}", whole.records));
                proptest::prop_assert_eq!(end.valid_len, whole.valid_len);
                proptest::prop_assert_eq!(end.torn, whole.torn);
                let padding = bytes[whole.valid_len as usize..].iter().all(|b| *b == 0);
                proptest::prop_assert_eq!(end.padding, padding);
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
}
