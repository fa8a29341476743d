//! Run with: `cargo run -p crm` (this module holds its request handlers).
//!
//! The CRM's handlers, following the 4D scalable-sessions example: `authenticate` checks
//! the password against the stored hash, gives the session the user's privileges (a new
//! token and cookie) and `{"userName"}` info, and loads the top 3 customers into session
//! storage once (4D's `Use (Session.storage) If (Session.storage.myTop3=Null)`); other
//! pages read them from the session.
//!
//! The sign-in follows docs/CONCEPTS.md "Safe sign-in" step by step: the layer refuses
//! cross-site posts (login CSRF, cross-site logout); the password check runs on
//! [`sessiond_axum::PasswordCheck`] (a fixed pool, per-address and per-user backoff); a
//! different user than the session's gets a new session; `next` goes through
//! [`sessiond_axum::LocalRedirect`].

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sessiond_axum::{Grant, LocalRedirect, PasswordCheck, Session, SessionError};
use sessiond_core::store::{ListQuery, StatusFilter};
use sessiond_core::{Manager, SessionId};

use crate::data::{Customer, Datastore, DEMO_LOGINS};
use crate::pages;
use crate::{APP, WEB_ADMIN};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The session engine (for the WebAdmin list and the debug endpoint).
    pub manager: Arc<Manager>,
    /// Sales people and customers.
    pub data: Arc<Datastore>,
    /// The idle timeout, shown on the payment page.
    pub idle_timeout_s: u32,
    /// The bounded, throttled password check of every sign-in.
    pub passwords: PasswordCheck,
}

/// The session storage key of the top 3 customers (as in the 4D example).
pub const TOP3_KEY: &str = "myTop3";

/// `?next=` of the login page.
#[derive(Debug, Deserialize)]
pub struct Next {
    #[serde(default)]
    next: String,
}

/// The login form (`userId`, `password`, as in `authenticate.shtml`).
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(rename = "userId", default)]
    user_id: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

/// Where to go after sign-in: `next` when it is a path on this site, else home.
fn safe_next(next: &str) -> LocalRedirect {
    LocalRedirect::or(next, "/home")
}

fn login_page(state: &AppState, error: Option<&str>, next: &str) -> Html<String> {
    let names: Vec<String> = DEMO_LOGINS
        .iter()
        .map(|d| {
            state
                .data
                .sales_person(d.user_id)
                .map(|p| {
                    let admin = if p.web_admin { ", WebAdmin" } else { "" };
                    format!("{}{admin}", p.display_name())
                })
                .unwrap_or_default()
        })
        .collect();
    Html(pages::login(error, next, &DEMO_LOGINS, &names))
}

/// `GET /`: home when signed in, else the login page.
pub async fn index(session: Session) -> Result<Redirect, SessionError> {
    Ok(if session.is_guest().await? {
        Redirect::to("/authenticate.shtml")
    } else {
        Redirect::to("/home")
    })
}

/// `GET /authenticate.shtml`: the login form.
pub async fn login_form(State(state): State<AppState>, Query(q): Query<Next>) -> Html<String> {
    login_page(&state, None, safe_next(&q.next).as_str())
}

/// `POST /authenticate`: checks the password, then privileges and the top 3.
pub async fn authenticate(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Result<Response, SessionError> {
    let user_id: Option<u32> = form.user_id.trim().parse().ok();
    let next = safe_next(&form.next);
    let data = state.data.clone();
    let password = form.password;
    // Argon2 is deliberately slow and big: it runs on the check's own threads, at most
    // one per core at once, and an address or a name that keeps failing waits first.
    // The throttle's key is the account, not the text typed ("1", "01" and "+1" are
    // one account); every id that names none shares one key.
    let account = user_id.map_or_else(|| "no such id".to_string(), |id| id.to_string());
    let checked = state
        .passwords
        .check(session.client_ip(), &account, move || {
            data.check_login(user_id, &password).map(|p| p.user_id)
        })
        .await;
    let person = match checked {
        Ok(id) => id.and_then(|id| state.data.sales_person(id)),
        Err(throttled) => {
            let wait = throttled.retry_after_secs();
            let message = format!("Too many sign-in attempts; try again in {wait} s.");
            let page = login_page(&state, Some(&message), next.as_str());
            let mut res = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return Ok(res);
        }
    };
    let Some(person) = person else {
        // One message for both cases, so the form does not reveal which ids exist.
        let page = login_page(
            &state,
            Some("Unknown user id or wrong password."),
            next.as_str(),
        );
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    let mut info = Map::new();
    info.insert("userName".into(), Value::from(person.display_name()));
    session
        .set_privileges(Grant {
            privileges: person.privileges(),
            user: Some(person.user_id.to_string()),
            info: Some(info),
        })
        .await?;
    let top3 = state.data.top3(person.user_id);
    session
        .update(TOP3_KEY, |current: Option<Vec<Customer>>| {
            current.unwrap_or_else(|| top3.clone())
        })
        .await?;
    tracing::info!(user = person.user_id, "signed in");
    Ok(next.into_response())
}

/// The signed-in user's display name, whether they are WebAdmin, and the session id.
async fn who(session: &Session) -> Result<(String, bool, String), SessionError> {
    let rec = session.record().await?;
    let name = rec
        .as_ref()
        .and_then(|r| r.info.get("userName"))
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let admin = rec
        .as_ref()
        .is_some_and(|r| r.privileges.contains(WEB_ADMIN));
    let id = rec.map(|r| r.id.to_string()).unwrap_or_default();
    Ok((name, admin, id))
}

/// `GET /home`: the top 3, from session storage.
pub async fn home(session: Session) -> Result<Html<String>, SessionError> {
    let (name, admin, id) = who(&session).await?;
    let top3: Vec<Customer> = session.get(TOP3_KEY).await?.unwrap_or_default();
    Ok(Html(pages::home(&name, &top3, admin, &id)))
}

/// `GET /payment`: the external payment step, heartbeat off.
pub async fn payment(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, SessionError> {
    let (_, admin, id) = who(&session).await?;
    Ok(Html(pages::payment(state.idle_timeout_s, admin, &id)))
}

/// `GET /admin`: the open sessions (WebAdmin only).
pub async fn admin(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, SessionError> {
    let (_, _, id) = who(&session).await?;
    let q = ListQuery {
        app: Some(APP.to_string()),
        status: StatusFilter::Open,
        newest_first: true,
        limit: 200,
        ..Default::default()
    };
    let sessions = state.manager.list(q).await.map_err(SessionError::from)?;
    Ok(Html(pages::admin(&sessions, &id)).into_response())
}

/// `?closed=` of the sessions page: how many sessions the last action signed out.
#[derive(Debug, Deserialize)]
pub struct Closed {
    #[serde(default)]
    closed: Option<usize>,
}

/// `GET /sessions`: "your sessions", this one and the user's others in the CRM.
pub async fn sessions(session: Session, Query(q): Query<Closed>) -> Result<Response, SessionError> {
    let Some(me) = session.record().await? else {
        return Ok(Redirect::to("/authenticate.shtml").into_response());
    };
    let others = session.other_sessions().await?;
    let admin = me.privileges.contains(WEB_ADMIN);
    let notice = q.closed.map(|n| match n {
        1 => "1 session signed out.".to_string(),
        n => format!("{n} sessions signed out."),
    });
    Ok(Html(pages::sessions(&me, &others, admin, notice.as_deref())).into_response())
}

/// `POST /sessions/{id}/close`: signs out one of the user's other sessions. An id that
/// is not one of them (another user's, this session's, unknown, not an id) answers
/// the same 404, so the form reveals nothing about sessions that are not the user's.
pub async fn close_session(
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, SessionError> {
    let closed = match id.parse::<SessionId>() {
        Ok(id) => session.close_other_session(id).await?,
        Err(_) => false,
    };
    if !closed {
        return Ok((StatusCode::NOT_FOUND, "no such session of yours").into_response());
    }
    Ok(Redirect::to("/sessions?closed=1").into_response())
}

/// `POST /sessions/close-others`: signs out every other session of the user; this
/// one stays.
pub async fn close_other_sessions(session: Session) -> Result<Redirect, SessionError> {
    let n = session.close_other_sessions().await?;
    Ok(Redirect::to(&format!("/sessions?closed={n}")))
}

/// `POST /logout`: closes the session (`logout`) and removes the cookie.
pub async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.abandon().await?;
    Ok(Redirect::to("/authenticate.shtml"))
}

/// `GET /debug/sessions/{id}` (with `--debug-endpoints` only): a session's status and
/// close reason by its public id, for tests that watch a session end. Reading it is not
/// activity.
pub async fn debug_session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<SessionId>() else {
        return (StatusCode::BAD_REQUEST, "not a session id").into_response();
    };
    match state.manager.get(id).await {
        Ok(s) => Json(json!({
            "id": s.id,
            "status": if s.is_open() { "open" } else { "closed" },
            "reason": s.closed.map(|c| c.reason),
            "user": s.user,
            "heartbeat": s.heartbeat,
            "last_activity_ms": s.last_activity_at.as_millis(),
            "last_heartbeat_ms": s.last_heartbeat_at.as_millis(),
        }))
        .into_response(),
        Err(sessiond_core::Error::NotFound(_)) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => SessionError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/admin?x=1").as_str(), "/admin?x=1");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil",
            "/\t/evil.example/",
            "/home\r\nSet-Cookie: a=1",
            "/\u{7f}",
            "",
        ] {
            assert_eq!(safe_next(bad).as_str(), "/home", "{bad:?}");
        }
    }
}
