//! [`Limits`]: the numbers that bound what a caller may store, in one place. Every entry
//! point (the HTTP API, sessiond-axum, migrations) goes through the core's checks, so a
//! value that passes them is one every store can keep and read back.

/// Limits on what callers may send, so no input can grow without bound and everything
/// accepted can be read back by every store. The sizes are settings (`[limits]` in the
/// server's configuration); the JSON format limits are constants, held by
/// [`crate::JsonObject`]'s constructors, because a store's readers depend on them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest session storage (`data`) in bytes of JSON.
    pub max_data_bytes: usize,
    /// Largest `info` in bytes of JSON.
    pub max_info_bytes: usize,
    /// Longest user name, client label or privilege name, in bytes.
    pub max_name_len: usize,
    /// Longest user agent, in bytes (longer ones are cut, not refused).
    pub max_user_agent_len: usize,
    /// Most privileges per session.
    pub max_privileges: usize,
    /// Most ids in a `close_all` exception list.
    pub max_except: usize,
    /// Largest page of [`crate::Manager::list`].
    pub max_page: usize,
    /// Longest heartbeat interval or grace, and idle timeout, in seconds.
    pub max_duration_s: u32,
}

impl Limits {
    /// Deepest nesting of objects and arrays in `data` and `info` (the object itself is
    /// level 1). A stored record wraps them two levels deeper, far under the 128 levels
    /// at which serde_json and Redis's cjson stop reading.
    pub const MAX_JSON_DEPTH: usize = 32;
    /// Longest object key anywhere in `data` and `info`, in bytes.
    pub const MAX_JSON_KEY_BYTES: usize = 256;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_data_bytes: 64 * 1024,
            max_info_bytes: 8 * 1024,
            max_name_len: 256,
            max_user_agent_len: 512,
            max_privileges: 64,
            max_except: 1000,
            max_page: 1000,
            max_duration_s: 366 * 24 * 3600,
        }
    }
}
