//! User and privilege names travel in headers (forward-auth's `X-Sessiond-User` and
//! comma-separated `X-Sessiond-Privileges`), where proxies and apps trim values and
//! split on commas: a name that would read as another is refused on every way in.

use std::sync::Arc;

use sessiond_core::{Error, Lookup, Manager, MemoryStore, OpenRequest, Policy};

#[tokio::test]
async fn names_that_would_read_as_others_in_a_header_are_refused() {
    let m = Manager::new(Arc::new(MemoryStore::new()));
    m.set_policy("shop", Policy::default()).unwrap();
    for user in ["admin ", " admin", "\tadmin"] {
        let r = m
            .open(
                "shop",
                OpenRequest {
                    user: Some(user.into()),
                    ..Default::default()
                },
            )
            .await;
        assert!(matches!(r, Err(Error::BadInput(_))), "{user:?}: {r:?}");
    }
    let r = m
        .open(
            "shop",
            OpenRequest {
                privileges: vec!["sales,WebAdmin".into()],
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(Error::BadInput(_))), "{r:?}");

    let o = m.open("shop", OpenRequest::default()).await.unwrap();
    let id = Lookup::Id(o.session.id);
    for (privileges, user) in [
        (vec!["x,WebAdmin".to_string()], None),
        (vec!["WebAdmin ".to_string()], None),
        (vec![], Some("root ".to_string())),
    ] {
        let r = m.set_privileges(id, privileges, None, user).await;
        assert!(matches!(r, Err(Error::BadInput(_))), "{r:?}");
    }
    // Names inside are fine: spaces, accents.
    let r = m
        .set_privileges(
            id,
            vec!["Web Admin".into()],
            None,
            Some("Chloé Durand".into()),
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
}
