//! The server under test, as a child process: started on a free loopback port, waited
//! for until `GET /ready` is 200, measured (peak RSS) and stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A running server process.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pid: u32,
    pub base: String,
    log: PathBuf,
}

/// A free port on 127.0.0.1 (bound, read, released; the server binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Server {
    /// Starts `program args...` with `--listen 127.0.0.1:<port>` appended, its standard
    /// error going to `log`, and waits up to `ready_within` for GET /ready == 200.
    pub async fn start(
        program: &Path,
        args: &[String],
        log: PathBuf,
        ready_within: Duration,
    ) -> anyhow::Result<Server> {
        let mut server = Server::spawn(program, args, log)?;
        server.wait_ready(ready_within).await?;
        Ok(server)
    }

    /// Starts `program args...` as [`start`](Server::start) does, without waiting for it
    /// to be ready (a projector catching up is not ready until it has caught up).
    pub fn spawn(program: &Path, args: &[String], log: PathBuf) -> anyhow::Result<Server> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .arg("--listen")
            .arg(&listen)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id().context("the server exited at once")?;
        Ok(Server {
            child,
            pid,
            base: format!("http://{listen}"),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + within;
        let url = format!("{}/ready", self.base);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited ({status}) before it was ready; its log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server was not ready after {within:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss_of(self.pid)
    }

    /// SIGTERM, then up to 30 s for a graceful exit, then SIGKILL.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    eprintln!(
                        "ordo-load: the server exited with {status} after SIGTERM; its log:\n{}",
                        self.log_tail()
                    );
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the server did not stop within 30 s of SIGTERM; killed it")
            }
        }
    }
}

/// CPU time (user and system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// The unit of the times in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// utime + stime of a `/proc/<pid>/stat` line, in clock ticks. The command name (field
/// 2) is in parentheses and may hold spaces: the fields are counted after its `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmHWM of a process, in bytes.
pub fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_kb_field(&status, "VmHWM:").map(|kb| kb * 1024)
}

/// A `Name:   123 kB` line of `/proc/<pid>/status`.
pub fn parse_kb_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmhwm_from_proc_status_text() {
        let text = "Name:\tordo\nVmPeak:\t  200000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_kb_field(text, "VmHWM:"), Some(51234));
        assert_eq!(parse_kb_field(text, "VmSwap:"), None);
    }

    #[test]
    fn reads_cpu_ticks_after_the_command_name() {
        let stat =
            "4242 (ordo (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 37 0 0 20 0 9 0 100 0";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert_eq!(parse_cpu_ticks("4242 (ordo) S 1"), None);
        assert!(cpu_time_of(std::process::id()).is_some());
    }

    #[test]
    fn our_own_peak_rss_is_readable() {
        assert!(peak_rss_of(std::process::id()).is_some_and(|b| b > 0));
    }
}
