#!/usr/bin/env bash
# The compose fault test: a three-node cluster from deploy/docker-compose.yml, broken on purpose.
#
#   1. builds the image (scripts/docker-image.sh), brings the cluster up, waits for all three
#      nodes to be healthy;
#   2. creates topic `chaos`: 6 partitions, RF 3, min.insync.replicas=2;
#   3. produces RECORDS (default 100,000) numbered records with acks=all at RATE records/s
#      (default 4,000, so producing spans the fault), and once a fifth is acknowledged
#      `docker kill`s the broker that leads partition 0; every acknowledged record is listed;
#   4. restarts it and waits until every partition's ISR is back at 3 (and, when the image has
#      the `weir` CLI, shows `weir topic describe chaos` run inside a node);
#   5. `docker network disconnect`s the controller leader from the compose network, checks that
#      one of the other two is elected and that topic creation works through them, waits until
#      the cut-off node's broker is fenced, reconnects it (with its service name as alias) and
#      checks it rejoins: active (unfenced) again, its own broker knows the topic created while
#      it was away, its /health answers 200;
#   6. reads everything back and checks: every acknowledged record present, a record present
#      twice only if it was retried, per-partition order kept, and no batch given up.
#
# The client side is the fault-client example (crates/server/examples/fault-client.rs), run on
# the host against the published ports, so the advertised addresses are exercised from the host
# too. Prints a summary (records acked, failovers and the seconds each took) and exits non-zero
# on any violation. Every wait is bounded; the cluster and its volumes are removed on exit
# (`down -v`), whatever happens (KEEP=1 leaves it running for a look). The test proper (after the
# builds) is bounded by TEST_TIMEOUT seconds (default 540).
#
# Uses `docker compose` when present, else `docker-compose`. Needs the host ports of the compose
# file (9700-9729) free, and runs the cluster on WEIR_SUBNET (default 172.28.98.0/24, next to the
# compose file's own default, so a README cluster's network left behind does not collide).
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-100000}
RATE=${RATE:-4000}
TEST_TIMEOUT=${TEST_TIMEOUT:-540}
PROJECT=${COMPOSE_PROJECT_NAME:-weir-compose-test}
# A subnet of its own (not the compose file's default), so that a cluster started from the
# README and left behind does not block the test's network; ports still must be free.
export WEIR_SUBNET=${WEIR_SUBNET:-172.28.98.0/24}
export WEIR_ADVERTISED_HOST=${WEIR_ADVERTISED_HOST:-${WEIR_SUBNET%.*}.1}
TOPIC=chaos
TOPIC2=chaos-after-failover
START=$SECONDS

log() { echo "== [$((SECONDS - START))s] $*" >&2; }
die() {
  echo "compose-test: FAILED: $*" >&2
  exit 1
}

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  die "neither \`docker compose\` nor \`docker-compose\` is installed"
fi
DC=("${COMPOSE[@]}" -p "$PROJECT" -f deploy/docker-compose.yml)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/weir-compose-test.XXXXXX")
PRODUCER_PID=
WATCHDOG_PID=
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ -n $WATCHDOG_PID ]]; then kill "$WATCHDOG_PID" 2>/dev/null; fi
  if [[ -n $PRODUCER_PID ]]; then
    kill "$PRODUCER_PID" 2>/dev/null
    wait "$PRODUCER_PID" 2>/dev/null
  fi
  if [[ $rc != 0 ]]; then
    echo "---- last log lines of each node ----" >&2
    "${DC[@]}" logs --no-color --tail 25 >&2 2>/dev/null || true
  fi
  if [[ ${KEEP:-0} == 1 ]]; then
    echo "KEEP=1: cluster left running (${DC[*]} down -v), files in $WORK" >&2
  else
    "${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers ----
FC=$PWD/target/release/examples/fault-client
ALL_BROKERS=127.0.0.1:9700,127.0.0.1:9710,127.0.0.1:9720
# The fault client against the given bootstrap list, bounded; stdout is its JSON answer.
fc() {
  local bootstrap=$1 timeout=$2
  shift 2
  "$FC" --bootstrap "$bootstrap" --timeout-secs "$timeout" "$@"
}
# One field of a JSON document on stdin (a Python expression on `d`).
jq_() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
# The container of node N, as noted right after `up` (Compose v2's `ps` omits stopped ones).
declare -A CIDS
cid() {
  [[ -n ${CIDS[$1]:-} ]] || die "no container for weir-$1"
  echo "${CIDS[$1]}"
}
# Published broker / HTTP port of node N.
broker_port() { echo $((9700 + 10 * ($1 - 1))); }
# The bootstrap list without node N.
brokers_except() {
  local n list=()
  for n in 1 2 3; do [[ $n == "$1" ]] || list+=("127.0.0.1:$(broker_port "$n")"); done
  (IFS=,; echo "${list[*]}")
}
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1"; }
# Waits (up to $1 s) until every node in ${@:2} reports healthy.
wait_healthy() {
  local limit=$1 n
  shift
  local deadline=$((SECONDS + limit))
  for n in "$@"; do
    until [[ $(health "$(cid "$n")") == healthy ]]; do
      ((SECONDS < deadline)) || die "weir-$n not healthy within ${limit}s (status: $(health "$(cid "$n")"))"
      sleep 1
    done
  done
}
# Waits (up to $2 s) until node $1's own /health answers 200, asked inside its container.
wait_health_endpoint() {
  local deadline=$((SECONDS + $2))
  until docker exec "$(cid "$1")" /usr/local/bin/busybox wget -q -O /dev/null http://127.0.0.1:9709/health 2>/dev/null; do
    ((SECONDS < deadline)) || die "weir-$1: /health not 200 within $2s"
    sleep 1
  done
}
now_ms() { python3 -c 'import time; print(int(time.time() * 1000))'; }

# ---- 1. image, cluster, health ----
log "1. building the image and the fault client"
bash scripts/docker-image.sh
cargo build --release -p weir-server --example fault-client >&2

# The test proper is bounded from here on.
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "$TEST_TIMEOUT" &
  sleeper=$!
  wait "$sleeper"
  echo "compose-test: FAILED: over ${TEST_TIMEOUT}s" >&2
  kill -TERM $$
) &
WATCHDOG_PID=$!
TEST_START=$SECONDS

"${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
log "1. ${COMPOSE[*]} up (project $PROJECT)"
"${DC[@]}" up -d >&2
for n in 1 2 3; do
  CIDS[$n]=$("${DC[@]}" ps -q "weir-$n")
done
wait_healthy 120 1 2 3
log "1. all three nodes healthy"

# ---- 2. topic ----
log "2. creating $TOPIC: 6 partitions, RF 3, min.insync.replicas=2"
fc "$ALL_BROKERS" 60 create-topic "$TOPIC" --partitions 6 --replication-factor 3 \
  --config min.insync.replicas=2 >/dev/null
fc "$ALL_BROKERS" 30 describe "$TOPIC" >"$WORK/describe.json"
jq_ 'all(len(p["replicas"]) == 3 for p in d["partitions"]) and len(d["partitions"]) == 6 and d["configs"].get("min.insync.replicas") == "2"' \
  <"$WORK/describe.json" | grep -qx True || die "topic $TOPIC not as created: $(cat "$WORK/describe.json")"

# ---- 3. produce while the leader of partition 0 is killed ----
log "3. producing $RECORDS records with acks=all at $RATE records/s"
timeout 400 "$FC" --bootstrap "$ALL_BROKERS" --timeout-secs 380 produce "$TOPIC" \
  --records "$RECORDS" --rate "$RATE" --out "$WORK/produced" --progress "$WORK/progress" \
  >"$WORK/produce.json" 2>"$WORK/produce.log" &
PRODUCER_PID=$!
deadline=$((SECONDS + 120))
until [[ -s $WORK/progress ]] && (($(cat "$WORK/progress") >= RECORDS / 5)); do
  kill -0 "$PRODUCER_PID" 2>/dev/null || die "the producer stopped early: $(tail -5 "$WORK/produce.log")"
  ((SECONDS < deadline)) || die "fewer than $((RECORDS / 5)) records acknowledged within 120s"
  sleep 0.2
done
VICTIM=$(fc "$ALL_BROKERS" 30 describe "$TOPIC" | jq_ 'd["partitions"][0]["leader"]')
[[ $VICTIM =~ ^[123]$ ]] || die "partition 0 has no leader"
KILL_MS=$(now_ms)
docker kill "$(cid "$VICTIM")" >/dev/null
log "3. killed weir-$VICTIM, leader of $TOPIC/0, after $(cat "$WORK/progress") acknowledged records"
fc "$(brokers_except "$VICTIM")" 60 wait-leader "$TOPIC" 0 --not "$VICTIM" --since-ms "$KILL_MS" \
  >"$WORK/leader-failover.json" || die "partition 0 got no new leader"
LEADER_FAILOVER_S=$(jq_ 'd["seconds"]' <"$WORK/leader-failover.json")
NEW_LEADER=$(jq_ 'd["leader"]' <"$WORK/leader-failover.json")
log "3. partition 0: leader $VICTIM -> $NEW_LEADER in ${LEADER_FAILOVER_S}s"
if ! wait "$PRODUCER_PID"; then
  PRODUCER_PID=
  die "the producer failed: $(tail -5 "$WORK/produce.log")"
fi
PRODUCER_PID=
cat "$WORK/produce.json" >&2
ACKED=$(jq_ 'd["acked"]' <"$WORK/produce.json")
FAILED=$(jq_ 'd["failed"]' <"$WORK/produce.json")
RETRIED=$(jq_ 'd["retried_batches"]' <"$WORK/produce.json")
STALL_P0=$(jq_ 'd["max_stall_seconds_by_partition"][0]' <"$WORK/produce.json")
PRODUCE_S=$(jq_ 'd["seconds"]' <"$WORK/produce.json")

# ---- 4. restart, ISR back at 3 ----
log "4. restarting weir-$VICTIM"
RESTART_MS=$(now_ms)
docker start "$(cid "$VICTIM")" >/dev/null
wait_healthy 120 "$VICTIM"
fc "$ALL_BROKERS" 120 wait-isr "$TOPIC" --size 3 >"$WORK/isr.json" ||
  die "the ISRs of $TOPIC did not get back to 3 members"
ISR_S=$(python3 -c "import time; print(round(time.time() - $RESTART_MS / 1000, 1))")
log "4. every ISR back at 3, ${ISR_S}s after the restart"
# The same, as `weir topic describe` sees it from inside a node (when the image has the CLI).
if docker exec "$(cid 1)" test -x /usr/local/bin/weir; then
  "${DC[@]}" exec -T weir-1 weir topic describe "$TOPIC" >&2 ||
    die "\`weir topic describe $TOPIC\` failed inside weir-1"
  "${DC[@]}" exec -T weir-1 weir --output json topic describe "$TOPIC" |
    jq_ 'all(len(p["isr"]) == 3 for p in d["partitions"])' | grep -qx True ||
    die "\`weir topic describe $TOPIC\` does not show every ISR at 3"
fi

# ---- 5. cut the controller leader off the network ----
CONTROLLER=$(fc "$ALL_BROKERS" 30 controller | jq_ 'd["controller_leader"]')
[[ $CONTROLLER =~ ^[123]$ ]] || die "no controller leader (got $CONTROLLER)"
C_CID=$(cid "$CONTROLLER")
NETWORK=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$C_CID")
DISCONNECT_MS=$(now_ms)
docker network disconnect "$NETWORK" "$C_CID"
log "5. disconnected weir-$CONTROLLER, the controller leader, from $NETWORK"
OTHERS=$(brokers_except "$CONTROLLER")
fc "$OTHERS" 60 wait-controller --not "$CONTROLLER" --since-ms "$DISCONNECT_MS" \
  >"$WORK/controller-failover.json" || die "no new controller elected among the other two"
CONTROLLER_FAILOVER_S=$(jq_ 'd["seconds"]' <"$WORK/controller-failover.json")
NEW_CONTROLLER=$(jq_ 'd["controller_leader"]' <"$WORK/controller-failover.json")
[[ $NEW_CONTROLLER != "$CONTROLLER" ]] || die "controller did not change"
log "5. controller $CONTROLLER -> $NEW_CONTROLLER in ${CONTROLLER_FAILOVER_S}s"
fc "$OTHERS" 60 create-topic "$TOPIC2" --partitions 3 --replication-factor 2 >/dev/null ||
  die "topic creation failed with the new controller"
log "5. created $TOPIC2 through the new controller"
# Away long enough for its broker session to expire, so rejoining means being unfenced again.
fc "$OTHERS" 60 wait-fenced "$CONTROLLER" >/dev/null || die "weir-$CONTROLLER was never fenced while cut off"
log "5. weir-$CONTROLLER fenced by the new controller"
docker network connect --alias "weir-$CONTROLLER" "$NETWORK" "$C_CID"
REJOIN_MS=$(now_ms)
fc "$ALL_BROKERS" 120 wait-rejoin "$CONTROLLER" --topic "$TOPIC2" >"$WORK/rejoin.json" ||
  die "weir-$CONTROLLER did not rejoin"
wait_health_endpoint "$CONTROLLER" 60
REJOIN_S=$(python3 -c "import time; print(round(time.time() - $REJOIN_MS / 1000, 1))")
log "5. weir-$CONTROLLER reconnected and rejoined in ${REJOIN_S}s"

# ---- 6. read back and check ----
log "6. reading $TOPIC back"
fc "$ALL_BROKERS" 120 verify "$TOPIC" --records "$RECORDS" --out "$WORK/produced" \
  >"$WORK/verify.json" 2>"$WORK/verify.log" || VERIFY_FAILED=1
[[ -s $WORK/verify.json ]] || die "could not read $TOPIC back: $(tail -5 "$WORK/verify.log")"
cat "$WORK/verify.json" >&2

TEST_S=$((SECONDS - TEST_START))
cat <<EOF
compose-test summary (${COMPOSE[*]} $("${COMPOSE[@]}" version --short 2>/dev/null || true))
  records acknowledged (acks=all):  $ACKED of $RECORDS in ${PRODUCE_S}s, $FAILED given up, $RETRIED batches retried
  records read back:                $(jq_ 'd["consumed"]' <"$WORK/verify.json") ($(jq_ 'd["distinct"]' <"$WORK/verify.json") distinct, $(jq_ 'd["duplicates_of_retried"]' <"$WORK/verify.json") duplicates of retried records)
  acknowledged but missing:         $(jq_ 'd["acked_missing"]' <"$WORK/verify.json")
  duplicates never retried:         $(jq_ 'd["duplicates_not_retried"]' <"$WORK/verify.json")
  per-partition order violations:   $(jq_ 'd["order_violations"]' <"$WORK/verify.json")
  failover 1, broker killed:        weir-$VICTIM led $TOPIC/0; new leader weir-$NEW_LEADER after ${LEADER_FAILOVER_S}s (longest produce stall on partition 0: ${STALL_P0}s)
  restart:                          every ISR back at 3 after ${ISR_S}s
  failover 2, controller cut off:   weir-$CONTROLLER; new controller weir-$NEW_CONTROLLER after ${CONTROLLER_FAILOVER_S}s; topic creation works; rejoined ${REJOIN_S}s after reconnecting
  duration:                         ${TEST_S}s of fault test, $((SECONDS - START))s with the builds
EOF
[[ -z ${VERIFY_FAILED:-} ]] || die "the data check found violations (see above)"
[[ $FAILED == 0 ]] || die "$FAILED acks=all records were given up with only one of three brokers down"
echo "compose-test: OK"
