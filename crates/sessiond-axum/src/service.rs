//! [`SessionService`]: what the layer does around each request. Before: refuse a
//! state-changing request another site made the browser send (403
//! `cross_site_request`); answer the heartbeat routes itself; otherwise read the cookie
//! (none when two claim its name), the client address and whether the request came over
//! HTTPS (`request.rs`), and put a lazy [`Session`] in the request's extensions (or, in
//! eager mode, make sure a stored one exists). After: fail the whole response if a
//! session operation hit a store failure or a wrong address (fail closed), else write
//! the cookie the session asked for; a response of a signed-in session gets
//! `Cache-Control: no-store` and the security headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::BoxError;
use sessiond_core::Token;
use tower::Service;

use crate::config::Config;
use crate::cookie::{self, Found};
use crate::error::Failure;
use crate::heartbeat;
use crate::request::{self, CrossSite};
use crate::session::{CookieAction, Session};

/// The service [`crate::SessionLayer`] wraps around a router or handler.
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        SessionService { inner, config }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for SessionService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone is the one that was not polled ready; keep the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        Box::pin(async move {
            let secure = request::is_secure(&config, &req);
            if let Some(why) = request::cross_site(&config, &req, secure) {
                config.stats.count_cross_site();
                tracing::info!(method = %req.method(), path = %req.uri().path(), ?why, "cross-site request refused");
                return Ok(cross_site_refusal(why));
            }
            let token = match cookie::find(req.headers(), &config.cookie.wire_name(secure)) {
                Found::One(v) => Some(Token::from_client(v)),
                Found::None => None,
                Found::Many => {
                    config.stats.count_duplicate_cookies();
                    tracing::warn!(
                        path = %req.uri().path(),
                        "two or more session cookies in one request: none is believed"
                    );
                    None
                }
            };
            let ip = request::client_ip(&config, &req);
            if let Some(route) = heartbeat::route(&config, req.uri().path()) {
                let req = req.map(Body::new);
                return Ok(heartbeat::handle(&config, route, req, token, ip).await);
            }
            let user_agent = req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(Box::from);
            let session = Session::new(config.clone(), token, ip, user_agent);
            req.extensions_mut().insert(session.clone());
            if config.eager {
                if let Err(e) = session.ensure_stored().await {
                    return Ok(finish(&config, &session, e.into_response(), secure).await);
                }
            }
            let res = inner.call(req).await?.map(Body::new);
            Ok(finish(&config, &session, res, secure).await)
        })
    }
}

/// The answer to a cross-site state-changing request: nothing ran.
fn cross_site_refusal(why: CrossSite) -> Response<Body> {
    let message = match why {
        CrossSite::FetchSite => "this request was sent from another site's page (Sec-Fetch-Site)",
        CrossSite::Origin => "this request was sent from another origin's page (Origin)",
    };
    Failure {
        status: StatusCode::FORBIDDEN,
        code: "cross_site_request",
        message: message.into(),
    }
    .into_response()
}

/// Applies what the session decided to the handler's response.
async fn finish(
    config: &Config,
    session: &Session,
    mut res: Response<Body>,
    secure: bool,
) -> Response<Body> {
    let outcome = session.outcome().await;
    if let Some(f) = outcome.failure {
        // Fail closed, but a cookie change already committed (a rotation, a new
        // session, a logout) still reaches the browser: its old cookie may be dead.
        res = f.into_response();
    }
    let signed_in = outcome.signed_in || !matches!(outcome.cookie, CookieAction::Keep);
    if signed_in && config.security_headers {
        security_headers(res.headers_mut());
    }
    let line = match outcome.cookie {
        CookieAction::Keep => return res,
        CookieAction::Set(token) => config.cookie.set(token.expose(), secure),
        CookieAction::Remove => config.cookie.remove(secure),
    };
    match HeaderValue::from_str(&line) {
        Ok(v) => {
            let h = res.headers_mut();
            h.append(header::SET_COOKIE, v);
            // Whatever the handler said: a shared cache must never hand a cookie on.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        // Tokens and configured attributes are checked to be header-safe; this is a bug.
        Err(_) => tracing::error!("session cookie is not a valid header value"),
    }
    res
}

/// The headers of a signed-in page, each only where the handler set none of its own:
/// not stored by any cache, not sniffed as another type, not framed by another site
/// (clickjacking), no full URL sent to other sites.
fn security_headers(h: &mut axum::http::HeaderMap) {
    let defaults = [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in defaults {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    }
}
