//! The sessiond engine: sessions, their rules, and where they are kept. No HTTP, no
//! database driver: the server, the web layer and the stores build on this crate.
//!
//! - [`Session`] is the model: a public [`SessionId`], a secret [`Token`] (stored only
//!   as a [`TokenHash`]), app, user, privileges, info, storage, client, times, status.
//! - [`Policy`] holds an app's rules: idle timeout, absolute lifetime, heartbeat, seats,
//!   per-user limits, address binding, retention.
//! - [`Manager`] applies the rules over a [`Store`]; the store only makes each operation
//!   atomic. Besides the declared apps it may keep [`InternalApp`]s, whose sessions a
//!   program keeps for itself and never lists. [`MemoryStore`] is the in-memory store;
//!   other crates add durable ones, and every store passes the same conformance suite
//!   (feature `conformance`).
//!
//! ```
//! use std::sync::Arc;
//! use sessiond_core::{Manager, MemoryStore, OpenRequest, Policy, Resolve};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let manager = Manager::new(Arc::new(MemoryStore::new()));
//! manager.set_policy("shop", Policy { seats: Some(5), ..Default::default() })?;
//! let opened = manager.open("shop", OpenRequest { user: Some("ann".into()), ..Default::default() }).await?;
//! let session = manager.resolve(&opened.token, Resolve { touch: true, ip: None }).await?;
//! assert_eq!(session.user.as_deref(), Some("ann"));
//! assert_eq!(manager.seats("shop").await?.used, 1);
//! # Ok::<_, sessiond_core::Error>(()) }).unwrap();
//! ```

mod address;
pub mod admission;
pub mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod cookie;
mod error;
pub mod events;
pub mod hooks;
mod id;
mod internal;
mod json;
mod limits;
mod manager;
pub mod memory;
pub mod policy;
mod session;
pub mod skip;
pub mod store;
mod time;

pub use address::{client_address, forwarded_https};
pub use cookie::{find_cookie, CookieFound};
pub use error::{quoted, Error, Result};
pub use events::{Event, EventKind};
pub use id::{BadSessionId, SessionId, Token, TokenHash, MAX_TOKEN_PREFIX, TOKEN_KEY_BYTES};
pub use internal::{InternalApp, INTERNAL_APP_MARK};
pub use json::{JsonError, JsonObject};
pub use limits::Limits;
pub use manager::{
    valid_app_name, Applied, ClosedById, HeartbeatRequest, Manager, OpenRequest, Opened, Resolve,
    Seats,
};
pub use memory::MemoryStore;
pub use policy::{HeartbeatPolicy, OnFull, OnUserLimit, Policy, TokenPrefix};
pub use session::{
    Actor, Change, ChangeError, Client, CloseReason, Closure, Conditions, Heartbeat, OperatorName,
    Privileges, Session, Step,
};
pub use store::{Lookup, Ordered, Store, StoreError};
pub use time::{BadDate, Clock, Date, ManualClock, Rfc3339, SystemClock, Timestamp};
