//! [`InternalApp`]: an app whose sessions a program keeps for itself (the server keeps
//! its admin console's sign-ins in one), beside the apps its configuration declares.
//!
//! An internal app is a name no configuration can declare and a type no string can
//! become by accident. Its name starts with [`INTERNAL_APP_MARK`], which
//! [`crate::valid_app_name`] refuses, so `Manager::set_policy` can never take it, nor can
//! any configured app be given it; and the Manager registers and opens internal apps only
//! through methods that take an [`InternalApp`] (`Manager::set_internal_policy`,
//! `Manager::open_internal`). Everything else about their sessions is ordinary: the
//! same store, the same rules, the same timeouts, closable by id like any session.
//!
//! What keeps them out of sight is the Manager: [`crate::Manager::apps`] lists the
//! declared apps only, [`crate::Manager::is_internal`] answers for an event or a
//! session's app, and `Manager::open` refuses an internal app as unknown.

/// The first character of every internal app's name. [`crate::valid_app_name`] refuses
/// it, so a declared app and an internal app never share a name.
pub const INTERNAL_APP_MARK: char = '@';

/// An app the program keeps sessions in for itself: `@` then 1 to 63 ASCII letters,
/// digits, `_`, `-` or `.` (so the name is safe in every store's keys and in a URL path).
///
/// Build it in a constant, where a bad name is a compile error:
///
/// ```
/// use sessiond_core::InternalApp;
///
/// const SIGN_INS: InternalApp = InternalApp::new("@sign-ins");
/// assert_eq!(SIGN_INS.name(), "@sign-ins");
/// assert!(!sessiond_core::valid_app_name(SIGN_INS.name()));
/// ```
///
/// ```compile_fail
/// // Without the mark, this could be a configured app's name: refused at compile time.
/// const BAD: sessiond_core::InternalApp = sessiond_core::InternalApp::new("console");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InternalApp(&'static str);

impl InternalApp {
    /// The internal app `name`.
    ///
    /// # Panics
    ///
    /// When `name` is not [`INTERNAL_APP_MARK`] followed by 1 to 63 ASCII letters,
    /// digits, `_`, `-` or `.`; in a constant that is a compile error, which is where
    /// this belongs.
    pub const fn new(name: &'static str) -> InternalApp {
        let b = name.as_bytes();
        assert!(
            b.len() >= 2 && b.len() <= 64 && b[0] == INTERNAL_APP_MARK as u8,
            "an internal app's name is '@' then 1 to 63 characters"
        );
        let mut i = 1;
        while i < b.len() {
            assert!(
                b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-' || b[i] == b'.',
                "an internal app's name is '@' then ASCII letters, digits, '_', '-' or '.'"
            );
            i += 1;
        }
        InternalApp(name)
    }

    /// The app's name, as its sessions carry it.
    pub const fn name(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for InternalApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_name_is_never_a_valid_app_name() {
        const A: InternalApp = InternalApp::new("@console");
        assert_eq!(A.name(), "@console");
        assert!(!crate::valid_app_name(A.name()));
        let long: &'static str = Box::leak(format!("@{}", "x".repeat(63)).into_boxed_str());
        assert_eq!(InternalApp::new(long).name().len(), 64);
    }

    #[test]
    fn names_without_the_mark_or_with_other_characters_are_refused() {
        for bad in ["console", "@", "@a b", "@a{b}", "@a\nb", "@a:b", "a@b"] {
            let got = std::panic::catch_unwind(|| InternalApp::new(bad));
            assert!(got.is_err(), "{bad:?} was taken");
        }
        let long: &'static str = Box::leak(format!("@{}", "x".repeat(64)).into_boxed_str());
        assert!(std::panic::catch_unwind(|| InternalApp::new(long)).is_err());
    }

    mod manager {
        use std::sync::Arc;
        use std::time::Duration;

        use crate::{
            Error, HeartbeatRequest, InternalApp, Manager, ManualClock, MemoryStore, OpenRequest,
            Policy, Resolve, Timestamp,
        };

        const SIGN_INS: InternalApp = InternalApp::new("@sign-ins");

        fn manager() -> (Manager, Arc<ManualClock>) {
            let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
            let m = Manager::with_clock(Arc::new(MemoryStore::new()), clock.clone());
            m.set_policy("shop", Policy::default()).unwrap();
            m.set_internal_policy(
                SIGN_INS,
                Policy {
                    idle_timeout_s: 60,
                    ..Policy::default()
                },
            )
            .unwrap();
            (m, clock)
        }

        #[tokio::test]
        async fn an_internal_app_is_not_listed_and_not_opened_by_name() {
            let (m, _) = manager();
            assert_eq!(m.apps(), vec!["shop".to_string()]);
            assert!(m.is_internal(SIGN_INS.name()));
            assert!(!m.is_internal("shop"));
            assert!(!m.is_internal("nowhere"));
            assert_eq!(m.policy(SIGN_INS.name()).unwrap().idle_timeout_s, 60);
            let by_name = m.open(SIGN_INS.name(), OpenRequest::default()).await;
            assert!(
                matches!(&by_name, Err(Error::UnknownApp(a)) if a == SIGN_INS.name()),
                "{by_name:?}"
            );
            assert!(matches!(
                m.set_policy(SIGN_INS.name(), Policy::default()),
                Err(Error::BadInput(_))
            ));
            assert!(m.is_internal(SIGN_INS.name()), "still internal");
        }

        #[tokio::test]
        async fn an_internal_apps_sessions_follow_its_policy() {
            let (m, clock) = manager();
            let opened = m
                .open_internal(SIGN_INS, OpenRequest::default())
                .await
                .unwrap();
            assert_eq!(&*opened.session.app, SIGN_INS.name());
            assert_eq!(opened.session.idle_timeout_s, 60);
            let only = Some(Arc::from(SIGN_INS.name()));
            let touch = Resolve {
                touch: true,
                ip: None,
            };
            m.resolve_in(only.clone(), &opened.token, touch)
                .await
                .unwrap();
            let shop = m.resolve_in(Some(Arc::from("shop")), &opened.token, touch);
            assert!(matches!(shop.await, Err(Error::InvalidToken)));
            assert_eq!(m.seats(SIGN_INS.name()).await.unwrap().open, 1);
            assert_eq!(m.seats("shop").await.unwrap().open, 0);
            clock.advance(Duration::from_secs(61));
            let idle = m.resolve_in(only, &opened.token, touch).await;
            assert!(
                matches!(&idle, Err(Error::SessionClosed(c)) if c.reason.as_str() == "idle_timeout"),
                "{idle:?}"
            );
        }

        #[tokio::test]
        async fn heartbeats_of_internal_sessions_are_renewed_after_a_downtime() {
            let (m, clock) = manager();
            let m = Arc::new(m);
            let req = OpenRequest {
                heartbeat: Some(HeartbeatRequest {
                    interval_s: 10,
                    grace_s: Some(5),
                }),
                ..OpenRequest::default()
            };
            m.open_internal(SIGN_INS, req).await.unwrap();
            clock.advance(Duration::from_secs(12));
            m.mark_downtime();
            assert_eq!(m.renew_heartbeats().await.unwrap(), 1);
        }
    }
}
