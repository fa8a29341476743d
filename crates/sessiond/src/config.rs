//! Server configuration: a TOML file, then `SESSIOND__*` environment variables (any key
//! of the file, [`env_table`]), then command-line flags and their `SESSIOND_*`
//! variables, each overriding the one before. Every setting has a default (the
//! `DEFAULT_*` constants), so `sessiond serve` with nothing at all works, with a
//! `default` app. `sessiond.example.toml` at the repository root documents every key.
//!
//! The environment is read as a second TOML document merged over the file's, then
//! both go through the one reader, so a key set either way is checked the same way and
//! refused with the same message (the file's also says where: line and column).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sessiond_core::{valid_app_name, Limits, Policy};

use crate::licensing::{Licensing, Terms};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
/// Default HTTPS listen address (when a certificate is configured).
pub const DEFAULT_TLS_LISTEN: &str = "127.0.0.1:7443";
/// Default data directory (the embedded store and the generated admin token).
pub const DEFAULT_DATA_DIR: &str = "./sessiond-data";
/// Default largest request body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default time to receive a request's headers.
pub const DEFAULT_HEADER_TIMEOUT_S: u64 = 10;
/// Default time for a whole request (SSE streams excepted).
pub const DEFAULT_REQUEST_TIMEOUT_S: u64 = 30;
/// Default period of the expiry sweep, in milliseconds.
pub const DEFAULT_EXPIRY_INTERVAL_MS: u64 = 1000;
/// Default keep-alive comment period of event streams.
pub const DEFAULT_SSE_KEEPALIVE_S: u64 = 15;
/// Default most connections open at once; over it a new connection is answered 503
/// and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default largest request head (request line and headers), in bytes; larger gets 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// The smallest `max_header_bytes` the HTTP server accepts.
pub const MIN_HEADER_BYTES: usize = 8192;
/// Default most event streams open at once, all apps together.
pub const DEFAULT_MAX_STREAMS: usize = 2048;
/// Default most event streams open at once per app (its sessions' and its operators').
pub const DEFAULT_MAX_STREAMS_PER_APP: usize = 1024;
/// Default most event streams open at once per session.
pub const DEFAULT_MAX_STREAMS_PER_SESSION: usize = 4;
/// Default failed admin console sign-ins allowed per client address per minute.
pub const DEFAULT_CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE: u32 = 10;
/// Default seconds without activity before an admin console sign-in ends: 30 minutes.
pub const DEFAULT_CONSOLE_IDLE_TIMEOUT_S: u32 = 30 * 60;
/// Default seconds an admin console sign-in lasts at most, whatever its activity: 8 hours.
pub const DEFAULT_CONSOLE_LIFETIME_S: u32 = 8 * 60 * 60;
/// Default sessions a client credential may open per minute, per app.
pub const DEFAULT_CLIENT_OPENS_PER_MINUTE: u32 = 60;
/// The app that exists out of the box.
pub const DEFAULT_APP: &str = "default";
/// Shortest admin token or app key, in characters.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest admin token or app key, in characters.
pub const MAX_SECRET_LEN: usize = 1024;

/// The one rule for an admin token or an app key, wherever it comes from (the
/// configuration file, `SESSIOND_ADMIN_TOKEN`, the generated token file):
/// [`MIN_SECRET_LEN`] to [`MAX_SECRET_LEN`] visible ASCII characters, no spaces. Such a
/// secret always fits in an `Authorization: Bearer` header, so whatever is accepted
/// can be sent back. `what` names the setting in the message.
pub fn check_secret(what: &str, secret: &str) -> Result<(), ConfigError> {
    let ok = (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "{what} must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} visible ASCII characters, with no spaces"
        )))
    }
}

/// A secret (admin token, app key) that never prints.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret text. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where sessions are kept. `Debug` hides a password in the URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded durable store in a directory (`file:` for the data dir, or
    /// `file:///path`).
    File(Option<PathBuf>),
    /// In memory only: lost on exit (`memory:`), for tests and trials.
    Memory,
    /// PostgreSQL (`postgres://user@host:port/db`), shared by many nodes. A
    /// `namespace=NAME` query parameter picks the schema (default `sessiond`);
    /// `read_cache_ms=N` answers session reads from memory, copies kept at most N ms
    /// (every node sharing the store must set it; docs/OPERATIONS.md); `sslmode` and
    /// `sslrootcert` go on to the store (TLS, docs/OPERATIONS.md).
    Postgres {
        /// The connection URL, without the namespace and read cache parameters.
        url: String,
        /// The schema.
        namespace: Option<String>,
        /// How long a node may answer reads from its copy of a session (none: off).
        read_cache_ms: Option<u64>,
    },
    /// Redis (`redis://host:port/db`, or `rediss://` for TLS), shared by many nodes; a
    /// Redis Cluster as `redis+cluster://host:port,host:port` (or `rediss+cluster://`),
    /// naming some of its primaries. A `namespace=NAME` query parameter picks the key
    /// prefix (default `sessiond`); `read_cache_ms=N` answers session reads from
    /// memory (not on a cluster; docs/OPERATIONS.md); `ca_cert` goes on to the store
    /// (TLS, docs/OPERATIONS.md).
    Redis {
        /// The connection URL, without the namespace and read cache parameters.
        url: String,
        /// The key prefix.
        namespace: Option<String>,
        /// How long a node may answer reads from its copy of a session (none: off).
        read_cache_ms: Option<u64>,
    },
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::File(dir) => f.debug_tuple("File").field(dir).finish(),
            StoreUrl::Memory => f.write_str("Memory"),
            StoreUrl::Postgres {
                url,
                namespace,
                read_cache_ms,
            } => f
                .debug_struct("Postgres")
                .field("url", &redact_password(url))
                .field("namespace", namespace)
                .field("read_cache_ms", read_cache_ms)
                .finish(),
            StoreUrl::Redis {
                url,
                namespace,
                read_cache_ms,
            } => f
                .debug_struct("Redis")
                .field("url", &redact_password(url))
                .field("namespace", namespace)
                .field("read_cache_ms", read_cache_ms)
                .finish(),
        }
    }
}

/// `url` with the password of its `user:password@` part (if any) replaced, for
/// messages and logs. A `key=value` string's `password=...` is hidden too.
pub fn redact_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // The user information ends at the first '@', as the clients read it: a password
        // may hold an unencoded '/', '?' or '#'. (Redacting too much is harmless.)
        let userinfo_redacted = match rest.find('@') {
            Some(at) => match rest[..at].find(':') {
                Some(colon) => format!("{scheme}://{}:<redacted>{}", &rest[..colon], &rest[at..]),
                None => url.to_string(),
            },
            None => url.to_string(),
        };
        return redact_query_password(&userinfo_redacted);
    }
    match url.find("password") {
        Some(_) => url
            .split_whitespace()
            .map(|word| match word.split_once('=') {
                Some(("password", _)) => "password=<redacted>",
                _ => word,
            })
            .collect::<Vec<_>>()
            .join(" "),
        None => url.to_string(),
    }
}

/// A TOML error as the log may show it: where (line and column), the key, and what is
/// wrong; never the text of the line, which may hold a secret (an admin token, a key,
/// a store password).
fn toml_error(text: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {column}: ")
    });
    ConfigError(format!(
        "{}{}{}",
        at.unwrap_or_default(),
        key,
        without_values(e.message())
    ))
}

/// A deserialisation message without the text values it quotes (`invalid type: string
/// "…", expected a map` becomes `invalid type: a string, expected a map`): a value put
/// under the wrong key may be a secret (a token given where a table was expected).
pub(crate) fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let quoted = &rest[at + "string \"".len()..];
        // serde quotes it as Rust's Debug would: a quote inside is escaped.
        let mut end = quoted.len();
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = i + 1;
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = &quoted[end.min(quoted.len())..];
    }
    out.push_str(rest);
    out
}

/// `"<key>: "` for an error at a key, nothing at the top.
fn key_prefix(path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p == "." || p.is_empty() {
        String::new()
    } else {
        format!("{p}: ")
    }
}

/// Where environment variables name keys of the configuration file.
pub const ENV_PREFIX: &str = "SESSIOND__";

/// This process's `SESSIOND__*` variables, for [`env_table`]: the one place that reads
/// them, at start and at each reload. A value that is not UTF-8 text is refused by name.
pub fn env_vars() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (k, v) in std::env::vars_os() {
        let Some(k) = k.to_str().filter(|k| k.starts_with(ENV_PREFIX)) else {
            continue;
        };
        let v = v
            .into_string()
            .map_err(|_| ConfigError(format!("{k}: the value is not UTF-8 text")))?;
        vars.push((k.to_string(), v));
    }
    Ok(vars)
}

/// The keys set by `SESSIOND__*` variables among `vars`, as a TOML table to merge over
/// the file's.
///
/// The naming rule: `SESSIOND__` then the key's path, its parts joined by `__`, each
/// part's case ignored (read lower-case): `SESSIOND__LISTEN` is `listen`,
/// `SESSIOND__APPS__GESTAN__SEATS` is `apps.gestan.seats`,
/// `SESSIOND__APPS__GESTAN__HEARTBEAT__INTERVAL_S` is `apps.gestan.heartbeat.interval_s`.
/// The value is read as a TOML value when it is one (`10`, `true`, `["admin"]`,
/// `"quoted text"`, `{ interval_s = 30 }`), else as text (`127.0.0.1:7420`,
/// `file:///var/lib/sessiond`): quote a text that would read as something else
/// (`'"10"'`). App and operator names given this way are lower-case.
pub fn env_table(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<toml::Table, ConfigError> {
    let mut out = toml::Table::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let parts: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_lowercase)
            .collect();
        if parts.iter().any(String::is_empty) {
            return Err(ConfigError(format!(
                "{name}: a key's parts are joined by \"__\" and none is empty \
                 (SESSIOND__APPS__GESTAN__SEATS is apps.gestan.seats)"
            )));
        }
        let (leaf, path) = parts.split_last().expect("at least one part");
        let mut table = &mut out;
        for (i, part) in path.iter().enumerate() {
            let next = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match next {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError(format!(
                        "{name}: {} is set by another variable as a value, not a table",
                        parts[..=i].join(".")
                    )))
                }
            };
        }
        let value = env_value(&value);
        match (table.get_mut(leaf), value) {
            // Keys of a table set whole and part by part are merged.
            (Some(toml::Value::Table(t)), toml::Value::Table(more)) => merge(t, more),
            (Some(_), _) => {
                return Err(ConfigError(format!(
                    "{name}: {} is set twice",
                    parts.join(".")
                )))
            }
            (None, v) => {
                table.insert(leaf.clone(), v);
            }
        }
    }
    Ok(out)
}

/// A variable's value: a TOML value when it reads as exactly one, else the text.
fn env_value(text: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.into())),
        _ => toml::Value::String(text.to_string()),
    }
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `password=...` in a URL's query, redacted up to the next `&` or `#`.
fn redact_query_password(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.to_ascii_lowercase().find("password=") {
        let starts_param = i > 0 && matches!(rest.as_bytes()[i - 1], b'?' | b'&');
        let value = i + "password=".len();
        out.push_str(&rest[..value]);
        rest = &rest[value..];
        if starts_param {
            out.push_str("<redacted>");
            rest = &rest[rest.find(['&', '#']).unwrap_or(rest.len())..];
        }
    }
    out.push_str(rest);
    out
}

/// Splits a `namespace=NAME` query parameter off a URL (a `#fragment` stays at the end,
/// for the store to judge).
fn split_namespace(url: &str) -> (String, Option<String>) {
    split_param(url, "namespace")
}

/// Splits the query parameter `name` (`name=VALUE`) off a URL, as [`split_namespace`].
fn split_param(url: &str, name: &str) -> (String, Option<String>) {
    if let Some((rest, fragment)) = url.split_once('#') {
        let (rest, value) = split_param(rest, name);
        return (format!("{rest}#{fragment}"), value);
    }
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut value = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(
            |kv| match kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
                Some(v) => {
                    value = Some(v.to_string());
                    false
                }
                None => !kv.is_empty(),
            },
        )
        .collect();
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, value)
}

/// Splits a `read_cache_ms=N` query parameter off a URL: 1 to 60000 milliseconds.
fn split_read_cache(url: &str) -> Result<(String, Option<u64>), String> {
    let (url, cache) = split_param(url, "read_cache_ms");
    let ms = match cache {
        None => None,
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms @ 1..=60_000) => Some(ms),
            _ => {
                return Err(format!(
                    "read_cache_ms={ms:?}: give the longest a node may answer reads from its \
                     copy, in milliseconds, 1 to 60000 (1000 is a good value)"
                ))
            }
        },
    };
    Ok((url, ms))
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "file" | "file:" | "file://" => Ok(StoreUrl::File(None)),
            "memory" | "memory:" | "memory://" => Ok(StoreUrl::Memory),
            _ => match s.strip_prefix("file://") {
                Some(p) if !p.is_empty() => Ok(StoreUrl::File(Some(PathBuf::from(p)))),
                _ if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
                    let (url, namespace) = split_namespace(s);
                    let (url, read_cache_ms) = split_read_cache(&url)?;
                    Ok(StoreUrl::Postgres {
                        url,
                        namespace,
                        read_cache_ms,
                    })
                }
                _ if ["redis://", "rediss://", "redis+cluster://", "rediss+cluster://"]
                    .iter()
                    .any(|scheme| s.starts_with(scheme)) =>
                {
                    let (url, namespace) = split_namespace(s);
                    let (url, read_cache_ms) = split_read_cache(&url)?;
                    Ok(StoreUrl::Redis {
                        url,
                        namespace,
                        read_cache_ms,
                    })
                }
                _ => Err(format!(
                    "unknown store {:?}: use file: (the default), file:///path, memory:, postgres://..., redis://..., rediss://... or redis+cluster://host:port,host:port",
                    redact_password(s)
                )),
            },
        }
    }
}

/// One `[apps.<name>]` table: the app key, the license file and the policy.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The app key (opens and manages this app's sessions); none: only the admin token.
    pub key: Option<Secret>,
    /// Older app keys still accepted while they are rotated out (`key = ["new", "old"]`).
    pub retiring_keys: Vec<Secret>,
    /// Client credentials: may only open a session of this app (then act with that
    /// session's token), never list, read or close others'. The first is current, the
    /// others retiring.
    pub client_keys: Vec<Secret>,
    /// A signed license file setting the app's seats and expiry (checked with
    /// [`Config::license_public_key`], reloaded when it changes).
    pub license: Option<PathBuf>,
    /// The rules.
    pub policy: Policy,
    /// How the app is served behind a reverse proxy (`[apps.<name>.web]`):
    /// forward-auth's header names, the browser heartbeat's origins and timing.
    pub web: crate::web::WebConfig,
    /// Its webhooks (`[apps.<name>.hooks.<hook>]`).
    pub hooks: Vec<crate::webhooks::HookConfig>,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// HTTPS: the certificate chain and key, served on [`Config::tls_listen`].
    pub tls: Option<crate::tls::TlsFiles>,
    /// HTTPS listen address.
    pub tls_listen: SocketAddr,
    /// HTTPS only: no plain HTTP listener (needs [`Config::tls`]).
    pub tls_only: bool,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Session store.
    pub store: StoreUrl,
    /// The admin token (else generated into the data dir on first start).
    pub admin_token: Option<Secret>,
    /// Older admin tokens still accepted while they are rotated out
    /// (`admin_token = ["new", "old"]`).
    pub retiring_admin_tokens: Vec<Secret>,
    /// Named operators with credentials of their own.
    pub operators: BTreeMap<String, OperatorConfig>,
    /// Sessions a client credential may open per minute, per app (a burst of as many).
    pub client_opens_per_minute: u32,
    /// The configuration file this was read from, to read credentials again on SIGHUP.
    pub source: Option<PathBuf>,
    /// The admin token was given by the environment: a reload keeps it.
    pub admin_token_from_env: bool,
    /// Largest request body in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Seconds to receive request headers.
    pub header_timeout_s: u64,
    /// Seconds for a whole request (event streams excepted).
    pub request_timeout_s: u64,
    /// Milliseconds between expiry sweeps.
    pub expiry_interval_ms: u64,
    /// Seconds between keep-alive comments on event streams (and between checks that
    /// the token of a session's stream still works).
    pub sse_keepalive_s: u64,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Largest request head in bytes (at least [`MIN_HEADER_BYTES`]).
    pub max_header_bytes: usize,
    /// Most event streams open at once, all apps together.
    pub max_streams: usize,
    /// Most event streams open at once per app.
    pub max_streams_per_app: usize,
    /// Most event streams open at once per session.
    pub max_streams_per_session: usize,
    /// Failed admin console sign-ins allowed per client address per minute.
    pub console_login_attempts_per_minute: u32,
    /// Seconds without activity before an admin console sign-in ends.
    pub console_idle_timeout_s: u32,
    /// Seconds an admin console sign-in lasts at most (the cookie's `Max-Age`).
    pub console_lifetime_s: u32,
    /// Proxies whose `X-Forwarded-For` is believed: the client address is its nearest
    /// hop, from the right, that is not one of them ([`sessiond_core::client_address`]).
    pub trusted_proxies: Vec<IpAddr>,
    /// Input limits.
    pub limits: Limits,
    /// Ed25519 public key (64 hex digits) that license files must be signed with. A
    /// vendor build accepts only its own ([`Config::licensing`]).
    pub license_public_key: Option<String>,
    /// How licenses are checked: [`Licensing::of_this_build`], never read from the
    /// file, so only the binary decides whether its key and licensed apps are pinned.
    pub licensing: Licensing,
    /// The apps, by name.
    pub apps: BTreeMap<String, AppConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let mut apps = BTreeMap::new();
        apps.insert(
            DEFAULT_APP.to_string(),
            AppConfig {
                key: None,
                retiring_keys: Vec::new(),
                client_keys: Vec::new(),
                license: None,
                policy: Policy::default(),
                web: crate::web::WebConfig::default(),
                hooks: Vec::new(),
            },
        );
        Config {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            tls: None,
            tls_listen: DEFAULT_TLS_LISTEN.parse().expect("valid default address"),
            tls_only: false,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            store: StoreUrl::File(None),
            admin_token: None,
            retiring_admin_tokens: Vec::new(),
            operators: BTreeMap::new(),
            client_opens_per_minute: DEFAULT_CLIENT_OPENS_PER_MINUTE,
            source: None,
            admin_token_from_env: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_timeout_s: DEFAULT_HEADER_TIMEOUT_S,
            request_timeout_s: DEFAULT_REQUEST_TIMEOUT_S,
            expiry_interval_ms: DEFAULT_EXPIRY_INTERVAL_MS,
            sse_keepalive_s: DEFAULT_SSE_KEEPALIVE_S,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_app: DEFAULT_MAX_STREAMS_PER_APP,
            max_streams_per_session: DEFAULT_MAX_STREAMS_PER_SESSION,
            console_login_attempts_per_minute: DEFAULT_CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE,
            console_idle_timeout_s: DEFAULT_CONSOLE_IDLE_TIMEOUT_S,
            console_lifetime_s: DEFAULT_CONSOLE_LIFETIME_S,
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            license_public_key: None,
            licensing: Licensing::of_this_build(),
            apps,
        }
    }
}

/// The file's shape (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_listen: Option<SocketAddr>,
    tls_only: Option<bool>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    admin_token: Option<toml::Value>,
    #[serde(default)]
    operators: BTreeMap<String, toml::Table>,
    client_opens_per_minute: Option<u32>,
    max_body_bytes: Option<usize>,
    header_timeout_s: Option<u64>,
    request_timeout_s: Option<u64>,
    expiry_interval_ms: Option<u64>,
    sse_keepalive_s: Option<u64>,
    max_connections: Option<usize>,
    max_header_bytes: Option<usize>,
    max_streams: Option<usize>,
    max_streams_per_app: Option<usize>,
    max_streams_per_session: Option<usize>,
    console_login_attempts_per_minute: Option<u32>,
    console_idle_timeout_s: Option<u32>,
    console_lifetime_s: Option<u32>,
    #[serde(default)]
    trusted_proxies: Vec<IpAddr>,
    limits: Option<LimitsConfig>,
    license_public_key: Option<String>,
    #[serde(default)]
    apps: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsConfig {
    max_data_bytes: Option<usize>,
    max_info_bytes: Option<usize>,
    max_privileges: Option<usize>,
    max_page: Option<usize>,
}

/// One or more secrets of a credential setting: a string, or a list whose first is the
/// current one and the others are retiring (accepted until removed). Each is held to
/// [`check_secret`].
pub(crate) fn secrets(what: &str, v: Option<toml::Value>) -> Result<Vec<Secret>, ConfigError> {
    let list = match v {
        None => return Ok(Vec::new()),
        Some(toml::Value::String(s)) => vec![toml::Value::String(s)],
        Some(toml::Value::Array(a)) if !a.is_empty() => a,
        Some(_) => {
            return Err(ConfigError(format!(
                "{what} must be a secret of {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters, or a list of them (the first current, the others retiring)"
            )))
        }
    };
    list.into_iter()
        .map(|v| match v {
            toml::Value::String(s) => {
                check_secret(what, &s)?;
                Ok(Secret(s))
            }
            _ => Err(ConfigError(format!("{what}: every entry must be a string"))),
        })
        .collect()
}

/// One `[operators.<name>]` table: a named person or tool with credentials of its own.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Its tokens: the first current, the others retiring.
    pub tokens: Vec<Secret>,
    /// The apps it may act on; `None`: every app.
    pub apps: Option<BTreeSet<String>>,
    /// Read only: it may list and read, never open, change or close.
    pub read_only: bool,
}

/// A configuration that cannot be used; the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The HTTPS files from a certificate and a key setting: both or neither.
pub fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError(
            "tls_cert needs tls_key (the certificate's private key, PEM)".into(),
        )),
        (None, Some(_)) => Err(ConfigError(
            "tls_key needs tls_cert (the certificate chain, PEM)".into(),
        )),
    }
}

impl Config {
    /// Refuses HTTPS settings that cannot work together.
    pub fn check_tls(&self) -> Result<(), ConfigError> {
        if self.tls_only && self.tls.is_none() {
            return Err(ConfigError(
                "tls_only needs tls_cert and tls_key: without them nothing would listen".into(),
            ));
        }
        // (Port 0 asks the system for any free port: two of those never collide.)
        if self.tls.is_some()
            && !self.tls_only
            && self.tls_listen == self.listen
            && self.listen.port() != 0
        {
            return Err(ConfigError(format!(
                "tls_listen and listen are both {}: give HTTPS its own address, or set tls_only",
                self.listen
            )));
        }
        Ok(())
    }

    /// Reads a TOML configuration file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let c = Self::from_toml(&text)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))?;
        Ok(c.beside(path))
    }

    /// This configuration as read from the file at `path`: a license or certificate
    /// file named by a relative path sits beside it, wherever the server is started
    /// from.
    fn beside(mut self, path: &Path) -> Config {
        self.source = Some(path.to_path_buf());
        let base = path.parent().unwrap_or(Path::new(""));
        if let Some(tls) = self.tls.as_mut() {
            for f in [&mut tls.cert, &mut tls.key] {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        for app in self.apps.values_mut() {
            if let Some(l) = app.license.as_mut().filter(|l| l.is_relative()) {
                *l = base.join(&*l);
            }
        }
        self
    }

    /// Parses TOML configuration text over the defaults.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_sources(Some(text), toml::Table::new())
    }

    /// Reads the configuration file at `path` (if any) with the `SESSIOND__*`
    /// variables of `vars` merged over it ([`env_table`]). A relative file path set
    /// by either is taken beside the configuration file when there is one.
    pub fn from_file_and_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env = env_table(vars)?;
        match path {
            None => Self::from_sources(None, env),
            Some(p) if env.is_empty() => Self::from_file(p),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
                let c = Self::from_sources(Some(&text), env)
                    .map_err(|e| ConfigError(format!("{}: {}", p.display(), e.0)))?;
                Ok(c.beside(p))
            }
        }
    }

    /// The file's text (if any) with `env` merged over it, read over the defaults.
    fn from_sources(text: Option<&str>, env: toml::Table) -> Result<Config, ConfigError> {
        let file: FileConfig = if env.is_empty() {
            let text = text.unwrap_or("");
            serde_path_to_error::deserialize(toml::Deserializer::new(text))
                .map_err(|e| toml_error(text, &key_prefix(e.path()), e.inner()))?
        } else {
            let mut table: toml::Table = match text {
                Some(t) => toml::from_str(t).map_err(|e| toml_error(t, "", &e))?,
                None => toml::Table::new(),
            };
            // Names read lower-case from the environment: one that only differs in case
            // from the file's would quietly make a second app (or operator).
            for section in ["apps", "operators"] {
                let (Some(toml::Value::Table(ours)), Some(toml::Value::Table(theirs))) =
                    (table.get(section), env.get(section))
                else {
                    continue;
                };
                for name in theirs.keys() {
                    if let Some(other) = ours
                        .keys()
                        .find(|o| *o != name && o.to_lowercase() == *name)
                    {
                        return Err(ConfigError(format!(
                            "{section}.{name}: the environment names it in lower case, and \
                             the file has {section}.{other}; rename it in the file to \
                             {name:?} to set it from the environment"
                        )));
                    }
                }
            }
            merge(&mut table, env);
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let (path, e) = (e.path().clone(), e.into_inner());
                ConfigError(format!(
                    "{}{}",
                    key_prefix(&path),
                    without_values(e.message())
                ))
            })?
        };
        let mut c = Config::default();
        if let Some(v) = file.listen {
            c.listen = v;
        }
        c.tls = tls_files(file.tls_cert, file.tls_key)?;
        if let Some(v) = file.tls_listen {
            c.tls_listen = v;
        }
        if let Some(v) = file.tls_only {
            c.tls_only = v;
        }
        c.check_tls()?;
        if let Some(v) = file.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = file.store {
            c.store = v.parse().map_err(|e| ConfigError(format!("store: {e}")))?;
        }
        let mut admin = secrets("admin_token", file.admin_token)?.into_iter();
        c.admin_token = admin.next();
        c.retiring_admin_tokens = admin.collect();
        for (name, mut table) in file.operators {
            if sessiond_core::OperatorName::new(&name).is_none() {
                return Err(ConfigError(format!(
                    "operators.{name}: an operator's name is 1 to {} lower-case letters, digits, '_', '-' or '.'",
                    sessiond_core::OperatorName::MAX
                )));
            }
            let tokens = secrets(&format!("operators.{name}.token"), table.remove("token"))?;
            if tokens.is_empty() {
                return Err(ConfigError(format!(
                    "operators.{name}.token: an operator needs a token"
                )));
            }
            let apps = match table.remove("apps") {
                None => None,
                Some(toml::Value::String(s)) if s == "*" => None,
                Some(toml::Value::Array(a)) => Some(
                    a.into_iter()
                        .map(|v| match v {
                            toml::Value::String(s) => Ok(s),
                            _ => Err(ConfigError(format!(
                                "operators.{name}.apps: a list of app names, or \"*\""
                            ))),
                        })
                        .collect::<Result<BTreeSet<_>, _>>()?,
                ),
                Some(_) => {
                    return Err(ConfigError(format!(
                        "operators.{name}.apps: a list of app names, or \"*\" for every app"
                    )))
                }
            };
            let read_only = match table.remove("read_only") {
                None => false,
                Some(toml::Value::Boolean(b)) => b,
                Some(_) => {
                    return Err(ConfigError(format!(
                        "operators.{name}.read_only: true or false"
                    )))
                }
            };
            if let Some(k) = table.keys().next() {
                return Err(ConfigError(format!(
                    "operators.{name}: unknown key {k}; expected token, apps, read_only"
                )));
            }
            c.operators.insert(
                name,
                OperatorConfig {
                    tokens,
                    apps,
                    read_only,
                },
            );
        }
        if let Some(v) = file.client_opens_per_minute {
            if v == 0 {
                return Err(ConfigError(
                    "client_opens_per_minute must be at least 1".into(),
                ));
            }
            c.client_opens_per_minute = v;
        }
        macro_rules! take {
            ($($f:ident),*) => { $(if let Some(v) = file.$f { c.$f = v; })* };
        }
        take!(
            max_body_bytes,
            header_timeout_s,
            request_timeout_s,
            expiry_interval_ms,
            sse_keepalive_s,
            max_connections,
            max_header_bytes,
            max_streams,
            max_streams_per_app,
            max_streams_per_session,
            console_login_attempts_per_minute,
            console_idle_timeout_s,
            console_lifetime_s
        );
        if c.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError(format!(
                "max_header_bytes must be at least {MIN_HEADER_BYTES}"
            )));
        }
        for (key, v) in [
            ("max_connections", c.max_connections),
            ("max_streams", c.max_streams),
            ("max_streams_per_app", c.max_streams_per_app),
            ("max_streams_per_session", c.max_streams_per_session),
            (
                "console_login_attempts_per_minute",
                c.console_login_attempts_per_minute as usize,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError(format!("{key} must be at least 1")));
            }
        }
        let longest = c.limits.max_duration_s;
        for (key, v) in [
            ("console_idle_timeout_s", c.console_idle_timeout_s),
            ("console_lifetime_s", c.console_lifetime_s),
        ] {
            if v == 0 || v > longest {
                return Err(ConfigError(format!(
                    "{key} must be between 1 and {longest} seconds"
                )));
            }
        }
        c.trusted_proxies = file.trusted_proxies;
        if let Some(l) = file.limits {
            if let Some(v) = l.max_data_bytes {
                c.limits.max_data_bytes = v;
            }
            if let Some(v) = l.max_info_bytes {
                c.limits.max_info_bytes = v;
            }
            if let Some(v) = l.max_privileges {
                c.limits.max_privileges = v;
            }
            if let Some(v) = l.max_page {
                c.limits.max_page = v;
            }
        }
        if let Some(k) = file.license_public_key {
            crate::license::public_key(&k)
                .map_err(|e| ConfigError(format!("license_public_key: {e}")))?;
            c.license_public_key = Some(k);
        }
        for (name, mut table) in file.apps {
            if !valid_app_name(&name) {
                return Err(ConfigError(format!(
                    "apps.{name}: an app name is 1 to 64 letters, digits, '_', '-' or '.'"
                )));
            }
            let mut keys = secrets(&format!("apps.{name}.key"), table.remove("key"))?.into_iter();
            let key = keys.next();
            let retiring_keys: Vec<Secret> = keys.collect();
            let client_keys = secrets(
                &format!("apps.{name}.client_key"),
                table.remove("client_key"),
            )?;
            let license = match table.remove("license") {
                None => None,
                Some(toml::Value::String(p)) => Some(PathBuf::from(p)),
                Some(_) => {
                    return Err(ConfigError(format!(
                        "apps.{name}.license must be a file path"
                    )))
                }
            };
            let hooks = match table.remove("hooks") {
                None => Vec::new(),
                Some(v) => crate::webhooks::parse(&name, v).map_err(ConfigError)?,
            };
            let (mut web, heartbeat_set) = match table.remove("web") {
                None => (crate::web::WebConfig::default(), false),
                Some(v) => {
                    let set = ["heartbeat_interval_s", "heartbeat_grace_s"]
                        .iter()
                        .any(|k| v.get(k).is_some());
                    let web = crate::web::WebConfig::from_toml(&name, v).map_err(ConfigError)?;
                    (web, set)
                }
            };
            let policy: Policy = serde_path_to_error::deserialize(toml::Value::Table(table))
                .map_err(|e| {
                    let at = match e.path().to_string() {
                        p if p == "." => String::new(),
                        p => format!(".{p}"),
                    };
                    let e = e.into_inner();
                    let mut m = without_values(e.message());
                    // `key`, `client_key`, `license`, `web` and `hooks` were taken out above;
                    // serde's list of the keys it expected lacks them.
                    if m.starts_with("unknown field") {
                        m = m.replacen(
                            "expected one of ",
                            "expected one of `key`, `client_key`, `license`, `web`, `hooks`, ",
                            1,
                        );
                    }
                    ConfigError(format!("apps.{name}{at}: {m}"))
                })?;
            policy
                .validate()
                .map_err(|e| ConfigError(format!("apps.{name}: {e}")))?;
            // The pages' heartbeat is each session's own: the app's heartbeat policy
            // must allow what the web table sets, or every page's settings would fail.
            // Where the table sets nothing, the defaults yield to the policy.
            if heartbeat_set {
                policy
                    .check_own_heartbeat(
                        true,
                        Some(web.heartbeat_interval_s),
                        Some(web.heartbeat_grace_s),
                    )
                    .map_err(|e| {
                        ConfigError(format!(
                            "apps.{name}.web: heartbeat_interval_s or heartbeat_grace_s: {e}"
                        ))
                    })?;
            } else {
                if let Some(max) = policy.heartbeat.and_then(|h| h.max_interval_s) {
                    web.heartbeat_interval_s = web.heartbeat_interval_s.min(max);
                }
                if !policy.heartbeat_suspend_allowed() {
                    let grace = policy
                        .heartbeat
                        .map_or(sessiond_core::policy::DEFAULT_HEARTBEAT_GRACE_S, |h| {
                            h.grace_s
                        });
                    web.heartbeat_grace_s = web.heartbeat_grace_s.min(grace);
                }
            }
            c.apps.insert(
                name,
                AppConfig {
                    key,
                    retiring_keys,
                    client_keys,
                    license,
                    policy,
                    web,
                    hooks,
                },
            );
        }
        for (name, op) in &c.operators {
            for app in op.apps.iter().flatten() {
                if !c.apps.contains_key(app) {
                    return Err(ConfigError(format!(
                        "operators.{name}.apps names {app}, which is not an app of this configuration"
                    )));
                }
            }
        }
        c.license_terms()?;
        Ok(c)
    }

    /// What the licensing of this binary ([`Config::licensing`]) makes of the
    /// configuration's key and license files: the key and the licensed apps, or the
    /// setting at fault (a license file and no key; in a vendor build, another key).
    pub fn license_terms(&self) -> Result<Option<Terms>, ConfigError> {
        self.licensing
            .terms(
                self.license_public_key.as_deref(),
                self.apps
                    .iter()
                    .map(|(name, app)| (name.as_str(), app.license.as_deref())),
            )
            .map_err(|e| ConfigError(e.0))
    }

    /// Where the embedded store keeps its files.
    pub fn store_dir(&self) -> PathBuf {
        match &self.store {
            StoreUrl::File(Some(p)) => p.clone(),
            _ => self.data_dir.join("store"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf of `t` (tables walked, arrays and values kept whole), with its path.
    fn leaves(t: &toml::Table, at: &mut Vec<String>, out: &mut Vec<(Vec<String>, toml::Value)>) {
        for (k, v) in t {
            at.push(k.clone());
            match v {
                toml::Value::Table(inner) => leaves(inner, at, out),
                v => out.push((at.clone(), v.clone())),
            }
            at.pop();
        }
    }

    /// The variable that sets the key at `parts` to `v`, as an operator would write it:
    /// upper case, and text bare unless it would read as another TOML value.
    fn var((parts, v): &(Vec<String>, toml::Value)) -> (String, String) {
        let name = parts
            .iter()
            .map(|p| p.to_uppercase())
            .collect::<Vec<_>>()
            .join("__");
        let text = match v {
            toml::Value::String(s) if env_value(s) == *v => s.clone(),
            v => v.to_string(),
        };
        (format!("{ENV_PREFIX}{name}"), text)
    }

    /// A configuration file holding only the key at `parts`, set to `v`.
    fn file_with((parts, v): &(Vec<String>, toml::Value)) -> String {
        let mut t = toml::Table::new();
        t.insert(parts.last().unwrap().clone(), v.clone());
        for p in parts[..parts.len() - 1].iter().rev() {
            let mut outer = toml::Table::new();
            outer.insert(p.clone(), toml::Value::Table(t));
            t = outer;
        }
        toml::to_string(&t).unwrap()
    }

    /// Everything a configuration says, secrets included (their Debug is redacted).
    fn said(c: &Config) -> String {
        let mut secrets: Vec<&str> = c.admin_token.iter().map(Secret::expose).collect();
        secrets.extend(c.retiring_admin_tokens.iter().map(Secret::expose));
        for o in c.operators.values() {
            secrets.extend(o.tokens.iter().map(Secret::expose));
        }
        for a in c.apps.values() {
            secrets.extend(a.key.iter().map(Secret::expose));
            secrets.extend(a.retiring_keys.iter().map(Secret::expose));
            secrets.extend(a.client_keys.iter().map(Secret::expose));
        }
        format!("{c:?} {secrets:?}")
    }

    /// A file's error without its location (the environment has none).
    fn unplaced(e: ConfigError) -> String {
        match e.0.split_once(": ") {
            Some((at, rest)) if at.starts_with("line ") => rest.to_string(),
            _ => e.0,
        }
    }

    #[test]
    fn every_key_of_the_example_reads_the_same_from_the_environment() {
        let text = include_str!("../../../sessiond.example.toml");
        let mut all = Vec::new();
        leaves(&toml::from_str(text).unwrap(), &mut Vec::new(), &mut all);
        assert!(all.len() >= 30, "{} keys", all.len());
        for key in &all {
            let from_file = Config::from_toml(&file_with(key));
            let from_env = Config::from_file_and_env(None, [var(key)]);
            match (from_file, from_env) {
                (Ok(f), Ok(e)) => assert_eq!(said(&f), said(&e), "{:?}", var(key)),
                // Some keys need another beside them: the same refusal either way.
                (Err(f), Err(e)) => assert_eq!(unplaced(f), e.0, "{:?}", var(key)),
                (f, e) => panic!("{:?}: file {f:?}, environment {e:?}", var(key)),
            }
        }
        let whole = Config::from_toml(text).unwrap();
        let env = Config::from_file_and_env(None, all.iter().map(var)).unwrap();
        assert_eq!(said(&whole), said(&env), "every key at once");
    }

    #[test]
    fn values_a_key_did_not_expect_are_never_repeated() {
        assert_eq!(
            without_values(r#"invalid type: string "s3cr\"et", expected a map"#),
            "invalid type: a string, expected a map"
        );
        assert_eq!(without_values("expected u32"), "expected u32");
        let token = "alice-token-0123456789ab";
        for text in [
            format!("[operators]\nalice = \"{token}\"\n"),
            format!("[apps]\nshop = \"{token}\"\n"),
        ] {
            let e = Config::from_toml(&text).unwrap_err();
            assert!(!e.0.contains(token), "{e}");
        }
        let e = Config::from_file_and_env(
            None,
            [("SESSIOND__OPERATORS__ALICE".to_string(), token.to_string())],
        )
        .unwrap_err();
        assert!(!e.0.contains(token), "{e}");
    }

    #[test]
    fn a_name_differing_only_in_case_from_the_files_is_refused() {
        let dir = std::env::temp_dir().join(format!("sessiond-case-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sessiond.toml");
        std::fs::write(&path, "[apps.Gestan]\nseats = 10\n").unwrap();
        let e = Config::from_file_and_env(
            Some(&path),
            [("SESSIOND__APPS__GESTAN__SEATS".to_string(), "3".to_string())],
        )
        .unwrap_err();
        assert!(e.0.contains("apps.Gestan"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_value_is_refused_with_the_same_message_either_way() {
        let bad = [
            ("listen", toml::Value::String("nowhere".into())),
            ("max_connections", toml::Value::Integer(0)),
            ("max_page", toml::Value::Integer(5)),
            ("limits.max_page", toml::Value::Boolean(true)),
            ("store", toml::Value::String("ftp://x".into())),
            ("apps.gestan.seats", toml::Value::String("ten".into())),
            (
                "apps.gestan.on_full",
                toml::Value::String("sometimes".into()),
            ),
            ("apps.gestan.heartbeat.interval_s", toml::Value::Integer(-5)),
            ("apps.gestan.key", toml::Value::String("short".into())),
            ("operators.ops.apps", toml::Value::Integer(3)),
        ];
        for (path, v) in bad {
            let key = (path.split('.').map(String::from).collect::<Vec<_>>(), v);
            let f = Config::from_toml(&file_with(&key)).expect_err(path);
            let e = Config::from_file_and_env(None, [var(&key)]).expect_err(path);
            assert_eq!(unplaced(f), e.0, "{path}");
        }
    }

    #[test]
    fn the_environment_goes_over_the_file_key_by_key() {
        let dir = std::env::temp_dir().join(format!("sessiond-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sessiond.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[apps.desk]\nseats = 10\nmax_per_user = 2\n",
        )
        .unwrap();
        let c = Config::from_file_and_env(
            Some(&path),
            [
                ("SESSIOND__APPS__DESK__SEATS".to_string(), "3".to_string()),
                (
                    "SESSIOND__apps__desk__heartbeat__interval_s".into(),
                    "30".into(),
                ),
                ("SESSIOND__STORE".into(), "memory:".into()),
                (
                    "SESSIOND_LISTEN".into(),
                    "not ours: a flag's variable".into(),
                ),
                ("OTHER__LISTEN".into(), "ignored".into()),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:1");
        assert_eq!(c.store, StoreUrl::Memory);
        let desk = &c.apps["desk"].policy;
        assert_eq!((desk.seats, desk.max_per_user), (Some(3), Some(2)));
        assert_eq!(desk.heartbeat.map(|h| h.interval_s), Some(30));
        assert_eq!(c.source.as_deref(), Some(path.as_path()));
        // Names that cannot be read say so, naming the variable.
        for (name, why) in [
            ("SESSIOND__APPS____SEATS", "none is empty"),
            ("SESSIOND__", "none is empty"),
        ] {
            let e =
                Config::from_file_and_env(None, [(name.to_string(), "1".to_string())]).unwrap_err();
            assert!(e.0.starts_with(name) && e.0.contains(why), "{e}");
        }
        let e = Config::from_file_and_env(
            None,
            [
                ("SESSIOND__LIMITS".to_string(), "3".to_string()),
                ("SESSIOND__LIMITS__MAX_PAGE".to_string(), "30".to_string()),
            ],
        )
        .unwrap_err();
        assert!(e.0.contains("limits"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_config_has_the_default_app() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.apps.contains_key(DEFAULT_APP));
        assert_eq!(c.store, StoreUrl::File(None));
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../../sessiond.example.toml");
        let c = Config::from_toml(text).unwrap();
        let gestan = &c.apps["gestan"];
        assert_eq!(gestan.policy.seats, Some(10));
        assert!(gestan.key.is_some());
        assert_eq!(c.apps["shop"].policy.cookie_name, "4DSID_shop");
    }

    #[test]
    fn a_relative_license_path_is_beside_the_config_file() {
        let dir = std::env::temp_dir().join(format!("sessiond-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sessiond.toml");
        std::fs::write(
            &path,
            format!(
                "license_public_key = \"{}\"\n[apps.a]\nlicense = \"a.license\"\n\
                 [apps.b]\nlicense = \"/etc/b.license\"\n",
                crate::license::keygen().1
            ),
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(
            c.apps["a"].license.as_deref(),
            Some(dir.join("a.license").as_path())
        );
        assert_eq!(
            c.apps["b"].license.as_deref(),
            Some(Path::new("/etc/b.license"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_pages_heartbeat_keeps_to_the_apps_heartbeat_policy() {
        let seats = "[apps.desk]\nseats = 5\nheartbeat = { interval_s = 30, grace_s = 20, max_interval_s = 120 }\n";
        // Set in the web table beyond the policy: refused, naming both.
        let e = Config::from_toml(&format!(
            "{seats}[apps.desk.web]\nheartbeat_interval_s = 300\n"
        ))
        .unwrap_err();
        assert!(
            e.0.starts_with("apps.desk.web: heartbeat_interval_s"),
            "{e}"
        );
        assert!(e.0.contains("max_interval_s"), "{e}");
        let e = Config::from_toml(&format!("{seats}[apps.desk.web]\nheartbeat_grace_s = 60\n"))
            .unwrap_err();
        assert!(e.0.contains("grace_s"), "{e}");
        // Not set: the defaults yield to the policy.
        let c = Config::from_toml(seats).unwrap();
        assert_eq!(c.apps["desk"].web.heartbeat_interval_s, 120);
        assert_eq!(c.apps["desk"].web.heartbeat_grace_s, 20);
        let c = Config::from_toml(&format!(
            "{seats}[apps.desk.web]\nheartbeat_interval_s = 60\nheartbeat_grace_s = 10\n"
        ))
        .unwrap();
        assert_eq!(c.apps["desk"].web.heartbeat_interval_s, 60);
    }

    #[test]
    fn a_misspelt_app_key_lists_every_key_an_app_takes() {
        let e = Config::from_toml("[apps.x]\nkey2 = \"k\"\n").unwrap_err();
        assert!(e.0.contains("unknown field `key2`"), "{e}");
        assert!(
            e.0.contains("`key`, `client_key`, `license`, `web`, `hooks`, `idle_timeout_s`"),
            "{e}"
        );
    }

    #[test]
    fn credentials_may_list_retiring_secrets_and_operators_are_scoped() {
        let c = Config::from_toml(
            r#"
            admin_token = ["admin-new-0123456789", "admin-old-0123456789"]
            [operators.alice]
            token = "alice-token-0123456789"
            apps = ["shop"]
            read_only = true
            [operators.bob]
            token = ["bob-new-0123456789ab", "bob-old-0123456789ab"]
            [apps.shop]
            key = ["shop-new-0123456789", "shop-old-0123456789"]
            client_key = "shop-client-0123456789"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.admin_token.as_ref().unwrap().expose(),
            "admin-new-0123456789"
        );
        assert_eq!(c.retiring_admin_tokens.len(), 1);
        let shop = &c.apps["shop"];
        assert_eq!(shop.key.as_ref().unwrap().expose(), "shop-new-0123456789");
        assert_eq!(shop.retiring_keys.len(), 1);
        assert_eq!(shop.client_keys.len(), 1);
        let alice = &c.operators["alice"];
        assert!(alice.read_only);
        assert_eq!(alice.apps.as_ref().unwrap().len(), 1);
        assert!(c.operators["bob"].apps.is_none());
        assert_eq!(c.operators["bob"].tokens.len(), 2);

        let creds =
            crate::credentials::Credentials::build(&c, c.admin_token.as_ref().unwrap()).unwrap();
        use crate::credentials::Caller;
        assert_eq!(creds.caller("admin-old-0123456789"), Some(&Caller::Admin));
        assert_eq!(
            creds.caller("shop-old-0123456789"),
            Some(&Caller::App("shop".into()))
        );
        assert_eq!(
            creds.caller("shop-client-0123456789"),
            Some(&Caller::Client("shop".into()))
        );
        assert!(matches!(
            creds.caller("bob-old-0123456789ab"),
            Some(Caller::Operator(op)) if op.name.as_str() == "bob" && !op.read_only
        ));
        assert_eq!(
            creds.app_key("shop").unwrap().expose(),
            "shop-new-0123456789"
        );
        assert_eq!(creds.admin().expose(), "admin-new-0123456789");
        assert_eq!(creds.caller("nothing-0123456789"), None);
    }

    #[test]
    fn a_toml_error_says_where_but_never_shows_the_line() {
        for text in [
            "admin_tokens = [\"secret-value-0123456789\"]\n",
            "admin_token = \"secret-value-0123456789\n",
            "store = \"postgres://u:secret-value-0123456789@db/x\\q\"\n",
        ] {
            let e = Config::from_toml(text).unwrap_err();
            assert!(!e.0.contains("secret-value"), "{e}");
            assert!(e.0.contains("line 1"), "{e}");
        }
    }

    #[test]
    fn bad_credential_settings_are_refused_by_name() {
        for (text, want) in [
            (
                "[operators.Alice]\ntoken = \"alice-token-0123456789\"",
                "operators.Alice",
            ),
            ("[operators.alice]\napps = \"*\"", "operators.alice.token"),
            (
                "[operators.alice]\ntoken = \"alice-token-0123456789\"\napps = [\"nope\"]",
                "not an app of this configuration",
            ),
            (
                "[operators.alice]\ntoken = \"alice-token-0123456789\"\nscope = 1",
                "unknown key scope",
            ),
            ("admin_token = []", "admin_token"),
            ("admin_token = [\"short\"]", "admin_token"),
            ("[apps.x]\nclient_key = 5", "apps.x.client_key"),
            ("client_opens_per_minute = 0", "client_opens_per_minute"),
        ] {
            let e = Config::from_toml(text).unwrap_err();
            assert!(e.0.contains(want), "{text}: {e}");
        }
        // The same secret twice, in two roles: refused when the table is built.
        let c = Config::from_toml(
            "[operators.alice]\ntoken = \"same-secret-0123456789\"\n[apps.x]\nkey = \"same-secret-0123456789\"",
        )
        .unwrap();
        let e = crate::credentials::Credentials::build(&c, &Secret::new("admin-0123456789abcdef"))
            .unwrap_err();
        assert!(e.0.contains("used twice"), "{e}");
    }

    #[test]
    fn a_license_file_needs_the_configured_key_in_the_ordinary_build() {
        let e = Config::from_toml("[apps.x]\nlicense = \"x.license\"\n").unwrap_err();
        assert_eq!(
            e.0,
            "apps.x.license needs license_public_key (the key printed by `sessiond license keygen`)"
        );
    }

    #[test]
    fn zero_seats_is_refused() {
        let e = Config::from_toml("[apps.x]\nseats = 0\n").unwrap_err();
        assert!(e.0.contains("seats must be at least 1"), "{e}");
    }

    #[test]
    fn bad_input_names_the_key() {
        let e = Config::from_toml("[apps.x]\nidle_timeout_s = 0\n").unwrap_err();
        assert!(e.0.contains("apps.x"), "{e}");
        let e = Config::from_toml("[apps.x]\nseatz = 3\n").unwrap_err();
        assert!(e.0.contains("seatz"), "{e}");
        let e = Config::from_toml("bogus = 1\n").unwrap_err();
        assert!(e.0.contains("bogus"), "{e}");
        let e = Config::from_toml("[apps.x]\nkey = \"short\"\n").unwrap_err();
        assert!(e.0.contains("16"), "{e}");
    }

    #[test]
    fn store_urls_parse_with_their_namespace() {
        assert_eq!(
            "postgres://postgres@127.0.0.1/test?namespace=node_a&sslmode=disable"
                .parse::<StoreUrl>(),
            Ok(StoreUrl::Postgres {
                url: "postgres://postgres@127.0.0.1/test?sslmode=disable".into(),
                namespace: Some("node_a".into()),
                read_cache_ms: None,
            })
        );
        assert_eq!(
            "postgres://u@db/app?read_cache_ms=1000&namespace=crm".parse::<StoreUrl>(),
            Ok(StoreUrl::Postgres {
                url: "postgres://u@db/app".into(),
                namespace: Some("crm".into()),
                read_cache_ms: Some(1000),
            })
        );
        assert_eq!(
            "redis://cache:6379/0?read_cache_ms=500".parse::<StoreUrl>(),
            Ok(StoreUrl::Redis {
                url: "redis://cache:6379/0".into(),
                namespace: None,
                read_cache_ms: Some(500),
            })
        );
        for bad in ["0", "-1", "1s", "600000", ""] {
            let url = format!("postgres://u@db/app?read_cache_ms={bad}");
            let e = url.parse::<StoreUrl>().unwrap_err();
            assert!(e.contains("read_cache_ms"), "{e}");
        }
        assert_eq!(
            "redis://127.0.0.1:6379".parse::<StoreUrl>(),
            Ok(StoreUrl::Redis {
                url: "redis://127.0.0.1:6379".into(),
                namespace: None,
                read_cache_ms: None,
            })
        );
        assert_eq!(
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7000?namespace=shop".parse::<StoreUrl>(),
            Ok(StoreUrl::Redis {
                url: "redis+cluster://10.0.0.1:7000,10.0.0.2:7000".into(),
                namespace: Some("shop".into()),
                read_cache_ms: None,
            })
        );
        assert!("mysql://x".parse::<StoreUrl>().is_err());
    }

    #[test]
    fn tls_store_urls_pass_their_settings_on() {
        assert_eq!(
            "rediss://:pw@cache:6380/1?namespace=shop&ca_cert=/etc/ca.pem".parse::<StoreUrl>(),
            Ok(StoreUrl::Redis {
                url: "rediss://:pw@cache:6380/1?ca_cert=/etc/ca.pem".into(),
                namespace: Some("shop".into()),
                read_cache_ms: None,
            })
        );
        // A fragment is no part of the namespace: the store refuses #insecure.
        assert_eq!(
            "rediss://cache/?namespace=shop#insecure".parse::<StoreUrl>(),
            Ok(StoreUrl::Redis {
                url: "rediss://cache/#insecure".into(),
                namespace: Some("shop".into()),
                read_cache_ms: None,
            })
        );
        assert_eq!(
            "postgres://u@db/app?sslmode=verify-full&namespace=crm&sslrootcert=/ca.pem"
                .parse::<StoreUrl>(),
            Ok(StoreUrl::Postgres {
                url: "postgres://u@db/app?sslmode=verify-full&sslrootcert=/ca.pem".into(),
                namespace: Some("crm".into()),
                read_cache_ms: None,
            })
        );
    }

    #[test]
    fn store_passwords_are_never_shown() {
        let url: StoreUrl = "rediss://user:s3cret@cache:6380/0?ca_cert=/ca.pem"
            .parse()
            .unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("user:<redacted>@cache:6380/0"), "{shown}");
        let e = "mysql://root:s3cret@db/x".parse::<StoreUrl>().unwrap_err();
        assert!(
            !e.contains("s3cret") && e.contains("root:<redacted>@db"),
            "{e}"
        );
        assert_eq!(
            redact_password("host=db password=s3cret user=u"),
            "host=db password=<redacted> user=u"
        );
        assert_eq!(redact_password("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(
            redact_password("postgres://u@db/x?a=b@c"),
            "postgres://u@db/x?a=b@c"
        );
        // A password with an unencoded '?', '/' or '#': still hidden.
        for url in [
            "postgres://sessiond:Xy?9z@db/sessions?sslmode=require",
            "postgres://sessiond:a/b#c@db/sessions",
            "redis://:pw?x@cache:6379",
            "postgres://sessiond@db/sessions?password=s3cret&sslmode=require",
            "postgres://sessiond@db/sessions?sslmode=require&PASSWORD=s3cret",
        ] {
            let shown = redact_password(url);
            for secret in ["Xy?9z", "a/b#c", "pw?x", "s3cret"] {
                assert!(!shown.contains(secret), "{url} -> {shown}");
            }
            assert!(shown.contains("<redacted>"), "{url} -> {shown}");
        }
    }

    #[test]
    fn one_rule_for_every_secret() {
        for bad in [
            "x",
            "fifteen-chars-x",
            "sixteen chars xx",
            "sixteen-chars-\u{e9}\u{e9}",
        ] {
            let e = Config::from_toml(&format!("admin_token = {bad:?}\n")).unwrap_err();
            assert!(
                e.0.contains("admin_token must be 16 to 1024"),
                "{bad:?}: {e}"
            );
            let e = Config::from_toml(&format!("[apps.x]\nkey = {bad:?}\n")).unwrap_err();
            assert!(
                e.0.contains("apps.x.key must be 16 to 1024"),
                "{bad:?}: {e}"
            );
        }
        let long = "k".repeat(MAX_SECRET_LEN + 1);
        assert!(check_secret("t", &long).is_err());
        assert!(check_secret("t", "sixteen-chars-ok").is_ok());
        let c = Config::from_toml("admin_token = \"sixteen-chars-ok\"\n").unwrap();
        assert_eq!(c.admin_token.unwrap().expose(), "sixteen-chars-ok");
    }

    #[test]
    fn limits_have_defaults_and_refuse_zero() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.max_streams_per_session, DEFAULT_MAX_STREAMS_PER_SESSION);
        let e = Config::from_toml("max_streams = 0\n").unwrap_err();
        assert!(e.0.contains("max_streams must be at least 1"), "{e}");
        let e = Config::from_toml("max_header_bytes = 100\n").unwrap_err();
        assert!(e.0.contains("8192"), "{e}");
    }

    #[test]
    fn console_timeouts_have_defaults_and_bounds() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.console_idle_timeout_s, DEFAULT_CONSOLE_IDLE_TIMEOUT_S);
        assert_eq!(c.console_lifetime_s, DEFAULT_CONSOLE_LIFETIME_S);
        let c =
            Config::from_toml("console_idle_timeout_s = 60\nconsole_lifetime_s = 600\n").unwrap();
        assert_eq!((c.console_idle_timeout_s, c.console_lifetime_s), (60, 600));
        let e = Config::from_toml("console_idle_timeout_s = 0\n").unwrap_err();
        assert!(
            e.0.contains("console_idle_timeout_s must be between 1 and"),
            "{e}"
        );
        let e = Config::from_toml("console_lifetime_s = 4000000000\n").unwrap_err();
        assert!(
            e.0.contains("console_lifetime_s must be between 1 and"),
            "{e}"
        );
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2hunter2hunter2")),
            "Secret(<redacted>)"
        );
    }
}
