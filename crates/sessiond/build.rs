//! Build script of the `sessiond` crate. The ordinary build reads nothing here. A
//! vendor build (feature `vendor`, docs/SEATS.md) pins, at compile time, the Ed25519
//! key licenses are checked with and the apps that need one: it reads them from
//! `SESSIOND_VENDOR_LICENSE_KEY` and `SESSIOND_VENDOR_LICENSED_APPS`, fails the build
//! when either is missing or malformed, and writes them as constants into
//! `$OUT_DIR/vendor.rs`, which `src/licensing.rs` includes. Checking here, not at the
//! binary's start, means no vendor binary with an unusable pin can exist.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "vendor")]
    vendor::main();
}

/// The vendor build's part: compiled only with the feature, which alone brings the
/// build dependency on ed25519-dalek.
#[cfg(feature = "vendor")]
mod vendor {
    use std::fmt::Write as _;

    /// The public key (64 hex digits, printed by `sessiond license keygen`).
    const KEY_VAR: &str = "SESSIOND_VENDOR_LICENSE_KEY";
    /// The licensed app names, comma-separated.
    const APPS_VAR: &str = "SESSIOND_VENDOR_LICENSED_APPS";

    pub fn main() {
        // Only a vendor build depends on them: an ordinary build is not rebuilt when
        // they change.
        println!("cargo::rerun-if-env-changed={KEY_VAR}");
        println!("cargo::rerun-if-env-changed={APPS_VAR}");
        match pin() {
            Ok(code) => {
                let out = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
                let path = std::path::Path::new(&out).join("vendor.rs");
                std::fs::write(path, code).expect("cannot write vendor.rs");
            }
            // Cargo stops the build with this message.
            Err(message) => println!("cargo::error=vendor build: {message} (docs/SEATS.md)"),
        }
    }

    /// The generated constants, or what is wrong with the variables.
    fn pin() -> Result<String, String> {
        let key = variable(KEY_VAR, "the public key from `sessiond license keygen`")?;
        let apps = variable(APPS_VAR, "the licensed app names, comma-separated")?;
        let bytes = unhex(key.trim())
            .ok_or_else(|| format!("{KEY_VAR} must be 64 hex digits, not {key:?}"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| format!("{KEY_VAR} is 64 hex digits but not an Ed25519 public key"))?;
        let apps = app_names(&apps)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // The same words as `Pin`'s Display in src/licensing.rs.
        let version = format!(
            "{} (vendor build: licenses checked with the pinned key {hex}; licensed apps: {})",
            std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION"),
            apps.join(", ")
        );
        let mut code = String::new();
        let mut line = |text: String| writeln!(code, "{text}").expect("a String takes it");
        line(format!("/// The pinned key, from `{KEY_VAR}`."));
        line(format!("pub const KEY_HEX: &str = {hex:?};"));
        line(format!(
            "/// The pinned apps, from `{APPS_VAR}`, in name order."
        ));
        line(format!("pub const APPS: &[&str] = &{apps:?};"));
        line("/// What `sessiond --version` prints.".into());
        line(format!("pub const VERSION: &str = {version:?};"));
        Ok(code)
    }

    /// A variable that must be set for a vendor build.
    fn variable(name: &str, what: &str) -> Result<String, String> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(v),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(format!(
                "the feature `vendor` needs {KEY_VAR} and {APPS_VAR} set at build time; \
                 {name} ({what}) is not set"
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not UTF-8")),
        }
    }

    fn unhex(s: &str) -> Option<[u8; 32]> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(out)
    }

    /// The names of `list`, each an app name by the rule of
    /// `sessiond_core::valid_app_name` (1 to 64 letters, digits, '_', '-' or '.'; the
    /// binary checks them again with that function), none twice, at least one; in name
    /// order, as the binary lists them.
    fn app_names(list: &str) -> Result<Vec<String>, String> {
        let mut names: Vec<String> = Vec::new();
        for name in list.split(',').map(str::trim) {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            if !valid {
                return Err(format!(
                    "{APPS_VAR}: {name:?} is not an app name (1 to 64 letters, digits, '_', \
                     '-' or '.'; names are separated by commas)"
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(format!("{APPS_VAR}: {name:?} is named twice"));
            }
            names.push(name.to_string());
        }
        names.sort();
        Ok(names)
    }
}
