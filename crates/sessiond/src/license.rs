//! Signed license files: Ed25519 keys, issuing, verifying, and the per-app license
//! state the server keeps (reloaded when the file changes, no restart needed).
//!
//! A license file is text, readable and diffable:
//!
//! ```text
//! # sessiond license
//! {"app":"gestan","expires":"2027-12-31","issued":"2026-11-21","licensee":"ACME","seats":10}
//! ed25519:9f3a…(128 hex digits)
//! ```
//!
//! The signature covers the exact bytes of the JSON line, so any change to it (seats,
//! date, app) breaks the signature. `expires` is the last valid day, in UTC.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sessiond_core::{Date, Timestamp};

/// What a license grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct License {
    /// The app it is for.
    pub app: String,
    /// Last valid day, `YYYY-MM-DD` (UTC).
    pub expires: String,
    /// Day of issue.
    pub issued: String,
    /// Who it is for.
    pub licensee: String,
    /// Concurrent seats.
    pub seats: u32,
}

/// Why a license is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    /// The file cannot be read.
    #[error("cannot read the license file {path}: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Not a license file, or a signature that does not match (forged or tampered).
    #[error("the license is invalid: {0}")]
    Invalid(String),
    /// A valid license for another app.
    #[error("the license is for app {licensed:?}, not {app:?}")]
    WrongApp {
        /// The app it names.
        licensed: String,
        /// The app it was given to.
        app: String,
    },
    /// An app this vendor build licenses, whose configuration names no license file.
    #[error("app {app:?} opens sessions only under a license (this is a vendor build) and its configuration names no license file: set apps.{app}.license to the license file and restart")]
    NotConfigured {
        /// The app.
        app: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new Ed25519 key pair from the OS CSPRNG: (secret key hex, public key hex).
pub fn keygen() -> (String, String) {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the OS random number generator is unavailable");
    let key = SigningKey::from_bytes(&seed);
    (hex(&seed), hex(key.verifying_key().as_bytes()))
}

/// Parses a public key (64 hex digits, or a file holding them).
pub fn public_key(text: &str) -> Result<VerifyingKey, LicenseError> {
    let bytes = unhex::<32>(text)
        .ok_or_else(|| LicenseError::Invalid("the public key is not 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| LicenseError::Invalid("the public key is not an Ed25519 key".into()))
}

/// Signs `license` with the secret key (64 hex digits); returns the file's text.
pub fn issue(license: &License, secret_hex: &str) -> Result<String, LicenseError> {
    let seed = unhex::<32>(secret_hex)
        .ok_or_else(|| LicenseError::Invalid("the signing key is not 64 hex digits".into()))?;
    if parse_date(&license.expires).is_none() {
        return Err(LicenseError::Invalid(format!(
            "expires {:?} is not a YYYY-MM-DD date",
            license.expires
        )));
    }
    let key = SigningKey::from_bytes(&seed);
    let payload =
        serde_json::to_string(license).map_err(|e| LicenseError::Invalid(e.to_string()))?;
    let sig = key.sign(payload.as_bytes());
    Ok(format!(
        "# sessiond license\n{payload}\ned25519:{}\n",
        hex(&sig.to_bytes())
    ))
}

/// Verifies a license file's text with `key`; the license must be for `app` when given.
pub fn verify(text: &str, key: &VerifyingKey, app: Option<&str>) -> Result<License, LicenseError> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (Some(payload), Some(sig), None) = (lines.next(), lines.next(), lines.next()) else {
        return Err(LicenseError::Invalid(
            "expected a JSON line and a signature line".into(),
        ));
    };
    let sig = sig
        .strip_prefix("ed25519:")
        .and_then(unhex::<64>)
        .ok_or_else(|| {
            LicenseError::Invalid("the signature line is not ed25519:<128 hex digits>".into())
        })?;
    key.verify(payload.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| {
            LicenseError::Invalid(
                "the signature does not match (forged, tampered or signed with another key)".into(),
            )
        })?;
    let license: License = serde_json::from_str(payload)
        .map_err(|e| LicenseError::Invalid(format!("the license data is malformed: {e}")))?;
    if parse_date(&license.expires).is_none() {
        return Err(LicenseError::Invalid("the expiry date is malformed".into()));
    }
    if let Some(app) = app {
        if license.app != app {
            return Err(LicenseError::WrongApp {
                licensed: license.app,
                app: app.to_string(),
            });
        }
    }
    Ok(license)
}

/// `YYYY-MM-DD` to the first millisecond of the following day (UTC): the license is
/// valid while `now` is before it. `None` for text that is not a date of the calendar
/// ([`sessiond_core::Date`] decides) or a day before 1970.
pub fn parse_date(s: &str) -> Option<Timestamp> {
    let last_day: Date = s.parse().ok()?;
    if last_day.year() < 1970 {
        return None;
    }
    Date::from_days(last_day.days() + 1)?.start()
}

/// Today's date in UTC, `YYYY-MM-DD`.
pub fn today() -> String {
    use sessiond_core::Clock;
    Date::of(sessiond_core::SystemClock.now()).to_string()
}

/// The state of one app's license as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseState {
    /// Valid: opens may proceed up to its seats.
    Valid(License),
    /// Valid signature, but past its last day.
    Expired(License),
    /// Unusable (unreadable, forged, tampered, wrong app).
    Invalid(LicenseError),
}

impl LicenseState {
    /// The state of `path` for `app` at `now`.
    pub fn load(path: &Path, key: &VerifyingKey, app: &str, now: Timestamp) -> LicenseState {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return LicenseState::Invalid(LicenseError::Unreadable {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        match verify(&text, key, Some(app)) {
            Ok(l) if parse_date(&l.expires).is_some_and(|end| now < end) => LicenseState::Valid(l),
            Ok(l) => LicenseState::Expired(l),
            Err(e) => LicenseState::Invalid(e),
        }
    }

    /// The JSON shown in `GET /v1/apps/{app}`.
    pub fn view(&self) -> serde_json::Value {
        match self {
            LicenseState::Valid(l) => {
                serde_json::json!({"status": "valid", "licensee": l.licensee, "expires": l.expires, "seats": l.seats, "issued": l.issued})
            }
            LicenseState::Expired(l) => {
                serde_json::json!({"status": "expired", "licensee": l.licensee, "expires": l.expires, "seats": l.seats, "issued": l.issued})
            }
            LicenseState::Invalid(e) => {
                serde_json::json!({"status": "invalid", "message": e.to_string()})
            }
        }
    }
}

/// A license file the server watches for one app.
#[derive(Debug, Clone)]
pub struct WatchedLicense {
    /// The app.
    pub app: String,
    /// The file; none for a pinned app whose configuration names none
    /// ([`LicenseError::NotConfigured`]).
    pub path: Option<PathBuf>,
    /// Its modification time and size when last loaded.
    pub stamp: Option<(SystemTime, u64)>,
    /// The state when last loaded.
    pub state: LicenseState,
}

impl WatchedLicense {
    /// Reloads the file if it changed (or `force`); returns whether the state changed.
    pub fn refresh(&mut self, key: &VerifyingKey, now: Timestamp, force: bool) -> bool {
        let Some(path) = &self.path else {
            let state = LicenseState::Invalid(LicenseError::NotConfigured {
                app: self.app.clone(),
            });
            let changed = state != self.state;
            self.state = state;
            return changed;
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if !force && stamp == self.stamp && stamp.is_some() {
            // Same file: only the date can change its state.
            if let LicenseState::Valid(l) = &self.state {
                if parse_date(&l.expires).is_some_and(|end| now >= end) {
                    self.state = LicenseState::Expired(l.clone());
                    return true;
                }
            }
            return false;
        }
        self.stamp = stamp;
        let state = LicenseState::load(path, key, &self.app, now);
        let changed = state != self.state;
        self.state = state;
        changed
    }
}

/// Every licensed app of a server ([`crate::licensing::Terms`]): their states,
/// refreshed from disk, and the seats they give applied to the apps' policies.
pub struct Licenses {
    key: Option<VerifyingKey>,
    apps: std::sync::Mutex<std::collections::HashMap<String, WatchedLicense>>,
    /// Each app's policy as configured, before a license sets its seats (replaced by
    /// a configuration reload, [`Licenses::apply_config`]).
    base: std::sync::Mutex<std::collections::HashMap<String, sessiond_core::Policy>>,
}

impl Licenses {
    /// The licenses of `terms` (from [`crate::Config::license_terms`]), loaded now and
    /// applied to `manager`; `config` gives the apps' policies.
    pub fn new(
        terms: Option<crate::licensing::Terms>,
        config: &crate::Config,
        manager: &sessiond_core::Manager,
    ) -> Licenses {
        let key = terms.as_ref().map(|t| t.key);
        let mut apps = std::collections::HashMap::new();
        let mut base = std::collections::HashMap::new();
        for (name, path) in terms.into_iter().flat_map(|t| t.apps) {
            let Some(app) = config.apps.get(&name) else {
                continue;
            };
            base.insert(name.clone(), app.policy.clone());
            apps.insert(
                name.clone(),
                WatchedLicense {
                    app: name,
                    path,
                    stamp: None,
                    state: LicenseState::Invalid(LicenseError::Invalid("not loaded yet".into())),
                },
            );
        }
        let l = Licenses {
            key,
            apps: std::sync::Mutex::new(apps),
            base: std::sync::Mutex::new(base),
        };
        l.refresh(manager, true);
        l
    }

    /// Whether any app is licensed (then [`Licenses::refresh`] should run periodically).
    pub fn any(&self) -> bool {
        !self
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Whether `app` is one whose license this server watches (its licensed apps at
    /// start: which apps are licensed takes a restart to change).
    pub fn watches(&self, app: &str) -> bool {
        self.apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(app)
    }

    /// Applies to `manager` the policy the configuration now gives `app`: for a
    /// licensed app with the license's seats (and `policy` becomes the base the
    /// license's seats are applied to from now on), any other app's as it is. Done
    /// under the licenses' lock, so a license refresh cannot slip its seats in between
    /// and be overwritten. Returns whether the app's policy changed, and whether it
    /// was new.
    pub fn apply_config(
        &self,
        manager: &sessiond_core::Manager,
        app: &str,
        policy: sessiond_core::Policy,
    ) -> sessiond_core::Result<Option<bool>> {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let policy = match apps.get(app) {
            None => policy,
            Some(w) => {
                self.base
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(app.to_string(), policy.clone());
                match &w.state {
                    LicenseState::Valid(l) => sessiond_core::Policy {
                        seats: Some(l.seats),
                        ..policy
                    },
                    _ => policy,
                }
            }
        };
        let current = manager.policy(app).ok();
        if current.as_deref() == Some(&policy) {
            return Ok(None);
        }
        manager.set_policy(app, policy)?;
        Ok(Some(current.is_none()))
    }

    /// Reloads changed files; applies new seats; logs what changed.
    pub fn refresh(&self, manager: &sessiond_core::Manager, force: bool) {
        let Some(key) = &self.key else { return };
        let now = manager.now();
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        for (name, w) in apps.iter_mut() {
            if !w.refresh(key, now, force) {
                continue;
            }
            match &w.state {
                LicenseState::Valid(l) => {
                    tracing::info!(app = %name, licensee = %l.licensee, seats = l.seats, expires = %l.expires, "license in force");
                    let base = self.base.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(base) = base.get(name) {
                        let policy = sessiond_core::Policy {
                            seats: Some(l.seats),
                            ..base.clone()
                        };
                        if let Err(e) = manager.set_policy(name, policy) {
                            tracing::error!(app = %name, error = %e, "cannot apply the license's seats");
                        }
                    }
                }
                LicenseState::Expired(l) => {
                    tracing::warn!(app = %name, expires = %l.expires, "license expired: opens are refused")
                }
                LicenseState::Invalid(e) => {
                    tracing::warn!(app = %name, error = %e, "license invalid: opens are refused")
                }
            }
        }
    }

    /// Refuses opens in an app whose license is expired or invalid.
    pub fn check_open(&self, app: &str) -> Result<(), crate::error::ApiError> {
        use axum::http::StatusCode;
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = apps.get(app) else {
            return Ok(());
        };
        match &w.state {
            LicenseState::Valid(_) => Ok(()),
            // Every state but NotConfigured comes from a file that was read, so these
            // messages have a path to show.
            LicenseState::Expired(l) => Err(crate::error::ApiError::new(
                StatusCode::FORBIDDEN,
                "license_expired",
                format!(
                    "the license of app {app:?} for {} expired after {}; install a renewed license at {} (it is picked up without a restart)",
                    l.licensee,
                    l.expires,
                    shown(&w.path)
                ),
            )),
            LicenseState::Invalid(e @ LicenseError::NotConfigured { .. }) => Err(
                crate::error::ApiError::new(StatusCode::FORBIDDEN, "license_invalid", e.to_string()),
            ),
            LicenseState::Invalid(e) => Err(crate::error::ApiError::new(
                StatusCode::FORBIDDEN,
                "license_invalid",
                format!("{e}; install a valid license for app {app:?} at {} (it is picked up without a restart)", shown(&w.path)),
            )),
        }
    }

    /// The license part of an app's view, if the app is licensed.
    pub fn view(&self, app: &str) -> Option<serde_json::Value> {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        apps.get(app).map(|w| w.state.view())
    }
}

/// A license file's path in a message.
fn shown(path: &Option<PathBuf>) -> String {
    path.as_deref()
        .map_or_else(|| "(no file)".into(), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn license(app: &str, expires: &str) -> License {
        License {
            app: app.into(),
            expires: expires.into(),
            issued: "2026-11-21".into(),
            licensee: "ACME".into(),
            seats: 3,
        }
    }

    #[test]
    fn issue_then_verify_and_catch_forgery_tampering_and_wrong_app() {
        let (secret, public) = keygen();
        let key = public_key(&public).unwrap();
        let text = issue(&license("gestan", "2099-12-31"), &secret).unwrap();
        assert_eq!(verify(&text, &key, Some("gestan")).unwrap().seats, 3);
        let tampered = text.replace("\"seats\":3", "\"seats\":30");
        assert!(matches!(
            verify(&tampered, &key, None),
            Err(LicenseError::Invalid(_))
        ));
        let (other_secret, _) = keygen();
        let forged = issue(&license("gestan", "2099-12-31"), &other_secret).unwrap();
        assert!(matches!(
            verify(&forged, &key, None),
            Err(LicenseError::Invalid(_))
        ));
        assert!(matches!(
            verify(&text, &key, Some("shop")),
            Err(LicenseError::WrongApp { .. })
        ));
        assert!(matches!(
            verify("garbage", &key, None),
            Err(LicenseError::Invalid(_))
        ));
    }

    #[test]
    fn dates_end_at_midnight_utc_after_the_last_day() {
        assert_eq!(parse_date("1970-01-01"), Some(Timestamp(86_400_000)));
        assert_eq!(
            parse_date("2026-11-21").map(|t| t.to_rfc3339()),
            Some("2026-11-22T00:00:00.000Z".into())
        );
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("2026-01-00"), None);
        assert_eq!(parse_date("tomorrow"), None);
        assert_eq!(parse_date("1969-12-31"), None);
        assert_eq!(parse_date("2026-+1-21"), None);
        // Days that no calendar has.
        assert_eq!(parse_date("2027-02-30"), None);
        assert_eq!(parse_date("2027-02-29"), None);
        assert_eq!(parse_date("2027-04-31"), None);
        assert_eq!(parse_date("2100-02-29"), None);
        assert_eq!(
            parse_date("2028-02-29").map(|t| t.to_rfc3339()),
            Some("2028-03-01T00:00:00.000Z".into())
        );
        assert_eq!(
            parse_date("2000-02-29").map(|t| t.to_rfc3339()),
            Some("2000-03-01T00:00:00.000Z".into())
        );
        assert_eq!(
            parse_date("2027-12-31").map(|t| t.to_rfc3339()),
            Some("2028-01-01T00:00:00.000Z".into())
        );
    }

    #[test]
    fn state_follows_the_date() {
        let (secret, public) = keygen();
        let key = public_key(&public).unwrap();
        let dir = std::env::temp_dir().join(format!("sessiond-license-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.txt");
        std::fs::write(
            &path,
            issue(&license("gestan", "2026-11-21"), &secret).unwrap(),
        )
        .unwrap();
        let before = parse_date("2026-11-21").unwrap().0 - 1;
        assert!(matches!(
            LicenseState::load(&path, &key, "gestan", Timestamp(before)),
            LicenseState::Valid(_)
        ));
        assert!(matches!(
            LicenseState::load(&path, &key, "gestan", Timestamp(before + 1)),
            LicenseState::Expired(_)
        ));
        assert!(matches!(
            LicenseState::load(&dir.join("none"), &key, "gestan", Timestamp(0)),
            LicenseState::Invalid(LicenseError::Unreadable { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
