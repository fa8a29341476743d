//! What the client sends: the bodies of the open, heartbeat and privilege calls and the
//! filters of a session list. Unset options are left out of the JSON, so the server's
//! defaults (the app's policy) apply.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::ClientInfo;

/// The heartbeat part of an [`OpenRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Seconds between beats.
    pub interval_s: u32,
    /// Extra seconds after a missed beat; the app's default when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_s: Option<u32>,
}

/// Body of `POST /v1/apps/{app}/sessions`. Every field is optional; `Default` opens a
/// guest session with the app's policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpenRequest {
    /// The user; `None` (and no privileges) opens a guest session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Privileges to grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Vec<String>>,
    /// Public facts about the holder; must be a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    /// Initial session storage; must be a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Where the client is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
    /// Turn the heartbeat on for this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatRequest>,
    /// Idle timeout in seconds, instead of the app's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u32>,
    /// Id of an open session whose seat this one takes over (it closes `taken_over`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take_over: Option<String>,
}

/// Body of `PUT /v1/session/heartbeat`: suspend, resume or retune the heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatUpdate {
    /// False suspends the heartbeat (only the idle timeout applies), true resumes it.
    pub active: bool,
    /// New interval in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u32>,
    /// New grace in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_s: Option<u32>,
}

/// Body of `PUT /v1/sessions/{id}/privileges`. The answer carries a new token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivilegesUpdate {
    /// The complete new set of privileges.
    pub privileges: Vec<String>,
    /// New public facts (a JSON object), unchanged when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    /// New user (e.g. a guest logging in), unchanged when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Which sessions a list returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Open sessions only.
    Open,
    /// Closed sessions kept as history.
    Closed,
    /// Both.
    Any,
}

impl StatusFilter {
    /// The query value: `open`, `closed` or `any`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Open => "open",
            StatusFilter::Closed => "closed",
            StatusFilter::Any => "any",
        }
    }
}

/// Order of a session list, by id (that is, by opening time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

impl Order {
    /// The query value: `asc` or `desc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// Filters and paging of `GET /v1/apps/{app}/sessions`; `None` fields use the server's
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Open, closed or any.
    pub status: Option<StatusFilter>,
    /// Only this user's sessions.
    pub user: Option<String>,
    /// Cursor: the `next` of the previous page.
    pub after: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// Oldest or newest first.
    pub order: Option<Order>,
}

impl ListQuery {
    /// The query pairs to append to the URL.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(status) = self.status {
            pairs.push(("status", status.as_str().to_string()));
        }
        if let Some(user) = &self.user {
            pairs.push(("user", user.clone()));
        }
        if let Some(after) = &self.after {
            pairs.push(("after", after.clone()));
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if let Some(order) = self.order {
            pairs.push(("order", order.as_str().to_string()));
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn open_request_sends_only_what_is_set() {
        let req = OpenRequest {
            user: Some("ann".into()),
            heartbeat: Some(HeartbeatRequest {
                interval_s: 30,
                grace_s: None,
            }),
            client: Some(ClientInfo {
                label: Some("desk-7".into()),
                ..ClientInfo::default()
            }),
            ..OpenRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"user": "ann", "heartbeat": {"interval_s": 30},
                   "client": {"label": "desk-7", "ip": null, "user_agent": null}})
        );
        assert_eq!(
            serde_json::to_value(OpenRequest::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn list_query_pairs() {
        let q = ListQuery {
            status: Some(StatusFilter::Closed),
            user: Some("ann".into()),
            limit: Some(10),
            order: Some(Order::Desc),
            ..ListQuery::default()
        };
        let pairs: Vec<_> = q
            .pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            pairs,
            ["status=closed", "user=ann", "limit=10", "order=desc"]
        );
    }
}
