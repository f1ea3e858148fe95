//! The persistent subscription commands as a user runs them: `caskade group create`,
//! `update`, `delete`, `list`, `info` and `replay-parked`, and `caskade consume`, against a
//! `caskade serve` child process on `127.0.0.1:0`, checked on stdout (JSON lines), stderr
//! and exit codes.
//!
//! Checkpoints and parks are written by the group's task after the consumer's acks and nacks
//! arrive, so the tests poll `group info` until it shows them, within [`TIMEOUT`].

mod process;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use process::{Server, TIMEOUT, TestResult, caskade, fails, json_lines, ok, wait_output};
use serde_json::{Value, json};

/// Settings that make a group checkpoint as soon as one event is finished.
const PROMPT_CHECKPOINTS: &str = "--checkpoint-after-ms 50 --min-checkpoint-count 1";

/// The client commands against one server, each written as one line of words (the tests'
/// arguments hold no spaces) to which `--addr` is added.
struct Cli<'a> {
    addr: &'a str,
}

impl Cli<'_> {
    fn args<'l>(&'l self, line: &'l str) -> Vec<&'l str> {
        let mut args: Vec<&str> = line.split_whitespace().collect();
        args.extend(["--addr", self.addr]);
        args
    }

    /// `caskade LINE`, expected to succeed: its stdout.
    fn ok(&self, line: &str) -> TestResult<String> {
        ok(&self.args(line))
    }

    /// `caskade LINE`, expected to fail with one `error:` line: that line.
    fn fails(&self, line: &str) -> TestResult<String> {
        fails(&self.args(line))
    }

    /// `caskade LINE`, expected to print JSON lines.
    fn json(&self, line: &str) -> TestResult<Vec<Value>> {
        json_lines(&self.ok(line)?)
    }

    /// `caskade LINE`, expected to print exactly one JSON line.
    fn one_json(&self, line: &str) -> TestResult<Value> {
        let mut lines = self.json(line)?;
        if lines.len() != 1 {
            return Err(format!("caskade {line}: expected one line, got {lines:?}").into());
        }
        Ok(lines.remove(0))
    }

    /// Appends one event of type `event_type` with data `{"n": n}` to `stream`.
    fn append(&self, stream: &str, event_type: &str, n: u64) -> TestResult {
        self.ok(&format!(
            "append {stream} --type {event_type} --data {{\"n\":{n}}}"
        ))?;
        Ok(())
    }

    /// `caskade group info STREAM GROUP`.
    fn info(&self, stream: &str, group: &str) -> TestResult<Value> {
        self.one_json(&format!("group info {stream} {group}"))
    }

    /// Polls `group info` until `done` holds, failing with the last answer after
    /// [`TIMEOUT`].
    fn wait_for_info(
        &self,
        stream: &str,
        group: &str,
        done: impl Fn(&Value) -> bool,
    ) -> TestResult<Value> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let info = self.info(stream, group)?;
            if done(&info) {
                return Ok(info);
            }
            if Instant::now() > deadline {
                return Err(format!("group {stream}/{group} never got there: {info}").into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The groups `caskade group list [STREAM]` prints, as `TARGET/GROUP`.
    fn listed(&self, stream: &str) -> TestResult<Vec<String>> {
        Ok(self
            .json(&format!("group list {stream}"))?
            .iter()
            .map(|group| {
                format!(
                    "{}/{}",
                    group["target"].as_str().unwrap_or("?"),
                    group["group"].as_str().unwrap_or("?")
                )
            })
            .collect())
    }
}

/// Starts a server in fresh directories, for `test` to drive.
fn with_server(test: impl FnOnce(&Cli) -> TestResult) -> TestResult {
    let dir = tempfile::tempdir()?;
    let logs = tempfile::tempdir()?;
    let server = Server::start(dir.path(), logs.path(), &[])?;
    test(&Cli {
        addr: server.addr(),
    })
}

#[test]
fn stream_and_all_groups_are_created_listed_and_shown() -> TestResult {
    with_server(|cli| {
        let stream =
            "group create orders billing --from start --max-retry-count 3 --strategy pinned";
        assert_eq!(cli.ok(stream)?, "OK\n");
        let all = "group create $all audit --from 0 --stream-prefix orders \
                   --stream-prefix invoices- --event-type-regex ^Order";
        assert_eq!(cli.ok(all)?, "OK\n");

        // `$all`'s groups first, then by stream.
        assert_eq!(cli.listed("")?, ["$all/audit", "orders/billing"]);
        assert_eq!(cli.listed("orders")?, ["orders/billing"]);
        assert_eq!(cli.listed("$all")?, ["$all/audit"]);
        assert!(cli.listed("elsewhere")?.is_empty());

        let billing = cli.info("orders", "billing")?;
        assert_eq!(
            [
                &billing["status"],
                &billing["filter"],
                &billing["consumers"]
            ],
            [&json!("idle"), &Value::Null, &json!([])]
        );
        assert_eq!(
            [
                &billing["parked"],
                &billing["in_flight"],
                &billing["last_checkpointed"]
            ],
            [&json!(0), &json!(0), &Value::Null]
        );
        let settings = &billing["settings"];
        assert_eq!(
            [
                &settings["from"],
                &settings["max_retry_count"],
                &settings["strategy"]
            ],
            [&json!("start"), &json!(3), &json!("pinned")]
        );
        // What was not given is the server's default, KurrentDB's.
        assert_eq!(
            [
                &settings["message_timeout_ms"],
                &settings["read_batch_size"]
            ],
            [&json!(30_000), &json!(20)]
        );
        let audit = cli.info("$all", "audit")?;
        assert_eq!(
            [&audit["target"], &audit["settings"]["from"]],
            [&json!("$all"), &json!(0)]
        );
        assert_eq!(
            audit["filter"],
            json!({
                "stream_prefixes": ["orders", "invoices-"],
                "stream_regex": null,
                "event_type_prefixes": [],
                "event_type_regex": "^Order",
            })
        );
        Ok(())
    })
}

#[test]
fn groups_are_updated_and_deleted() -> TestResult {
    with_server(|cli| {
        cli.ok("group create orders billing --max-retry-count 3 --strategy pinned")?;
        cli.ok("group create $all audit --stream-prefix orders")?;

        // An update replaces the settings: what it leaves out is the default again.
        assert_eq!(
            cli.ok("group update orders billing --max-retry-count 5")?,
            "OK\n"
        );
        let settings = cli.info("orders", "billing")?["settings"].clone();
        assert_eq!(
            [&settings["max_retry_count"], &settings["strategy"]],
            [&json!(5), &json!("round-robin")]
        );
        // An `$all` group's filter is replaced when one is given, and kept otherwise.
        assert_eq!(
            cli.ok("group update $all audit --event-type-prefix Invoice")?,
            "OK\n"
        );
        assert_eq!(
            cli.ok("group update $all audit --live-buffer-size 100")?,
            "OK\n"
        );
        let audit = cli.info("$all", "audit")?;
        assert_eq!(audit["settings"]["live_buffer_size"], 100);
        assert_eq!(
            audit["filter"],
            json!({
                "stream_prefixes": [],
                "stream_regex": null,
                "event_type_prefixes": ["Invoice"],
                "event_type_regex": null,
            })
        );

        assert_eq!(cli.ok("group delete orders billing")?, "OK\n");
        assert_eq!(cli.listed("")?, ["$all/audit"]);
        assert_eq!(cli.ok("group delete $all audit")?, "OK\n");
        assert!(cli.listed("")?.is_empty());
        Ok(())
    })
}

#[test]
fn consume_count_prints_events_acks_them_and_the_checkpoint_moves() -> TestResult {
    with_server(|cli| {
        for n in 0..3 {
            cli.append("orders", "OrderPlaced", n)?;
        }
        cli.ok(&format!(
            "group create orders workers --from start {PROMPT_CHECKPOINTS}"
        ))?;

        let events = cli.json("consume orders workers --count 3")?;
        let seen: Vec<[&Value; 3]> = events
            .iter()
            .map(|e| [&e["version"], &e["data"]["n"], &e["retry_count"]])
            .collect();
        let zero = json!(0);
        let (one, two) = (json!(1), json!(2));
        assert_eq!(
            seen,
            [
                [&zero, &zero, &zero],
                [&one, &one, &zero],
                [&two, &two, &zero]
            ]
        );
        // The shape `caskade read` and `subscribe` print, with the retry count.
        let stored = cli.json("read orders")?;
        for (mut event, stored) in events.into_iter().zip(stored) {
            assert!(
                event
                    .as_object_mut()
                    .and_then(|e| e.remove("retry_count"))
                    .is_some()
            );
            assert_eq!(event, stored);
        }

        let info = cli.wait_for_info("orders", "workers", |info| info["last_checkpointed"] == 2)?;
        assert_eq!([&info["in_flight"], &info["parked"]], [&zero, &zero]);
        // Acked events are not delivered again: the next consumer gets only what is new.
        cli.append("orders", "OrderPlaced", 3)?;
        let next = cli.json("consume orders workers --count 1 --name second")?;
        assert_eq!(
            [&next[0]["version"], &next[0]["retry_count"]],
            [&json!(3), &zero]
        );
        cli.wait_for_info("orders", "workers", |info| info["last_checkpointed"] == 3)?;
        Ok(())
    })
}

#[test]
fn an_all_group_delivers_only_what_its_filter_matches() -> TestResult {
    with_server(|cli| {
        cli.append("orders-1", "OrderPlaced", 0)?;
        cli.append("users-1", "UserJoined", 1)?;
        cli.append("orders-2", "OrderPlaced", 2)?;
        cli.append("orders-1", "OrderNoted", 3)?;
        cli.ok(&format!(
            "group create $all placed --from start --stream-prefix orders- \
             --event-type-prefix OrderP {PROMPT_CHECKPOINTS}"
        ))?;

        let events = cli.json("consume $all placed --count 2 --buffer-size 1")?;
        let seen: Vec<[&Value; 2]> = events
            .iter()
            .map(|e| [&e["stream"], &e["position"]])
            .collect();
        let expected = [[json!("orders-1"), json!(0)], [json!("orders-2"), json!(2)]];
        assert_eq!(
            seen,
            expected.iter().map(|[s, p]| [s, p]).collect::<Vec<_>>()
        );
        // An `$all` group checkpoints positions.
        cli.wait_for_info("$all", "placed", |info| {
            info["last_checkpointed"].as_u64() >= Some(2) && info["in_flight"] == 0
        })?;
        Ok(())
    })
}

#[test]
fn a_parked_event_is_replayed_to_the_next_consumer() -> TestResult {
    with_server(|cli| {
        cli.append("jobs", "JobQueued", 7)?;
        cli.ok(&format!(
            "group create jobs runners --from start {PROMPT_CHECKPOINTS}"
        ))?;

        let nacked = cli.json("consume jobs runners --nack park --count 1")?;
        assert_eq!(nacked.len(), 1);
        let parked = cli.wait_for_info("jobs", "runners", |info| info["parked"] == 1)?;
        assert_eq!(
            [&parked["in_flight"], &parked["retrying"]],
            [&json!(0), &json!(0)]
        );

        let replayed = cli.one_json("group replay-parked jobs runners")?;
        assert_eq!(replayed, json!({ "replayed": 1 }));
        let again = cli.json("consume jobs runners --count 1")?;
        assert_eq!(
            [&again[0]["id"], &again[0]["data"]],
            [&nacked[0]["id"], &json!({ "n": 7 })]
        );
        let info = cli.wait_for_info("jobs", "runners", |info| info["parked"] == 0)?;
        assert_eq!(info["in_flight"], 0);
        // Nothing is left to replay.
        let none = cli.one_json("group replay-parked jobs runners --limit 5")?;
        assert_eq!(none, json!({ "replayed": 0 }));
        Ok(())
    })
}

#[test]
fn a_consumer_without_count_runs_until_its_group_is_deleted() -> TestResult {
    with_server(|cli| {
        cli.ok("group create feed readers")?;
        let mut consumer = caskade()
            .args(cli.args("consume feed readers --name reader-1"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = consumer.stdout.take().ok_or("stdout is piped")?;
        let (lines, received) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let connected = cli.wait_for_info("feed", "readers", |info| {
            info["consumers"].as_array().is_some_and(|c| c.len() == 1)
        })?;
        let reader = &connected["consumers"][0];
        assert_eq!(
            [
                &reader["name"],
                &reader["buffer_size"],
                &reader["in_flight"]
            ],
            [&json!("reader-1"), &json!(10), &json!(0)]
        );

        // The group started at the end: it delivers what is appended now.
        cli.append("feed", "Posted", 1)?;
        let line = received
            .recv_timeout(TIMEOUT)
            .map_err(|_| "no line from `caskade consume`")??;
        let event: Value = serde_json::from_str(&line)?;
        assert_eq!(
            [&event["version"], &event["data"]],
            [&json!(0), &json!({ "n": 1 })]
        );
        cli.wait_for_info("feed", "readers", |info| info["consumers"][0]["acked"] == 1)?;

        cli.ok("group delete feed readers")?;
        let output = wait_output(consumer, "caskade consume after its group was deleted")?;
        let stderr = String::from_utf8(output.stderr)?;
        assert!(!output.status.success(), "{:?}", output.status);
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains("Aborted"),
            "{stderr:?}"
        );
        Ok(())
    })
}

#[test]
fn bad_arguments_are_refused_before_connecting() -> TestResult {
    // Nothing listens here: each error is about the arguments, not the connection.
    let cli = Cli {
        addr: "127.0.0.1:1",
    };
    let filtered = cli.fails("group create orders billing --stream-prefix o")?;
    assert!(
        filtered.contains("--stream-prefix") && filtered.contains("$all"),
        "{filtered}"
    );
    let refiltered = cli.fails("group update orders billing --event-type-regex x")?;
    assert!(refiltered.contains("--event-type-regex"), "{refiltered}");
    let from = cli.fails("group create orders billing --from soon")?;
    assert!(from.contains("--from") && from.contains("soon"), "{from}");
    let strategy = cli.fails("group create orders billing --strategy random")?;
    assert!(strategy.contains("round-robin"), "{strategy}");
    let buffer = cli.fails("consume orders billing --buffer-size 0")?;
    assert!(buffer.contains("--buffer-size"), "{buffer}");
    let nack = cli.fails("consume orders billing --nack later")?;
    assert!(nack.contains("--nack") && nack.contains("park"), "{nack}");
    Ok(())
}

#[test]
fn bad_group_commands_fail_with_one_error_line_and_change_nothing() -> TestResult {
    with_server(|cli| {
        cli.ok("group create orders billing --max-retry-count 4")?;
        let before = cli.info("orders", "billing")?;

        let filtered = cli.fails("group create orders other --stream-prefix o")?;
        assert!(filtered.contains("--stream-prefix"), "{filtered}");
        let missing = cli.fails("group info orders nope")?;
        assert!(
            missing.contains("nope") && missing.contains("NotFound"),
            "{missing}"
        );
        let consume = cli.fails("consume orders nope --count 1")?;
        assert!(consume.contains("NotFound"), "{consume}");
        let twice = cli.fails("group create orders billing")?;
        assert!(twice.contains("AlreadyExists"), "{twice}");
        let settings = cli.fails("group update orders billing --message-timeout-ms 0")?;
        assert!(
            settings.contains("message_timeout") && settings.contains("InvalidArgument"),
            "{settings}"
        );
        let elsewhere = cli.fails("group delete $all billing")?;
        assert!(elsewhere.contains("NotFound"), "{elsewhere}");

        assert_eq!(cli.listed("")?, ["orders/billing"]);
        assert_eq!(cli.info("orders", "billing")?, before);
        Ok(())
    })
}
