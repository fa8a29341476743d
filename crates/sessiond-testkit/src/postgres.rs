//! A private PostgreSQL cluster for one test: `initdb` in a scratch directory, `ssl =
//! on` with a certificate from a [`TestCa`], trust authentication over TLS only
//! (`pg_hba.conf` rejects plain TCP, so a client that does not speak TLS cannot pass
//! unnoticed), on a free loopback port. Stopped (`pg_ctl stop -m immediate`) and
//! removed on drop.
//!
//! PostgreSQL refuses to run as root, so when the test runs as root the cluster's
//! directory is handed to the `postgres` user and every PostgreSQL command runs as that
//! user (`runuser -u postgres --`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::ca::{Issued, TestCa};
use crate::scratch::{free_port, Scratch};

/// A PostgreSQL cluster for one test, reachable only over TLS. Dropping it stops the
/// server and removes its directory.
pub struct TlsPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    ca_path: PathBuf,
    as_postgres: bool,
    // Removed after the server is stopped (`Drop::drop` runs before the fields drop).
    dir: Scratch,
}

impl TlsPostgres {
    /// Starts a cluster whose certificate `ca` issues for `names`. `Err` says why this
    /// machine cannot run one (no PostgreSQL server binaries, no `postgres` user while
    /// running as root).
    ///
    /// The binaries are taken from `SESSIOND_TEST_PG_BINDIR`, else from the newest
    /// `/usr/lib/postgresql/<version>/bin` (Debian's layout), else from `PATH`.
    pub fn start(ca: &TestCa, names: &[&str]) -> Result<TlsPostgres, String> {
        let bin = bindir().ok_or("no PostgreSQL server binaries (initdb, pg_ctl) found")?;
        let as_postgres = running_as_root();
        let dir = Scratch::new("tls-postgres");
        let data = dir.path().join("data");
        let ca_path = ca.write_pem(dir.path(), "ca.pem");
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(dir.path()))?;
        }
        let mut cluster = TlsPostgres {
            bin,
            data,
            port: 0,
            ca_path,
            as_postgres,
            dir,
        };
        cluster.pg(
            "initdb",
            &[
                "-D",
                path_str(&cluster.data)?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        cluster.configure(ca, names)?;
        let mut last = String::new();
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..5 {
            cluster.port = free_port();
            cluster.set_port()?;
            match cluster.pg_ctl("start") {
                Ok(()) => return Ok(cluster),
                Err(why) => last = why,
            }
        }
        Err(format!("PostgreSQL with TLS did not start: {last}"))
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`, with no `sslmode`: add the
    /// query a test wants.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The issuing CA's certificate, as a PEM file.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// Writes the server's certificate, key (mode 0600, as PostgreSQL demands) and
    /// settings, and a `pg_hba.conf` that admits TLS connections only.
    fn configure(&self, ca: &TestCa, names: &[&str]) -> Result<(), String> {
        let Issued {
            cert_pem, key_pem, ..
        } = ca.issue(names);
        let cert = self.data.join("server.crt");
        let key = self.data.join("server.key");
        write(&cert, &cert_pem)?;
        write(&key, &key_pem)?;
        #[cfg(unix)]
        crate::os_unix::owner_only(&key).map_err(|e| format!("chmod {}: {e}", key.display()))?;
        let conf = format!(
            "\n# sessiond test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 60\n\
             shared_buffers = 16MB\n\
             include_if_exists = 'port.conf'\n",
            sock = self.dir.path().display()
        );
        append(&self.data.join("postgresql.conf"), &conf)?;
        write(
            &self.data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )?;
        if self.as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(&self.data))?;
        }
        Ok(())
    }

    fn set_port(&self) -> Result<(), String> {
        let path = self.data.join("port.conf");
        write(&path, &format!("port = {}\n", self.port))?;
        if self.as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&path))?;
        }
        Ok(())
    }

    fn pg_ctl(&self, action: &str) -> Result<(), String> {
        let log = self.dir.path().join("postgres.log");
        let mut args = vec!["-D", path_str(&self.data)?, "-w", "-t", "30"];
        match action {
            "start" => args.extend(["-l", path_str(&log)?, "start"]),
            _ => args.extend(["-m", "immediate", "stop"]),
        }
        self.pg("pg_ctl", &args).map_err(|why| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            format!("{why}; its log (last lines first): {}", tail.join(" | "))
        })
    }

    /// Runs the PostgreSQL program `name` (as `postgres` when we are root).
    fn pg(&self, name: &str, args: &[&str]) -> Result<(), String> {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args).current_dir(self.dir.path());
        run(&mut cmd)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.pg_ctl("stop");
        }
    }
}

/// Where `initdb` and `pg_ctl` are.
fn bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SESSIOND_TEST_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
}

/// Whether this process runs as root (PostgreSQL will not).
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "{:?} failed ({status}): {} {}",
        cmd.get_program(),
        String::from_utf8_lossy(&stdout).trim(),
        String::from_utf8_lossy(&stderr).trim()
    ))
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("not UTF-8: {}", p.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("append to {}: {e}", path.display()))
}
