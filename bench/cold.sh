#!/usr/bin/env bash
# Cold reads over gRPC: a store of 10,000,000 events in one stream, served with its memory
# capped in a memory cgroup against served uncapped with its page cache warm.
#
#   bench/cold.sh [ROUNDS] [DIR]     (default 3 rounds, DIR /var/tmp/caskade-cold)
#
# Needs root (it drops the page cache and makes a cgroup) and the release binaries
# (`cargo build --release -p caskade-server -p caskade-bench`). The store is written once
# (with `caskade-bench --only batch1000 --batch-calls 10000`) and kept in DIR for later runs.
# Each round serves it twice, uncapped then capped: start-up time (launch to the first
# answered `stats`, page cache dropped), 3,000 random single-event reads from 1 and from 16
# clients, then `$all` from the start with the page cache dropped again. CASKADE_COLD_MEMORY
# sets the cap in bytes (default 1 GiB).
set -euo pipefail
rounds="${1:-3}"
dir="${2:-/var/tmp/caskade-cold}"
memory="${CASKADE_COLD_MEMORY:-$((1 << 30))}"
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release"
addr=127.0.0.1:18888

serve() { exec "$bin/caskade" serve --data-dir "$dir" --addr "$addr" --log warn; }
ask() { "$bin/caskade" --addr "$addr" "$@"; }
wait_up() { until ask stats > /dev/null 2>&1; do sleep 0.02; done; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# A v2 cgroup if the machine has the unified hierarchy with the memory controller, else v1.
if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2> /dev/null; then
  cgroup=/sys/fs/cgroup/caskade-cold
  mkdir -p "$cgroup"
  echo "$memory" > "$cgroup/memory.max"
else
  cgroup=/sys/fs/cgroup/memory/caskade-cold
  mkdir -p "$cgroup"
  echo "$memory" > "$cgroup/memory.limit_in_bytes"
fi

if [ ! -d "$dir" ]; then
  serve & server=$!
  wait_up
  "$bin/caskade-bench" --addr "$addr" --only batch1000 --batch-calls 10000
  kill -INT "$server"; wait "$server" || true
fi

round() {
  local mode="$1" start server
  drop_caches
  start=$(date +%s%N)
  if [ "$mode" = capped ]; then
    (echo "$BASHPID" > "$cgroup/cgroup.procs"; exec "$bin/caskade" serve --data-dir "$dir" \
      --addr "$addr" --log warn) & server=$!
  else
    serve & server=$!
  fi
  wait_up
  echo "$mode: start-up $(( ($(date +%s%N) - start) / 1000000 )) ms"
  [ "$mode" = warm ] && cat "$dir"/*.data > /dev/null
  local stream
  stream=$(ask streams | awk 'NR == 1 { print $1 }')
  ask stats
  "$bin/caskade-bench" --addr "$addr" --only random-read --read-stream "$stream" \
    --events 3000 --clients 1,16 | grep "random read"
  drop_caches
  "$bin/caskade-bench" --addr "$addr" --only read-all | grep "read \$all"
  kill -INT "$server"; wait "$server" || true
}

for _ in $(seq "$rounds"); do
  round warm
  round capped
done
rmdir "$cgroup" 2> /dev/null || true
