//! [`SessionService`]: what the layer does around each request. Before: answer the
//! heartbeat routes itself; otherwise read the cookie, the client address and whether
//! the request came over TLS, and put a lazy [`Session`] in the request's extensions (or,
//! in eager mode, make sure a stored one exists). After: fail the whole response if a
//! session operation hit a store failure or a wrong address (fail closed), else write the
//! cookie the session asked for, with `Cache-Control: no-store`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response};
use axum::response::IntoResponse;
use axum::BoxError;
use sessiond_core::Token;
use tower::Service;

use crate::config::Config;
use crate::cookie;
use crate::heartbeat;
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
            let token =
                cookie::find(req.headers(), &config.cookie.wire_name()).map(Token::from_client);
            let ip = client_ip(&config, &req);
            if let Some(route) = heartbeat::route(&config, req.uri().path()) {
                let req = req.map(Body::new);
                return Ok(heartbeat::handle(&config, route, req, token, ip).await);
            }
            let secure = is_secure(&config, &req);
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

/// Applies what the session decided to the handler's response.
async fn finish(
    config: &Config,
    session: &Session,
    mut res: Response<Body>,
    secure: bool,
) -> Response<Body> {
    let (failure, cookie) = session.outcome().await;
    if let Some(f) = failure {
        // Fail closed, but a cookie change already committed (a rotation, a new
        // session, a logout) still reaches the browser: its old cookie may be dead.
        res = f.into_response();
    }
    let line = match cookie {
        CookieAction::Keep => return res,
        CookieAction::Set(token) => config.cookie.set(token.expose(), secure),
        CookieAction::Remove => config.cookie.remove(secure),
    };
    match HeaderValue::from_str(&line) {
        Ok(v) => {
            let h = res.headers_mut();
            h.append(header::SET_COOKIE, v);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        // Tokens and configured attributes are checked to be header-safe; this is a bug.
        Err(_) => tracing::error!("session cookie is not a valid header value"),
    }
    res
}

/// The client's address: the TCP peer, or when the peer is a trusted proxy the nearest
/// untrusted `X-Forwarded-For` hop from the right ([`sessiond_core::client_address`]).
fn client_ip<B>(config: &Config, req: &Request<B>) -> Option<IpAddr> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    Some(sessiond_core::client_address(peer, forwarded, |ip| {
        config.trusted_proxies.contains(&ip)
    }))
}

/// Whether the browser reached the app over TLS, as far as the app may believe.
fn is_secure<B>(config: &Config, req: &Request<B>) -> bool {
    if config.cookie.secure || config.cookie.host_prefix {
        return true;
    }
    if req.uri().scheme_str() == Some("https") {
        return true;
    }
    config.trust_forwarded_proto
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}
