//! `caskade-bench` as a process against a real server, run in this test's process on
//! `127.0.0.1:0`: every workload runs and reports, and `--only` runs just the parts named.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use caskade_engine::SyncPolicy;
use caskade_eventstore::{EventStore, Options};
use caskade_server::ServerConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long the bench or the server's shutdown may take before the test fails; only fires
/// when something is wrong.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A server running in a task of the test's runtime, with a handle on its store.
struct Server {
    addr: SocketAddr,
    store: EventStore,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), caskade_server::Error>>,
}

impl Server {
    /// Opens a store in `dir` (no syncing: durability is not what is checked) and serves it
    /// on `127.0.0.1:0`.
    async fn start(dir: &Path) -> TestResult<Server> {
        let engine = caskade_engine::Options {
            sync: SyncPolicy::Never,
            ..caskade_engine::Options::default()
        };
        let store = EventStore::open(
            dir,
            Options {
                engine,
                ..Options::default()
            },
        )?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(caskade_server::run(
            listener,
            store.clone(),
            ServerConfig::default(),
            async move {
                let _ = signal.await;
            },
        ));
        Ok(Server {
            addr,
            store,
            shutdown,
            task,
        })
    }

    /// Shuts the server down and waits for `run` to return `Ok`.
    async fn stop(self) -> TestResult {
        let _ = self.shutdown.send(());
        tokio::time::timeout(TIMEOUT, self.task).await???;
        Ok(())
    }
}

/// Runs `caskade-bench` against `server` with `args`; returns what it printed once it has
/// succeeded.
async fn bench(server: &Server, args: &[&str]) -> TestResult<String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_caskade-bench"));
    command
        .args(["--addr", &server.addr.to_string()])
        .args(args);
    let output = tokio::time::timeout(
        TIMEOUT,
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await???;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_every_workload_and_reports_throughput_and_latency() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let stdout = bench(
        &server,
        &["--clients", "1,3", "--events", "60", "--batch-calls", "2"],
    )
    .await?;
    let (suite, floor) = stdout
        .split_once("\n\n")
        .ok_or_else(|| format!("no transport floor section after the suite: {stdout}"))?;
    let mut lines: Vec<&str> = suite.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&format!("Caskade at {}", server.addr).as_str()),
        "{stdout}"
    );
    lines.remove(0);
    let workloads = [
        "append 1 event         clients   1",
        "append 1 event         clients   3",
        "append 100 events",
        "append 1000 events",
        "read stream",
        "read $all",
        "random read            clients   1",
        "random read            clients   3",
        "subscribe send->event",
        "subscribe append rtt",
    ];
    assert_eq!(lines.len(), workloads.len(), "{stdout}");
    for (line, workload) in lines.iter().zip(workloads) {
        assert!(
            line.starts_with(workload),
            "{line:?} should start with {workload:?}"
        );
        assert!(
            line.contains("events/s") && line.contains("p99.9"),
            "{line}"
        );
    }
    // The appends really happened: 60 single events per client count, then two calls of 100
    // and two of 1,000, then the 60-event read stream.
    let read_stream = lines[4];
    assert!(!read_stream.contains(" 0 events/s"), "{read_stream}");
    // Then the transport floor, once per client count.
    let floor: Vec<&str> = floor.lines().collect();
    assert_eq!(floor.len(), 3, "{stdout}");
    assert!(floor[0].starts_with("transport floor"), "{stdout}");
    for (line, clients) in floor[1..].iter().zip(["clients   1", "clients   3"]) {
        assert!(
            line.starts_with("health check") && line.contains(clients),
            "{line:?} should be a health-check line for {clients}"
        );
        assert!(
            line.contains("calls/s") && !line.contains(" 0 calls/s") && line.contains("p99.9"),
            "{line}"
        );
    }
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_only_the_parts_asked_for() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let stdout = bench(&server, &["--only", "batch1000", "--batch-calls", "3"]).await?;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "the address, then one workload and no floor: {stdout}"
    );
    let figures = lines[1];
    assert!(
        figures.starts_with("append 1000 events") && figures.contains("clients   1"),
        "{figures}"
    );
    // Three calls of 1,000 events, every one of them stored.
    assert_eq!(server.store.committed_position().0, 3000);
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_each_workload_through_both_apis_and_prints_the_ratios() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let stdout = bench(
        &server,
        &[
            "--kurrent",
            "--only",
            "append,batch100,read-stream,read-all,random-read,subscribe",
            "--clients",
            "2",
            "--events",
            "40",
            "--batch-calls",
            "2",
        ],
    )
    .await?;
    let (suite, table) = stdout
        .split_once("\n\n")
        .ok_or_else(|| format!("no comparison table after the suite: {stdout}"))?;
    let lines: Vec<&str> = suite.lines().skip(2).collect();
    let workloads = [
        "append 1 event",
        "append 100 events",
        "read stream",
        "read $all",
        "random read",
        "subscribe send->event",
        "subscribe append rtt",
    ];
    // Each workload through caskade.v1, then through the KurrentDB API (the subscription's
    // two lines come together).
    let expected: Vec<(&str, &str)> = workloads[..5]
        .iter()
        .flat_map(|w| [("Caskade", *w), ("KurrentDB API", *w)])
        .chain(workloads[5..].iter().map(|w| ("Caskade", *w)))
        .chain(workloads[5..].iter().map(|w| ("KurrentDB API", *w)))
        .collect();
    assert_eq!(lines.len(), expected.len(), "{stdout}");
    for (line, (api, workload)) in lines.iter().zip(&expected) {
        let figures = line
            .strip_prefix(api)
            .map(str::trim_start)
            .ok_or_else(|| format!("{line:?} should be {api}'s"))?;
        assert!(figures.starts_with(workload), "{line:?}: {workload}");
        assert!(!figures.contains(" 0 events/s"), "{line}");
    }
    // Both APIs wrote the same: 40 single events and two batches of 100 each, a read stream
    // of 40 events, a stream of 40 for the random reads, and the subscription's 40.
    assert_eq!(
        server.store.committed_position().0,
        2 * (40 + 200 + 40 + 40 + 40)
    );
    let table: Vec<&str> = table.lines().collect();
    assert!(
        table[0].contains("Caskade") && table[0].contains("KurrentDB API"),
        "{stdout}"
    );
    assert_eq!(table.len(), 1 + workloads.len(), "{stdout}");
    for row in &table[1..] {
        assert!(row.contains('x'), "a ratio: {row}");
    }
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_read_an_existing_stream_and_a_missing_one_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path()).await?;
    let events = (0..50)
        .map(|n| caskade_eventstore::EventData::json("Numbered", &serde_json::json!({ "n": n })))
        .collect::<Result<Vec<_>, _>>()?;
    server.store.append(
        "orders",
        caskade_eventstore::ExpectedVersion::NoStream,
        &events,
    )?;
    let stdout = bench(
        &server,
        &[
            "--only",
            "random-read",
            "--read-stream",
            "orders",
            "--clients",
            "1,2",
            "--events",
            "30",
        ],
    )
    .await?;
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, clients) in lines.iter().zip(["clients   1", "clients   2"]) {
        assert!(
            line.starts_with("random read") && line.contains(clients),
            "{line:?}"
        );
        assert!(!line.contains(" 0 calls/s"), "{line}");
    }
    // Reading wrote nothing.
    assert_eq!(server.store.committed_position().0, 50);

    let mut command = Command::new(env!("CARGO_BIN_EXE_caskade-bench"));
    command.args([
        "--addr",
        &server.addr.to_string(),
        "--only",
        "random-read",
        "--read-stream",
        "nobody",
    ]);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nobody"), "{stderr}");
    server.stop().await?;
    Ok(())
}
