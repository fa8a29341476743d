//! The fast JSON encoder of a session: [`Session::write_json`] writes byte for byte what
//! serde writes for a [`Session`], at a fraction of the cost, because every store encodes
//! every session it writes. A test holds the two to the same bytes.

use crate::session::Session;

impl Session {
    /// The session as JSON text, as [`Session::write_json`] writes it.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256 + self.data.as_str().len() + self.info.as_str().len());
        self.write_json(&mut out);
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    /// Appends the session as JSON to `out`: byte for byte what `serde_json::to_writer`
    /// writes (a test holds it to that), at a fraction of the cost. Stores encode every
    /// session they write; through serde's field-by-field machinery that was an eighth of
    /// the server's instructions for a durable web write. Field names are literals, ids
    /// are written from stack buffers, `info` and `data` are already compact JSON text;
    /// the rarer parts go through serde. A field added to `Session` must be added here
    /// too, and to the test's sessions.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let s = self;
        /// Serialising plain data into memory cannot fail.
        fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
            serde_json::to_writer(&mut *out, v).expect("plain data serialises");
        }
        fn int(out: &mut Vec<u8>, key: &[u8], n: u64) {
            out.extend_from_slice(key);
            json(out, &n);
        }
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(s.id.encode(&mut [0; 36]).as_bytes());
        out.extend_from_slice(b"\",\"token_hash\":\"");
        out.extend_from_slice(s.token_hash.encode(&mut [0; 32]).as_bytes());
        out.extend_from_slice(b"\",\"app\":");
        json(out, &*s.app);
        if let Some(user) = &s.user {
            out.extend_from_slice(b",\"user\":");
            json(out, user);
        }
        out.extend_from_slice(b",\"privileges\":");
        if s.privileges.is_empty() {
            out.extend_from_slice(b"[]");
        } else {
            json(out, &s.privileges);
        }
        out.extend_from_slice(b",\"info\":");
        out.extend_from_slice(s.info.as_str().as_bytes());
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(s.data.as_str().as_bytes());
        out.extend_from_slice(b",\"client\":");
        json(out, &s.client);
        int(out, b",\"created_at\":", s.created_at.0);
        int(out, b",\"last_activity_at\":", s.last_activity_at.0);
        int(out, b",\"last_heartbeat_at\":", s.last_heartbeat_at.0);
        int(out, b",\"idle_timeout_s\":", s.idle_timeout_s.into());
        int(out, b",\"lifetime_s\":", s.lifetime_s.into());
        if let Some(h) = &s.heartbeat {
            out.extend_from_slice(b",\"heartbeat\":");
            json(out, h);
        }
        int(out, b",\"retention_s\":", s.retention_s.into());
        out.extend_from_slice(if s.counts_seat {
            b",\"counts_seat\":true"
        } else {
            b",\"counts_seat\":false"
        });
        out.extend_from_slice(if s.bind_ip {
            b",\"bind_ip\":true"
        } else {
            b",\"bind_ip\":false"
        });
        if let Some(c) = &s.closed {
            out.extend_from_slice(b",\"closed\":");
            json(out, c);
        }
        int(out, b",\"version\":", s.version);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::id::SessionId;
    use crate::json::JsonObject;
    use crate::session::tests::session;
    use crate::session::{Actor, Client, CloseReason, Closure, Heartbeat, Privileges, Session};
    use crate::time::Timestamp;

    #[test]
    fn write_json_writes_exactly_what_serde_writes() {
        let bare = Session {
            heartbeat: None,
            ..session()
        };
        let full = Session {
            user: Some("zoé\\\"q\u{7f}".into()),
            privileges: Privileges::new(["admin", "sales"]),
            info: JsonObject::from_value(&json!({"name": "Zoé \"Z\"", "tags": ["a", 1]})).unwrap(),
            data: JsonObject::from_value(&json!({"cart": {"items": [1, 2]}, "s": "é\u{1}\n"}))
                .unwrap(),
            client: Client {
                label: Some("pos-7 \u{263a}".into()),
                ip: Some("2001:db8::1".parse().unwrap()),
                user_agent: Some("Mozilla/5.0 (X11)".into()),
            },
            heartbeat: Some(Heartbeat {
                interval_s: 30,
                grace_s: 15,
                active: false,
                lease_s: 45,
            }),
            counts_seat: false,
            bind_ip: true,
            closed: Some(Closure {
                at: Timestamp(u64::MAX),
                reason: CloseReason::HeartbeatLost,
                by: Actor::Session(SessionId::new()),
            }),
            version: u64::MAX,
            ..session()
        };
        for s in [bare, session(), full] {
            let mut ours = Vec::new();
            s.write_json(&mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
    }
}
