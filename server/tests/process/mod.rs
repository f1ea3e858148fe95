//! The `caskade` binary as a child process, for the tests that run it as a user or a
//! supervisor would: the command with a clean environment, runs of it expected to succeed
//! ([`ok`]) or to fail with one `error:` line ([`fails`]), signals, bounded waits for exit,
//! and [`Server`], a `caskade serve` on `127.0.0.1:0` whose address is read from its first
//! line of output.
//!
//! Nothing here sleeps: every wait is bounded by [`TIMEOUT`], which only fires on failure.
//! A [`Server`] never outlives its test: dropping it kills the process.

#![allow(
    dead_code,
    reason = "each test file uses a different part of these helpers"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

pub(crate) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long any process may take before the test fails; only fires when something is wrong.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// The binary, with no `CASKADE_*` variable of the environment leaking into it.
pub(crate) fn caskade() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_caskade"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CASKADE_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

/// Runs `caskade ARGS` to completion.
pub(crate) fn run(args: &[&str]) -> TestResult<Output> {
    let child = caskade()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_output(child, &format!("caskade {}", args.join(" ")))
}

/// Runs `caskade ARGS`, expects success and an empty stderr, and returns stdout.
pub(crate) fn ok(args: &[&str]) -> TestResult<String> {
    let output = run(args)?;
    let stdout = String::from_utf8(output.stdout)?;
    let stderr = String::from_utf8(output.stderr)?;
    if !output.status.success() || !stderr.is_empty() {
        return Err(format!(
            "caskade {}: {}\nstdout: {stdout}\nstderr: {stderr}",
            args.join(" "),
            output.status
        )
        .into());
    }
    Ok(stdout)
}

/// Runs `caskade ARGS`, expects a failure reported as exactly one stderr line starting with
/// `error:`, and returns that line.
pub(crate) fn fails(args: &[&str]) -> TestResult<String> {
    let output = run(args)?;
    let stderr = String::from_utf8(output.stderr)?;
    let lines: Vec<&str> = stderr.lines().collect();
    if output.status.success() || output.status.code().is_none() {
        return Err(format!(
            "caskade {} should fail with an exit code, got {}",
            args.join(" "),
            output.status
        )
        .into());
    }
    if lines.len() != 1 || !lines[0].starts_with("error: ") {
        return Err(format!(
            "caskade {}: expected one `error:` line on stderr, got {stderr:?}",
            args.join(" ")
        )
        .into());
    }
    Ok(lines[0].to_owned())
}

/// Parses each line of `stdout` as JSON.
pub(crate) fn json_lines(stdout: &str) -> TestResult<Vec<serde_json::Value>> {
    Ok(stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// Sends `signal` (e.g. "-TERM") to process `pid` with the `kill` command.
pub(crate) fn kill(signal: &str, pid: u32) -> TestResult {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("kill {signal} {pid} failed: {status}").into());
    }
    Ok(())
}

/// Waits for `child` to exit and collects its output; kills it and fails after [`TIMEOUT`].
pub(crate) fn wait_output(child: Child, what: &str) -> TestResult<Output> {
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    if let Ok(output) = receiver.recv_timeout(TIMEOUT) {
        return Ok(output?);
    }
    let _ = kill("-KILL", pid);
    Err(format!("`{what}` did not exit within {TIMEOUT:?}").into())
}

/// A `caskade serve` child process.
pub(crate) struct Server {
    child: Option<Child>,
    addr: String,
    /// Its stderr (the log), in a file so that it can never fill a pipe.
    log: PathBuf,
}

impl Server {
    /// Starts `caskade serve --data-dir DIR --addr 127.0.0.1:0 --sync never EXTRA...` and
    /// reads the bound address from its first line of output.
    pub(crate) fn start(data_dir: &Path, log_dir: &Path, extra: &[&str]) -> TestResult<Server> {
        Server::spawn(data_dir, log_dir, &["--sync", "never"], extra)
    }

    /// As [`Server::start`], with the default sync policy: every acknowledged write is on
    /// disk before its answer, so it survives a SIGKILL.
    pub(crate) fn start_durable(
        data_dir: &Path,
        log_dir: &Path,
        extra: &[&str],
    ) -> TestResult<Server> {
        Server::spawn(data_dir, log_dir, &[], extra)
    }

    /// Starts `caskade serve --addr 127.0.0.1:0 SYNC... --data-dir DIR EXTRA...`, its log
    /// in a new numbered file of `log_dir`.
    fn spawn(data_dir: &Path, log_dir: &Path, sync: &[&str], extra: &[&str]) -> TestResult<Server> {
        let log = log_dir.join(format!("serve-{}.log", std::fs::read_dir(log_dir)?.count()));
        let mut child = caskade()
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(sync)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("stdout is piped")?;
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = sender.send(reader.read_line(&mut line).map(|_| line));
            // Keep draining, so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            log,
        };
        let line = receiver
            .recv_timeout(TIMEOUT)
            .map_err(|_| "the server printed no address")??;
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}; log: {}", server.log_text()))?;
        addr.parse::<std::net::SocketAddr>()?;
        server.addr = addr.to_owned();
        Ok(server)
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn pid(&self) -> TestResult<u32> {
        Ok(self.child.as_ref().ok_or("already stopped")?.id())
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn terminate(mut self) -> TestResult<ExitStatus> {
        let child = self.child.take().ok_or("already stopped")?;
        kill("-TERM", child.id())?;
        Ok(wait_output(child, "caskade serve after SIGTERM")?.status)
    }

    /// Sends SIGKILL, as a crash would, and waits for the process to be gone; fails unless
    /// the signal is what ended it.
    pub(crate) fn kill9(mut self) -> TestResult {
        use std::os::unix::process::ExitStatusExt;
        let child = self.child.take().ok_or("already stopped")?;
        kill("-KILL", child.id())?;
        let status = wait_output(child, "caskade serve after SIGKILL")?.status;
        if status.signal() != Some(libc::SIGKILL) {
            return Err(format!("caskade serve ended with {status}, not by SIGKILL").into());
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
