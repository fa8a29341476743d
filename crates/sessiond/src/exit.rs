//! How every `sessiond` command ends: one table of exit codes. Commands return an
//! [`Exit`]; `main` alone turns it into the process's exit code, and each command's
//! `--help` lists the codes it can end with from the same table ([`help`]), so the
//! text and the behaviour cannot drift apart.

use sessiond_client::CloseReason;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It did what it was asked.
    Done,
    /// The work failed: a store, the disk, the network or the server.
    Failed,
    /// Bad flags, configuration or input: nothing was tried.
    Usage,
    /// `connect`: every seat is taken and none was taken over.
    HouseFull,
    /// `connect`: refused for a reason the user must fix (user limit, license).
    Refused,
    /// `connect`: the seat's session was closed by an administrator.
    Killed,
    /// `connect`: an administrator disconnected everyone.
    ClosedAll,
    /// `connect`: another client took the seat over.
    TakenOver,
    /// `connect`: the server stopped hearing from this client.
    HeartbeatLost,
    /// `connect`: the session was idle too long.
    IdleTimeout,
    /// `connect`: the session reached its maximum lifetime.
    AbsoluteTimeout,
    /// `connect`: evicted to make room.
    Evicted,
    /// `connect`: the same user connected elsewhere.
    Replaced,
    /// `connect`: the session was logged out from elsewhere.
    LoggedOutElsewhere,
    /// `connect`: closed for another reason.
    ClosedOther,
}

impl Exit {
    /// Every exit, in the order `--help` lists them.
    pub const ALL: [Exit; 15] = [
        Exit::Done,
        Exit::Failed,
        Exit::Usage,
        Exit::HouseFull,
        Exit::Refused,
        Exit::Killed,
        Exit::ClosedAll,
        Exit::TakenOver,
        Exit::HeartbeatLost,
        Exit::IdleTimeout,
        Exit::AbsoluteTimeout,
        Exit::Evicted,
        Exit::Replaced,
        Exit::LoggedOutElsewhere,
        Exit::ClosedOther,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::HouseFull => 3,
            Exit::Refused => 4,
            Exit::Killed => 10,
            Exit::ClosedAll => 11,
            Exit::TakenOver => 12,
            Exit::HeartbeatLost => 13,
            Exit::IdleTimeout => 14,
            Exit::AbsoluteTimeout => 15,
            Exit::Evicted => 16,
            Exit::Replaced => 17,
            Exit::LoggedOutElsewhere => 18,
            Exit::ClosedOther => 19,
        }
    }

    /// What it means, for `--help`.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Done => "success",
            Exit::Failed => "failed: a store, the disk, the network or the server",
            Exit::Usage => "bad flags, configuration or input; nothing was tried",
            Exit::HouseFull => "house full, no seat taken",
            Exit::Refused => "refused (user limit, license)",
            Exit::Killed => "killed by an administrator",
            Exit::ClosedAll => "closed_all: an administrator disconnected everyone",
            Exit::TakenOver => "taken_over by another client",
            Exit::HeartbeatLost => "heartbeat_lost (or lease_expired)",
            Exit::IdleTimeout => "idle_timeout",
            Exit::AbsoluteTimeout => "absolute_timeout",
            Exit::Evicted => "evicted to make room",
            Exit::Replaced => "replaced: the same user connected elsewhere",
            Exit::LoggedOutElsewhere => "logged out elsewhere",
            Exit::ClosedOther => "closed for another reason",
        }
    }

    /// How a seat client ends when its session was closed for `reason`.
    pub fn closed(reason: &CloseReason) -> Exit {
        match reason {
            CloseReason::Killed => Exit::Killed,
            CloseReason::ClosedAll => Exit::ClosedAll,
            CloseReason::TakenOver => Exit::TakenOver,
            // The same for the client: the server stopped hearing from it.
            CloseReason::HeartbeatLost | CloseReason::LeaseExpired => Exit::HeartbeatLost,
            CloseReason::IdleTimeout => Exit::IdleTimeout,
            CloseReason::AbsoluteTimeout => Exit::AbsoluteTimeout,
            CloseReason::Evicted => Exit::Evicted,
            CloseReason::Replaced => Exit::Replaced,
            CloseReason::Logout => Exit::LoggedOutElsewhere,
            // Only web sessions close so; a seat client cannot meet it.
            CloseReason::UserChanged | CloseReason::Other(_) => Exit::ClosedOther,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// The `--help` text of a command that ends with `exits` (what `0` means for it in
/// `done`), followed by `more` (examples).
pub fn help(done: &str, exits: &[Exit], more: &str) -> String {
    let rows: Vec<Vec<String>> = exits
        .iter()
        .map(|e| {
            let meaning = if *e == Exit::Done { done } else { e.meaning() };
            vec![e.code().to_string(), meaning.to_string()]
        })
        .collect();
    let mut out = String::from("Exit codes:\n");
    out.push_str(&crate::table::rows("  ", &rows));
    if !more.is_empty() {
        out.push('\n');
        out.push_str(more);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_has_its_own_code_and_is_listed() {
        let mut codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len(), "two exits share a code");
        let text = help("ok", &Exit::ALL, "");
        for e in Exit::ALL {
            let meaning = if e == Exit::Done { "ok" } else { e.meaning() };
            // Codes go up to two digits, so the meanings start in the same column.
            let line = format!("  {:<2}  {meaning}", e.code());
            assert!(text.lines().any(|l| l == line), "{e:?} missing: {text}");
        }
    }
}
