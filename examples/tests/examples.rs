//! Runs each example as a program, so none can rot.

use std::path::PathBuf;
use std::process::Command;

/// The example binaries sit in `target/<profile>/examples`, beside this test's `deps` folder;
/// `cargo test` builds them before running tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps")
        .join("examples")
        .join(name)
}

fn run(name: &str, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let output = Command::new(example(name)).args(args).output()?;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(
        output.status.success(),
        "{name} failed: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

#[test]
fn bank_keeps_every_balance_consistent_under_concurrent_tellers()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bank");
    let path = path.to_str().ok_or("temp paths are UTF-8")?;
    let first = run("bank", &[path])?;
    assert!(first.ends_with("ok\n"), "{first}");
    assert!(first.contains("alice: balance"), "{first}");
    // Running again on the same data replays the accounts written by the first run.
    let second = run("bank", &[path])?;
    assert!(second.ends_with("ok\n"), "{second}");
    Ok(())
}

#[test]
fn projection_resumes_after_restart_without_reprocessing() -> Result<(), Box<dyn std::error::Error>>
{
    let out = run("projection", &[])?;
    assert!(out.ends_with("ok\n"), "{out}");
    assert!(
        out.contains("after restart: 25 events applied in all"),
        "{out}"
    );
    Ok(())
}

#[test]
fn an_application_on_kurrentdbs_client_runs_against_caskade_unmodified()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("orders");
    let path = path.to_str().ok_or("temp paths are UTF-8")?;
    let out = run("kurrent_client", &[path])?;
    assert!(out.ends_with("ok\n"), "{out}");
    assert!(
        out.contains("order-0: a stale shipment was refused"),
        "{out}"
    );
    assert!(
        out.contains("order-4: 5 items, 6250 cents, shipped: true, revision 1"),
        "{out}"
    );
    assert!(out.contains("projection: 3 of 5 orders shipped"), "{out}");
    assert!(out.contains("audit: revisions kept [2, 3, 4]"), "{out}");
    Ok(())
}
