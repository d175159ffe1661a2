//! Tidy checks, run as tests by `cargo test`: every Rust file starts with a
//! `//!` comment, no stub macros or ignored tests, and ARCHITECTURE.md names
//! every crate.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if p.is_dir() && name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    fn sources() -> Vec<PathBuf> {
        let root = crate::root();
        let mut files = Vec::new();
        for dir in ["crates", "xtask", "benches"] {
            rust_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 20, "found only {} Rust files", files.len());
        files
    }

    #[test]
    fn every_file_starts_with_a_module_doc() {
        let missing: Vec<String> = sources()
            .into_iter()
            .filter(|p| {
                !std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .starts_with("//!")
            })
            .map(|p| p.display().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "files without a leading `//!` doc: {missing:#?}"
        );
    }

    #[test]
    fn no_stubs_or_ignored_tests() {
        let banned = [
            concat!("to", "do!("),
            concat!("unimple", "mented!("),
            concat!("db", "g!("),
            concat!("#[ig", "nore"),
        ];
        for p in sources() {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for b in banned {
                assert!(!text.contains(b), "{} contains `{b}`", p.display());
            }
        }
    }

    #[test]
    fn architecture_names_every_crate() {
        let root = crate::root();
        let arch = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
        let mut crates: Vec<String> = std::fs::read_dir(root.join("crates"))
            .expect("crates/")
            .flatten()
            .map(|e| format!("crates/{}", e.file_name().to_string_lossy()))
            .collect();
        crates.push("xtask".into());
        crates.push("benches".into());
        for c in crates {
            assert!(arch.contains(&c), "ARCHITECTURE.md does not mention {c}");
        }
    }
}
