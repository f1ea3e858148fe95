//! The `caskade` binary.

fn main() {}
