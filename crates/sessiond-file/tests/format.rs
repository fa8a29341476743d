//! Store layouts across releases: a store written before layouts were recorded opens
//! with every session as it was (a committed fixture, `fixtures/store-before-format`),
//! and gets its layout recorded; a store a newer sessiond laid out is refused, and left
//! as it is.

use std::path::{Path, PathBuf};

use sessiond_core::{CloseReason, Lookup, SessionId, Store, Token};
use sessiond_file::{FileStore, FORMAT};

fn copy_fixture(name: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-before-format");
    let to = std::env::temp_dir().join(format!("sessiond-format-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(from.join("journal-0.log"), to.join("journal-0.log")).unwrap();
    to
}

#[tokio::test]
async fn a_store_from_before_layouts_were_recorded_opens_as_it_was() {
    let dir = copy_fixture("old");
    let store = FileStore::open(&dir).expect("the older store opens");
    let get = |token: &str| {
        let h = Token::from_client(token.to_string()).hash();
        let store = &store;
        async move {
            store
                .get(Lookup::Token(h))
                .await
                .unwrap()
                .expect("the session is there")
        }
    };
    let ann = get("default:99febd52268ce085bad5c4ed280cb491").await;
    assert_eq!(
        ann.id,
        "01a25018-0ec2-746f-add0-2f883d7cbdbd"
            .parse::<SessionId>()
            .unwrap()
    );
    assert_eq!(ann.user.as_deref(), Some("ann"));
    assert_eq!(
        ann.data.get("cart"),
        Some(serde_json::json!(["ann-1", "ann-2"])),
        "the patch is there"
    );
    let bob = get("default:e272ebf3e3e40125f90f688d2909764e").await;
    assert_eq!(bob.closed.map(|c| c.reason), Some(CloseReason::Killed));
    let cat = get("default:9b7c4b1d08d28277c030e705986c2444").await;
    assert!(cat.closed.is_none());
    assert_eq!(cat.data.get("cart"), Some(serde_json::json!(["cat-1"])));
    assert_eq!(
        std::fs::read_to_string(dir.join("FORMAT")).unwrap().trim(),
        format!("sessiond-store {FORMAT}"),
        "the layout is recorded"
    );
    drop(store);
    FileStore::open(&dir).expect("and opens again with it");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_store_a_newer_sessiond_laid_out_is_refused_and_left_alone() {
    let dir = copy_fixture("newer");
    std::fs::write(
        dir.join("FORMAT"),
        format!("sessiond-store {}\n", FORMAT + 1),
    )
    .unwrap();
    let before = std::fs::read(dir.join("journal-0.log")).unwrap();
    let e = FileStore::open(&dir).unwrap_err().to_string();
    assert!(
        e.contains("newer sessiond") && e.contains("Upgrades"),
        "{e}"
    );
    assert_eq!(std::fs::read(dir.join("journal-0.log")).unwrap(), before);
    assert!(FileStore::repair(&dir).is_err(), "repair refuses it too");
    std::fs::write(dir.join("FORMAT"), "something else\n").unwrap();
    let e = FileStore::open(&dir).unwrap_err().to_string();
    assert!(e.contains("does not say"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
