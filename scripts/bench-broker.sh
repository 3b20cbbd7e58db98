#!/usr/bin/env bash
# Benchmarks of the broker data path with real weir-server processes on 127.0.0.1 (release
# build), driven by the produce-bench example (crates/server/examples/produce-bench.rs):
#
#   1. 1 node, 100-byte records, acks=1: produce, then consume everything back.
#   2. 1 node, 1 KiB records, acks=1 (produce + consume), next to the raw sequential write speed
#      of the same disk (the log-bench example of weir-storage: raw_write_mb_per_sec).
#   3. 3 nodes, RF 3, acks=-1, 100-byte records, 3 partitions (one leader per node): at full
#      speed, then for produce latency (p50/p99/max) at 150,000 records/s (half the 300,000
#      target) and at half the rate the full-speed run reached.
#
# Prints one JSON line per measurement, each tagged with "run". Data and logs go to a temporary
# directory that is removed at the end (kept with KEEP=1); every server is killed on exit.
# Sizes can be changed through the environment: SMALL_RECORDS (default 10000000),
# LARGE_RECORDS (default 2000000, i.e. 2 GiB of values), RF3_RECORDS (default 10000000),
# LATENCY_SECONDS (default 20: length of each fixed-rate run), LATENCY_RATES (default
# "150000 half": records/s of the fixed-rate runs, "half" being half the full-speed rate;
# RF3_RECORDS=0 skips the full-speed run), RAW_BYTES (default 2GiB).
# WEIR_SERVER_BIN runs another weir-server binary (for A/B runs against a saved build).
# Each step is bounded in time (STEP_TIMEOUT, default 600 s). STEPS picks parts (default
# "single raw rf3": the 1-node runs, the raw-write baseline, the 3-node runs).
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL_RECORDS=${SMALL_RECORDS:-10000000}
LARGE_RECORDS=${LARGE_RECORDS:-2000000}
RF3_RECORDS=${RF3_RECORDS:-10000000}
LATENCY_SECONDS=${LATENCY_SECONDS:-20}
RAW_BYTES=${RAW_BYTES:-2GiB}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}

cargo build --release -p weir-server --bin weir-server --example produce-bench >&2
cargo build --release -p weir-storage --example log-bench >&2
SERVER=${WEIR_SERVER_BIN:-$PWD/target/release/weir-server}
BENCH=$PWD/target/release/examples/produce-bench
LOG_BENCH=$PWD/target/release/examples/log-bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-broker.XXXXXX")
PIDS=()

stop_servers() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

cleanup() {
  stop_servers
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_cluster NAME N: N combined nodes; sets BOOTSTRAP to node 1's broker listener.
start_cluster() {
  local name=$1 n=$2 i quorum=""
  local -a broker controller http
  for ((i = 1; i <= n; i++)); do
    broker[i]=$(free_port)
    controller[i]=$(free_port)
    http[i]=$(free_port)
    quorum+="${quorum:+,}$i@127.0.0.1:${controller[i]}"
  done
  for ((i = 1; i <= n; i++)); do
    local dir=$WORK/$name/node-$i
    mkdir -p "$dir"
    WEIR_NODE_ID=$i \
      WEIR_ROLES=broker,controller \
      WEIR_LISTEN=127.0.0.1:${broker[i]} \
      WEIR_CONTROLLER_LISTEN=127.0.0.1:${controller[i]} \
      WEIR_HTTP_LISTEN=127.0.0.1:${http[i]} \
      WEIR_CONTROLLER_QUORUM=$quorum \
      WEIR_DATA_DIR=$dir/data \
      WEIR_LOG=warn \
      "$SERVER" >"$dir/server.log" 2>&1 &
    PIDS+=($!)
  done
  for ((i = 1; i <= n; i++)); do
    local deadline=$((SECONDS + 60))
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${http[i]}/health")" == 200 ]]; do
      if ((SECONDS > deadline)); then
        echo "node $i of $name not healthy within 60 s; log:" >&2
        tail -n 40 "$WORK/$name/node-$i/server.log" >&2
        exit 1
      fi
      sleep 0.2
    done
  done
  BOOTSTRAP=127.0.0.1:${broker[1]}
}

# bench RUN ARGS...: runs produce-bench against $BOOTSTRAP, tags its JSON line with RUN.
bench() {
  local run=$1
  shift
  timeout "$STEP_TIMEOUT" "$BENCH" --bootstrap "$BOOTSTRAP" --timeout-secs "$STEP_TIMEOUT" "$@" |
    sed "s/^{/{\"run\":\"$run\",/"
}

# warm MIB: writes back what is dirty (`sync`: earlier runs' data, so their writeback doesn't
# stall the next run), then writes MIB MiB to a scratch file without fsync and deletes it,
# untimed. On this VM
# free guest memory is handed back to the host, and whoever first fills the page cache pays for
# faulting it back in (~430 MB/s); log-bench's raw-write baseline does the same warm-up, so
# both sides of each ratio start from the same memory state (docs/BENCHMARKS.md).
warm() {
  sync
  dd if=/dev/zero of="$WORK/warm" bs=1M count="$1" status=none
  rm -f "$WORK/warm"
}

# step NAME: whether NAME is among the steps to run (STEPS, default all: "single raw rf3").
step() {
  [[ " ${STEPS:-single raw rf3} " == *" $1 "* ]]
}

if step single; then
echo "== 1 node" >&2
start_cluster single 1
warm $((SMALL_RECORDS * 110 / 1048576 + 256))
bench 1node-100B-acks1 --topic small --partitions 1 --replication-factor 1 \
  --records "$SMALL_RECORDS" --record-size 100 --acks 1 --consume
warm $((LARGE_RECORDS * 1040 / 1048576 + 256))
bench 1node-1KiB-acks1 --topic large --partitions 1 --replication-factor 1 \
  --records "$LARGE_RECORDS" --record-size 1024 --acks 1 --consume
stop_servers
rm -rf "$WORK/single"
fi

if step raw; then
echo "== raw sequential writes on the same disk (log-bench)" >&2
mkdir -p "$WORK/raw"
timeout "$STEP_TIMEOUT" "$LOG_BENCH" --total-bytes "$RAW_BYTES" --record-size 1024 --dir "$WORK/raw" |
  sed 's/^{/{"run":"raw-write-1KiB",/'
fi

if step rf3; then
echo "== 3 nodes, RF 3, acks=-1" >&2
start_cluster triple 3
# latency_run RUN RATE: RATE records/s for LATENCY_SECONDS, each on a topic of its own.
latency_run() {
  local run=$1 rate=$2 records
  records=$((rate * LATENCY_SECONDS))
  warm $((records * 110 * 3 / 1048576 + 256))
  bench "$run" --topic "$run" --partitions 3 --replication-factor 3 \
    --records "$records" --record-size 100 --acks -1 --rate "$rate"
}
rate=0
if ((RF3_RECORDS > 0)); then
  warm $((RF3_RECORDS * 110 * 3 / 1048576 + 256))
  full=$(bench 3node-rf3-100B-acksall --topic replicated --partitions 3 --replication-factor 3 \
    --records "$RF3_RECORDS" --record-size 100 --acks -1)
  echo "$full"
  rate=$(echo "$full" | field records_per_sec)
fi
# By default half the target rate (300,000 records/s), then half of what the full-speed run
# reached ("half").
for r in ${LATENCY_RATES:-150000 half}; do
  if [[ "$r" == half ]]; then
    r=$(awk -v r="$rate" 'BEGIN { printf "%d", r / 2 }')
    if ((r > 0)); then latency_run 3node-rf3-100B-acksall-half-rate "$r"; fi
  else
    latency_run "3node-rf3-100B-acksall-$r" "$r"
  fi
done
stop_servers
fi
