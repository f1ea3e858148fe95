#!/usr/bin/env bash
# Builds UmaDB (the peer of `caskade-bench`) into bench/.umadb from crates.io and prints the
# path of its server binary. Nothing here is committed: bench/.umadb is ignored by git.
#
# UmaDB's proto crate runs `protoc` at build time, so this points PROTOC at the protoc that
# the `protoc-bin-vendored` crate ships (a binary inside a registry package) instead of
# asking for one on the machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.umadb"
if [ ! -x "$root/bin/umadb" ]; then
  finder="$root/protoc-finder"
  mkdir -p "$finder/src"
  cat > "$finder/Cargo.toml" <<'TOML'
[package]
name = "protoc-finder"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
protoc-bin-vendored = "3"

[workspace]
TOML
  echo 'fn main() { println!("{}", protoc_bin_vendored::protoc_bin_path().unwrap().display()); }' \
    > "$finder/src/main.rs"
  PROTOC="$(cargo run --quiet --release --manifest-path "$finder/Cargo.toml")"
  export PROTOC
  cargo install umadb --locked --root "$root" >&2
fi
echo "$root/bin/umadb"
