//! [`Grant`]: what a login gives a session (privileges, user, info). Both ways a session
//! gets one read it: `privileges.rs` when a stored session is granted new privileges,
//! `session.rs` when the grant opens a new session; it lives apart so neither has to
//! import the other for it.

use serde_json::{Map, Value};

/// New privileges for a session: what [`Session::set_privileges`](crate::Session::set_privileges) takes (4D's
/// `Session.setPrivileges`).
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// The privileges (the whole set: it replaces the current one).
    pub privileges: Vec<String>,
    /// The signed-in user, if any (kept as it was when none).
    pub user: Option<String>,
    /// Public facts about the user, e.g. `{"userName": "Ann Martin"}` (kept as it was
    /// when none).
    pub info: Option<Map<String, Value>>,
}
