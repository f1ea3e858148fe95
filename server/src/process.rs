//! What the `caskade` and `caskade-bench` binaries share as processes: the memory setting they
//! apply as they start, so that the server and its load generator run under the same
//! conditions, and how they report a failure: one line on stderr.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

/// mimalloc asks for transparent huge pages on its whole heap (`MADV_HUGEPAGE`), so the first
/// write to each new 2 MiB of heap faults in a whole huge page at once, stalling whichever
/// append's keydir inserts grow the heap (figures in `docs/benchmarks.md`). Without them the
/// same memory arrives 4 KiB at a time, spread over the writes that touch it. This is what
/// mimalloc's `MIMALLOC_ALLOW_THP=0` does, done here so that no one has to remember to set it.
#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "a plain system call; libc has no safe wrapper for prctl"
)]
pub fn disable_transparent_huge_pages() {
    // SAFETY: `PR_SET_THP_DISABLE` takes integers only and touches no memory of ours. If it
    // fails (an old kernel), huge pages stay as they were, which costs only latency.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Runs `work` on a new multi-threaded runtime and returns its exit code; a failure is printed
/// as its [`error_line`] and exits with 1.
pub fn run<E: AsRef<dyn Error + 'static>>(
    work: impl Future<Output = Result<ExitCode, E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(work);
    // Blocking reads still feeding clients that went away must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result.unwrap_or_else(|error| {
        eprintln!("{}", error_line(error.as_ref()));
        ExitCode::FAILURE
    })
}

/// A failure as the one line the binaries print: a gRPC status anywhere in the chain by its
/// message and code, anything else by its whole chain of causes, outermost first.
#[must_use]
pub fn error_line(error: &(dyn Error + 'static)) -> String {
    let chain = || {
        std::iter::successors(Some(error), |&error: &&(dyn Error + 'static)| {
            error.source()
        })
    };
    if let Some(status) = chain().find_map(|error| error.downcast_ref::<tonic::Status>()) {
        return format!("error: {} ({:?})", status.message(), status.code());
    }
    let causes: Vec<String> = chain().map(ToString::to_string).collect();
    format!("error: {}", causes.join(": "))
}

/// A command-line error, as the argument parser rendered it, in one line like every other
/// error: its message and details (the missing arguments, the possible values) without the
/// usage block and the pointer to `--help` that parsers put on lines of their own.
#[must_use]
pub fn usage_error_line(rendered: &str) -> String {
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty())
        .collect();
    format!("{} (see --help)", message.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_under_other_errors_is_shown_by_its_message_and_code() {
        #[derive(Debug, thiserror::Error)]
        #[error("appending")]
        struct Outer(#[source] tonic::Status);
        let outer = Outer(tonic::Status::not_found("no such stream"));
        assert_eq!(error_line(&outer), "error: no such stream (NotFound)");
    }

    #[test]
    fn other_errors_are_shown_by_their_chain_in_one_line() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading ca.pem")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(std::io::Error::other("permission denied"));
        assert_eq!(
            error_line(&outer),
            "error: reading ca.pem: permission denied"
        );
    }

    #[test]
    fn usage_errors_lose_the_usage_block_and_the_help_pointer() {
        let rendered = "error: the following required arguments were not provided:\n  \
                        <STREAM>\n\nUsage: caskade read <STREAM>\n\nFor more information, \
                        try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered),
            "error: the following required arguments were not provided: <STREAM> (see --help)"
        );
    }
}
