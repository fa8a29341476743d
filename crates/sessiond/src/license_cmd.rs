//! `sessiond license keygen|issue|verify`: making and checking signed license files.

use crate::exit::Exit;
use crate::table;
use std::path::PathBuf;

use clap::Subcommand;
use sessiond::license::{self, License};

/// License commands.
#[derive(Subcommand)]
pub enum LicenseCmd {
    /// Create an Ed25519 key pair for signing licenses.
    ///
    /// Writes the secret key to <DIR>/license-signing.key (mode 0600; keep it off the
    /// servers) and the public key to <DIR>/license-signing.pub; the public key goes in
    /// the server's config as `license_public_key`, or into a vendor build as
    /// SESSIOND_VENDOR_LICENSE_KEY (docs/SEATS.md).
    #[command(after_help = "Example:\n  sessiond license keygen --dir ./keys")]
    Keygen {
        /// Where to write the two key files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a license: seats and expiry of one app, for one licensee.
    #[command(
        after_help = "Example:\n  sessiond license issue --key keys/license-signing.key --app gestan \\\n      --seats 10 --expires 2027-12-31 --licensee 'ACME Corp' --out gestan.license"
    )]
    Issue {
        /// The secret key file from `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The app the license is for.
        #[arg(long)]
        app: String,
        /// Concurrent seats (1 or more).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        seats: u32,
        /// Last valid day, YYYY-MM-DD (UTC).
        #[arg(long)]
        expires: String,
        /// Who the license is for.
        #[arg(long)]
        licensee: String,
        /// Output file (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a license file's signature and dates.
    ///
    /// Exits 0 when valid, 1 when expired, 2 when invalid (forged, tampered, wrong app)
    /// or when it cannot be checked (no such file, a bad public key, bad flags).
    #[command(
        after_help = "Example:\n  sessiond license verify gestan.license --public-key keys/license-signing.pub --app gestan"
    )]
    Verify {
        /// The license file.
        file: PathBuf,
        /// The public key: 64 hex digits, or a file holding them.
        #[arg(long)]
        public_key: String,
        /// Also check the license is for this app.
        #[arg(long)]
        app: Option<String>,
    },
}

fn read_key(text_or_path: &str) -> Result<String, String> {
    let p = std::path::Path::new(text_or_path);
    if p.exists() {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{}: {e}", p.display()))
    } else {
        Ok(text_or_path.trim().to_string())
    }
}

/// Checks `issue`'s arguments, naming the flag at fault (a bad argument is not a bad
/// license); answers when the license ends.
fn check_issue(
    key: &std::path::Path,
    app: &str,
    licensee: &str,
    expires: &str,
) -> Result<sessiond_core::Timestamp, String> {
    if key.extension().is_some_and(|e| e == "pub") {
        return Err(format!(
            "--key {}: that is the public key; sign with the secret key (license-signing.key)",
            key.display()
        ));
    }
    if !sessiond_core::valid_app_name(app) {
        return Err(format!(
            "--app {}: not an app name (1 to 64 letters, digits, '_', '-' or '.')",
            sessiond_core::quoted(app)
        ));
    }
    if licensee.trim().is_empty() || licensee.chars().any(char::is_control) {
        return Err("--licensee: say who the license is for (no control characters)".into());
    }
    license::parse_date(expires).ok_or_else(|| {
        format!(
            "--expires {}: not a date of the form YYYY-MM-DD",
            sessiond_core::quoted(expires)
        )
    })
}

/// What `verify` prints about a license whose signature holds: its terms and `status`.
fn verified_text(l: &License, status: &str) -> String {
    table::fields(&[
        ("licensee".into(), l.licensee.clone()),
        ("app".into(), l.app.clone()),
        ("seats".into(), l.seats.to_string()),
        ("issued".into(), l.issued.clone()),
        ("expires".into(), l.expires.clone()),
        ("status".into(), status.to_string()),
    ])
}

/// Runs a license command.
pub fn run(cmd: LicenseCmd) -> Exit {
    match cmd {
        LicenseCmd::Keygen { dir } => {
            let (secret, public) = license::keygen();
            let key = dir.join("license-signing.key");
            let publ = dir.join("license-signing.pub");
            if let Err(e) = std::fs::create_dir_all(&dir)
                .and_then(|_| {
                    sessiond::private_file::write_private(&key, format!("{secret}\n").as_bytes())
                })
                .and_then(|_| std::fs::write(&publ, format!("{public}\n")))
            {
                eprintln!("sessiond: cannot write the keys in {}: {e} (existing keys are never overwritten)", dir.display());
                return Exit::Failed;
            }
            println!(
                "secret key: {} (mode 0600; keep it off the servers)",
                key.display()
            );
            println!("public key: {}", publ.display());
            println!("\nPut this in the server's config:\n\n  license_public_key = \"{public}\"");
            Exit::Done
        }
        LicenseCmd::Issue {
            key,
            app,
            seats,
            expires,
            licensee,
            out,
        } => {
            let end = match check_issue(&key, &app, &licensee, &expires) {
                Ok(end) => end,
                Err(e) => {
                    eprintln!("sessiond: {e}");
                    return Exit::Usage;
                }
            };
            if sessiond_core::Clock::now(&sessiond_core::SystemClock) >= end {
                eprintln!("sessiond: warning: --expires {expires} is already past: this license is expired from the start");
            }
            let secret = match read_key(&key.display().to_string()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("sessiond: {e}");
                    return Exit::Failed;
                }
            };
            let l = License {
                app,
                expires,
                issued: license::today(),
                licensee,
                seats,
            };
            let text = match license::issue(&l, &secret) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("sessiond: {e}");
                    return Exit::Usage;
                }
            };
            match out {
                Some(p) => {
                    if let Err(e) = std::fs::write(&p, &text) {
                        eprintln!("sessiond: cannot write {}: {e}", p.display());
                        return Exit::Failed;
                    }
                    println!(
                        "license for {} ({} seat(s) of {}, until {}) written to {}",
                        l.licensee,
                        l.seats,
                        l.app,
                        l.expires,
                        p.display()
                    );
                }
                None => print!("{text}"),
            }
            Exit::Done
        }
        LicenseCmd::Verify {
            file,
            public_key,
            app,
        } => {
            let key = match read_key(&public_key).and_then(|k| {
                license::public_key(&k).map_err(|_| {
                    format!("--public-key {public_key:?}: neither 64 hex digits nor a file holding an Ed25519 public key")
                })
            }) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("sessiond: {e}");
                    return Exit::Usage;
                }
            };
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("sessiond: {}: {e}", file.display());
                    return Exit::Usage;
                }
            };
            match license::verify(&text, &key, app.as_deref()) {
                Ok(l) => {
                    let expired = license::parse_date(&l.expires).is_none_or(|end| {
                        use sessiond_core::Clock;
                        sessiond_core::SystemClock.now() >= end
                    });
                    let status = if expired { "EXPIRED" } else { "valid" };
                    print!("{}", verified_text(&l, status));
                    if expired {
                        Exit::Failed
                    } else {
                        Exit::Done
                    }
                }
                Err(e) => {
                    print!(
                        "{}",
                        table::fields(&[("status".into(), format!("INVALID: {e}"))])
                    );
                    Exit::Usage
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_lists_the_terms_aligned() {
        let l = License {
            licensee: "ACME Corp".into(),
            app: "gestan".into(),
            seats: 1,
            issued: "2026-11-21".into(),
            expires: "2027-12-31".into(),
        };
        assert_eq!(
            verified_text(&l, "valid"),
            "licensee:  ACME Corp\napp:       gestan\nseats:     1\n\
             issued:    2026-11-21\nexpires:   2027-12-31\nstatus:    valid\n"
        );
    }
}
