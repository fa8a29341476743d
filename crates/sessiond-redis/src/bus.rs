//! [`RedisBus`]: the [`EventBus`] between the nodes sharing a store, over Redis pub/sub
//! on the channel `<prefix>:events`.
//!
//! Publishing uses the store's command connection. Each subscription gets a dedicated
//! pub/sub connection (Redis gives a subscribed connection to nothing else) and a task
//! that forwards messages into the subscriber's channel, reconnects when the connection
//! drops, and ends when the subscriber drops its receiver. Messages sent while it is
//! reconnecting are lost (at most once, as the trait allows).

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubStream;
use sessiond_core::events::EventBus;
use sessiond_core::StoreError;
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::error::Error;

/// Messages a subscriber may fall behind by before newer ones are dropped for it.
const SUBSCRIBER_BUFFER: usize = 1024;

/// Pause between reconnection attempts of a lost subscription.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Publish/subscribe over one Redis channel.
pub struct RedisBus {
    client: redis::Client,
    conn: Conn,
    channel: String,
    op_timeout: Duration,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// A bus on `channel`, publishing through `conn` and subscribing through new
    /// connections of `client`, each step bounded by `op_timeout`.
    pub(crate) fn new(
        client: redis::Client,
        conn: Conn,
        channel: String,
        op_timeout: Duration,
    ) -> Self {
        RedisBus {
            client,
            conn,
            channel,
            op_timeout,
        }
    }

    /// The channel name.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// A pub/sub connection subscribed to the channel, within the timeout.
    async fn subscribed(
        client: &redis::Client,
        channel: &str,
        timeout: Duration,
    ) -> Result<PubSubStream, Error> {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, Error>(pubsub.into_on_message())
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| Error::TimedOut(timeout))?
    }

    /// Forwards messages to `tx` until it closes, reconnecting whenever the stream ends.
    async fn forward(
        client: redis::Client,
        channel: String,
        timeout: Duration,
        mut stream: PubSubStream,
        tx: mpsc::Sender<String>,
    ) {
        loop {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    msg = stream.next() => match msg {
                        Some(msg) => {
                            let Ok(text) = msg.get_payload::<String>() else { continue };
                            if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(text) {
                                return;
                            }
                        }
                        None => break,
                    },
                }
            }
            tracing::warn!(channel, "event bus subscription lost, reconnecting");
            stream = loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                }
                match Self::subscribed(&client, &channel, timeout).await {
                    Ok(s) => break s,
                    Err(e) => tracing::debug!(error = %e, "event bus still unavailable"),
                }
            };
            tracing::info!(channel, "event bus subscription restored");
        }
    }
}

#[async_trait::async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, payload: String) -> Result<(), StoreError> {
        let send = async {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(payload)
                .query_async(&mut self.conn.clone())
                .await?;
            Ok::<_, Error>(())
        };
        match tokio::time::timeout(self.op_timeout, send).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(Error::TimedOut(self.op_timeout).into()),
        }
    }

    /// Subscribes on a dedicated connection; returns once Redis confirmed the
    /// subscription, so every message published afterwards is delivered.
    async fn subscribe(&self) -> Result<mpsc::Receiver<String>, StoreError> {
        let stream = Self::subscribed(&self.client, &self.channel, self.op_timeout).await?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        tokio::spawn(Self::forward(
            self.client.clone(),
            self.channel.clone(),
            self.op_timeout,
            stream,
            tx,
        ));
        Ok(rx)
    }
}
