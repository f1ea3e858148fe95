#!/usr/bin/env bash
# Same-run A/B of the engine's tuning switches (`caskade_engine::Tuning`, docs/benchmarks.md).
#
#   bench/ab.sh ROUNDS OUT CONFIG...
#
# Each CONFIG is a value of CASKADE_ENGINE_TUNING ("default" for all mechanisms on). Every round
# runs each configuration once, in an order rotated by one each round, so that no configuration
# always runs first or after the same neighbour. A run is the in-process append bench
# (`eventstore/benches/append.rs`) and then the gRPC append workloads of `caskade-bench` against
# a fresh `caskade serve` started with that configuration. The outputs go to
# OUT/<round>-<config>-{inproc,grpc,server}.txt; `bench/ab_table.py OUT` turns them into a
# table of medians and gains.
#
# The binaries are built once and copied into OUT/bin first, so the tree may change while the
# rounds run.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bench/ab.sh ROUNDS OUT CONFIG..." >&2
  exit 2
fi
rounds=$1
out=$2
shift 2
configs=("$@")
here="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$out/bin"

cd "$here"
cargo build --release -p caskade-server -p caskade-bench
append_bench=$(cargo bench -p caskade-eventstore --bench append --no-run 2>&1 |
  sed -n 's/.*Executable benches\/append.rs (\(.*\))/\1/p')
cp target/release/caskade target/release/caskade-bench "$out/bin/"
cp "$append_bench" "$out/bin/append-bench"

port=18888
for ((round = 1; round <= rounds; round++)); do
  count=${#configs[@]}
  for ((i = 0; i < count; i++)); do
    config=${configs[$(((i + round - 1) % count))]}
    tuning=$config
    [ "$config" = default ] && tuning=""
    name="$round-$config"
    echo "round $round: $config" >&2

    (cd eventstore && CASKADE_ENGINE_TUNING=$tuning "$out/bin/append-bench" --bench \
      --warm-up-time 1 --measurement-time 2) >"$out/$name-inproc.txt" 2>&1

    data=$(mktemp -d)
    CASKADE_ENGINE_TUNING=$tuning "$out/bin/caskade" serve --data-dir "$data" \
      --addr "127.0.0.1:$port" 2>"$out/$name-server.txt" &
    server=$!
    for _ in $(seq 100); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    "$out/bin/caskade-bench" --addr "127.0.0.1:$port" --only append,batch100,batch1000 \
      >"$out/$name-grpc.txt" 2>&1
    kill -INT "$server"
    wait "$server" || true
    rm -rf "$data"
  done
done
python3 "$here/bench/ab_table.py" "$out"
