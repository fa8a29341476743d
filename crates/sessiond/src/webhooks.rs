//! Webhooks: the `[apps.<name>.hooks.<hook>]` tables, and the task that sends what the
//! store's outbox holds ([`sessiond_core::hooks`]).
//!
//! Operators configure hooks, nobody else: a hook is a URL, the kinds of event it
//! wants and one or two secrets. Every delivery is a `POST` of the event's JSON, signed
//! with HMAC-SHA256 over `<unix seconds>.<body>` under each secret in force
//! (`Sessiond-Signature: t=<secs>,v1=<hex>[,v1=<hex>]`, two during a rotation), and
//! names its event (`Sessiond-Event-Id`, the same in every try), so a receiver checks
//! the signature and the time, then drops what it has seen.
//!
//! Each node runs [`Webhooks::run`]: it claims due deliveries with a lease (on a shared
//! store no other node sends them meanwhile), sends them a few at a time and settles
//! each: a 2xx answer removes it; anything else is tried again after
//! `first_retry_s`, doubled each time up to an hour, until `max_tries`, then kept as a
//! dead letter an operator can send again (`sessiond hooks resend`). Safe by default:
//! no redirect is followed, no proxy is used, a hook whose host resolves to a loopback,
//! private, link-local or otherwise non-public address is refused unless it says
//! `allow_private = true`, every try has a time limit and reads at most a few KiB of
//! the answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sessiond_core::hooks::{Delivery, HookKind, HookKinds, Route, Settle};
use sessiond_core::{Manager, Store, Timestamp};
use sha2::Sha256;
use tokio::sync::watch;

use crate::config::Secret;

/// The longest wait between two tries.
pub const MAX_RETRY_S: u64 = 3600;
/// How long a claim keeps a delivery from other nodes: longer than any try.
const LEASE: Duration = Duration::from_secs(90);
/// Deliveries claimed at a time, at most.
const BATCH: usize = 32;
/// Tries in flight at once on a node.
const IN_FLIGHT: usize = 64;
/// How long a dead letter is kept for an operator to send again.
pub const DEAD_LETTER_DAYS: u64 = 7;
/// How often the outbox is counted (the metrics' gauge) and rid of old dead letters.
const TALLY_EVERY: Duration = Duration::from_secs(5);
/// How often an idle node looks for due deliveries.
const POLL: Duration = Duration::from_millis(250);
/// The most of an answer read (for the error text).
const MAX_ANSWER: usize = 8 << 10;

/// One `[apps.<app>.hooks.<name>]` table.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The hook's name (the table's key).
    pub name: String,
    /// Where deliveries are sent (`http://` or `https://`).
    pub url: reqwest::Url,
    /// The kinds of event it wants (`events`; all by default).
    pub kinds: HookKinds,
    /// The signing secrets: the first current, a second one during a rotation.
    pub secrets: Vec<Secret>,
    /// Tries before a delivery becomes a dead letter (default 10).
    pub max_tries: u32,
    /// Seconds before the first retry, doubled at each one up to an hour (default 10).
    pub first_retry_s: u32,
    /// Time limit of one try, in milliseconds (default 5000, at most 30000).
    pub timeout_ms: u64,
    /// Whether the URL may resolve to a loopback, private or link-local address.
    pub allow_private: bool,
}

impl HookConfig {
    /// When the try after `failures` failures is due, or `None`: give up.
    pub fn retry_at(&self, failures: u32, now: Timestamp) -> Option<Timestamp> {
        if failures >= self.max_tries {
            return None;
        }
        let wait = u64::from(self.first_retry_s)
            .saturating_mul(1u64 << failures.saturating_sub(1).min(20))
            .min(MAX_RETRY_S);
        Some(now.plus_secs(wait))
    }
}

/// Parses an app's `hooks` table (`apps.<app>.hooks`).
pub fn parse(app: &str, v: toml::Value) -> Result<Vec<HookConfig>, String> {
    let toml::Value::Table(t) = v else {
        return Err(format!(
            "apps.{app}.hooks must be a table of hooks: [apps.{app}.hooks.<name>]"
        ));
    };
    let mut out = Vec::new();
    for (name, v) in t {
        let at = format!("apps.{app}.hooks.{name}");
        if !sessiond_core::valid_app_name(&name) {
            return Err(format!(
                "{at}: a hook name is 1 to 64 letters, digits, '_', '-' or '.'"
            ));
        }
        let toml::Value::Table(mut h) = v else {
            return Err(format!("{at} must be a table"));
        };
        let url = match h.remove("url") {
            Some(toml::Value::String(u)) => reqwest::Url::parse(&u)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .filter(|u| u.username().is_empty() && u.password().is_none())
                .ok_or(format!(
                    "{at}.url must be an http:// or https:// URL with a host and no user or password"
                ))?,
            _ => return Err(format!("{at}.url is required")),
        };
        let kinds = match h.remove("events") {
            None => HookKinds::ALL,
            Some(toml::Value::Array(list)) if !list.is_empty() => {
                let mut kinds = Vec::new();
                for k in list {
                    let k = k.as_str().and_then(HookKind::parse).ok_or(format!(
                        "{at}.events: each is one of opened, closed, privileges_changed, seats_full"
                    ))?;
                    kinds.push(k);
                }
                HookKinds::of(kinds)
            }
            Some(_) => {
                return Err(format!(
                    "{at}.events must be a list of opened, closed, privileges_changed, seats_full"
                ))
            }
        };
        let secrets =
            crate::config::secrets(&format!("{at}.secret"), h.remove("secret")).map_err(|e| e.0)?;
        if secrets.is_empty() || secrets.len() > 2 {
            return Err(format!(
                "{at}.secret is required: one secret, or two during a rotation (the first signs as current)"
            ));
        }
        let number = |h: &mut toml::Table, key: &str, default: i64, min: i64, max: i64| match h
            .remove(key)
        {
            None => Ok(default),
            Some(toml::Value::Integer(n)) if (min..=max).contains(&n) => Ok(n),
            Some(_) => Err(format!(
                "{at}.{key} must be a whole number from {min} to {max}"
            )),
        };
        let max_tries = number(&mut h, "max_tries", 10, 1, 100)? as u32;
        let first_retry_s = number(&mut h, "first_retry_s", 10, 1, MAX_RETRY_S as i64)? as u32;
        let timeout_ms = number(&mut h, "timeout_ms", 5000, 100, 30_000)? as u64;
        let allow_private = match h.remove("allow_private") {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(_) => return Err(format!("{at}.allow_private must be true or false")),
        };
        if let Some(k) = h.keys().next() {
            return Err(format!(
                "{at}: unknown key `{k}`, expected one of `url`, `events`, `secret`, `max_tries`, `first_retry_s`, `timeout_ms`, `allow_private`"
            ));
        }
        out.push(HookConfig {
            name,
            url,
            kinds,
            secrets,
            max_tries,
            first_retry_s,
            timeout_ms,
            allow_private,
        });
    }
    Ok(out)
}

/// `Sessiond-Signature` for `body` sent at `t` (Unix seconds): `t=<t>` then one
/// `v1=<hex HMAC-SHA256 of "<t>.<body>">` per secret.
pub fn signature(secrets: &[Secret], t: u64, body: &[u8]) -> String {
    let mut out = format!("t={t}");
    for s in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(s.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        out.push_str(",v1=");
        for b in mac.finalize().into_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// Whether `ip` is an address on the public internet: not loopback, private,
/// link-local, shared (CGNAT), unspecified, multicast, broadcast or documentation.
pub fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                // IPv4-compatible (::a.b.c.d), deprecated but still routed by some stacks.
                || s[..6] == [0; 6]
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                // Teredo and 6to4 carry an IPv4 address that may be an inside one.
                || (s[0] == 0x2001 && s[1] == 0)
                || s[0] == 0x2002
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// Resolves names to public addresses only: what a hook without `allow_private` is
/// sent through, so a name that points inside (or is made to, between a check and the
/// connection) is refused where the connection is made.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (set allow_private = true for a hook inside)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Deliveries' outcomes, for the metrics.
#[derive(Debug, Default)]
pub struct HookStats {
    counts: Mutex<HashMap<(String, String, &'static str), u64>>,
    /// Pending deliveries in the outbox at the last look.
    pub pending: AtomicU64,
    /// Dead letters in the outbox at the last look.
    pub dead: AtomicU64,
}

impl HookStats {
    fn count(&self, app: &str, hook: &str, outcome: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((app.to_string(), hook.to_string(), outcome))
            .or_default() += 1;
    }

    /// `(app, hook, outcome, count)`, outcome being `delivered`, `failed` or `dead`.
    pub fn snapshot(&self) -> Vec<(String, String, &'static str, u64)> {
        let mut v: Vec<_> = self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((a, h, o), n)| (a.clone(), h.clone(), *o, *n))
            .collect();
        v.sort();
        v
    }
}

impl HookStats {
    /// The Prometheus text of these figures.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::from(
            "# HELP sessiond_webhook_deliveries_total Webhook tries by outcome: delivered, \
             failed (to be tried again) or dead (given up on, kept as a dead letter).\n\
             # TYPE sessiond_webhook_deliveries_total counter\n",
        );
        for (app, hook, outcome, n) in self.snapshot() {
            let _ = writeln!(
                out,
                "sessiond_webhook_deliveries_total{{app=\"{app}\",hook=\"{hook}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = write!(
            out,
            "# HELP sessiond_webhook_outbox Webhook deliveries kept in the store, by state \
             (as this node last counted them, every few seconds).\n\
             # TYPE sessiond_webhook_outbox gauge\n\
             sessiond_webhook_outbox{{state=\"pending\"}} {}\n\
             sessiond_webhook_outbox{{state=\"dead\"}} {}\n",
            self.pending.load(Ordering::Relaxed),
            self.dead.load(Ordering::Relaxed)
        );
        out
    }
}

type HookTable = HashMap<(String, String), Arc<HookConfig>>;

/// The server's webhooks: the hooks in force and the sender.
pub struct Webhooks {
    manager: Arc<Manager>,
    hooks: RwLock<Arc<HookTable>>,
    strict: reqwest::Client,
    open: reqwest::Client,
    /// Outcomes so far.
    pub stats: HookStats,
}

impl Webhooks {
    /// The webhooks of `config` over `store`. Refuses hooks on a store that keeps no
    /// outbox.
    pub fn new(
        manager: Arc<Manager>,
        config: &crate::config::Config,
    ) -> Result<Arc<Webhooks>, String> {
        let client = |strict: bool| {
            let b = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!(
                    "sessiond/",
                    env!("CARGO_PKG_VERSION"),
                    " (webhooks)"
                ));
            let b = if strict {
                b.dns_resolver(Arc::new(PublicOnly))
            } else {
                b
            };
            b.build()
                .map_err(|e| format!("the webhook client cannot start: {e}"))
        };
        let w = Arc::new(Webhooks {
            manager,
            hooks: RwLock::default(),
            strict: client(true)?,
            open: client(false)?,
            stats: HookStats::default(),
        });
        w.apply(config)?;
        Ok(w)
    }

    /// Whether the hooks of `config` can be put in force: refused on a store that keeps
    /// no outbox.
    pub fn check(&self, config: &crate::config::Config) -> Result<(), String> {
        let store = self.manager.store();
        if store.outbox().is_none() && config.apps.values().any(|a| !a.hooks.is_empty()) {
            return Err(format!(
                "webhooks are configured, but the {} store keeps no webhook outbox",
                store.kind()
            ));
        }
        Ok(())
    }

    /// Puts the hooks of `config` in force (at start and on each reload).
    pub fn apply(&self, config: &crate::config::Config) -> Result<(), String> {
        self.check(config)?;
        let mut table = HookTable::new();
        let mut routes = Vec::new();
        for (app, a) in &config.apps {
            let r: Vec<Route> = a
                .hooks
                .iter()
                .map(|h| Route {
                    hook: h.name.as_str().into(),
                    kinds: h.kinds,
                })
                .collect();
            for h in &a.hooks {
                table.insert((app.clone(), h.name.clone()), Arc::new(h.clone()));
            }
            routes.push((app.clone(), r));
        }
        // The hooks first, then the routes: a delivery for a new hook is never claimed
        // before its hook is known.
        *self.hooks.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        if let Some(o) = self.manager.store().outbox() {
            o.routes().set(routes);
        }
        Ok(())
    }

    /// The hooks of `app` in force, by name.
    pub fn hooks_of(&self, app: &str) -> Vec<Arc<HookConfig>> {
        let t = self.hooks.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut v: Vec<Arc<HookConfig>> = t
            .iter()
            .filter(|((a, _), _)| a == app)
            .map(|(_, h)| h.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn hook(&self, app: &str, name: &str) -> Option<Arc<HookConfig>> {
        let t = self.hooks.read().unwrap_or_else(|e| e.into_inner()).clone();
        t.get(&(app.to_string(), name.to_string())).cloned()
    }

    /// Sends due deliveries until `stop` turns true: claims as many as there are free
    /// sending slots, sends each on its own task (a slow receiver holds its own slots,
    /// not a batch), and claims again as slots free. Looks at the outbox while any app
    /// has a hook, or while the last count found deliveries (those of a hook removed
    /// since, which become dead letters at their turn).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let store: Arc<dyn Store> = self.manager.store().clone();
        let Some(outbox) = store.outbox() else {
            return;
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut last_tally = tokio::time::Instant::now() - TALLY_EVERY;
        loop {
            if *stop.borrow() {
                break;
            }
            if last_tally.elapsed() >= TALLY_EVERY {
                last_tally = tokio::time::Instant::now();
                let cutoff = Timestamp(
                    self.manager
                        .now()
                        .as_millis()
                        .saturating_sub(DEAD_LETTER_DAYS * 86_400_000),
                );
                match outbox.forget_dead(cutoff, 1000).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        removed = n,
                        days = DEAD_LETTER_DAYS,
                        "old webhook dead letters removed"
                    ),
                    Err(e) => {
                        tracing::debug!(error = %e, "old dead letters could not be removed; trying again")
                    }
                }
                if let Ok(t) = outbox.tally().await {
                    self.stats.pending.store(t.pending, Ordering::Relaxed);
                    self.stats.dead.store(t.dead, Ordering::Relaxed);
                }
            }
            let wanted =
                !outbox.routes().is_empty() || self.stats.pending.load(Ordering::Relaxed) > 0;
            let free = slots.available_permits().min(BATCH);
            let mut more = false;
            if wanted && free > 0 {
                let now = self.manager.now();
                match outbox.claim(now, now.plus(LEASE), free).await {
                    Ok(claimed) => {
                        more = claimed.len() == free;
                        for d in claimed {
                            let Ok(slot) = slots.clone().acquire_owned().await else {
                                break;
                            };
                            let (me, store) = (self.clone(), store.clone());
                            tokio::spawn(async move {
                                me.deliver(&store, d).await;
                                drop(slot);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook deliveries could not be claimed; trying again")
                    }
                }
            }
            if !more {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        // Let the tries in flight end (each has its time limit); the server waits a
        // few seconds for this, then gives up on them (they are sent again later).
        let _ = slots.acquire_many(IN_FLIGHT as u32).await;
    }

    /// Sends one claimed delivery and records how it went.
    async fn deliver(&self, store: &Arc<dyn Store>, d: Delivery) {
        let Some(outbox) = store.outbox() else {
            return;
        };
        let outcome = match self.hook(&d.app, &d.hook) {
            // A hook removed from the configuration: its deliveries wait, dead.
            None => Settle::Failed {
                retry_at: None,
                error: "the hook is no longer configured".into(),
            },
            Some(h) => match self.send(&h, &d).await {
                Ok(()) => Settle::Delivered,
                Err(e) => Settle::Failed {
                    retry_at: h.retry_at(d.tries + 1, self.manager.now()),
                    error: e,
                },
            },
        };
        let label = match &outcome {
            Settle::Delivered => "delivered",
            Settle::Failed {
                retry_at: Some(_), ..
            } => "failed",
            Settle::Failed { retry_at: None, .. } => "dead",
        };
        self.stats.count(&d.app, &d.hook, label);
        match &outcome {
            Settle::Delivered => {
                tracing::debug!(app = %d.app, hook = %d.hook, event = %d.event_id, "webhook delivered")
            }
            Settle::Failed { retry_at, error } => tracing::warn!(
                app = %d.app, hook = %d.hook, event = %d.event_id, tries = d.tries + 1,
                dead = retry_at.is_none(), error = %error, "webhook delivery failed"
            ),
        }
        if let Err(e) = outbox.settle(&d.app, d.id, d.due, outcome).await {
            tracing::warn!(error = %e, delivery = %d.id, "a webhook delivery's outcome could not be kept; it will be sent again");
        }
    }

    /// One try.
    async fn send(&self, h: &HookConfig, d: &Delivery) -> Result<(), String> {
        if !h.allow_private {
            if let Some(ip) = host_ip(&h.url) {
                if !is_public(ip) {
                    return Err(format!(
                        "{ip} is not a public address (set allow_private = true for a hook inside)"
                    ));
                }
            }
        }
        let client = if h.allow_private {
            &self.open
        } else {
            &self.strict
        };
        let t = self.manager.now().as_millis() / 1000;
        let answer = client
            .post(h.url.clone())
            .timeout(Duration::from_millis(h.timeout_ms))
            .header("content-type", "application/json")
            .header("sessiond-event", d.kind.as_str())
            .header("sessiond-event-id", d.event_id.to_string())
            .header("sessiond-delivery-id", d.id.to_string())
            .header(
                "sessiond-signature",
                signature(&h.secrets, t, d.body.as_bytes()),
            )
            .body(d.body.to_string())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let mut answer = answer;
        let mut text = Vec::new();
        while text.len() < MAX_ANSWER {
            match tokio::time::timeout(Duration::from_millis(h.timeout_ms), answer.chunk()).await {
                Ok(Ok(Some(c))) => {
                    text.extend_from_slice(&c[..c.len().min(MAX_ANSWER - text.len())])
                }
                _ => break,
            }
        }
        // The receiver's words, as one line of printable text (it could try to forge
        // log lines).
        let text: String = String::from_utf8_lossy(&text[..text.len().min(200)])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Err(format!("HTTP {}: {}", status.as_u16(), text.trim()))
    }
}

/// The URL's host as an address, when it is one.
fn host_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// A send error as one line (reqwest's own text hides the cause).
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "could not send".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_inside_are_not_public() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "2001:0:4136::1",
            "fec0::1",
            "198.18.0.1",
        ] {
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert!(is_public(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body_under_each_secret() {
        // RFC 4231 test case 2's key and data, with the time prefix as part of the data.
        let s = signature(&[Secret::new("Jefe")], 0, b"what do ya want for nothing?");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(s, format!("t=0,v1={hex}"));
        let two = signature(
            &[Secret::new("new-secret"), Secret::new("old-secret")],
            7,
            b"{}",
        );
        assert_eq!(two.matches(",v1=").count(), 2);
        assert!(two.starts_with("t=7,v1="));
    }

    #[test]
    fn retries_double_up_to_an_hour_then_stop() {
        let mut h = parse(
            "crm",
            toml::toml! { [a] url = "https://x.example/h" secret = "0123456789abcdef0123" }.into(),
        )
        .unwrap()
        .remove(0);
        let now = Timestamp(0);
        let waits: Vec<u64> = (1..10)
            .map(|n| h.retry_at(n, now).unwrap().as_millis() / 1000)
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2560]);
        assert!(
            h.retry_at(10, now).is_none(),
            "the tenth failure is the last"
        );
        h.max_tries = 100;
        assert_eq!(h.retry_at(30, now).unwrap().as_millis() / 1000, MAX_RETRY_S);
    }

    #[test]
    fn bad_hook_tables_are_refused_with_their_key() {
        let bad = [
            (
                toml::toml! { [a] secret = "0123456789abcdef0123" },
                "apps.crm.hooks.a.url is required",
            ),
            (
                toml::toml! { [a] url = "ftp://x/" secret = "0123456789abcdef0123" },
                "url must be",
            ),
            (
                toml::toml! { [a] url = "https://u:p@x/" secret = "0123456789abcdef0123" },
                "no user",
            ),
            (toml::toml! { [a] url = "https://x/" }, "secret is required"),
            (
                toml::toml! { [a] url = "https://x/" secret = "0123456789abcdef0123" events = ["x"] },
                "events",
            ),
            (
                toml::toml! { [a] url = "https://x/" secret = "0123456789abcdef0123" timeout_ms = 0 },
                "timeout_ms",
            ),
            (
                toml::toml! { [a] url = "https://x/" secret = "0123456789abcdef0123" retries = 3 },
                "unknown key `retries`",
            ),
        ];
        for (t, want) in bad {
            let e = parse("crm", t.into()).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
