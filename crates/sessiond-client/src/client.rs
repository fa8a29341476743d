//! [`Client`]: one async method per HTTP API v1 endpoint. It holds the server's base URL,
//! a `reqwest` connection pool and at most one credential (admin token, app key or
//! session token), sent as `Authorization: Bearer` and never printed.

use std::fmt;

use reqwest::header::IF_MATCH;
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::error::Error;
use crate::model::{App, HeartbeatAck, Killed, OpenedSession, Secret, Session, SessionPage};
use crate::request::{HeartbeatUpdate, ListQuery, OpenRequest, PrivilegesUpdate};
use crate::stream::{EventStream, Feed, Reconnect};

/// A client of one sessiond server, acting with one credential.
///
/// Cloning is cheap and shares the connection pool. Which methods succeed depends on the
/// credential: the admin token may do everything, an app key may open and manage its
/// app's sessions, a session token may act on its own session only (the `*_session`
/// methods without an id, [`Client::heartbeat`], [`Client::patch_data`]...).
///
/// ```no_run
/// use sessiond_client::{Client, HeartbeatRequest, OpenRequest, StreamItem};
///
/// # async fn demo() -> Result<(), sessiond_client::Error> {
/// // The app opens a session for Ann with a 30 s heartbeat...
/// let app = Client::new("http://127.0.0.1:7420", Some("app-key".to_string()))?;
/// let opened = app
///     .open_session(
///         "default",
///         &OpenRequest {
///             user: Some("ann".into()),
///             heartbeat: Some(HeartbeatRequest { interval_s: 30, grace_s: None }),
///             ..OpenRequest::default()
///         },
///     )
///     .await?;
///
/// // ...and the client program acts with the session's own token from then on.
/// let me = app.clone().with_credential(Some(opened.token.into_inner()));
/// let ack = me.heartbeat().await?;
/// println!("next beat in {:?} s", ack.next_heartbeat_s);
///
/// // It learns the moment an administrator disconnects it (the stream reconnects by
/// // itself if the connection drops, and ends after `closed`).
/// let mut events = me.session_events().await?;
/// while let Some(item) = events.next_item().await? {
///     if let StreamItem::Event(event) = item {
///         if event.is_closed() {
///             println!("disconnected: {:?}", event.close_reason());
///         }
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    credential: Option<Secret>,
    reconnect: Reconnect,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base.as_str())
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:7420`, or with a path
    /// prefix when behind a proxy) acting with `credential`.
    ///
    /// An address without a scheme (`127.0.0.1:7420`) is taken as `http://`.
    /// Fails with [`Error::InvalidUrl`] when the URL does not parse, is not `http` or
    /// `https`, or carries a user name or password (credentials go in `credential`, so
    /// that they never end up in an error message).
    pub fn new(base_url: impl AsRef<str>, credential: Option<String>) -> Result<Self, Error> {
        let text = base_url.as_ref().trim();
        // `127.0.0.1:7420` or `localhost:7420`: an address without a scheme is http.
        let with_scheme;
        let text = if text.contains("://") {
            text
        } else {
            with_scheme = format!("http://{text}");
            &with_scheme
        };
        let base = Url::parse(text).map_err(|e| Error::InvalidUrl(format!("{e}")))?;
        // First, so that the messages below, which quote the URL, never quote a password.
        if !base.username().is_empty() || base.password().is_some() {
            return Err(Error::InvalidUrl(
                "the URL must not carry a user name or password; pass the credential instead"
                    .to_string(),
            ));
        }
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::InvalidUrl(format!(
                "{text}: the scheme must be http or https"
            )));
        }
        if base.cannot_be_a_base() || base.query().is_some() || base.fragment().is_some() {
            return Err(Error::InvalidUrl(format!(
                "{text}: give the server's address without query or fragment"
            )));
        }
        Ok(Client {
            http: reqwest::Client::new(),
            base,
            credential: credential.map(Secret::new),
            reconnect: Reconnect::default(),
        })
    }

    /// The same client acting with another credential (or none), sharing the connection
    /// pool; e.g. the session token of a session just opened.
    ///
    /// ```
    /// let app = sessiond_client::Client::new("http://127.0.0.1:7420", Some("app-key".into()))?;
    /// let anonymous = app.clone().with_credential(None);
    /// assert!(!format!("{app:?}").contains("app-key"));
    /// # let _ = anonymous;
    /// # Ok::<(), sessiond_client::Error>(())
    /// ```
    pub fn with_credential(mut self, credential: Option<String>) -> Self {
        self.credential = credential.map(Secret::new);
        self
    }

    /// The same client using a preconfigured `reqwest` client (timeouts, proxy, TLS).
    /// Do not give it a total request timeout if you read event streams: they stay open.
    ///
    /// ```
    /// use std::time::Duration;
    /// let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
    /// let client = sessiond_client::Client::new("http://127.0.0.1:7420", None)?.with_http_client(http);
    /// # let _ = client;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The same client trusting, besides the system's roots, the CA certificates of
    /// `pem` (one or more PEM certificates): for a server whose certificate a private CA
    /// signed. It gets a connection pool of its own with default settings, so call it
    /// before anything that should share that pool; for more settings, build a
    /// `reqwest` client yourself and use [`Client::with_http_client`].
    ///
    /// Fails with [`Error::CaCert`] when `pem` holds no usable certificate.
    ///
    /// ```no_run
    /// let pem = std::fs::read("/etc/sessiond/ca.pem")?;
    /// let client = sessiond_client::Client::new("https://sessions.example.com", None)?
    ///     .with_ca_cert(&pem)?;
    /// # let _ = client;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_ca_cert(mut self, pem: &[u8]) -> Result<Self, Error> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::CaCert(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(Error::CaCert("no PEM certificate found".into()));
        }
        let mut builder = reqwest::Client::builder();
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        self.http = builder.build().map_err(|e| Error::CaCert(e.to_string()))?;
        Ok(self)
    }

    /// The same client with another reconnection policy for the event streams it
    /// opens from now on ([`Reconnect::default`] unless set).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessiond_client::{Client, Reconnect};
    ///
    /// let client = Client::new("http://127.0.0.1:7420", None)?.with_reconnect(Reconnect {
    ///     max_delay: Duration::from_secs(5),
    ///     max_attempts: Some(20),
    ///     ..Reconnect::default()
    /// });
    /// # let _ = client;
    /// # Ok::<(), sessiond_client::Error>(())
    /// ```
    pub fn with_reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// How event streams opened by this client reconnect.
    pub fn reconnect(&self) -> Reconnect {
        self.reconnect
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    // --- a session acting on itself (session token) ---

    /// `GET /v1/session`: the caller's own session, counted as activity (resets the idle
    /// timeout). A closed session fails with 410 `session_closed`, see
    /// [`Error::close_reason`].
    pub async fn resolve_session(&self) -> Result<Session, Error> {
        self.call(Method::GET, &["v1", "session"], &[], None::<&()>)
            .await
    }

    /// `GET /v1/session?touch=false`: the caller's own session, read only (not counted as
    /// activity).
    pub async fn read_session(&self) -> Result<Session, Error> {
        let query = [("touch", "false".to_string())];
        self.call(Method::GET, &["v1", "session"], &query, None::<&()>)
            .await
    }

    /// `POST /v1/session/heartbeat`: the caller's session is still alive. A heartbeat does
    /// not count as activity.
    pub async fn heartbeat(&self) -> Result<HeartbeatAck, Error> {
        self.call(
            Method::POST,
            &["v1", "session", "heartbeat"],
            &[],
            None::<&()>,
        )
        .await
    }

    /// `PUT /v1/session/heartbeat`: suspend, resume or retune the caller's heartbeat.
    pub async fn set_heartbeat(&self, update: &HeartbeatUpdate) -> Result<Session, Error> {
        self.call(
            Method::PUT,
            &["v1", "session", "heartbeat"],
            &[],
            Some(update),
        )
        .await
    }

    /// `PATCH /v1/session/data`: applies a JSON merge patch (RFC 7396) to the caller's
    /// session storage (`null` removes a key). With `if_match`, the patch applies only if
    /// the session is still at that version, else 412 `version_mismatch` (see
    /// [`Error::current_version`]). The answer's `version` is the new one.
    pub async fn patch_data<P: Serialize + ?Sized>(
        &self,
        patch: &P,
        if_match: Option<u64>,
    ) -> Result<Session, Error> {
        let mut request = self.request(Method::PATCH, &["v1", "session", "data"], &[]);
        if let Some(version) = if_match {
            request = request.header(IF_MATCH, format!("\"{version}\""));
        }
        self.send(request.json(patch)).await
    }

    /// `DELETE /v1/session`: logs out (closes the caller's session as `logout`).
    pub async fn logout(&self) -> Result<Session, Error> {
        self.call(Method::DELETE, &["v1", "session"], &[], None::<&()>)
            .await
    }

    /// `GET /v1/session/events`: the caller's session events; `closed` arrives the moment
    /// the session closes, whoever closed it, and ends the stream (as does
    /// `privileges_changed`: the token was rotated). A dropped connection is made again
    /// (with backoff); if the session closed meanwhile, `closed` comes at once.
    pub async fn session_events(&self) -> Result<EventStream, Error> {
        EventStream::connect(
            self.clone(),
            &["v1", "session", "events"],
            Feed::Session,
            None,
        )
        .await
    }

    // --- an app or admin acting on sessions (app key or admin token) ---

    /// `POST /v1/apps/{app}/sessions`: opens a session. A full house fails with 409
    /// `seats_exhausted` ([`Error::seats_exhausted`] lists the holders; retry with
    /// [`OpenRequest::take_over`] set to one of them), too many sessions of the user with
    /// 409 `user_limit`.
    pub async fn open_session(
        &self,
        app: &str,
        request: &OpenRequest,
    ) -> Result<OpenedSession, Error> {
        self.call(
            Method::POST,
            &["v1", "apps", app, "sessions"],
            &[],
            Some(request),
        )
        .await
    }

    /// `GET /v1/apps/{app}/sessions`: one page of the app's sessions (never their
    /// tokens). Pass the page's `next` as [`ListQuery::after`] for the following one.
    pub async fn list_sessions(&self, app: &str, query: &ListQuery) -> Result<SessionPage, Error> {
        self.call(
            Method::GET,
            &["v1", "apps", app, "sessions"],
            &query.pairs(),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/sessions/{id}`: a session by id, open or closed (closed sessions stay
    /// readable until their retention ends).
    pub async fn get_session(&self, id: &str) -> Result<Session, Error> {
        self.call(Method::GET, &["v1", "sessions", id], &[], None::<&()>)
            .await
    }

    /// `DELETE /v1/sessions/{id}`: closes a session as `killed`; its holder is told.
    /// The removal of a record that cannot be read has no session to answer with:
    /// this fails with [`Error::Decode`] then, where [`Client::kill`] says what happened.
    pub async fn kill_session(&self, id: &str) -> Result<Session, Error> {
        self.call(Method::DELETE, &["v1", "sessions", id], &[], None::<&()>)
            .await
    }

    /// `DELETE /v1/sessions/{id}`: closes a session as `killed` (its holder is told), or,
    /// with the admin token, removes a session record the server cannot read
    /// ([`Killed::Discarded`]).
    pub async fn kill(&self, id: &str) -> Result<Killed, Error> {
        self.call(Method::DELETE, &["v1", "sessions", id], &[], None::<&()>)
            .await
    }

    /// `PUT /v1/sessions/{id}/privileges`: replaces a session's privileges (and optionally
    /// its info and user). The token changes (no session fixation): the answer carries the
    /// new one, the old one stops working.
    pub async fn set_privileges(
        &self,
        id: &str,
        update: &PrivilegesUpdate,
    ) -> Result<OpenedSession, Error> {
        self.call(
            Method::PUT,
            &["v1", "sessions", id, "privileges"],
            &[],
            Some(update),
        )
        .await
    }

    /// `POST /v1/apps/{app}/sessions/close-all`: closes every open session of the app
    /// except those listed ("disconnect everyone except me"); answers how many closed.
    pub async fn close_all(&self, app: &str, except: &[String]) -> Result<u64, Error> {
        self.close_many(app, None, except).await
    }

    /// `POST /v1/apps/{app}/sessions/close-all` with `user`: "logout everywhere" for one
    /// person, every open session of `user` in the app but those listed, in one call;
    /// answers how many closed.
    pub async fn close_user(&self, app: &str, user: &str, except: &[String]) -> Result<u64, Error> {
        self.close_many(app, Some(user), except).await
    }

    async fn close_many(
        &self,
        app: &str,
        user: Option<&str>,
        except: &[String],
    ) -> Result<u64, Error> {
        #[derive(serde::Deserialize)]
        struct Closed {
            closed: u64,
        }
        let mut body = json!({ "except": except });
        if let Some(u) = user {
            body["user"] = json!(u);
        }
        let answer: Closed = self
            .call(
                Method::POST,
                &["v1", "apps", app, "sessions", "close-all"],
                &[],
                Some(&body),
            )
            .await?;
        Ok(answer.closed)
    }

    /// `GET /v1/apps/{app}`: the app's policy, seats and license.
    pub async fn get_app(&self, app: &str) -> Result<App, Error> {
        self.call(Method::GET, &["v1", "apps", app], &[], None::<&()>)
            .await
    }

    /// `GET /v1/apps`: every configured app (admin token).
    pub async fn list_apps(&self) -> Result<Vec<App>, Error> {
        #[derive(serde::Deserialize)]
        struct Apps {
            apps: Vec<App>,
        }
        let answer: Apps = self
            .call(Method::GET, &["v1", "apps"], &[], None::<&()>)
            .await?;
        Ok(answer.apps)
    }

    /// `POST /v1/backups`: has the server write a consistent copy of its embedded store
    /// into `<data_dir>/backups/<name>` (a name from the time when none is given) while
    /// it keeps serving. Needs the admin token (or an operator of every app that may
    /// write); a server on Redis or PostgreSQL answers 409 `backup_unsupported`.
    pub async fn backup(&self, name: Option<&str>) -> Result<crate::model::Backup, Error> {
        let body = serde_json::json!({ "name": name });
        self.call(Method::POST, &["v1", "backups"], &[], Some(&body))
            .await
    }

    /// `POST /v1/reload`: has the server read its configuration file again and apply
    /// what can change live (apps, policies, credentials); the answer names what
    /// changed and what takes a restart. Needs the admin token.
    pub async fn reload(&self) -> Result<serde_json::Value, Error> {
        self.call(Method::POST, &["v1", "reload"], &[], None::<&()>)
            .await
    }

    /// `GET /v1/apps/{app}/hooks`: the app's webhooks (names, origins, events; never
    /// their secrets).
    pub async fn hooks(&self, app: &str) -> Result<serde_json::Value, Error> {
        self.call(Method::GET, &["v1", "apps", app, "hooks"], &[], None::<&()>)
            .await
    }

    /// `GET /v1/apps/{app}/hooks/deliveries`: the webhook deliveries the store holds for
    /// the app, oldest first; `state` is `pending`, `dead` or `any`.
    pub async fn hook_deliveries(
        &self,
        app: &str,
        state: &str,
        limit: u32,
    ) -> Result<serde_json::Value, Error> {
        self.call(
            Method::GET,
            &["v1", "apps", app, "hooks", "deliveries"],
            &[("state", state.to_string()), ("limit", limit.to_string())],
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/apps/{app}/hooks/deliveries/{id}/resend`: makes a delivery (a dead
    /// letter, say) due now, its tries counted from zero.
    pub async fn resend_delivery(&self, app: &str, id: &str) -> Result<serde_json::Value, Error> {
        self.call(
            Method::POST,
            &["v1", "apps", app, "hooks", "deliveries", id, "resend"],
            &[],
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/apps/{app}/events`: the app's event feed (`opened`, `closed`,
    /// `privileges_changed`...) from now on. A dropped connection is made again (with
    /// backoff) and resumed with `Last-Event-ID`: the events missed meanwhile come in
    /// order, or, when the server cannot replay them (another node, a restart),
    /// [`StreamItem::Resync`](crate::StreamItem::Resync) comes first.
    pub async fn app_events(&self, app: &str) -> Result<EventStream, Error> {
        self.app_events_after(app, None).await
    }

    /// `GET /v1/apps/{app}/events` resumed after `last_event_id` (an
    /// [`EventStream::last_event_id`] kept from an earlier stream, e.g. across a restart
    /// of your program): the events that followed it, or `resync` first.
    pub async fn app_events_after(
        &self,
        app: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, Error> {
        let segments = ["v1", "apps", app, "events"];
        EventStream::connect(self.clone(), &segments, Feed::App, last_event_id).await
    }

    // --- plumbing ---

    /// The URL of `segments` under the base URL, each segment percent-encoded (an app
    /// name or id can never escape its place in the path).
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        // `new` refused URLs that cannot be a base, so this cannot fail.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    pub(crate) fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> RequestBuilder {
        let request = self.http.request(method, self.url(segments, query));
        match &self.credential {
            // `bearer_auth` marks the header sensitive, so it is not shown in debug output.
            Some(secret) => request.bearer_auth(secret.expose()),
            None => request,
        }
    }

    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, Error> {
        let mut request = self.request(method, segments, query);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, Error> {
        let response = request.send().await.map_err(Error::Transport)?;
        let status = response.status().as_u16();
        let ok = response.status().is_success();
        let body = response.bytes().await.map_err(Error::Transport)?;
        if !ok {
            return Err(Error::from_response(status, &body));
        }
        serde_json::from_slice(&body).map_err(|error| Error::Decode { status, error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_segments_and_keep_a_prefix() {
        let c = Client::new("http://127.0.0.1:7420", None).unwrap();
        assert_eq!(
            c.url(
                &["v1", "apps", "a/b c", "sessions"],
                &[("user", "ann&x".into())]
            )
            .as_str(),
            "http://127.0.0.1:7420/v1/apps/a%2Fb%20c/sessions?user=ann%26x"
        );
        let c = Client::new("http://example.test/sessiond/", None).unwrap();
        assert_eq!(
            c.url(&["v1", "session"], &[]).as_str(),
            "http://example.test/sessiond/v1/session"
        );
        let c = Client::new("http://example.test/sessiond", None).unwrap();
        assert_eq!(
            c.url(&["v1", "apps"], &[]).as_str(),
            "http://example.test/sessiond/v1/apps"
        );
    }

    #[test]
    fn an_address_without_a_scheme_is_http() {
        for (given, base) in [
            ("127.0.0.1:7420", "http://127.0.0.1:7420/"),
            ("localhost:7420", "http://localhost:7420/"),
            (" https://h.example/ ", "https://h.example/"),
        ] {
            let c = Client::new(given, None).unwrap();
            assert_eq!(c.url(&[], &[]).as_str(), base, "{given}");
        }
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in [
            "not a url",
            "ftp://x",
            "http://admin:pw@host/",
            "ftp://u:pw@host/",
            "http://host/?q=1",
            "mailto:a@b",
        ] {
            let err = Client::new(bad, None).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl(_)), "{bad}: {err:?}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn debug_never_shows_the_credential() {
        let c = Client::new("http://127.0.0.1:7420", Some("top-secret-token".into())).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("top-secret-token"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
