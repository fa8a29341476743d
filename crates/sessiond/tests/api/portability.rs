//! The platform-specific calls stay in their gated modules: `std::os::unix`,
//! `std::os::linux`, `std::os::windows` and `libc::` may appear in the sources of the
//! crates and examples only in the modules listed here, and each of those is declared
//! under a `#[cfg(...)]` in its parent, so a build for another platform leaves it out
//! (and uses the portable code beside it). macOS and Windows builds cannot be run on
//! this machine; this keeps the code ready for them.

use std::path::{Path, PathBuf};

/// The gated modules: (file, the parent declaring it, the `cfg` it must be under).
const GATED: [(&str, &str, &str); 4] = [
    (
        "crates/sessiond-file/src/os_linux.rs",
        "crates/sessiond-file/src/lib.rs",
        "#[cfg(target_os = \"linux\")]",
    ),
    (
        "crates/sessiond/src/os_unix.rs",
        "crates/sessiond/src/lib.rs",
        "#[cfg(unix)]",
    ),
    (
        "crates/sessiond-testkit/src/os_unix.rs",
        "crates/sessiond-testkit/src/lib.rs",
        "#[cfg(unix)]",
    ),
    // Listed so that the check below finds its declaration gated too: the Linux
    // module's dependency is declared for Linux only.
    (
        "crates/sessiond-file/Cargo.toml",
        "crates/sessiond-file/Cargo.toml",
        "[target.'cfg(target_os = \"linux\")'.dependencies]",
    ),
];

const PLATFORM: [&str; 4] = [
    "std::os::unix",
    "std::os::linux",
    "std::os::windows",
    "libc::",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn platform_calls_live_only_in_gated_modules() {
    let root = root();
    let mut files = Vec::new();
    for group in ["crates", "examples"] {
        for member in std::fs::read_dir(root.join(group))
            .unwrap()
            .map(Result::unwrap)
        {
            rust_files(&member.path().join("src"), &mut files);
        }
    }
    assert!(files.len() > 50, "the sources were found ({})", files.len());
    let mut misplaced = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        if PLATFORM.iter().any(|p| code.contains(p)) && !GATED.iter().any(|(g, _, _)| *g == rel) {
            misplaced.push(rel);
        }
    }
    assert!(
        misplaced.is_empty(),
        "platform-specific calls outside the gated modules (move them into one, \
         with a portable fallback): {misplaced:?}"
    );
    // Each gated module is declared under its cfg.
    for (file, parent, cfg) in GATED {
        let parent_text = std::fs::read_to_string(root.join(parent)).unwrap();
        if file.ends_with(".toml") {
            let libc_at = parent_text.find("libc").expect("libc is declared");
            let cfg_at = parent_text
                .find(cfg)
                .expect("the Linux-only dependency table");
            assert!(cfg_at < libc_at, "{file}: libc is a Linux-only dependency");
            continue;
        }
        let module = Path::new(file).file_stem().unwrap().to_str().unwrap();
        let lines: Vec<&str> = parent_text.lines().map(str::trim).collect();
        let at = lines
            .iter()
            .position(|l| *l == format!("mod {module};") || *l == format!("pub mod {module};"))
            .unwrap_or_else(|| panic!("{parent} declares no `mod {module};`"));
        assert!(
            at > 0 && lines[at - 1] == cfg,
            "{parent}: `mod {module};` must come right under `{cfg}`"
        );
    }
}
