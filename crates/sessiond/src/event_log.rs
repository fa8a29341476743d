//! [`EventLog`]: the node's recent events, numbered, so an app event stream that
//! reconnects with `Last-Event-ID` gets what it missed. The Manager's broadcast channel
//! has no memory; this keeps the last [`EventLog::CAPACITY`] events and re-broadcasts
//! each with its number.
//!
//! Numbers are per node: a client that reconnects to another node (behind a load
//! balancer) should resynchronise by listing the sessions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use sessiond_core::{Event, Manager};
use tokio::sync::broadcast;

/// An event with its sequence number.
pub type Numbered = (u64, Event);

/// Recent events with their sequence numbers.
pub struct EventLog {
    recent: Mutex<VecDeque<(u64, Event)>>,
    tx: broadcast::Sender<(u64, Event)>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            recent: Mutex::new(VecDeque::with_capacity(Self::CAPACITY)),
            tx: broadcast::channel(4096).0,
        }
    }
}

impl EventLog {
    /// How many events are kept for replay.
    pub const CAPACITY: usize = 10_000;

    /// Numbers and keeps the Manager's events until its channel closes.
    pub async fn follow(self: Arc<Self>, manager: Arc<Manager>) {
        let mut rx = manager.subscribe();
        let mut seq = 0u64;
        loop {
            match rx.recv().await {
                Ok(e) => {
                    seq += 1;
                    {
                        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                        if recent.len() == Self::CAPACITY {
                            recent.pop_front();
                        }
                        recent.push_back((seq, e.clone()));
                    }
                    let _ = self.tx.send((seq, e));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "the event log fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Live numbered events from now on, and the kept ones numbered after `after` that
    /// `keep` accepts (subscribe first, then replay, so nothing falls in between).
    pub fn since(
        &self,
        after: Option<u64>,
        keep: impl Fn(&Event) -> bool,
    ) -> (broadcast::Receiver<Numbered>, Vec<Numbered>) {
        let rx = self.tx.subscribe();
        let replay = match after {
            None => Vec::new(),
            Some(after) => self
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(seq, e)| *seq > after && keep(e))
                .cloned()
                .collect(),
        };
        (rx, replay)
    }
}
