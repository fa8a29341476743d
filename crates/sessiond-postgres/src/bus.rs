//! [`PostgresEventBus`]: the [`EventBus`] of nodes sharing one PostgreSQL store, over
//! `LISTEN`/`NOTIFY` on a channel named after the schema (`<schema>_events`).
//!
//! Publishing is one `pg_notify` on a pooled connection. Receiving needs a connection
//! of its own, outside the pool, that stays in `LISTEN`: one per store, opened by the
//! first subscriber and shared by all of them. A background task reads its
//! notifications and hands each to every subscriber's channel; it pings the server
//! every few seconds, reconnects with backoff when the connection is lost (messages
//! sent meanwhile are lost, as the trait allows) and closes the connection once the
//! last subscriber is gone.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use sessiond_core::events::EventBus;
use sessiond_core::StoreError;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use crate::db::Db;
use crate::error::{PgResult, PostgresError};
use crate::rows;
use crate::schema::quoted;

/// Longest payload NOTIFY carries (it must be shorter than 8000 bytes).
pub const MAX_PAYLOAD: usize = 7999;
/// Messages a subscriber may fall behind by before it loses some.
const SUBSCRIBER_BUFFER: usize = 1024;
/// How often the listener checks for subscribers.
const TICK: Duration = Duration::from_secs(1);
/// Ticks between two pings of the listening connection.
const PING_TICKS: u32 = 10;
/// First and longest pause between two reconnection attempts.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// Events between the nodes sharing a PostgreSQL store (see the module docs).
/// Obtained from [`sessiond_core::Store::event_bus`] of a [`crate::PostgresStore`].
#[derive(Clone)]
pub struct PostgresEventBus {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Db>,
    config: tokio_postgres::Config,
    channel: String,
    subscribers: Mutex<Subscribers>,
    /// Whether the listening connection is up and in `LISTEN`.
    ready: watch::Sender<bool>,
}

#[derive(Default)]
struct Subscribers {
    list: Vec<mpsc::Sender<String>>,
    listening: bool,
}

impl std::fmt::Debug for PostgresEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEventBus")
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}

impl PostgresEventBus {
    pub(crate) fn new(db: Arc<Db>, config: tokio_postgres::Config, channel: String) -> Self {
        PostgresEventBus {
            inner: Arc::new(Inner {
                db,
                config,
                channel,
                subscribers: Mutex::default(),
                ready: watch::channel(false).0,
            }),
        }
    }

    /// The NOTIFY channel (`<schema>_events`).
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }
}

impl Inner {
    fn subscribers(&self) -> MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `payload` to every live subscriber; a full one loses it (delivery is best
    /// effort), a dropped one is forgotten.
    fn fan_out(&self, payload: &str) {
        self.subscribers()
            .list
            .retain(|tx| match tx.try_send(payload.to_owned()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("an event subscriber is too slow; it lost an event");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }

    /// Forgets dropped subscribers; when none is left, marks the listener stopped (under
    /// the same lock a new subscriber takes, so it either sees a running listener or
    /// starts one) and returns true.
    fn stop_if_unsubscribed(&self) -> bool {
        let mut subs = self.subscribers();
        subs.list.retain(|tx| !tx.is_closed());
        if subs.list.is_empty() {
            self.ready.send_replace(false);
            subs.listening = false;
            return true;
        }
        false
    }
}

#[async_trait]
impl EventBus for PostgresEventBus {
    async fn publish(&self, payload: String) -> Result<(), StoreError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(PostgresError::PayloadTooLarge(payload.len()).into());
        }
        let db = &*self.inner.db;
        let channel = &self.inner.channel;
        db.bounded("NOTIFY", async {
            let conn = db.conn().await?;
            let out = rows::execute(&*conn, "SELECT pg_notify($1, $2)", &[channel, &payload]).await;
            conn.release();
            out
        })
        .await?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<String>, StoreError> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut ready = self.inner.ready.subscribe();
        {
            let mut subs = self.inner.subscribers();
            subs.list.push(tx);
            if !subs.listening {
                subs.listening = true;
                let inner = &self.inner;
                tokio::spawn(listen(
                    inner.clone(),
                    inner.db.clone(),
                    inner.config.clone(),
                ));
            }
        }
        let timeout = self.inner.db.op_timeout;
        let up = tokio::time::timeout(timeout, ready.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok());
        if up {
            Ok(rx)
        } else {
            Err(PostgresError::Timeout {
                what: "LISTEN",
                timeout,
            }
            .into())
        }
    }
}

/// What a connection in `LISTEN` serves: the event bus's subscribers, or the read
/// cache's invalidations ([`crate::cache`]).
pub(crate) trait Listens: Send + Sync + 'static {
    /// The channel to listen on.
    fn channel(&self) -> &str;
    /// A notification's payload.
    fn message(&self, payload: &str);
    /// The connection is now listening (`true`), or was lost (`false`: notifications
    /// sent meanwhile are lost).
    fn ready(&self, up: bool);
    /// Whether to go on listening (checked every second).
    fn wanted(&self) -> bool;
}

impl Listens for Inner {
    fn channel(&self) -> &str {
        &self.channel
    }

    fn message(&self, payload: &str) {
        self.fan_out(payload);
    }

    fn ready(&self, up: bool) {
        self.ready.send_replace(up);
    }

    fn wanted(&self) -> bool {
        !self.stop_if_unsubscribed()
    }
}

/// The listener task: listens while `to` wants it, reconnecting on loss.
pub(crate) async fn listen(to: Arc<dyn Listens>, db: Arc<Db>, config: tokio_postgres::Config) {
    let mut pause = FIRST_PAUSE;
    loop {
        match listen_once(&to, &db, &config, &mut pause).await {
            Ok(()) => return,
            Err(e) => {
                to.ready(false);
                tracing::warn!(error = %e, channel = %to.channel(),
                    "listener connection lost; reconnecting");
            }
        }
        if !to.wanted() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Aborts the notification reader when the listening session ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One listening connection, from connect to loss (an error) or to `to` no longer
/// wanting it (`Ok`).
async fn listen_once(
    to: &Arc<dyn Listens>,
    db: &Db,
    config: &tokio_postgres::Config,
    pause: &mut Duration,
) -> PgResult<()> {
    let timeout = db.op_timeout;
    let bounded = |what| move |_| PostgresError::Timeout { what, timeout };
    let (client, mut connection) = tokio::time::timeout(timeout, config.connect(db.tls.clone()))
        .await
        .map_err(bounded("connect"))??;
    let fan = to.clone();
    let mut reader = AbortOnDrop(tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => fan.message(n.payload()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "listener connection failed");
                    return;
                }
            }
        }
    }));
    let listen = format!("LISTEN {}", quoted(to.channel()));
    tokio::time::timeout(timeout, client.batch_execute(&listen))
        .await
        .map_err(bounded("LISTEN"))??;
    to.ready(true);
    *pause = FIRST_PAUSE;

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = &mut reader.0 => {
                return Err(PostgresError::ConnectionLost);
            }
            _ = tick.tick() => {
                if !to.wanted() {
                    return Ok(());
                }
                ticks += 1;
                if ticks == PING_TICKS {
                    ticks = 0;
                    // A half-open connection shows up here rather than never.
                    tokio::time::timeout(timeout, client.simple_query("SELECT 1"))
                        .await
                        .map_err(bounded("a ping"))??;
                }
            }
        }
    }
}
