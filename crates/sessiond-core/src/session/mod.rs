//! Sessions: the model and the rules that move it, one file per idea.
//!
//! - `model.rs`: what a session is ([`Session`], [`Privileges`], [`Heartbeat`],
//!   [`Client`], [`CloseReason`], [`Actor`], [`Closure`]).
//! - `deadline.rs`: when a session is due (its timeouts, the deadline stores index it by,
//!   the end of a closed session's retention).
//! - `step.rs`: the step rule, [`Session::step`], the one function that applies a
//!   [`Change`] to a session. Every store calls it inside its own atomic section, so the
//!   rules are written once and each store only provides atomicity.
//! - `encode.rs`: [`Session::write_json`], the fast encoder stores write sessions with.

mod deadline;
mod encode;
mod model;
mod step;

pub use model::{
    Actor, Client, CloseReason, Closure, Heartbeat, OperatorName, Privileges, Session,
};
pub use step::{Change, ChangeError, Conditions, Step};

#[cfg(test)]
pub(crate) mod tests {
    //! A session for the unit tests of every part of this module.

    use std::sync::Arc;

    use super::{Client, Heartbeat, Privileges, Session};
    use crate::id::{SessionId, TokenHash};
    use crate::json::JsonObject;
    use crate::time::Timestamp;

    /// An open session of app `app` at time 0: idle timeout 60 s, lifetime 1 h, a 30 s
    /// heartbeat with 60 s of grace, 10 s of retention.
    pub(crate) fn session() -> Session {
        Session {
            id: SessionId::new(),
            token_hash: TokenHash(1),
            app: Arc::from("app"),
            user: None,
            privileges: Privileges::default(),
            info: JsonObject::empty(),
            data: JsonObject::empty(),
            client: Client::default(),
            created_at: Timestamp(0),
            last_activity_at: Timestamp(0),
            last_heartbeat_at: Timestamp(0),
            idle_timeout_s: 60,
            lifetime_s: 3600,
            heartbeat: Some(Heartbeat {
                interval_s: 30,
                grace_s: 60,
                active: true,
                lease_s: 0,
            }),
            retention_s: 10,
            counts_seat: true,
            bind_ip: false,
            closed: None,
            version: 1,
        }
    }
}
