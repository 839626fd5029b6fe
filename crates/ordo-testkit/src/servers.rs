//! Servers a test starts for itself: private PostgreSQL and Redis servers on free loopback
//! ports, which the test may crash and restart, killed when their handle drops.

use std::time::Duration;

use crate::eventually;

/// A port that was free a moment ago (for a private server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits (up to 10 s) until something accepts connections on `port`.
pub async fn wait_for_port(port: u16) {
    eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
    })
    .await
    .unwrap_or_else(|e| {
        panic!("nothing listens on port {port}: the private server did not start ({e})")
    });
}

/// A server process the test started: killed when dropped, so that a failing test
/// leaves no server behind.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private redis-server on `port` keeping its data in `dir` (AOF, fsync before each
/// reply), so that a restart finds what was acknowledged.
pub fn start_redis(dir: &std::path::Path, port: u16) -> KillOnDrop {
    KillOnDrop(std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server); scripts/test.sh installs it"))
}

/// A private PostgreSQL server for one test, which the test may stop (as a crash) and
/// start again on the same port and data: a new cluster (`initdb`) in a temporary
/// directory, run as the `postgres` user when the tests run as root (the server refuses
/// root), like scripts/services.sh does. Stopped and removed when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    pub port: u16,
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Creates the cluster and starts the server. Fails, naming what to install, when
    /// the PostgreSQL server binaries are missing.
    pub async fn start() -> PrivatePostgres {
        let bin = postgres_bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        if running_as_root() {
            run_checked(
                std::process::Command::new("chown")
                    .arg("-R")
                    .arg("postgres:")
                    .arg(dir.path()),
                "chown the private PostgreSQL directory to the postgres user",
            );
        }
        let server = PrivatePostgres {
            port: free_port(),
            bin,
            dir,
        };
        run_checked(
            server
                .command("initdb")
                .arg("-D")
                .arg(server.data_dir())
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                    "--no-instructions",
                ]),
            "initdb of the private PostgreSQL",
        );
        server.start_again().await;
        server
    }

    /// The URL of the server's `postgres` database, for a plain client (no ordo
    /// parameters).
    pub fn client_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL of the server's `postgres` database, with ordo's `schema` and any further
    /// `params` (`key=value&...`, or empty).
    pub fn url(&self, schema: &str, params: &str) -> String {
        let extra = if params.is_empty() {
            String::new()
        } else {
            format!("&{params}")
        };
        format!("{}?schema={schema}{extra}", self.client_url())
    }

    /// [`url`](Self::url), but reaching the server through `port` (a proxy's).
    pub fn url_through(&self, port: u16, schema: &str, params: &str) -> String {
        self.url(schema, params).replacen(
            &format!("127.0.0.1:{}/", self.port),
            &format!("127.0.0.1:{port}/"),
            1,
        )
    }

    /// Stops the server the hard way (`pg_ctl stop -m immediate`: every backend is
    /// killed, no checkpoint; the next start runs crash recovery), as a crash would.
    pub async fn stop(&self) {
        let status = self
            .tokio_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .status()
            .await
            .expect("run pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed: {}", self.log_tail());
    }

    /// Starts the server (again) on the same port and data, and waits until it accepts
    /// connections.
    pub async fn start_again(&self) {
        let settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        let status = self
            .tokio_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "120", "-o", &settings, "start"])
            .status()
            .await
            .expect("run pg_ctl start");
        assert!(
            status.success(),
            "the private PostgreSQL did not start: {}",
            self.log_tail()
        );
        wait_for_port(self.port).await;
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> std::path::PathBuf {
        self.dir.path().join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `program` of the server binaries, as the postgres user when we are root.
    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        }
    }

    fn tokio_command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::from(self.command(program));
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The directory of PostgreSQL's server binaries: `ORDO_TEST_PG_BIN`, else the newest
/// /usr/lib/postgresql/<version>/bin that has initdb.
fn postgres_bin_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("ORDO_TEST_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().expect(
        "the PostgreSQL server binaries (initdb, pg_ctl) must be installed: apt-get install \
         postgresql postgresql-contrib (or set ORDO_TEST_PG_BIN to their directory)",
    )
}

/// The effective user of this process is root (the owner of /proc/self).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn run_checked(command: &mut std::process::Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
