//! Tidy checks, run as tests by `cargo test`: every Rust file starts with a
//! `//!` comment and has at most 800 lines, no stub macros or ignored tests,
//! ARCHITECTURE.md names every crate, and a SQLite-only build of the store
//! compiles none of the Postgres stack.

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
        for dir in ["crates", "xtask", "benches", "examples"] {
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
        crates.extend(
            std::fs::read_dir(root.join("examples"))
                .expect("examples/")
                .flatten()
                .map(|e| format!("examples/{}", e.file_name().to_string_lossy())),
        );
        crates.push("xtask".into());
        crates.push("benches".into());
        for c in crates {
            assert!(arch.contains(&c), "ARCHITECTURE.md does not mention {c}");
        }
    }

    /// A file longer than this holds more than one concern: split it along
    /// its seams (see ARCHITECTURE.md).
    const MAX_LINES: usize = 800;

    #[test]
    fn no_file_over_800_lines() {
        let long: Vec<String> = sources()
            .into_iter()
            .filter_map(|p| {
                let n = std::fs::read_to_string(&p)
                    .unwrap_or_default()
                    .lines()
                    .count();
                (n > MAX_LINES).then(|| format!("{} ({n} lines)", p.display()))
            })
            .collect();
        assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:#?}");
    }

    /// The crates a SQLite-only application must not compile.
    const POSTGRES_STACK: [&str; 4] = [
        "tokio",
        "tokio-postgres",
        "deadpool-postgres",
        "futures-util",
    ];

    /// The normal (non-dev) dependency tree of `package` with `features`.
    fn tree(package: &str, features: &str) -> String {
        let out =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(crate::root())
                .args([
                    "tree",
                    "-p",
                    package,
                    "-e",
                    "normal",
                    "--prefix",
                    "none",
                    "--no-default-features",
                ])
                .args(["--features", features])
                .output()
                .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn crates_in(tree: &str) -> Vec<&str> {
        tree.lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect()
    }

    #[test]
    fn a_sqlite_only_build_compiles_no_postgres_stack() {
        for package in ["stepping-store", "stepping-parallel"] {
            let sqlite = tree(package, "sqlite");
            let names = crates_in(&sqlite);
            assert!(
                names.contains(&"rusqlite"),
                "{package} with `sqlite` lacks rusqlite:\n{sqlite}"
            );
            for c in POSTGRES_STACK {
                assert!(
                    !names.contains(&c),
                    "{package} with only `sqlite` compiles {c}:\n{sqlite}"
                );
            }
            // The check would pass vacuously if the names were wrong.
            let postgres = tree(package, "postgres");
            for c in POSTGRES_STACK {
                assert!(
                    crates_in(&postgres).contains(&c),
                    "{package} with `postgres` lacks {c}"
                );
            }
            assert!(
                !crates_in(&postgres).contains(&"rusqlite"),
                "{package} with only `postgres` compiles rusqlite"
            );
        }
        // The async face brings tokio, not the Postgres driver.
        let with_async = tree("stepping-store", "sqlite,async");
        let names = crates_in(&with_async);
        assert!(
            names.contains(&"tokio"),
            "`async` lacks tokio:\n{with_async}"
        );
        assert!(
            !names.contains(&"tokio-postgres"),
            "`sqlite,async` compiles tokio-postgres:\n{with_async}"
        );
    }
}
