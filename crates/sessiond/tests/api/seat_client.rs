//! End to end: two `sessiond connect` seat clients in real terminals (tmux) on a
//! one-seat license. The second sees the holder and takes over; the first prints why
//! and exits with the documented code (12, taken over).

use std::process::Command;
use std::time::{Duration, Instant};

use sessiond::license::{self, License};

use crate::common::*;

struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start(&self, name: &str, command: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "200",
            "-y",
            "50",
            command,
        ]);
    }

    fn screen(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", name, "-S", "-100"])
    }

    fn wait_for(&self, name: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen(name);
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never showed {text:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

#[test]
fn second_client_takes_over_and_the_first_exits_with_12() {
    if !Tmux::available() {
        sessiond_core::skip::skip("seat client end-to-end test", "tmux is not installed");
        return;
    }
    let dir = temp_dir("seat-client");
    std::fs::create_dir_all(&dir).unwrap();
    let (secret, public) = license::keygen();
    let lic = License {
        app: "gestan".into(),
        expires: "2099-12-31".into(),
        issued: "2026-11-21".into(),
        licensee: "ACME Corp".into(),
        seats: 1,
    };
    std::fs::write(
        dir.join("gestan.license"),
        license::issue(&lic, &secret).unwrap(),
    )
    .unwrap();
    let config = dir.join("sessiond.toml");
    std::fs::write(
        &config,
        format!(
            "license_public_key = \"{public}\"\n[apps.gestan]\nkey = \"gestan-key-0123456789abcdef\"\nlicense = \"{}\"\nheartbeat = {{ interval_s = 2, grace_s = 2 }}\n",
            dir.join("gestan.license").display()
        ),
    )
    .unwrap();
    let server = Process::start_with(&dir, &["--config", config.to_str().unwrap()]);
    let tmux = Tmux {
        socket: format!("sessiond-test-{}", std::process::id()),
    };
    let client = |user: &str, label: &str| {
        format!(
            "{} connect --server {} --app gestan --user {user} --label {label} --token gestan-key-0123456789abcdef; echo EXIT=$?; sleep 60",
            env!("CARGO_BIN_EXE_sessiond"),
            server.base
        )
    };
    tmux.start("ann", &client("ann", "pc-ann"));
    tmux.wait_for("ann", "Connected to gestan as ann");
    tmux.start("bob", &client("bob", "pc-bob"));
    let screen = tmux.wait_for("bob", "Take over which seat?");
    assert!(
        screen.contains("The only seat of gestan is taken"),
        "{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.trim_start().starts_with("[1]  ann  pc-ann  ")),
        "the holder is listed: {screen}"
    );
    tmux.run(&["send-keys", "-t", "bob", "1", "Enter"]);
    tmux.wait_for("bob", "Connected to gestan as bob");
    let screen = tmux.wait_for("ann", "EXIT=");
    assert!(
        screen.contains("Disconnected: another client took this seat over (taken_over"),
        "{screen}"
    );
    assert!(screen.contains("EXIT=12"), "{screen}");
    // Bob keeps his seat by heartbeating past interval + grace.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !tmux.screen("bob").contains("Disconnected"),
        "{}",
        tmux.screen("bob")
    );
    // Ctrl-C logs out cleanly.
    tmux.run(&["send-keys", "-t", "bob", "C-c", ""]);
    let screen = tmux.wait_for("bob", "EXIT=");
    assert!(
        screen.contains("Logged out.") && screen.contains("EXIT=0"),
        "{screen}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
