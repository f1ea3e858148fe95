//! The `caskade` binary as a user runs it: `caskade serve` as a child process on
//! `127.0.0.1:0` (its address read from its first line of output), the client subcommands
//! against it, checked on stdout, stderr and exit codes; the data-directory lock, SIGTERM,
//! and the offline tools (`caskade offline check`, `merge`, `scavenge` and `backup`).

mod process;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use caskade_eventstore::EventStore;
use process::{Server, TIMEOUT, TestResult, caskade, fails, json_lines, ok, run};
use serde_json::Value;

#[test]
fn kv_commands_put_get_del_and_keys() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let addr = server.addr();

    assert_eq!(ok(&["put", "--addr", addr, "color", "blue"])?, "OK\n");
    assert_eq!(ok(&["put", "--addr", addr, "colour", "red"])?, "OK\n");
    assert_eq!(ok(&["put", "--addr", addr, "size", "xl"])?, "OK\n");
    assert_eq!(ok(&["put", "--addr", addr, "color", "green"])?, "OK\n");
    assert_eq!(ok(&["get", "--addr", addr, "color"])?, "green\n");

    let mut keys: Vec<String> = ok(&["keys", "--addr", addr])?
        .lines()
        .map(str::to_owned)
        .collect();
    keys.sort();
    assert_eq!(keys, ["color", "colour", "size"]);
    let mut prefixed: Vec<String> = ok(&["keys", "--addr", addr, "col"])?
        .lines()
        .map(str::to_owned)
        .collect();
    prefixed.sort();
    assert_eq!(prefixed, ["color", "colour"]);

    assert_eq!(ok(&["del", "--addr", addr, "color"])?, "OK\n");
    let missing = fails(&["get", "--addr", addr, "color"])?;
    assert!(missing.contains("not found"), "{missing}");
    assert_eq!(ok(&["keys", "--addr", addr, "col"])?, "colour\n");
    // Via the environment, as scripts would.
    let output = caskade()
        .args(["get", "size"])
        .env("CASKADE_ADDR", addr)
        .output()?;
    assert!(output.status.success());
    assert_eq!(output.stdout, b"xl\n");
    Ok(())
}

#[test]
fn connection_options_are_accepted_before_the_subcommand() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &["--token", "t0ken"])?;
    let addr = server.addr();

    assert_eq!(
        ok(&["--addr", addr, "--token", "t0ken", "put", "k", "v"])?,
        "OK\n"
    );
    assert_eq!(
        ok(&["--addr", addr, "--token", "t0ken", "get", "k"])?,
        "v\n"
    );
    // Split around the subcommand.
    assert_eq!(
        ok(&["--addr", addr, "get", "--token", "t0ken", "k"])?,
        "v\n"
    );
    // The token before the subcommand is the one sent: without it the server refuses.
    let no_token = fails(&["--addr", addr, "get", "k"])?;
    assert!(no_token.contains("Unauthenticated"), "{no_token}");
    // The environment still fills in what the command line leaves out.
    let output = caskade()
        .args(["--addr", addr, "get", "k"])
        .env("CASKADE_TOKEN", "t0ken")
        .output()?;
    assert_eq!(output.stdout, b"v\n", "{output:?}");
    // `--addr` before `serve` is the listen address.
    let data_dir = dir.path().join("other");
    let data_text = data_dir.to_str().ok_or("temp paths are UTF-8")?;
    let bad = fails(&["--addr", "nowhere", "serve", "--data-dir", data_text])?;
    assert!(bad.contains("--addr") && bad.contains("nowhere"), "{bad}");
    Ok(())
}

/// Splits a command line on whitespace (the tests' arguments hold no spaces).
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// One field of each JSON line of `stdout`.
fn field(stdout: &str, name: &str) -> TestResult<Vec<Value>> {
    Ok(json_lines(stdout)?
        .iter()
        .map(|e| e[name].clone())
        .collect())
}

#[test]
fn append_read_streams_and_delete_commands() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let addr = server.addr();
    let append = |stream: &str, n: u64, expected: &str| -> TestResult<Value> {
        let line = format!(
            r#"append --addr {addr} {stream} --type Counted --data {{"n":{n}}} --expected-version {expected}"#
        );
        Ok(serde_json::from_str(ok(&words(&line))?.trim_end())?)
    };

    let first = append("orders", 0, "no-stream")?;
    assert_eq!(
        first,
        serde_json::json!({"next_expected_version": 0, "position": 0})
    );
    assert_eq!(append("orders", 1, "0")?["next_expected_version"], 1);
    assert_eq!(append("orders", 2, "exists")?["next_expected_version"], 2);
    assert_eq!(append("orders", 3, "any")?["next_expected_version"], 3);
    assert_eq!(append("other", 0, "any")?["position"], 4);

    let events = json_lines(&ok(&["read", "--addr", addr, "orders"])?)?;
    let ns: Vec<_> = events.iter().map(|e| e["data"]["n"].clone()).collect();
    assert_eq!(ns, [0, 1, 2, 3]);
    for (version, event) in events.iter().enumerate() {
        assert_eq!(event["version"], version);
        assert_eq!(event["stream"], "orders");
        assert_eq!(event["type"], "Counted");
        assert!(
            event["id"].as_str().is_some_and(|id| id.len() == 36),
            "{event}"
        );
    }
    let read = |options: &str| ok(&words(&format!("read --addr {addr} {options}")));
    assert_eq!(
        field(&read("orders --from 1 --count 2")?, "version")?,
        [1, 2]
    );
    assert_eq!(
        field(&read("orders --backwards --count 3")?, "version")?,
        [3, 2, 1]
    );
    assert_eq!(field(&read("$all")?, "position")?, [0, 1, 2, 3, 4]);
    assert_eq!(
        field(&read("$all --from 3 --backwards")?, "position")?,
        [3, 2, 1, 0]
    );
    assert_eq!(
        field(&read("$all --from 2 --count 2")?, "stream")?,
        ["orders", "orders"]
    );

    assert_eq!(
        ok(&["streams", "--addr", addr])?,
        "orders\t3\tlive\nother\t0\tlive\n"
    );
    assert_eq!(ok(&["delete", "--addr", addr, "other"])?, "OK\n");
    assert_eq!(
        ok(&["streams", "--addr", addr])?,
        "orders\t3\tlive\nother\t0\tdeleted\n"
    );
    assert_eq!(ok(&["read", "--addr", addr, "other"])?, "");
    Ok(())
}

#[test]
fn failed_appends_print_one_error_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let addr = server.addr();
    let append = |options: &str| format!("append --addr {addr} orders --type T {options}");
    ok(&words(&append("--data {} --expected-version no-stream")))?;
    ok(&words(&append("--data {}")))?;

    let conflict = fails(&words(&append("--data {} --expected-version 0")))?;
    assert!(
        conflict.contains("expected 0") && conflict.contains("actual 1"),
        "{conflict}"
    );
    assert!(conflict.contains("FailedPrecondition"), "{conflict}");
    let bad_json = fails(&words(&append("--data {nope")))?;
    assert!(bad_json.contains("JSON"), "{bad_json}");
    let bad_version = fails(&words(&append("--data {} --expected-version soon")))?;
    assert!(bad_version.contains("--expected-version"), "{bad_version}");
    let reserved = fails(&words(&format!(
        "append --addr {addr} $all --type T --data {{}}"
    )))?;
    assert!(reserved.contains("InvalidArgument"), "{reserved}");
    assert_eq!(
        field(
            &ok(&words(&format!("read --addr {addr} orders")))?,
            "version"
        )?,
        [0, 1]
    );
    Ok(())
}

#[test]
fn subscribe_prints_stored_then_live_events() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let addr = server.addr();
    ok(&[
        "append",
        "--addr",
        addr,
        "feed",
        "--type",
        "Old",
        "--data",
        r#"{"n":0}"#,
    ])?;

    let mut subscriber = caskade()
        .args(["subscribe", "--addr", addr, "feed"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = subscriber.stdout.take().ok_or("stdout is piped")?;
    let mut stderr = subscriber.stderr.take().ok_or("stderr is piped")?;
    let (lines, received) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let next_event = || -> TestResult<Value> {
        let line = received
            .recv_timeout(TIMEOUT)
            .map_err(|_| "no line from `caskade subscribe`")??;
        Ok(serde_json::from_str(&line)?)
    };

    let old = next_event()?;
    assert_eq!(
        (old["type"].clone(), old["version"].clone()),
        ("Old".into(), 0.into())
    );
    // Appended by another process while the subscription is live.
    ok(&[
        "append",
        "--addr",
        addr,
        "elsewhere",
        "--type",
        "Noise",
        "--data",
        "{}",
    ])?;
    ok(&[
        "append",
        "--addr",
        addr,
        "feed",
        "--type",
        "New",
        "--data",
        r#"{"n":1}"#,
    ])?;
    let new = next_event()?;
    assert_eq!(
        (
            new["type"].clone(),
            new["version"].clone(),
            new["data"]["n"].clone()
        ),
        ("New".into(), 1.into(), 1.into())
    );

    subscriber.kill()?;
    subscriber.wait()?;
    let mut messages = String::new();
    stderr.read_to_string(&mut messages)?;
    assert!(messages.contains("caught up"), "{messages:?}");

    // `$all` from after a position.
    let mut from = caskade()
        .args(["subscribe", "--addr", addr, "$all", "--from", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut reader = BufReader::new(from.stdout.take().ok_or("stdout is piped")?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    from.kill()?;
    from.wait()?;
    let first: Value = serde_json::from_str(&first)?;
    assert_eq!(
        (first["position"].clone(), first["type"].clone()),
        (1.into(), "Noise".into())
    );
    Ok(())
}

/// Checks that `event`'s `recorded_at` is RFC 3339 in UTC with microseconds and returns it as
/// microseconds since the Unix epoch.
fn recorded_at_micros(event: &Value) -> TestResult<i64> {
    let text = event["recorded_at"]
        .as_str()
        .ok_or_else(|| format!("no recorded_at string in {event}"))?;
    let time = chrono::DateTime::parse_from_rfc3339(text)?;
    let fraction = text
        .strip_suffix('Z')
        .and_then(|t| t.rsplit_once('.'))
        .map(|(_, digits)| digits);
    assert!(
        fraction.is_some_and(|d| d.len() == 6 && d.bytes().all(|b| b.is_ascii_digit())),
        "{text:?} is not UTC with six fractional digits"
    );
    assert_eq!(time.offset().local_minus_utc(), 0, "{text:?}");
    assert!(event.get("recorded_at_micros").is_none(), "{event}");
    Ok(time.timestamp_micros())
}

/// The times the server recorded for `stream`'s events, in microseconds, read over gRPC.
fn stored_times(addr: &str, stream: &str) -> TestResult<Vec<i64>> {
    use caskade_proto::v1 as pb;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client =
            pb::streams_client::StreamsClient::connect(format!("http://{addr}")).await?;
        let request = pb::ReadRequest {
            target: Some(pb::read_request::Target::Stream(stream.to_owned())),
            ..pb::ReadRequest::default()
        };
        let mut messages = client.read(request).await?.into_inner();
        let mut times = Vec::new();
        while let Some(message) = messages.message().await? {
            times.extend(message.events.iter().map(|e| e.recorded_at_micros));
        }
        Ok(times)
    })
}

#[test]
fn read_and_subscribe_print_recorded_at_as_rfc3339() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let addr = server.addr();
    let before = chrono::Utc::now().timestamp_micros();
    for n in 0..2 {
        let data = format!(r#"{{"n":{n}}}"#);
        ok(&[
            "append", "--addr", addr, "clock", "--type", "T", "--data", &data,
        ])?;
    }
    let after = chrono::Utc::now().timestamp_micros();
    let stored = stored_times(addr, "clock")?;
    assert_eq!(stored.len(), 2);

    let read = json_lines(&ok(&["read", "--addr", addr, "clock"])?)?;
    let printed: Vec<i64> = read
        .iter()
        .map(recorded_at_micros)
        .collect::<TestResult<_>>()?;
    assert_eq!(printed, stored);
    assert!(
        printed.iter().all(|t| (before..=after).contains(t)),
        "{printed:?} not within {before}..={after}"
    );

    let mut subscriber = caskade()
        .args(["subscribe", "--addr", addr, "clock"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut reader = BufReader::new(subscriber.stdout.take().ok_or("stdout is piped")?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    subscriber.kill()?;
    subscriber.wait()?;
    let first: Value = serde_json::from_str(&first)?;
    assert_eq!(recorded_at_micros(&first)?, stored[0]);
    Ok(())
}

#[test]
fn admin_commands_merge_backup_and_stats() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let backups = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let addr = server.addr();
    for n in 0..3 {
        ok(&[
            "append",
            "--addr",
            addr,
            "s",
            "--type",
            "E",
            "--data",
            &format!("{n}"),
        ])?;
        ok(&["put", "--addr", addr, "k", &format!("value {n}")])?;
    }

    let stats: Value = serde_json::from_str(ok(&["stats", "--addr", addr])?.trim_end())?;
    assert_eq!(stats["streams"], 1);
    assert_eq!(stats["committed_position"], 3);
    // 3 events, 3 `$all` entries, the head, one key.
    assert_eq!(stats["live_keys"], 8);
    assert!(
        stats["keydir_bytes_per_key"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{stats}"
    );
    // Just written, so in the page cache.
    assert!(
        stats["cache_bytes"].as_u64().is_some_and(|b| b > 0),
        "{stats}"
    );
    assert!(
        stats["dead_bytes"].as_u64().is_some_and(|b| b > 0),
        "{stats}"
    );

    let merged = ok(&["merge", "--addr", addr])?;
    assert!(merged.starts_with("merged "), "{merged}");
    let after: Value = serde_json::from_str(ok(&["stats", "--addr", addr])?.trim_end())?;
    assert_eq!(after["live_keys"], 8);
    assert_eq!(after["dead_bytes"], 0, "{after}");

    let dest = backups.path().join("copy");
    let dest_text = dest.to_str().ok_or("temp paths are UTF-8")?;
    let backed_up = ok(&["backup", "--addr", addr, dest_text])?;
    assert!(backed_up.starts_with("backed up "), "{backed_up}");
    let again = fails(&["backup", "--addr", addr, dest_text])?;
    assert!(again.contains("AlreadyExists"), "{again}");
    let copy = EventStore::open(&dest, caskade_eventstore::Options::default())?;
    assert_eq!(copy.read_stream_to_vec("s")?.len(), 3);
    assert_eq!(copy.kv().get(b"k")?, Some(b"value 2".to_vec()));
    copy.close()?;
    assert_eq!(ok(&["get", "--addr", addr, "k"])?, "value 2\n");
    Ok(())
}

#[test]
fn a_port_with_no_server_is_one_error_line() -> TestResult {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.to_string()
    };
    let line = fails(&["get", "--addr", &addr, "k"])?;
    assert!(line.contains(&addr), "names the address: {line}");
    fails(&["streams", "--addr", &addr])?;
    fails(&["read", "--addr", &addr, "$all"])?;
    Ok(())
}

/// The server turns transparent huge pages off for itself (see `main.rs`): the kernel says so
/// in the process's status.
#[cfg(target_os = "linux")]
#[test]
fn the_server_runs_without_transparent_huge_pages() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()?))?;
    let thp = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .ok_or("no THP_enabled line in /proc/PID/status")?;
    assert_eq!(thp.trim(), "0");
    Ok(())
}

#[test]
fn a_second_server_on_the_same_directory_fails_at_once_naming_the_lock() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    ok(&["put", "--addr", server.addr(), "k", "v"])?;

    let data_dir = dir.path().to_str().ok_or("temp paths are UTF-8")?;
    let output = run(&["serve", "--data-dir", data_dir, "--addr", "127.0.0.1:0"])?;
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "it never listened");
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("locked"),
        "{stderr:?}"
    );
    // The offline tools refuse a running store too.
    assert!(fails(&["offline", "check", data_dir])?.contains("locked"));
    assert!(fails(&["offline", "merge", data_dir])?.contains("locked"));
    // The first server is unharmed.
    assert_eq!(ok(&["get", "--addr", server.addr(), "k"])?, "v\n");
    Ok(())
}

#[test]
fn sigterm_stops_the_server_cleanly_and_the_offline_tools_work() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let backups = tempfile::tempdir()?;
    let data_dir = dir.path().to_str().ok_or("temp paths are UTF-8")?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let addr = server.addr().to_owned();
    // The first record of the data file: one put with a 200-byte value.
    ok(&["put", "--addr", &addr, "big", &"v".repeat(200)])?;
    for n in 0..20 {
        ok(&[
            "append",
            "--addr",
            &addr,
            &format!("s-{}", n % 3),
            "--type",
            "E",
            "--data",
            &format!("{n}"),
        ])?;
    }
    ok(&["put", "--addr", &addr, "big", "overwritten"])?;

    let log = server.log_text();
    let status = server.terminate()?;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM is a clean stop: {status}; log: {log}"
    );

    let checked = ok(&["offline", "check", data_dir])?;
    assert!(
        checked.starts_with("checked ") && checked.trim_end().ends_with(": 0 problems"),
        "{checked}"
    );
    let dest = backups.path().join("offline");
    let dest_text = dest.to_str().ok_or("temp paths are UTF-8")?;
    assert!(ok(&["offline", "backup", data_dir, dest_text])?.starts_with("backed up "));
    assert!(ok(&["offline", "merge", data_dir])?.starts_with("merged "));
    assert!(
        ok(&["offline", "check", data_dir])?
            .trim_end()
            .ends_with(": 0 problems")
    );
    assert!(
        fails(&[
            "offline",
            "merge",
            backups.path().join("missing").to_str().ok_or("utf-8")?
        ])?
        .starts_with("error: ")
    );

    // Everything acknowledged is there, in the store and in its backup.
    for path in [dir.path(), dest.as_path()] {
        let store = EventStore::open(path, caskade_eventstore::Options::default())?;
        let counts: Vec<usize> = (0..3)
            .map(|s| store.read_stream_to_vec(&format!("s-{s}")).map(|e| e.len()))
            .collect::<Result<_, _>>()?;
        assert_eq!(counts, [7, 7, 6], "{}", path.display());
        assert_eq!(store.committed_position().0, 20);
        assert_eq!(store.kv().get(b"big")?, Some(b"overwritten".to_vec()));
        store.close()?;
    }

    // Corrupt the backup: flip a byte in the middle of the first record of its first data
    // file, which valid records follow.
    corrupt_first_record(&dest)?;
    let output = run(&["offline", "check", dest_text])?;
    assert_eq!(output.status.code(), Some(1), "check fails on corruption");
    let problems = String::from_utf8(output.stderr)?;
    assert!(problems.contains("corrupt"), "{problems:?}");
    let summary = String::from_utf8(output.stdout)?;
    assert!(!summary.trim_end().ends_with(": 0 problems"), "{summary}");
    Ok(())
}

/// Flips one byte in the middle of the first record of the lowest-numbered data file in
/// `dir` (layout in `engine/FORMAT.md`: a 16-byte file header, then records with a 19-byte
/// header whose key length is at offset 13 and value length at offset 15).
fn corrupt_first_record(dir: &Path) -> TestResult {
    const FILE_HEADER: usize = 16;
    const RECORD_HEADER: usize = 19;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "data"));
    files.sort();
    let path = files.first().ok_or("a backup has a data file")?;
    let mut bytes = std::fs::read(path)?;
    let record = &bytes[FILE_HEADER..];
    let key_len = usize::from(u16::from_le_bytes([record[13], record[14]]));
    let value_len = u32::from_le_bytes([record[15], record[16], record[17], record[18]]) as usize;
    let len = RECORD_HEADER + key_len + value_len;
    assert!(
        bytes.len() > FILE_HEADER + len,
        "records follow the first one"
    );
    bytes[FILE_HEADER + len / 2] ^= 0x40;
    std::fs::write(path, bytes)?;
    Ok(())
}

#[test]
fn append_with_an_id_is_idempotent_and_a_bad_id_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let addr = server.addr();
    let id = "1b4e28ba-2fa1-11d2-883f-0016cb5ab4a3";
    let args = [
        "append",
        "--addr",
        addr,
        "pay",
        "--type",
        "Paid",
        "--data",
        "{}",
        "--id",
        id,
        "--expected-version",
        "no-stream",
    ];
    let first = ok(&args)?;
    // A retry after a lost reply: same id, same expected version, same answer.
    assert_eq!(ok(&args)?, first);
    let events = json_lines(&ok(&["read", "--addr", addr, "pay"])?)?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], id);

    let bad = fails(&[
        "append", "--addr", addr, "pay", "--type", "Paid", "--data", "{}", "--id", "nope",
    ])?;
    assert!(bad.contains("InvalidArgument"), "{bad}");
    Ok(())
}

#[test]
fn token_and_tls_flags_secure_the_server() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let certs = tempfile::tempdir()?;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    let cert_text = cert.to_str().ok_or("temp paths are UTF-8")?;
    let key_text = key.to_str().ok_or("temp paths are UTF-8")?;
    let server = Server::start(
        dir.path(),
        logs.path(),
        &[
            "--token",
            "t0ken",
            "--tls-cert",
            cert_text,
            "--tls-key",
            key_text,
        ],
    )?;
    let addr = server.addr();
    let secure = ["--addr", addr, "--token", "t0ken", "--tls-ca", cert_text];

    assert_eq!(ok(&[&["put"][..], &secure, &["k", "v"]].concat())?, "OK\n");
    assert_eq!(ok(&[&["get"][..], &secure, &["k"]].concat())?, "v\n");
    // The same options before the subcommand.
    assert_eq!(ok(&[&secure[..], &["get", "k"]].concat())?, "v\n");
    // Token from the environment.
    let output = caskade()
        .args(["get", "--addr", addr, "--tls-ca", cert_text, "k"])
        .env("CASKADE_TOKEN", "t0ken")
        .output()?;
    assert_eq!(output.stdout, b"v\n", "{output:?}");

    let no_token = fails(&["get", "--addr", addr, "--tls-ca", cert_text, "k"])?;
    assert!(no_token.contains("Unauthenticated"), "{no_token}");
    let wrong_token = fails(&[
        "get", "--addr", addr, "--tls-ca", cert_text, "--token", "x", "k",
    ])?;
    assert!(wrong_token.contains("Unauthenticated"), "{wrong_token}");
    // Plaintext to a TLS server gets no answer.
    fails(&["get", "--addr", addr, "--token", "t0ken", "k"])?;
    // A certificate for another name is refused.
    fails(&[&["get"][..], &secure, &["--tls-domain", "example.com", "k"]].concat())?;
    Ok(())
}

/// An append through KurrentDB's Rust client, plaintext, to the server at `addr` with
/// `credentials` (`NAME:PASSWORD@` or nothing) in the connection string.
fn kurrent_append(addr: &str, credentials: &str) -> TestResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let settings: kurrentdb::ClientSettings =
            format!("esdb://{credentials}{addr}?tls=false").parse()?;
        let client = kurrentdb::Client::new(settings)?;
        let event = kurrentdb::EventData::binary("Login", vec![1].into());
        let options = kurrentdb::AppendToStreamOptions::default();
        let appending = client.append_to_stream("logins", &options, event);
        tokio::time::timeout(TIMEOUT, appending).await??;
        Ok(())
    })
}

#[test]
fn users_from_flags_and_a_file_are_accepted_and_bad_ones_refused_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let users = dir.path().join("users");
    std::fs::write(&users, "# who may call\nadmin:changeit\n\nreader:s3cret\n")?;
    let users_text = users.to_str().ok_or("temp paths are UTF-8")?;
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        logs.path(),
        &["--users-file", users_text, "--user", "ops:0ps"],
    )?;
    let addr = server.addr();
    for credentials in ["admin:changeit@", "reader:s3cret@", "ops:0ps@"] {
        kurrent_append(addr, credentials)?;
    }
    for refused in ["admin:guess@", ""] {
        let error = kurrent_append(addr, refused).expect_err("refused");
        assert!(
            matches!(
                error.downcast_ref::<kurrentdb::Error>(),
                Some(kurrentdb::Error::AccessDenied)
            ),
            "{refused}: {error}"
        );
    }
    // The CLI's own commands send a user's credentials too.
    assert_eq!(
        ok(&["put", "--addr", addr, "--login", "reader:s3cret", "k", "v"])?,
        "OK\n"
    );
    let output = caskade()
        .args(["get", "--addr", addr, "k"])
        .env("CASKADE_LOGIN", "admin:changeit")
        .output()?;
    assert_eq!(output.stdout, b"v\n", "{output:?}");
    let anonymous = fails(&["get", "--addr", addr, "k"])?;
    assert!(anonymous.contains("Unauthenticated"), "{anonymous}");
    let wrong = fails(&["get", "--addr", addr, "--login", "reader:guess", "k"])?;
    assert!(wrong.contains("Unauthenticated"), "{wrong}");
    let both = fails(&["get", "--addr", addr, "--login", "a:b", "--token", "t", "k"])?;
    assert!(both.contains("--token"), "{both}");
    // Credentials without TLS work, with a warning in the log.
    assert!(
        server.log_text().contains("without TLS"),
        "{}",
        server.log_text()
    );
    assert_eq!(server.terminate()?.code(), Some(0));

    let data_text = data.to_str().ok_or("temp paths are UTF-8")?;
    let serve = ["serve", "--data-dir", data_text, "--addr", "127.0.0.1:0"];
    let no_colon = fails(&[&serve[..], &["--user", "admin"]].concat())?;
    assert!(no_colon.contains("NAME:PASSWORD"), "{no_colon}");
    let twice = fails(
        &[
            &serve[..],
            &[
                "--user",
                "a:1",
                "--users-file",
                users_text,
                "--user",
                "admin:2",
            ],
        ]
        .concat(),
    )?;
    assert!(twice.contains("\"admin\" is given twice"), "{twice}");
    std::fs::write(&users, "admin:changeit\nreader\n")?;
    let bad_file = fails(&[&serve[..], &["--users-file", users_text]].concat())?;
    assert!(bad_file.contains("line 2"), "{bad_file}");
    Ok(())
}

#[test]
fn bad_serve_settings_fail_at_once_with_one_error_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().to_str().ok_or("temp paths are UTF-8")?;
    let sync = fails(&[
        "serve",
        "--data-dir",
        data_dir,
        "--addr",
        "127.0.0.1:0",
        "--sync",
        "sometimes",
    ])?;
    assert!(sync.contains("--sync"), "{sync}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory")?;
    let file_text = file.to_str().ok_or("temp paths are UTF-8")?;
    let not_dir = fails(&["serve", "--data-dir", file_text, "--addr", "127.0.0.1:0"])?;
    assert!(not_dir.contains("not a directory"), "{not_dir}");
    let missing_key = dir.path().join("missing.pem");
    let missing_text = missing_key.to_str().ok_or("temp paths are UTF-8")?;
    let tls = fails(&[
        "serve",
        "--data-dir",
        data_dir,
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        missing_text,
        "--tls-key",
        missing_text,
    ])?;
    assert!(tls.contains("missing.pem"), "{tls}");
    // None of them left a lock behind: a server starts on that directory now.
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    assert_eq!(ok(&["put", "--addr", server.addr(), "k", "v"])?, "OK\n");
    assert_eq!(server.terminate()?.code(), Some(0));
    Ok(())
}

#[test]
fn sigterm_as_soon_as_the_server_says_it_listens_is_a_clean_stop() -> TestResult {
    // A supervisor may stop a server the moment it reports its address; that must be the
    // same clean stop (exit 0, store closed) as later.
    // Several times over the same directory: each start must find the store closed.
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    for start in 0..5 {
        let server = Server::start(dir.path(), logs.path(), &[])?;
        let log = logs.path().join(format!("serve-{start}.log"));
        let status = server.terminate()?;
        let log = std::fs::read_to_string(log)?;
        assert_eq!(
            status.code(),
            Some(0),
            "start {start}: {status}; log: {log}"
        );
        assert!(log.contains("store synced and closed"), "{log}");
    }
    Ok(())
}

#[test]
fn command_line_errors_are_one_line_naming_the_problem() -> TestResult {
    let line = fails(&["read"])?;
    assert!(line.contains("<STREAM>"), "{line}");
    let line = fails(&["append", "s", "--type", "T", "--data", "{}", "--nonsense"])?;
    assert!(line.contains("--nonsense"), "{line}");
    let line = fails(&["serve", "--sync", "sometimes"])?;
    assert!(line.contains("sometimes"), "{line}");
    assert!(run(&["--help"])?.status.success());
    Ok(())
}

/// Writes `streams` streams of ten 1 KB events each into the store in `dir`, then
/// soft-deletes all but the first `keep`.
fn populate_and_delete(dir: &Path, streams: usize, keep: usize) -> TestResult {
    use caskade_eventstore::{EventData, ExpectedVersion};
    let store = EventStore::open(dir, caskade_eventstore::Options::default())?;
    for n in 0..streams {
        let events: Vec<EventData> = (0..10)
            .map(|i| EventData::binary("Filled", vec![u8::try_from(i).unwrap_or(0); 1000]))
            .collect();
        store.append(&format!("s-{n:02}"), ExpectedVersion::Any, &events)?;
    }
    for n in keep..streams {
        store.delete_stream(&format!("s-{n:02}"), ExpectedVersion::Any)?;
    }
    store.close()?;
    Ok(())
}

/// The numbers of a `scavenged ...` line: streams, events examined, removed, bytes reclaimed.
fn scavenged_numbers(line: &str) -> TestResult<[u64; 4]> {
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|word| !word.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if !line.starts_with("scavenged ") || numbers.len() != 4 {
        return Err(format!("unexpected scavenge line {line:?}").into());
    }
    Ok([numbers[0], numbers[1], numbers[2], numbers[3]])
}

fn data_dir_bytes(dir: &Path) -> TestResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

#[test]
fn scavenge_online_and_offline_removes_hidden_events_and_gives_the_space_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let data_dir = dir.path().to_str().ok_or("temp paths are UTF-8")?;
    // 20 streams of 10 events, 18 of them deleted.
    populate_and_delete(dir.path(), 20, 2)?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    let before = data_dir_bytes(dir.path())?;
    let line = ok(&["scavenge", "--addr", server.addr()])?;
    let [streams, examined, removed, reclaimed] = scavenged_numbers(line.trim_end())?;
    assert_eq!((streams, removed), (20, 180), "{line}");
    assert!(examined >= removed, "{line}");
    assert!(reclaimed > 180 * 1000, "{line}");
    let after = data_dir_bytes(dir.path())?;
    assert!(
        after < before / 5,
        "the directory shrank from {before} to {after} bytes"
    );
    for stream in ["s-00", "s-01"] {
        let events = json_lines(&ok(&["read", "--addr", server.addr(), stream])?)?;
        assert_eq!(events.len(), 10, "{stream}");
    }
    assert_eq!(server.terminate()?.code(), Some(0));

    // Offline: delete one more stream with the server stopped, then scavenge the directory.
    let store = EventStore::open(dir.path(), caskade_eventstore::Options::default())?;
    store.delete_stream("s-01", caskade_eventstore::ExpectedVersion::Any)?;
    store.close()?;
    let line = ok(&["offline", "scavenge", data_dir])?;
    let [streams, _, removed, reclaimed] = scavenged_numbers(line.trim_end())?;
    assert_eq!((streams, removed), (20, 10), "{line}");
    assert!(reclaimed > 10 * 1000, "{line}");
    let store = EventStore::open(dir.path(), caskade_eventstore::Options::default())?;
    assert_eq!(store.read_stream_to_vec("s-00")?.len(), 10);
    assert!(store.read_stream_to_vec("s-01")?.is_empty());
    store.close()?;
    assert!(
        ok(&["offline", "check", data_dir])?
            .trim_end()
            .ends_with(": 0 problems")
    );

    let missing = dir.path().join("missing");
    let error = fails(&["offline", "scavenge", missing.to_str().ok_or("utf-8")?])?;
    assert!(error.contains("missing"), "{error}");
    Ok(())
}

#[test]
fn serve_limits_and_the_scavenge_interval_reach_the_server() -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let data_dir = dir.path().to_str().ok_or("temp paths are UTF-8")?;
    let serve = ["serve", "--data-dir", data_dir, "--addr", "127.0.0.1:0"];
    let too_small = fails(&[&serve[..], &["--max-message-size", "100000"]].concat())?;
    assert!(
        too_small.contains("--max-message-size 100000") && too_small.contains("at least 4195"),
        "{too_small}"
    );
    let interval = fails(&[&serve[..], &["--scavenge-interval", "soon"]].concat())?;
    assert!(interval.contains("--scavenge-interval"), "{interval}");

    populate_and_delete(dir.path(), 3, 1)?;
    let server = Server::start(
        dir.path(),
        logs.path(),
        &["--max-stream-name-len", "10", "--scavenge-interval", "1s"],
    )?;
    let append = |stream: &str| {
        vec![
            "append".to_owned(),
            "--addr".to_owned(),
            server.addr().to_owned(),
            stream.to_owned(),
            "--type".to_owned(),
            "E".to_owned(),
            "--data".to_owned(),
            "1".to_owned(),
        ]
    };
    let long = append(&"n".repeat(11));
    let refused = fails(&long.iter().map(String::as_str).collect::<Vec<_>>())?;
    assert!(
        refused.contains("10") && refused.contains("ResourceExhausted"),
        "{refused}"
    );
    ok(&append(&"n".repeat(10))
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())?;

    // The 20 deleted events and their `$all` entries go at the first automatic scavenge
    // (the live keys before it: 17 and these 22).
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let stats: Value =
            serde_json::from_str(ok(&["stats", "--addr", server.addr()])?.trim_end())?;
        // Left: s-00's ten events and the `$all` entry of their append, the new event and
        // its entry, three heads and the new stream's.
        // Between a scavenge's deletes and its merge the dead bytes are still there.
        if stats["live_keys"] == 10 + 1 + 1 + 1 + 3 + 1 && stats["dead_bytes"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no automatic scavenge within {TIMEOUT:?}: {stats}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.terminate()?.code(), Some(0));
    Ok(())
}

#[test]
fn online_admin_commands_take_no_directory_and_bench_is_no_command() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().to_str().ok_or("temp paths are UTF-8")?;
    // A stopped store's tools say `offline`; the online forms refuse a directory.
    for args in [
        &["merge", data_dir][..],
        &["scavenge", data_dir],
        &["backup", data_dir, "copy"],
    ] {
        let line = fails(args)?;
        assert!(line.contains("unexpected argument"), "{line}");
    }
    // The load generator is `caskade-bench`, not part of this binary.
    let line = fails(&["bench"])?;
    assert!(line.contains("unrecognized subcommand 'bench'"), "{line}");
    Ok(())
}
