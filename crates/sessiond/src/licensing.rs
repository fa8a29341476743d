//! Who decides how licenses are checked: the configuration, or the binary itself.
//!
//! In the ordinary build the configuration names the key (`license_public_key`) and
//! which apps are licensed (their `license` lines): whoever writes the configuration can
//! make a key pair, sign any seat count, or leave the `license` line out and set
//! `seats`. A vendor build (the cargo feature `vendor`, docs/SEATS.md) pins both at
//! compile time: `build.rs` reads them from `SESSIOND_VENDOR_LICENSE_KEY` and
//! `SESSIOND_VENDOR_LICENSED_APPS` and refuses to build without them or with a malformed
//! value. Such a binary checks every license with its own key, refuses a configuration
//! that names another, and opens a pinned app's sessions only under a valid license,
//! whatever `seats` the configuration says.
//!
//! Both are values of [`Licensing`], and [`Licensing::terms`] turns either, with the
//! configuration, into the [`Terms`] the server enforces ([`crate::license::Licenses`]).
//! The vendor build makes its [`Pin`] from the compile-time constants
//! ([`Licensing::of_this_build`]); tests make one from a key of their own, so the
//! ordinary build's tests run the vendor build's rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

#[cfg(feature = "vendor")]
mod vendor {
    //! The constants `build.rs` wrote from the build's environment.
    include!(concat!(env!("OUT_DIR"), "/vendor.rs"));
}

/// What `sessiond --version` prints: the crate's version, and in a vendor build the
/// pinned key and apps.
#[cfg(not(feature = "vendor"))]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// What `sessiond --version` prints: the crate's version, and in a vendor build the
/// pinned key and apps.
#[cfg(feature = "vendor")]
pub const VERSION: &str = vendor::VERSION;

/// How licenses are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Licensing {
    /// The ordinary build: the configuration's `license_public_key` checks the licenses
    /// of the apps that name a `license` file; the other apps take their `seats` from
    /// the configuration.
    Configured,
    /// A vendor build: a key and apps fixed when the binary was built (boxed: a
    /// verifying key keeps its point decompressed, a few hundred bytes).
    Pinned(Box<Pin>),
}

/// A vendor build's pin: the one key licenses are checked with, and the apps that open
/// sessions only under a valid license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    key: VerifyingKey,
    apps: BTreeSet<String>,
}

/// A pin that cannot be made: the key or an app name is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PinError(String);

impl Pin {
    /// A pin of `key` (64 hex digits) and `apps` (app names, at least one).
    pub fn new<S: AsRef<str>>(
        key: &str,
        apps: impl IntoIterator<Item = S>,
    ) -> Result<Pin, PinError> {
        let key = crate::license::public_key(key).map_err(|e| PinError(e.to_string()))?;
        let mut names = BTreeSet::new();
        for app in apps {
            let app = app.as_ref();
            if !sessiond_core::valid_app_name(app) {
                return Err(PinError(format!(
                    "{} is not an app name (1 to 64 letters, digits, '_', '-' or '.')",
                    sessiond_core::quoted(app)
                )));
            }
            names.insert(app.to_string());
        }
        if names.is_empty() {
            return Err(PinError("a pin names at least one app".into()));
        }
        Ok(Pin { key, apps: names })
    }

    /// The key licenses are checked with.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key as 64 hex digits, as `sessiond license keygen` prints it.
    pub fn key_hex(&self) -> String {
        self.key
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The pinned apps, in name order.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.apps.iter().map(String::as_str)
    }

    /// Whether `app` is pinned.
    pub fn pins(&self, app: &str) -> bool {
        self.apps.contains(app)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let apps: Vec<&str> = self.apps().collect();
        write!(
            f,
            "licenses checked with the pinned key {}; licensed apps: {}",
            self.key_hex(),
            apps.join(", ")
        )
    }
}

/// What the server enforces: the key, and every licensed app with its license file
/// (none when a pinned app's configuration names no file: its opens are refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// The key licenses are checked with.
    pub key: VerifyingKey,
    /// The licensed apps of the configuration, by name.
    pub apps: BTreeMap<String, Option<PathBuf>>,
}

/// A configuration that does not fit the licensing; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TermsError(pub String);

impl Licensing {
    /// This binary's licensing: [`Licensing::Pinned`] from the compile-time constants in
    /// a vendor build, [`Licensing::Configured`] otherwise.
    pub fn of_this_build() -> Licensing {
        #[cfg(feature = "vendor")]
        {
            // build.rs checked both already; a failure here means the two checks of an
            // app name disagree, which no binary may paper over.
            Licensing::Pinned(Box::new(
                Pin::new(vendor::KEY_HEX, vendor::APPS)
                    .unwrap_or_else(|e| panic!("the vendor build's pin is unusable: {e}")),
            ))
        }
        #[cfg(not(feature = "vendor"))]
        {
            Licensing::Configured
        }
    }

    /// The pin, in a vendor build.
    pub fn pin(&self) -> Option<&Pin> {
        match self {
            Licensing::Configured => None,
            Licensing::Pinned(pin) => Some(pin),
        }
    }

    /// The terms of a configuration whose `license_public_key` is `configured_key`
    /// (already checked to be a key) and whose apps name the license files `apps`;
    /// `None` when no app is licensed.
    ///
    /// Configured: the apps with a file are licensed, and need the configured key.
    /// Pinned: the configured key, when set, must be the pinned one; the pinned apps of
    /// the configuration are licensed, with or without a file, and so is any other app
    /// that names one.
    pub fn terms<'a>(
        &self,
        configured_key: Option<&str>,
        apps: impl IntoIterator<Item = (&'a str, Option<&'a Path>)>,
    ) -> Result<Option<Terms>, TermsError> {
        let configured = configured_key
            .map(|k| {
                crate::license::public_key(k)
                    .map_err(|e| TermsError(format!("license_public_key: {e}")))
            })
            .transpose()?;
        let mut licensed = BTreeMap::new();
        match self {
            Licensing::Configured => {
                for (name, file) in apps {
                    if let Some(file) = file {
                        licensed.insert(name.to_string(), Some(file.to_path_buf()));
                    }
                }
                let Some(key) = configured else {
                    return match licensed.into_keys().next() {
                        Some(name) => Err(TermsError(format!(
                            "apps.{name}.license needs license_public_key (the key printed by `sessiond license keygen`)"
                        ))),
                        None => Ok(None),
                    };
                };
                Ok((!licensed.is_empty()).then_some(Terms {
                    key,
                    apps: licensed,
                }))
            }
            Licensing::Pinned(pin) => {
                if configured.is_some_and(|k| k != pin.key) {
                    return Err(TermsError(format!(
                        "license_public_key: this is a vendor build, which checks licenses only with the key it was built with ({}); the configuration names another. Remove license_public_key, or set it to that key",
                        pin.key_hex()
                    )));
                }
                for (name, file) in apps {
                    if file.is_some() || pin.pins(name) {
                        licensed.insert(name.to_string(), file.map(Path::to_path_buf));
                    }
                }
                Ok(Some(Terms {
                    key: pin.key,
                    apps: licensed,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::keygen;

    fn pinned(key: &str, apps: &[&str]) -> Licensing {
        Licensing::Pinned(Box::new(Pin::new(key, apps).unwrap()))
    }

    #[test]
    fn this_build_says_how_it_checks_licenses() {
        let licensing = Licensing::of_this_build();
        assert_eq!(licensing.pin().is_some(), cfg!(feature = "vendor"));
        match licensing.pin() {
            None => assert_eq!(VERSION, env!("CARGO_PKG_VERSION")),
            Some(pin) => assert!(VERSION.contains(&pin.to_string()), "{VERSION}"),
        }
    }

    #[test]
    fn configured_licenses_the_apps_naming_a_file_with_the_configured_key() {
        let (_, public) = keygen();
        let terms = Licensing::Configured
            .terms(
                Some(&public),
                [("gestan", Some(Path::new("g.license"))), ("shop", None)],
            )
            .unwrap()
            .unwrap();
        assert_eq!(terms.key, crate::license::public_key(&public).unwrap());
        assert_eq!(
            terms.apps,
            BTreeMap::from([("gestan".to_string(), Some(PathBuf::from("g.license")))])
        );
        // No file, no licensed app, with or without a key: seats come from the config.
        assert_eq!(
            Licensing::Configured.terms(Some(&public), [("shop", None)]),
            Ok(None)
        );
        assert_eq!(
            Licensing::Configured.terms(None, [("shop", None)]),
            Ok(None)
        );
        let e = Licensing::Configured
            .terms(None, [("gestan", Some(Path::new("g.license")))])
            .unwrap_err();
        assert_eq!(
            e.0,
            "apps.gestan.license needs license_public_key (the key printed by `sessiond license keygen`)"
        );
    }

    #[test]
    fn pinned_licenses_its_apps_with_or_without_a_file_and_only_with_its_key() {
        let (_, public) = keygen();
        let licensing = pinned(&public, &["gestan", "absent"]);
        let terms = licensing
            .terms(
                None,
                [
                    ("gestan", None),
                    ("shop", None),
                    ("desk", Some(Path::new("d.license"))),
                ],
            )
            .unwrap()
            .unwrap();
        assert_eq!(terms.key, crate::license::public_key(&public).unwrap());
        // The pinned app with no file is licensed (its opens are refused); an unpinned
        // app naming a file is checked with the pinned key; a pinned app the
        // configuration does not declare does not exist.
        assert_eq!(
            terms.apps,
            BTreeMap::from([
                ("desk".to_string(), Some(PathBuf::from("d.license"))),
                ("gestan".to_string(), None),
            ])
        );
        // The same key may be repeated.
        assert_eq!(
            licensing.terms(Some(&public), [("gestan", None)]),
            licensing.terms(None, [("gestan", None)])
        );
    }

    #[test]
    fn pinned_refuses_a_configured_key_of_its_own() {
        let (_, public) = keygen();
        let (_, foreign) = keygen();
        let e = pinned(&public, &["gestan"])
            .terms(Some(&foreign), [("gestan", Some(Path::new("g.license")))])
            .unwrap_err();
        assert!(
            e.0.starts_with("license_public_key: this is a vendor build"),
            "{e}"
        );
        assert!(e.0.contains(&public), "{e}");
        // Checked even when no app names a file.
        assert!(pinned(&public, &["gestan"])
            .terms(Some(&foreign), [("shop", None)])
            .is_err());
    }

    #[test]
    fn a_pin_needs_a_key_and_app_names() {
        let (_, public) = keygen();
        let pin = Pin::new(&public, ["shop", "gestan", "shop"]).unwrap();
        assert_eq!(pin.apps().collect::<Vec<_>>(), ["gestan", "shop"]);
        assert_eq!(pin.key_hex(), public);
        assert_eq!(
            pin.to_string(),
            format!("licenses checked with the pinned key {public}; licensed apps: gestan, shop")
        );
        assert!(Pin::new("abc", ["gestan"]).is_err());
        // 64 hex digits that are no point of the curve (y = 2 has no x).
        let no_point = format!("02{}", "00".repeat(31));
        assert!(Pin::new(&no_point, ["gestan"]).is_err());
        assert!(Pin::new(&public, ["no spaces"]).is_err());
        assert!(Pin::new(&public, ["@console"]).is_err());
        assert!(Pin::new(&public, Vec::<String>::new()).is_err());
    }
}
