//! [`require_privilege`]: a guard layer that lets a request through only when its
//! session holds a privilege (4D: `If (Session.hasPrivilege("WebAdmin"))`). Refused
//! requests get 403, or, when a login page is configured, guests are sent there (303,
//! with the page they wanted as `next`) while signed-in users without the privilege still
//! get 403: sending them to log in again would not help.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, Request, Response, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::BoxError;
use serde_json::json;
use tower::{Layer, Service};

use crate::error::SessionError;
use crate::session::Session;

/// A guard requiring `privilege`; put it on routes inside a [`crate::SessionLayer`]
/// (for example with `Router::route_layer`).
///
/// ```
/// use axum::{routing::get, Router};
/// use sessiond_axum::require_privilege;
///
/// # let manager = sessiond_axum::doc_manager("crm");
/// let admin: Router = Router::new()
///     .route("/admin", get(|| async { "admin" }))
///     .route_layer(require_privilege("WebAdmin").with_login_redirect("/authenticate"))
///     .layer(sessiond_axum::SessionLayer::new(manager, "crm")?);
/// # Ok::<_, sessiond_core::Error>(())
/// ```
pub fn require_privilege(privilege: impl Into<String>) -> RequirePrivilegeLayer {
    RequirePrivilegeLayer {
        privilege: Arc::from(privilege.into()),
        login: None,
    }
}

/// The layer built by [`require_privilege`].
#[derive(Debug, Clone)]
pub struct RequirePrivilegeLayer {
    privilege: Arc<str>,
    login: Option<Arc<str>>,
}

impl RequirePrivilegeLayer {
    /// Sends guests to `login_url` (303, with `next=<the path they asked for>`) instead
    /// of answering 403.
    ///
    /// ```
    /// let guard = sessiond_axum::require_privilege("WebAdmin").with_login_redirect("/login");
    /// assert_eq!(guard.login_redirect(), Some("/login"));
    /// ```
    pub fn with_login_redirect(mut self, login_url: impl Into<String>) -> Self {
        self.login = Some(Arc::from(login_url.into()));
        self
    }

    /// The privilege required.
    pub fn privilege(&self) -> &str {
        &self.privilege
    }

    /// Where guests are sent, if anywhere.
    pub fn login_redirect(&self) -> Option<&str> {
        self.login.as_deref()
    }
}

impl<S> Layer<S> for RequirePrivilegeLayer {
    type Service = RequirePrivilege<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePrivilege {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service of [`RequirePrivilegeLayer`].
#[derive(Debug, Clone)]
pub struct RequirePrivilege<S> {
    inner: S,
    guard: RequirePrivilegeLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for RequirePrivilege<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let Some(session) = req.extensions().get::<Session>().cloned() else {
                return Ok(SessionError::MissingLayer.into_response());
            };
            let allowed = match session.has_privilege(&guard.privilege).await {
                Ok(a) => a,
                Err(e) => return Ok(e.into_response()),
            };
            if allowed {
                return Ok(inner.call(req).await?.map(Body::new));
            }
            if let Some(login) = &guard.login {
                match session.is_guest().await {
                    Ok(true) => return Ok(redirect(login, &req)),
                    Ok(false) => {}
                    Err(e) => return Ok(e.into_response()),
                }
            }
            Ok(forbidden(&guard.privilege, &req))
        })
    }
}

fn redirect<B>(login: &str, req: &Request<B>) -> Response<Body> {
    // Inside `Router::nest` the URI has lost the nest's prefix; the original one has it.
    let uri = req
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or(req.uri(), |o| &o.0);
    let next = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = sign_in_location(login, next);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
    )
        .into_response()
}

fn forbidden<B>(privilege: &str, req: &Request<B>) -> Response<Body> {
    let message = format!("this page needs the {privilege} privilege");
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        let page = format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Forbidden</title></head>\
             <body><h1>403 Forbidden</h1><p>{}</p></body></html>",
            escape_html(&message)
        );
        return (StatusCode::FORBIDDEN, Html(page)).into_response();
    }
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": "forbidden", "message": message})),
    )
        .into_response()
}

/// The sign-in page `login` with `next=` the page asked for (percent-encoded), as the
/// guard sends a guest there; the sessiond server's forward-auth sends a browser the
/// same way for apps behind a proxy.
///
/// ```
/// assert_eq!(
///     sessiond_axum::sign_in_location("/login", "/orders?page=2"),
///     "/login?next=/orders%3Fpage%3D2"
/// );
/// assert_eq!(sessiond_axum::sign_in_location("/signin?app=crm", "/"), "/signin?app=crm&next=/");
/// ```
pub fn sign_in_location(login: &str, next: &str) -> String {
    let sep = if login.contains('?') { '&' } else { '?' };
    format!("{login}{sep}next={}", encode_component(next))
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_encoded() {
        assert_eq!(
            encode_component("/admin?x=1&y=é"),
            "/admin%3Fx%3D1%26y%3D%C3%A9"
        );
    }
}
