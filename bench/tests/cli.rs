//! `caskade-bench`'s command line: refusals are one `error:` line and a non-zero exit, like
//! every error of Caskade's tools, and come before any connection is tried.

use std::process::Command;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Runs `caskade-bench ARGS`, expects a failure reported as exactly one stderr line starting
/// with `error:`, and returns that line.
fn fails(args: &[&str]) -> TestResult<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_caskade-bench"))
        .args(args)
        .env_remove("CASKADE_ADDR")
        .output()?;
    let stderr = String::from_utf8(output.stderr)?;
    let lines: Vec<&str> = stderr.lines().collect();
    if output.status.success() || output.status.code().is_none() {
        return Err(format!(
            "caskade-bench {} should fail with an exit code, got {}",
            args.join(" "),
            output.status
        )
        .into());
    }
    if lines.len() != 1 || !lines[0].starts_with("error: ") {
        return Err(format!(
            "caskade-bench {}: expected one `error:` line on stderr, got {stderr:?}",
            args.join(" ")
        )
        .into());
    }
    Ok(lines[0].to_owned())
}

#[test]
fn bench_refuses_an_unknown_part_with_one_error_line() -> TestResult {
    let line = fails(&["--addr", "127.0.0.1:9", "--only", "everything"])?;
    assert!(line.contains("invalid value 'everything'"), "{line}");
    Ok(())
}

#[test]
fn bench_refuses_zero_clients_with_one_error_line() -> TestResult {
    fails(&["--addr", "127.0.0.1:9", "--clients", "0"])?;
    Ok(())
}
