//! Event-sourced programs on Caskade, each one scenario, each run by a test.
//!
//! - [`bank`]: an account aggregate rebuilt by replaying its stream, with business rules and
//!   optimistic concurrency (`cargo run -p caskade-examples --example bank`).
//! - [`projection`]: a read model of all balances built from a `$all` subscription that
//!   checkpoints and resumes after a restart
//!   (`cargo run -p caskade-examples --example projection`).
//! - [`orders`]: an order aggregate stored through KurrentDB's official Rust client against
//!   a Caskade server, as an application written for KurrentDB runs unmodified
//!   (`cargo run -p caskade-examples --example kurrent_client`).

pub mod bank;
pub mod orders;
pub mod projection;

/// The README's code samples, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
