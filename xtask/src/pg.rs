//! A throwaway Postgres: Debian's `postgresql` binaries, a temporary data
//! directory, a unix socket in it, fsync off; run as the `postgres` user
//! when we are root (initdb and postgres refuse to run as root); installed
//! with apt-get if missing. Stopped and deleted when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running throwaway server.
pub(crate) struct Server {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` in it.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn install() -> Result<(), String> {
    eprintln!("==> Postgres binaries not found; installing Debian's `postgresql` package");
    if !is_root() {
        return Err(
            "Postgres is not installed and we are not root: `apt-get install postgresql`, \
                    or set STEPPING_TEST_PG to a server's connection string"
                .into(),
        );
    }
    for args in [
        vec!["update"],
        vec!["install", "-y", "--no-install-recommends", "postgresql"],
    ] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed", args.join(" ")));
        }
    }
    Ok(())
}

impl Server {
    /// Starts a server in a new temporary directory.
    pub(crate) fn start() -> Result<Server, String> {
        let bin = match find_bin() {
            Some(bin) => bin,
            None => {
                install()?;
                find_bin().ok_or("the postgresql package installed no initdb")?
            }
        };
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("stepping-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let server = Server {
            dir,
            bin,
            as_postgres,
        };
        if as_postgres {
            server.run(
                "chown",
                &["-R", "postgres:postgres", &server.dir.to_string_lossy()],
                false,
            )?;
        }
        let data = server.dir.join("data");
        server.run(
            &server.bin.join("initdb").to_string_lossy(),
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            true,
        )?;
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=200 -c shared_buffers=256MB",
            server.dir.display()
        );
        server.run(
            &server.bin.join("pg_ctl").to_string_lossy(),
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &options,
                "-l",
                &server.dir.join("log").to_string_lossy(),
                "-w",
                "start",
            ],
            true,
        )?;
        server.wait_ready()?;
        eprintln!("==> throwaway Postgres at {}", server.url());
        Ok(server)
    }

    fn run(&self, program: &str, args: &[&str], as_postgres: bool) -> Result<(), String> {
        let mut cmd = if as_postgres && self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            Command::new(program)
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", &self.dir.to_string_lossy(), "-U", "postgres"])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "Postgres did not become ready; see {}",
            self.dir.join("log").display()
        ))
    }

    /// A tokio-postgres connection string for the server.
    pub(crate) fn url(&self) -> String {
        format!("host={} user=postgres dbname=postgres", self.dir.display())
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.run(
            &self.bin.join("pg_ctl").to_string_lossy(),
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            true,
        );
        let _ = std::fs::remove_dir_all(Path::new(&self.dir));
    }
}

/// `cargo xtask pg`: a server for manual use until Enter is pressed.
pub(crate) fn serve() -> Result<(), String> {
    let server = Server::start()?;
    println!("STEPPING_TEST_PG='{}'", server.url());
    eprintln!("press Enter to stop it");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(server);
    Ok(())
}
