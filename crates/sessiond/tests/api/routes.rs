//! The route × credential table: every route `/openapi.json` lists, called with every
//! kind of credential, must answer the status the table says. A route missing from the
//! table, or a row naming a route the API no longer has, fails the test; so does any
//! cell that answers otherwise. An operator route that forgot its scope shows here as a
//! 2xx for another app's key.
//!
//! Each cell gets a fresh session of app `shop` (so a close in one cell cannot change
//! the next), and every refused cell is checked to have changed nothing: the session is
//! still open at the same version.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{
    id, token, Server, ADMIN, AUDITOR_TOKEN, DESK_KEY, DESK_OPS_TOKEN, OPS_TOKEN, SHOP_CLIENT_KEY,
    SHOP_KEY,
};

/// Who calls.
#[derive(Debug, Clone, Copy)]
enum Cred {
    /// No `Authorization` header.
    None,
    /// A bearer secret that is nothing.
    Wrong,
    /// The token of a session of `shop`.
    SessionToken,
    /// The admin's sign-in of the console, as the browser sends it (a cookie).
    ConsoleCookie,
    /// The same sign-in's session token, sent as a bearer credential.
    ConsoleToken,
    /// The client credential of `shop`: may only open a session.
    ClientKey,
    /// The key of `desk`, used on `shop`'s routes and sessions.
    OtherAppKey,
    /// An operator of `desk` only.
    OtherAppOperator,
    /// A read-only operator of every app.
    ReadOnlyOperator,
    /// An operator of every app.
    Operator,
    /// The key of `shop`.
    OwnAppKey,
    /// The admin token.
    Admin,
}

const CREDS: [Cred; 12] = [
    Cred::None,
    Cred::Wrong,
    Cred::SessionToken,
    Cred::ConsoleCookie,
    Cred::ConsoleToken,
    Cred::ClientKey,
    Cred::OtherAppKey,
    Cred::OtherAppOperator,
    Cred::ReadOnlyOperator,
    Cred::Operator,
    Cred::OwnAppKey,
    Cred::Admin,
];

/// A route and the status each credential of [`CREDS`] gets, in that order.
struct Row {
    method: Method,
    path: &'static str,
    body: Option<fn() -> Value>,
    want: [u16; 12],
}

fn row(method: Method, path: &'static str, want: [u16; 12]) -> Row {
    Row {
        method,
        path,
        body: None,
        want,
    }
}

fn with_body(method: Method, path: &'static str, body: fn() -> Value, want: [u16; 12]) -> Row {
    Row {
        method,
        path,
        body: Some(body),
        want,
    }
}

/// The table. Columns: none, wrong, session token, console cookie, console token as a
/// bearer, client credential, other app's key, other app's operator, read-only
/// operator, operator, own app key, admin. A console sign-in is worth nothing on the
/// API: its cookie is not read there, and its token is refused even on the session
/// routes (it acts only through the console's own pages). A client credential may only
/// open a session.
fn table() -> Vec<Row> {
    use Method as M;
    // A session's own routes: only its token.
    let own_session = [401, 401, 200, 401, 401, 401, 401, 401, 401, 401, 401, 401];
    // An app's routes: its key or the admin token; another app's key is told 403.
    let app = [401, 401, 401, 401, 401, 403, 403, 403, 200, 200, 200, 200];
    // The same, for a route that changes things: read-only operators are refused.
    let app_write = [401, 401, 401, 401, 401, 403, 403, 403, 403, 200, 200, 200];
    // A session by id: another app's key is told what an unknown id gets (404).
    let by_id = [401, 401, 401, 401, 401, 403, 404, 404, 200, 200, 200, 200];
    let by_id_write = [401, 401, 401, 401, 401, 403, 404, 404, 403, 200, 200, 200];
    // Open to anyone.
    let public = [200; 12];
    vec![
        row(M::GET, "/v1/session", own_session),
        row(M::DELETE, "/v1/session", own_session),
        row(M::POST, "/v1/session/heartbeat", own_session),
        with_body(
            M::PUT,
            "/v1/session/heartbeat",
            || json!({"active": true, "interval_s": 60}),
            own_session,
        ),
        with_body(
            M::PATCH,
            "/v1/session/data",
            || json!({"cart": [1]}),
            own_session,
        ),
        row(M::GET, "/v1/session/events", own_session),
        row(M::GET, "/v1/session/others", own_session),
        // `{id}` is the caller's own session: not one of its *other* sessions.
        row(
            M::DELETE,
            "/v1/session/others/{id}",
            [401, 401, 404, 401, 401, 401, 401, 401, 401, 401, 401, 401],
        ),
        row(M::POST, "/v1/session/others/close-all", own_session),
        // A reverse proxy's check: the session's own cookie or token, nothing else.
        row(M::GET, "/v1/apps/{app}/forward-auth", own_session),
        // The browser heartbeat reads the app's cookie only: no credential of this table
        // names a session there, so each is told `{"status": "none"}` and nothing changes.
        row(M::GET, "/v1/apps/{app}/heartbeat.js", public),
        with_body(M::POST, "/v1/apps/{app}/heartbeat", || json!({}), public),
        with_body(
            M::PUT,
            "/v1/apps/{app}/heartbeat",
            || json!({"active": true, "interval_s": 1}),
            public,
        ),
        row(
            M::GET,
            "/v1/apps",
            [401, 401, 401, 401, 401, 403, 403, 403, 200, 200, 403, 200],
        ),
        row(M::GET, "/v1/apps/{app}", app),
        with_body(
            M::POST,
            "/v1/apps/{app}/sessions",
            || json!({"user": "carol"}),
            [401, 401, 401, 401, 401, 201, 403, 403, 403, 201, 201, 201],
        ),
        row(M::GET, "/v1/apps/{app}/sessions", app),
        row(M::POST, "/v1/apps/{app}/sessions/close-all", app_write),
        row(M::GET, "/v1/apps/{app}/events", app),
        row(M::GET, "/v1/sessions/{id}", by_id),
        row(M::DELETE, "/v1/sessions/{id}", by_id_write),
        with_body(
            M::PUT,
            "/v1/sessions/{id}/privileges",
            || json!({"privileges": ["editor"]}),
            by_id_write,
        ),
        // The table's server keeps its sessions in memory: nothing to back up (409)
        // for those allowed to ask.
        row(
            M::POST,
            "/v1/backups",
            [401, 401, 401, 401, 401, 403, 403, 403, 403, 409, 403, 409],
        ),
        // The table's server has no configuration file to read again (409).
        row(
            M::POST,
            "/v1/reload",
            [401, 401, 401, 401, 401, 403, 403, 403, 403, 409, 403, 409],
        ),
        row(M::GET, "/v1/apps/{app}/hooks", app),
        row(M::GET, "/v1/apps/{app}/hooks/deliveries", app),
        row(
            M::POST,
            "/v1/apps/{app}/hooks/deliveries/{id}/resend",
            // No such delivery: told only to those who may resend one.
            [401, 401, 401, 401, 401, 403, 403, 403, 403, 404, 404, 404],
        ),
        row(M::GET, "/healthz", public),
        row(M::GET, "/readyz", public),
        row(M::GET, "/metrics", public),
        row(M::GET, "/openapi.json", public),
    ]
}

/// Every (method, path) the OpenAPI document lists.
async fn documented(srv: &Server) -> BTreeSet<(String, String)> {
    let (status, doc) = srv.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_route_answers_every_credential_as_the_table_says() {
    let srv = Server::memory().await;
    let rows = table();

    let listed: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(listed.len(), rows.len(), "a route is in the table twice");
    let documented = documented(&srv).await;
    let missing: Vec<_> = documented.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes of /openapi.json with no row in the table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "rows of the table that /openapi.json does not list: {stale:?}"
    );

    // The admin signs in to the console once; its cookie and token serve every row.
    let signed_in = crate::console::sign_in(&srv, ADMIN).await;
    assert_eq!(signed_in.status(), 303, "the console sign-in");
    let console_cookie = signed_in.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let console_token = console_cookie.split_once('=').unwrap().1.to_string();

    let mut wrong = Vec::new();
    for r in &rows {
        for (cred, want) in CREDS.iter().zip(r.want) {
            let opened = srv
                .open(
                    "shop",
                    SHOP_KEY,
                    json!({"user": "alice", "heartbeat": {"interval_s": 30}}),
                )
                .await;
            let session = id(&opened);
            let session_token = token(&opened);
            let path = r.path.replace("{app}", "shop").replace("{id}", &session);
            let secret = match cred {
                Cred::None => None,
                Cred::Wrong => Some("not-a-credential-0123456789"),
                Cred::SessionToken => Some(session_token.as_str()),
                Cred::ConsoleCookie => None,
                Cred::ConsoleToken => Some(console_token.as_str()),
                Cred::ClientKey => Some(SHOP_CLIENT_KEY),
                Cred::OtherAppKey => Some(DESK_KEY),
                Cred::OtherAppOperator => Some(DESK_OPS_TOKEN),
                Cred::ReadOnlyOperator => Some(AUDITOR_TOKEN),
                Cred::Operator => Some(OPS_TOKEN),
                Cred::OwnAppKey => Some(SHOP_KEY),
                Cred::Admin => Some(ADMIN),
            };
            let mut req = srv.req(r.method.clone(), &path, secret);
            if let Some(body) = r.body {
                req = req.json(&body());
            }
            if matches!(cred, Cred::ConsoleCookie) {
                req = req.header(reqwest::header::COOKIE, &console_cookie);
            }
            // An event stream answers its status at once and then stays open: read the
            // status only.
            let status = req.send().await.expect("request").status().as_u16();
            if status != want {
                wrong.push(format!(
                    "{} {} with {cred:?}: {status}, expected {want}",
                    r.method, r.path
                ));
            }
            if !(200..300).contains(&status) {
                let (s, v) = srv
                    .call(
                        Method::GET,
                        &format!("/v1/sessions/{session}"),
                        Some(ADMIN),
                        None,
                    )
                    .await;
                assert_eq!(s, 200, "{v}");
                assert_eq!(
                    (v["status"].as_str(), &v["version"]),
                    (Some("open"), &opened["version"]),
                    "{} {} with {cred:?} was refused ({status}) but changed the session: {v}",
                    r.method,
                    r.path
                );
            }
        }
    }
    assert!(wrong.is_empty(), "cells that differ:\n{}", wrong.join("\n"));
    srv.stop().await;
}
