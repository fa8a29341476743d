//! What every test area shares: a temporary FileStore, the instrumented test store, the
//! test app's routes, and request helpers that speak cookies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path as UrlPath};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use sessiond_axum::{require_privilege, Grant, Session, SessionError, SessionLayer};
use sessiond_core::admission::Admission;
use sessiond_core::store::{
    AppCounts, CloseOutcome, Expired, ListQuery, ModifyOutcome, OpenOutcome, Ordered, StoreResult,
};
use sessiond_core::{
    Actor, Change, CloseReason, Conditions, Lookup, Manager, MemoryStore, Policy,
    Session as Record, SessionId, Store, StoreError, Timestamp,
};
use sessiond_file::FileStore;
use tokio::sync::Notify;
use tower::ServiceExt;

/// The app every test uses.
pub const APP: &str = "web";

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "sessiond-axum-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Manager over a FileStore in a fresh temp dir, with `policy` for [`APP`].
pub fn file_manager(policy: Policy) -> (Arc<Manager>, TempDir) {
    let dir = TempDir::new();
    let store = FileStore::open(dir.path()).unwrap();
    let m = Manager::new(Arc::new(store));
    m.set_policy(APP, policy).unwrap();
    (Arc::new(m), dir)
}

/// A Manager over a MemoryStore.
pub fn memory_manager(policy: Policy) -> Arc<Manager> {
    let m = Manager::new(Arc::new(MemoryStore::new()));
    m.set_policy(APP, policy).unwrap();
    Arc::new(m)
}

/// A Manager over `store` (a [`TestStore`]), with the default policy for [`APP`].
pub fn test_manager(store: Arc<TestStore>) -> Arc<Manager> {
    let m = Manager::new(store);
    m.set_policy(APP, Policy::default()).unwrap();
    Arc::new(m)
}

/// A real MemoryStore instrumented for the tests. It can be switched to fail every call
/// with `StoreError::Unavailable`, as a store whose server went away does; it counts its
/// calls; and made with [`TestStore::hinting`] it keeps write hints the way the Redis
/// store does (the state it last answered for each token). Frozen, it keeps handing
/// out the hints it had: stale copies, as another node's writes would leave them.
#[derive(Default)]
pub struct TestStore {
    inner: MemoryStore,
    pub down: AtomicBool,
    pub calls: AtomicU64,
    /// Resolves and reads (gets, touches).
    pub reads: AtomicU64,
    /// Every other modification.
    pub writes: AtomicU64,
    hinting: bool,
    pub frozen: AtomicBool,
    /// The next storage write commits, then answers `OutcomeUnknown`, as a store whose
    /// reply was lost on the way back does.
    pub lose_next_reply: AtomicBool,
    hints: std::sync::Mutex<std::collections::HashMap<sessiond_core::TokenHash, Record>>,
    /// While set, a change that needs durability is made at once (visible to what
    /// follows, as the file store makes it) but acknowledged only when the semaphore
    /// gives it a permit, as a store whose sync is slow.
    durability: std::sync::Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// While set, a storage write waits for a permit before it is made, as a write
    /// waits out a round trip to a networked store.
    slow_writes: std::sync::Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

impl TestStore {
    /// A store that keeps write hints.
    pub fn hinting() -> TestStore {
        TestStore {
            hinting: true,
            ..Default::default()
        }
    }

    /// Holds back the acknowledgement of every durable change from now on: each waits
    /// for a permit of the semaphore answered.
    pub fn hold_durability(&self) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *self.durability.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// Holds back every storage write from now on: each waits for a permit of the
    /// semaphore answered before it is made.
    pub fn hold_writes(&self) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *self.slow_writes.lock().unwrap() = Some(gate.clone());
        gate
    }

    fn check(&self) -> StoreResult<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "injected: connection refused".into(),
            ));
        }
        Ok(())
    }

    fn keep(&self, s: &Record) {
        if self.hinting && !self.frozen.load(Ordering::SeqCst) {
            let mut hints = self.hints.lock().unwrap();
            hints.insert(s.token_hash, s.clone());
        }
    }
}

#[async_trait]
impl Store for TestStore {
    fn kind(&self) -> &'static str {
        "test-memory"
    }
    fn event_bus(&self) -> Option<std::sync::Arc<dyn sessiond_core::events::EventBus>> {
        self.inner.event_bus()
    }

    fn outbox(&self) -> Option<&dyn sessiond_core::hooks::Outbox> {
        self.inner.outbox()
    }
    fn write_hint(&self, lookup: Lookup) -> Option<Record> {
        match lookup {
            Lookup::Token(h) => self.hints.lock().unwrap().get(&h).cloned(),
            Lookup::Id(_) => None,
        }
    }
    async fn open(&self, s: Record, a: &Admission, now: Timestamp) -> StoreResult<OpenOutcome> {
        self.check()?;
        let out = self.inner.open(s, a, now).await?;
        if let OpenOutcome::Opened { session, .. } = &out {
            self.keep(session);
        }
        Ok(out)
    }
    async fn get(&self, lookup: Lookup) -> StoreResult<Option<Record>> {
        self.check()?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(lookup).await
    }
    async fn modify(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<ModifyOutcome> {
        self.check()?;
        let counter = match change {
            Change::Read | Change::Touch => &self.reads,
            _ => &self.writes,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let slow = self.slow_writes.lock().unwrap().clone();
        if let (Some(gate), Change::PatchData { .. }) = (slow, change) {
            gate.acquire().await.unwrap().forget();
        }
        let out = self.inner.modify(lookup, change, cond, now).await?;
        if let ModifyOutcome::Done { session, .. } = &out {
            self.keep(session);
            if matches!(change, Change::PatchData { .. })
                && self.lose_next_reply.swap(false, Ordering::SeqCst)
            {
                return Err(StoreError::OutcomeUnknown(
                    "injected: the reply was lost after the commit".into(),
                ));
            }
        }
        Ok(out)
    }
    async fn modify_ordered(
        &self,
        lookup: Lookup,
        change: &Change,
        cond: &Conditions,
        now: Timestamp,
    ) -> StoreResult<Ordered<ModifyOutcome>> {
        let out = self.modify(lookup, change, cond, now).await?;
        let gate = self.durability.lock().unwrap().clone();
        match gate {
            Some(gate) if change.needs_durability() => Ok(Ordered::pending(out, async move {
                gate.acquire()
                    .await
                    .map(|p| p.forget())
                    .map_err(|_| StoreError::Unavailable("the gate closed".into()))
            })),
            _ => Ok(Ordered::done(out)),
        }
    }
    async fn close(
        &self,
        id: SessionId,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<CloseOutcome> {
        self.check()?;
        self.inner.close(id, reason, by, now).await
    }
    async fn close_all(
        &self,
        app: &str,
        except: &[SessionId],
        user: Option<&str>,
        reason: CloseReason,
        by: Actor,
        now: Timestamp,
    ) -> StoreResult<Vec<Record>> {
        self.check()?;
        self.inner
            .close_all(app, except, user, reason, by, now)
            .await
    }
    async fn list(&self, q: &ListQuery) -> StoreResult<Vec<Record>> {
        self.check()?;
        self.inner.list(q).await
    }
    async fn counts(&self, app: &str) -> StoreResult<AppCounts> {
        self.check()?;
        self.inner.counts(app).await
    }
    async fn expire_due(&self, now: Timestamp, limit: usize) -> StoreResult<Expired> {
        self.check()?;
        self.inner.expire_due(now, limit).await
    }
}

/// Lets a test hold a request between loading its session and writing to it.
#[derive(Default)]
pub struct Gate {
    pub loaded: Notify,
    pub resume: Notify,
}

/// The test app: one route per session operation.
pub fn routes(layer: SessionLayer) -> Router {
    routes_with_gate(layer, Arc::new(Gate::default()))
}

pub fn routes_with_gate(layer: SessionLayer, gate: Arc<Gate>) -> Router {
    let admin = Router::new()
        .route("/admin", get(|| async { "admin page" }))
        .route_layer(require_privilege("WebAdmin"));
    let admin_login = Router::new()
        .route("/admin-login", get(|| async { "admin page" }))
        .route_layer(require_privilege("WebAdmin").with_login_redirect("/login"));
    let nested = Router::new()
        .route("/page", get(|| async { "area page" }))
        .route_layer(require_privilege("WebAdmin").with_login_redirect("/login"));
    Router::new()
        .nest("/area", nested)
        .route("/bare", get(|| async { "ok" }))
        .route("/unused", get(|_s: Session| async { "ok" }))
        .route("/get/{key}", get(get_key))
        .route("/set/{key}/{value}", post(set_key))
        .route("/json/{key}", post(set_json))
        .route("/remove/{key}", post(remove_key))
        .route("/keys", get(keys))
        .route("/incr", post(incr))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .route("/whoami", get(whoami))
        .route("/others", get(others))
        .route("/others/{id}/close", post(close_other))
        .route("/others/close-all", post(close_others))
        .route("/ignore-error", get(ignore_error))
        .route("/heartbeat/{on}", post(heartbeat))
        .route("/slow-write", post(slow_write))
        .merge(admin)
        .merge(admin_login)
        .layer(Extension(gate))
        .layer(layer)
}

async fn get_key(s: Session, UrlPath(key): UrlPath<String>) -> Result<Json<Value>, SessionError> {
    Ok(Json(s.get::<Value>(&key).await?.unwrap_or(Value::Null)))
}

async fn set_key(
    s: Session,
    UrlPath((key, value)): UrlPath<(String, String)>,
) -> Result<&'static str, SessionError> {
    s.insert(&key, value).await?;
    Ok("stored")
}

async fn set_json(
    s: Session,
    UrlPath(key): UrlPath<String>,
    Json(v): Json<Value>,
) -> Result<&'static str, SessionError> {
    s.insert(&key, v).await?;
    Ok("stored")
}

async fn remove_key(
    s: Session,
    UrlPath(key): UrlPath<String>,
) -> Result<Json<Value>, SessionError> {
    Ok(Json(s.remove::<Value>(&key).await?.unwrap_or(Value::Null)))
}

async fn keys(s: Session) -> Result<Json<Vec<String>>, SessionError> {
    Ok(Json(s.keys().await?))
}

async fn incr(s: Session) -> Result<String, SessionError> {
    Ok(s.update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?
        .to_string())
}

async fn login(s: Session, UrlPath(user): UrlPath<String>) -> Result<&'static str, SessionError> {
    let privileges = if user == "admin" {
        vec!["WebAdmin".to_string()]
    } else {
        vec![]
    };
    let info = json!({"userName": user.to_uppercase()})
        .as_object()
        .cloned();
    s.set_privileges(Grant {
        privileges,
        user: Some(user),
        info,
    })
    .await?;
    Ok("welcome")
}

async fn logout(s: Session) -> Result<&'static str, SessionError> {
    s.abandon().await?;
    Ok("bye")
}

async fn others(s: Session) -> Result<Json<Value>, SessionError> {
    let others = s.other_sessions().await?;
    Ok(Json(json!(others
        .iter()
        .map(|o| json!({"id": o.id.to_string(), "user": o.user.as_deref()}))
        .collect::<Vec<_>>())))
}

async fn close_other(
    s: Session,
    UrlPath(id): UrlPath<SessionId>,
) -> Result<Json<Value>, SessionError> {
    Ok(Json(json!({"closed": s.close_other_session(id).await?})))
}

async fn close_others(s: Session) -> Result<Json<Value>, SessionError> {
    Ok(Json(json!({"closed": s.close_other_sessions().await?})))
}

async fn whoami(s: Session) -> Result<Json<Value>, SessionError> {
    Ok(Json(json!({
        "id": s.id().await?.map(|i| i.to_string()),
        "user": s.user().await?,
        "guest": s.is_guest().await?,
        "admin": s.has_privilege("WebAdmin").await?,
    })))
}

/// A careless handler: it ignores the session error and answers 200.
async fn ignore_error(s: Session) -> &'static str {
    let _ = s.get::<Value>("a").await;
    "fine"
}

async fn heartbeat(s: Session, UrlPath(on): UrlPath<bool>) -> Result<String, SessionError> {
    Ok(s.set_heartbeat(on, None).await?.to_string())
}

async fn slow_write(
    s: Session,
    Extension(gate): Extension<Arc<Gate>>,
) -> Result<&'static str, SessionError> {
    s.get::<Value>("a").await?;
    gate.loaded.notify_one();
    gate.resume.notified().await;
    s.insert("late", 1).await?;
    Ok("written")
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The `Set-Cookie` lines.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The one `Set-Cookie` line (panics unless there is exactly one).
    pub fn set_cookie(&self) -> String {
        let c = self.set_cookies();
        assert_eq!(c.len(), 1, "expected one Set-Cookie, got {c:?}");
        c[0].clone()
    }

    /// `name=value` of the cookie set, ready for a `Cookie` header.
    pub fn cookie_pair(&self) -> String {
        self.set_cookie().split(';').next().unwrap().to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A request to send through the router.
pub struct Call {
    req: Request<Body>,
}

pub fn call(method: Method, uri: &str) -> Call {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    Call { req }
}

impl Call {
    pub fn cookie(mut self, pair: &str) -> Call {
        if !pair.is_empty() {
            self.req
                .headers_mut()
                .append(header::COOKIE, pair.parse().unwrap());
        }
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Call {
        self.req.headers_mut().insert(name, value.parse().unwrap());
        self
    }

    pub fn header_bytes(mut self, name: &'static str, value: &[u8]) -> Call {
        self.req
            .headers_mut()
            .insert(name, axum::http::HeaderValue::from_bytes(value).unwrap());
        self
    }

    pub fn peer(mut self, ip: [u8; 4]) -> Call {
        self.req
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        self
    }

    pub fn json(mut self, body: &str) -> Call {
        self.req
            .headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        *self.req.body_mut() = Body::from(body.to_string());
        self
    }

    pub async fn send(self, app: &Router) -> Reply {
        let res = app.clone().oneshot(self.req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// Stores something as a guest and answers the cookie pair that creates.
pub async fn new_session(app: &Router) -> String {
    let r = call(Method::POST, "/set/a/1").send(app).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.cookie_pair()
}

/// The session id `/whoami` reports for `cookie`.
pub async fn id_of(app: &Router, cookie: &str) -> Option<SessionId> {
    let r = call(Method::GET, "/whoami").cookie(cookie).send(app).await;
    r.json()["id"].as_str().map(|s| s.parse().unwrap())
}
