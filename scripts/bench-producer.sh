#!/usr/bin/env bash
# What the producer's features cost and save, measured through the real client (`weir bench
# produce`) against one local node, in one run, so the figures compare with each other:
#
# - compression: 1 KiB records of English-like text (`--payload text`), acks=1, for each codec:
#   records/s, MB/s of record values, and bytes on disk per record (the partition's segment
#   files over the records sent);
# - idempotence: 1 KiB random records, acks=all, with the idempotent producer (the default) and
#   with --no-idempotence, runs interleaved.
#
#   scripts/bench-producer.sh              # 3 measured runs per figure, 300,000 records each
#   RUNS=5 RECORDS=500000 scripts/bench-producer.sh
#
# Each figure is the median of $RUNS runs after one warm-up, each run on a fresh node and data
# directory. Bounded in time (every step under `timeout`) and cleans up after itself, also on
# failure. docs/BENCHMARKS.md records the results.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-3}
RECORDS=${RECORDS:-300000}
WORK=$(mktemp -d /tmp/weir-bench-producer.XXXXXX)
PID=""

cleanup() {
  [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building (release): weir-server, weir"
timeout 1800 cargo build --release -q -p weir-server -p weir-cli --bin weir-server --bin weir
SERVER="$ROOT/target/release/weir-server"
WEIR="$ROOT/target/release/weir"
PORT=19800
export WEIR_BOOTSTRAP="127.0.0.1:$PORT"

start_node() {
  rm -rf "$WORK/data"
  "$SERVER" --listen "127.0.0.1:$PORT" --controller-listen 127.0.0.1:$((PORT + 1)) \
    --http-listen 127.0.0.1:$((PORT + 9)) --controller-quorum "1@127.0.0.1:$((PORT + 1))" \
    --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
  PID=$!
  local deadline=$((SECONDS + 30))
  until curl -sf "http://127.0.0.1:$((PORT + 9))/health" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "node did not become healthy"; tail "$WORK/server.log"; exit 1; }
    sleep 0.1
  done
}

stop_node() {
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}

# One run on a fresh node: prints "records_per_sec mb_per_sec p99_ms bytes_on_disk".
run() {
  start_node
  local json
  json=$(timeout 300 "$WEIR" bench produce --topic t --records "$RECORDS" --output json "$@")
  local disk
  disk=$(du -sb "$WORK"/data/logs/t-0/*.log | awk '{s += $1} END {print s}')
  stop_node
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["records_per_sec"], j["mb_per_sec"], j["latency_ms"]["p99"], sys.argv[2])' "$json" "$disk"
}

# The median of the lines on stdin, column $1.
median() {
  sort -g -k"$1" | awk -v c="$1" '{v[NR] = $c} END {print v[int((NR + 1) / 2)]}'
}

measure() {
  local label=$1
  shift
  run "$@" >/dev/null # warm-up
  local lines=""
  for _ in $(seq "$RUNS"); do
    lines+="$(run "$@")"$'\n'
  done
  local rps mbs p99 disk
  rps=$(printf '%s' "$lines" | median 1)
  mbs=$(printf '%s' "$lines" | median 2)
  p99=$(printf '%s' "$lines" | median 3)
  disk=$(printf '%s' "$lines" | median 4)
  printf '%-28s %12.0f %9.1f %9.2f %10.1f\n' "$label" "$rps" "$mbs" "$p99" "$(echo "$disk / $RECORDS" | bc -l)"
}

echo "== $RECORDS records of 1 KiB per run, median of $RUNS runs"
printf '%-28s %12s %9s %9s %10s\n' workload records/s MB/s p99_ms disk_B/rec
for codec in none gzip snappy lz4 zstd; do
  measure "text, acks=1, $codec" --payload text --acks 1 --compression "$codec"
done
# Idempotent, plain, idempotent again: a drift of the machine during the run shows as the two
# idempotent figures disagreeing.
measure "random, acks=all, idempotent" --acks all
measure "random, acks=all, plain" --acks all --no-idempotence
measure "random, acks=all, idempotent" --acks all
